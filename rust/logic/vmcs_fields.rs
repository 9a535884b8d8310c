// SPDX-License-Identifier: GPL-2.0

//! VMCS fields as typed constants: each carries its encoding (SDM vol. 3, appendix B), its
//! width (the Rust type VMREAD/VMWRITE use) and whether software may write it. Pure logic; a
//! host test checks every declared width and access against the encoding's own bits.

use core::marker::PhantomData;

/// The width of a field's value.
pub trait Width {
    /// The Rust type holding the value.
    type Value: Copy;
    /// Encoding bits 14:13 for this width.
    const ENCODING: u32;
    /// Converts a VMREAD result.
    fn from_raw(raw: u64) -> Self::Value;
    /// Converts a value for VMWRITE.
    fn to_raw(value: Self::Value) -> u64;
}

/// 16-bit field.
pub struct W16;
/// 32-bit field.
pub struct W32;
/// 64-bit field.
pub struct W64;
/// Natural-width field (64 bits on x86_64).
pub struct Natural;

macro_rules! width {
    ($w:ty, $t:ty, $enc:expr) => {
        impl Width for $w {
            type Value = $t;
            const ENCODING: u32 = $enc;
            fn from_raw(raw: u64) -> $t {
                raw as $t
            }
            fn to_raw(value: $t) -> u64 {
                value as u64
            }
        }
    };
}
width!(W16, u16, 0);
width!(W64, u64, 1);
width!(W32, u32, 2);
width!(Natural, u64, 3);

/// Fields software writes (controls, guest state, host state).
pub struct ReadWrite;
/// VM-exit information fields: read-only.
pub struct ReadOnly;

/// A VMCS field.
pub struct Field<W: Width, A> {
    /// The field's encoding, the operand of VMREAD/VMWRITE.
    pub encoding: u32,
    _marker: PhantomData<(W, A)>,
}

impl<W: Width, A> Field<W, A> {
    const fn new(encoding: u32) -> Self {
        Self { encoding, _marker: PhantomData }
    }
}

/// What an encoding's bits 11:10 say about a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Execution, exit and entry controls.
    Control,
    /// VM-exit information (read-only).
    ExitInfo,
    /// Guest state.
    Guest,
    /// Host state.
    Host,
}

/// Decodes bits 11:10 of an encoding.
pub const fn kind(encoding: u32) -> Kind {
    match (encoding >> 10) & 3 {
        0 => Kind::Control,
        1 => Kind::ExitInfo,
        2 => Kind::Guest,
        _ => Kind::Host,
    }
}

macro_rules! fields {
    ($($(#[$doc:meta])* $name:ident: $w:ident, $a:ident = $enc:expr;)*) => {
        $( $(#[$doc])* pub const $name: Field<$w, $a> = Field::new($enc); )*
        /// Every field declared here, with its declared width encoding and writability,
        /// for the consistency test and for VMCS dumps.
        pub const ALL: &[(&str, u32, u32, bool)] = &[
            $( (stringify!($name), $enc, <$w as Width>::ENCODING, fields!(@rw $a)), )*
        ];
    };
    (@rw ReadWrite) => { true };
    (@rw ReadOnly) => { false };
}

fields! {
    /// Virtual-processor identifier tagging the guest's TLB entries.
    VPID: W16, ReadWrite = 0x0000;
    /// Guest ES selector.
    GUEST_ES_SELECTOR: W16, ReadWrite = 0x0800;
    /// Guest CS selector.
    GUEST_CS_SELECTOR: W16, ReadWrite = 0x0802;
    /// Guest SS selector.
    GUEST_SS_SELECTOR: W16, ReadWrite = 0x0804;
    /// Guest DS selector.
    GUEST_DS_SELECTOR: W16, ReadWrite = 0x0806;
    /// Guest FS selector.
    GUEST_FS_SELECTOR: W16, ReadWrite = 0x0808;
    /// Guest GS selector.
    GUEST_GS_SELECTOR: W16, ReadWrite = 0x080a;
    /// Guest LDTR selector.
    GUEST_LDTR_SELECTOR: W16, ReadWrite = 0x080c;
    /// Guest TR selector.
    GUEST_TR_SELECTOR: W16, ReadWrite = 0x080e;
    /// Host ES selector (RPL and TI must be 0).
    HOST_ES_SELECTOR: W16, ReadWrite = 0x0c00;
    /// Host CS selector.
    HOST_CS_SELECTOR: W16, ReadWrite = 0x0c02;
    /// Host SS selector.
    HOST_SS_SELECTOR: W16, ReadWrite = 0x0c04;
    /// Host DS selector.
    HOST_DS_SELECTOR: W16, ReadWrite = 0x0c06;
    /// Host FS selector.
    HOST_FS_SELECTOR: W16, ReadWrite = 0x0c08;
    /// Host GS selector.
    HOST_GS_SELECTOR: W16, ReadWrite = 0x0c0a;
    /// Host TR selector.
    HOST_TR_SELECTOR: W16, ReadWrite = 0x0c0c;
    /// I/O bitmap A (ports 0-0x7fff), physical address.
    IO_BITMAP_A: W64, ReadWrite = 0x2000;
    /// I/O bitmap B (ports 0x8000-0xffff), physical address.
    IO_BITMAP_B: W64, ReadWrite = 0x2002;
    /// MSR bitmap, physical address.
    MSR_BITMAP: W64, ReadWrite = 0x2004;
    /// MSRs stored on exit: physical address of the list.
    EXIT_MSR_STORE_ADDR: W64, ReadWrite = 0x2006;
    /// MSRs loaded on exit: physical address of the list.
    EXIT_MSR_LOAD_ADDR: W64, ReadWrite = 0x2008;
    /// MSRs loaded on entry: physical address of the list.
    ENTRY_MSR_LOAD_ADDR: W64, ReadWrite = 0x200a;
    /// Added to the TSC while the guest reads it.
    TSC_OFFSET: W64, ReadWrite = 0x2010;
    /// Virtual-APIC page, physical address (TPR shadow).
    VIRTUAL_APIC_PAGE_ADDR: W64, ReadWrite = 0x2012;
    /// EPT pointer: root table, memory type, walk length.
    EPT_POINTER: W64, ReadWrite = 0x201a;
    /// ENCLS leaves that exit (with "enable ENCLS exiting").
    ENCLS_EXITING_BITMAP: W64, ReadWrite = 0x202e;
    /// Guest-physical address of an EPT violation or misconfiguration.
    GUEST_PHYSICAL_ADDRESS: W64, ReadOnly = 0x2400;
    /// Must be all ones (no VMCS shadowing).
    VMCS_LINK_POINTER: W64, ReadWrite = 0x2800;
    /// Guest IA32_DEBUGCTL.
    GUEST_IA32_DEBUGCTL: W64, ReadWrite = 0x2802;
    /// Guest IA32_PAT.
    GUEST_IA32_PAT: W64, ReadWrite = 0x2804;
    /// Guest IA32_EFER.
    GUEST_IA32_EFER: W64, ReadWrite = 0x2806;
    /// Guest PDPTE 0 (PAE paging with EPT).
    GUEST_PDPTE0: W64, ReadWrite = 0x280a;
    /// Guest PDPTE 1.
    GUEST_PDPTE1: W64, ReadWrite = 0x280c;
    /// Guest PDPTE 2.
    GUEST_PDPTE2: W64, ReadWrite = 0x280e;
    /// Guest PDPTE 3.
    GUEST_PDPTE3: W64, ReadWrite = 0x2810;
    /// Host IA32_PAT, loaded on exit.
    HOST_IA32_PAT: W64, ReadWrite = 0x2c00;
    /// Host IA32_EFER, loaded on exit.
    HOST_IA32_EFER: W64, ReadWrite = 0x2c02;
    /// Pin-based execution controls.
    PIN_BASED_CONTROLS: W32, ReadWrite = 0x4000;
    /// Primary processor-based execution controls.
    PROC_BASED_CONTROLS: W32, ReadWrite = 0x4002;
    /// Exceptions that cause VM exits, one bit per vector.
    EXCEPTION_BITMAP: W32, ReadWrite = 0x4004;
    /// Page-fault error-code mask.
    PF_ERROR_CODE_MASK: W32, ReadWrite = 0x4006;
    /// Page-fault error-code match.
    PF_ERROR_CODE_MATCH: W32, ReadWrite = 0x4008;
    /// Number of CR3-target values.
    CR3_TARGET_COUNT: W32, ReadWrite = 0x400a;
    /// VM-exit controls.
    EXIT_CONTROLS: W32, ReadWrite = 0x400c;
    /// MSRs stored on exit: count.
    EXIT_MSR_STORE_COUNT: W32, ReadWrite = 0x400e;
    /// MSRs loaded on exit: count.
    EXIT_MSR_LOAD_COUNT: W32, ReadWrite = 0x4010;
    /// VM-entry controls.
    ENTRY_CONTROLS: W32, ReadWrite = 0x4012;
    /// MSRs loaded on entry: count.
    ENTRY_MSR_LOAD_COUNT: W32, ReadWrite = 0x4014;
    /// Event injected on entry (vector, type, error-code flag, valid).
    ENTRY_INTR_INFO: W32, ReadWrite = 0x4016;
    /// Error code of the injected exception.
    ENTRY_EXCEPTION_ERROR_CODE: W32, ReadWrite = 0x4018;
    /// Instruction length for injected software interrupts and exceptions.
    ENTRY_INSTRUCTION_LEN: W32, ReadWrite = 0x401a;
    /// TPR threshold (TPR shadow).
    TPR_THRESHOLD: W32, ReadWrite = 0x401c;
    /// Secondary processor-based execution controls.
    SECONDARY_CONTROLS: W32, ReadWrite = 0x401e;
    /// Why the last VMLAUNCH/VMRESUME/VMWRITE failed (VMfailValid).
    VM_INSTRUCTION_ERROR: W32, ReadOnly = 0x4400;
    /// Basic exit reason (bits 15:0) and entry-failure flag (bit 31).
    EXIT_REASON: W32, ReadOnly = 0x4402;
    /// Interruption that caused the exit.
    EXIT_INTR_INFO: W32, ReadOnly = 0x4404;
    /// Its error code.
    EXIT_INTR_ERROR_CODE: W32, ReadOnly = 0x4406;
    /// Event whose delivery the exit interrupted.
    IDT_VECTORING_INFO: W32, ReadOnly = 0x4408;
    /// Its error code.
    IDT_VECTORING_ERROR_CODE: W32, ReadOnly = 0x440a;
    /// Length of the exiting instruction.
    EXIT_INSTRUCTION_LEN: W32, ReadOnly = 0x440c;
    /// Operand details of the exiting instruction (INS/OUTS, descriptor tables...).
    EXIT_INSTRUCTION_INFO: W32, ReadOnly = 0x440e;
    /// Guest ES limit.
    GUEST_ES_LIMIT: W32, ReadWrite = 0x4800;
    /// Guest CS limit.
    GUEST_CS_LIMIT: W32, ReadWrite = 0x4802;
    /// Guest SS limit.
    GUEST_SS_LIMIT: W32, ReadWrite = 0x4804;
    /// Guest DS limit.
    GUEST_DS_LIMIT: W32, ReadWrite = 0x4806;
    /// Guest FS limit.
    GUEST_FS_LIMIT: W32, ReadWrite = 0x4808;
    /// Guest GS limit.
    GUEST_GS_LIMIT: W32, ReadWrite = 0x480a;
    /// Guest LDTR limit.
    GUEST_LDTR_LIMIT: W32, ReadWrite = 0x480c;
    /// Guest TR limit.
    GUEST_TR_LIMIT: W32, ReadWrite = 0x480e;
    /// Guest GDTR limit.
    GUEST_GDTR_LIMIT: W32, ReadWrite = 0x4810;
    /// Guest IDTR limit.
    GUEST_IDTR_LIMIT: W32, ReadWrite = 0x4812;
    /// Guest ES access rights.
    GUEST_ES_AR: W32, ReadWrite = 0x4814;
    /// Guest CS access rights.
    GUEST_CS_AR: W32, ReadWrite = 0x4816;
    /// Guest SS access rights.
    GUEST_SS_AR: W32, ReadWrite = 0x4818;
    /// Guest DS access rights.
    GUEST_DS_AR: W32, ReadWrite = 0x481a;
    /// Guest FS access rights.
    GUEST_FS_AR: W32, ReadWrite = 0x481c;
    /// Guest GS access rights.
    GUEST_GS_AR: W32, ReadWrite = 0x481e;
    /// Guest LDTR access rights.
    GUEST_LDTR_AR: W32, ReadWrite = 0x4820;
    /// Guest TR access rights.
    GUEST_TR_AR: W32, ReadWrite = 0x4822;
    /// Interrupt shadow (STI, MOV SS) and NMI blocking.
    GUEST_INTERRUPTIBILITY: W32, ReadWrite = 0x4824;
    /// Active, HLT, shutdown or wait-for-SIPI.
    GUEST_ACTIVITY_STATE: W32, ReadWrite = 0x4826;
    /// Guest IA32_SYSENTER_CS.
    GUEST_SYSENTER_CS: W32, ReadWrite = 0x482a;
    /// VMX-preemption timer value.
    PREEMPTION_TIMER_VALUE: W32, ReadWrite = 0x482e;
    /// Host IA32_SYSENTER_CS.
    HOST_SYSENTER_CS: W32, ReadWrite = 0x4c00;
    /// CR0 bits owned by the host: guest writes to them exit.
    CR0_GUEST_HOST_MASK: Natural, ReadWrite = 0x6000;
    /// CR4 bits owned by the host.
    CR4_GUEST_HOST_MASK: Natural, ReadWrite = 0x6002;
    /// What the guest reads for host-owned CR0 bits.
    CR0_READ_SHADOW: Natural, ReadWrite = 0x6004;
    /// What the guest reads for host-owned CR4 bits.
    CR4_READ_SHADOW: Natural, ReadWrite = 0x6006;
    /// Exit qualification: details of the exit, per reason.
    EXIT_QUALIFICATION: Natural, ReadOnly = 0x6400;
    /// Guest linear address of the access that exited.
    GUEST_LINEAR_ADDRESS: Natural, ReadOnly = 0x640a;
    /// Guest CR0.
    GUEST_CR0: Natural, ReadWrite = 0x6800;
    /// Guest CR3.
    GUEST_CR3: Natural, ReadWrite = 0x6802;
    /// Guest CR4.
    GUEST_CR4: Natural, ReadWrite = 0x6804;
    /// Guest ES base.
    GUEST_ES_BASE: Natural, ReadWrite = 0x6806;
    /// Guest CS base.
    GUEST_CS_BASE: Natural, ReadWrite = 0x6808;
    /// Guest SS base.
    GUEST_SS_BASE: Natural, ReadWrite = 0x680a;
    /// Guest DS base.
    GUEST_DS_BASE: Natural, ReadWrite = 0x680c;
    /// Guest FS base.
    GUEST_FS_BASE: Natural, ReadWrite = 0x680e;
    /// Guest GS base.
    GUEST_GS_BASE: Natural, ReadWrite = 0x6810;
    /// Guest LDTR base.
    GUEST_LDTR_BASE: Natural, ReadWrite = 0x6812;
    /// Guest TR base.
    GUEST_TR_BASE: Natural, ReadWrite = 0x6814;
    /// Guest GDTR base.
    GUEST_GDTR_BASE: Natural, ReadWrite = 0x6816;
    /// Guest IDTR base.
    GUEST_IDTR_BASE: Natural, ReadWrite = 0x6818;
    /// Guest DR7.
    GUEST_DR7: Natural, ReadWrite = 0x681a;
    /// Guest RSP.
    GUEST_RSP: Natural, ReadWrite = 0x681c;
    /// Guest RIP.
    GUEST_RIP: Natural, ReadWrite = 0x681e;
    /// Guest RFLAGS.
    GUEST_RFLAGS: Natural, ReadWrite = 0x6820;
    /// Pending debug exceptions.
    GUEST_PENDING_DBG_EXCEPTIONS: Natural, ReadWrite = 0x6822;
    /// Guest IA32_SYSENTER_ESP.
    GUEST_SYSENTER_ESP: Natural, ReadWrite = 0x6824;
    /// Guest IA32_SYSENTER_EIP.
    GUEST_SYSENTER_EIP: Natural, ReadWrite = 0x6826;
    /// Host CR0, loaded on exit.
    HOST_CR0: Natural, ReadWrite = 0x6c00;
    /// Host CR3 (the current process's page tables).
    HOST_CR3: Natural, ReadWrite = 0x6c02;
    /// Host CR4.
    HOST_CR4: Natural, ReadWrite = 0x6c04;
    /// Host FS base.
    HOST_FS_BASE: Natural, ReadWrite = 0x6c06;
    /// Host GS base (per-CPU data).
    HOST_GS_BASE: Natural, ReadWrite = 0x6c08;
    /// Host TR base (per-CPU TSS).
    HOST_TR_BASE: Natural, ReadWrite = 0x6c0a;
    /// Host GDTR base (per-CPU GDT).
    HOST_GDTR_BASE: Natural, ReadWrite = 0x6c0c;
    /// Host IDTR base.
    HOST_IDTR_BASE: Natural, ReadWrite = 0x6c0e;
    /// Host IA32_SYSENTER_ESP.
    HOST_SYSENTER_ESP: Natural, ReadWrite = 0x6c10;
    /// Host IA32_SYSENTER_EIP.
    HOST_SYSENTER_EIP: Natural, ReadWrite = 0x6c12;
    /// Host RSP on exit (set by the entry stub).
    HOST_RSP: Natural, ReadWrite = 0x6c14;
    /// Host RIP on exit: the entry stub's exit label.
    HOST_RIP: Natural, ReadWrite = 0x6c16;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_width_and_access_match_the_encoding() {
        for &(name, enc, width, writable) in ALL {
            assert_eq!((enc >> 13) & 3, width, "{name}: width bits");
            assert_eq!(enc & 1, 0, "{name}: full access type");
            assert_eq!(writable, kind(enc) != Kind::ExitInfo, "{name}: read-only iff exit info");
        }
    }

    #[test]
    fn encodings_are_unique() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(ALL[i + 1..].iter().all(|b| b.1 != a.1), "{} repeated", a.0);
        }
    }
}
