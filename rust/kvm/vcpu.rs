// SPDX-License-Identifier: GPL-2.0

//! A vCPU: its architectural state, the shared `kvm_run` pages, and the vCPU fd's ioctls.
//! Ioctls on one vCPU are serialised by `state`'s mutex, like KVM's `vcpu->mutex`.

use kernel::{
    mm::virt::VmaNew,
    new_mutex,
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::{Arc, ArcBorrow, Mutex},
    uaccess::{UserPtr, UserSlice},
};

use core::sync::atomic::{AtomicU32, Ordering};

use crate::{
    host::helpers,
    logic::cpuid_table::{self, CpuidEntry},
    vmx::entry::Gprs,
    kvm::fd::FdObject,
    host::uaccess::{read_user, user_field, write_user},
    logic::kvm_abi::{self, *},
    cpu::debugregs::GuestDebug,
    logic::events::Interrupt,
    cpu::fpu::GuestFpu,
    run::{kvm_run::KvmRun, state::{RunState, VcpuState}, vcpu_run, window::Target},
    logic::xstate,
    logic::vcpu_state,
    logic::mp_state::MpState,
    logic::memslot_rules::AddressSpace,
    kvm::vm::Vm,
    vmx::vmcs::Vmcs,
    vmx::{operation::Vmx, sregs::GuestSregs},
};

/// Source of VPIDs (1..=65535; 0 is the host's). After 65535 vCPUs they repeat, which is
/// harmless across VMs: translations are also tagged by the EPT root, flushed every window.
static NEXT_VPID: AtomicU32 = AtomicU32::new(0);
static NEXT_SERIAL: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

#[pin_data]
pub(crate) struct Vcpu {
    vm: Arc<Vm>,
    id: u32,
    vpid: u16,
    /// Unique among the vCPUs since load (the IBPB on a vCPU switch compares them).
    serial: u64,
    /// Its counters (also in the VM's debugfs directory).
    stats: Arc<crate::run::counters::VcpuStats>,
    /// The thread that created it (its binary statistics' id string carries it, as KVM's).
    creator: i32,
    /// The vCPU's own pages of its mmap area: `kvm_run` and the PIO data page (the third is
    /// the VM's coalesced-MMIO ring).
    pages: [Page; kvm_abi::KVM_COALESCED_MMIO_PAGE_OFFSET],
    #[pin]
    state: Mutex<RunState>,
}

impl Vcpu {
    pub(crate) fn new(vm: Arc<Vm>, id: u32, stats: Arc<crate::run::counters::VcpuStats>) -> Result<Arc<Self>> {
        let page = || Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
        let pages = [page()?, page()?];
        // The BSP is vCPU 0 unless userspace chose another (KVM_SET_BOOT_CPU_ID).
        let bsp = id == vm.bsp_vcpu_id();
        let sregs = vcpu_state::reset_sregs(bsp);
        let vmx = Vmx::get().ok_or(ENODEV)?;
        let vmcs = Vmcs::new(vmx.caps().revision_id())?;
        let msr_area = crate::cpu::msr::MsrArea::new(vmx.mitigations().for_guests().spec_ctrl.msr)?;
        let tables = crate::vmx::ept::TableCache::new()?;
        let fpu = GuestFpu::new()?;
        // 1 to 0xffff (0 is the host's).
        let vpid = (NEXT_VPID.fetch_add(1, Ordering::Relaxed) % 0xffff).saturating_add(1) as u16;
        let serial = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let arch_capabilities = vmx.mitigations().for_guests().arch_capabilities;
        let vm_clock = vm.clock().clone();
        // The generation before the settings: a change in between is taken at the first run.
        let settings_gen = vm.settings_gen().clone();
        let settings_seen = settings_gen.load(core::sync::atomic::Ordering::Acquire);
        let vm_settings = vm.settings();
        let msr_filter = vm.msr_filter();
        let apic = match vm.irqchip_in_kernel() {
            true => Some(crate::irq::lapic::LocalApic::new(id, bsp, vm.apic_bus().clone(), vm.apic_bus_cycle_ns(), vm.has_quirk(quirk::LINT0_REENABLED))?),
            false => None,
        };
        Ok(Arc::pin_init(
            pin_init!(Vcpu {
                vm,
                id,
                vpid,
                serial,
                stats,
                creator: current!().pid(),
                pages,
                // Written in place in the new Arc: built as a value, the 5 KiB state (and a
                // copy of it) would sit on the stack of the allocation's caller.
                state <- new_mutex!(init!(RunState {
                    vmcs,
                    vcpu <- init!(VcpuState {
                        regs: vcpu_state::reset_regs(),
                        sregs: GuestSregs::new(sregs),
                        controls_written: false,
                        tpr_shadow: false,
                        tpr_threshold: 0,
                        host_written: None,
                        vmcs_eptp: 0,
                        cr4_mask: 0,
                        gprs: Gprs::default(),
                        pending: None,
                        emulated: Default::default(),
                        pdptes: None,
                        sigmask: None,
                        events: Default::default(),
                        smm: Default::default(),
                        debugger: Default::default(),
                        interruptibility: 0,
                        fpu,
                        debug: GuestDebug::default(),
                        cpuid: KVec::new(),
                        allowed: crate::run::state::Allowed::new(&[], vmx),
                        msrs: crate::logic::msr_rules::GuestMsrs { arch_capabilities, ..Default::default() },
                        msr_area,
                        // The time page is written at the first entry after the guest enables it.
                        apic,
                        kvmclock: Default::default(),
                        steal: Default::default(),
                        halt_poll: Default::default(),
                        vm_clock,
                        vm: vm_settings,
                        enforce_pv_features: false,
                        msr_filter,
                        settings_gen,
                        settings_seen,
                        tables,
                        // Never a page's address: no fault is taken for MMIO before one was.
                        mmio_page: u64::MAX,
                    }),
                })),
            }),
            GFP_KERNEL_ACCOUNT,
        )?)
    }

    /// The vCPU's state for an ioctl, locked as KVM locks a vCPU for one (killably: the lock
    /// may wait for a `KVM_RUN` whose guest sleeps in HLT).
    /// The vCPU's state as it is: the segment and control registers may be newer in the VMCS
    /// (see [`crate::vmx::sregs`]), for `KVM_RUN` and the ioctls that do not touch them.
    fn state(&self) -> Result<kernel::sync::MutexGuard<'_, RunState>> {
        crate::host::lock::lock_killable(&self.state)
    }

    /// The vCPU's state with its segment and control registers read back from the VMCS, for
    /// the ioctls that read them (directly, or through CR4, EFER, FS/GS base or a linear RIP).
    fn synced_state(&self) -> Result<kernel::sync::MutexGuard<'_, RunState>> {
        let mut st = self.state()?;
        st.sync_sregs()?;
        Ok(st)
    }

    /// The vCPU exists and has its fd (KVM's `kvm_arch_vcpu_postcreate`): its TSC joins the
    /// VM's generation; the first vCPU's starts at 0.
    pub(crate) fn postcreate(&self) {
        let mut st = self.state.lock();
        let offset = self.vm.clock().add_vcpu(&mut st.kvmclock.tsc_generation);
        st.msr_state(None).set_tsc_offset(offset);
    }
}

impl FdObject for Vcpu {
    const NAME: &'static CStr = c"kvm-vcpu";
    const HAS_MMAP: bool = true;

    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.vm.check_owner()?;
        // KVM_RUN in a frame of its own: the other requests' buffers (LAPIC state, sregs,
        // events...) make theirs kilobytes deep, which must not sit under every guest exit's
        // page fault and emulation.
        if cmd == KVM_RUN && arg == 0 {
            return this.run();
        }
        Self::request(this, cmd, arg)
    }

    /// Maps the pages of the vCPU area that fall in the VMA: page 0 `kvm_run`, page 1 PIO
    /// data, page 2 the VM's coalesced-MMIO ring. As on KVM, a VMA may be longer or start
    /// further on: nothing is behind its other pages, and a touch there gets `SIGBUS`.
    fn mmap(this: ArcBorrow<'_, Self>, vma: &VmaNew) -> Result {
        // SAFETY: `vma` is a valid VMA under construction; `vm_pgoff` is plain data.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
        let mixed = vma.set_mixedmap();
        let area = Iterator::chain(this.pages.iter(), [this.vm.coalesced_ring()]);
        for (i, page) in area.skip(pgoff).enumerate() {
            let Some(addr) = i.checked_mul(PAGE_SIZE).and_then(|o| vma.start().checked_add(o)) else { break };
            if addr >= vma.end() {
                break;
            }
            mixed.vm_insert_page(addr, page)?;
        }
        Ok(())
    }
}

impl Vcpu {
    /// Every vCPU request but `KVM_RUN` (see `ioctl`).
    #[inline(never)]
    fn request(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            KVM_GET_REGS => write_user(arg, &this.state()?.regs)?,
            KVM_SET_REGS => this.state()?.set_user_regs(read_user(arg)?),
            KVM_GET_SREGS => write_user(arg, &this.synced_state()?.user_sregs())?,
            KVM_INTERRUPT => {
                let irq: u32 = read_user(arg)?;
                if irq >= 256 {
                    return Err(EINVAL);
                }
                // The PIC is in the kernel: nothing to queue (KVM).
                if this.vm.apic_bus().irqchip().is_some() {
                    return Err(ENXIO);
                }
                let mut st = this.state()?;
                // Split irqchip: the userspace PIC's ExtINT, taken through LINT0.
                if let Some(a) = st.apic.as_mut() {
                    a.queue_extint(irq as u8)?;
                    return Ok(0);
                }
                // As KVM without an in-kernel irqchip: it replaces one queued earlier.
                st.events.interrupt = Some(Interrupt { vector: irq as u8, soft_len: None });
            }
            // Without an in-kernel APIC a vCPU is always runnable (KVM's answers in that mode).
            KVM_GET_MP_STATE => {
                let mut st = this.state()?;
                st.accept_init_sipi(this.vm.has_quirk(quirk::LINT0_REENABLED))?;
                let state = st.apic.as_ref().map_or(MpState::Runnable, |a| a.mp_state());
                write_user(arg, &state.abi())?
            }
            KVM_SET_MP_STATE => {
                let v: u32 = read_user(arg)?;
                let mut st = this.state()?;
                let (state, sipi) = MpState::from_abi(v, st.apic.is_some()).ok_or(EINVAL)?;
                if let Some(a) = st.apic.as_mut() {
                    a.set_mp_state(state, sipi);
                }
            }
            KVM_GET_TSC_KHZ => return Ok(crate::host::x86::tsc_khz() as isize),
            // No TSC scaling: the host's rate (0 means it) or within KVM's 250 ppm tolerance.
            KVM_SET_TSC_KHZ => {
                let host = crate::host::x86::tsc_khz() as u64;
                let want = if arg as u32 == 0 { host } else { arg as u32 as u64 };
                // Both below 2^32: the products fit.
                if want.abs_diff(host).saturating_mul(1_000_000) > host.saturating_mul(250) {
                    return Err(EINVAL);
                }
            }
            KVM_TRANSLATE => {
                let mut tr: Translation = read_user(arg)?;
                let (sregs, space) = this.synced_state().map(|st| (*st.sregs.get(), st.address_space()))?;
                let gpa = crate::run::emulate::translate(this.vm.memory(space), &sregs, tr.linear_address);
                // As KVM: all ones when unmapped; writeable and usermode are not computed.
                tr.physical_address = gpa.unwrap_or(u64::MAX);
                tr.valid = gpa.is_some() as u8;
                tr.writeable = 1;
                tr.usermode = 0;
                write_user(arg, &tr)?
            }
            KVM_SET_GUEST_DEBUG => this.set_guest_debug(read_user(arg)?)?,
            KVM_NMI => {
                let mut st = this.state()?;
                let masked = st.nmi_masked();
                st.events.queue_nmi(masked);
            }
            // Taken before the next entry that may take it (KVM's KVM_REQ_SMI).
            KVM_SMI => this.state()?.events.smi_pending = true,
            KVM_GET_VCPU_EVENTS => write_user(arg, &this.state()?.user_events())?,
            KVM_SET_VCPU_EVENTS => this.state()?.set_user_events(&read_user(arg)?).map_err(|()| EINVAL)?,
            KVM_SET_SREGS => this.state()?.set_user_sregs(read_user(arg)?, &this.vm).map_err(|()| EINVAL)?,
            KVM_SET_CPUID2 => this.set_cpuid(arg)?,
            KVM_GET_FPU => write_user(arg, &Fpu::from_fxsave(this.state()?.fpu.legacy()))?,
            KVM_SET_FPU => {
                let fpu: Fpu = read_user(arg)?;
                this.state()?.fpu.set_legacy(|fx| fpu.to_fxsave(fx));
            }
            // Only with an in-kernel local APIC; EINVAL first, as KVM.
            // What other vCPUs and devices posted is part of the state saved (KVM's
            // sync_pir_to_irr), and what was posted before a restore is not kept.
            KVM_GET_LAPIC => {
                let mut st = this.state()?;
                st.take_posted();
                let state = st.apic.as_ref().ok_or(EINVAL)?.state();
                write_user(arg, &state)?
            }
            KVM_SET_LAPIC => {
                let mut st = this.state()?;
                let now = crate::host::x86::rdtsc().wrapping_add(st.msrs.tsc_offset);
                let apic = st.apic.as_mut().ok_or(EINVAL)?;
                apic.discard_posted();
                apic.set_state(&read_user(arg)?, now)?
            }
            // Only the address 0 (no TPR-access page), which QEMU sets at every reset; the
            // page itself (KVM's TPR patching for old Windows guests) is not implemented.
            KVM_SET_VAPIC_ADDR => {
                if this.state()?.apic.is_none() {
                    return Err(EINVAL);
                }
                if read_user::<u64>(arg)? != 0 {
                    return Err(EINVAL);
                }
            }
            KVM_GET_XSAVE => this.get_xsave(arg)?,
            KVM_SET_XSAVE => this.set_xsave(arg)?,
            KVM_GET_XCRS => {
                let mut x = Xcrs::default();
                if Vmx::get().ok_or(ENODEV)?.fpu().xcr0 != 0 {
                    x.nr_xcrs = 1;
                    x.xcrs[0].value = this.state()?.fpu.xcr0;
                }
                write_user(arg, &x)?
            }
            KVM_SET_XCRS => this.set_xcrs(read_user(arg)?)?,
            KVM_GET_DEBUGREGS => {
                let d = this.state()?.debug;
                write_user(arg, &DebugRegs { db: d.db, dr6: d.dr6, dr7: d.dr7, ..Default::default() })?
            }
            KVM_SET_DEBUGREGS => {
                let d: DebugRegs = read_user(arg)?;
                // Like KVM: no flags, and DR6/DR7 bits 63:32 clear (else VM entry would fail).
                if d.flags != 0 || d.dr6 >> 32 != 0 || d.dr7 >> 32 != 0 {
                    return Err(EINVAL);
                }
                this.state()?.debug = GuestDebug { db: d.db, dr6: d.dr6, dr7: d.dr7 };
            }
            KVM_GET_MSRS => return this.msrs(arg, false),
            KVM_SET_MSRS => return this.msrs(arg, true),
            KVM_GET_CPUID2 => this.get_cpuid(arg)?,
            KVM_SET_SIGNAL_MASK => this.set_signal_mask(arg)?,
            KVM_X86_SETUP_MCE => {
                let cap: u64 = read_user(arg)?;
                this.state()?.setup_mce(cap)?
            }
            KVM_X86_SET_MCE => this.set_mce(read_user(arg)?)?,
            KVM_HAS_DEVICE_ATTR | KVM_GET_DEVICE_ATTR | KVM_SET_DEVICE_ATTR => this.device_attr(cmd, read_user(arg)?)?,
            KVM_GET_STATS_FD => return crate::kvm::stats_fd::vcpu_fd(this.creator, this.id, this.stats.clone()),
            KVM_ENABLE_CAP => {
                let c: EnableCap = read_user(arg)?;
                // The one capability a vCPU takes (KVM also has Hyper-V's, which rvmx lacks).
                if c.flags != 0 || c.cap as usize != cap::ENFORCE_PV_FEATURE_CPUID {
                    return Err(EINVAL);
                }
                this.state()?.enforce_pv_features = c.args[0] != 0;
            }
            KVM_PRE_FAULT_MEMORY => {
                let mut range: PreFaultMemory = read_user(arg)?;
                let r = this.pre_fault_memory(&mut range);
                // What is left goes back whatever the outcome (KVM).
                write_user(arg, &range)?;
                return r;
            }
            // KVM's vCPU fd answers EINVAL to requests it does not know (and KVM_RUN with
            // an argument).
            _ => return Err(EINVAL),
        }
        Ok(0)
    }

    /// `KVM_SET_CPUID2`: at most `MAX_ENTRIES` entries (`E2BIG`); after the vCPU has run,
    /// only the same table again (`EINVAL` for another), as KVM.
    fn set_cpuid(&self, arg: usize) -> Result {
        let nent: u32 = read_user(arg)?;
        if nent as usize > cpuid_table::MAX_ENTRIES {
            return Err(E2BIG);
        }
        let n = nent as usize;
        let len = n.saturating_mul(size_of::<CpuidEntry>()); // n <= MAX_ENTRIES
        let mut reader = UserSlice::new(UserPtr::from_addr(user_field(arg, CPUID2_HEADER)?), len).reader();
        let mut table = KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..n {
            let mut e: CpuidEntry = reader.read()?;
            e.padding = [0; 3];
            table.push(e, GFP_KERNEL_ACCOUNT)?;
        }
        let vmx = Vmx::get().ok_or(ENODEV)?;
        let mut st = self.synced_state()?;
        st.take_vm_settings(&self.vm);
        // After KVM_RUN only the same table, compared with the runtime bits in both (KVM).
        if st.controls_written {
            let rt = st.cpuid_runtime(vmx.fpu());
            if !cpuid_table::with_runtime(&st.cpuid, rt).eq(cpuid_table::with_runtime(&table, rt)) {
                return Err(EINVAL);
            }
        }
        match cpuid_table::check(&table) {
            Ok(()) => {}
            Err(cpuid_table::Refusal::LinearAddressBits) => return Err(EINVAL),
            Err(cpuid_table::Refusal::DynamicXfeatures) => return Err(EPERM),
        }
        st.set_cpuid(table, vmx);
        Ok(())
    }

    /// `KVM_GET_MSRS` / `KVM_SET_MSRS`: processes entries in order and returns how many
    /// succeeded, stopping at the first MSR that does not exist or refuses the value (KVM).
    fn msrs(&self, arg: usize, set: bool) -> Result<isize> {
        let mut guard = self.synced_state()?;
        let st = &mut *guard;
        // The VM's quirks as they are now (KVM_ENABLE_CAP may have come after KVM_RUN).
        st.take_vm_settings(&self.vm);
        let mut m = st.msr_state(None);
        let done = crate::cpu::msr::for_each_entry(arg, !set, |e| {
            if set {
                m.write(e.index, e.data).is_ok()
            } else {
                m.read(e.index).map(|v| e.data = v).is_some()
            }
        });
        // KVM writes the wall-clock page at the MSR write (the time page waits for the entry).
        if core::mem::take(&mut st.kvmclock.wall_clock) {
            crate::run::pvclock::write_wall_clock(st, &self.vm);
        }
        done
    }

    /// `KVM_HAS/GET/SET_DEVICE_ATTR`: a vCPU's one attribute, its TSC offset (`ENXIO` for any
    /// other, as KVM). Setting it joins or starts the VM's TSC generation, as KVM's does.
    fn device_attr(&self, cmd: u32, a: DeviceAttr) -> Result {
        if a.group != KVM_VCPU_TSC_CTRL || a.attr != KVM_VCPU_TSC_OFFSET {
            return Err(ENXIO);
        }
        let value = UserSlice::new(UserPtr::from_addr(a.addr as usize), size_of::<u64>());
        match cmd {
            KVM_GET_DEVICE_ATTR => {
                let offset = self.state()?.msrs.tsc_offset;
                value.writer().write(&offset)?;
            }
            KVM_SET_DEVICE_ATTR => {
                let offset: u64 = value.reader().read()?;
                let mut st = self.state()?;
                self.vm.clock().set_tsc_offset(offset, &mut st.kvmclock.tsc_generation);
                st.msr_state(None).set_tsc_offset(offset);
            }
            _ => {}
        }
        Ok(())
    }

    /// `KVM_PRE_FAULT_MEMORY`: maps `range` page by page, as KVM checks and loops: 0 once a
    /// page was mapped (`range` says what is left), else the first page's error.
    fn pre_fault_memory(&self, range: &mut PreFaultMemory) -> Result<isize> {
        const PAGE: u64 = 4096;
        let end_ok = range.gpa.checked_add(range.size).is_some_and(|end| end > range.gpa);
        if range.flags != 0 || range.gpa % PAGE != 0 || range.size % PAGE != 0 || !end_ok {
            return Err(EINVAL);
        }
        let full = range.size;
        let mut st = self.state()?;
        let r = loop {
            if current!().signal_pending() {
                break EINTR;
            }
            if let Err(e) = self.vm.pre_fault_page(st.address_space(), range.gpa, &mut st.tables) {
                break e;
            }
            // Both stay page-aligned and within the checked range.
            range.size = range.size.saturating_sub(PAGE);
            range.gpa = range.gpa.saturating_add(PAGE);
            if range.size == 0 {
                return Ok(0);
            }
            crate::host::sched::cond_resched();
        };
        if range.size == full { Err(r) } else { Ok(0) }
    }

    /// `KVM_GET_CPUID2`.
    fn get_cpuid(&self, arg: usize) -> Result {
        let nent: u32 = read_user(arg)?;
        let mut st = self.synced_state()?;
        if (nent as usize) < st.cpuid.len() {
            return Err(E2BIG);
        }
        st.take_vm_settings(&self.vm);
        // The table as the guest sees it now (KVM updates its entries with the runtime bits).
        let rt = st.cpuid_runtime(Vmx::get().ok_or(ENODEV)?.fpu());
        let mut w = UserSlice::new(UserPtr::from_addr(user_field(arg, CPUID2_HEADER)?), size_of_val(st.cpuid.as_slice())).writer();
        for e in cpuid_table::with_runtime(&st.cpuid, rt) {
            w.write(&e)?;
        }
        write_user(arg, &(st.cpuid.len() as u32))
    }

    /// `KVM_RUN`.
    fn run(&self) -> Result<isize> {
        let vmx = Vmx::get().ok_or(ENODEV)?;
        let target = Target {
            vmx,
            eptp: self.vm.eptp(AddressSpace::Guest),
            smm_eptp: self.vm.eptp(AddressSpace::Smm),
            vpid: self.vpid,
            running: self.vm.running(self.id)?,
            stats: &self.stats,
            serial: self.serial,
        };
        let kvm_run = KvmRun::new(&self.pages[0], &self.pages[1]);
        let mut st = self.state()?;
        let Some(mut mask) = st.sigmask else {
            return vcpu_run::run(&target, &mut st, &kvm_run, &self.vm);
        };
        // SAFETY: `mask` is a sigset_t (one u64 on x86_64); the thread's own mask is saved in
        // `current->real_blocked` and put back right after.
        unsafe { helpers::rvmx_sigset_activate(&mut mask) };
        let r = vcpu_run::run(&target, &mut st, &kvm_run, &self.vm);
        // SAFETY: pairs with the activation above, same thread.
        unsafe { helpers::rvmx_sigset_deactivate() };
        r
    }

    /// `KVM_X86_SET_MCE`: records the error; an uncorrected one raises #MC (replacing an
    /// exception not yet delivered, as KVM), or shuts the guest down if it cannot take one; an
    /// uncorrected no-action one may signal a CMCI.
    fn set_mce(&self, e: crate::logic::mce::X86Mce) -> Result {
        use crate::{logic::{arch::vector, events::Exception}, logic::mce::Injected};
        let mut st = self.synced_state()?;
        let cr4_mce = st.sregs.get().cr4 & crate::logic::arch::cr4::MCE != 0;
        match st.msrs.mce.inject(&e, cr4_mce).map_err(|_| EINVAL)? {
            Injected::Recorded => {}
            Injected::Cmci => st.deliver_cmci(),
            Injected::MachineCheck => st.events.exception = Some(Exception::raise(vector::MC, None)),
            Injected::TripleFault => st.events.triple_fault = true,
        }
        Ok(())
    }

    /// `KVM_SET_GUEST_DEBUG`: the debugger's settings; INJECT_DB/INJECT_BP queue that
    /// exception (EBUSY while another is waiting), as KVM.
    fn set_guest_debug(&self, arg: crate::logic::guest_debug::GuestDebugArg) -> Result {
        use crate::{logic::{arch::vector, events::Exception}, logic::guest_debug::{control, Debugger}};
        let debugger = Debugger::from_arg(&arg).ok_or(EINVAL)?;
        let mut st = self.synced_state()?;
        if arg.control & (control::INJECT_DB | control::INJECT_BP) != 0 {
            if st.events.exception.is_some() {
                return Err(EBUSY);
            }
            // #BP as INT3 raises it: a software exception, one byte long.
            let (vector, soft_len) = if arg.control & control::INJECT_DB != 0 { (vector::DB, 0) } else { (vector::BP, 1) };
            st.events.exception = Some(Exception { soft_len, ..Exception::raise(vector, None) });
        }
        st.debugger = debugger;
        Ok(())
    }

    /// `KVM_GET_XSAVE`: the guest's XSAVE image as is (standard format, like KVM's).
    fn get_xsave(&self, arg: usize) -> Result {
        let st = self.state()?;
        UserSlice::new(UserPtr::from_addr(arg), xstate::AREA_SIZE).writer().write_slice(st.fpu.image())
    }

    /// `KVM_SET_XSAVE`: replaces the image; EINVAL for one XRSTOR would fault on (components
    /// rvmx does not switch, compacted format, reserved header or MXCSR bits), as KVM.
    fn set_xsave(&self, arg: usize) -> Result {
        // Zeroed in place: a 4 KiB array built on the stack first would sit in the ioctl's frame,
        // under every KVM_RUN.
        let mut image: KBox<[u8; xstate::AREA_SIZE]> = KBox::init(pin_init::init_zeroed(), GFP_KERNEL_ACCOUNT)?;
        UserSlice::new(UserPtr::from_addr(arg), xstate::AREA_SIZE).reader().read_slice(&mut image[..])?;
        let f = Vmx::get().ok_or(ENODEV)?.fpu();
        // Without XSAVE on the host only the legacy region is used: x87 and SSE.
        let features = if f.xcr0 == 0 { xstate::xfeature::X87 | xstate::xfeature::SSE } else { f.xcr0 };
        if !xstate::loadable(&image, features, f.mxcsr_mask) {
            return Err(EINVAL);
        }
        self.state()?.fpu.image_mut().copy_from_slice(&image[..]);
        Ok(())
    }

    /// `KVM_SET_XCRS`: only XCR0 exists; the first entry for it is applied with XSETBV's
    /// rules against the vCPU's CPUID (EINVAL otherwise, or if none is given), as KVM.
    fn set_xcrs(&self, x: Xcrs) -> Result {
        let f = Vmx::get().ok_or(ENODEV)?.fpu();
        if f.xcr0 == 0 || x.nr_xcrs as usize > MAX_XCRS || x.flags != 0 {
            return Err(EINVAL);
        }
        let Some(xcr) = x.xcrs.iter().take(x.nr_xcrs as usize).find(|x| x.xcr == 0) else {
            return Ok(());
        };
        let mut st = self.state()?;
        if !xstate::xcr0_valid(xcr.value, cpuid_table::xcr0_allowed(&st.cpuid, f.xcr0)) {
            return Err(EINVAL);
        }
        st.fpu.xcr0 = xcr.value;
        Ok(())
    }

    /// `KVM_SET_SIGNAL_MASK`: the signal mask while in `KVM_RUN`; a null argument removes it.
    fn set_signal_mask(&self, arg: usize) -> Result {
        if arg == 0 {
            self.state()?.sigmask = None;
            return Ok(());
        }
        let len: u32 = read_user(arg)?;
        if len as usize != size_of::<u64>() {
            return Err(EINVAL);
        }
        let mut mask: u64 = read_user(user_field(arg, size_of::<u32>())?)?;
        // SIGKILL (9) and SIGSTOP (19) cannot be blocked.
        mask &= !(1 << (9 - 1) | 1 << (19 - 1));
        self.state()?.sigmask = Some(mask);
        Ok(())
    }
}
