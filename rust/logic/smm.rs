// SPDX-License-Identifier: GPL-2.0

//! System-management mode as KVM emulates it (`arch/x86/kvm/smm.c`): the CPU state an SMI
//! saves at SMBASE + 0xfe00 (KVM's 512-byte map: AMD64's layout for a vCPU whose CPUID has long
//! mode, the P6 one otherwise), the state SMM starts in, and what RSM loads back. Pure logic:
//! the caller reads and writes guest memory, masks NMIs and checks the result as `KVM_SET_SREGS`
//! would. Not wired into the module yet (work in progress for issue 20's smm_test).

use super::{
    arch::{cr0, cr4, dr, efer, rflags},
    vcpu_state::MAX_PHYS_BITS,
    kvm_abi::{Dtable, Regs, Segment, Sregs},
};

/// SMBASE at RESET.
pub const DEFAULT_SMBASE: u32 = 0x3_0000;
/// Where the save-state map is, from SMBASE.
pub const SAVE_OFFSET: u64 = 0xfe00;
/// The map's size.
pub const SAVE_LEN: usize = 512;
/// Where SMM code starts, from SMBASE (CS base).
pub const ENTRY_RIP: u64 = 0x8000;
/// The revision identifiers KVM writes (bit 17: SMBASE relocation).
const REVISION_64: u32 = 0x0002_0064;
const REVISION_32: u32 = 0x0002_0000;
/// DR7 in SMM.
const DR7_SMM: u64 = 0x400;

/// Where the save-state map of a CPU with `smbase` is.
pub const fn map_address(smbase: u32) -> u64 {
    (smbase as u64).wrapping_add(SAVE_OFFSET)
}

/// `kvm_run.flags`: the vCPU is in SMM.
pub const KVM_RUN_X86_SMM: u16 = 1 << 0;

/// A vCPU's system-management-mode state beside its registers (KVM's `HF_SMM_MASK` and
/// `HF_SMM_INSIDE_NMI_MASK`; SMBASE is an MSR, a pending SMI an event).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmmState {
    /// In SMM: memory is address space 1, INIT is latched, RSM returns.
    pub active: bool,
    /// The SMI came while NMIs were blocked: RSM leaves them blocked.
    pub inside_nmi: bool,
}

/// What entering SMM saves, and RSM restores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSnapshot {
    /// General registers, RIP and RFLAGS.
    pub regs: Regs,
    /// Segments, descriptor tables, control registers and EFER.
    pub sregs: Sregs,
    /// DR6.
    pub dr6: u64,
    /// DR7.
    pub dr7: u64,
    /// IA32_SMBASE.
    pub smbase: u32,
    /// The interrupt shadow in `kvm_vcpu_events` encoding (MOV SS 1, STI 2), as KVM keeps it
    /// in the map's `int_shadow`.
    pub shadow: u8,
}

/// The general-purpose registers in the processor's numbering (RAX, RCX, RDX, RBX, RSP, RBP,
/// RSI, RDI, R8..R15), as both maps order them.
fn gprs(r: &Regs) -> [u64; 16] {
    [r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15]
}

fn set_gprs(r: &mut Regs, g: [u64; 16]) {
    [r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15] = g;
}

/// A segment's attributes as the maps keep them (`enter_smm_get_segment_flags`: descriptor
/// bits 8..23 of the second dword).
const fn seg_flags(s: &Segment) -> u32 {
    (s.g as u32 & 1) << 23
        | (s.db as u32 & 1) << 22
        | (s.l as u32 & 1) << 21
        | (s.avl as u32 & 1) << 20
        | (s.present as u32 & 1) << 15
        | (s.dpl as u32 & 3) << 13
        | (s.s as u32 & 1) << 12
        | (s.type_ as u32 & 15) << 8
}

/// [`seg_flags`] backwards (`rsm_set_desc_flags`): a segment not present is unusable.
const fn seg_from(selector: u16, base: u64, limit: u32, flags: u32) -> Segment {
    let present = (flags >> 15 & 1) as u8;
    Segment {
        base,
        limit,
        selector,
        type_: (flags >> 8 & 15) as u8,
        present,
        dpl: (flags >> 13 & 3) as u8,
        db: (flags >> 22 & 1) as u8,
        s: (flags >> 12 & 1) as u8,
        l: (flags >> 21 & 1) as u8,
        g: (flags >> 23 & 1) as u8,
        avl: (flags >> 20 & 1) as u8,
        unusable: (present == 0) as u8,
        padding: 0,
    }
}

/// Little-endian fields of the map, by their offset from SMBASE + 0x8000 as KVM's
/// `CHECK_SMRAM*_OFFSET` names them (0xfe00 is the map's first byte).
struct Map<'a>(&'a mut [u8; SAVE_LEN]);

impl Map<'_> {
    fn put(&mut self, at: u32, bytes: &[u8]) {
        let start = at.wrapping_sub(0xfe00) as usize;
        if let Some(d) = self.0.get_mut(start..start.saturating_add(bytes.len())) {
            d.copy_from_slice(bytes);
        }
    }
    fn u8(&mut self, at: u32, v: u8) {
        self.put(at, &[v]);
    }
    fn u16(&mut self, at: u32, v: u16) {
        self.put(at, &v.to_le_bytes());
    }
    fn u32(&mut self, at: u32, v: u32) {
        self.put(at, &v.to_le_bytes());
    }
    fn u64(&mut self, at: u32, v: u64) {
        self.put(at, &v.to_le_bytes());
    }
}

/// Reads fields of a map (0 past its end, which cannot happen for the offsets used).
fn get<const N: usize>(m: &[u8; SAVE_LEN], at: u32) -> [u8; N] {
    let start = at.wrapping_sub(0xfe00) as usize;
    m.get(start..start.saturating_add(N)).and_then(|b| b.try_into().ok()).unwrap_or([0; N])
}
fn get_u16(m: &[u8; SAVE_LEN], at: u32) -> u16 {
    u16::from_le_bytes(get(m, at))
}
fn get_u32(m: &[u8; SAVE_LEN], at: u32) -> u32 {
    u32::from_le_bytes(get(m, at))
}
fn get_u64(m: &[u8; SAVE_LEN], at: u32) -> u64 {
    u64::from_le_bytes(get(m, at))
}

/// The segments of the 64-bit map, each 16 bytes (selector, attributes, limit, base).
const SEGS_64: [u32; 6] = [0xfe00, 0xfe10, 0xfe20, 0xfe30, 0xfe40, 0xfe50]; // ES CS SS DS FS GS
const GDTR_64: u32 = 0xfe60;
const LDTR_64: u32 = 0xfe70;
const IDTR_64: u32 = 0xfe80;
const TR_64: u32 = 0xfe90;

/// The segments of the 32-bit map (flags, limit, base) and their selectors, in the order
/// ES CS SS DS FS GS.
const SEGS_32: [(u32, u32); 6] = [(0xff84, 0xffa8), (0xff90, 0xffac), (0xff9c, 0xffb0), (0xff2c, 0xffb4), (0xff38, 0xffb8), (0xff44, 0xffbc)];

fn segs(s: &Sregs) -> [&Segment; 6] {
    [&s.es, &s.cs, &s.ss, &s.ds, &s.fs, &s.gs]
}

/// The save-state map an SMI writes for `cpu` (`enter_smm_save_state_64/32`); `long_mode`:
/// the vCPU's CPUID has LM.
pub fn save(cpu: &CpuSnapshot, long_mode: bool) -> [u8; SAVE_LEN] {
    let mut bytes = [0u8; SAVE_LEN];
    let mut m = Map(&mut bytes);
    let s = &cpu.sregs;
    if long_mode {
        let seg64 = |m: &mut Map<'_>, at: u32, g: &Segment| {
            m.u16(at, g.selector);
            m.u16(at.wrapping_add(2), (seg_flags(g) >> 8) as u16);
            m.u32(at.wrapping_add(4), g.limit);
            m.u64(at.wrapping_add(8), g.base);
        };
        for (at, g) in SEGS_64.into_iter().zip(segs(s)) {
            seg64(&mut m, at, g);
        }
        seg64(&mut m, LDTR_64, &s.ldt);
        seg64(&mut m, TR_64, &s.tr);
        for (at, d) in [(GDTR_64, &s.gdt), (IDTR_64, &s.idt)] {
            m.u32(at.wrapping_add(4), d.limit.into());
            m.u64(at.wrapping_add(8), d.base);
        }
        m.u8(0xfecb, cpu.shadow);
        m.u64(0xfed0, s.efer);
        m.u32(0xfefc, REVISION_64);
        m.u32(0xff00, cpu.smbase);
        for (at, v) in [(0xff48, s.cr4), (0xff50, s.cr3), (0xff58, s.cr0), (0xff60, cpu.dr7), (0xff68, cpu.dr6), (0xff70, cpu.regs.rflags), (0xff78, cpu.regs.rip)] {
            m.u64(at, v);
        }
        // R15 first, RAX last.
        for (i, v) in gprs(&cpu.regs).into_iter().rev().enumerate() {
            m.u64(0xff80_u32.wrapping_add(8_u32.wrapping_mul(i as u32)), v);
        }
    } else {
        let seg32 = |m: &mut Map<'_>, (at, sel): (u32, u32), g: &Segment| {
            m.u32(sel, g.selector.into());
            m.u32(at, seg_flags(g));
            m.u32(at.wrapping_add(4), g.limit);
            m.u32(at.wrapping_add(8), g.base as u32);
        };
        for (at, g) in SEGS_32.into_iter().zip(segs(s)) {
            seg32(&mut m, at, g);
        }
        seg32(&mut m, (0xff78, 0xffc0), &s.ldt);
        seg32(&mut m, (0xff5c, 0xffc4), &s.tr);
        for (at, d) in [(0xff6c_u32, &s.gdt), (0xff50, &s.idt)] {
            m.u32(at.wrapping_add(4), d.limit.into());
            m.u32(at.wrapping_add(8), d.base as u32);
        }
        m.u32(0xfef8, cpu.smbase);
        m.u32(0xfefc, REVISION_32);
        m.u32(0xff14, s.cr4 as u32);
        m.u8(0xff1a, cpu.shadow);
        m.u32(0xffc8, cpu.dr7 as u32);
        m.u32(0xffcc, cpu.dr6 as u32);
        for (i, v) in gprs(&cpu.regs).into_iter().take(8).enumerate() {
            m.u32(0xffd0_u32.wrapping_add(4_u32.wrapping_mul(i as u32)), v as u32);
        }
        for (at, v) in [(0xfff0, cpu.regs.rip), (0xfff4, cpu.regs.rflags), (0xfff8, s.cr3), (0xfffc, s.cr0)] {
            m.u32(at, v as u32);
        }
    }
    bytes
}

/// The state SMM starts in (`enter_smm`), from `cpu`: RIP 0x8000, RFLAGS 2, CR0 without PE,
/// EM, TS and PG, CR4 0, IDT limit 0, DR7 0x400, CS based at SMBASE and the data segments at
/// 0, all 4 GiB read/write; EFER 0 on a long-mode CPU. General registers, CR3, GDTR, LDTR and
/// TR stay. The interrupt shadow is dropped; NMIs are the caller's.
pub fn entry_state(cpu: &CpuSnapshot, long_mode: bool) -> (Regs, Sregs, u64) {
    let mut regs = cpu.regs;
    (regs.rip, regs.rflags) = (ENTRY_RIP, rflags::FIXED);
    let mut s = cpu.sregs;
    s.cr0 &= !(cr0::PE | cr0::EM | cr0::TS | cr0::PG);
    s.cr4 = 0;
    s.idt = Dtable::default();
    let flat = |selector: u16, base: u64| Segment {
        base, limit: 0xffff_ffff, selector, type_: 3, present: 1, dpl: 0, db: 0, s: 1, l: 0, g: 1, avl: 0, unusable: 0, padding: 0,
    };
    s.cs = flat((cpu.smbase >> 4) as u16, cpu.smbase.into());
    let data = flat(0, 0);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (data, data, data, data, data);
    if long_mode {
        s.efer = 0;
    } else {
        s.efer &= !efer::LMA;
    }
    (regs, s, DR7_SMM)
}

/// What RSM loads from a map (`rsm_load_state_64/32`), over `now` (the vCPU's state in SMM,
/// which supplies what the map does not hold: CR2, CR8, APIC base, and EFER on a 32-bit
/// CPU). `None` where KVM's RSM fails (a DR6 or DR7 with bits 63:32 set, CR4.PCIDE outside
/// long mode, CR3 beyond the physical address width): the vCPU then shuts down. The caller
/// still checks the result as `KVM_SET_SREGS` would (CR0/CR4/EFER against the CPUID), which
/// covers the rest of KVM's `kvm_set_cr*` and EFER checks.
pub fn restore(map: &[u8; SAVE_LEN], long_mode: bool, now: &CpuSnapshot) -> Option<CpuSnapshot> {
    let mut cpu = *now;
    let s = &mut cpu.sregs;
    if long_mode {
        let mut g = [0u64; 16];
        for (i, v) in g.iter_mut().rev().enumerate() {
            *v = get_u64(map, 0xff80_u32.wrapping_add(8_u32.wrapping_mul(i as u32)));
        }
        set_gprs(&mut cpu.regs, g);
        cpu.regs.rip = get_u64(map, 0xff78);
        cpu.regs.rflags = get_u64(map, 0xff70) | rflags::FIXED;
        (cpu.dr6, cpu.dr7) = (get_u64(map, 0xff68), get_u64(map, 0xff60));
        cpu.smbase = get_u32(map, 0xff00);
        let seg64 = |at: u32| seg_from(get_u16(map, at), get_u64(map, at.wrapping_add(8)), get_u32(map, at.wrapping_add(4)), u32::from(get_u16(map, at.wrapping_add(2))) << 8);
        [s.es, s.cs, s.ss, s.ds, s.fs, s.gs] = SEGS_64.map(seg64);
        (s.ldt, s.tr) = (seg64(LDTR_64), seg64(TR_64));
        let dt = |at: u32| Dtable { base: get_u64(map, at.wrapping_add(8)), limit: get_u32(map, at.wrapping_add(4)) as u16, padding: [0; 3] };
        (s.gdt, s.idt) = (dt(GDTR_64), dt(IDTR_64));
        (s.cr0, s.cr3, s.cr4) = (get_u64(map, 0xff58), get_u64(map, 0xff50), get_u64(map, 0xff48));
        // EFER.LMA follows LME and paging, as loading CR0 sets it.
        let e = get_u64(map, 0xfed0) & !efer::LMA;
        let lma = e & efer::LME != 0 && s.cr0 & cr0::PG != 0;
        s.efer = if lma { e | efer::LMA } else { e };
        cpu.shadow = get::<1>(map, 0xfecb)[0];
    } else {
        let mut g = gprs(&cpu.regs);
        for (i, v) in g.iter_mut().take(8).enumerate() {
            *v = get_u32(map, 0xffd0_u32.wrapping_add(4_u32.wrapping_mul(i as u32))).into();
        }
        set_gprs(&mut cpu.regs, g);
        cpu.regs.rip = get_u32(map, 0xfff0).into();
        cpu.regs.rflags = u64::from(get_u32(map, 0xfff4)) | rflags::FIXED;
        (cpu.dr6, cpu.dr7) = (get_u32(map, 0xffcc).into(), get_u32(map, 0xffc8).into());
        let seg32 = |(at, sel): (u32, u32)| seg_from(get_u32(map, sel) as u16, get_u32(map, at.wrapping_add(8)).into(), get_u32(map, at.wrapping_add(4)), get_u32(map, at));
        [s.es, s.cs, s.ss, s.ds, s.fs, s.gs] = SEGS_32.map(seg32);
        (s.ldt, s.tr) = (seg32((0xff78, 0xffc0)), seg32((0xff5c, 0xffc4)));
        let dt = |at: u32| Dtable { base: get_u32(map, at.wrapping_add(8)).into(), limit: get_u32(map, at.wrapping_add(4)) as u16, padding: [0; 3] };
        (s.gdt, s.idt) = (dt(0xff6c), dt(0xff50));
        cpu.smbase = get_u32(map, 0xfef8);
        (s.cr0, s.cr3, s.cr4) = (get_u32(map, 0xfffc).into(), get_u32(map, 0xfff8).into(), get_u32(map, 0xff14).into());
        cpu.shadow = get::<1>(map, 0xff1a)[0];
    }
    // As KVM's kvm_set_dr: the fixed bits set, and high bits refused.
    (cpu.dr6, cpu.dr7) = (dr::dr6(cpu.dr6)?, dr::dr7(cpu.dr7)?);
    // What KVM's CR writes refuse beyond KVM_SET_SREGS' checks: PCIDE outside long mode, CR3
    // beyond the physical address width in any mode.
    let s = &cpu.sregs;
    if (s.cr4 & cr4::PCIDE != 0 && s.efer & efer::LMA == 0) || s.cr3 >> MAX_PHYS_BITS != 0 {
        return None;
    }
    // The emulator's writeback: RF cleared, EIP 32 bits outside 64-bit mode.
    cpu.regs.rflags &= !rflags::RF;
    if !(s.efer & efer::LMA != 0 && s.cs.l != 0) {
        cpu.regs.rip &= 0xffff_ffff;
    }
    Some(cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit long-mode CPU with distinct values everywhere.
    fn long_mode_cpu() -> CpuSnapshot {
        let seg = |selector: u16, base: u64, type_: u8, l: u8| Segment {
            base, limit: 0xfffff, selector, type_, present: 1, dpl: 0, db: 1 - l, s: 1, l, g: 1, avl: 0, unusable: 0, padding: 0,
        };
        let mut regs = Regs::default();
        set_gprs(&mut regs, core::array::from_fn(|i| 0x1000 + i as u64));
        (regs.rip, regs.rflags) = (0xffff_8000_1234_5678, 0x246);
        let sregs = Sregs {
            cs: seg(8, 0, 11, 1), ds: seg(16, 0, 3, 0), es: seg(16, 0x10, 3, 0), fs: seg(0, 0x7f00_0000, 3, 0),
            gs: seg(0, 0xffff_8880_0000_0000, 3, 0), ss: seg(16, 0, 3, 0), tr: seg(0x40, 0x5000, 11, 0), ldt: Segment { present: 0, unusable: 1, ..seg(0, 0, 2, 0) },
            gdt: Dtable { base: 0x6800, limit: 0x7f, padding: [0; 3] }, idt: Dtable { base: 0x7000, limit: 0xfff, padding: [0; 3] },
            cr0: 0x8005_0033, cr2: 0x77, cr3: 0x2000, cr4: 0x6f0, cr8: 0, efer: 0xd01, apic_base: 0xfee0_0900, interrupt_bitmap: [0; 4],
        };
        CpuSnapshot { regs, sregs, dr6: 0xffff_0ff0, dr7: 0x401, smbase: 0x100_0000, shadow: 2 }
    }

    #[test]
    fn the_64_bit_map_is_kvms() {
        let cpu = long_mode_cpu();
        let m = save(&cpu, true);
        assert_eq!(get_u32(&m, 0xfefc), 0x0002_0064);
        assert_eq!(get_u32(&m, 0xff00), 0x100_0000);
        assert_eq!(get_u64(&m, 0xff78), cpu.regs.rip);
        assert_eq!(get_u64(&m, 0xff80), 0x100f, "R15 first");
        assert_eq!(get_u64(&m, 0xfff8), 0x1000, "RAX last");
        assert_eq!(get_u16(&m, 0xfe10), 8, "CS selector");
        assert_eq!(get_u16(&m, 0xfe12), 0xa09b, "CS attributes: G, L, P, S, type 11");
        assert_eq!(get_u64(&m, 0xfed0), 0xd01);
        assert_eq!((get_u32(&m, 0xfe64), get_u64(&m, 0xfe68)), (0x7f, 0x6800), "GDTR");
        assert_eq!(m[0xcb], 2, "int_shadow");
    }

    #[test]
    fn rsm_restores_what_the_smi_saved() {
        let cpu = long_mode_cpu();
        let m = save(&cpu, true);
        let (regs, sregs, dr7) = entry_state(&cpu, true);
        let in_smm = CpuSnapshot { regs, sregs, dr7, ..cpu };
        let back = restore(&m, true, &in_smm).unwrap();
        // Present segments come back whole; the LDT was not present: unusable.
        assert_eq!(back.regs, cpu.regs);
        assert_eq!(back.sregs.cs, cpu.sregs.cs);
        assert_eq!(back.sregs.gs, cpu.sregs.gs);
        assert_eq!(back.sregs.ldt.unusable, 1);
        assert_eq!((back.sregs.cr0, back.sregs.cr3, back.sregs.cr4, back.sregs.efer), (0x8005_0033, 0x2000, 0x6f0, 0xd01));
        assert_eq!((back.sregs.gdt, back.sregs.idt), (cpu.sregs.gdt, cpu.sregs.idt));
        assert_eq!((back.dr6, back.dr7, back.smbase, back.shadow), (0xffff_0ff0, 0x401, 0x100_0000, 2));
        assert_eq!((back.sregs.cr2, back.sregs.apic_base), (0x77, 0xfee0_0900), "not in the map: kept");
        // A relocated SMBASE takes effect at RSM; a DR7 with high bits makes RSM fail.
        let mut m2 = m;
        Map(&mut m2).u32(0xff00, 0x20_0000);
        assert_eq!(restore(&m2, true, &in_smm).unwrap().smbase, 0x20_0000);
        Map(&mut m2).u64(0xff60, 1 << 32);
        assert_eq!(restore(&m2, true, &in_smm), None);
        // DR6/DR7 get their fixed bits; RF goes; PCIDE needs long mode; CR3 within 48 bits.
        let mut m3 = m;
        Map(&mut m3).u64(0xff68, 0);
        Map(&mut m3).u64(0xff70, 0x1_0246);
        let back = restore(&m3, true, &in_smm).unwrap();
        assert_eq!((back.dr6, back.regs.rflags), (0xfffe_0ff0, 0x246));
        Map(&mut m3).u64(0xff50, 1 << 52);
        assert_eq!(restore(&m3, true, &in_smm), None, "CR3 beyond 48 bits");
        let mut m4 = m;
        Map(&mut m4).u64(0xff58, 0x11); // no paging: not long mode
        Map(&mut m4).u64(0xff48, 0x2_0000);
        assert_eq!(restore(&m4, true, &in_smm), None, "PCIDE outside long mode");
        Map(&mut m4).u64(0xff48, 0);
        assert_eq!(restore(&m4, true, &in_smm).unwrap().regs.rip, 0x1234_5678, "EIP outside 64-bit mode");
    }

    #[test]
    fn smm_starts_in_big_real_mode_at_smbase() {
        let cpu = long_mode_cpu();
        let (regs, s, dr7) = entry_state(&cpu, true);
        assert_eq!((regs.rip, regs.rflags, regs.rax), (0x8000, 2, 0x1000));
        assert_eq!((s.cr0, s.cr4, s.efer, dr7), (0x0005_0032, 0, 0, 0x400));
        assert_eq!((s.cs.selector, s.cs.base, s.cs.limit, s.cs.type_, s.cs.g), (0, 0x100_0000, 0xffff_ffff, 3, 1));
        assert_eq!((s.ss.base, s.ds.selector, s.idt.limit, s.gdt.base), (0, 0, 0, 0x6800));
        let (_, s, _) = entry_state(&CpuSnapshot { smbase: DEFAULT_SMBASE, ..cpu }, true);
        assert_eq!(s.cs.selector, 0x3000);
    }

    #[test]
    fn the_32_bit_map_round_trips() {
        let mut cpu = long_mode_cpu();
        cpu.regs.rip = 0x8000_1234;
        cpu.sregs.efer = 0;
        cpu.sregs.cr0 = 0x8000_0011;
        cpu.sregs.cs.l = 0;
        cpu.sregs.fs.base = 0x1234;
        cpu.sregs.gs.base = 0x5678;
        let m = save(&cpu, false);
        assert_eq!((get_u32(&m, 0xfefc), get_u32(&m, 0xfef8), get_u32(&m, 0xfff0)), (0x0002_0000, 0x100_0000, 0x8000_1234));
        assert_eq!(get_u32(&m, 0xffd0), 0x1000, "EAX first");
        let (regs, sregs, dr7) = entry_state(&cpu, false);
        let back = restore(&m, false, &CpuSnapshot { regs, sregs, dr7, ..cpu }).unwrap();
        assert_eq!((back.regs.rip, back.regs.rdi, back.regs.r8), (0x8000_1234, 0x1007, 0x1008), "R8 is not in the map: kept");
        assert_eq!((back.sregs.cr0, back.sregs.cs, back.sregs.gs), (0x8000_0011, cpu.sregs.cs, cpu.sregs.gs));
    }
}
