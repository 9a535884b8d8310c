// SPDX-License-Identifier: GPL-2.0

//! A VM: its memory slots and vCPUs, reached through a VM fd (`KVM_CREATE_VM`).

use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use kernel::{
    bindings, current, ffi, new_mutex,
    prelude::*,
    sync::{lock::{mutex::MutexBackend, Guard}, Arc, ArcBorrow, Mutex},
    uaccess::{UserPtr, UserSlice},
};

use crate::{
    ept::Ept,
    ept_bits::violation,
    fd::{self, read_user, FdObject},
    ioeventfd::IoEventFds,
    ioeventfd_rules::Bus,
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
    /// Statistics in debugfs.
    stats: crate::stats::VmStats,
    /// Whether any `KVM_IOEVENTFD` is registered (set under `inner`'s lock): port writes
    /// skip the lock while none is, which is the common case.
    has_ioeventfds: AtomicBool,
    #[pin]
    inner: Mutex<VmInner>,
}

struct VmInner {
    slots: KVec<Slot>,
    vcpu_ids: KVec<u32>,
    ept: Ept,
    /// Every guest page EPT maps, with the user page behind it (pinned until unmapped).
    pinned: KVec<(u64, PinnedPage)>,
    /// `KVM_IOEVENTFD` registrations.
    ioeventfds: IoEventFds,
    /// The dirty bitmap of each slot that logs writes, by slot id (bit n: page n written).
    dirty: KVec<(u16, KVec<u64>)>,
}

impl VmInner {
    /// The slot whose RAM backs `gpa` for this access: none outside every slot, nor for a
    /// write to a read-only slot (both are MMIO).
    fn ram_slot(&self, gpa: u64, write: bool) -> Option<Slot> {
        self.slots.iter().find(|s| s.contains(gpa) && !(write && s.readonly())).copied()
    }

    /// Records a write to guest page `gpa` of `slot` if the slot logs writes.
    fn mark_dirty(&mut self, slot: &Slot, gpa: u64) {
        if let Some((_, bits)) = self.dirty.iter_mut().find(|(id, _)| *id == slot.id) {
            let page = (gpa.wrapping_sub(slot.gpa) >> 12) as usize; // gpa is in the slot
            if let Some(word) = bits.get_mut(page / 64) {
                *word |= 1 << (page % 64);
            }
        }
    }

    /// Maps `pages`, pinned for the guest pages from `first` on, and keeps them pinned.
    fn map_run(&mut self, first: u64, pages: KVec<PinnedPage>, writable: bool) -> Result {
        for (i, page) in pages.into_iter().enumerate() {
            let gpa = first.wrapping_add((i as u64) << 12); // the run is inside one slot
            self.ept.map(gpa, page.phys(), writable)?;
            self.pinned.push((gpa, page), GFP_KERNEL)?;
        }
        Ok(())
    }

    /// Replaces slot `slot.id` with `slot`.
    fn set_slot(&mut self, slot: Slot) {
        for s in self.slots.iter_mut().filter(|s| s.id == slot.id) {
            *s = slot;
        }
    }

    /// Gives `slot` a dirty bitmap if it logs writes and has none, drops it if it does not.
    fn update_bitmap(&mut self, slot: &Slot) -> Result {
        let has = self.dirty.iter().any(|(id, _)| *id == slot.id);
        if slot.logs_dirty() && !has {
            let bits = KVec::from_elem(0u64, slot.bitmap_words(), GFP_KERNEL)?;
            self.dirty.push((slot.id, bits), GFP_KERNEL)?;
        } else if !slot.logs_dirty() && has {
            self.dirty.retain(|(id, _)| *id != slot.id);
        }
        Ok(())
    }
}

/// What faulting in a guest page found.
pub(crate) enum Fault<'a> {
    /// RAM: the page is mapped now.
    Mapped,
    /// No RAM for this access: MMIO, emulated with the memory still locked.
    Mmio(Memory<'a>),
}

/// A VM's memory slots and I/O registrations, locked: an emulated instruction (its fetch,
/// the guest page walk, its data and any ioeventfd) takes the lock once.
pub(crate) struct Memory<'a>(Guard<'a, VmInner, MutexBackend>);

impl Memory<'_> {
    /// The userspace address of the guest RAM byte at `gpa`, if a slot backs it for this
    /// access (a write to a read-only slot is MMIO, like an access outside every slot).
    pub(crate) fn ram_uaddr(&mut self, gpa: u64, write: bool) -> Option<u64> {
        let slot = self.0.ram_slot(gpa, write)?;
        if write {
            // rvmx writes guest RAM for the guest (emulation): logged like the guest's own.
            self.0.mark_dirty(&slot, gpa & !0xfff);
        }
        Some(slot.uaddr_of(gpa))
    }

    /// Whether a slot backs `gpa` with RAM for this access.
    pub(crate) fn is_ram(&self, gpa: u64, write: bool) -> bool {
        self.0.ram_slot(gpa, write).is_some()
    }

    /// Reads guest RAM at `gpa` (inside one page): from the page EPT maps there when there is
    /// one, else from the slot's user memory.
    pub(crate) fn read_ram(&self, gpa: u64, buf: &mut [u8]) -> Result {
        if self.0.ept.read(gpa, buf) {
            return Ok(());
        }
        let slot = self.0.ram_slot(gpa, false).ok_or(EFAULT)?;
        let uaddr = slot.uaddr_of(gpa) as usize;
        UserSlice::new(UserPtr::from_addr(uaddr), buf.len()).reader().read_slice(buf)
    }

    /// A guest write that `KVM_IOEVENTFD` registered: signals its eventfd and returns true;
    /// false if none matches (the write exits to userspace).
    pub(crate) fn ioeventfd_write(&self, bus: Bus, addr: u64, len: u32, value: u64) -> bool {
        self.0.ioeventfds.write(bus, addr, len, value)
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
        let stats = crate::stats::VmStats::new(current!().tgid())?;
        let vm = Arc::pin_init(
            pin_init!(Vm {
                mm: current_mm(),
                eptp,
                running: [const { AtomicI32::new(-1) }; MAX_VCPU_ID as usize],
                stats,
                has_ioeventfds: AtomicBool::new(false),
                inner <- new_mutex!(VmInner {
                    slots: KVec::new(),
                    vcpu_ids: KVec::new(),
                    ept,
                    pinned: KVec::new(),
                    ioeventfds: IoEventFds::default(),
                    dirty: KVec::new(),
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

    fn set_memory_region(&self, region: UserspaceMemoryRegion) -> Result<isize> {
        let mut inner = self.inner.lock();
        match memslot_rules::decide(&region, &inner.slots) {
            Err(Refusal::Invalid) => Err(EINVAL),
            Err(Refusal::Overlap) => Err(EEXIST),
            Ok(Change::Unchanged) => Ok(0),
            Ok(Change::Create(slot)) => {
                inner.slots.reserve(1, GFP_KERNEL)?;
                inner.update_bitmap(&slot)?;
                inner.slots.push(slot, GFP_KERNEL)?;
                Ok(0)
            }
            Ok(Change::Delete(id)) => {
                self.unmap_slot(&mut inner, id);
                inner.slots.retain(|s| s.id != id);
                inner.dirty.retain(|(d, _)| *d != id);
                Ok(0)
            }
            Ok(Change::Move(slot)) => {
                // A bitmap the slot keeps logging into moves with it, as KVM's does.
                inner.update_bitmap(&slot)?;
                self.unmap_slot(&mut inner, slot.id);
                inner.set_slot(slot);
                Ok(0)
            }
            Ok(Change::Flags(slot)) => {
                inner.update_bitmap(&slot)?;
                if slot.logs_dirty() {
                    // From now on the first write to each page must fault to be logged.
                    let VmInner { ept, pinned, .. } = &mut *inner;
                    for (gpa, _) in pinned.iter().filter(|(gpa, _)| slot.contains(*gpa)) {
                        ept.set_writable(*gpa, false);
                    }
                    self.flush_vcpus();
                }
                inner.set_slot(slot);
                Ok(0)
            }
        }
    }

    /// `KVM_GET_DIRTY_LOG`: copies the slot's bitmap of pages written since the last call
    /// to userspace and starts a new round: the bitmap is cleared and those pages are
    /// write-protected again (KVM's order: a failed copy loses the round, `EFAULT`).
    /// `EINVAL` for a slot number out of range, `ENOENT` for a slot that does not log.
    fn get_dirty_log(&self, arg: usize) -> Result<isize> {
        let log: DirtyLog = read_user(arg)?;
        if log.slot >> 16 != 0 || log.slot & 0xffff >= memslot_rules::MAX_SLOTS {
            return Err(EINVAL);
        }
        let id = log.slot as u16;
        let mut inner = self.inner.lock();
        let slot = inner.slots.iter().find(|s| s.id == id).copied().ok_or(ENOENT)?;
        let VmInner { ept, dirty, .. } = &mut *inner;
        let (_, bits) = dirty.iter_mut().find(|(d, _)| *d == id).ok_or(ENOENT)?;
        let mut copy = KVec::with_capacity(bits.len(), GFP_KERNEL)?;
        let mut any = false;
        for (w, word) in bits.iter_mut().enumerate() {
            let taken = core::mem::take(word);
            any |= taken != 0;
            for bit in (0..64).filter(|b| taken & (1 << b) != 0) {
                let page = ((w << 6) | bit) as u64; // 64 pages a word
                ept.set_writable(slot.gpa.wrapping_add(page << 12), false);
            }
            copy.push(taken, GFP_KERNEL)?;
        }
        if any {
            self.flush_vcpus();
        }
        drop(inner);
        let mut writer = UserSlice::new(UserPtr::from_addr(log.dirty_bitmap as usize), size_of_val(copy.as_slice())).writer();
        for word in copy.iter() {
            writer.write(word)?;
        }
        Ok(0)
    }

    /// Makes sure no vCPU still runs with translations from before a change to the EPT:
    /// a vCPU in a window is interrupted (its next window starts with INVEPT).
    fn flush_vcpus(&self) {
        // Pairs with the store before INVEPT in a window (run.rs): a vCPU not seen here
        // flushes after the change.
        core::sync::atomic::fence(Ordering::SeqCst);
        for cpu in self.running.iter().map(|r| r.load(Ordering::SeqCst)).filter(|c| *c >= 0) {
            // SAFETY: `kicked` does nothing and needs no data; waiting is allowed here
            // (process context, interrupts on).
            unsafe { bindings::smp_call_function_single(cpu, Some(kicked), core::ptr::null_mut(), true) };
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
        self.flush_vcpus();
        pinned.retain(|(gpa, _)| !slot.contains(*gpa));
    }

    /// Maps the guest page holding `gpa` after an EPT violation; [`Fault::Mmio`] if no slot
    /// backs it (or it is a write to a read-only slot).
    pub(crate) fn fault_in(&self, gpa: u64, qualification: u64) -> Result<Fault<'_>> {
        let mut inner = self.inner.lock();
        let write = qualification & violation::WRITE != 0;
        let Some(slot) = inner.ram_slot(gpa, write) else {
            return Ok(Fault::Mmio(Memory(inner)));
        };
        let page_gpa = gpa & !0xfff;
        if write {
            inner.mark_dirty(&slot, page_gpa);
        }
        if inner.ept.is_mapped(page_gpa) {
            // Another vCPU mapped it first, or a write to a page kept read-only for logging.
            if write {
                inner.ept.set_writable(page_gpa, true);
            }
            return Ok(Fault::Mapped);
        }
        // With logging, a page read first stays read-only until its first write (and is mapped
        // alone); otherwise the unmapped pages around it come in too, in one pin.
        let writable = !slot.readonly() && (write || !slot.logs_dirty());
        let around = crate::module_parameters::fault_around.value();
        let (first, count) = slot.fault_around(page_gpa, around, |g| inner.ept.is_mapped(g));
        inner.pinned.reserve(count as usize, GFP_KERNEL)?;
        let uaddr = |gpa: u64| slot.uaddr_of(gpa);
        match PinnedPage::pin_run(uaddr(first), count as usize, !slot.readonly()) {
            Ok(pages) if first.saturating_add((pages.len() as u64) << 12) > page_gpa => inner.map_run(first, pages, writable)?,
            // The run failed or stopped short of the page touched (a neighbour the host cannot
            // give): that page alone, with its own error if it fails too.
            _ => inner.map_run(page_gpa, PinnedPage::pin_run(uaddr(page_gpa), 1, !slot.readonly())?, writable)?,
        }
        Ok(Fault::Mapped)
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

    /// The VM's memory, locked for one instruction's emulation.
    pub(crate) fn memory(&self) -> Memory<'_> {
        Memory(self.inner.lock())
    }

    /// A guest port write that `KVM_IOEVENTFD` registered: signals its eventfd and returns
    /// true; false if none matches (the write exits to userspace).
    pub(crate) fn ioeventfd_write(&self, bus: Bus, addr: u64, len: u32, value: u64) -> bool {
        // Racing with a registration, the write is simply ordered before it.
        self.has_ioeventfds.load(Ordering::Acquire) && self.memory().ioeventfd_write(bus, addr, len, value)
    }

    /// The EPT pointer of this VM.
    pub(crate) fn eptp(&self) -> u64 {
        self.eptp
    }

    /// Where vCPU `id` records the CPU its window runs on.
    pub(crate) fn running(&self, id: u32) -> Result<&AtomicI32> {
        self.running.get(id as usize).ok_or(EINVAL) // ids are checked when vCPUs are created
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
        let vcpu = this
            .stats
            .add_vcpu(id)
            .and_then(|stats| Vcpu::new(this.into(), id, stats))
            .and_then(|v| Ok(fd::install(v)? as isize));
        if vcpu.is_err() {
            this.stats.remove_vcpu(id);
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
            KVM_SET_USER_MEMORY_REGION => this.set_memory_region(read_user(arg)?),
            KVM_SET_USER_MEMORY_REGION2 => {
                let r: UserspaceMemoryRegion2 = read_user(arg)?;
                this.set_memory_region(r.region())
            }
            KVM_GET_DIRTY_LOG => this.get_dirty_log(arg),
            KVM_CHECK_EXTENSION => Ok(kvm_abi::check_extension(arg)),
            // With unrestricted guest rvmx needs neither the real-mode TSS nor the identity map
            // that KVM keeps for CPUs without it: both are checked as KVM checks them, then
            // not used.
            KVM_SET_TSS_ADDR => {
                // The three pages must fit below 4 GiB.
                if arg as u64 > (1 << 32) - 3 * 4096 {
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
            KVM_IOEVENTFD => {
                let arg = read_user(arg)?;
                let mut inner = this.inner.lock();
                let r = inner.ioeventfds.ioctl(&arg);
                this.has_ioeventfds.store(!inner.ioeventfds.is_empty(), Ordering::Release);
                r?;
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
