// SPDX-License-Identifier: GPL-2.0

//! What a vCPU keeps between runs, under its mutex: registers, the VMCS, pending events and
//! work, FPU, debug registers, CPUID and MSRs, and what its CPUID table allows.

use core::sync::atomic::{AtomicU64, Ordering::{Acquire, SeqCst}};
use kernel::{prelude::*, sync::Arc};

use crate::{
    cpu::{debugregs::GuestDebug, fpu::GuestFpu, kvmclock::VmClock, msr::{MsrArea, MsrState}},
    logic::{
        cpuid_table::{self, CpuidEntry},
        arch::{self, dr, rflags, vector},
        events::{self, Events, VcpuEvents},
        guest_debug::{dr6_after_db, Debugger, DR6_ACTIVE_LOW, DR6_BS},
        kvm_abi::{Regs, Sregs, VmSettings},
        kvmclock::VcpuClock,
        memslot_rules::AddressSpace,
        msr_rules::GuestMsrs,
        smm::SmmState,
        vcpu_state,
    },
    kvm::vm::Vm,
    run::{emulate, kvm_run::KvmRun},
    vmx::{ept::TableCache, entry::Gprs, operation::Vmx, sregs::GuestSregs, vmcs::{Current, Vmcs}},
};

/// Everything a vCPU keeps between runs, under the vCPU mutex: its VMCS and the rest of its
/// state, apart so that a window can hold the VMCS current (borrowed) while exit handlers
/// change the rest. Dereferences to the rest.
pub(crate) struct RunState {
    pub(crate) vmcs: Vmcs,
    pub(crate) vcpu: VcpuState,
}

impl core::ops::Deref for RunState {
    type Target = VcpuState;

    fn deref(&self) -> &VcpuState {
        &self.vcpu
    }
}

impl core::ops::DerefMut for RunState {
    fn deref_mut(&mut self) -> &mut VcpuState {
        &mut self.vcpu
    }
}

impl RunState {
    /// Reads the guest's segment and control registers back from the VMCS if it holds newer
    /// ones, in a short VMX window (outside `KVM_RUN`'s, for the ioctls and events that need them).
    pub(crate) fn sync_sregs(&mut self) -> Result {
        if !self.vcpu.sregs.stale() {
            return Ok(());
        }
        let vmx = Vmx::get().ok_or(ENODEV)?;
        let Self { vmcs, vcpu } = self;
        vmx.with_vmx_operation(|op| -> Result {
            let cur = Current::load(op, vmcs)?;
            vcpu.sregs.sync(&cur);
            Ok(())
        })?
    }

    /// Acts on a pending INIT and SIPI (in-kernel APIC only; KVM's `kvm_apic_accept_events`):
    /// INIT resets the vCPU, a SIPI starts it at its vector. In SMM, INIT waits for RSM and a
    /// SIPI is dropped.
    pub(crate) fn accept_init_sipi(&mut self, lint0_reenabled: bool) -> Result {
        // The registers first: a read-back that fails leaves the INIT or SIPI pending.
        if self.vcpu.apic.as_ref().is_some_and(|a| a.init_sipi_pending()) {
            self.sync_sregs()?;
        }
        let Some(a) = self.vcpu.apic.as_mut() else { return Ok(()) };
        let accepted = a.accept_init_sipi(lint0_reenabled);
        if accepted.init || accepted.sipi.is_some() {
            // Posted since the check above (another vCPU's INIT): read back now.
            self.sync_sregs()?;
            self.vcpu.init_sipi(accepted);
        }
        Ok(())
    }
}

/// A vCPU's state but its VMCS.
pub(crate) struct VcpuState {
    pub(crate) regs: Regs,
    /// Segment, descriptor-table and control registers, newest in the VMCS after a window.
    pub(crate) sregs: GuestSregs,
    pub(crate) controls_written: bool,
    /// CR8 uses the TPR shadow (an in-kernel APIC, on a CPU that has it), and the TPR
    /// threshold in the VMCS.
    pub(crate) tpr_shadow: bool,
    pub(crate) tpr_threshold: u32,
    /// For what CPU and task the VMCS holds the host state (`None` until its first window).
    pub(crate) host_written: Option<crate::vmx::host_state::HostKey>,
    /// The EPT pointer in the VMCS (0 before the first window): each address space has its
    /// own, and SMM switches.
    pub(crate) vmcs_eptp: u64,
    /// The CR4 guest/host mask in the VMCS (0 before the first window: never a real mask,
    /// which always has VMXE).
    pub(crate) cr4_mask: u64,
    pub(crate) gprs: Gprs,
    /// Work an exit left for userspace, finished at the next `KVM_RUN`.
    pub(crate) pending: Option<Pending>,
    /// The data of an emulated instruction's access.
    pub(crate) emulated: emulate::Data,
    /// PAE PDPTEs to load at the next window (read from guest memory).
    pub(crate) pdptes: Option<[u64; 4]>,
    /// Interrupts, NMIs, exceptions and SMIs to deliver.
    pub(crate) events: Events,
    /// System-management mode.
    pub(crate) smm: SmmState,
    /// The guest's interruptibility state (STI/MOV SS shadows, NMI blocking).
    pub(crate) interruptibility: u32,
    /// A userspace debugger's settings (`KVM_SET_GUEST_DEBUG`).
    pub(crate) debugger: Debugger,
    /// The signal mask for `KVM_RUN` (`KVM_SET_SIGNAL_MASK`).
    pub(crate) sigmask: Option<u64>,
    /// FPU/extended state and XCR0.
    pub(crate) fpu: GuestFpu,
    /// Debug registers.
    pub(crate) debug: GuestDebug,
    /// The guest's CPUID table (`KVM_SET_CPUID2`).
    pub(crate) cpuid: KVec<CpuidEntry>,
    /// What that table allows.
    pub(crate) allowed: Allowed,
    /// Guest MSRs kept by software, and the VM-entry/exit MSR lists.
    pub(crate) msrs: GuestMsrs,
    pub(crate) msr_area: MsrArea,
    /// The in-kernel local APIC (split irqchip only).
    pub(crate) apic: Option<crate::irq::lapic::LocalApic>,
    /// kvmclock: this vCPU's MSR and pending page writes, and the VM's clock.
    pub(crate) kvmclock: VcpuClock,
    /// Steal time: the MSR and the last update.
    pub(crate) steal: crate::logic::steal_time::StealTime,
    /// How long a halt polls before it sleeps, and the halt under way (see
    /// [`crate::logic::halt_poll`]).
    pub(crate) halt_poll: crate::logic::halt_poll::HaltPoll<kernel::time::Instant<kernel::time::Monotonic>>,
    pub(crate) vm_clock: Arc<VmClock>,
    /// `KVM_CAP_ENFORCE_PV_FEATURE_CPUID`: the paravirtual MSRs and hypercalls need their
    /// feature in the guest's CPUID.
    pub(crate) enforce_pv_features: bool,
    /// The VM's settings and MSR filter as this vCPU last took them, the VM's generation
    /// counter of them and the generation taken (`Vm::settings_gen`).
    pub(crate) vm: VmSettings,
    pub(crate) msr_filter: Option<Arc<crate::cpu::msr_filter::MsrFilter>>,
    pub(crate) settings_gen: Arc<AtomicU64>,
    pub(crate) settings_seen: u64,
    /// Page-table pages for this vCPU's next EPT fault, allocated before the MMU lock.
    pub(crate) tables: TableCache,
    /// The guest-physical page of the last MMIO access: an EPT fault there is taken for MMIO
    /// again, and the window reads the registers the emulator needs before it closes.
    pub(crate) mmio_page: u64,
}

impl VcpuState {
    /// Enters or leaves SMM as `smm` says (registers aside): an in-kernel APIC holds INIT back
    /// in SMM.
    pub(crate) fn set_smm(&mut self, smm: SmmState) {
        self.smm = smm;
        if let Some(a) = self.apic.as_ref() {
            a.set_smm(smm.active);
        }
    }

    /// The guest-physical address space the vCPU sees now (SMM has its own).
    pub(crate) fn address_space(&self) -> AddressSpace {
        AddressSpace::of_vcpu(self.smm.active)
    }

    /// The PV features the guest's MSRs and hypercalls are held to, if enforced.
    pub(crate) fn enforced_pv_features(&self) -> Option<u32> {
        self.enforce_pv_features.then_some(self.allowed.pv_features)
    }

    /// Whether the MSR filter lets the guest `kind` (`FILTER_READ`/`FILTER_WRITE`) MSR `index`
    /// in the kernel.
    pub(crate) fn msr_allowed(&self, index: u32, kind: u32) -> bool {
        self.msr_filter.as_ref().is_none_or(|f| f.allows(index, kind))
    }

    /// Whether the VM's settings changed since this vCPU took them (read inside windows, after
    /// the SeqCst store of `running`: SeqCst here too, so that the language's model, not only
    /// x86's locked store, keeps this load after it; on x86 it is the same `mov`).
    pub(crate) fn settings_stale(&self) -> bool {
        self.settings_gen.load(SeqCst) != self.settings_seen
    }

    /// Takes the VM's settings and MSR filter if they changed (outside a window): SPEC_CTRL,
    /// which the guest may reach without exits, is intercepted again where the filter denies
    /// it (KVM's `KVM_REQ_RECALC_INTERCEPTS`).
    #[inline(always)]
    pub(crate) fn take_vm_settings(&mut self, vm: &Vm) {
        if self.settings_stale() {
            self.retake_vm_settings(vm);
        }
    }

    #[inline(never)]
    fn retake_vm_settings(&mut self, vm: &Vm) {
        // The generation first: a change after this read is seen at the next check.
        self.settings_seen = self.settings_gen.load(Acquire);
        self.vm = vm.settings();
        self.msr_filter = vm.msr_filter();
        if self.msr_filter.as_ref().is_some_and(|f| !f.allows_read_write(crate::logic::arch::msr::SPEC_CTRL)) {
            self.msr_area.set_spec_ctrl_intercept(true);
        }
    }

    /// `KVM_SET_REGS` (RFLAGS bit 1 always set). An exception raised but not yet being
    /// delivered is dropped, as KVM's `__set_regs` drops its pending one.
    pub(crate) fn set_user_regs(&mut self, mut regs: Regs) {
        regs.rflags |= rflags::FIXED;
        self.regs = regs;
        if self.events.exception.is_some_and(|e| !e.injected) {
            self.events.exception = None;
        }
    }

    /// `KVM_GET_SREGS`: with the in-kernel APIC's TPR and base, and the queued external
    /// interrupt in the bitmap (KVM).
    pub(crate) fn user_sregs(&self) -> Sregs {
        let mut s = *self.sregs.get();
        if let Some(a) = self.apic.as_ref() {
            (s.cr8, s.apic_base) = (a.cr8(), a.apic_base());
        }
        if let Some(i) = self.events.interrupt.filter(|i| i.soft_len.is_none()) {
            if let Some(word) = s.interrupt_bitmap.get_mut(i.vector as usize / 64) {
                *word |= 1 << (i.vector % 64);
            }
        }
        s
    }

    /// `KVM_SET_SREGS`; `Err` (`EINVAL`) for values KVM refuses.
    pub(crate) fn set_user_sregs(&mut self, sregs: Sregs, vm: &Vm) -> Result<(), ()> {
        // EFER and CR4 bits only as the guest's CPUID allows them, as KVM checks.
        let pending = vcpu_state::pending_interrupt(&sregs);
        if !vcpu_state::sregs_valid(&sregs, self.allowed.efer, self.allowed.cr4) {
            return Err(());
        }
        // An in-kernel APIC takes APIC_BASE (refused: EINVAL) and the TPR, in KVM's order
        // (__set_sregs_common).
        if let Some(a) = self.apic.as_mut() {
            a.set_apic_base(sregs.apic_base, true)?;
            // KVM's kvm_set_cr8 leaves the TPR alone for a value with reserved bits.
            if sregs.cr8 & !arch::CR8_TPR == 0 {
                a.set_cr8(sregs.cr8);
            }
        }
        // An interrupt in the bitmap is queued, as KVM_INTERRUPT would (KVM).
        if let Some(vector) = pending {
            self.events.interrupt = Some(events::Interrupt { vector, soft_len: None });
        }
        // PAE paging outside long mode: the PDPTEs are read now, as KVM does (and, like KVM,
        // left as they were if they cannot be).
        if emulate::pae_legacy(&sregs) {
            if let Some(p) = emulate::pdptes(vm.memory(self.address_space()), &sregs) {
                self.pdptes = Some(p);
            }
        }
        self.sregs.set(Sregs { interrupt_bitmap: [0; 4], ..sregs });
        Ok(())
    }

    /// `KVM_GET_VCPU_EVENTS`: NMIs and SMIs posted by other vCPUs count as pending (KVM's
    /// process_nmi and process_smi).
    pub(crate) fn user_events(&mut self) -> VcpuEvents {
        self.take_posted();
        let mut v = self.events.to_abi(self.interruptibility);
        let latched_init = self.apic.as_ref().is_some_and(|a| a.init_latched());
        let [_, pending, ..] = v.smi; // the events' own
        v.smi = [self.smm.active as u8, pending, self.smm.inside_nmi as u8, latched_init as u8];
        v
    }

    /// `KVM_SET_VCPU_EVENTS`; `Err` (`EINVAL`) for what KVM refuses. With the SMM state, the
    /// vCPU enters or leaves SMM as it says (its address space only: the registers are
    /// userspace's to set) and an in-kernel APIC's latched INIT follows it.
    pub(crate) fn set_user_events(&mut self, v: &VcpuEvents) -> Result<(), ()> {
        let (events, state) = self.events.from_abi(v, self.interruptibility).ok_or(())?;
        self.events = events;
        self.interruptibility = state;
        if v.flags & events::flags::SMM != 0 {
            let [smm, _, inside_nmi, latched_init] = v.smi;
            // Outside SMM there is no "SMI inside an NMI" (KVM's kvm_smm_changed clears it).
            self.set_smm(SmmState { active: smm != 0, inside_nmi: smm != 0 && inside_nmi != 0 });
            if let Some(a) = self.apic.as_ref() {
                a.set_init_latched(latched_init != 0);
            }
        }
        Ok(())
    }

    /// CPUID.MWAIT as IA32_MISC_ENABLE sets it, without KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT.
    pub(crate) fn mwait_runtime(&self) -> Option<bool> {
        use crate::logic::{kvm_abi::quirk, msr_rules::MISC_ENABLE_MWAIT};
        (!self.vm.has_quirk(quirk::MISC_ENABLE_NO_MWAIT)).then_some(self.msrs.misc_enable & MISC_ENABLE_MWAIT != 0)
    }

    /// Whether MONITOR and MWAIT run (as NOPs) rather than raise #UD (KVM's
    /// `kvm_emulate_monitor_mwait`).
    pub(crate) fn mwait_allowed(&self) -> bool {
        use crate::logic::kvm_abi::quirk;
        self.vm.has_quirk(quirk::MWAIT_NEVER_UD_FAULTS) || self.mwait_runtime().unwrap_or(self.allowed.instructions.mwait)
    }

    /// The CPUID bits that follow this vCPU's state, with the guest's CR4 `guest_cr4` (a
    /// window reads it from the VMCS); the XSAVE sizes are the caller's to add.
    pub(crate) fn cpuid_runtime_bits(&self, guest_cr4: u64) -> crate::logic::cpuid_table::Runtime {
        use crate::logic::arch::{apic_base, cr4};
        let base = self.apic.as_ref().map_or(self.sregs.apic_base(), |a| a.apic_base());
        crate::logic::cpuid_table::Runtime {
            apic_enabled: base & apic_base::ENABLE != 0,
            osxsave: guest_cr4 & cr4::OSXSAVE != 0,
            ospke: guest_cr4 & cr4::PKE != 0,
            mwait: self.mwait_runtime(),
            ..Default::default()
        }
    }

    /// The CPUID bits that follow this vCPU's state, outside a window (`KVM_GET/SET_CPUID2`).
    pub(crate) fn cpuid_runtime(&self, f: &crate::cpu::fpu::Features) -> crate::logic::cpuid_table::Runtime {
        crate::logic::cpuid_table::Runtime {
            xsave_size: f.xsave_size(self.fpu.xcr0),
            xsave_compacted_size: f.xsave_compacted_size(self.fpu.xcr0),
            ..self.cpuid_runtime_bits(self.sregs.get().cr4)
        }
    }

    /// The instruction is done (RIP moved past it outside the window): an STI or MOV SS
    /// shadow it was in ends, as when the processor retires it.
    pub(crate) fn end_shadow(&mut self) {
        self.interruptibility &= !(events::block::STI | events::block::MOV_SS);
    }

    /// Current privilege level outside a window: 0 in real mode, 3 in virtual-8086 mode, else
    /// SS.DPL (as VMX keeps it).
    pub(crate) fn cpl(&self) -> u8 {
        // CR0 and SS are among what an MMIO exit reads (emulation failing asks for the CPL).
        let s = self.sregs.for_emulation();
        if s.cr0 & arch::cr0::PE == 0 {
            0
        } else if self.regs.rflags & rflags::VM != 0 {
            3
        } else {
            s.ss.dpl
        }
    }

    /// An instruction rvmx could not emulate, as KVM's `handle_emulation_failure`: with
    /// `KVM_CAP_EXIT_ON_EMULATION_FAILURE` to userspace; otherwise the guest gets #UD, and
    /// userspace sees the failure too if it hit ring 0. Whether `KVM_RUN` returns (the caller
    /// then writes the report).
    pub(crate) fn emulation_failed(&mut self) -> bool {
        if self.vm.exit_on_emulation_failure {
            return true;
        }
        self.events.exception = Some(events::Exception::raise(vector::UD, None));
        self.cpl() == 0
    }

    /// Raises #GP(0), delivered at the next entry.
    pub(crate) fn raise_gp0(&mut self) {
        self.events.exception = Some(events::Exception::gp0(self.sregs.get().cr0 & arch::cr0::PE != 0));
    }

    /// Raises an exception an emulated instruction caused (CR2 set for a page fault); it is
    /// delivered at the next entry.
    pub(crate) fn raise(&mut self, f: emulate::GuestFault) {
        if let Some(cr2) = f.cr2 {
            self.sregs.set_cr2(cr2);
        }
        self.events.exception = Some(events::Exception::raise(f.vector, Some(f.error_code)));
    }

    /// After rvmx emulated (part of) an instruction that had `before` as RIP and rCX: once it
    /// did something its STI/MOV SS shadow ends; done (RIP moved), RF is cleared, and between
    /// REP iterations (rCX moved) it is set, as KVM's emulator writes RFLAGS back.
    pub(crate) fn emulated_progress(&mut self, before: (u64, u64)) {
        if self.regs.rip != before.0 {
            self.end_shadow();
            self.regs.rflags &= !rflags::RF;
        } else if self.regs.rcx != before.1 {
            self.end_shadow();
            self.regs.rflags |= rflags::RF;
        }
    }

    /// RIP past an instruction of `len` bytes, done outside the guest.
    pub(crate) fn skip(&mut self, len: u8) {
        self.regs.rip = self.regs.rip.wrapping_add(len.into());
        self.end_shadow();
    }

    /// The guest's RIP as KVM compares it before finishing a port access (`kvm_get_linear_rip`):
    /// RIP in 64-bit mode, else CS base + RIP in 32 bits.
    pub(crate) fn linear_rip(&self) -> u64 {
        self.code_base().linear(self.regs.rip)
    }

    /// [`Self::linear_rip`] after an exit at which CS and EFER made `at_exit`: while the VMCS
    /// still holds those (nothing changed them since), without reading them back.
    pub(crate) fn linear_rip_since(&self, at_exit: arch::CodeBase) -> u64 {
        let base = if self.sregs.stale() { at_exit } else { self.code_base() };
        base.linear(self.regs.rip)
    }

    /// What makes RIP linear with the registers here (synced).
    fn code_base(&self) -> arch::CodeBase {
        let s = self.sregs.get();
        arch::CodeBase { long64: arch::is_64_bit_mode(s.cs.l != 0, s.efer), cs_base: s.cs.base }
    }

    /// An instruction finished outside the guest (by userspace, an ioeventfd or rvmx's
    /// emulation) retired, as KVM's `kvm_skip_emulated_instruction` sees it: a debugger's
    /// single step is reported in `kvm_run` (true: `KVM_RUN` returns); with the guest's own
    /// RFLAGS.TF, the single-step #DB is raised for the guest (DR6.BS, DR7.GD cleared).
    pub(crate) fn stepped(&mut self, run: &KvmRun) -> bool {
        if self.debugger.single_step() {
            let pc = self.linear_rip();
            run.debug(u32::from(vector::DB), pc, DR6_ACTIVE_LOW | DR6_BS, self.debug.dr7);
            return true;
        }
        if self.regs.rflags & rflags::TF != 0 {
            self.debug.dr6 = dr6_after_db(self.debug.dr6, DR6_BS);
            self.debug.dr7 &= !dr::DR7_GD;
            self.events.exception = Some(events::Exception::raise(vector::DB, None));
        }
        false
    }

    /// The switched MSRs the guest can use without exits with EFER `efer`: those the lists
    /// put in the CPU while it runs.
    pub(crate) fn msrs_in_cpu(&self, efer: u64) -> crate::logic::msr_rules::SwitchedSet {
        crate::logic::msr_rules::in_cpu(efer, self.allowed.instructions.rdtscp)
    }

    /// The guest's MSRs as an access sees them: live in `vmcs` inside a window (the guest's
    /// RDMSR/WRMSR), from this state outside one (userspace's `KVM_GET/SET_MSRS`).
    pub(crate) fn msr_state<'a, 'b>(&'a mut self, vmcs: Option<&'a Current<'b>>) -> MsrState<'a, 'b> {
        let host = vmcs.is_none();
        if host {
            self.msr_area.guest_changed();
        }
        let pv_features = self.enforced_pv_features();
        MsrState {
            vmcs,
            area: &self.msr_area,
            msrs: &mut self.msrs,
            sregs: &mut self.sregs,
            efer_ok: self.allowed.efer,
            tsc_aux_ok: host || self.allowed.instructions.rdtscp,
            tsc_adjust_ok: self.allowed.instructions.tsc_adjust,
            speculation: self.allowed.speculation,
            clock: &mut self.kvmclock,
            steal: &mut self.steal,
            apic: self.apic.as_mut(),
            vm_clock: &self.vm_clock,
            vm: self.vm,
            pv_features,
            sse3: self.allowed.instructions.sse3,
            filter: self.msr_filter.as_deref(),
            host,
        }
    }

    /// Whether an event ends the vCPU's halt (KVM's `kvm_vcpu_has_events`, once the posted
    /// interrupts are taken): an exception or event in flight, an NMI the guest can take, or
    /// an interrupt it can take now. Always, without an in-kernel APIC.
    pub(crate) fn has_wake_event(&self) -> bool {
        let Some(a) = self.apic.as_ref() else { return true };
        let if_flag = self.regs.rflags & rflags::IF != 0;
        let e = &self.events;
        e.exception.is_some()
            || e.nmi_injected
            || (e.nmi_pending > 0 && events::nmi_allowed(self.interruptibility))
            || (e.smi_pending && !self.smm.active)
            || (events::interrupt_allowed(if_flag, self.interruptibility) && (e.interrupt.is_some() || a.has_interrupt()))
    }

    /// `KVM_X86_SETUP_MCE` (`EINVAL` for a refused capability); with the in-kernel APIC, its LVT
    /// CMCI entry follows MCG_CMCI_P (`kvm_apic_after_set_mcg_cap`).
    pub(crate) fn setup_mce(&mut self, mcg_cap: u64) -> Result {
        self.msrs.mce.setup(mcg_cap).map_err(|_| EINVAL)?;
        if let Some(a) = self.apic.as_mut() {
            a.set_cmci(mcg_cap & crate::logic::mce::cap::CMCI_P != 0);
        }
        Ok(())
    }

    /// Whether the guest blocks NMIs (an NMI queued now waits for that to end).
    pub(crate) fn nmi_masked(&self) -> bool {
        self.interruptibility & events::block::NMI != 0
    }

    /// Signals a CMCI through the in-kernel APIC; without one nothing does (as KVM).
    pub(crate) fn deliver_cmci(&mut self) {
        let nmi_masked = self.nmi_masked();
        let Self { apic, events, .. } = self;
        if let Some(a) = apic.as_mut() {
            a.deliver_cmci(events, nmi_masked);
        }
    }

    /// Takes what was posted to the in-kernel APIC (fixed interrupts into IRR, NMIs into the
    /// events). Whether an INIT or SIPI waits.
    pub(crate) fn take_posted(&mut self) -> bool {
        let nmi_masked = self.nmi_masked();
        let Self { apic, events, .. } = self;
        apic.as_mut().is_some_and(|a| a.take_posted(events, nmi_masked))
    }

    /// Acts on INIT and SIPI the in-kernel APIC accepted (`sregs` synced): INIT resets the
    /// vCPU, a SIPI starts it at its vector.
    fn init_sipi(&mut self, accepted: crate::logic::mp_state::Accepted) {
        if accepted.init {
            self.init_reset();
        }
        if let Some(v) = accepted.sipi {
            // KVM's kvm_vcpu_deliver_sipi_vector.
            let s = self.sregs.get_mut();
            s.cs.selector = u16::from(v) << 8;
            s.cs.base = u64::from(v) << 12;
            self.regs.rip = 0;
        }
    }

    /// INIT (`kvm_vcpu_reset(vcpu, true)`) but for the APIC, which resets itself: registers
    /// and segments as at RESET but CR0.CD/NW and IA32_APIC_BASE kept, events, debug
    /// registers, kvmclock and MSR_SMI_COUNT cleared; FPU, XCR0 and the other MSRs kept.
    fn init_reset(&mut self) {
        let family = cpuid_table::find(&self.cpuid, 1, 0).map_or(0x600, |e| e.eax);
        self.regs = Regs { rdx: family.into(), ..vcpu_state::reset_regs() };
        let s = vcpu_state::init_sregs(self.sregs.get());
        self.sregs.set(s);
        self.events = Events { triple_fault: self.events.triple_fault, ..Default::default() };
        self.interruptibility = 0;
        self.pdptes = None;
        self.debug = GuestDebug::default();
        self.kvmclock = VcpuClock::default();
        self.msrs.smi_count = 0;
    }

    /// Takes a new CPUID table and what follows from it.
    pub(crate) fn set_cpuid(&mut self, table: KVec<CpuidEntry>, vmx: &Vmx) {
        self.cpuid = table;
        self.allowed = Allowed::new(&self.cpuid, vmx);
        if let Some(a) = self.apic.as_mut() {
            a.set_cpuid(&self.cpuid);
        }
    }
}

/// What the last exit to userspace left to do.
#[derive(Clone, Copy)]
pub(crate) enum Pending {
    /// IN of `size` bytes, `len` bytes long, at linear RIP `rip` (`at` made it linear): the
    /// data userspace left in the PIO page goes to RAX, RIP past the instruction.
    PortIn { size: u8, len: u8, rip: u64, at: arch::CodeBase },
    /// OUT, `len` bytes long, at linear RIP `rip` (`at` made it linear): userspace (or an
    /// ioeventfd) has the data; RIP past it.
    PortOut { len: u8, rip: u64, at: arch::CodeBase },
    /// RDMSR or WRMSR (`write`), `len` bytes long, that userspace handles
    /// (`KVM_EXIT_X86_RDMSR/WRMSR`): #GP if it says so, else a read's value to EDX:EAX and RIP
    /// past it.
    Msr { write: bool, len: u8 },
    /// The next step of an instruction rvmx emulates.
    Emulated(emulate::Pending),
}

impl Pending {
    /// Whether finishing it completes an instruction for single-stepping (KVM reports no step
    /// after the last part of an MMIO write: it was done at the exit).
    pub(crate) fn completes_step(&self) -> bool {
        match self {
            Pending::PortIn { .. } | Pending::PortOut { .. } | Pending::Msr { .. } => true,
            Pending::Emulated(p) => p.completes_step(),
        }
    }
}

/// What the guest's CPUID table allows, worked out when the table is set (as KVM's
/// `kvm_vcpu_after_set_cpuid`), not on every window.
#[derive(Clone, Copy)]
pub(crate) struct Allowed {
    /// EFER bits (LM, NX).
    pub(crate) efer: u64,
    /// CR4 bits: its CPUID's, rvmx's, the processor's in VMX operation.
    pub(crate) cr4: u64,
    /// The speculation-control MSRs.
    pub(crate) speculation: cpuid_table::SpeculationMsrs,
    /// RDTSCP/RDPID (and so IA32_TSC_AUX), INVPCID, RDRAND, RDSEED (the others are #UD).
    pub(crate) instructions: cpuid_table::Instructions,
    /// The KVM paravirtual features the table gives.
    pub(crate) pv_features: u32,
}

impl Allowed {
    pub(crate) fn new(table: &[CpuidEntry], vmx: &Vmx) -> Self {
        let (lm, nx) = cpuid_table::long_mode_and_nx(table);
        let cr4 = cpuid_table::cr4_features(table, vmx.fpu().xcr0);
        Self {
            efer: vcpu_state::efer_allowed(lm, nx),
            cr4: vcpu_state::cr4_allowed(cr4, vmx.caps().cr4_fixed.1),
            // A table may list what the host lacks: as KVM (its guest_cpu_cap_has), the MSR
            // exists for the guest only where the host has it.
            speculation: {
                let mut sp = cpuid_table::speculation_msrs(table);
                sp.spec_ctrl &= vmx.mitigations().for_guests().spec_ctrl.msr;
                sp
            },
            instructions: cpuid_table::instructions(table),
            pv_features: cpuid_table::kvm_pv_features(table),
        }
    }
}

