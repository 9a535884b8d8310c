// SPDX-License-Identifier: GPL-2.0

//! Events a vCPU delivers to its guest: the external interrupt userspace queued
//! (`KVM_INTERRUPT`), NMIs (`KVM_NMI`), exceptions raised by rvmx's emulation, and the event
//! the processor was delivering when a VM exit interrupted it (IDT-vectoring information),
//! which must be delivered again or the guest loses it. One event is injected per VM entry;
//! one that cannot be injected yet opens an interrupt or NMI window (an exit as soon as the
//! guest can take it). The state is what `KVM_GET/SET_VCPU_EVENTS` exchange. Pure logic,
//! host-tested.

use super::arch::vector;

/// Interruption-information bits (VM-entry interruption information and IDT-vectoring
/// information share the layout, SDM vol. 3, 25.8.3 and 25.9.3).
pub mod info {
    use super::super::arch::Bits;
    /// The vector.
    pub const VECTOR: Bits = Bits::new(0, 7);
    /// The event's type (one of the values below).
    pub const TYPE: Bits = Bits::new(8, 10);
    /// The field is valid.
    pub const VALID: u32 = 1 << 31;
    /// An error code is delivered.
    pub const ERROR_CODE: u32 = 1 << 11;
    /// Type: external interrupt.
    pub const EXT_INTR: u32 = 0;
    /// Type: NMI.
    pub const NMI: u32 = 2;
    /// Type: hardware exception.
    pub const HW_EXCEPTION: u32 = 3;
    /// Type: software interrupt (INT n).
    pub const SOFT_INTR: u32 = 4;
    /// Type: privileged software exception (INT1).
    pub const PRIV_SOFT_EXCEPTION: u32 = 5;
    /// Type: software exception (INT3, INTO).
    pub const SOFT_EXCEPTION: u32 = 6;
}

/// Interruptibility-state bits (SDM vol. 3, table 25-3).
pub mod block {
    /// Blocking by STI.
    pub const STI: u32 = 1 << 0;
    /// Blocking by MOV SS / POP SS.
    pub const MOV_SS: u32 = 1 << 1;
    /// Blocking by NMI (virtual-NMI blocking with virtual NMIs).
    pub const NMI: u32 = 1 << 3;
}

/// An exception to deliver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exception {
    /// Vector (0-31).
    pub vector: u8,
    /// Error code, for the exceptions that push one.
    pub error_code: Option<u32>,
    /// Its delivery had started (reinjection); otherwise raised and not yet delivered.
    pub injected: bool,
    /// INT3/INTO/INT1 being delivered: the instruction's length (0 for a hardware exception).
    pub soft_len: u8,
}

impl Exception {
    /// A hardware exception raised by rvmx or userspace, not yet delivered.
    pub const fn raise(vector: u8, error_code: Option<u32>) -> Self {
        Self { vector, error_code, injected: false, soft_len: 0 }
    }

    /// #GP(0); in real mode (`protected` false) exceptions carry no error code (and VM entry
    /// refuses one).
    pub const fn gp0(protected: bool) -> Self {
        Self::raise(vector::GP, if protected { Some(0) } else { None })
    }
}

/// An interrupt to deliver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interrupt {
    /// Vector.
    pub vector: u8,
    /// An INT n whose delivery was interrupted: reinjected with its instruction length.
    pub soft_len: Option<u8>,
}

/// A vCPU's events outside the VMCS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// An exception in flight or raised by rvmx.
    pub exception: Option<Exception>,
    /// Queued by `KVM_INTERRUPT` (KVM's `interrupt.injected`), or interrupted in delivery.
    pub interrupt: Option<Interrupt>,
    /// An NMI whose delivery was interrupted.
    pub nmi_injected: bool,
    /// NMIs waiting (at most 2, as KVM: one may be latched while one is being handled).
    pub nmi_pending: u8,
    /// A shutdown requested outside the guest (`KVM_X86_SET_MCE` during a machine check):
    /// the next `KVM_RUN` ends with `KVM_EXIT_SHUTDOWN`, as KVM's triple-fault request.
    pub triple_fault: bool,
    /// An SMI waits (`KVM_SMI`, an SMI IPI, `KVM_SET_VCPU_EVENTS`): taken between VM entries
    /// when nothing is being delivered and the vCPU is not in SMM already.
    pub smi_pending: bool,
}

/// What the next VM entry injects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injection {
    /// VM-entry interruption information.
    pub info: u32,
    /// VM-entry exception error code.
    pub error_code: u32,
    /// VM-entry instruction length (software interrupts and exceptions).
    pub len: u32,
}

/// The next entry's event and windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// The event to inject, if any.
    pub inject: Option<Injection>,
    /// Exit as soon as the guest can take an external interrupt.
    pub irq_window: bool,
    /// Exit as soon as the guest can take an NMI.
    pub nmi_window: bool,
    /// Set RFLAGS.RF first: a fault-class exception raised (not reinjected) is delivered, and
    /// the RFLAGS image it pushes carries RF, as KVM's `kvm_inject_exception` sets it.
    pub set_rf: bool,
}

/// Whether `vector` is a fault-class exception (KVM's `exception_type`: all but #DB, #BP, #OF,
/// which are traps, #DF and #MC, aborts, and the NMI).
pub const fn is_fault(vector: u8) -> bool {
    !matches!(vector, vector::DB | vector::BP | vector::OF | vector::NMI | vector::DF | vector::MC) && vector < 32
}

/// Whether the guest takes an external interrupt now: RFLAGS.IF and no STI/MOV SS shadow.
pub const fn interrupt_allowed(if_flag: bool, interruptibility: u32) -> bool {
    if_flag && interruptibility & (block::STI | block::MOV_SS) == 0
}

/// Whether the guest takes an NMI now (KVM's `vmx_nmi_allowed`: no shadow, not blocked).
pub const fn nmi_allowed(interruptibility: u32) -> bool {
    interruptibility & (block::STI | block::MOV_SS | block::NMI) == 0
}

/// Bit 12 of an exception exit's interruption information and of an EPT violation's exit
/// qualification: the exit interrupted an IRET that had already unblocked virtual NMIs.
pub const NMI_UNBLOCKED_BY_IRET: u64 = 1 << 12;

/// Whether a VM exit interrupted an IRET that had unblocked NMIs, which must be blocked again
/// before the guest runs the IRET once more (SDM vol. 3, 28.2.2-3); otherwise an NMI waiting
/// for the guest is delivered inside its NMI handler, at the IRET. KVM's
/// `vmx_recover_nmi_blocking` (exception exits) and `handle_ept_violation`. The bit means
/// nothing when the exit interrupted an event's delivery (`vectoring` valid) or for a #DF.
/// `reason` is the basic exit reason, `exit_info` the exit's interruption information.
pub fn iret_unblocked_nmi(reason: u16, exit_info: u32, qualification: u64, vectoring: u32) -> bool {
    use super::vmx_exit::reason;
    if vectoring & info::VALID != 0 {
        return false;
    }
    match reason {
        reason::EXCEPTION_NMI => {
            exit_info & info::VALID != 0
                && u64::from(exit_info) & NMI_UNBLOCKED_BY_IRET != 0
                && exit_info as u8 != vector::DF
        }
        reason::EPT_VIOLATION => qualification & NMI_UNBLOCKED_BY_IRET != 0,
        _ => false,
    }
}

/// Exceptions that are software exceptions when raised by INT3/INTO.
const fn soft_exception_kind(vector: u8) -> u32 {
    if vector == 1 { info::PRIV_SOFT_EXCEPTION } else { info::SOFT_EXCEPTION }
}

impl Events {
    /// Records the event a VM exit interrupted (IDT-vectoring information `vectoring`, its
    /// error code and the exit's instruction length), to be delivered again. Returns true for
    /// an NMI, whose blocking the caller must lift (the NMI was not delivered yet).
    pub fn interrupted(&mut self, vectoring: u32, error_code: u32, len: u32) -> bool {
        if vectoring & info::VALID == 0 {
            return false;
        }
        let vector = vectoring as u8;
        match (vectoring >> 8) & 7 {
            info::EXT_INTR => self.interrupt = Some(Interrupt { vector, soft_len: None }),
            info::NMI => {
                self.nmi_injected = true;
                return true;
            }
            info::SOFT_INTR => self.interrupt = Some(Interrupt { vector, soft_len: Some(len as u8) }),
            kind => {
                let soft_len = if kind == info::HW_EXCEPTION { 0 } else { len as u8 };
                let error_code = (vectoring & info::ERROR_CODE != 0).then_some(error_code);
                self.exception = Some(Exception { vector, error_code, injected: true, soft_len });
            }
        }
        false
    }

    /// `KVM_NMI`: one more NMI, at most two waiting (one if one is already masked or being
    /// delivered), as KVM's `process_nmi`.
    pub fn queue_nmi(&mut self, nmi_masked: bool) {
        let limit = if nmi_masked || self.nmi_injected { 1 } else { 2 };
        self.nmi_pending = self.nmi_pending.saturating_add(1).min(limit);
    }

    /// Nothing to deliver, reinject or wait for: what almost every VM entry sees, checked
    /// field by field (the derived comparison with a default value costs twice as much).
    #[inline]
    pub fn is_quiet(&self) -> bool {
        // Destructured: a field added to `Events` must be added here too.
        let Events { exception, interrupt, nmi_injected, nmi_pending, triple_fault, smi_pending } = *self;
        exception.is_none() && interrupt.is_none() && !nmi_injected && nmi_pending == 0 && !triple_fault && !smi_pending
    }

    /// An event is in flight and must be delivered before anything new (KVM's
    /// `kvm_event_needs_reinjection`).
    pub fn needs_reinjection(&self) -> bool {
        self.exception.is_some_and(|e| e.injected) || self.nmi_injected || self.interrupt.is_some()
    }

    /// Nothing to inject or reinject first, so an interrupt from the in-kernel local APIC may
    /// be taken now: an NMI that waits while the guest blocks NMIs does not hold it back (KVM
    /// injects the interrupt then).
    pub fn irq_injectable(&self, interruptibility: u32) -> bool {
        self.exception.is_none()
            && self.interrupt.is_none()
            && !self.nmi_injected
            && (self.nmi_pending == 0 || !nmi_allowed(interruptibility))
    }

    /// `kvm_run.ready_for_interrupt_injection`: userspace may `KVM_INTERRUPT` now.
    pub fn ready_for_interrupt(&self, if_flag: bool, interruptibility: u32) -> bool {
        interrupt_allowed(if_flag, interruptibility) && !self.needs_reinjection()
    }

    /// Chooses the next entry's event, KVM's order: an exception (in flight or raised), an
    /// NMI in flight, an interrupt in flight or queued (when the guest takes it, or a
    /// software one at once), then a waiting NMI when allowed. `want_irq_window` is
    /// userspace's `request_interrupt_window`.
    pub fn next(&mut self, if_flag: bool, interruptibility: u32, want_irq_window: bool) -> Entry {
        let mut inject = None;
        let mut set_rf = false;
        if let Some(e) = self.exception.take() {
            set_rf = !e.injected && e.soft_len == 0 && is_fault(e.vector);
            let kind = if e.soft_len != 0 { soft_exception_kind(e.vector) } else { info::HW_EXCEPTION };
            let code = if e.error_code.is_some() { info::ERROR_CODE } else { 0 };
            inject = Some(Injection {
                info: info::VALID | code | kind << 8 | e.vector as u32,
                error_code: e.error_code.unwrap_or(0),
                len: e.soft_len as u32,
            });
        } else if self.nmi_injected {
            self.nmi_injected = false;
            inject = Some(Injection { info: info::VALID | info::NMI << 8 | vector::NMI as u32, ..Default::default() });
        } else if let Some(i) = self.interrupt.filter(|i| i.soft_len.is_some() || interrupt_allowed(if_flag, interruptibility)) {
            self.interrupt = None;
            let (kind, len) = match i.soft_len {
                Some(len) => (info::SOFT_INTR, len as u32),
                None => (info::EXT_INTR, 0),
            };
            inject = Some(Injection { info: info::VALID | kind << 8 | i.vector as u32, error_code: 0, len });
        } else if self.nmi_pending > 0 && nmi_allowed(interruptibility) {
            self.nmi_pending = self.nmi_pending.saturating_sub(1); // > 0 here
            inject = Some(Injection { info: info::VALID | info::NMI << 8 | vector::NMI as u32, ..Default::default() });
        }
        Entry {
            inject,
            irq_window: self.interrupt.is_some() || want_irq_window,
            nmi_window: self.nmi_pending > 0,
            set_rf,
        }
    }
}

/// `struct kvm_vcpu_events` flags.
pub mod flags {
    /// `nmi.pending` is valid.
    pub const NMI_PENDING: u32 = 1 << 0;
    /// `sipi_vector` is valid.
    pub const SIPI_VECTOR: u32 = 1 << 1;
    /// `interrupt.shadow` is valid.
    pub const SHADOW: u32 = 1 << 2;
    /// `smi` is valid.
    pub const SMM: u32 = 1 << 3;
    /// The exception payload fields are valid.
    pub const PAYLOAD: u32 = 1 << 4;
    /// `triple_fault` is valid.
    pub const TRIPLE_FAULT: u32 = 1 << 5;
}

/// `kvm_vcpu_events.interrupt.shadow` bits (note: the reverse of the VMCS's order).
pub mod shadow {
    /// MOV SS shadow.
    pub const MOV_SS: u8 = 1 << 0;
    /// STI shadow.
    pub const STI: u8 = 1 << 1;
}

/// `struct kvm_vcpu_events` (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct VcpuEvents {
    pub exception_injected: u8,
    pub exception_nr: u8,
    pub exception_has_error_code: u8,
    pub exception_pending: u8,
    pub exception_error_code: u32,
    pub interrupt_injected: u8,
    pub interrupt_nr: u8,
    pub interrupt_soft: u8,
    pub interrupt_shadow: u8,
    pub nmi_injected: u8,
    pub nmi_pending: u8,
    pub nmi_masked: u8,
    pub nmi_pad: u8,
    pub sipi_vector: u32,
    pub flags: u32,
    pub smi: [u8; 4],
    pub triple_fault_pending: u8,
    pub reserved: [u8; 26],
    pub exception_has_payload: u8,
    pub exception_payload: u64,
}
// SAFETY: `repr(C)` with integers only, every padding byte an explicit field (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for VcpuEvents {}
// SAFETY: as for `FromBytes`: every byte of a `VcpuEvents` is an initialized field.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for VcpuEvents {}

/// The interruptibility state's shadow bits as `kvm_vcpu_events` reports them.
pub const fn shadow_to_abi(interruptibility: u32) -> u8 {
    (if interruptibility & block::STI != 0 { shadow::STI } else { 0 })
        | if interruptibility & block::MOV_SS != 0 { shadow::MOV_SS } else { 0 }
}

/// [`shadow_to_abi`] backwards; with both bits, MOV SS wins (VM entry refuses both, and KVM's
/// `vmx_set_interrupt_shadow` sets only it).
pub const fn shadow_from_abi(s: u8) -> u32 {
    if s & shadow::MOV_SS != 0 {
        block::MOV_SS
    } else if s & shadow::STI != 0 {
        block::STI
    } else {
        0
    }
}

impl Events {
    /// `KVM_GET_VCPU_EVENTS` (without exception payloads or triple-fault events, which rvmx
    /// does not offer); of the SMM state, only the pending SMI (the caller fills in the rest).
    pub fn to_abi(&self, interruptibility: u32) -> VcpuEvents {
        let e = self.exception.unwrap_or_default();
        // INT3/INTO in flight are left out, as KVM does: re-executing the instruction
        // raises them again.
        let hard = self.exception.is_some() && e.soft_len == 0;
        let i = self.interrupt.unwrap_or_default();
        VcpuEvents {
            exception_injected: hard as u8,
            exception_nr: e.vector,
            exception_has_error_code: e.error_code.is_some() as u8,
            exception_error_code: e.error_code.unwrap_or(0),
            interrupt_injected: (self.interrupt.is_some() && i.soft_len.is_none()) as u8,
            interrupt_nr: i.vector,
            interrupt_shadow: shadow_to_abi(interruptibility),
            nmi_injected: self.nmi_injected as u8,
            nmi_pending: self.nmi_pending,
            nmi_masked: (interruptibility & block::NMI != 0) as u8,
            flags: flags::NMI_PENDING | flags::SHADOW | flags::SMM,
            smi: [0, self.smi_pending as u8, 0, 0],
            ..Default::default()
        }
    }

    /// `KVM_SET_VCPU_EVENTS`: the new events and interruptibility state (from the old ones,
    /// `self` and `interruptibility`; a pending shutdown stays, as the ABI cannot carry it
    /// without the triple-fault capability), or `None` (EINVAL) as KVM refuses: unknown flags, payloads (not
    /// enabled), triple-fault events (not enabled), an exception vector above 31 or NMI. The
    /// pending SMI is taken with `flags::SMM`; the rest of the SMM state is the caller's.
    pub fn from_abi(&self, v: &VcpuEvents, interruptibility: u32) -> Option<(Events, u32)> {
        let known = flags::NMI_PENDING | flags::SIPI_VECTOR | flags::SHADOW | flags::SMM | flags::PAYLOAD | flags::TRIPLE_FAULT;
        if v.flags & !known != 0 || v.flags & (flags::PAYLOAD | flags::TRIPLE_FAULT) != 0 {
            return None;
        }
        if v.exception_injected != 0 && (v.exception_nr > 31 || v.exception_nr == vector::NMI) {
            return None;
        }
        let exception = (v.exception_injected != 0).then_some(Exception {
            vector: v.exception_nr,
            error_code: (v.exception_has_error_code != 0).then_some(v.exception_error_code),
            injected: true,
            soft_len: 0,
        });
        let interrupt = (v.interrupt_injected != 0).then_some(Interrupt { vector: v.interrupt_nr, soft_len: None });
        let mut state = interruptibility;
        if v.flags & flags::SHADOW != 0 {
            state = state & !(block::STI | block::MOV_SS) | shadow_from_abi(v.interrupt_shadow);
        }
        state = if v.nmi_masked != 0 { state | block::NMI } else { state & !block::NMI };
        let nmi_pending = if v.flags & flags::NMI_PENDING != 0 { v.nmi_pending.min(2) } else { 0 };
        let triple_fault = self.triple_fault;
        let smi_pending = if v.flags & flags::SMM != 0 { v.smi[1] != 0 } else { self.smi_pending };
        Some((Events { exception, interrupt, nmi_injected: v.nmi_injected != 0, nmi_pending, triple_fault, smi_pending }, state))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn apic_interrupts_wait_only_for_what_goes_first() {
        let none = Events::default();
        assert!(none.irq_injectable(0));
        let nmi = Events { nmi_pending: 1, ..Default::default() };
        assert!(!nmi.irq_injectable(0), "an NMI the guest can take goes first");
        assert!(nmi.irq_injectable(block::NMI), "a blocked NMI does not hold an interrupt back");
        assert!(!Events { nmi_injected: true, ..Default::default() }.irq_injectable(block::NMI));
        assert!(!Events { interrupt: Some(Interrupt { vector: 0x30, soft_len: None }), ..Default::default() }.irq_injectable(0));
    }

    use super::*;

    #[test]
    fn quiet_is_the_default_and_nothing_else() {
        let exception = Some(Exception::raise(vector::UD, None));
        let variants = [
            Events { exception, ..Default::default() },
            Events { interrupt: Some(Interrupt { vector: 0x30, soft_len: None }), ..Default::default() },
            Events { nmi_injected: true, ..Default::default() },
            Events { nmi_pending: 1, ..Default::default() },
            Events { triple_fault: true, ..Default::default() },
            Events { smi_pending: true, ..Default::default() },
        ];
        assert!(Events::default().is_quiet());
        for e in variants {
            assert!(!e.is_quiet(), "{e:?}");
        }
    }

    #[test]
    fn iret_that_unblocked_nmis() {
        use super::super::vmx_exit::reason;
        let gp = info::VALID | info::HW_EXCEPTION << 8 | info::ERROR_CODE | 13;
        let bit = NMI_UNBLOCKED_BY_IRET as u32;
        assert!(iret_unblocked_nmi(reason::EXCEPTION_NMI, gp | bit, 0, 0));
        assert!(!iret_unblocked_nmi(reason::EXCEPTION_NMI, gp, 0, 0));
        let df = info::VALID | info::HW_EXCEPTION << 8 | info::ERROR_CODE | 8;
        assert!(!iret_unblocked_nmi(reason::EXCEPTION_NMI, df | bit, 0, 0), "undefined for #DF");
        assert!(!iret_unblocked_nmi(reason::EXCEPTION_NMI, bit, 0, 0), "info not valid");
        assert!(iret_unblocked_nmi(reason::EPT_VIOLATION, 0, 0x181 | NMI_UNBLOCKED_BY_IRET, 0));
        assert!(!iret_unblocked_nmi(reason::EPT_VIOLATION, 0, 0x181, 0));
        let delivering = info::VALID | info::EXT_INTR << 8 | 0x20;
        assert!(!iret_unblocked_nmi(reason::EPT_VIOLATION, 0, NMI_UNBLOCKED_BY_IRET, delivering),
                "undefined while an event was being delivered");
        assert!(!iret_unblocked_nmi(reason::EPT_MISCONFIG, 0, NMI_UNBLOCKED_BY_IRET, 0));
    }

    const EXT: u32 = info::VALID | info::EXT_INTR << 8;

    #[test]
    fn queued_interrupt_waits_for_if_and_the_shadow() {
        let mut e = Events { interrupt: Some(Interrupt { vector: 0x20, soft_len: None }), ..Default::default() };
        let n = e.next(false, 0, false);
        assert_eq!(n, Entry { inject: None, irq_window: true, nmi_window: false, set_rf: false });
        let n = e.next(true, block::STI, false);
        assert_eq!(n.inject, None, "STI shadow");
        let n = e.next(true, 0, false);
        assert_eq!(n.inject.unwrap().info, EXT | 0x20);
        assert!(!n.irq_window && e.interrupt.is_none());
    }

    #[test]
    fn interrupted_deliveries_come_back() {
        let mut e = Events::default();
        assert!(!e.interrupted(EXT | 0x30, 0, 0));
        assert_eq!(e.next(true, 0, false).inject.unwrap().info, EXT | 0x30);
        // #PF with its error code.
        let pf = info::VALID | info::ERROR_CODE | info::HW_EXCEPTION << 8 | 14;
        e.interrupted(pf, 6, 0);
        assert!(e.needs_reinjection());
        let i = e.next(false, 0, false).inject.unwrap();
        assert_eq!((i.info, i.error_code, i.len), (pf, 6, 0));
        // INT 0x80 (2 bytes) and INT3 (1 byte) carry their lengths.
        let int80 = info::VALID | info::SOFT_INTR << 8 | 0x80;
        e.interrupted(int80, 0, 2);
        assert_eq!(e.next(false, block::STI, false).inject.unwrap(), Injection { info: int80, error_code: 0, len: 2 });
        let int3 = info::VALID | info::SOFT_EXCEPTION << 8 | 3;
        e.interrupted(int3, 0, 1);
        assert_eq!(e.next(false, 0, false).inject.unwrap(), Injection { info: int3, error_code: 0, len: 1 });
        // An NMI: reinjected, and the caller is told to lift NMI blocking.
        assert!(e.interrupted(info::VALID | info::NMI << 8 | 2, 0, 0));
        assert_eq!(e.next(false, block::NMI, false).inject.unwrap().info, info::VALID | info::NMI << 8 | 2);
    }

    #[test]
    fn one_event_per_entry_in_kvms_order() {
        let mut e = Events {
            exception: Some(Exception { vector: 13, error_code: Some(0), injected: false, soft_len: 0 }),
            interrupt: Some(Interrupt { vector: 0x21, soft_len: None }),
            nmi_pending: 1,
            ..Default::default()
        };
        let n = e.next(true, 0, false);
        assert_eq!(n.inject.unwrap().info & 0xff, 13);
        assert!(n.irq_window && n.nmi_window, "the rest waits for windows");
        assert_eq!(e.next(true, 0, false).inject.unwrap().info & 0xff, 0x21);
        let n = e.next(true, 0, false);
        assert_eq!(n.inject.unwrap().info, info::VALID | info::NMI << 8 | 2);
        assert_eq!(n, Entry { inject: n.inject, irq_window: false, nmi_window: false, set_rf: false });
    }

    #[test]
    fn nmis_wait_for_blocking_and_queue_at_most_two() {
        let mut e = Events::default();
        (0..5).for_each(|_| e.queue_nmi(false));
        assert_eq!(e.nmi_pending, 2);
        let mut m = Events::default();
        (0..5).for_each(|_| m.queue_nmi(true));
        assert_eq!(m.nmi_pending, 1, "one masked NMI latches only one more");
        let n = e.next(true, block::NMI, false);
        assert_eq!((n.inject, n.nmi_window), (None, true));
        assert_eq!(e.next(true, block::MOV_SS, false).inject, None);
        assert!(e.next(true, 0, false).inject.is_some());
        assert_eq!(e.nmi_pending, 1);
    }

    #[test]
    fn readiness_and_windows() {
        let e = Events::default();
        assert!(e.ready_for_interrupt(true, 0));
        assert!(!e.ready_for_interrupt(false, 0));
        assert!(!e.ready_for_interrupt(true, block::MOV_SS));
        let q = Events { interrupt: Some(Interrupt { vector: 1, soft_len: None }), ..Default::default() };
        assert!(!q.ready_for_interrupt(true, 0), "one already queued");
        let mut e = Events::default();
        assert_eq!(e.next(false, 0, true), Entry { inject: None, irq_window: true, nmi_window: false, set_rf: false });
    }

    #[test]
    fn faults_set_rf_when_raised() {
        let fault = |v: u8, injected: bool| {
            let mut e = Events { exception: Some(Exception { injected, ..Exception::raise(v, None) }), ..Default::default() };
            e.next(true, 0, false).set_rf
        };
        assert!(fault(vector::GP, false) && fault(vector::UD, false) && fault(vector::PF, false) && fault(0, false));
        assert!(!fault(vector::DB, false) && !fault(vector::BP, false) && !fault(vector::OF, false));
        assert!(!fault(vector::DF, false) && !fault(vector::MC, false));
        assert!(!fault(vector::GP, true), "reinjected: RF as it was");
    }

    #[test]
    fn raised_exceptions_encode_as_the_sdm_says() {
        let inject = |e: Exception| Events { exception: Some(e), ..Default::default() }.next(true, 0, false).inject.unwrap();
        assert_eq!(inject(Exception::raise(vector::UD, None)).info, 0x8000_0306);
        let gp = inject(Exception::raise(vector::GP, Some(0)));
        assert_eq!((gp.info, gp.error_code), (0x8000_0b0d, 0));
        assert_eq!(inject(Exception::raise(vector::GP, None)).info, 0x8000_030d, "real mode: no error code");
    }

    #[test]
    fn vcpu_events_round_trip() {
        assert_eq!(core::mem::size_of::<VcpuEvents>(), 64);
        assert_eq!(core::mem::offset_of!(VcpuEvents, exception_payload), 56);
        assert_eq!(core::mem::offset_of!(VcpuEvents, flags), 20);
        let e = Events {
            exception: Some(Exception { vector: 14, error_code: Some(2), injected: true, soft_len: 0 }),
            interrupt: Some(Interrupt { vector: 0x31, soft_len: None }),
            nmi_injected: true,
            nmi_pending: 1,
            triple_fault: true,
            smi_pending: true,
        };
        let state = block::STI | block::NMI;
        let abi = e.to_abi(state);
        assert_eq!((abi.interrupt_shadow, abi.nmi_masked, abi.flags), (shadow::STI, 1, 0xd));
        assert_eq!(e.from_abi(&abi, 0), Some((e, state)), "a pending shutdown stays");
        assert!(!Events::default().from_abi(&abi, 0).unwrap().0.triple_fault);
        assert_eq!(Events::default().from_abi(&VcpuEvents { flags: 1 << 6, ..abi }, 0), None, "unknown flag");
        assert_eq!(Events::default().from_abi(&VcpuEvents { exception_nr: 2, ..abi }, 0), None, "NMI vector");
        assert_eq!(Events::default().from_abi(&VcpuEvents { exception_nr: 32, ..abi }, 0), None);
        assert_eq!(Events::default().from_abi(&VcpuEvents { flags: flags::PAYLOAD, ..abi }, 0), None);
        let no_shadow = Events::default().from_abi(&VcpuEvents { flags: 0, ..abi }, block::MOV_SS).unwrap();
        assert_eq!(no_shadow.1, block::MOV_SS | block::NMI, "shadow kept without VALID_SHADOW");
        assert_eq!(no_shadow.0.nmi_pending, 0, "pending NMIs only with VALID_NMI_PENDING");
        assert_eq!(abi.smi, [0, 1, 0, 0], "the pending SMI");
        assert_eq!((shadow_from_abi(3), shadow_from_abi(2), shadow_from_abi(1)), (block::MOV_SS, block::STI, block::MOV_SS), "MOV SS wins");
        assert!(!Events::default().from_abi(&VcpuEvents { smi: [0; 4], ..abi }, 0).unwrap().0.smi_pending);
        assert!(e.from_abi(&VcpuEvents { flags: 0, smi: [0; 4], ..abi }, 0).unwrap().0.smi_pending, "kept without VALID_SMM");
    }
}
