// SPDX-License-Identifier: GPL-2.0

//! The arithmetic of the read-modify-write instructions rvmx emulates on MMIO (ADD, OR, ADC,
//! SBB, AND, SUB, XOR, CMP, TEST, INC, DEC, NEG, NOT, BT/BTS/BTR/BTC), with the status flags
//! the processor sets (SDM vol. 1, appendix A). KVM's emulator runs the host's own instruction
//! for the flags; the tests below compare these with the host processor's.

use super::arch::rflags;

/// The six status flags.
pub const STATUS: u64 = rflags::CF | rflags::PF | rflags::AF | rflags::ZF | rflags::SF | rflags::OF;

/// A two-operand operation, in the order of the opcode's bits 5:3 (and group 1's reg field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// ADD.
    Add,
    /// OR.
    Or,
    /// ADC.
    Adc,
    /// SBB.
    Sbb,
    /// AND.
    And,
    /// SUB.
    Sub,
    /// XOR.
    Xor,
    /// CMP (SUB without the result).
    Cmp,
}

impl BinOp {
    /// From the 3-bit field of the opcode or ModRM.reg.
    pub const fn from_bits(b: u8) -> Self {
        match b & 7 {
            0 => BinOp::Add,
            1 => BinOp::Or,
            2 => BinOp::Adc,
            3 => BinOp::Sbb,
            4 => BinOp::And,
            5 => BinOp::Sub,
            6 => BinOp::Xor,
            _ => BinOp::Cmp,
        }
    }
}

/// A one-operand operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    /// INC (CF kept).
    Inc,
    /// DEC (CF kept).
    Dec,
    /// NOT (no flag changes).
    Not,
    /// NEG.
    Neg,
}

/// A bit-test operation, in the order of group 8's reg field (4-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitOp {
    /// BT: CF = the bit.
    Bt,
    /// BTS: and set it.
    Bts,
    /// BTR: and clear it.
    Btr,
    /// BTC: and flip it.
    Btc,
}

/// The bits of a `width`-byte value.
const fn mask(width: u8) -> u64 {
    super::insn::mask(width)
}

/// The sign bit of a `width`-byte value.
const fn sign(width: u8) -> u64 {
    (mask(width) >> 1).wrapping_add(1)
}

/// ZF, SF and PF of result `r`, with the other status flags given.
fn result_flags(r: u64, width: u8, cf: bool, af: bool, of: bool) -> u64 {
    let mut f = 0;
    if cf { f |= rflags::CF; }
    if (r as u8).count_ones() % 2 == 0 { f |= rflags::PF; }
    if af { f |= rflags::AF; }
    if r & mask(width) == 0 { f |= rflags::ZF; }
    if r & sign(width) != 0 { f |= rflags::SF; }
    if of { f |= rflags::OF; }
    f
}

/// `flags` with its status flags replaced by `status`.
const fn with_status(flags: u64, status: u64) -> u64 {
    (flags & !STATUS) | (status & STATUS)
}

/// `dst op src` on `width` bytes: the result (`None` for CMP, whose result is dropped) and
/// RFLAGS after it.
pub fn binary(op: BinOp, dst: u64, src: u64, width: u8, flags: u64) -> (Option<u64>, u64) {
    let m = mask(width);
    let (a, b) = (dst & m, src & m);
    let carry_in = u64::from(flags & rflags::CF != 0 && matches!(op, BinOp::Adc | BinOp::Sbb));
    let (r, cf, of) = match op {
        BinOp::Add | BinOp::Adc => {
            let wide = u128::from(a).wrapping_add(u128::from(b)).wrapping_add(u128::from(carry_in));
            let r = wide as u64 & m;
            (r, wide > u128::from(m), (a ^ r) & (b ^ r) & sign(width) != 0)
        }
        BinOp::Sub | BinOp::Sbb | BinOp::Cmp => {
            let r = a.wrapping_sub(b).wrapping_sub(carry_in) & m;
            let cf = u128::from(a) < u128::from(b).wrapping_add(u128::from(carry_in));
            (r, cf, (a ^ b) & (a ^ r) & sign(width) != 0)
        }
        BinOp::Or => (a | b, false, false),
        BinOp::And => (a & b, false, false),
        BinOp::Xor => (a ^ b, false, false),
    };
    let logic = matches!(op, BinOp::Or | BinOp::And | BinOp::Xor);
    let af = !logic && (a ^ b ^ r) & 0x10 != 0;
    let out = if op == BinOp::Cmp { None } else { Some(r) };
    (out, with_status(flags, result_flags(r, width, cf, af, of)))
}

/// TEST: RFLAGS after `a & b`.
pub fn test(a: u64, b: u64, width: u8, flags: u64) -> u64 {
    binary(BinOp::And, a, b, width, flags).1
}

/// `op dst` on `width` bytes: the result and RFLAGS after it.
pub fn unary(op: UnOp, dst: u64, width: u8, flags: u64) -> (u64, u64) {
    let m = mask(width);
    let cf_kept = flags & rflags::CF != 0;
    match op {
        UnOp::Not => (!dst & m, flags),
        UnOp::Inc | UnOp::Dec => {
            let bop = if op == UnOp::Inc { BinOp::Add } else { BinOp::Sub };
            let (r, f) = binary(bop, dst, 1, width, flags);
            let f = if cf_kept { f | rflags::CF } else { f & !rflags::CF };
            (r.unwrap_or(0), f)
        }
        UnOp::Neg => {
            let (r, f) = binary(BinOp::Sub, 0, dst, width, flags);
            (r.unwrap_or(0), f) // CF = (dst != 0), as 0 - dst borrows exactly then
        }
    }
}

/// `op` on bit `bit` (already reduced below `width * 8`) of `dst`: the new value (`None` for
/// BT) and RFLAGS with CF the bit's old value; the other flags are kept (ZF is unaffected;
/// OF, SF, AF and PF are undefined, and Intel processors leave them).
pub fn bit(op: BitOp, dst: u64, bit: u32, width: u8, flags: u64) -> (Option<u64>, u64) {
    let b = 1u64.checked_shl(bit).unwrap_or(0);
    let was = dst & b != 0;
    let r = match op {
        BitOp::Bt => None,
        BitOp::Bts => Some(dst | b),
        BitOp::Btr => Some(dst & !b),
        BitOp::Btc => Some(dst ^ b),
    };
    let f = if was { flags | rflags::CF } else { flags & !rflags::CF };
    (r.map(|v| v & mask(width)), f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::arch::asm;

    /// The host processor's result and status flags for `op` (only CF in) on `width` bytes.
    fn hw_binary(op: BinOp, a: u64, b: u64, width: u8, cf: bool) -> (u64, u64) {
        let mut r = a;
        let f: u64;
        macro_rules! run {
            ($insn:literal, $m:literal) => {
                // SAFETY: arithmetic on registers and the flags, reading them with PUSHF.
                unsafe {
                    asm!(
                        "bt {c}, 0", concat!($insn, " {r", $m, "}, {b", $m, "}"), "pushfq", "pop {f}",
                        c = in(reg) u64::from(cf), r = inout(reg) r, b = in(reg) b, f = out(reg) f,
                    )
                }
            };
        }
        macro_rules! widths {
            ($insn:literal) => {
                match width { 1 => run!($insn, ":l"), 2 => run!($insn, ":x"), 4 => run!($insn, ":e"), _ => run!($insn, "") }
            };
        }
        match op {
            BinOp::Add => widths!("add"),
            BinOp::Or => widths!("or"),
            BinOp::Adc => widths!("adc"),
            BinOp::Sbb => widths!("sbb"),
            BinOp::And => widths!("and"),
            BinOp::Sub => widths!("sub"),
            BinOp::Xor => widths!("xor"),
            BinOp::Cmp => widths!("cmp"),
        }
        (r & mask(width), f & STATUS)
    }

    fn values() -> Vec<u64> {
        let mut v = vec![0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff,
                         0x7fff_ffff_ffff_ffff, 0x8000_0000_0000_0000, u64::MAX, 0x0f0f, 0x1234_5678_9abc_def0];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..40 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(x);
        }
        v
    }

    #[test]
    fn binary_matches_the_processor() {
        // AF after logic operations is undefined; the processor clears it, and so do we.
        for op in (0..8).map(BinOp::from_bits) {
            for width in [1u8, 2, 4, 8] {
                for &a in &values() {
                    for &b in values().iter().step_by(3) {
                        for cf in [false, true] {
                            let (hr, hf) = hw_binary(op, a, b, width, cf);
                            let (r, f) = binary(op, a, b, width, if cf { rflags::CF | 2 } else { 2 });
                            let r = r.unwrap_or(a & mask(width));
                            assert_eq!((r, f & STATUS), (hr, hf), "{op:?} {a:#x} {b:#x} width {width} cf {cf}");
                            assert_eq!(f & !STATUS, 2, "other flags kept");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn unary_and_bits() {
        // INC/DEC keep CF; NEG sets it unless the operand is 0; NOT changes no flag.
        let (r, f) = unary(UnOp::Inc, 0xff, 1, rflags::CF);
        assert_eq!((r, f & STATUS), (0, rflags::CF | rflags::ZF | rflags::PF | rflags::AF));
        let (r, f) = unary(UnOp::Dec, 0x8000, 2, 0);
        assert_eq!((r, f & STATUS), (0x7fff, rflags::OF | rflags::AF | rflags::PF));
        let (r, f) = unary(UnOp::Neg, 0, 4, rflags::CF);
        assert_eq!((r, f & STATUS), (0, rflags::ZF | rflags::PF));
        let (r, f) = unary(UnOp::Neg, 0x80, 1, 0);
        assert_eq!((r, f & (rflags::CF | rflags::OF | rflags::SF)), (0x80, rflags::CF | rflags::OF | rflags::SF));
        assert_eq!(unary(UnOp::Not, 0x0f, 1, 0x8d5), (0xf0, 0x8d5));
        assert_eq!(bit(BitOp::Bts, 0, 63, 8, 0), (Some(1 << 63), 0));
        assert_eq!(bit(BitOp::Btr, 0xff, 3, 1, rflags::ZF), (Some(0xf7), rflags::ZF | rflags::CF));
        assert_eq!(bit(BitOp::Btc, 0x4, 2, 2, 0), (Some(0), rflags::CF));
        assert_eq!(bit(BitOp::Bt, 0x4, 1, 2, rflags::CF), (None, 0));
        assert_eq!(test(0xf0, 0x0f, 1, rflags::CF | rflags::OF), rflags::ZF | rflags::PF);
    }
}
