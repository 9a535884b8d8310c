// SPDX-License-Identifier: GPL-2.0

//! VM-exit reasons and exit qualifications (SDM vol. 3, appendix C and 28.2.1), decoded.
//! Pure logic, host-tested; the dispatch on them is run/exit.rs.

/// Basic exit reasons rvmx handles or names.
#[allow(missing_docs)]
pub mod reason {
    pub const EXCEPTION_NMI: u16 = 0;
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    pub const TRIPLE_FAULT: u16 = 2;
    pub const INTERRUPT_WINDOW: u16 = 7;
    pub const NMI_WINDOW: u16 = 8;
    pub const CPUID: u16 = 10;
    pub const HLT: u16 = 12;
    pub const INVD: u16 = 13;
    pub const RDPMC: u16 = 15;
    pub const VMCALL: u16 = 18;
    pub const VMCLEAR: u16 = 19;
    pub const VMXON: u16 = 27;
    pub const CR_ACCESS: u16 = 28;
    pub const MOV_DR: u16 = 29;
    pub const IO: u16 = 30;
    pub const RDMSR: u16 = 31;
    pub const WRMSR: u16 = 32;
    pub const ENTRY_FAIL_GUEST_STATE: u16 = 33;
    pub const ENTRY_FAIL_MSR_LOADING: u16 = 34;
    pub const MWAIT: u16 = 36;
    pub const MONITOR: u16 = 39;
    pub const PAUSE: u16 = 40;
    pub const ENTRY_FAIL_MACHINE_CHECK: u16 = 41;
    pub const TPR_BELOW_THRESHOLD: u16 = 43;
    pub const EPT_VIOLATION: u16 = 48;
    pub const EPT_MISCONFIG: u16 = 49;
    pub const INVEPT: u16 = 50;
    pub const PREEMPTION_TIMER: u16 = 52;
    pub const INVVPID: u16 = 53;
    pub const WBINVD: u16 = 54;
    pub const XSETBV: u16 = 55;
    pub const RDRAND: u16 = 57;
    pub const ENCLS: u16 = 60;
    pub const RDSEED: u16 = 61;
}

/// EXIT_REASON bit 31: the VM entry failed (reasons 33, 34, 41).
pub const ENTRY_FAILURE: u32 = 1 << 31;

/// Whether basic exit reason `r` is a VMX instruction executed by the guest (VMCLEAR..VMXON,
/// INVEPT, INVVPID, VMFUNC): rvmx offers no nested VMX, so each gets #UD.
pub const fn is_vmx_instruction(r: u16) -> bool {
    matches!(r, reason::VMCLEAR..=reason::VMXON | reason::INVEPT | reason::INVVPID | 59)
}

/// An I/O instruction's exit qualification (SDM table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Io {
    /// Access size in bytes: 1, 2 or 4.
    pub size: u8,
    /// IN (true) or OUT.
    pub input: bool,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefix.
    pub rep: bool,
    /// Port number.
    pub port: u16,
}

/// Fields of an I/O instruction's exit qualification (SDM table 28-5).
mod io_field {
    use super::super::arch::Bits;
    pub(super) const SIZE_MINUS_1: Bits = Bits::new(0, 2);
    pub(super) const IN: u64 = 1 << 3;
    pub(super) const STRING: u64 = 1 << 4;
    pub(super) const REP: u64 = 1 << 5;
    pub(super) const PORT: Bits = Bits::new(16, 31);
}

impl Io {
    /// Decodes the qualification.
    pub const fn decode(q: u64) -> Self {
        use io_field::*;
        Io {
            size: (SIZE_MINUS_1.get(q) as u8).wrapping_add(1), // 1 to 8
            input: q & IN != 0,
            string: q & STRING != 0,
            rep: q & REP != 0,
            port: PORT.get(q) as u16,
        }
    }
}

/// A control-register access's exit qualification (SDM table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrAccess {
    /// Control register number.
    pub cr: u8,
    /// The access: one of [`cr_kind`].
    pub kind: u8,
    /// General-purpose register (0 = RAX .. 15 = R15) for MOV.
    pub gpr: u8,
    /// LMSW source data.
    pub lmsw_data: u16,
}

/// [`CrAccess::kind`] values.
pub mod cr_kind {
    /// MOV to CR.
    pub const MOV_TO: u8 = 0;
    /// MOV from CR.
    pub const MOV_FROM: u8 = 1;
    /// CLTS.
    pub const CLTS: u8 = 2;
    /// LMSW.
    pub const LMSW: u8 = 3;
}

/// Fields of a control-register access's exit qualification (SDM table 28-3).
mod cr_field {
    use super::super::arch::Bits;
    pub(super) const CR: Bits = Bits::new(0, 3);
    pub(super) const KIND: Bits = Bits::new(4, 5);
    pub(super) const GPR: Bits = Bits::new(8, 11);
    pub(super) const LMSW_DATA: Bits = Bits::new(16, 31);
}

impl CrAccess {
    /// Decodes the qualification.
    pub const fn decode(q: u64) -> Self {
        use cr_field::*;
        CrAccess {
            cr: CR.get(q) as u8,
            kind: KIND.get(q) as u8,
            gpr: GPR.get(q) as u8,
            lmsw_data: LMSW_DATA.get(q) as u16,
        }
    }
}

/// A MOV-DR exit's qualification (SDM table 28-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrAccess {
    /// Debug register number.
    pub dr: u8,
    /// MOV from DR (else MOV to DR).
    pub read: bool,
    /// General-purpose register (0 = RAX .. 15 = R15).
    pub gpr: u8,
}

/// Fields of a MOV-DR exit's qualification (SDM table 28-4).
mod dr_field {
    use super::super::arch::Bits;
    pub(super) const DR: Bits = Bits::new(0, 2);
    pub(super) const READ: u64 = 1 << 4;
    pub(super) const GPR: Bits = Bits::new(8, 11);
}

impl DrAccess {
    /// Decodes the qualification.
    pub const fn decode(q: u64) -> Self {
        use dr_field::*;
        DrAccess { dr: DR.get(q) as u8, read: q & READ != 0, gpr: GPR.get(q) as u8 }
    }
}

/// Exit interruption information: type NMI (bits 10:8 = 2) with the valid bit.
pub const fn is_nmi(intr_info: u32) -> bool {
    use super::events::info;
    intr_info & info::VALID != 0 && info::TYPE.get(intr_info as u64) == info::NMI as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_qualifications() {
        // out dx, al with dx = 0x3f8
        assert_eq!(Io::decode(0x03f8_0000), Io { size: 1, input: false, string: false, rep: false, port: 0x3f8 });
        // rep insw from port 0x1f0
        assert_eq!(Io::decode(0x01f0_0039), Io { size: 2, input: true, string: true, rep: true, port: 0x1f0 });
        // in eax, 0x71
        assert_eq!(Io::decode(0x0071_000b).size, 4);
    }

    #[test]
    fn cr_qualifications() {
        // mov cr0, rbx
        assert_eq!(CrAccess::decode(0x300), CrAccess { cr: 0, kind: 0, gpr: 3, lmsw_data: 0 });
        // mov rax, cr4 ... from CR4 into r9
        assert_eq!(CrAccess::decode(0x914), CrAccess { cr: 4, kind: 1, gpr: 9, lmsw_data: 0 });
    }

    #[test]
    fn vmx_instructions_and_injection() {
        assert!(is_vmx_instruction(19) && is_vmx_instruction(27) && is_vmx_instruction(50));
        assert!(!is_vmx_instruction(18) && !is_vmx_instruction(28));
        assert!(is_nmi(0x8000_0202) && !is_nmi(0x8000_0306));
    }
}
