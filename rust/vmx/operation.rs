// SPDX-License-Identifier: GPL-2.0

//! VMX bring-up: capability checks, per-CPU VMXON regions, and VMX operation windows.
//!
//! Linux 7.3 reserves VMXON and the CR4 shadow for KVM, and rewrites CR4 from its shadow in
//! interrupt context. rvmx therefore holds VMX operation (CR4.VMXE + VMXON) only inside an
//! interrupts-off window, [`Vmx::with_vmx_operation`], and leaves it (VMXOFF, CR4 restored)
//! before interrupts come back on. A CPU that comes online later gets the same checks as the
//! ones present at load, through a CPU hotplug callback.

use core::{
    ptr,
    sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering},
};
use kernel::{
    cpu::CpuId,
    ffi,
    interrupt::{self, LocalInterruptDisabled},
    page::Page,
    prelude::*,
};

use crate::{
    host::cpuhp::OnlineCallback,
    host::mem::page_phys,
    logic::vmx_caps::{self, Unsupported, VmxCaps},
    logic::arch::cr4::VMXE as CR4_VMXE,
    host::x86,
};

// `pr_*!` formats through `kernel::fmt::Display`; the shared (host-tested) types implement
// `core::fmt::Display`, so forward one to the other.
macro_rules! forward_display {
    ($($t:ty),*) => {$(
        impl kernel::fmt::Display for $t {
            fn fmt(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
                core::fmt::Display::fmt(self, f)
            }
        }
    )*};
}
forward_display!(VmxCaps, Unsupported);

/// The machine's VMX state. Published in [`VMX`] for the hotplug callback, which has no
/// context argument; valid from publication until [`VmxRegistration`] is dropped.
pub(crate) struct Vmx {
    /// Capabilities read at load; every CPU must report the same.
    caps: VmxCaps,
    /// The FPU/extended state rvmx switches for guests.
    fpu: crate::cpu::fpu::Features,
    /// The CPU has IA32_DEBUGCTL (VM exits clear it: rvmx restores the host's).
    debugctl: bool,
    /// The speculative-execution protections this host needs around guests.
    mitigations: crate::cpu::mitigations::Mitigations,
    /// One VMXON region per possible CPU, indexed by CPU number.
    vmxon: KVec<VmxonRegion>,
    /// CPUs on which VMX operation has been proven.
    cpus_ready: AtomicU32,
    /// Set once loading finished: later online CPUs are logged one by one.
    loaded: AtomicBool,
}

static VMX: AtomicPtr<Vmx> = AtomicPtr::new(ptr::null_mut());

/// A page the processor uses while this CPU is in VMX operation.
struct VmxonRegion {
    _page: Page,
    phys: u64,
}

impl VmxonRegion {
    fn new(revision_id: u32) -> Result<Self> {
        let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        let rev = revision_id.to_ne_bytes();
        // SAFETY: `rev` is 4 readable bytes and the page holds 4096; no one else has the page.
        unsafe { page.write_raw(rev.as_ptr(), 0, rev.len())? };
        Ok(Self { phys: page_phys(&page), _page: page })
    }
}

/// The errno for each reason a CPU cannot run rvmx.
fn errno(why: &Unsupported) -> Error {
    match why {
        Unsupported::NoVmx => ENODEV,
        Unsupported::FeatureControlUnlocked
        | Unsupported::VmxDisabledByFirmware
        | Unsupported::Features(_) => EOPNOTSUPP,
        Unsupported::MsrUnreadable(_)
        | Unsupported::RegionSize(_)
        | Unsupported::MemoryType(_)
        | Unsupported::AddressWidth32
        | Unsupported::NoTrueControls => EIO,
    }
}

/// Checks CPUID, firmware settings and capability MSRs on `cpu`. Call it on `cpu` itself
/// (CPUID reads the current CPU).
fn probe(cpu: u32) -> Result<VmxCaps, Unsupported> {
    let feature_control = x86::rdmsr_on_cpu(cpu, vmx_caps::IA32_FEATURE_CONTROL.0).unwrap_or(0);
    vmx_caps::check_platform(x86::cpuid(1)[2], feature_control)?;
    VmxCaps::read(|msr| x86::rdmsr_on_cpu(cpu, msr.0))
}

/// This CPU is in VMX root operation, with interrupts off, for as long as the value lives.
/// Dropping it leaves VMX operation and restores CR4 exactly.
pub(crate) struct VmxOperation<'a> {
    saved_cr4: u64,
    /// The window cannot outlive the interrupts-off section that makes it safe.
    _irq: &'a LocalInterruptDisabled,
}

impl Drop for VmxOperation<'_> {
    fn drop(&mut self) {
        // SAFETY: the value exists only after a successful VMXON on this CPU (interrupts have
        // stayed off since, `_irq`), so VMXOFF is valid; CR4 gets back the value it had.
        unsafe {
            x86::vmxoff();
            x86::write_cr4(self.saved_cr4);
        }
    }
}

/// Why a VMX window could not be opened.
#[derive(Debug)]
pub(crate) enum EnterError {
    /// CR4.VMXE was already set: another hypervisor (kvm_intel) holds VMX on this CPU.
    Busy,
    /// CR0/CR4 do not satisfy the VMX fixed bits.
    FixedBits,
    /// VMXON failed.
    VmxonFailed,
    /// The CPU number has no VMXON region.
    NoRegion,
}

impl From<EnterError> for Error {
    fn from(e: EnterError) -> Error {
        match e {
            EnterError::Busy => EBUSY,
            EnterError::FixedBits | EnterError::VmxonFailed => EIO,
            EnterError::NoRegion => EINVAL,
        }
    }
}

impl Vmx {
    /// The VMX state of the loaded module, for code that runs while the module is loaded
    /// (an open file or a hotplug callback holds it there).
    pub(crate) fn get() -> Option<&'static Vmx> {
        // SAFETY: the pointer is either null or points to the `Vmx` owned by the live
        // `VmxRegistration`, which clears it before freeing (after all its users are gone).
        unsafe { VMX.load(Ordering::Acquire).as_ref() }
    }

    /// The capabilities every CPU shares.
    pub(crate) fn caps(&self) -> &VmxCaps {
        &self.caps
    }

    /// The FPU/extended state switched for guests.
    pub(crate) fn fpu(&self) -> &crate::cpu::fpu::Features {
        &self.fpu
    }

    /// Whether the CPU has IA32_DEBUGCTL.
    pub(crate) fn has_debugctl(&self) -> bool {
        self.debugctl
    }

    /// The speculative-execution protections around guests.
    pub(crate) fn mitigations(&self) -> &crate::cpu::mitigations::Mitigations {
        &self.mitigations
    }

    /// Runs `f` on the current CPU in VMX root operation, with interrupts off throughout.
    pub(crate) fn with_vmx_operation<R>(
        &self,
        f: impl FnOnce(&VmxOperation<'_>) -> R,
    ) -> Result<R, EnterError> {
        let irq = interrupt::local_interrupt_disable();
        let op = self.enter(&irq)?;
        let result = f(&op);
        drop(op);
        Ok(result)
    }

    fn enter<'a>(&self, irq: &'a LocalInterruptDisabled) -> Result<VmxOperation<'a>, EnterError> {
        // Interrupts are off: the task cannot migrate, so this stays the current CPU.
        let cpu = CpuId::current().as_u32() as usize;
        let region = self.vmxon.get(cpu).ok_or(EnterError::NoRegion)?;
        let cr4 = x86::read_cr4();
        if cr4 & CR4_VMXE != 0 {
            return Err(EnterError::Busy);
        }
        if !self.caps.control_registers_ok(x86::read_cr0(), cr4 | CR4_VMXE) {
            return Err(EnterError::FixedBits);
        }
        // SAFETY: interrupts are off and VMXE is a bit rvmx owns (it was clear).
        unsafe { x86::write_cr4(cr4 | CR4_VMXE) };
        // SAFETY: interrupts are off, CR4.VMXE is set, the fixed bits were checked, and the
        // region belongs to this CPU and holds the revision id.
        if !unsafe { x86::vmxon(region.phys) } {
            // SAFETY: restores the CR4 value read above, with interrupts still off.
            unsafe { x86::write_cr4(cr4) };
            return Err(EnterError::VmxonFailed);
        }
        Ok(VmxOperation { saved_cr4: cr4, _irq: irq })
    }

    /// Checks `cpu` (the current CPU) like the boot CPU and proves VMX operation on it with
    /// one short window. Logs the reason on failure.
    fn bring_up_cpu(&self, cpu: u32) -> Result {
        if CpuId::current().as_u32() != cpu {
            pr_err!("CPU {cpu}: hotplug callback ran on another CPU\n");
            return Err(EINVAL);
        }
        match probe(cpu) {
            Ok(caps) if caps == self.caps => {}
            Ok(_) => {
                pr_err!("CPU {cpu}: VMX capabilities differ from the boot CPU's\n");
                return Err(EIO);
            }
            Err(why) => {
                pr_err!("CPU {cpu}: {why}\n");
                return Err(errno(&why));
            }
        }
        self.with_vmx_operation(|_| ()).map_err(|e| {
            match e {
                EnterError::Busy => pr_err!(
                    "CPU {cpu}: CR4.VMXE is already set: another hypervisor (kvm_intel) holds \
                     VMX; unload it first (rmmod kvm_intel)\n"
                ),
                EnterError::FixedBits => {
                    pr_err!("CPU {cpu}: CR0/CR4 do not satisfy the VMX fixed bits\n")
                }
                EnterError::VmxonFailed => pr_err!("CPU {cpu}: VMXON failed\n"),
                EnterError::NoRegion => pr_err!("CPU {cpu}: no VMXON region for this CPU\n"),
            }
            Error::from(e)
        })?;
        self.cpus_ready.fetch_add(1, Ordering::Relaxed);
        if self.loaded.load(Ordering::Relaxed) {
            pr_info!("CPU {cpu}: VMX operation ready\n");
        }
        Ok(())
    }
}

/// Hotplug startup callback: runs on each CPU as it comes online.
unsafe extern "C" fn cpu_online(cpu: ffi::c_uint) -> ffi::c_int {
    match Vmx::get() {
        Some(vmx) => match vmx.bring_up_cpu(cpu) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        },
        None => EINVAL.to_errno(),
    }
}

/// Owns the machine's VMX state while the module is loaded.
pub(crate) struct VmxRegistration {
    /// Dropped first: no hotplug callback runs after it.
    hotplug: Option<OnlineCallback>,
    vmx: KBox<Vmx>,
}

impl VmxRegistration {
    /// Checks that this machine can run rvmx, allocates VMXON regions for every possible CPU
    /// and proves VMX operation on every online CPU. Logs one line: the capabilities, or why not.
    pub(crate) fn new() -> Result<Self> {
        // Under FRED a host NMI cannot be handed to the kernel with `int $2` (KVM uses a
        // FRED entry exported only to KVM): refuse rather than lose NMIs or oops.
        if crate::host::x86::host_uses_fred() {
            pr_err!("the host kernel uses FRED, which rvmx does not support yet (boot with fred=off)\n");
            return Err(EOPNOTSUPP);
        }
        let cpu = CpuId::current().as_u32();
        let caps = probe(cpu).map_err(|why| {
            pr_err!("{why}\n");
            errno(&why)
        })?;
        let nr_cpus = kernel::cpu::nr_cpu_ids() as usize;
        let mut vmxon = KVec::with_capacity(nr_cpus, GFP_KERNEL)?;
        for _ in 0..nr_cpus {
            vmxon.push(VmxonRegion::new(caps.revision_id())?, GFP_KERNEL)?;
        }
        let vmx = KBox::new(
            Vmx {
                caps,
                fpu: crate::cpu::fpu::Features::probe()?,
                debugctl: crate::cpu::debugregs::has_debugctl(),
                mitigations: crate::cpu::mitigations::Mitigations::new()?,
                vmxon, cpus_ready: AtomicU32::new(0), loaded: AtomicBool::new(false) },
            GFP_KERNEL,
        )?;
        let mut reg = Self { hotplug: None, vmx };
        VMX.store(&*reg.vmx as *const Vmx as *mut Vmx, Ordering::Release);
        // On error `reg` is dropped, which unpublishes the state.
        reg.hotplug = Some(OnlineCallback::register(c"rvmx:online", cpu_online)?);
        reg.vmx.loaded.store(true, Ordering::Relaxed);
        pr_info!(
            "VMX ready on {} CPUs: {}; guest XCR0 up to {:#x}\n",
            reg.vmx.cpus_ready.load(Ordering::Relaxed),
            reg.vmx.caps,
            reg.vmx.fpu.xcr0
        );
        Ok(reg)
    }
}

impl Drop for VmxRegistration {
    fn drop(&mut self) {
        // Stop hotplug callbacks before the state they use goes away.
        self.hotplug.take();
        VMX.store(ptr::null_mut(), Ordering::Release);
    }
}
