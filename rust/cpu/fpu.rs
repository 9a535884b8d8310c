// SPDX-License-Identifier: GPL-2.0

//! The guest's FPU and extended state (x87, SSE, AVX, AVX-512) and its XCR0.
//!
//! Between windows the state lives in a page holding an XSAVE image in `struct kvm_xsave`'s
//! layout ([`xstate`]). A window runs inside `kernel_fpu_begin/end`: the kernel has saved the
//! host task's user state and reloads it on the task's return to userspace. The window loads
//! every component rvmx switches from the image — so no register the guest could read still
//! holds the host task's data — then the guest's XCR0; it closes by putting the host's XCR0
//! back and saving the image. XCR0 changes only inside interrupts-off windows, so no host
//! code ever runs with the guest's.

use kernel::{page::Page, prelude::*};

use crate::{
    host::helpers,
    host::x86,
    host::mem::page_address,
    logic::xstate::{self, AREA_SIZE, LEGACY_SIZE},
};

/// CR4.OSXSAVE: the host kernel uses XSAVE and XCR0.

/// What the host lets rvmx switch, read once at load (every CPU is configured alike).
#[derive(Clone, Copy)]
pub(crate) struct Features {
    /// XCR0 components switched for guests; 0 if the host does not use XSAVE (then only the
    /// FXSAVE state is switched and guests get no XSAVE).
    pub(crate) xcr0: u64,
    /// The MXCSR bits this CPU accepts (FXSAVE's MXCSR_MASK).
    pub(crate) mxcsr_mask: u32,
    /// The host's CPUID 0xD.i `(size, offset, 64-byte aligned when compacted)` of each
    /// switched component.
    components: [(u32, u32, bool); COMPONENTS],
}

/// Components 0..8 cover every one in [`xstate::SWITCHED`].
const COMPONENTS: usize = 8;

impl Features {
    pub(crate) fn probe() -> Result<Self> {
        // On the heap: the kernel stack is only 8-byte aligned, FXSAVE needs 16.
        let mut fx = KBox::new(FxImage([0; LEGACY_SIZE]), GFP_KERNEL_ACCOUNT)?;
        let _fpu = KernelFpu::begin();
        let xcr0 = if x86::read_cr4() & crate::logic::arch::cr4::OSXSAVE != 0 {
            // SAFETY: CR4.OSXSAVE is set (checked just above).
            (unsafe { x86::xgetbv0() }) & xstate::SWITCHED
        } else {
            0
        };
        // SAFETY: a 512-byte, 16-byte aligned buffer; FPU use is allowed (`_fpu`).
        unsafe { x86::fxsave64(fx.0.as_mut_ptr()) };
        let mask = u32::from_le_bytes(fx.0[28..32].try_into().unwrap_or_default());
        // A zero mask means the CPU predates DAZ: the SDM's default then.
        let mut components = [(0, 0, false); COMPONENTS];
        for (i, c) in components.iter_mut().enumerate().skip(2) {
            if xcr0 & 1 << i != 0 {
                let [size, offset, flags, _] = crate::host::x86::cpuid_count(0xd, i as u32);
                *c = (size, offset, flags & 2 != 0);
            }
        }
        Ok(Self { xcr0, mxcsr_mask: if mask == 0 { 0xffbf } else { mask }, components })
    }

    /// CPUID 0xD.0 EBX for a guest XCR0 of `xcr0`: the host's layout, as KVM's
    /// `xstate_required_size` (a VMM's CPUID table has no say in it).
    pub(crate) fn xsave_size(&self, xcr0: u64) -> u32 {
        xstate::size_for(xcr0 & self.xcr0, |i| self.component(i).map_or((0, 0), |c| (c.0, c.1)))
    }

    /// CPUID 0xD.1 EBX (XSAVEC/XSAVES) for a guest XCR0 of `xcr0`: the compacted size, from
    /// the host's layout (rvmx gives guests no IA32_XSS state).
    pub(crate) fn xsave_compacted_size(&self, xcr0: u64) -> u32 {
        xstate::compacted_size_for(xcr0 & self.xcr0, |i| self.component(i).map_or((0, false), |c| (c.0, c.2)))
    }

    fn component(&self, i: u32) -> Option<(u32, u32, bool)> {
        self.components.get(i as usize).copied()
    }
}

#[repr(C, align(16))]
struct FxImage([u8; LEGACY_SIZE]);

/// `kernel_fpu_begin` .. `kernel_fpu_end`: the FPU registers may hold other state meanwhile.
pub(crate) struct KernelFpu(());

impl KernelFpu {
    pub(crate) fn begin() -> Self {
        // SAFETY: process context; paired with kernel_fpu_end in `drop`.
        unsafe { helpers::rvmx_kernel_fpu_begin() };
        Self(())
    }
}

impl Drop for KernelFpu {
    fn drop(&mut self) {
        // SAFETY: pairs with the begin in `KernelFpu::begin`, same task, same CPU (preemption
        // is off in between).
        unsafe { kernel::bindings::kernel_fpu_end() };
    }
}

/// A vCPU's FPU/extended state and XCR0.
pub(crate) struct GuestFpu {
    /// The XSAVE image (4 KiB, page aligned as XSAVE needs 64).
    page: Page,
    /// The guest's XCR0 (1 after reset).
    pub(crate) xcr0: u64,
}

impl GuestFpu {
    pub(crate) fn new() -> Result<Self> {
        let mut f = Self { page: Page::alloc_page(GFP_KERNEL_ACCOUNT)?, xcr0: xstate::xfeature::X87 };
        xstate::reset(f.image_mut());
        Ok(f)
    }

    fn image_ptr(&self) -> *mut [u8; AREA_SIZE] {
        page_address(&self.page).cast()
    }

    /// The XSAVE image (valid between windows).
    pub(crate) fn image(&self) -> &[u8; AREA_SIZE] {
        // SAFETY: the page belongs to `self` alone and is in the kernel's direct map; the
        // borrow of `self` keeps it alive and unwritten for the reference's lifetime.
        unsafe { &*self.image_ptr() }
    }

    pub(crate) fn image_mut(&mut self) -> &mut [u8; AREA_SIZE] {
        // SAFETY: as in `image`, with `self` borrowed mutably.
        unsafe { &mut *self.image_ptr() }
    }

    /// The legacy (FXSAVE) region, which `KVM_GET/SET_FPU` exchange.
    pub(crate) fn legacy(&self) -> &[u8; LEGACY_SIZE] {
        self.image().first_chunk().unwrap_or(&[0; LEGACY_SIZE])
    }

    /// Replaces the legacy region (`KVM_SET_FPU`): x87 and SSE then come from it.
    pub(crate) fn set_legacy(&mut self, f: impl FnOnce(&mut [u8; LEGACY_SIZE])) {
        let image = self.image_mut();
        if let Some(legacy) = image.first_chunk_mut() {
            f(legacy);
        }
        xstate::legacy_written(image);
    }

    /// Loads the guest's state into the registers, every switched component (those the
    /// image does not hold in their initial state), then the guest's XCR0. Returns the
    /// host's XCR0 for [`GuestFpu::save`].
    ///
    /// # Safety
    ///
    /// Interrupts off, inside a [`KernelFpu`]; `save` must follow before interrupts are on.
    pub(crate) unsafe fn load(&self, f: &Features) -> u64 {
        let p = self.image_ptr();
        if f.xcr0 == 0 {
            // SAFETY: 512-byte, 16-byte aligned image whose MXCSR was checked when written;
            // inside the caller's KernelFpu.
            unsafe { x86::fxrstor64(p.cast()) };
            return 0;
        }
        // SAFETY: `f.xcr0` is non-zero only where the host has CR4.OSXSAVE (`Features::probe`).
        let host = unsafe { x86::xgetbv0() };
        // SAFETY: a 64-byte aligned standard-format image whose header and MXCSR were
        // checked (`xstate::loadable`) when userspace wrote them; RFBM is within the host's
        // XCR0, which is current.
        unsafe { x86::xrstor64(p.cast(), f.xcr0) };
        if self.xcr0 != host {
            // SAFETY: the guest's XCR0 was validated (xcr0_valid, within `f.xcr0`); the
            // caller restores the host's in `save`.
            unsafe { x86::xsetbv0(self.xcr0) };
        }
        host
    }

    /// Puts the host's XCR0 back (`host` from [`GuestFpu::load`]) and saves the guest's
    /// state into the image.
    ///
    /// # Safety
    ///
    /// As for [`GuestFpu::load`], which must have run in this window.
    pub(crate) unsafe fn save(&mut self, f: &Features, host: u64) {
        let p = self.image_ptr();
        if f.xcr0 == 0 {
            // SAFETY: 512-byte, 16-byte aligned image owned by `self`; inside the KernelFpu.
            unsafe { x86::fxsave64(p.cast()) };
            return;
        }
        if self.xcr0 != host {
            // SAFETY: the host's own XCR0, read in `load`.
            unsafe { x86::xsetbv0(host) };
        }
        // SAFETY: a 4 KiB, 64-byte aligned image owned by `self`; RFBM within XCR0.
        unsafe { x86::xsave64(p.cast(), f.xcr0) };
    }
}
