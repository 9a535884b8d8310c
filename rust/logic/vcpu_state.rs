// SPDX-License-Identifier: GPL-2.0

//! Architectural vCPU state as KVM's ABI presents it: the reset values after
//! `KVM_CREATE_VCPU` (SDM 10.1.1, "Processor State After Reset", as KVM sets it) and the
//! validity rules `KVM_SET_SREGS` enforces. Pure logic, host-tested.

use super::{
    arch::{apic_base, cr0, cr4, efer, rflags},
    kvm_abi::{Dtable, Regs, Segment, Sregs},
};

/// Every CR4 bit rvmx may give a guest: VME..OSXMMEXCPT, FSGSBASE, PCIDE, OSXSAVE, SMEP, SMAP.
/// Never VMXE (no nested VMX), PKE (PKRU is not switched: a guest's WRPKRU would become the
/// VMM's), UMIP, LA57, CET, FRED, LAM (not emulated).
pub const CR4_SUPPORTED: u64 = cr4::VME | cr4::PVI | cr4::TSD | cr4::DE | cr4::PSE | cr4::PAE | cr4::MCE
    | cr4::PGE | cr4::PCE | cr4::OSFXSR | cr4::OSXMMEXCPT | cr4::FSGSBASE | cr4::PCIDE | cr4::OSXSAVE
    | cr4::SMEP | cr4::SMAP;
/// CR4 bits the guest owns when it may set them: its writes to them do not exit, its reads
/// see the real register (KVM's `KVM_POSSIBLE_CR4_GUEST_BITS` without CET). Every other bit is
/// the host's: writes exit and are checked, reads come from the shadow.
pub const CR4_GUEST_OWNED: u64 =
    cr4::PVI | cr4::DE | cr4::PCE | cr4::OSFXSR | cr4::OSXMMEXCPT | cr4::PGE | cr4::TSD | cr4::FSGSBASE;
/// EFER bits a guest may set on rvmx.
pub const EFER_SUPPORTED: u64 = efer::SCE | efer::LME | efer::LMA | efer::NXE;
/// The features behind CR4 bits, from the guest's CPUID (and, for XSAVE, the state rvmx
/// switches on this host).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cr4Features {
    /// Leaf 1 ECX.XSAVE, and rvmx switches XSAVE state: OSXSAVE.
    pub xsave: bool,
    /// Leaf 1 ECX.PCID: PCIDE.
    pub pcid: bool,
    /// Leaf 7.0 EBX.FSGSBASE.
    pub fsgsbase: bool,
    /// Leaf 7.0 EBX.SMEP.
    pub smep: bool,
    /// Leaf 7.0 EBX.SMAP.
    pub smap: bool,
}

/// The CR4 bits a guest may set (the complement of KVM's `cr4_guest_rsvd_bits`): those
/// rvmx supports, whose feature the guest's CPUID lists, and that the processor allows in
/// VMX operation (`cr4_fixed1`, IA32_VMX_CR4_FIXED1), so no value accepted here can fail a
/// VM entry.
pub const fn cr4_allowed(f: Cr4Features, cr4_fixed1: u64) -> u64 {
    const fn gate(on: bool, bit: u64) -> u64 {
        if on { 0 } else { bit }
    }
    let reserved = gate(f.xsave, cr4::OSXSAVE) | gate(f.pcid, cr4::PCIDE) | gate(f.fsgsbase, cr4::FSGSBASE)
        | gate(f.smep, cr4::SMEP) | gate(f.smap, cr4::SMAP);
    CR4_SUPPORTED & !reserved & cr4_fixed1
}

/// The CR4 guest/host mask for a guest that may set `allowed`: every bit but those it owns.
pub const fn cr4_guest_host_mask(allowed: u64) -> u64 {
    !(CR4_GUEST_OWNED & allowed)
}

/// The local APIC's default base with the enable bit (IA32_APIC_BASE).
pub const APIC_BASE_DEFAULT: u64 = 0xfee0_0000 | apic_base::ENABLE;
/// Guest physical addresses are limited to this many bits (the EPT covers 48).
pub const MAX_PHYS_BITS: u32 = 48;

/// A segment in the reset state: `selector`, `base`, limit 0xffff, present, given type.
const fn reset_segment(selector: u16, base: u64, type_: u8, s: u8) -> Segment {
    Segment {
        base,
        limit: 0xffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 0,
        s,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// General-purpose registers after reset: execution starts at F000:FFF0, RDX holds the
/// processor signature (KVM's 0x600 until CPUID is set).
pub const fn reset_regs() -> Regs {
    Regs {
        rax: 0, rbx: 0, rcx: 0, rdx: 0x600, rsi: 0, rdi: 0, rsp: 0, rbp: 0, r8: 0, r9: 0,
        r10: 0, r11: 0, r12: 0, r13: 0, r14: 0, r15: 0, rip: 0xfff0, rflags: rflags::FIXED,
    }
}

/// Segment and control registers after reset (`bsp`: the VM's boot CPU, IA32_APIC_BASE.BSP).
pub const fn reset_sregs(bsp: bool) -> Sregs {
    let data = reset_segment(0, 0, 3, 1); // read/write, accessed
    let table = Dtable { base: 0, limit: 0xffff, padding: [0; 3] };
    Sregs {
        cs: reset_segment(0xf000, 0xffff_0000, 0xb, 1), // execute/read, accessed
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: reset_segment(0, 0, 0xb, 0),  // busy 32-bit TSS
        ldt: reset_segment(0, 0, 0x2, 0), // LDT
        gdt: table,
        idt: table,
        cr0: cr0::ET | cr0::NW | cr0::CD,
        cr2: 0,
        cr3: 0,
        cr4: 0,
        cr8: 0,
        efer: 0,
        apic_base: APIC_BASE_DEFAULT | if bsp { apic_base::BSP } else { 0 },
        interrupt_bitmap: [0; 4],
    }
}

/// Segment and control registers after INIT (KVM's `kvm_vcpu_reset(vcpu, true)`): as after
/// RESET, but CR0.CD/NW and IA32_APIC_BASE keep their values.
pub const fn init_sregs(old: &Sregs) -> Sregs {
    let mut s = reset_sregs(true);
    s.cr0 = cr0::ET | old.cr0 & (cr0::NW | cr0::CD);
    s.apic_base = old.apic_base;
    s
}

/// The EFER bits a guest may set given its CPUID (KVM's `__kvm_valid_efer`): long mode needs
/// CPUID.80000001H:EDX.LM, NXE needs .NX; SCE is always allowed.
pub const fn efer_allowed(cpuid_lm: bool, cpuid_nx: bool) -> u64 {
    efer::SCE
        | if cpuid_lm { efer::LME | efer::LMA } else { 0 }
        | if cpuid_nx { efer::NXE } else { 0 }
}

/// Whether `KVM_SET_SREGS` accepts `s` (KVM's `kvm_is_valid_sregs` and EFER/CR checks), for a
/// vCPU whose CPUID allows the EFER bits `efer_ok` (see [`efer_allowed`]) and CR4 bits
/// `cr4_ok` ([`cr4_allowed`]).
pub fn sregs_valid(s: &Sregs, efer_ok: u64, cr4_ok: u64) -> bool {
    if s.efer & !(EFER_SUPPORTED & efer_ok) != 0 || s.cr4 & !cr4_ok != 0 {
        return false;
    }
    // CR0: bits 63:32 reserved; PG needs PE; NW needs CD.
    if s.cr0 >> 32 != 0 || (s.cr0 & cr0::PG != 0 && s.cr0 & cr0::PE == 0) {
        return false;
    }
    if s.cr0 & cr0::NW != 0 && s.cr0 & cr0::CD == 0 {
        return false;
    }
    if s.efer & efer::LME != 0 && s.cr0 & cr0::PG != 0 {
        // Long mode: PAE on, LMA reported, CR3 within the physical address width.
        s.cr4 & cr4::PAE != 0 && s.efer & efer::LMA != 0 && s.cr3 >> MAX_PHYS_BITS == 0
    } else {
        s.efer & efer::LMA == 0 && s.cs.l == 0
    }
}

/// The interrupt `KVM_SET_SREGS` queues: the lowest bit set in `interrupt_bitmap` (KVM
/// takes the first and ignores the rest).
pub fn pending_interrupt(s: &Sregs) -> Option<u8> {
    let (word, bits) = s.interrupt_bitmap.iter().enumerate().find(|(_, b)| **b != 0)?;
    Some(((word << 6) | bits.trailing_zeros() as usize) as u8) // 64 bits a word
}

/// VMCS access-rights encoding of a segment (SDM 25.4.1); unusable segments are bit 16 only,
/// as KVM writes them.
pub const fn segment_ar(s: &Segment) -> u32 {
    if s.unusable != 0 || s.present == 0 {
        return 1 << 16;
    }
    (s.type_ as u32 & 0xf)
        | (s.s as u32 & 1) << 4
        | (s.dpl as u32 & 3) << 5
        | 1 << 7
        | (s.avl as u32 & 1) << 12
        | (s.l as u32 & 1) << 13
        | (s.db as u32 & 1) << 14
        | (s.g as u32 & 1) << 15
}

/// The `kvm_segment` for VMCS fields, as KVM's `vmx_get_segment` builds it.
pub const fn segment_from_vmcs(selector: u16, base: u64, limit: u32, ar: u32) -> Segment {
    let unusable = (ar >> 16) & 1;
    Segment {
        base,
        limit,
        selector,
        type_: (ar & 0xf) as u8,
        s: ((ar >> 4) & 1) as u8,
        dpl: ((ar >> 5) & 3) as u8,
        present: if unusable != 0 { 0 } else { ((ar >> 7) & 1) as u8 },
        avl: ((ar >> 12) & 1) as u8,
        l: ((ar >> 13) & 1) as u8,
        db: ((ar >> 14) & 1) as u8,
        g: ((ar >> 15) & 1) as u8,
        unusable: unusable as u8,
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn access_rights_round_trip() {
        let s = reset_sregs(true);
        assert_eq!(segment_ar(&s.cs), 0x9b);
        assert_eq!(segment_ar(&s.ds), 0x93);
        assert_eq!(segment_ar(&s.tr), 0x8b);
        assert_eq!(segment_ar(&s.ldt), 0x82);
        let code64 = Segment { l: 1, g: 1, limit: 0xffff_ffff, ..s.cs };
        assert_eq!(segment_ar(&code64), 0xa09b);
        let back = segment_from_vmcs(code64.selector, code64.base, code64.limit, 0xa09b);
        assert_eq!(back, code64);
        let unusable = segment_from_vmcs(0, 0, 0, 1 << 16);
        assert_eq!((unusable.unusable, unusable.present), (1, 0));
        assert_eq!(segment_ar(&unusable), 1 << 16);
    }

    use super::*;

    #[test]
    fn reset_state_is_f000_fff0() {
        let r = reset_regs();
        assert_eq!((r.rip, r.rflags, r.rdx), (0xfff0, 2, 0x600));
        let s = reset_sregs(true);
        assert_eq!((s.cs.selector, s.cs.base, s.cs.type_), (0xf000, 0xffff_0000, 0xb));
        assert_eq!(s.cr0, 0x6000_0010);
        assert_eq!(s.apic_base, 0xfee0_0900);
        assert_eq!(reset_sregs(false).apic_base, 0xfee0_0800);
        assert!(sregs_valid(&s, efer_allowed(false, false), CR4_SUPPORTED));
    }

    #[test]
    fn init_keeps_cache_bits_and_apic_base() {
        let mut old = reset_sregs(false);
        old.cr0 = cr0::PE | cr0::PG | cr0::CD;
        old.cr4 = 0x20;
        old.efer = efer::LME | efer::LMA;
        old.apic_base = 0xfee0_0c00;
        old.cs.selector = 0x10;
        let s = init_sregs(&old);
        assert_eq!(s.cr0, cr0::ET | cr0::CD);
        assert_eq!((s.cr4, s.efer, s.apic_base), (0, 0, 0xfee0_0c00));
        assert_eq!((s.cs.selector, s.cs.base), (0xf000, 0xffff_0000));
    }

    #[test]
    fn long_mode_rules() {
        let mut s = reset_sregs(true);
        s.cr0 = cr0::PE | cr0::PG | cr0::ET;
        s.cr4 = cr4::PAE;
        s.efer = efer::LME | efer::LMA;
        s.cs.l = 1;
        let all = efer_allowed(true, true);
        assert!(sregs_valid(&s, all, CR4_SUPPORTED));
        assert!(!sregs_valid(&s, efer_allowed(false, true), CR4_SUPPORTED), "long mode without CPUID.LM");
        assert!(!sregs_valid(&Sregs { efer: s.efer | efer::NXE, ..s }, efer_allowed(true, false), CR4_SUPPORTED));
        assert!(!sregs_valid(&Sregs { cr4: 0, ..s }, all, CR4_SUPPORTED), "long mode without PAE");
        assert!(!sregs_valid(&Sregs { efer: efer::LME, ..s }, all, CR4_SUPPORTED), "LME+PG without LMA");
        assert!(!sregs_valid(&Sregs { cr3: 1 << 50, ..s }, all, CR4_SUPPORTED), "CR3 beyond MAXPHYADDR");
        let legacy = Sregs { efer: 0, ..s };
        assert!(!sregs_valid(&legacy, all, CR4_SUPPORTED), "CS.L outside long mode");
        assert!(!sregs_valid(&Sregs { efer: 1 << 14, ..reset_sregs(true) }, all, CR4_SUPPORTED), "unknown EFER bit");
        assert!(!sregs_valid(&Sregs { cr4: 1 << 13, ..reset_sregs(true) }, all, CR4_SUPPORTED), "VMXE");
        assert!(!sregs_valid(&Sregs { cr0: cr0::PG, ..reset_sregs(true) }, all, CR4_SUPPORTED), "PG without PE");
        let osxsave = Sregs { cr4: cr4::OSXSAVE, ..reset_sregs(true) };
        let xsave = Cr4Features { xsave: true, ..Default::default() };
        assert!(sregs_valid(&osxsave, all, cr4_allowed(xsave, !0)));
        assert!(!sregs_valid(&osxsave, all, cr4_allowed(Cr4Features::default(), !0)), "OSXSAVE without XSAVE");
        assert!(!sregs_valid(&osxsave, all, cr4_allowed(xsave, !cr4::OSXSAVE)), "not in VMX's fixed-1 bits");
    }

    #[test]
    fn cr0_writes() {
        assert_eq!(cr0::written(0x8001_0033 | 1 << 6 | 1 << 28), 0x8001_0033, "reserved bits dropped");
        assert_eq!(cr0::written(0x8001_0023), 0x8001_0033, "ET stays set");
        assert_eq!(cr0::written(0xe005_003f), 0xe005_003f);
    }

    #[test]
    fn cr4_follows_cpuid_and_owns_the_rest() {
        let none = cr4_allowed(Cr4Features::default(), !0);
        assert_eq!(none, 0x7ff, "VME..OSXMMEXCPT need no CPUID bit");
        let all = Cr4Features { xsave: true, pcid: true, fsgsbase: true, smep: true, smap: true };
        assert_eq!(cr4_allowed(all, !0), CR4_SUPPORTED);
        for bit in [11, 12, 13, 19, 22, 23, 24, 25, 28, 32, 63] {
            assert_eq!(cr4_allowed(all, !0) & 1 << bit, 0, "CR4 bit {bit} is never the guest's");
        }
        // The host owns (intercepts) everything the guest may not set, and PAE, PSE, SMEP...
        let mask = cr4_guest_host_mask(none);
        assert_eq!(mask & (1 << 22), 1 << 22, "PKE");
        assert_eq!(mask & (cr4::PAE | cr4::PSE | cr4::SMEP | cr4::OSXSAVE | 1 << 13), cr4::PAE | cr4::PSE | cr4::SMEP | cr4::OSXSAVE | 1 << 13);
        assert_eq!(mask & cr4::FSGSBASE, cr4::FSGSBASE, "not in the guest's CPUID: intercepted");
        assert_eq!(!cr4_guest_host_mask(cr4_allowed(all, !0)), CR4_GUEST_OWNED);
    }

    #[test]
    fn interrupt_bitmap() {
        let mut s = reset_sregs(true);
        assert_eq!(pending_interrupt(&s), None);
        s.interrupt_bitmap[1] = 1 << 3 | 1 << 9;
        s.interrupt_bitmap[2] = 1;
        assert_eq!(pending_interrupt(&s), Some(67), "the lowest of several");
    }
}
