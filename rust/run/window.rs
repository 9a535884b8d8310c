// SPDX-License-Identifier: GPL-2.0

//! One VMX window: VMPTRLD, host and guest state into the VMCS, INVEPT, then enter the guest
//! as many times as exits can be handled in the kernel ([`exit::handle`]). The window closes
//! (guest state stored, VMCLEAR, host tables restored, VMXOFF) for anything that needs the
//! host: an interrupt, sleeping work, or a return to userspace.

use kernel::prelude::*;

use crate::{
    irq::lapic::LocalApic,
    cpu::{debugregs::{GuestDebug, HostDebug}, fpu::KernelFpu},
    host::x86,
    logic::{
        arch::vector,
        arch::rflags,
        events::{self, Events},
        guest_debug::{DR6_ACTIVE_LOW, DR6_BS},
        memslot_rules::AddressSpace,
        vmcs_fields::*,
        vmx_exit::reason,
    },
    run::{
        exit::{self, LiveVcpu, Next, SregsRead},
        kvm_run::KvmRun,
        state::RunState,
    },
    vmx::{
        entry,
        guest_state::{self, linear_rip},
        host_state::HostState,
        operation::Vmx,
        vmcs::Current,
    },
};

/// Where the vCPU runs: its VM's EPTs (outside SMM and in it), its VPID, and who it is.
pub(crate) struct Target<'a> {
    pub(crate) vmx: &'a Vmx,
    pub(crate) eptp: u64,
    pub(crate) smm_eptp: u64,
    pub(crate) vpid: u16,
    pub(crate) running: &'a core::sync::atomic::AtomicI32,
    /// Its counters.
    pub(crate) stats: &'a crate::run::counters::VcpuStats,
    /// A number no other vCPU had since the module was loaded (never 0).
    pub(crate) serial: u64,
}

/// Longest time a window may keep interrupts off while the guest runs: 1 ms. Interrupts end
/// a window sooner; the timer is the guarantee (on CPUs, or emulators, where an interrupt
/// does not reach a guest running with IF=0, it is the only one).
const WINDOW_BUDGET_US: u64 = 1000;

/// The window budget in host TSC ticks.
fn window_budget_ticks() -> u64 {
    (x86::tsc_khz() as u64).saturating_mul(WINDOW_BUDGET_US) / 1000
}

/// The VMX-preemption timer value for one window budget.
fn window_timer(t: &Target<'_>) -> u32 {
    let khz = x86::tsc_khz() as u64;
    let ticks = khz.saturating_mul(WINDOW_BUDGET_US) / 1000;
    (ticks >> t.vmx.caps().preemption_timer_rate()).clamp(1, u32::MAX as u64) as u32
}

/// One VMX window: enters the guest until an exit needs the host.
pub(crate) fn window(t: &Target<'_>, st: &mut RunState, run: &KvmRun) -> Result<Next> {
    // The host's user FPU state is saved (and reloaded on return to userspace) so that the
    // guest's can be loaded into the registers.
    let _fpu = KernelFpu::begin();
    let features = *t.vmx.fpu();
    let result = t.vmx.with_vmx_operation(|op| -> Result<Next> {
        t.stats.window();
        let cpu = kernel::cpu::CpuId::current().as_u32();
        // kvmclock without a stable TSC: the time page was computed on another CPU (the
        // thread moved after it was written): back to the host to rewrite it first.
        if st.kvmclock.enabled() && st.kvmclock.page_due(st.vm_clock.generation(), st.vm_clock.stable(), cpu) {
            return Ok(Next::Host);
        }
        let host = HostState::save()?;
        // A debugger's hardware breakpoints replace the guest's for the window.
        let dbg = st.debugger;
        let drs = if dbg.hw_breakpoints() { GuestDebug { db: dbg.db, dr7: dbg.dr7, ..st.debug } } else { st.debug };
        // Every step that can fail comes before the host's debug registers are switched, so
        // none can return without putting them back.
        let RunState { vmcs, vcpu: st } = st;
        let cur = Current::load(op, vmcs)?;
        let eptp = match st.address_space() {
            AddressSpace::Guest => t.eptp,
            AddressSpace::Smm => t.smm_eptp,
        };
        if !st.controls_written {
            let vapic = st.apic.as_ref().map(|a| a.vapic_phys());
            st.tpr_shadow = guest_state::write_controls(&cur, t.vmx.caps(), eptp, t.vpid, st.allowed.instructions, vapic)?;
            st.tpr_threshold = 0;
            st.vmcs_eptp = eptp;
            guest_state::write_initial_guest_state(&cur);
            st.msr_area.write_controls(&cur, t.vmx.caps().procbased.allows(guest_state::PROC_USE_MSR_BITMAPS));
            st.controls_written = true;
        }
        // Entering or leaving SMM changed the address space.
        if st.vmcs_eptp != eptp {
            cur.write(EPT_POINTER, eptp);
            st.vmcs_eptp = eptp;
        }
        host.write_to(&cur, &mut st.host_written);
        guest_state::load(&cur, t.vmx.caps(), &st.regs, st.sregs.to_load(), st.pdptes.take(), &mut st.gprs)?;
        st.sregs.left_in_vmcs();
        cur.write(GUEST_DR7, drs.dr7);
        cur.write(EXCEPTION_BITMAP, dbg.exception_bitmap() | guest_state::EXCEPTIONS_ALWAYS);
        if dbg.single_step() {
            cur.write(GUEST_RFLAGS, cur.read(GUEST_RFLAGS) | rflags::TF);
        }
        cur.write(GUEST_INTERRUPTIBILITY, st.interruptibility);
        let want_window = run.request_interrupt_window();
        let mut windows = Windows::new(&cur, t.vmx.caps());
        let msrs_in_cpu = st.msrs_in_cpu(cur.read(GUEST_IA32_EFER));
        st.msr_area.load(&cur, &st.msrs, msrs_in_cpu);
        if guest_state::has_window_timer(t.vmx.caps()) {
            cur.write(PREEMPTION_TIMER_VALUE, window_timer(t));
        }
        // Published before the flush: a slot change either sees this vCPU running (and kicks
        // it out) or happened before the INVEPT below.
        t.running.store(cpu as i32, core::sync::atomic::Ordering::SeqCst);
        crate::vmx::ept::invept(op, t.vmx.caps(), eptp);
        let mitigations = t.vmx.mitigations();
        let mut entry_args = mitigations.window_start(cpu, t.serial);
        let host_debug = HostDebug::switch_to_guest(&drs, t.vmx.has_debugctl());
        // SAFETY: interrupts off inside `_fpu`; `save` below runs before the window ends.
        let host_xcr0 = unsafe { st.fpu.load(&features) };
        let mut resume = false;
        let window_started = x86::rdtsc();
        let budget = window_budget_ticks();
        // The VMCS keeps it between windows: written again only when the CPUID table changed.
        let cr4_mask = crate::logic::vcpu_state::cr4_guest_host_mask(st.allowed.cr4);
        if st.cr4_mask != cr4_mask {
            cur.write(CR4_GUEST_HOST_MASK, cr4_mask);
            st.cr4_mask = cr4_mask;
        }
        let mut nmi_known_unmasked = st.interruptibility & events::block::NMI == 0;
        let mut v = LiveVcpu::new(&cur, st, run, cpu, &features, &host_debug, want_window);
        let next = loop {
            let st = &mut *v.st;
            // The VM's settings changed (checked after `running` was published: a change after
            // this check kicks the vCPU out): take them before entering.
            if st.settings_stale() {
                break Next::Host;
            }
            // What other vCPUs and devices posted (checked after `running` was published, so
            // a post after this check kicks the vCPU out again). INIT and SIPI reset or start
            // the vCPU: outside the window.
            if let Some(a) = st.apic.as_mut() {
                let nmi_masked = cur.read(GUEST_INTERRUPTIBILITY) & events::block::NMI != 0;
                if let Some(vector) = a.take_eoi_exit() {
                    run.ioapic_eoi(vector);
                    break Next::ToUser;
                }
                if a.take_posted(&mut st.events, nmi_masked) {
                    break Next::Host;
                }
            }
            // An SMI switches the whole state and the address space: outside the window.
            if crate::run::smm::smi_ready(st) {
                break Next::Host;
            }
            // IRR scanned once for both the interrupt to inject and the TPR threshold; again
            // only if `arm` took an interrupt (acknowledged: IRR changed).
            let mut irr = st.apic.as_ref().and_then(|a| a.highest_irr());
            let injected = windows.arm(&cur, &mut st.events, st.apic.as_mut(), irr, want_window, dbg.blocks_irqs());
            if windows.took_interrupt {
                irr = st.apic.as_ref().and_then(|a| a.highest_irr());
            }
            if let Some(info) = injected {
                if events::info::TYPE.get(info.into()) == u64::from(events::info::NMI) {
                    nmi_known_unmasked = false;
                }
                // An SMI waits for the event being delivered: out right after it (KVM's
                // immediate exit), where the window's preemption timer exists.
                if st.events.smi_pending && !st.smm.active && guest_state::has_window_timer(t.vmx.caps()) {
                    cur.write(PREEMPTION_TIMER_VALUE, 0);
                }
            }
            // The TPR for the guest's CR8, and the threshold below which a CR8 write exits.
            if let Some(a) = st.apic.as_mut().filter(|_| st.tpr_shadow) {
                let threshold = a.load_vtpr(irr);
                if threshold != st.tpr_threshold {
                    cur.write(TPR_THRESHOLD, threshold);
                    st.tpr_threshold = threshold;
                }
            }
            // SAFETY: interrupts are off; CR2 holds the guest's value until the entry.
            unsafe { x86::write_cr2(st.sregs.cr2()) };
            if !resume {
                mitigations.flush_l1d();
            }
            let entered = x86::rdtsc();
            // SAFETY: interrupts off, the VMCS is current and complete, `resume` is true only
            // after a successful launch in this window.
            if !unsafe { entry::enter(&mut st.gprs, resume, &mut entry_args) } {
                let error = cur.read(VM_INSTRUCTION_ERROR);
                guest_state::dump_failed_entry(&cur, error as u64);
                run.fail_entry(error as u64, cpu);
                break Next::ToUser;
            }
            resume = true;
            // Virtual-NMI blocking comes only with the delivery of an injected NMI: while none
            // was, the guest's NMIs are unblocked whatever the VMCS says (KVM's
            // `nmi_known_unmasked`). Bochs 2.7 reports the blocking of an earlier entry again.
            if nmi_known_unmasked {
                let state = cur.read(GUEST_INTERRUPTIBILITY);
                if state & events::block::NMI != 0 {
                    cur.write(GUEST_INTERRUPTIBILITY, state & !events::block::NMI);
                }
            }
            let full_reason = cur.read(EXIT_REASON);
            let exited = x86::rdtsc();
            t.stats.exit(full_reason as u16, exited.wrapping_sub(entered));
            st.sregs.set_cr2(x86::read_cr2());
            let vectoring = cur.read(IDT_VECTORING_INFO);
            // An IRET from the guest's NMI handler that faulted to the host had unblocked NMIs:
            // block them again for its second try (only possible while they were blocked).
            if !nmi_known_unmasked {
                let basic = full_reason as u16;
                let (info, qualification) = match basic {
                    reason::EXCEPTION_NMI => (cur.read(EXIT_INTR_INFO), 0),
                    reason::EPT_VIOLATION => (0, cur.read(EXIT_QUALIFICATION)),
                    _ => (0, 0),
                };
                if events::iret_unblocked_nmi(basic, info, qualification, vectoring) {
                    cur.write(GUEST_INTERRUPTIBILITY, cur.read(GUEST_INTERRUPTIBILITY) | events::block::NMI);
                }
            }
            if vectoring & events::info::VALID != 0 {
                let (code, len) = (cur.read(IDT_VECTORING_ERROR_CODE), cur.read(EXIT_INSTRUCTION_LEN));
                if st.events.interrupted(vectoring, code, len) {
                    // The NMI was not delivered: it is not blocking NMIs yet.
                    cur.write(GUEST_INTERRUPTIBILITY, cur.read(GUEST_INTERRUPTIBILITY) & !events::block::NMI);
                }
            }
            // The TPR the guest's CR8 writes left, before anything reads the APIC.
            if let Some(a) = v.st.apic.as_mut().filter(|_| v.st.tpr_shadow) {
                a.sync_vtpr();
            }
            v.skipped = false;
            match exit::handle(&mut v, full_reason) {
                // Single-stepping: an instruction rvmx emulated completed, that is a step
                // (also when the handler wanted the host next: the next window does its work).
                Next::Reenter | Next::Host if v.skipped && dbg.single_step() => {
                    v.run.debug(u32::from(vector::DB), linear_rip(&cur), DR6_ACTIVE_LOW | DR6_BS, cur.read(GUEST_DR7));
                    break Next::ToUser;
                }
                // The preemption timer only counts guest time: a guest that exits at once on
                // every entry (an exception loop rvmx reflects) would keep the window, and
                // interrupts, off forever. The host's time bounds it too.
                Next::Reenter if exited.wrapping_sub(window_started) > budget => break Next::Host,
                Next::Reenter => continue,
                next => break next,
            }
        };
        // SAFETY: pairs with `load` above, interrupts still off.
        unsafe { st.fpu.save(&features, host_xcr0) };
        if !dbg.hw_breakpoints() {
            st.debug.dr7 = cur.read(GUEST_DR7);
        }
        host_debug.restore(&mut st.debug);
        guest_state::store_regs(&cur, &st.gprs, &mut st.regs);
        // The segment and control registers stay in the VMCS unless what comes next reads
        // them.
        let read = match next.sregs_read(st) {
            // A debugger's single step reports linear RIPs.
            _ if dbg.single_step() => SregsRead::All,
            // Userspace reads them all at its return (`KVM_SYNC_X86_SREGS`): all now, not in
            // a VMX window of their own after this one.
            SregsRead::Emulation if run.sync_masks().0 & crate::logic::kvm_run::sync_regs::SREGS != 0 => SregsRead::All,
            read => read,
        };
        match read {
            SregsRead::All => st.sregs.sync(&cur),
            SregsRead::Emulation => st.sregs.sync_for_emulation(&cur),
            SregsRead::Nothing => {}
        }
        if dbg.single_step() {
            // The debugger's TF is not the guest's.
            st.regs.rflags &= !rflags::TF;
        }
        st.interruptibility = cur.read(GUEST_INTERRUPTIBILITY);
        st.msr_area.store(&mut st.msrs);
        drop(cur);
        t.running.store(-1, core::sync::atomic::Ordering::SeqCst);
        host.restore();
        mitigations.window_end(&entry_args);
        Ok(next)
    });
    result.map_err(Error::from)?
}

/// The interrupt- and NMI-window controls of the current VMCS, and the event of the next entry.
struct Windows {
    /// The primary controls without window bits.
    base: u32,
    /// The window bits now set.
    on: u32,
    /// NMI windows exist (virtual NMIs).
    nmi: bool,
    /// The last `arm` called `take_interrupt` (which may have acknowledged an APIC vector,
    /// IRR to ISR): the entry loop's IRR scan, shared by `arm` and the TPR threshold, must be
    /// done again. Nothing else between that scan and `load_vtpr` may change IRR.
    took_interrupt: bool,
}

impl Windows {
    fn new(cur: &Current<'_>, caps: &crate::logic::vmx_caps::VmxCaps) -> Self {
        let all = guest_state::PROC_IRQ_WINDOW | guest_state::PROC_NMI_WINDOW;
        let proc = cur.read(PROC_BASED_CONTROLS);
        Self { base: proc & !all, on: proc & all, nmi: guest_state::has_virtual_nmis(caps), took_interrupt: false }
    }

    /// Before an entry: injects the next event (exceptions exit handlers raised come first),
    /// and opens the windows for what has to wait. Costs nothing while there are no events.
    /// With `block_irqs` (a debugger's BLOCKIRQ) no interrupt is injected or waited for.
    /// The in-kernel local APIC's highest deliverable interrupt is injected when nothing else
    /// is and the guest takes it (acknowledged then, IRR to ISR, as KVM's
    /// `kvm_cpu_get_interrupt`); else the interrupt window opens for it.
    /// The interruption information of the event it injects, if any.
    /// `highest_irr`: the APIC's IRR scanned just before.
    fn arm(
        &mut self,
        cur: &Current<'_>,
        events: &mut Events,
        apic: Option<&mut LocalApic>,
        highest_irr: Option<u8>,
        want_irq_window: bool,
        block_irqs: bool,
    ) -> Option<u32> {
        // Userspace's window only while its PIC's interrupt can be taken (LINT0 ExtINT).
        let want_irq_window = want_irq_window && apic.as_deref().is_none_or(|a| a.accepts_extint());
        let apic = apic.filter(|a| !block_irqs && a.has_interrupt_with(highest_irr));
        self.took_interrupt = false;
        if self.on == 0 && !want_irq_window && apic.is_none() && events.is_quiet() {
            return None;
        }
        let mut want_irq_window = want_irq_window && !block_irqs;
        let if_flag = cur.read(GUEST_RFLAGS) & rflags::IF != 0 && !block_irqs;
        if let Some(a) = apic {
            let interruptibility = cur.read(GUEST_INTERRUPTIBILITY);
            if events.irq_injectable(interruptibility) && events::interrupt_allowed(if_flag, interruptibility) {
                events.interrupt = a.take_interrupt().map(|vector| events::Interrupt { vector, soft_len: None });
                self.took_interrupt = true;
            } else {
                want_irq_window = true;
            }
        }
        let mut entry = events.next(if_flag, cur.read(GUEST_INTERRUPTIBILITY), want_irq_window);
        entry.irq_window &= !block_irqs;
        if entry.set_rf {
            cur.write(GUEST_RFLAGS, cur.read(GUEST_RFLAGS) | rflags::RF);
        }
        if let Some(i) = entry.inject {
            cur.write(ENTRY_EXCEPTION_ERROR_CODE, i.error_code);
            cur.write(ENTRY_INSTRUCTION_LEN, i.len);
            cur.write(ENTRY_INTR_INFO, i.info);
        }
        let on = if entry.irq_window { guest_state::PROC_IRQ_WINDOW } else { 0 }
            | if entry.nmi_window && self.nmi { guest_state::PROC_NMI_WINDOW } else { 0 };
        if on != self.on {
            cur.write(PROC_BASED_CONTROLS, self.base | on);
            self.on = on;
        }
        entry.inject.map(|i| i.info)
    }
}
