// SPDX-License-Identifier: GPL-2.0

//! A VM: its memory slots and vCPUs, reached through a VM fd (`KVM_CREATE_VM`).

use core::sync::atomic::{AtomicI32, Ordering};
use kernel::{
    bindings, current, ffi, new_mutex,
    prelude::*,
    sync::{Arc, ArcBorrow, Mutex},
};

use crate::{
    ept::Ept,
    ept_bits::violation,
    fd::{self, read_user, FdObject},
    kvm_abi::{self, *},
    mem::PinnedPage,
    memslot_rules::{self, Change, Refusal, Slot},
    vcpu::Vcpu,
};

/// The identity of the calling process's address space, as KVM records `kvm->mm`.
pub(crate) fn current_mm() -> usize {
    current!().mm().map_or(0, |mm| mm as *const _ as usize)
}

#[pin_data]
pub(crate) struct Vm {
    /// The creator's address space: KVM refuses VM and vCPU ioctls from any other (`EIO`),
    /// e.g. from a forked child, because guest memory is the creator's.
    mm: usize,
    /// The EPT pointer; the root table never changes.
    eptp: u64,
    /// The host CPU each vCPU (by id) is in a VMX window on, or -1.
    running: [AtomicI32; MAX_VCPU_ID as usize],
    #[pin]
    inner: Mutex<VmInner>,
}

struct VmInner {
    slots: KVec<Slot>,
    vcpu_ids: KVec<u32>,
    ept: Ept,
    /// Every guest page EPT maps, with the user page behind it (pinned until unmapped).
    pinned: KVec<(u64, PinnedPage)>,
}

impl VmInner {
    /// The slot whose RAM backs `gpa` for this access: none outside every slot, nor for a
    /// write to a read-only slot (both are MMIO).
    fn ram_slot(&self, gpa: u64, write: bool) -> Option<Slot> {
        self.slots.iter().find(|s| s.contains(gpa) && !(write && s.readonly())).copied()
    }
}

/// Runs on a CPU that was in a VMX window of this VM: by the time it runs, the window has
/// ended (windows keep interrupts off), so the vCPU's next window starts with INVEPT.
unsafe extern "C" fn kicked(_info: *mut ffi::c_void) {}

impl Vm {
    /// `KVM_CREATE_VM`: only type 0 (the default x86 VM) exists.
    pub(crate) fn create(vm_type: usize) -> Result<isize> {
        if vm_type != 0 {
            return Err(EINVAL);
        }
        let ept = Ept::new()?;
        let eptp = ept.eptp();
        let vm = Arc::pin_init(
            pin_init!(Vm {
                mm: current_mm(),
                eptp,
                running: [const { AtomicI32::new(-1) }; MAX_VCPU_ID as usize],
                inner <- new_mutex!(VmInner {
                    slots: KVec::new(),
                    vcpu_ids: KVec::new(),
                    ept,
                    pinned: KVec::new(),
                }),
            }),
            GFP_KERNEL,
        )?;
        Ok(fd::install(vm)? as isize)
    }

    /// Fails with `EIO` unless called from the VM creator's address space (as KVM does).
    pub(crate) fn check_owner(&self) -> Result {
        if current_mm() != self.mm {
            return Err(EIO);
        }
        Ok(())
    }

    fn set_memory_region(&self, arg: usize) -> Result<isize> {
        let region: UserspaceMemoryRegion = read_user(arg)?;
        let mut inner = self.inner.lock();
        match memslot_rules::decide(&region, &inner.slots) {
            Err(Refusal::Invalid) => Err(EINVAL),
            Err(Refusal::Overlap) => Err(EEXIST),
            Ok(Change::Unchanged) => Ok(0),
            Ok(Change::Create(slot)) => {
                inner.slots.push(slot, GFP_KERNEL)?;
                Ok(0)
            }
            Ok(Change::Delete(id)) => {
                self.unmap_slot(&mut inner, id);
                inner.slots.retain(|s| s.id != id);
                Ok(0)
            }
            Ok(Change::Move(slot)) => {
                self.unmap_slot(&mut inner, slot.id);
                for s in inner.slots.iter_mut().filter(|s| s.id == slot.id) {
                    *s = slot;
                }
                Ok(0)
            }
        }
    }

    /// Removes slot `id`'s pages from the EPT, makes sure no vCPU still runs with the old
    /// translations, then unpins them.
    fn unmap_slot(&self, inner: &mut VmInner, id: u16) {
        let Some(slot) = inner.slots.iter().find(|s| s.id == id).copied() else { return };
        let VmInner { ept, pinned, .. } = inner;
        for (gpa, _) in pinned.iter().filter(|(gpa, _)| slot.contains(*gpa)) {
            ept.unmap(*gpa);
        }
        // Pairs with the store before INVEPT in a window (run.rs): a vCPU not seen here
        // flushes after the unmap above.
        core::sync::atomic::fence(Ordering::SeqCst);
        for cpu in self.running.iter().map(|r| r.load(Ordering::SeqCst)).filter(|c| *c >= 0) {
            // SAFETY: `kicked` does nothing and needs no data; waiting is allowed here
            // (process context, interrupts on).
            unsafe { bindings::smp_call_function_single(cpu, Some(kicked), core::ptr::null_mut(), true) };
        }
        pinned.retain(|(gpa, _)| !slot.contains(*gpa));
    }

    /// Maps the guest page holding `gpa` after an EPT violation: `Ok(false)` if no slot backs
    /// it (or it is a write to a read-only slot): an MMIO access.
    pub(crate) fn fault_in(&self, gpa: u64, qualification: u64) -> Result<bool> {
        let mut inner = self.inner.lock();
        let Some(slot) = inner.ram_slot(gpa, qualification & violation::WRITE != 0) else {
            return Ok(false);
        };
        let writable = !slot.readonly();
        let page_gpa = gpa & !0xfff;
        if inner.ept.is_mapped(page_gpa) {
            return Ok(true); // another vCPU mapped it first
        }
        inner.pinned.reserve(1, GFP_KERNEL)?;
        let page = PinnedPage::pin(slot.uaddr + (page_gpa - slot.gpa), writable)?;
        inner.ept.map(page_gpa, page.phys(), writable)?;
        inner.pinned.push((page_gpa, page), GFP_KERNEL)?;
        Ok(true)
    }

    /// An EPT-misconfiguration exit at `gpa`: a bug in rvmx's tables, never the guest's doing.
    /// Logs the offending entry (the first few times) and ends `KVM_RUN` with
    /// `KVM_EXIT_INTERNAL_ERROR` (unexpected exit reason, then GPA, level and entry).
    pub(crate) fn report_ept_misconfig(&self, gpa: u64, run: &crate::run::KvmRun) {
        static REPORTS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
        let found = self.inner.lock().ept.find_misconfiguration(gpa);
        let (level, entry, why) = found.unwrap_or((0, 0, "no bad entry on the walk any more"));
        if REPORTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed) < 8 {
            pr_err!("EPT misconfiguration at GPA {:#x}: level {} entry {:#x}: {}\n", gpa, level, entry, why);
        }
        let reason = crate::vmx_exit::reason::EPT_MISCONFIG as u64;
        run.internal_error(crate::exit::internal::UNEXPECTED_EXIT_REASON, &[reason, gpa, level as u64, entry]);
    }

    /// The userspace address of the guest RAM byte at `gpa`, if a slot backs it for this
    /// access (a write to a read-only slot is MMIO, like an access outside every slot).
    pub(crate) fn ram_uaddr(&self, gpa: u64, write: bool) -> Option<u64> {
        let slot = self.inner.lock().ram_slot(gpa, write)?;
        Some(slot.uaddr + (gpa - slot.gpa))
    }

    /// The EPT pointer of this VM.
    pub(crate) fn eptp(&self) -> u64 {
        self.eptp
    }

    /// Where vCPU `id` records the CPU its window runs on.
    pub(crate) fn running(&self, id: u32) -> &AtomicI32 {
        &self.running[id as usize]
    }

    fn create_vcpu(this: ArcBorrow<'_, Self>, id: usize) -> Result<isize> {
        let id = u32::try_from(id).map_err(|_| EINVAL)?;
        if id >= MAX_VCPU_ID {
            return Err(EINVAL);
        }
        {
            let mut inner = this.inner.lock();
            if inner.vcpu_ids.iter().any(|v| *v == id) {
                return Err(EEXIST);
            }
            if inner.vcpu_ids.len() >= MAX_VCPUS {
                return Err(EINVAL);
            }
            inner.vcpu_ids.push(id, GFP_KERNEL)?;
        }
        let vcpu = Vcpu::new(this.into(), id).and_then(|v| Ok(fd::install(v)? as isize));
        if vcpu.is_err() {
            this.inner.lock().vcpu_ids.retain(|v| *v != id);
        }
        vcpu
    }
}

impl FdObject for Vm {
    const NAME: &'static CStr = c"kvm-vm";

    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.check_owner()?;
        match cmd {
            KVM_CREATE_VCPU => Vm::create_vcpu(this, arg),
            KVM_SET_USER_MEMORY_REGION => this.set_memory_region(arg),
            KVM_CHECK_EXTENSION => Ok(kvm_abi::check_extension(arg)),
            // With unrestricted guest rvmx needs neither the real-mode TSS nor the identity map
            // that KVM keeps for CPUs without it: both are checked as KVM checks them, then
            // not used.
            KVM_SET_TSS_ADDR => {
                // The three pages must fit below 4 GiB.
                if arg as u64 > (u32::MAX as u64 + 1) - 3 * 4096 {
                    return Err(EINVAL);
                }
                Ok(0)
            }
            KVM_SET_IDENTITY_MAP_ADDR => {
                if !this.inner.lock().vcpu_ids.is_empty() {
                    return Err(EINVAL); // only before the first vCPU
                }
                let _addr: u64 = read_user(arg)?;
                Ok(0)
            }
            // KVM checks the header, then refuses without an in-kernel irqchip (QEMU only
            // asks for the capability with kernel-irqchip=off).
            KVM_SET_GSI_ROUTING => {
                let _header: u64 = read_user(arg)?;
                Err(EINVAL)
            }
            // KVM's VM fd answers ENOTTY to requests it does not know (kvm_arch_vm_ioctl).
            _ => Err(ENOTTY),
        }
    }
}
