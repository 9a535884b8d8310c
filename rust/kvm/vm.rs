// SPDX-License-Identifier: GPL-2.0

//! A VM: its memory slots, its ioeventfds and coalesced-MMIO zones, and the ids of its vCPUs. Its fd's ioctls are
//! vm_fd.rs.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::sync::atomic::Atomic;
use kernel::{
    current,
    mm::Mm,
    new_mutex,
    prelude::*,
    sync::{aref::ARef, Arc, Mutex},
    uaccess::{UserPtr, UserSlice},
};

use crate::{
    cpu::msr_filter::MsrFilter,
    vmx::ept::TableCache,
    logic::ept_bits::violation,
    logic::guest_paging::page_chunks,
    kvm::fd,
    host::uaccess::read_user,
    mm::guest_memory::{GuestMemory, Outcome},
    kvm::ioeventfd::IoEventFds,
    kvm::coalesced_mmio::{Ring, Zones},
    logic::coalesced_mmio::Zone,
    logic::ioeventfd_rules::{Bus, IoEventFdArg},
    run::counters::VcpuStats,
    logic::kvm_abi::*,
    logic::memslot_rules::{self, AddressSpace, Change, Refusal},
    mm::mmu_notifier::MmuNotifier,
};

#[pin_data]
pub(crate) struct Vm {
    /// The creator's address space (held with `mmgrab`, so it cannot be reused): KVM refuses
    /// VM and vCPU ioctls from any other (`EIO`), e.g. from a forked child, because guest
    /// memory is the creator's.
    mm: ARef<Mm>,
    /// Slots, EPT and dirty bitmaps of address space 0, kept in step with `mm` by `notifier`.
    memory: Arc<GuestMemory>,
    notifier: MmuNotifier,
    /// Address space 1: what vCPUs in SMM see (`KVM_CAP_MULTI_ADDRESS_SPACE`).
    smm_memory: Arc<GuestMemory>,
    smm_notifier: MmuNotifier,
    /// Statistics in debugfs.
    stats: crate::kvm::stats::VmStats,
    /// kvmclock (`KVM_GET/SET_CLOCK`, and what each vCPU's time page is written from).
    clock: Arc<crate::cpu::kvmclock::VmClock>,
    /// The vCPUs' in-kernel local APICs (split irqchip), as IPIs and MSIs reach them.
    apic_bus: Arc<crate::irq::bus::ApicBus>,
    /// `KVM_X86_QUIRK_*` bits userspace turned off.
    disabled_quirks: AtomicU64,
    /// Guests may read MSR_PLATFORM_INFO (`KVM_CAP_MSR_PLATFORM_INFO`, on by default).
    platform_info_readable: AtomicBool,
    /// The MSR failures userspace handles (`KVM_CAP_X86_USER_SPACE_MSR`).
    user_space_msr: AtomicU32,
    /// `KVM_CAP_EXIT_ON_EMULATION_FAILURE`.
    exit_on_emulation_failure: AtomicBool,
    /// The VM's own maximum halt-polling time in ns (`KVM_CAP_HALT_POLL`), above `u32::MAX`
    /// while it has none (the module parameter applies).
    max_halt_poll_ns: AtomicU64,
    /// The MSR filter (`KVM_X86_SET_MSR_FILTER`).
    #[pin]
    msr_filter: Mutex<Option<Arc<MsrFilter>>>,
    /// Bumped at each change of the settings above (quirks, MSR handling, the filter): a vCPU
    /// takes them again before its next entry, and an RDMSR/WRMSR exit that sees it moved
    /// runs again with the new ones (shared with the vCPUs, which read it before every entry:
    /// core's atomic, whose load is inline, where the kernel's calls a C helper).
    settings_gen: Arc<AtomicU64>,
    /// Whether any `KVM_IOEVENTFD` or coalesced-MMIO zone is registered (set under `inner`'s
    /// lock): port and MMIO writes skip the lock while none is, which is the common case.
    has_io_devices: AtomicBool,
    /// The coalesced-MMIO ring page (written under `inner`'s lock).
    coalesced_ring: Ring,
    /// The in-kernel 8254, once `KVM_CREATE_PIT2` made it.
    pit: kernel::sync::SetOnce<Arc<crate::irq::pit::PitDevice>>,
    /// Serializes slot changes and ioctls that read the slots; taken before `memory`'s MMU lock.
    #[pin]
    inner: Mutex<VmInner>,
}

struct VmInner {
    vcpu_ids: KVec<u32>,
    /// vCPU ids must be below this (`KVM_CAP_MAX_VCPU_ID`); 0 until set or a vCPU exists.
    max_vcpu_ids: u32,
    /// The vCPU id that starts as the BSP (`KVM_SET_BOOT_CPU_ID`; 0 by default).
    bsp_vcpu_id: u32,
    /// The local APICs' bus period (`KVM_CAP_X86_APIC_BUS_CYCLES_NS`).
    apic_bus_cycle_ns: u64,
    /// `KVM_CAP_SPLIT_IRQCHIP` was enabled with this many IOAPIC pins: every vCPU has a
    /// local APIC in the kernel.
    split_irqchip: Option<u32>,
    /// `KVM_CREATE_IRQCHIP` made the PIC pair and IOAPIC: every vCPU has a local APIC in the
    /// kernel too.
    full_irqchip: bool,
    /// `KVM_IOEVENTFD` registrations.
    ioeventfds: IoEventFds,
    /// `KVM_REGISTER_COALESCED_MMIO` zones.
    coalesced: Zones,
    /// `KVM_IRQFD` assignments.
    irqfds: crate::irq::irqfd::IrqFds,
}

impl VmInner {
    /// Local APICs in the kernel: the split irqchip or the full one.
    fn in_kernel(&self) -> bool {
        self.split_irqchip.is_some() || self.full_irqchip
    }
}

/// What faulting in a guest page found.
pub(crate) enum Fault<'a> {
    /// RAM: the page is mapped now (or the guest faults again).
    Mapped,
    /// No RAM for this access: MMIO, emulated with the memory still locked; as of the slot
    /// table's generation given ([`Memory::slots_gen`]).
    Mmio(Memory<'a>, u64),
    /// RAM the host cannot give for this access: `EFAULT`.
    HostFault,
    /// A signal interrupted the host's fault: `EINTR` with `KVM_EXIT_INTR`.
    Interrupted,
}

/// A VM's memory and I/O registrations as an emulated instruction sees them: each access looks
/// its slot up anew (under the MMU lock, briefly), so no VM-wide lock is held while the
/// instruction copies from or to the VMM's memory, which may fault, wait for swap or for a
/// userfaultfd handler (KVM holds none either).
pub(crate) struct Memory<'a> {
    memory: &'a GuestMemory,
    vm: &'a Vm,
}

impl Memory<'_> {
    /// The userspace address of the guest RAM byte at `gpa`, if a slot backs it for this
    /// access (a write to a read-only slot is MMIO, like an access outside every slot).
    pub(crate) fn ram_uaddr(&mut self, gpa: u64, write: bool) -> Option<u64> {
        Some(self.memory.ram_slot(gpa, write)?.uaddr_of(gpa))
    }

    /// The slot table's generation: it changes with every slot change.
    pub(crate) fn slots_gen(&self) -> u64 {
        self.memory.slots_gen()
    }

    /// Whether a slot backs `gpa` with RAM for this access.
    pub(crate) fn is_ram(&self, gpa: u64, write: bool) -> bool {
        self.memory.is_ram(gpa, write)
    }

    /// Reads guest RAM at `gpa` (inside one page): from the page EPT maps there when there is
    /// one, else from the slot's user memory.
    pub(crate) fn read_ram(&self, gpa: u64, buf: &mut [u8]) -> Result {
        self.read_ram_in(&mut self.mapped_reads(), gpa, buf)
    }

    /// Reads for a series of [`Self::read_ram_in`] under one hold of the MMU lock.
    pub(crate) fn mapped_reads(&self) -> crate::mm::guest_memory::MappedReads<'_> {
        self.memory.mapped_reads()
    }

    /// [`Self::read_ram`] as one of the series `reads`.
    pub(crate) fn read_ram_in(&self, reads: &mut crate::mm::guest_memory::MappedReads<'_>, gpa: u64, buf: &mut [u8]) -> Result {
        if reads.read(gpa, buf) {
            return Ok(());
        }
        // The user copy may fault and sleep: not under the MMU lock.
        reads.release();
        let slot = self.memory.ram_slot(gpa, false).ok_or(EFAULT)?;
        let uaddr = slot.uaddr_of(gpa) as usize;
        UserSlice::new(UserPtr::from_addr(uaddr), buf.len()).reader().read_slice(buf)
    }

    /// Writes `bytes` to guest RAM at `gpa` (inside one page), logged dirty; `EFAULT` where no
    /// slot backs it with writable RAM.
    pub(crate) fn write_ram(&mut self, gpa: u64, bytes: &[u8]) -> Result {
        let uaddr = self.ram_uaddr(gpa, true).ok_or(EFAULT)? as usize;
        UserSlice::new(UserPtr::from_addr(uaddr), bytes.len()).writer().write_slice(bytes)?;
        self.written(gpa);
        Ok(())
    }

    /// rvmx wrote the guest RAM page at `gpa` for the guest: logged dirty, after the write.
    pub(crate) fn written(&self, gpa: u64) {
        self.memory.mark_written(gpa);
    }

    /// Reads guest RAM at `gpa` into `buf`, page by page.
    pub(crate) fn read(&self, gpa: u64, buf: &mut [u8]) -> Result {
        for (at, range) in page_chunks(gpa, buf.len()) {
            self.read_ram(at, buf.get_mut(range).ok_or(EINVAL)?)?;
        }
        Ok(())
    }

    /// Writes `bytes` to guest RAM at `gpa`, page by page (each page logged dirty).
    pub(crate) fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result {
        for (at, range) in page_chunks(gpa, bytes.len()) {
            self.write_ram(at, bytes.get(range).ok_or(EINVAL)?)?;
        }
        Ok(())
    }

    /// A guest write of the low `len` bytes of `value` at `addr` on `bus`: true if an
    /// in-kernel device took it ([`Vm::io_write`]), false if it exits to userspace.
    pub(crate) fn io_write(&self, bus: Bus, addr: u64, len: u32, value: u64) -> bool {
        self.vm.io_write(bus, addr, len, value)
    }

    /// A guest MMIO read at `gpa` into `buf`: true if an in-kernel device answered.
    pub(crate) fn mmio_read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.vm.mmio_read(gpa, buf)
    }
}

impl Vm {
    /// `KVM_CREATE_VM`: only type 0 (the default x86 VM) exists.
    pub(crate) fn create(vm_type: usize) -> Result<isize> {
        if vm_type != KVM_X86_DEFAULT_VM {
            return Err(EINVAL);
        }
        let mm: ARef<Mm> = ARef::from(&**current!().mm().ok_or(EINVAL)?);
        let running = crate::mm::guest_memory::new_running()?;
        let flushes = Arc::new(Atomic::new(0), GFP_KERNEL_ACCOUNT)?;
        let memory = GuestMemory::new(running.clone(), flushes.clone())?;
        let notifier = MmuNotifier::register(memory.clone())?;
        let smm_memory = GuestMemory::new(running, flushes)?;
        let smm_notifier = MmuNotifier::register(smm_memory.clone())?;
        let stats = crate::kvm::stats::VmStats::new(current!().tgid())?;
        let clock = crate::cpu::kvmclock::VmClock::new()?;
        let settings_gen = Arc::new(AtomicU64::new(0), GFP_KERNEL_ACCOUNT)?;
        let apic_bus = crate::irq::bus::ApicBus::new(memory.clone())?;
        let coalesced_ring = Ring::new()?;
        let vm = Arc::pin_init(
            pin_init!(Vm {
                mm,
                memory,
                notifier,
                smm_memory,
                smm_notifier,
                stats,
                clock,
                apic_bus,
                disabled_quirks: AtomicU64::new(0),
                platform_info_readable: AtomicBool::new(true),
                user_space_msr: AtomicU32::new(0),
                exit_on_emulation_failure: AtomicBool::new(false),
                max_halt_poll_ns: AtomicU64::new(u64::MAX),
                msr_filter <- new_mutex!(None),
                settings_gen,
                has_io_devices: AtomicBool::new(false),
                coalesced_ring,
                pit: kernel::sync::SetOnce::new(),
                inner <- new_mutex!(VmInner { vcpu_ids: KVec::new(), max_vcpu_ids: 0, bsp_vcpu_id: 0, apic_bus_cycle_ns: crate::logic::lapic::APIC_BUS_CYCLE_NS_DEFAULT, split_irqchip: None, full_irqchip: false, ioeventfds: IoEventFds::default(), coalesced: Zones::default(), irqfds: Default::default() }),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        Ok(fd::install(vm)? as isize)
    }

    /// Fails with `EIO` unless called from the VM creator's address space (as KVM does).
    pub(crate) fn check_owner(&self) -> Result {
        let same = current!().mm().is_some_and(|mm| core::ptr::eq(mm.as_raw(), self.mm.as_raw()));
        if !same {
            return Err(EIO);
        }
        Ok(())
    }

    /// One of the VM's address spaces.
    fn space(&self, space: AddressSpace) -> &GuestMemory {
        match space {
            AddressSpace::Guest => &self.memory,
            AddressSpace::Smm => &self.smm_memory,
        }
    }

    pub(crate) fn set_memory_region(&self, region: UserspaceMemoryRegion) -> Result<isize> {
        let space = self.space(AddressSpace::of_slot(region.slot).ok_or(EINVAL)?);
        let _serialized = self.inner.lock();
        let change = match space.decide(&region) {
            Err(Refusal::Invalid) => return Err(EINVAL),
            Err(Refusal::Overlap) => return Err(EEXIST),
            Ok(change) => change,
        };
        // A moved slot is in the host-address index twice until its old range is unmapped.
        if let Change::Create(slot) | Change::Move(slot) = change {
            space.reserve(slot.id)?;
        }
        // A slot that starts logging gets its bitmap here, before the MMU lock.
        let bitmap = match change {
            Change::Create(slot) | Change::Move(slot) | Change::Flags(slot) => match space.bitmap_needed(&slot) {
                Some(words) => Some(KVVec::from_elem(0u64, words, GFP_KERNEL_ACCOUNT)?),
                None => None,
            },
            Change::Delete(_) | Change::Unchanged => None,
        };
        space.apply(change, bitmap)?;
        Ok(0)
    }

    /// `KVM_GET_DIRTY_LOG`: copies the slot's bitmap of pages written since the last call
    /// to userspace and starts a new round: the bitmap is cleared and those pages are
    /// write-protected again (KVM's order: a failed copy loses the round, `EFAULT`).
    /// `EINVAL` for a slot number out of range, `ENOENT` for a slot that does not log.
    pub(crate) fn get_dirty_log(&self, arg: usize) -> Result<isize> {
        let log: DirtyLog = read_user(arg)?;
        let space = AddressSpace::of_slot(log.slot).ok_or(EINVAL)?;
        if log.slot & 0xffff >= memslot_rules::MAX_SLOTS {
            return Err(EINVAL);
        }
        let (space, id) = (self.space(space), log.slot as u16);
        let copy = {
            let _serialized = self.inner.lock();
            let mut copy = KVVec::from_elem(0u64, space.dirty_log_words(id)?, GFP_KERNEL_ACCOUNT)?;
            space.take_dirty_log(id, &mut copy)?;
            copy
        };
        let mut writer = UserSlice::new(UserPtr::from_addr(log.dirty_bitmap as usize), size_of_val(copy.as_slice())).writer();
        for word in copy.iter() {
            writer.write(word)?;
        }
        Ok(0)
    }

    /// Maps the guest page holding `gpa` of address space `space` after an EPT violation;
    /// [`Fault::Mmio`] if no slot backs it (or it is a write to a read-only slot).
    pub(crate) fn fault_in(&self, space: AddressSpace, gpa: u64, qualification: u64, cache: &mut TableCache) -> Result<Fault<'_>> {
        let write = qualification & violation::WRITE != 0;
        Ok(match self.space(space).fault_in(gpa, write, cache)? {
            Outcome::Mapped => Fault::Mapped,
            Outcome::Mmio(slots_gen) => Fault::Mmio(self.memory(space), slots_gen),
            Outcome::HostFault => Fault::HostFault,
            Outcome::Interrupted => Fault::Interrupted,
        })
    }

    /// `KVM_PRE_FAULT_MEMORY`, one page: maps the guest page at `gpa` as a guest read would.
    /// `ENOENT` where no slot has RAM (KVM: the access would be emulated), `EFAULT` for RAM
    /// the host cannot give, `EINTR` for a signal.
    pub(crate) fn pre_fault_page(&self, space: AddressSpace, gpa: u64, cache: &mut TableCache) -> Result {
        let memory = self.space(space);
        loop {
            match memory.fault_in(gpa, false, cache)? {
                Outcome::Mapped if memory.is_mapped(gpa) => return Ok(()),
                // Raced with a change of the host mapping: again, as KVM retries.
                Outcome::Mapped if !current!().signal_pending() => crate::host::sched::cond_resched(),
                Outcome::Mapped | Outcome::Interrupted => return Err(EINTR),
                Outcome::Mmio(_) => return Err(ENOENT),
                Outcome::HostFault => return Err(EFAULT),
            }
        }
    }

    /// An EPT-misconfiguration exit at `gpa`: a bug in rvmx's tables, never the guest's doing.
    /// Logs the offending entry (the first few times) and returns its level and value (0, 0 if
    /// the walk finds none any more), for `KVM_EXIT_INTERNAL_ERROR`.
    pub(crate) fn report_ept_misconfig(&self, space: AddressSpace, gpa: u64) -> (u32, u64) {
        static REPORTS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
        let found = self.space(space).find_misconfiguration(gpa);
        let (level, entry, why) = found.unwrap_or((0, 0, "no bad entry on the walk any more"));
        if REPORTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed) < 8 {
            pr_err!("EPT misconfiguration at GPA {:#x}: level {} entry {:#x}: {}\n", gpa, level, entry, why);
        }
        (level as u32, entry)
    }

    /// The VM's memory in address space `space`, for one instruction's emulation.
    pub(crate) fn memory(&self, space: AddressSpace) -> Memory<'_> {
        Memory { memory: self.space(space), vm: self }
    }

    /// A guest write (port or MMIO) of the low `len` bytes of `value` at `addr`: an
    /// ioeventfd's registration signals its eventfd, else a coalesced-MMIO zone appends it to
    /// the ring; true if either took it, false if it exits to userspace. (KVM offers a write to
    /// the devices of its I/O bus in address order; only a zone and an ioeventfd at the same
    /// place could tell the orders apart.)
    pub(crate) fn io_write(&self, bus: Bus, addr: u64, len: u32, value: u64) -> bool {
        // The in-kernel PIT, PIC pair and IOAPIC first (their places are fixed).
        if let (Bus::Pio, Some(pit)) = (bus, self.pit.as_ref()) {
            if u16::try_from(addr).is_ok_and(|port| pit.port_write(port, len, value)) {
                return true;
            }
        }
        if let Some(c) = self.apic_bus.irqchip() {
            let taken = match bus {
                Bus::Pio => u16::try_from(addr).is_ok_and(|port| c.port_write(&self.apic_bus, port, len, value)),
                Bus::Mmio => c.mmio_write(&self.apic_bus, addr, len, value),
                Bus::Ccw => false,
            };
            if taken {
                return true;
            }
        }
        // Racing with a registration, the write is simply ordered before it.
        if !self.has_io_devices.load(Ordering::Acquire) {
            return false;
        }
        let inner = self.inner.lock();
        inner.ioeventfds.write(bus, addr, len, value) || inner.coalesced.write(&self.coalesced_ring, bus, addr, len, value)
    }

    /// A guest's IN of `len` bytes from `port`: the value if an in-kernel device (the PIC
    /// pair) answered, else `None` (it exits to userspace).
    pub(crate) fn port_read(&self, port: u16, len: u32) -> Option<u32> {
        if let Some(v) = self.pit.as_ref().and_then(|p| p.port_read(port, len)) {
            return Some(v);
        }
        self.apic_bus.irqchip()?.port_read(&self.apic_bus, port, len)
    }

    /// A guest's MMIO read of `buf.len()` bytes at `gpa`: true if an in-kernel device (the
    /// IOAPIC) answered into `buf`.
    pub(crate) fn mmio_read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.apic_bus.irqchip().is_some_and(|c| c.mmio_read(gpa, buf))
    }

    /// The coalesced-MMIO ring page, for the vCPU fds' mappings.
    pub(crate) fn coalesced_ring(&self) -> &kernel::page::Page {
        self.coalesced_ring.page()
    }

    /// The VM's kvmclock.
    pub(crate) fn clock(&self) -> &Arc<crate::cpu::kvmclock::VmClock> {
        &self.clock
    }

    /// The VM's local APICs (split irqchip).
    pub(crate) fn apic_bus(&self) -> &Arc<crate::irq::bus::ApicBus> {
        &self.apic_bus
    }

    /// The EPT pointer of the VM's address space `space`.
    pub(crate) fn eptp(&self, space: AddressSpace) -> u64 {
        self.space(space).eptp()
    }

    /// Where vCPU `id` records the CPU its window runs on.
    pub(crate) fn running(&self, id: u32) -> Result<&core::sync::atomic::AtomicI32> {
        self.memory.running(id)
    }

    /// Reserves vCPU id `id` as KVM checks it (below `MAX_VCPU_ID`, unused, at most
    /// `MAX_VCPUS` vCPUs) with its statistics; [`Vm::release_vcpu`] undoes it.
    pub(crate) fn reserve_vcpu(&self, id: usize) -> Result<(u32, Arc<VcpuStats>)> {
        let id = u32::try_from(id).map_err(|_| EINVAL)?;
        // Beyond every limit: refused before the limit is fixed (KVM checks KVM_MAX_VCPU_IDS
        // first).
        if id >= MAX_VCPU_ID {
            return Err(EINVAL);
        }
        {
            let mut inner = self.inner.lock();
            // The limit is fixed from the first vCPU on (KVM's kvm_arch_vcpu_precreate).
            if inner.max_vcpu_ids == 0 {
                inner.max_vcpu_ids = MAX_VCPU_ID;
            }
            if id >= inner.max_vcpu_ids {
                return Err(EINVAL);
            }
            if inner.vcpu_ids.iter().any(|v| *v == id) {
                return Err(EEXIST);
            }
            if inner.vcpu_ids.len() >= MAX_VCPUS {
                return Err(EINVAL);
            }
            inner.vcpu_ids.push(id, GFP_KERNEL_ACCOUNT)?;
        }
        match self.stats.add_vcpu(id) {
            Ok(stats) => Ok((id, stats)),
            Err(e) => {
                self.release_vcpu(id);
                Err(e)
            }
        }
    }

    /// Gives back a vCPU id whose vCPU could not be created.
    pub(crate) fn release_vcpu(&self, id: u32) {
        self.stats.remove_vcpu(id);
        self.inner.lock().vcpu_ids.retain(|v| *v != id);
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_MAX_VCPU_ID)`: lowers the id limit, once, before any vCPU (then
    /// only the value in force is accepted), as KVM does.
    pub(crate) fn set_max_vcpu_ids(&self, max: u64) -> Result {
        let max = u32::try_from(max).ok().filter(|m| *m <= MAX_VCPU_ID).ok_or(EINVAL)?;
        let mut inner = self.inner.lock();
        // The boot CPU chosen must stay a valid id (KVM).
        if inner.bsp_vcpu_id > max {
            return Err(EINVAL);
        }
        match inner.max_vcpu_ids {
            m if m == max => Ok(()),
            0 => {
                inner.max_vcpu_ids = max;
                Ok(())
            }
            _ => Err(EINVAL),
        }
    }

    /// `KVM_SET_BOOT_CPU_ID`: which vCPU id starts as the BSP, before any vCPU exists (`EBUSY`
    /// after), within the vCPU ids allowed (`EINVAL`), as KVM checks it.
    pub(crate) fn set_bsp_vcpu_id(&self, id: usize) -> Result {
        let mut inner = self.inner.lock();
        if !inner.vcpu_ids.is_empty() {
            return Err(EBUSY);
        }
        let id = u32::try_from(id).ok().filter(|&i| i <= MAX_VCPU_ID).ok_or(EINVAL)?;
        if inner.max_vcpu_ids != 0 && id > inner.max_vcpu_ids {
            return Err(EINVAL);
        }
        inner.bsp_vcpu_id = id;
        Ok(())
    }

    /// See [`Vm::set_bsp_vcpu_id`].
    pub(crate) fn bsp_vcpu_id(&self) -> u32 {
        self.inner.lock().bsp_vcpu_id
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP, pins)`, as KVM checks it: `EINVAL` for more
    /// pins than routes, `EEXIST` once enabled or once a vCPU exists.
    pub(crate) fn enable_split_irqchip(&self, pins: u64) -> Result {
        if pins > MAX_IRQ_ROUTES {
            return Err(EINVAL);
        }
        let mut inner = self.inner.lock();
        if inner.in_kernel() || !inner.vcpu_ids.is_empty() {
            return Err(EEXIST);
        }
        inner.split_irqchip = Some(pins as u32); // at most MAX_IRQ_ROUTES
        self.apic_bus.routes.set_ioapic_pins(pins as u32);
        Ok(())
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_X86_APIC_BUS_CYCLES_NS, ns)`, checked as KVM checks it: `EINVAL`
    /// for a period out of range or once a vCPU exists, `ENXIO` without the in-kernel APIC.
    pub(crate) fn set_apic_bus_cycle_ns(&self, ns: u64) -> Result {
        if !crate::logic::lapic::valid_bus_cycle_ns(ns) {
            return Err(EINVAL);
        }
        let mut inner = self.inner.lock();
        if !inner.in_kernel() {
            return Err(ENXIO);
        }
        if !inner.vcpu_ids.is_empty() {
            return Err(EINVAL);
        }
        inner.apic_bus_cycle_ns = ns;
        Ok(())
    }

    /// See [`Vm::set_apic_bus_cycle_ns`].
    pub(crate) fn apic_bus_cycle_ns(&self) -> u64 {
        self.inner.lock().apic_bus_cycle_ns
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_X2APIC_API, flags)`: `EINVAL` for flags KVM refuses.
    pub(crate) fn enable_x2apic_api(&self, flags: u64) -> Result {
        let inner = self.inner.lock();
        let mut api = self.apic_bus.api();
        api.enable(flags, inner.split_irqchip.is_some()).map_err(|_| EINVAL)?;
        self.apic_bus.set_api(api);
        Ok(())
    }

    /// `KVM_IRQ_LINE` on `gsi` (in-kernel irqchip): sets the line of every route of the GSI
    /// (`line_status`: `KVM_IRQ_LINE_STATUS`, which tracks the RTC's EOIs). KVM's status: how
    /// many APICs took it, 0 coalesced, -1 for a lowered, masked or unrouted line.
    pub(crate) fn irq_line(&self, gsi: u32, level: u32, line_status: bool) -> i32 {
        self.apic_bus.set_gsi(gsi, crate::irq::bus::USERSPACE_SOURCE, level != 0, line_status)
    }

    /// `KVM_CREATE_IRQCHIP`, checked as KVM checks it: `EEXIST` if an in-kernel irqchip (full
    /// or split) exists, `EINVAL` once a vCPU does.
    pub(crate) fn create_irqchip(&self) -> Result {
        let mut inner = self.inner.lock();
        if inner.in_kernel() {
            return Err(EEXIST);
        }
        if !inner.vcpu_ids.is_empty() {
            return Err(EINVAL);
        }
        self.apic_bus.create_irqchip()?;
        inner.full_irqchip = true;
        Ok(())
    }

    /// `KVM_CREATE_PIT2` with `flags`, checked as KVM checks it: `EEXIST` if there is one,
    /// `ENOENT` without `KVM_CREATE_IRQCHIP`'s PIC.
    pub(crate) fn create_pit(&self, flags: u32) -> Result {
        let _serialized = self.inner.lock();
        if self.pit.as_ref().is_some() {
            return Err(EEXIST);
        }
        if self.apic_bus.irqchip().is_none() {
            return Err(ENOENT);
        }
        let pit = crate::irq::pit::PitDevice::new(self.apic_bus.clone(), flags)?;
        if !self.pit.populate(pit) {
            return Err(EEXIST);
        }
        Ok(())
    }

    /// The in-kernel PIT (`ENXIO` without one, as KVM's PIT ioctls).
    pub(crate) fn pit(&self) -> Result<&crate::irq::pit::PitDevice> {
        self.pit.as_ref().map(|p| &**p).ok_or(ENXIO)
    }

    /// The in-kernel PIC pair and IOAPIC (`ENXIO` without them, as KVM's
    /// `KVM_GET/SET_IRQCHIP`).
    pub(crate) fn irqchip(&self) -> Result<&crate::irq::irqchip::Irqchip> {
        self.apic_bus.irqchip().ok_or(ENXIO)
    }

    /// `KVM_SIGNAL_MSI` (split irqchip): how many APICs took it; `EPERM` (KVM's -1) where
    /// KVM finds no destination on its slow path, `EINVAL` for flags KVM does not know.
    pub(crate) fn signal_msi(&self, msi: &Msi) -> Result<isize> {
        if msi.flags & !crate::logic::irq_routing::MSI_VALID_DEVID != 0 {
            return Err(EINVAL);
        }
        let irq = crate::logic::lapic::Irq::from_msi(msi.address_lo, msi.address_hi, msi.data, self.apic_bus.api().x2apic_format).ok_or(EINVAL)?;
        match self.apic_bus.deliver(&irq, None) {
            -1 => Err(EPERM),
            n => Ok(n as isize),
        }
    }

    /// Whether the VM has the split irqchip (local APICs in the kernel, the rest in userspace).
    pub(crate) fn split_irqchip(&self) -> bool {
        self.inner.lock().split_irqchip.is_some()
    }

    /// Whether the VM's vCPUs have local APICs in the kernel (split or full irqchip).
    pub(crate) fn irqchip_in_kernel(&self) -> bool {
        self.inner.lock().in_kernel()
    }

    /// `KVM_CAP_DISABLE_QUIRKS(2)`: turns off the quirks in `quirks` (never back on).
    pub(crate) fn disable_quirks(&self, quirks: u64) {
        self.disabled_quirks.fetch_or(quirks, Ordering::Relaxed);
        self.settings_changed();
    }

    /// `KVM_CAP_MSR_PLATFORM_INFO`: whether guests may read MSR_PLATFORM_INFO.
    pub(crate) fn set_platform_info_readable(&self, on: bool) {
        self.platform_info_readable.store(on, Ordering::Relaxed);
        self.settings_changed();
    }

    /// A setting changed: bumps the generation, then interrupts the vCPUs inside a window,
    /// which take the new settings before they enter again (as KVM's requests to every vCPU).
    fn settings_changed(&self) {
        self.settings_gen.fetch_add(1, Ordering::SeqCst);
        self.memory.kick_running();
    }

    /// The settings' generation counter (`Vm::settings_changed`).
    pub(crate) fn settings_gen(&self) -> &Arc<AtomicU64> {
        &self.settings_gen
    }

    /// The settings a vCPU copies (see [`Vm::settings_gen`]).
    pub(crate) fn settings(&self) -> VmSettings {
        VmSettings {
            disabled_quirks: self.disabled_quirks.load(Ordering::Relaxed),
            platform_info_readable: self.platform_info_readable.load(Ordering::Relaxed),
            user_space_msr: self.user_space_msr.load(Ordering::Relaxed),
            exit_on_emulation_failure: self.exit_on_emulation_failure.load(Ordering::Relaxed),
        }
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_HALT_POLL, ns)`: the VM's own maximum halt-polling time
    /// (`EINVAL` above `u32::MAX`, as KVM).
    pub(crate) fn set_max_halt_poll_ns(&self, ns: u64) -> Result {
        let ns = u32::try_from(ns).map_err(|_| EINVAL)?;
        self.max_halt_poll_ns.store(ns.into(), Ordering::Relaxed);
        Ok(())
    }

    /// The maximum halt-polling time in force for this VM's vCPUs, in ns.
    pub(crate) fn max_halt_poll_ns(&self) -> u32 {
        u32::try_from(self.max_halt_poll_ns.load(Ordering::Relaxed)).unwrap_or_else(|_| crate::module_parameters::halt_poll_ns.value())
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_EXIT_ON_EMULATION_FAILURE, on)`: 0 or 1 (`EINVAL` else).
    pub(crate) fn set_exit_on_emulation_failure(&self, on: u64) -> Result {
        if on & !1 != 0 {
            return Err(EINVAL);
        }
        self.exit_on_emulation_failure.store(on != 0, Ordering::Relaxed);
        self.settings_changed();
        Ok(())
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR, reasons)`: `EINVAL` for unknown reasons.
    pub(crate) fn set_user_space_msr(&self, reasons: u64) -> Result {
        let reasons = u32::try_from(reasons).ok().filter(|r| r & !crate::logic::msr_filter::reason::VALID == 0).ok_or(EINVAL)?;
        self.user_space_msr.store(reasons, Ordering::Relaxed);
        self.settings_changed();
        Ok(())
    }

    /// `KVM_X86_SET_MSR_FILTER`: replaces the filter (an empty default-allow one allows
    /// everything, as no filter does). Once it returns, no vCPU uses the old one.
    pub(crate) fn set_msr_filter(&self, arg: &crate::logic::msr_filter::FilterArg) -> Result {
        let filter = Arc::new(MsrFilter::from_user(arg)?, GFP_KERNEL_ACCOUNT)?;
        let old = core::mem::replace(&mut *self.msr_filter.lock(), Some(filter));
        self.settings_changed();
        drop(old);
        Ok(())
    }

    /// The filter in force.
    pub(crate) fn msr_filter(&self) -> Option<Arc<MsrFilter>> {
        self.msr_filter.lock().clone()
    }

    /// Whether quirk `q` (`KVM_X86_QUIRK_*`) is in force.
    pub(crate) fn has_quirk(&self, q: u64) -> bool {
        self.disabled_quirks.load(Ordering::Relaxed) & q == 0
    }

    /// `KVM_GET_STATS_FD` on the VM fd.
    pub(crate) fn stats_fd(&self) -> Result<isize> {
        crate::kvm::stats_fd::vm_fd(self.stats.creator(), self.memory.flush_count())
    }

    /// Whether any vCPU was created.
    pub(crate) fn has_vcpus(&self) -> bool {
        !self.inner.lock().vcpu_ids.is_empty()
    }

    /// `KVM_IRQFD`: assigns or deassigns as `arg` says.
    pub(crate) fn irqfd(&self, arg: &IrqFdArg) -> Result {
        let mut inner = self.inner.lock();
        let (in_kernel, full) = (inner.in_kernel(), inner.full_irqchip);
        inner.irqfds.ioctl(arg, in_kernel, full, &self.apic_bus)
    }

    /// `KVM_IOEVENTFD`: assigns or deassigns as `arg` says.
    pub(crate) fn ioeventfd(&self, arg: &IoEventFdArg) -> Result {
        let mut inner = self.inner.lock();
        let r = inner.ioeventfds.ioctl(arg);
        self.update_io_devices(&inner);
        r
    }

    /// `KVM_REGISTER_COALESCED_MMIO` (`register`) or `KVM_UNREGISTER_COALESCED_MMIO`.
    pub(crate) fn coalesced_mmio(&self, zone: &Zone, register: bool) -> Result {
        let mut inner = self.inner.lock();
        let r = if register { inner.coalesced.register(zone) } else { inner.coalesced.unregister(zone) };
        self.update_io_devices(&inner);
        r
    }

    fn update_io_devices(&self, inner: &VmInner) {
        let any = !inner.ioeventfds.is_empty() || !inner.coalesced.is_empty();
        self.has_io_devices.store(any, Ordering::Release);
    }
}
