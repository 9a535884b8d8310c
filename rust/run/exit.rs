// SPDX-License-Identifier: GPL-2.0

//! VM exits, both halves: [`handle`], one `match` on the exit reason, runs inside the
//! interrupts-off window with the vCPU ([`LiveVcpu`]); what it cannot finish there (faulting
//! in guest memory, reading guest page tables, an ioeventfd) it hands to [`finish`], which runs
//! after the window closed. Everything else returns to userspace with `kvm_run` filled in,
//! exactly as KVM fills it.

use kernel::prelude::*;

use crate::{
    cpu::{debugregs::{self, HostDebug}, fpu::Features},
    kvm::vm::{Fault, Vm},
    logic::{
        arch::{cr0, cr4, dr, efer, rflags, seg_ar, vector, CodeBase, CR3_PCID, CR8_TPR},
        events::{self, block, info, Exception},
        hypercall,
        ioeventfd_rules::Bus,
        kvm_abi::{quirk, Sregs},
        kvm_run::{exit_reason, internal_error},
        memslot_rules::AddressSpace,
        msr_filter,
        msr_rules,
        vmcs_fields::*,
        vmx_exit::{self, cr_kind, reason, CrAccess, DrAccess, Io},
        xstate,
    },
    run::{
        complete,
        counters::VcpuStats,
        emulate,
        kvm_run::KvmRun,
        smm,
        state::{Pending, RunState, VcpuState},
    },
    vmx::{
        guest_state::{self, guest_cr0, linear_rip, real_cr0, CR4_HOST_OWNED, ENTRY_IA32E},
        vmcs::Current,
    },
};

/// What to do after an exit.
pub(crate) enum Next {
    /// Handled: enter the guest again, still inside the window.
    Reenter,
    /// Leave the window; `kvm_run` is filled in: return to userspace.
    ToUser,
    /// Leave the window so the host can take an interrupt, then come back.
    Host,
    /// Leave the window and finish the exit there ([`finish`]).
    Finish(Deferred),
}

/// What the work after a window reads of the guest's segment and control registers: the
/// window then reads it back from the VMCS before it closes (cheaper than a VMX window of
/// their own later).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SregsRead {
    Nothing,
    /// What the instruction emulator reads (`GuestSregs::sync_for_emulation`).
    Emulation,
    All,
}

impl Next {
    /// What the work after the window reads of the guest's segment and control registers.
    pub(crate) fn sregs_read(&self, st: &VcpuState) -> SregsRead {
        match self {
            Next::Finish(d) => d.sregs_read(st),
            Next::Reenter | Next::ToUser | Next::Host => SregsRead::Nothing,
        }
    }
}

/// The second half of an exit, done outside the window where it may sleep or read guest memory.
pub(crate) enum Deferred {
    /// Fault in guest-physical page `gpa` (may sleep). `vectoring` is the IDT-vectoring
    /// information: an event whose delivery hit `gpa`. `linear`: the linear address the
    /// access translated to `gpa`, if `qualification` says so (else 0). The qualification's
    /// defined bits all fit in 32: kept so, the variant is no larger than `PortOut`, and
    /// neither is `Next`, which every window returns.
    EptFault { gpa: u64, linear: u64, qualification: u32, vectoring: u32, cpu: u32 },
    /// Emulate INS/OUTS (`len` bytes long) with guest memory.
    StringIo { io: Io, len: u8 },
    /// Finish a MOV to CR0 (or LMSW) or CR4 of `len` bytes that turns on PAE paging outside
    /// long mode, or changes its paging bits: the PDPTEs come from guest memory.
    PaePaging { cr0: u64, cr4: u64, len: u8 },
    /// An IN of `size` bytes from `port`, `len` bytes long, with RIP made linear by `at`: an
    /// in-kernel device (PIT, PIC) answers it, else userspace.
    PortIn { port: u16, size: u8, len: u8, at: CodeBase },
    /// An OUT of `size` bytes of `value` to `port`, `len` bytes long, with RIP made linear by
    /// `at`: an in-kernel device (PIT, PIC, ioeventfd, coalesced zone) may take it, else it
    /// goes to userspace.
    PortOut { port: u16, size: u8, value: u64, len: u8, at: CodeBase },
    /// #UD at the guest's RIP: RSM in SMM returns, VMMCALL is patched, anything else gets its
    /// #UD.
    InvalidOpcode,
    /// RDMSR or WRMSR (`write`, of `data`) of MSR `index`, `len` bytes long, to userspace for
    /// reason `why`.
    UserMsr { write: bool, index: u32, data: u64, why: u32, len: u8 },
    /// Report an EPT misconfiguration at `gpa` (a bug in rvmx's tables: it never writes such
    /// entries).
    EptMisconfig { gpa: u64 },
}

impl Deferred {
    /// What finishing it reads of the guest's segment or control registers: all of them to
    /// emulate string I/O, RSM or VMMCALL, load PDPTEs, or raise #GP for userspace's MSR
    /// refusal; what the emulator reads for MMIO. A port access only compares RIPs, with the
    /// CS of its exit. An EPT fault is MMIO only where no RAM is, which the window cannot look
    /// up (the slots' lock may sleep): a fault on the page of the last MMIO access is taken
    /// for one, else the registers are read in a VMX window of their own if it turns out to
    /// be MMIO.
    fn sregs_read(&self, st: &VcpuState) -> SregsRead {
        match self {
            Deferred::PortIn { .. } | Deferred::PortOut { .. } | Deferred::EptMisconfig { .. } => SregsRead::Nothing,
            Deferred::EptFault { gpa, .. } if *gpa & !0xfff == st.mmio_page => SregsRead::Emulation,
            Deferred::EptFault { .. } => SregsRead::Nothing,
            Deferred::StringIo { .. }
            | Deferred::PaePaging { .. }
            | Deferred::InvalidOpcode
            | Deferred::UserMsr { .. } => SregsRead::All,
        }
    }
}

/// The port whose OUT exits with RIP already past it (`KVM_X86_QUIRK_OUT_7E_INC_RIP`).
const PORT_0X7E_QUIRK: u16 = 0x7e;

/// The vCPU inside a window, as exit handlers get it: its state, its current VMCS (where the
/// guest's registers live until the window ends), its `kvm_run`, and the window's host side.
pub(crate) struct LiveVcpu<'a, 'c> {
    pub(crate) cur: &'a Current<'c>,
    pub(crate) st: &'a mut VcpuState,
    pub(crate) run: &'a KvmRun,
    pub(crate) cpu: u32,
    /// What rvmx switches of the FPU state.
    features: &'a Features,
    /// The host's debug registers, saved for this window.
    host_debug: &'a HostDebug,
    /// Userspace's `request_interrupt_window`.
    want_irq_window: bool,
    /// Set when a handler emulated the exiting instruction (moved RIP past it).
    pub(crate) skipped: bool,
}

impl<'a, 'c> LiveVcpu<'a, 'c> {
    pub(crate) fn new(
        cur: &'a Current<'c>,
        st: &'a mut VcpuState,
        run: &'a KvmRun,
        cpu: u32,
        features: &'a Features,
        host_debug: &'a HostDebug,
        want_irq_window: bool,
    ) -> Self {
        Self { cur, st, run, cpu, features, host_debug, want_irq_window, skipped: false }
    }

    /// The guest's EFER changed what it can use of the switched MSRs without exits: the next
    /// window must lay the MSR lists out again (`MsrArea::load`).
    fn msr_lists_stale(&self) -> bool {
        self.st.msr_area.stale(self.st.msrs_in_cpu(self.cur.read(GUEST_IA32_EFER)))
    }

    /// Moves RIP past the exiting instruction (and drops any STI/MOV-SS interrupt shadow),
    /// as the processor retires it: with the guest's own RFLAGS.TF, a single-step #DB follows.
    #[inline]
    fn skip_instruction(&mut self) {
        let rip = self.cur.read(GUEST_RIP);
        let len = self.cur.read(EXIT_INSTRUCTION_LEN) as u64;
        self.cur.write(GUEST_RIP, rip.wrapping_add(len));
        let shadow = self.cur.read(GUEST_INTERRUPTIBILITY);
        if shadow & (block::STI | block::MOV_SS) != 0 {
            self.cur.write(GUEST_INTERRUPTIBILITY, shadow & !(block::STI | block::MOV_SS));
        }
        self.skipped = true;
        if !self.st.debugger.single_step() && self.cur.read(GUEST_RFLAGS) & rflags::TF != 0 {
            let pending = self.cur.read(GUEST_PENDING_DBG_EXCEPTIONS);
            self.cur.write(GUEST_PENDING_DBG_EXCEPTIONS, pending | crate::logic::guest_debug::DR6_BS);
        }
    }

    /// Raises #UD: delivered at the next entry, like every event (`Windows::arm`).
    fn inject_ud(&mut self) {
        self.st.events.exception = Some(Exception::raise(vector::UD, None));
    }

    /// Whether the guest runs 64-bit code (CS.L in IA-32e mode, KVM's `is_64_bit_mode`), where
    /// registers are not truncated to 32 bits.
    fn long64(&self) -> bool {
        guest_state::long64(self.cur)
    }

    /// Current privilege level (SS.DPL, as VMX keeps it).
    fn cpl(&self) -> u32 {
        seg_ar::DPL.get(self.cur.read(GUEST_SS_AR).into()) as u32
    }

    fn xsave_allowed(&self) -> bool {
        crate::logic::cpuid_table::xsave_allowed(&self.st.cpuid, self.features.xcr0)
    }

    /// Raises #GP(0).
    fn inject_gp0(&mut self) {
        self.st.events.exception = Some(Exception::gp0(self.cur.read(GUEST_CR0) & cr0::PE != 0));
    }

    /// Reports an exit reason rvmx does not handle, as KVM does.
    fn unexpected(&self, full_reason: u32) -> Next {
        self.run.internal_error(internal_error::UNEXPECTED_EXIT_REASON, &[full_reason as u64, self.cpu as u64]);
        Next::ToUser
    }

    /// Delivers a #DB to the guest whose DR6 bits are `payload` (as an exit qualification
    /// gives them): DR6 updated as the processor would (KVM's payload rule), DR7.GD cleared.
    fn deliver_db(&mut self, payload: u64) {
        use crate::logic::guest_debug::dr6_after_db;
        debugregs::set_dr6(&mut self.st.debug, dr6_after_db(debugregs::dr6(), payload));
        self.st.debug.dr7 &= !dr::DR7_GD;
        // From the VMCS: with a debugger's breakpoints in force it holds the debugger's DR7.
        self.cur.write(GUEST_DR7, self.cur.read(GUEST_DR7) & !dr::DR7_GD);
        self.st.events.exception = Some(Exception::raise(vector::DB, None));
    }

    /// General-purpose register `n` as the exit qualification numbers them.
    fn gpr(&self, n: u8) -> u64 {
        let g = &self.st.gprs;
        match n {
            0 => g.rax, 1 => g.rcx, 2 => g.rdx, 3 => g.rbx,
            4 => self.cur.read(GUEST_RSP),
            5 => g.rbp, 6 => g.rsi, 7 => g.rdi, 8 => g.r8, 9 => g.r9, 10 => g.r10, 11 => g.r11,
            12 => g.r12, 13 => g.r13, 14 => g.r14, _ => g.r15,
        }
    }

    /// Sets general-purpose register `n` (numbered as [`Exit::gpr`]).
    fn set_gpr(&mut self, n: u8, value: u64) {
        let g = &mut self.st.gprs;
        let r = match n {
            0 => &mut g.rax, 1 => &mut g.rcx, 2 => &mut g.rdx, 3 => &mut g.rbx,
            4 => {
                self.cur.write(GUEST_RSP, value);
                return;
            }
            5 => &mut g.rbp, 6 => &mut g.rsi, 7 => &mut g.rdi, 8 => &mut g.r8, 9 => &mut g.r9,
            10 => &mut g.r10, 11 => &mut g.r11, 12 => &mut g.r12, 13 => &mut g.r13, 14 => &mut g.r14,
            _ => &mut g.r15,
        };
        *r = value;
    }
}

/// RDMSR: EDX:EAX from the guest's MSR where the MSR filter allows it; else, or if the guest
/// has no such MSR, #GP or (as userspace asked) `KVM_EXIT_X86_RDMSR`.
fn rdmsr(v: &mut LiveVcpu<'_, '_>) -> Next {
    // Settings changed meanwhile (the filter, the MSR exits): the RDMSR runs again with them.
    if v.st.settings_stale() {
        return Next::Host;
    }
    let msr = v.st.gprs.rcx as u32;
    if !v.st.msr_allowed(msr, msr_filter::FILTER_READ) {
        return msr_failed(v, false, msr, 0, msr_filter::reason::FILTER);
    }
    match v.st.msr_state(Some(v.cur)).read(msr) {
        Some(value) => {
            v.st.gprs.rax = value & 0xffff_ffff;
            v.st.gprs.rdx = value >> 32;
            v.skip_instruction();
            Next::Reenter
        }
        None => {
            let why = msr_failure(v, msr, false);
            msr_failed(v, false, msr, 0, why)
        }
    }
}

/// WRMSR: EDX:EAX into the guest's MSR where the filter allows it; else, or for an MSR the
/// guest does not have or a value it refuses, #GP or `KVM_EXIT_X86_WRMSR`.
fn wrmsr(v: &mut LiveVcpu<'_, '_>) -> Next {
    if v.st.settings_stale() {
        return Next::Host;
    }
    let value = (v.st.gprs.rdx << 32) | (v.st.gprs.rax & 0xffff_ffff);
    let msr = v.st.gprs.rcx as u32;
    if !v.st.msr_allowed(msr, msr_filter::FILTER_WRITE) {
        return msr_failed(v, true, msr, value, msr_filter::reason::FILTER);
    }
    if v.st.msr_state(Some(v.cur)).write(msr, value).is_err() {
        let why = msr_failure(v, msr, true);
        return msr_failed(v, true, msr, value, why);
    }
    v.skip_instruction();
    // A kvmclock page or the steal time to write first: that is done outside the window
    // (run/pvclock.rs, run/steal_time.rs); a new EFER may call for other MSRs in the CPU.
    if v.st.kvmclock.has_work() || v.st.steal.update || (msr == crate::logic::arch::msr::EFER && v.msr_lists_stale()) { Next::Host } else { Next::Reenter }
}

/// Why the kernel refused an access to `msr` (`write`), as KVM's INVAL (the MSR exists but
/// refused the access or the value) or UNKNOWN: the command MSRs exist for writes, the x2APIC
/// range always; a guest's write to ARCH_CAPABILITIES and a kvmclock MSR held to a missing
/// PV feature are unknown; otherwise an MSR exists where userspace could read it.
fn msr_failure(v: &mut LiveVcpu<'_, '_>, msr: u32, write: bool) -> u32 {
    use crate::logic::arch::msr::{ARCH_CAPABILITIES, FLUSH_CMD, PRED_CMD, X2APIC_FIRST, X2APIC_LAST};
    let mut m = v.st.msr_state(Some(v.cur));
    let exists = match msr {
        PRED_CMD | FLUSH_CMD => write,
        X2APIC_FIRST..=X2APIC_LAST => true,
        ARCH_CAPABILITIES if write => false,
        // A kvmclock MSR whose PV feature the guest lacks (enforced): unknown to KVM.
        _ if m.pv_msr_missing(msr) => false,
        _ => {
            m.host = true;
            m.read(msr).is_some()
        }
    };
    if exists { msr_filter::reason::INVAL } else { msr_filter::reason::UNKNOWN }
}

/// An MSR access the kernel did not do, for `why`: to userspace if it asked for such
/// failures (`KVM_CAP_X86_USER_SPACE_MSR`), else #GP.
fn msr_failed(v: &mut LiveVcpu<'_, '_>, write: bool, index: u32, data: u64, why: u32) -> Next {
    if v.st.vm.user_space_msr & why == 0 {
        v.inject_gp0();
        return Next::Reenter;
    }
    let len = v.cur.read(EXIT_INSTRUCTION_LEN) as u8;
    Next::Finish(Deferred::UserMsr { write, index, data, why, len })
}

/// Dispatches one VM exit; `full` is its EXIT_REASON field.
pub(crate) fn handle(v: &mut LiveVcpu<'_, '_>, full: u32) -> Next {
    if full & vmx_exit::ENTRY_FAILURE != 0 {
        if full as u16 == reason::ENTRY_FAIL_MACHINE_CHECK {
            // The machine check hit the entry: the host's handler must see it (KVM).
            crate::host::x86::machine_check();
        }
        crate::vmx::guest_state::dump_failed_entry(v.cur, full as u64);
        v.run.fail_entry(full as u64, v.cpu);
        return Next::ToUser;
    }
    match full as u16 {
        reason::EXCEPTION_NMI if vmx_exit::is_nmi(v.cur.read(EXIT_INTR_INFO)) => {
            // A host NMI arrived while the guest ran: hand it to the host's handler now.
            // SAFETY: interrupts off, right after the exit that reported the NMI.
            unsafe { crate::host::x86::host_nmi() };
            Next::Reenter
        }
        reason::EXCEPTION_NMI => exception(v),
        // The host's turn: an interrupt is pending, or the window used up its time budget.
        reason::EXTERNAL_INTERRUPT | reason::PREEMPTION_TIMER => Next::Host,
        // The guest lowered its TPR below a held-back interrupt's class (TPR shadow): taken
        // (synced) already; the next entry injects it.
        reason::TPR_BELOW_THRESHOLD => Next::Reenter,
        reason::INTERRUPT_WINDOW => interrupt_window(v),
        // The guest can take an NMI: injected at the re-entry.
        reason::NMI_WINDOW => Next::Reenter,
        reason::TRIPLE_FAULT => {
            v.run.set_exit_reason(exit_reason::SHUTDOWN);
            Next::ToUser
        }
        reason::CPUID => cpuid(v),
        reason::HLT => hlt(v),
        reason::VMCALL => vmcall(v),
        // INVD would throw away the host's dirty cache lines, WBINVD flush them all: both
        // are NOPs, as on KVM without non-coherent DMA.
        reason::INVD | reason::WBINVD => {
            v.skip_instruction();
            Next::Reenter
        }
        // MONITOR/MWAIT would put the host's CPU to sleep: NOPs, or #UD where the guest does
        // not have them and KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS is off (KVM).
        reason::MONITOR | reason::MWAIT => {
            if v.st.mwait_allowed() {
                v.skip_instruction();
            } else {
                v.inject_ud();
            }
            Next::Reenter
        }
        // No PMU for guests: the host's counters stay the host's (KVM without a vPMU).
        reason::RDPMC => {
            v.inject_gp0();
            Next::Reenter
        }
        // No SGX for guests (KVM's handle_encls without SGX); RDRAND and RDSEED exit only
        // when the guest's CPUID does not list them (KVM's kvm_handle_invalid_op); no
        // nested VMX.
        reason::ENCLS | reason::RDRAND | reason::RDSEED => {
            v.inject_ud();
            Next::Reenter
        }
        r if vmx_exit::is_vmx_instruction(r) => {
            v.inject_ud();
            Next::Reenter
        }
        reason::IO => io(v),
        reason::CR_ACCESS => cr_access(v, full),
        reason::MOV_DR => mov_dr(v),
        reason::XSETBV => xsetbv(v),
        reason::EPT_MISCONFIG => Next::Finish(Deferred::EptMisconfig { gpa: v.cur.read(GUEST_PHYSICAL_ADDRESS) }),
        reason::RDMSR => rdmsr(v),
        reason::WRMSR => wrmsr(v),
        reason::EPT_VIOLATION => {
            let qualification = v.cur.read(EXIT_QUALIFICATION) as u32; // bits 63:32 are reserved
            let translated = crate::logic::ept_bits::violation::translated_linear(qualification.into());
            Next::Finish(Deferred::EptFault {
                gpa: v.cur.read(GUEST_PHYSICAL_ADDRESS),
                qualification,
                linear: if translated { v.cur.read(GUEST_LINEAR_ADDRESS) } else { 0 },
                vectoring: v.cur.read(IDT_VECTORING_INFO),
                cpu: v.cpu,
            })
        }
        _ => v.unexpected(full),
    }
}

/// The guest can take an interrupt: the queued one is injected at the re-entry; with none
/// queued, userspace asked to be told (`KVM_EXIT_IRQ_WINDOW_OPEN`).
fn interrupt_window(v: &mut LiveVcpu<'_, '_>) -> Next {
    let apic_ready = v.st.apic.as_ref().is_none_or(|a| a.accepts_extint() && !a.has_interrupt());
    if v.st.events.interrupt.is_none() && v.want_irq_window && !v.st.events.needs_reinjection() && apic_ready {
        v.run.set_exit_reason(exit_reason::IRQ_WINDOW_OPEN);
        return Next::ToUser;
    }
    Next::Reenter
}

/// CPUID: from the vCPU's table (`KVM_SET_CPUID2`), as KVM answers (`guest_cpuid_with`);
/// #GP outside ring 0 when the guest turned CPUID faulting on.
fn cpuid(v: &mut LiveVcpu<'_, '_>) -> Next {
    if v.st.msrs.misc_features & msr_rules::MISC_FEATURES_CPUID_FAULT != 0 && v.cpl() != 0 {
        v.inject_gp0();
        return Next::Reenter;
    }
    let rt = || v.st.cpuid_runtime_bits(v.cur.read(CR4_READ_SHADOW));
    let (features, xcr0) = (v.features, v.st.fpu.xcr0);
    let sizes = || (features.xsave_size(xcr0), features.xsave_compacted_size(xcr0));
    let (leaf, subleaf) = (v.st.gprs.rax as u32, v.st.gprs.rcx as u32);
    let [a, b, c, d] = crate::logic::cpuid_table::guest_cpuid_with(&v.st.cpuid, leaf, subleaf, rt, sizes);
    v.st.gprs.rax = a as u64;
    v.st.gprs.rbx = b as u64;
    v.st.gprs.rcx = c as u64;
    v.st.gprs.rdx = d as u64;
    v.skip_instruction();
    Next::Reenter
}

/// VMCALL: KVM's hypercalls, answered as KVM answers them without an in-kernel irqchip
/// ([`hypercall::answer`]), in 32 bits unless the guest is in 64-bit mode (CS.L).
fn vmcall(v: &mut LiveVcpu<'_, '_>) -> Next {
    let g = &v.st.gprs;
    let call = hypercall::Call { nr: g.rax, args: [g.rbx, g.rcx, g.rdx, g.rsi] };
    v.st.gprs.rax = hypercall::answer(call, v.cpl(), v.long64(), v.st.enforced_pv_features());
    v.skip_instruction();
    Next::Reenter
}

/// An exception the exception bitmap intercepted: #DB and #BP for a userspace debugger
/// (`KVM_EXIT_DEBUG`), or #DB and #AC handed back to the guest (they are intercepted so
/// that a guest cannot make the processor deliver them in an endless loop).
fn exception(v: &mut LiveVcpu<'_, '_>) -> Next {
    use crate::logic::guest_debug::DR6_ACTIVE_LOW;
    let intr = v.cur.read(EXIT_INTR_INFO);
    let pc = linear_rip(v.cur);
    match info::VECTOR.get(intr.into()) as u8 {
        vector::DB if v.st.debugger.takes_db() => {
            let dr6 = v.cur.read(EXIT_QUALIFICATION) | DR6_ACTIVE_LOW;
            v.run.debug(vector::DB.into(), pc, dr6, v.cur.read(GUEST_DR7));
            Next::ToUser
        }
        vector::DB => {
            // INT1 (ICEBP) is a trap: the #DB comes after it.
            if info::TYPE.get(intr.into()) == info::PRIV_SOFT_EXCEPTION.into() {
                v.skip_instruction();
                v.skipped = false;
            }
            v.deliver_db(v.cur.read(EXIT_QUALIFICATION));
            Next::Reenter
        }
        vector::BP => {
            v.run.debug(vector::BP.into(), pc, 0, 0);
            Next::ToUser
        }
        // A machine check while the guest ran is the host's (KVM's kvm_machine_check):
        // its handler runs now, interrupts still off; the guest resumes.
        vector::MC => {
            crate::host::x86::machine_check();
            Next::Reenter
        }
        // The instruction is read from guest memory after the window.
        vector::UD => Next::Finish(Deferred::InvalidOpcode),
        vector::AC => {
            let code = v.cur.read(EXIT_INTR_ERROR_CODE);
            v.st.events.exception = Some(Exception::raise(vector::AC, Some(code)));
            Next::Reenter
        }
        _ => v.unexpected(v.cur.read(EXIT_REASON)),
    }
}

/// MOV to or from a debug register, emulated on the guest's copies (see [`debugregs`]),
/// with the architectural checks: #GP at CPL > 0, DR4/DR5 aliases (#UD with CR4.DE),
/// DR7.GD (#DB with DR6.BD), #GP for bits 63:32 of DR6/DR7.
fn mov_dr(v: &mut LiveVcpu<'_, '_>) -> Next {
    let q = DrAccess::decode(v.cur.read(EXIT_QUALIFICATION));
    if v.cpl() != 0 {
        v.inject_gp0();
        return Next::Reenter;
    }
    let n = match q.dr {
        4 | 5 if v.cur.read(GUEST_CR4) & cr4::DE != 0 => {
            v.inject_ud();
            return Next::Reenter;
        }
        4 => 6,
        5 => 7,
        n => n,
    };
    if v.st.debug.dr7 & dr::DR7_GD != 0 {
        v.deliver_db(dr::DR6_BD);
        return Next::Reenter;
    }
    if q.read {
        let value = match n {
            0..=3 => v.st.debug.db.get(n as usize).copied().unwrap_or(0),
            6 => debugregs::dr6(),
            _ => v.st.debug.dr7,
        };
        v.set_gpr(q.gpr, value);
        v.skip_instruction();
        return Next::Reenter;
    }
    let value = if v.long64() { v.gpr(q.gpr) } else { v.gpr(q.gpr) & 0xffff_ffff };
    match n {
        // With a debugger's hardware breakpoints in force, the guest's are only recorded.
        0..=3 if v.st.debugger.hw_breakpoints() => {
            if let Some(db) = v.st.debug.db.get_mut(n as usize) {
                *db = value;
            }
        }
        0..=3 => debugregs::set_db(&mut v.st.debug, v.host_debug, n as usize, value),
        6 => match dr::dr6(value) {
            Some(value) => debugregs::set_dr6(&mut v.st.debug, value),
            None => {
                v.inject_gp0();
                return Next::Reenter;
            }
        },
        _ => match dr::dr7(value) {
            Some(value) if v.st.debugger.hw_breakpoints() => v.st.debug.dr7 = value,
            Some(value) => {
                v.st.debug.dr7 = value;
                v.cur.write(GUEST_DR7, value);
                if v.st.debug.armed() != v.host_debug.guest_db_loaded() {
                    // The guest's DR0-3 must come into (or leave) the hardware: a new window.
                    v.skip_instruction();
                    return Next::Host;
                }
            }
            None => {
                v.inject_gp0();
                return Next::Reenter;
            }
        },
    }
    v.skip_instruction();
    Next::Reenter
}

/// HLT: with an in-kernel APIC the vCPU halts in the kernel until an event wakes it (the
/// run loop sleeps); without one, userspace's APIC does that (`KVM_EXIT_HLT`). A debugger's
/// single step over it reports the step and does not halt (KVM).
fn hlt(v: &mut LiveVcpu<'_, '_>) -> Next {
    v.skip_instruction();
    let stepping = v.st.debugger.single_step();
    match v.st.apic.as_mut() {
        Some(a) => {
            if !stepping {
                a.halt();
            }
            Next::Host
        }
        None => {
            v.run.set_exit_reason(exit_reason::HLT);
            Next::ToUser
        }
    }
}

/// XSETBV: the guest's XCR0, checked as KVM's `__kvm_set_xcr` (only XCR0, at CPL 0, a
/// valid combination of what the guest's CPUID lists and rvmx switches; else #GP), and
/// loaded into the hardware at once: it stays the guest's until the window ends.
fn xsetbv(v: &mut LiveVcpu<'_, '_>) -> Next {
    if !v.xsave_allowed() {
        // CR4.OSXSAVE cannot be on: XSETBV would have been #UD before exiting.
        v.inject_ud();
        return Next::Reenter;
    }
    let value = (v.st.gprs.rdx << 32) | (v.st.gprs.rax & 0xffff_ffff);
    let allowed = crate::logic::cpuid_table::xcr0_allowed(&v.st.cpuid, v.features.xcr0);
    if v.st.gprs.rcx as u32 != 0 || v.cpl() != 0 || !xstate::xcr0_valid(value, allowed) {
        v.inject_gp0();
        return Next::Reenter;
    }
    // SAFETY: interrupts are off in this window, inside its KernelFpu; `value` is a valid
    // XCR0 within the host's; the window puts the host's back before it ends.
    unsafe { crate::host::x86::xsetbv0(value) };
    v.st.fpu.xcr0 = value;
    v.skip_instruction();
    Next::Reenter
}

/// MOV to CR0 (every bit but TS/WP is rvmx's), LMSW, or MOV to CR4.VMXE: emulated, with
/// the architectural #GP checks and the long-mode switch the processor would have done.
/// (CLTS and MOV from CR0/CR4 only touch guest-owned bits or shadows: they never exit.)
fn cr_access(v: &mut LiveVcpu<'_, '_>, full: u32) -> Next {
    let q = CrAccess::decode(v.cur.read(EXIT_QUALIFICATION));
    if q.cr == 8 {
        return cr8(v, q, full);
    }
    let value = match (q.kind, q.cr) {
        (cr_kind::MOV_TO, 0) => cr0::written(v.gpr(q.gpr)) | (v.gpr(q.gpr) & !0xffff_ffff),
        (cr_kind::MOV_TO, _) => v.gpr(q.gpr),
        // LMSW loads CR0's PE, MP, EM and TS but cannot clear PE.
        (cr_kind::LMSW, 0) => {
            let old = guest_cr0(v.cur);
            cr0::written((old & !(cr0::LMSW & !cr0::PE)) | (q.lmsw_data as u64 & cr0::LMSW))
        }
        _ => return v.unexpected(full),
    };
    let (old0, old4) = (guest_cr0(v.cur), v.cur.read(CR4_READ_SHADOW));
    let done = match q.cr {
        0 => set_cr0(v, value),
        4 => set_cr4(v, value),
        _ => return v.unexpected(full),
    };
    match done {
        Some(true) => v.skip_instruction(),
        Some(false) => {
            v.inject_gp0();
            return Next::Reenter;
        }
        None => {
            let len = v.cur.read(EXIT_INSTRUCTION_LEN) as u8;
            let (cr0, cr4) = if q.cr == 0 { (value, old4) } else { (old0, value) };
            return Next::Finish(Deferred::PaePaging { cr0, cr4, len });
        }
    }
    // The processor would have flushed the guest's TLB (clearing CR0.PG, changing a
    // paging bit of CR4): the next window's INVEPT does, for this VPID too.
    let flush = if q.cr == 0 { old0 & !value & cr0::PG != 0 } else { (old4 ^ value) & cr4::TLB_FLUSH != 0 };
    // Entering or leaving long mode may call for other MSRs in the CPU.
    if flush || (q.cr == 0 && v.msr_lists_stale()) { Next::Host } else { Next::Reenter }
}

/// MOV to or from CR8 (the task-priority register): the in-kernel local APIC's TPR, or
/// without one the guest's SREGS, as KVM keeps it. Bits 7:4 of the new value set are #GP
/// (higher bits are ignored, as KVM does); without an in-kernel APIC lowering it exits to
/// userspace with `KVM_EXIT_SET_TPR`, so a userspace APIC can deliver what the old priority
/// held back.
fn cr8(v: &mut LiveVcpu<'_, '_>, q: CrAccess, full: u32) -> Next {
    match q.kind {
        cr_kind::MOV_FROM => {
            let value = v.st.apic.as_ref().map_or(v.st.sregs.cr8(), |a| a.cr8());
            v.set_gpr(q.gpr, value);
            v.skip_instruction();
            Next::Reenter
        }
        cr_kind::MOV_TO => {
            let value = v.gpr(q.gpr) as u8 as u64;
            if value & !CR8_TPR != 0 {
                v.inject_gp0();
                return Next::Reenter;
            }
            let old = v.st.sregs.cr8();
            v.st.sregs.set_cr8(value);
            v.skip_instruction();
            if let Some(a) = v.st.apic.as_mut() {
                a.set_cr8(value);
                return Next::Reenter;
            }
            if value < old {
                v.run.set_exit_reason(exit_reason::SET_TPR);
                return Next::ToUser;
            }
            Next::Reenter
        }
        _ => v.unexpected(full),
    }
}

/// MOV to CR0: `Some(false)` for #GP, `None` if it turns on PAE paging outside long mode
/// (finished outside the window, where guest memory can be read).
fn set_cr0(v: &mut LiveVcpu<'_, '_>, value: u64) -> Option<bool> {
    if value >> 32 != 0 || (value & cr0::PG != 0 && value & cr0::PE == 0) || (value & cr0::NW != 0 && value & cr0::CD == 0) {
        return Some(false);
    }
    let old = guest_cr0(v.cur);
    let code64 = v.long64();
    // Paging cannot be turned on with CS.L set (KVM reads the bit itself: there is no 64-bit
    // mode yet) nor off in 64-bit mode or with PCIDE (KVM's checks).
    let lme = v.cur.read(GUEST_IA32_EFER) & efer::LME != 0;
    let cs_l = v.cur.read(GUEST_CS_AR) & seg_ar::L != 0;
    if (value & cr0::PG != 0 && old & cr0::PG == 0 && lme && cs_l)
        || (value & cr0::PG == 0 && (code64 || v.cur.read(CR4_READ_SHADOW) & cr4::PCIDE != 0))
    {
        return Some(false);
    }
    let cr4 = v.cur.read(GUEST_CR4);
    let mut guest_efer = v.cur.read(GUEST_IA32_EFER);
    let mut entry = v.cur.read(ENTRY_CONTROLS);
    let paging_on = value & cr0::PG != 0 && old & cr0::PG == 0;
    if paging_on && guest_efer & efer::LME != 0 {
        if cr4 & cr4::PAE == 0 {
            return Some(false);
        }
        guest_efer |= efer::LMA;
        entry |= ENTRY_IA32E;
    } else if paging_on && cr4 & cr4::PAE != 0 {
        return None;
    } else if value & cr0::PG == 0 && old & cr0::PG != 0 && guest_efer & efer::LMA != 0 {
        guest_efer &= !efer::LMA;
        entry &= !ENTRY_IA32E;
    }
    v.cur.write(GUEST_IA32_EFER, guest_efer);
    v.cur.write(ENTRY_CONTROLS, entry);
    v.cur.write(GUEST_CR0, real_cr0(value));
    v.cur.write(CR0_READ_SHADOW, value);
    Some(true)
}

/// MOV to CR4 (every bit the guest does not own exits): `Some(false)` for #GP, as KVM's
/// `kvm_set_cr4`: a bit the guest may not set, PAE off in long mode, PCIDE turned on
/// outside long mode or with CR3[11:0] non-zero. `None` if PAE paging outside long mode
/// needs its PDPTEs reloaded (finished outside the window).
fn set_cr4(v: &mut LiveVcpu<'_, '_>, value: u64) -> Option<bool> {
    let long = v.cur.read(GUEST_IA32_EFER) & efer::LMA != 0;
    let old = v.cur.read(CR4_READ_SHADOW);
    if value & !v.st.allowed.cr4 != 0 || (long && value & cr4::PAE == 0) {
        return Some(false);
    }
    if value & cr4::PCIDE != 0 && old & cr4::PCIDE == 0 && (!long || v.cur.read(GUEST_CR3) & CR3_PCID != 0) {
        return Some(false);
    }
    let paging = guest_cr0(v.cur) & cr0::PG != 0;
    if !long && paging && value & cr4::PAE != 0 && (value ^ old) & cr4::PDPTR_RELOAD != 0 {
        return None;
    }
    v.cur.write(GUEST_CR4, value | CR4_HOST_OWNED);
    v.cur.write(CR4_READ_SHADOW, value);
    Some(true)
}

/// IN/OUT: to userspace through the PIO data page. RIP moves past the instruction once
/// userspace has done the access, at the next `KVM_RUN` (as KVM's fast PIO does); an OUT an
/// ioeventfd takes is done at once ([`finish`]).
fn io(v: &mut LiveVcpu<'_, '_>) -> Next {
    let io = Io::decode(v.cur.read(EXIT_QUALIFICATION));
    let len = v.cur.read(EXIT_INSTRUCTION_LEN) as u8;
    if io.string {
        return Next::Finish(Deferred::StringIo { io, len });
    }
    let at = guest_state::code_base(v.cur);
    if io.input {
        return Next::Finish(Deferred::PortIn { port: io.port, size: io.size, len, at });
    }
    let value = v.st.gprs.rax & crate::logic::insn::mask(io.size);
    Next::Finish(Deferred::PortOut { port: io.port, size: io.size, value, len, at })
}


/// The second half of an exit, after the window closed. `Some` if `KVM_RUN` returns now.
// Out of line: its stack frame exists only while it runs, not under every KVM_RUN.
#[inline(never)]
pub(crate) fn finish(d: Deferred, rs: &mut RunState, run: &KvmRun, vm: &Vm, stats: &VcpuStats) -> Option<Result<isize>> {
    let st = &mut rs.vcpu;
    match d {
        d @ Deferred::EptFault { .. } => ept_fault(d, rs, run, vm, stats),
        Deferred::PortIn { port, size, len, at } => {
            st.pending = Some(Pending::PortIn { size, len, rip: at.linear(st.regs.rip), at });
            // An in-kernel device's answer goes where userspace's would (the PIO data page,
            // as KVM's pio_data) and the IN completes here.
            if let Some(v) = vm.port_read(port, size.into()) {
                let bytes = v.to_le_bytes();
                run.write_pio_data(bytes.get(..usize::from(size)).unwrap_or(&bytes));
                return complete::complete(st, run, vm);
            }
            run.io(true, size, port, 1);
            Some(Ok(0))
        }
        Deferred::PortOut { port, size, value, len, at } => {
            let rip = at.linear(st.regs.rip);
            if vm.io_write(Bus::Pio, port as u64, size as u32, value) {
                // An ioeventfd or a coalesced zone took it: the OUT completes here, as userspace
                // would have.
                st.pending = Some(Pending::PortOut { len, rip, at });
                return complete::complete(st, run, vm);
            }
            let bytes = value.to_le_bytes();
            run.write_pio_data(bytes.get(..usize::from(size)).unwrap_or(&bytes));
            run.io(false, size, port, 1);
            if port == PORT_0X7E_QUIRK && vm.has_quirk(quirk::OUT_7E_INC_RIP) {
                // KVM_X86_QUIRK_OUT_7E_INC_RIP: RIP is past the OUT while userspace handles it
                // (old userspace relies on it); a debugger's step is reported instead, as KVM's
                // kvm_skip_emulated_instruction does, and the guest's own TF raises its #DB.
                st.skip(len);
                st.stepped(run);
            } else {
                st.pending = Some(Pending::PortOut { len, rip, at });
            }
            Some(Ok(0))
        }
        Deferred::EptMisconfig { gpa } => {
            let (level, entry) = vm.report_ept_misconfig(st.address_space(), gpa);
            let data = [reason::EPT_MISCONFIG as u64, gpa, level as u64, entry];
            run.internal_error(internal_error::UNEXPECTED_EXIT_REASON, &data);
            Some(Ok(0))
        }
        Deferred::UserMsr { write, index, data, why, len } => {
            run.msr(write, why, index, data);
            st.pending = Some(Pending::Msr { write, len });
            Some(Ok(0))
        }
        // RSM in SMM (KVM's em_rsm): a state that cannot be loaded shuts the vCPU down.
        Deferred::InvalidOpcode if st.smm.active && emulate::is_rsm(vm.memory(AddressSpace::Smm), &st.regs, st.sregs.get()) => {
            if smm::leave(st, vm) {
                return None;
            }
            run.set_exit_reason(exit_reason::SHUTDOWN);
            Some(Ok(0))
        }
        Deferred::InvalidOpcode => {
            let patch = vm.has_quirk(quirk::FIX_HYPERCALL_INSN);
            match emulate::fix_hypercall(vm.memory(st.address_space()), &st.regs, st.sregs.get(), patch) {
                // The guest runs the VMCALL now at the same RIP (RF cleared: the emulator's
                // writeback clears it).
                Ok(true) => st.regs.rflags &= !crate::logic::arch::rflags::RF,
                Ok(false) => st.events.exception = Some(Exception::raise(vector::UD, None)),
                Err(f) => st.raise(f),
            }
            None
        }
        Deferred::StringIo { io, len } => {
            let before = (st.regs.rip, st.regs.rcx);
            let mem = vm.memory(st.address_space());
            let local = st.apic.as_mut().map(|a| a as &mut dyn emulate::LocalMmio);
            let outcome = emulate::string_io(mem, &mut st.regs, st.sregs.get(), run, io, len, &mut st.emulated, local);
            emulated_end(st, before, outcome, run)
        }
        Deferred::PaePaging { cr0, cr4, len } => {
            // The PDPTEs must be valid and in guest RAM, or the MOV raises #GP(0).
            let new = Sregs { cr0, cr4, ..*st.sregs.get() };
            match emulate::pdptes(vm.memory(st.address_space()), &new) {
                Some(p) => {
                    let s = st.sregs.get_mut();
                    (s.cr0, s.cr4) = (cr0, cr4);
                    st.pdptes = Some(p);
                    st.skip(len);
                    if st.stepped(run) {
                        return Some(Ok(0));
                    }
                }
                None => st.events.exception = Some(Exception::raise(vector::GP, Some(0))),
            }
            None
        }
    }
}

/// An EPT fault, after the window: RAM is mapped; MMIO is emulated (the registers read back
/// first if the window did not).
// Out of line: its stack frame exists only while it runs, not under every KVM_RUN.
#[inline(never)]
fn ept_fault(d: Deferred, rs: &mut RunState, run: &KvmRun, vm: &Vm, stats: &VcpuStats) -> Option<Result<isize>> {
    let Deferred::EptFault { gpa, linear, qualification, vectoring, cpu } = d else { return None };
    let qualification = u64::from(qualification);
    let st = &mut rs.vcpu;
    let fault = match vm.fault_in(st.address_space(), gpa, qualification, &mut st.tables) {
        Ok(f) => f,
        Err(e) => return Some(Err(e)),
    };
    match fault {
        Fault::Mapped => {
            stats.ept_fault();
            None
        }
        // RAM the VMM's mapping cannot give (unmapped, or read-only for a write):
        // EFAULT with exit reason KVM_EXIT_UNKNOWN, as KVM answers on this host (it
        // fills in KVM_EXIT_MEMORY_FAULT only for private memory).
        Fault::HostFault => {
            run.set_exit_reason(exit_reason::UNKNOWN);
            Some(Err(EFAULT))
        }
        Fault::Interrupted => {
            run.set_exit_reason(exit_reason::INTR);
            Some(Err(EINTR))
        }
        // Delivering an event touched MMIO (an IDT or stack outside RAM): no
        // instruction to emulate, KVM's KVM_INTERNAL_ERROR_DELIVERY_EV.
        Fault::Mmio(..) if vectoring & events::info::VALID != 0 => {
            let data = [vectoring as u64, reason::EPT_VIOLATION as u64, qualification, gpa, cpu as u64];
            run.internal_error(internal_error::DELIVERY_EV, &data);
            Some(Ok(0))
        }
        // No RAM behind it (or a write to a read-only slot): MMIO.
        Fault::Mmio(mem, slots_gen) => {
            st.mmio_page = gpa & !0xfff;
            // Usually read as the window closed (the fault was on the last MMIO page).
            if rs.vcpu.sregs.stale_for_emulation() {
                if let Err(e) = rs.sync_sregs() {
                    return Some(Err(e));
                }
            }
            let st = &mut rs.vcpu;
            let before = (st.regs.rip, st.regs.rcx);
            let local = st.apic.as_mut().map(|a| a as &mut dyn emulate::LocalMmio);
            let outcome = emulate::mmio(mem, &mut st.regs, st.sregs.for_emulation(), run, emulate::EptAccess { gpa, qualification, linear, slots_gen }, &mut st.emulated, local);
            emulated_end(st, before, outcome, run)
        }
    }
}

/// After an instruction emulated from registers `before` (RIP, rCX): `Some` if `KVM_RUN`
/// returns (an exit, or a single step done), `None` if the guest runs on. An STI or MOV SS
/// shadow ends once the instruction did something (RIP moved, or a REP iteration counted rCX
/// down), as KVM's writeback ends it.
fn emulated_end(st: &mut VcpuState, before: (u64, u64), outcome: emulate::Outcome, run: &KvmRun) -> Option<Result<isize>> {
    st.emulated_progress(before);
    match outcome {
        emulate::Outcome::Exit(pending) => {
            st.pending = pending.map(Pending::Emulated);
            Some(Ok(0))
        }
        // An ioeventfd took the write: the instruction is done.
        emulate::Outcome::Done if st.stepped(run) => Some(Ok(0)),
        emulate::Outcome::Done => None,
        emulate::Outcome::Fault(f) => {
            st.raise(f);
            None
        }
        emulate::Outcome::Failed(f) => st.emulation_failed().then(|| {
            f.report(run);
            Ok(0)
        }),
    }
}
