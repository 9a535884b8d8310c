// SPDX-License-Identifier: GPL-2.0

//! VM-exit dispatch: one `match` on the exit reason. Exits that the kernel handles are dealt
//! with inside the interrupts-off window and the guest re-entered at once; the rest leave the
//! window, either to do sleeping work (faulting in guest memory) or to return to userspace
//! with `kvm_run` filled in, exactly as KVM fills it.

use core::arch::asm;

use crate::{
    cpu::debugregs::{self, GuestDebug, HostDebug},
    vmx::entry::Gprs,
    logic::events::{vector, Exception},
    vmx::guest_state::{guest_cr0, real_cr0, CR4_HOST_OWNED, ENTRY_IA32E},
    logic::vcpu_state::{cr0, cr4, dr, efer, CR4_OSXSAVE, CR4_PAE},
    run::vcpu_run::{KvmRun, PendingIo},
    vmx::vmcs::Current,
    logic::vmcs_fields::*,
    logic::vmx_exit::{self, reason, CrAccess, DrAccess, Io},
    logic::xstate,
};

/// `KVM_EXIT_*` codes (`<linux/kvm.h>`).
#[allow(missing_docs)]
pub(crate) mod kvm_exit {
    pub(crate) const UNKNOWN: u32 = 0;
    pub(crate) const IO: u32 = 2;
    pub(crate) const DEBUG: u32 = 4;
    pub(crate) const HLT: u32 = 5;
    pub(crate) const MMIO: u32 = 6;
    pub(crate) const SHUTDOWN: u32 = 8;
    pub(crate) const FAIL_ENTRY: u32 = 9;
    pub(crate) const IRQ_WINDOW_OPEN: u32 = 7;
    pub(crate) const INTR: u32 = 10;
    pub(crate) const SET_TPR: u32 = 11;
    pub(crate) const INTERNAL_ERROR: u32 = 17;
}

/// `KVM_INTERNAL_ERROR_*` suberrors.
pub(crate) mod internal {
    /// The instruction could not be emulated.
    pub(crate) const EMULATION: u32 = 1;
    /// An event's delivery (IDT, stack) touched MMIO, which cannot be emulated.
    pub(crate) const DELIVERY_EV: u32 = 3;
    /// An exit reason rvmx does not handle.
    pub(crate) const UNEXPECTED_EXIT_REASON: u32 = 4;
}

/// What to do after an exit.
pub(crate) enum Next {
    /// Handled: enter the guest again, still inside the window.
    Reenter,
    /// Leave the window; `kvm_run` is filled in: return to userspace.
    ToUser,
    /// Leave the window so the host can take an interrupt, then come back.
    Host,
    /// Leave the window and fault in guest-physical page `gpa` (may sleep).
    /// `vectoring` is the IDT-vectoring information: an event whose delivery hit `gpa`.
    EptFault { gpa: u64, qualification: u64, vectoring: u32, cpu: u32 },
    /// Leave the window and emulate INS/OUTS (`len` bytes long) with guest memory.
    StringIo { io: Io, len: u8 },
    /// Leave the window to finish a MOV to CR0 (or LMSW) or CR4 of `len` bytes that turns
    /// on PAE paging outside long mode, or changes its paging bits: the PDPTEs come from
    /// guest memory.
    PaePaging { cr0: u64, cr4: u64, len: u8 },
    /// Leave the window with an OUT of `size` bytes of `value` to `port` that `kvm_run`
    /// already describes: an ioeventfd may take it, else it goes to userspace.
    PortOut { port: u16, size: u8, value: u64 },
    /// Leave the window and report an EPT misconfiguration at `gpa` (a bug in rvmx's tables:
    /// it never writes such entries).
    EptMisconfig { gpa: u64 },
}

/// The state an exit handler works on.
pub(crate) struct Exit<'a, 'b> {
    pub(crate) cur: &'a Current<'b>,
    pub(crate) gprs: &'a mut Gprs,
    pub(crate) run: &'a KvmRun,
    pub(crate) pending_io: &'a mut Option<PendingIo>,
    pub(crate) cpuid: &'a [crate::logic::cpuid_table::CpuidEntry],
    pub(crate) msrs: crate::cpu::msr::MsrState<'a, 'b>,
    pub(crate) cpu: u32,
    /// The guest's debug registers, and the host's saved for this window.
    pub(crate) debug: &'a mut GuestDebug,
    pub(crate) host_debug: &'a HostDebug,
    /// The guest's XCR0 (in the hardware during the window), and what rvmx can switch.
    pub(crate) xcr0: &'a mut u64,
    pub(crate) features: &'a crate::cpu::fpu::Features,
    /// Interrupts, NMIs and exceptions waiting for the guest.
    pub(crate) events: &'a mut crate::logic::events::Events,
    /// Userspace's `request_interrupt_window`.
    pub(crate) want_irq_window: bool,
    /// A userspace debugger's settings.
    pub(crate) debugger: &'a crate::logic::guest_debug::Debugger,
    /// The CR4 bits the guest may set (its CPUID, rvmx, the processor).
    pub(crate) cr4_ok: u64,
    /// Set when the handler emulated the exiting instruction (moved RIP past it).
    pub(crate) skipped: bool,
}

impl Exit<'_, '_> {
    /// Moves RIP past the exiting instruction (and drops any STI/MOV-SS interrupt shadow),
    /// as the processor retires it: with the guest's own RFLAGS.TF, a single-step #DB follows.
    fn skip_instruction(&mut self) {
        let rip = self.cur.read(GUEST_RIP);
        let len = self.cur.read(EXIT_INSTRUCTION_LEN) as u64;
        self.cur.write(GUEST_RIP, rip.wrapping_add(len));
        let shadow = self.cur.read(GUEST_INTERRUPTIBILITY);
        self.cur.write(GUEST_INTERRUPTIBILITY, shadow & !3);
        self.skipped = true;
        if !self.debugger.single_step() && self.cur.read(GUEST_RFLAGS) & (1 << 8) != 0 {
            let pending = self.cur.read(GUEST_PENDING_DBG_EXCEPTIONS);
            self.cur.write(GUEST_PENDING_DBG_EXCEPTIONS, pending | crate::logic::guest_debug::DR6_BS);
        }
    }

    /// Raises #UD: delivered at the next entry, like every event (`Windows::arm`).
    fn inject_ud(&mut self) {
        self.events.exception = Some(Exception::raise(vector::UD, None));
    }

    /// Whether the guest runs 64-bit code (CS.L), where registers are not truncated to 32 bits.
    fn long64(&self) -> bool {
        self.cur.read(GUEST_CS_AR) & (1 << 13) != 0
    }

    /// Current privilege level (SS.DPL, as VMX keeps it).
    fn cpl(&self) -> u32 {
        (self.cur.read(GUEST_SS_AR) >> 5) & 3
    }

    fn xsave_allowed(&self) -> bool {
        crate::logic::cpuid_table::xsave_allowed(self.cpuid, self.features.xcr0)
    }

    /// Raises #GP(0); in real mode exceptions carry no error code (and VM entry refuses one).
    fn inject_gp0(&mut self) {
        let protected = self.cur.read(GUEST_CR0) & cr0::PE != 0;
        self.events.exception = Some(Exception::raise(vector::GP, protected.then_some(0)));
    }

    /// RDMSR: EDX:EAX from the guest's MSR, or #GP if it has none.
    fn rdmsr(&mut self) -> Next {
        match self.msrs.read(self.gprs.rcx as u32) {
            Some(v) => {
                self.gprs.rax = v & 0xffff_ffff;
                self.gprs.rdx = v >> 32;
                self.skip_instruction();
            }
            None => self.inject_gp0(),
        }
        Next::Reenter
    }

    /// WRMSR: EDX:EAX into the guest's MSR, or #GP if it has none or the value is invalid.
    fn wrmsr(&mut self) -> Next {
        let v = (self.gprs.rdx << 32) | (self.gprs.rax & 0xffff_ffff);
        match self.msrs.write(self.gprs.rcx as u32, v) {
            Ok(()) => self.skip_instruction(),
            Err(()) => self.inject_gp0(),
        }
        Next::Reenter
    }

    /// Reports an exit reason rvmx does not handle, as KVM does.
    fn unexpected(&self, full_reason: u32) -> Next {
        self.run.internal_error(internal::UNEXPECTED_EXIT_REASON, &[full_reason as u64, self.cpu as u64]);
        Next::ToUser
    }

    /// Dispatches one VM exit; `full` is its EXIT_REASON field.
    pub(crate) fn handle(&mut self, full: u32) -> Next {
        if full & vmx_exit::ENTRY_FAILURE != 0 {
            if full as u16 == reason::ENTRY_FAIL_MACHINE_CHECK {
                // The machine check hit the entry: the host's handler must see it (KVM).
                crate::host::x86::machine_check();
            }
            crate::vmx::guest_state::dump_failed_entry(self.cur, full as u64);
            self.run.fail_entry(full as u64, self.cpu);
            return Next::ToUser;
        }
        match full as u16 {
            reason::EXCEPTION_NMI if vmx_exit::is_nmi(self.cur.read(EXIT_INTR_INFO)) => {
                // A host NMI arrived while the guest ran: hand it to the host's handler now.
                // SAFETY: `int 2` runs the kernel's NMI handler, which is reentrant-safe and
                // expects to be called with interrupts off (as KVM does).
                unsafe { asm!("int 2") };
                Next::Reenter
            }
            reason::EXCEPTION_NMI => self.exception(),
            // The host's turn: an interrupt is pending, or the window used up its time budget.
            reason::EXTERNAL_INTERRUPT | reason::PREEMPTION_TIMER => Next::Host,
            // The guest can take an interrupt: the queued one is injected at the re-entry;
            // with none queued, userspace asked to be told (KVM_EXIT_IRQ_WINDOW_OPEN).
            reason::INTERRUPT_WINDOW => {
                if self.events.interrupt.is_none() && self.want_irq_window && !self.events.needs_reinjection() {
                    self.run.set_exit_reason(kvm_exit::IRQ_WINDOW_OPEN);
                    return Next::ToUser;
                }
                Next::Reenter
            }
            // The guest can take an NMI: injected at the re-entry.
            reason::NMI_WINDOW => Next::Reenter,
            reason::TRIPLE_FAULT => {
                self.run.set_exit_reason(kvm_exit::SHUTDOWN);
                Next::ToUser
            }
            reason::CPUID => {
                // From the vCPU's table (KVM_SET_CPUID2), as KVM answers. XSAVE sizes only
                // matter to leaf 0xD (computing them on every CPUID exit costs as much as the
                // rest of the exit).
                let xsave = self.gprs.rax as u32 == 0xd;
                let rt = crate::logic::cpuid_table::Runtime {
                    apic_enabled: self.msrs.sregs.apic_base & (1 << 11) != 0,
                    osxsave: self.cur.read(CR4_READ_SHADOW) & CR4_OSXSAVE != 0,
                    xsave_size: if xsave { self.features.xsave_size(*self.xcr0) } else { 0 },
                    xsave_compacted_size: if xsave { self.features.xsave_compacted_size(*self.xcr0) } else { 0 },
                };
                let [a, b, c, d] = crate::logic::cpuid_table::guest_cpuid(
                    self.cpuid, self.gprs.rax as u32, self.gprs.rcx as u32, rt);
                self.gprs.rax = a as u64;
                self.gprs.rbx = b as u64;
                self.gprs.rcx = c as u64;
                self.gprs.rdx = d as u64;
                self.skip_instruction();
                Next::Reenter
            }
            reason::HLT => {
                self.skip_instruction();
                self.run.set_exit_reason(kvm_exit::HLT);
                Next::ToUser
            }
            reason::VMCALL => {
                // No hypercalls: KVM's answer is -KVM_ENOSYS, truncated to 32 bits unless the
                // guest is in 64-bit mode (CS.L).
                let enosys = (-1000i64) as u64;
                self.gprs.rax = if self.long64() { enosys } else { enosys as u32 as u64 };
                self.skip_instruction();
                Next::Reenter
            }
            // INVD would throw away the host's dirty cache lines, WBINVD flush them all: both
            // are NOPs, as on KVM without non-coherent DMA.
            reason::INVD | reason::WBINVD => {
                self.skip_instruction();
                Next::Reenter
            }
            // MONITOR/MWAIT would put the host's CPU to sleep: NOPs, as KVM's default
            // (KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS).
            reason::MONITOR | reason::MWAIT => {
                self.skip_instruction();
                Next::Reenter
            }
            // No PMU for guests: the host's counters stay the host's (KVM without a vPMU).
            reason::RDPMC => {
                self.inject_gp0();
                Next::Reenter
            }
            // No SGX for guests (KVM's handle_encls without SGX); RDRAND and RDSEED exit only
            // when the guest's CPUID does not list them (KVM's kvm_handle_invalid_op).
            reason::ENCLS | reason::RDRAND | reason::RDSEED => {
                self.inject_ud();
                Next::Reenter
            }
            r if vmx_exit::is_vmx_instruction(r) => {
                self.inject_ud();
                Next::Reenter
            }
            reason::IO => self.io(),
            reason::CR_ACCESS => self.cr_access(full),
            reason::MOV_DR => self.mov_dr(),
            reason::XSETBV => self.xsetbv(),
            reason::EPT_MISCONFIG => Next::EptMisconfig { gpa: self.cur.read(GUEST_PHYSICAL_ADDRESS) },
            reason::RDMSR => self.rdmsr(),
            reason::WRMSR => self.wrmsr(),
            reason::EPT_VIOLATION => Next::EptFault {
                gpa: self.cur.read(GUEST_PHYSICAL_ADDRESS),
                qualification: self.cur.read(EXIT_QUALIFICATION),
                vectoring: self.cur.read(IDT_VECTORING_INFO),
                cpu: self.cpu,
            },
            _ => self.unexpected(full),
        }
    }

    /// An exception the exception bitmap intercepted: #DB and #BP for a userspace debugger
    /// (`KVM_EXIT_DEBUG`), or #DB and #AC handed back to the guest (they are intercepted so
    /// that a guest cannot make the processor deliver them in an endless loop).
    fn exception(&mut self) -> Next {
        use crate::{logic::events::info, logic::guest_debug::DR6_ACTIVE_LOW};
        let intr = self.cur.read(EXIT_INTR_INFO);
        let pc = crate::run::vcpu_run::linear_rip(self.cur);
        match intr & 0xff {
            1 if self.debugger.takes_db() => {
                let dr6 = self.cur.read(EXIT_QUALIFICATION) | DR6_ACTIVE_LOW;
                self.run.debug(1, pc, dr6, self.cur.read(GUEST_DR7));
                Next::ToUser
            }
            1 => {
                // INT1 (ICEBP) is a trap: the #DB comes after it.
                if (intr >> 8) & 7 == info::PRIV_SOFT_EXCEPTION {
                    self.skip_instruction();
                    self.skipped = false;
                }
                self.deliver_db(self.cur.read(EXIT_QUALIFICATION));
                Next::Reenter
            }
            3 => {
                self.run.debug(3, pc, 0, 0);
                Next::ToUser
            }
            // A machine check while the guest ran is the host's (KVM's kvm_machine_check):
            // its handler runs now, interrupts still off; the guest resumes.
            v if v == vector::MC as u32 => {
                crate::host::x86::machine_check();
                Next::Reenter
            }
            17 => {
                let code = self.cur.read(EXIT_INTR_ERROR_CODE);
                self.events.exception = Some(Exception::raise(vector::AC, Some(code)));
                Next::Reenter
            }
            _ => self.unexpected(self.cur.read(EXIT_REASON)),
        }
    }

    /// Delivers a #DB to the guest whose DR6 bits are `payload` (as an exit qualification
    /// gives them): DR6 updated as the processor would (KVM's payload rule), DR7.GD cleared.
    fn deliver_db(&mut self, payload: u64) {
        use crate::logic::guest_debug::dr6_after_db;
        debugregs::set_dr6(self.debug, dr6_after_db(debugregs::dr6(), payload));
        self.debug.dr7 &= !dr::DR7_GD;
        // From the VMCS: with a debugger's breakpoints in force it holds the debugger's DR7.
        self.cur.write(GUEST_DR7, self.cur.read(GUEST_DR7) & !dr::DR7_GD);
        self.events.exception = Some(Exception::raise(vector::DB, None));
    }

    /// General-purpose register `n` as the exit qualification numbers them.
    fn gpr(&self, n: u8) -> u64 {
        let g = &*self.gprs;
        match n {
            0 => g.rax, 1 => g.rcx, 2 => g.rdx, 3 => g.rbx,
            4 => self.cur.read(GUEST_RSP),
            5 => g.rbp, 6 => g.rsi, 7 => g.rdi, 8 => g.r8, 9 => g.r9, 10 => g.r10, 11 => g.r11,
            12 => g.r12, 13 => g.r13, 14 => g.r14, _ => g.r15,
        }
    }

    /// Sets general-purpose register `n` (numbered as [`Exit::gpr`]).
    fn set_gpr(&mut self, n: u8, v: u64) {
        let g = &mut *self.gprs;
        let r = match n {
            0 => &mut g.rax, 1 => &mut g.rcx, 2 => &mut g.rdx, 3 => &mut g.rbx,
            4 => {
                self.cur.write(GUEST_RSP, v);
                return;
            }
            5 => &mut g.rbp, 6 => &mut g.rsi, 7 => &mut g.rdi, 8 => &mut g.r8, 9 => &mut g.r9,
            10 => &mut g.r10, 11 => &mut g.r11, 12 => &mut g.r12, 13 => &mut g.r13, 14 => &mut g.r14,
            _ => &mut g.r15,
        };
        *r = v;
    }

    /// MOV to or from a debug register, emulated on the guest's copies (see [`debugregs`]),
    /// with the architectural checks: #GP at CPL > 0, DR4/DR5 aliases (#UD with CR4.DE),
    /// DR7.GD (#DB with DR6.BD), #GP for bits 63:32 of DR6/DR7.
    fn mov_dr(&mut self) -> Next {
        const CR4_DE: u64 = 1 << 3;
        let q = DrAccess::decode(self.cur.read(EXIT_QUALIFICATION));
        if self.cpl() != 0 {
            self.inject_gp0();
            return Next::Reenter;
        }
        let n = match q.dr {
            4 | 5 if self.cur.read(GUEST_CR4) & CR4_DE != 0 => {
                self.inject_ud();
                return Next::Reenter;
            }
            4 => 6,
            5 => 7,
            n => n,
        };
        if self.debug.dr7 & dr::DR7_GD != 0 {
            self.deliver_db(dr::DR6_BD);
            return Next::Reenter;
        }
        if q.read {
            let v = match n {
                0..=3 => self.debug.db.get(n as usize).copied().unwrap_or(0),
                6 => debugregs::dr6(),
                _ => self.debug.dr7,
            };
            self.set_gpr(q.gpr, v);
            self.skip_instruction();
            return Next::Reenter;
        }
        let v = if self.long64() { self.gpr(q.gpr) } else { self.gpr(q.gpr) & 0xffff_ffff };
        match n {
            // With a debugger's hardware breakpoints in force, the guest's are only recorded.
            0..=3 if self.debugger.hw_breakpoints() => {
                if let Some(db) = self.debug.db.get_mut(n as usize) {
                    *db = v;
                }
            }
            0..=3 => debugregs::set_db(self.debug, self.host_debug, n as usize, v),
            6 => match dr::dr6(v) {
                Some(v) => debugregs::set_dr6(self.debug, v),
                None => {
                    self.inject_gp0();
                    return Next::Reenter;
                }
            },
            _ => match dr::dr7(v) {
                Some(v) if self.debugger.hw_breakpoints() => self.debug.dr7 = v,
                Some(v) => {
                    self.debug.dr7 = v;
                    self.cur.write(GUEST_DR7, v);
                    if self.debug.armed() != self.host_debug.guest_db_loaded() {
                        // The guest's DR0-3 must come into (or leave) the hardware: a new window.
                        self.skip_instruction();
                        return Next::Host;
                    }
                }
                None => {
                    self.inject_gp0();
                    return Next::Reenter;
                }
            },
        }
        self.skip_instruction();
        Next::Reenter
    }

    /// XSETBV: the guest's XCR0, checked as KVM's `__kvm_set_xcr` (only XCR0, at CPL 0, a
    /// valid combination of what the guest's CPUID lists and rvmx switches; else #GP), and
    /// loaded into the hardware at once: it stays the guest's until the window ends.
    fn xsetbv(&mut self) -> Next {
        if !self.xsave_allowed() {
            // CR4.OSXSAVE cannot be on: XSETBV would have been #UD before exiting.
            self.inject_ud();
            return Next::Reenter;
        }
        let v = (self.gprs.rdx << 32) | (self.gprs.rax & 0xffff_ffff);
        let allowed = crate::logic::cpuid_table::xcr0_allowed(self.cpuid, self.features.xcr0);
        if self.gprs.rcx as u32 != 0 || self.cpl() != 0 || !xstate::xcr0_valid(v, allowed) {
            self.inject_gp0();
            return Next::Reenter;
        }
        // SAFETY: interrupts are off in this window, inside its KernelFpu; `v` is a valid
        // XCR0 within the host's; the window puts the host's back before it ends.
        unsafe { crate::cpu::fpu::xsetbv0(v) };
        *self.xcr0 = v;
        self.skip_instruction();
        Next::Reenter
    }

    /// MOV to CR0 (every bit but TS/WP is rvmx's), LMSW, or MOV to CR4.VMXE: emulated, with
    /// the architectural #GP checks and the long-mode switch the processor would have done.
    /// (CLTS and MOV from CR0/CR4 only touch guest-owned bits or shadows: they never exit.)
    fn cr_access(&mut self, full: u32) -> Next {
        let q = CrAccess::decode(self.cur.read(EXIT_QUALIFICATION));
        if q.cr == 8 {
            return self.cr8(q, full);
        }
        let value = match (q.kind, q.cr) {
            (0, 0) => cr0::written(self.gpr(q.gpr)) | (self.gpr(q.gpr) & !0xffff_ffff),
            (0, _) => self.gpr(q.gpr),
            // LMSW loads CR0 bits 3:0 (PE, MP, EM, TS) but cannot clear PE.
            (3, 0) => {
                let old = guest_cr0(self.cur);
                cr0::written((old & !0xe) | (q.lmsw_data as u64 & 0xf))
            }
            _ => return self.unexpected(full),
        };
        let (old0, old4) = (guest_cr0(self.cur), self.cur.read(CR4_READ_SHADOW));
        let done = match q.cr {
            0 => self.set_cr0(value),
            4 => self.set_cr4(value),
            _ => return self.unexpected(full),
        };
        match done {
            Some(true) => self.skip_instruction(),
            Some(false) => {
                self.inject_gp0();
                return Next::Reenter;
            }
            None => {
                let len = self.cur.read(EXIT_INSTRUCTION_LEN) as u8;
                let (cr0, cr4) = if q.cr == 0 { (value, old4) } else { (old0, value) };
                return Next::PaePaging { cr0, cr4, len };
            }
        }
        // The processor would have flushed the guest's TLB (clearing CR0.PG, changing a
        // paging bit of CR4): the next window's INVEPT does, for this VPID too.
        let flush = if q.cr == 0 { old0 & !value & cr0::PG != 0 } else { (old4 ^ value) & cr4::TLB_FLUSH != 0 };
        if flush { Next::Host } else { Next::Reenter }
    }

    /// MOV to or from CR8 (the task-priority register): the guest's lives in its SREGS, as
    /// with KVM without an in-kernel APIC. Bits 7:4 of the new value set are #GP (higher
    /// bits are ignored, as KVM does); lowering it exits to userspace with
    /// `KVM_EXIT_SET_TPR`, so a userspace APIC can deliver what the old priority held back.
    fn cr8(&mut self, q: CrAccess, full: u32) -> Next {
        match q.kind {
            1 => {
                self.set_gpr(q.gpr, self.msrs.sregs.cr8);
                self.skip_instruction();
                Next::Reenter
            }
            0 => {
                let v = self.gpr(q.gpr) as u8 as u64;
                if v > 0xf {
                    self.inject_gp0();
                    return Next::Reenter;
                }
                let old = core::mem::replace(&mut self.msrs.sregs.cr8, v);
                self.skip_instruction();
                if v < old {
                    self.run.set_exit_reason(kvm_exit::SET_TPR);
                    return Next::ToUser;
                }
                Next::Reenter
            }
            _ => self.unexpected(full),
        }
    }

    /// MOV to CR0: `Some(false)` for #GP, `None` if it turns on PAE paging outside long mode
    /// (finished outside the window, where guest memory can be read).
    fn set_cr0(&mut self, v: u64) -> Option<bool> {
        if v >> 32 != 0 || (v & cr0::PG != 0 && v & cr0::PE == 0) || (v & cr0::NW != 0 && v & cr0::CD == 0) {
            return Some(false);
        }
        let old = guest_cr0(self.cur);
        let code64 = self.long64() && self.cur.read(GUEST_IA32_EFER) & efer::LMA != 0;
        // Paging cannot be turned on from 64-bit code (CS.L) nor off in 64-bit mode or with
        // PCIDE (KVM's checks).
        let lme = self.cur.read(GUEST_IA32_EFER) & efer::LME != 0;
        if (v & cr0::PG != 0 && old & cr0::PG == 0 && lme && self.long64())
            || (v & cr0::PG == 0 && (code64 || self.cur.read(CR4_READ_SHADOW) & cr4::PCIDE != 0))
        {
            return Some(false);
        }
        let cr4 = self.cur.read(GUEST_CR4);
        let mut guest_efer = self.cur.read(GUEST_IA32_EFER);
        let mut entry = self.cur.read(ENTRY_CONTROLS);
        let paging_on = v & cr0::PG != 0 && old & cr0::PG == 0;
        if paging_on && guest_efer & efer::LME != 0 {
            if cr4 & CR4_PAE == 0 {
                return Some(false);
            }
            guest_efer |= efer::LMA;
            entry |= ENTRY_IA32E;
        } else if paging_on && cr4 & CR4_PAE != 0 {
            return None;
        } else if v & cr0::PG == 0 && old & cr0::PG != 0 && guest_efer & efer::LMA != 0 {
            guest_efer &= !efer::LMA;
            entry &= !ENTRY_IA32E;
        }
        self.cur.write(GUEST_IA32_EFER, guest_efer);
        self.cur.write(ENTRY_CONTROLS, entry);
        self.cur.write(GUEST_CR0, real_cr0(v));
        self.cur.write(CR0_READ_SHADOW, v);
        Some(true)
    }

    /// MOV to CR4 (every bit the guest does not own exits): `Some(false)` for #GP, as KVM's
    /// `kvm_set_cr4`: a bit the guest may not set, PAE off in long mode, PCIDE turned on
    /// outside long mode or with CR3[11:0] non-zero. `None` if PAE paging outside long mode
    /// needs its PDPTEs reloaded (finished outside the window).
    fn set_cr4(&mut self, v: u64) -> Option<bool> {
        let long = self.cur.read(GUEST_IA32_EFER) & efer::LMA != 0;
        let old = self.cur.read(CR4_READ_SHADOW);
        if v & !self.cr4_ok != 0 || (long && v & CR4_PAE == 0) {
            return Some(false);
        }
        if v & cr4::PCIDE != 0 && old & cr4::PCIDE == 0 && (!long || self.cur.read(GUEST_CR3) & 0xfff != 0) {
            return Some(false);
        }
        let paging = guest_cr0(self.cur) & cr0::PG != 0;
        if !long && paging && v & CR4_PAE != 0 && (v ^ old) & cr4::PDPTR_RELOAD != 0 {
            return None;
        }
        self.cur.write(GUEST_CR4, v | CR4_HOST_OWNED);
        self.cur.write(CR4_READ_SHADOW, v);
        Some(true)
    }

    /// IN/OUT: to userspace through the PIO data page. RIP moves past the instruction at the
    /// next `KVM_RUN`, once userspace has done the access (as KVM's fast PIO does).
    fn io(&mut self) -> Next {
        let io = Io::decode(self.cur.read(EXIT_QUALIFICATION));
        let len = self.cur.read(EXIT_INSTRUCTION_LEN) as u64;
        if io.string {
            return Next::StringIo { io, len: len as u8 };
        }
        if !io.input {
            let rax = self.gprs.rax.to_le_bytes();
            self.run.write_pio_data(rax.get(..usize::from(io.size)).unwrap_or(&rax));
        }
        self.run.io(io.input, io.size, io.port, 1);
        *self.pending_io = Some(PendingIo { input: io.input, size: io.size, instruction_len: len });
        if io.input {
            return Next::ToUser;
        }
        let value = self.gprs.rax & crate::logic::insn::mask(io.size);
        Next::PortOut { port: io.port, size: io.size, value }
    }
}
