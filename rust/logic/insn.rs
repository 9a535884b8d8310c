// SPDX-License-Identifier: GPL-2.0

//! The x86 instructions a guest may use to touch MMIO, decoded (SDM vol. 2, chapter 2), and
//! their effect on the registers. Pure logic, host-tested; the MMIO exit that uses it is
//! run/emulate.rs.
//!
//! Covered: MOV between memory and a register or an immediate (88, 89, 8A, 8B, C6, C7, A0-A3),
//! MOVZX/MOVSX (0F B6/B7/BE/BF), MOVSXD (63), STOS and MOVS with or without REP; and the
//! instructions that read, and mostly write back, a memory operand (KVM's emulator does them
//! on MMIO too): ADD, OR, ADC, SBB, AND, SUB, XOR, CMP (00-3B, 80, 81, 83), TEST (84, 85, F6/F7
//! /0), XCHG (86, 87), NOT, NEG (F6/F7 /2 /3), INC, DEC (FE, FF /0 /1), BT, BTS, BTR, BTC
//! (0F A3, AB, B3, BB, 0F BA /4-/7), CMPXCHG (0F B0, B1), XADD (0F C0, C1), with LOCK where it
//! is allowed; in every operand and address size and addressing form (ModRM, SIB,
//! RIP-relative, 16-bit forms, segment overrides). Anything else is `Unsupported`: the caller
//! reports it, never guesses.

use super::alu::{self, BinOp, BitOp, UnOp};
use super::arch::rflags;

/// General-purpose registers in encoding order: RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15.
pub type Gprs = [u64; 16];

/// Register numbers used below.
pub mod gpr {
    /// RAX.
    pub const RAX: u8 = 0;
    /// RCX (REP count).
    pub const RCX: u8 = 1;
    /// RSP.
    pub const RSP: u8 = 4;
    /// RBP.
    pub const RBP: u8 = 5;
    /// RSI (string source).
    pub const RSI: u8 = 6;
    /// RDI (string destination).
    pub const RDI: u8 = 7;
}

/// A segment register, in encoding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    /// ES (string destination).
    Es = 0,
    /// CS.
    Cs = 1,
    /// SS (default for RSP/RBP-based addresses).
    Ss = 2,
    /// DS (default).
    Ds = 3,
    /// FS.
    Fs = 4,
    /// GS.
    Gs = 5,
}

/// The processor mode an instruction is decoded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real mode, or a 16-bit code segment (CS.D = 0).
    Bits16,
    /// A 32-bit code segment.
    Bits32,
    /// 64-bit mode (EFER.LMA and CS.L).
    Bits64,
}

/// A register operand: `high` selects AH/CH/DH/BH (index 0-3) for byte accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    /// Register number (see [`Gprs`]).
    pub index: u8,
    /// Bits 15:8 of register `index` (only without REX, for 8-bit operands).
    pub high: bool,
}

/// How a loaded value fills a wider register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extend {
    /// Same width (MOV).
    None,
    /// MOVZX.
    Zero,
    /// MOVSX/MOVSXD.
    Sign,
}

/// What the instruction does with its memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `reg = [mem]`, `reg_width` bytes wide, extended from the access width.
    Load {
        /// Destination.
        reg: Reg,
        /// Destination width in bytes.
        reg_width: u8,
        /// How the value widens.
        extend: Extend,
    },
    /// `[mem] = reg`.
    StoreReg(Reg),
    /// `[mem] = imm` (already sign-extended to the access width).
    StoreImm(u64),
    /// STOS: `[ES:rDI] = rAX`, then rDI moves.
    Stos,
    /// MOVS: `[ES:rDI] = [seg:rSI]`, then both move.
    Movs,
    /// LODS: `rAX = [seg:rSI]`, then rSI moves.
    Lods,
    /// `[mem] = [mem] op src` (`to_mem`; CMP only compares), or `reg = reg op [mem]`.
    Alu {
        /// The operation.
        op: BinOp,
        /// The other operand (the destination register when not `to_mem`).
        src: Src,
        /// Memory is the destination.
        to_mem: bool,
    },
    /// TEST: the flags of `[mem] & src`.
    Test(Src),
    /// INC, DEC, NOT, NEG of `[mem]`.
    Unary(UnOp),
    /// XCHG: `[mem]` and the register swap.
    Xchg(Reg),
    /// XADD: `[mem] += reg`, the register gets the old `[mem]`.
    Xadd(Reg),
    /// CMPXCHG: `[mem] = reg` if `[mem]` equals rAX, else rAX gets `[mem]` (which is written
    /// back unchanged, as the processor and KVM do).
    Cmpxchg(Reg),
    /// BT, BTS, BTR, BTC of a bit of `[mem]` (a register bit offset also moves the address).
    Bit {
        /// The operation.
        op: BitOp,
        /// The bit offset.
        src: Src,
    },
}

/// The register or immediate operand of a read-modify-write instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    /// A register, as wide as the access.
    Reg(Reg),
    /// An immediate, already sign-extended and masked to the access width.
    Imm(u64),
}

/// A memory operand: `seg:(base + index * scale + disp)`, wrapped to the address size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mem {
    /// Segment (after overrides).
    pub seg: Seg,
    /// Base register.
    pub base: Option<u8>,
    /// Index register and scale (1, 2, 4, 8).
    pub index: Option<(u8, u8)>,
    /// Displacement (sign-extended), or the absolute offset for A0-A3.
    pub disp: i64,
    /// RIP-relative: the displacement counts from the next instruction.
    pub rip_relative: bool,
}

/// A decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Length in bytes.
    pub len: u8,
    /// What it does.
    pub op: Op,
    /// Bytes of memory accessed (per element for STOS/MOVS).
    pub width: u8,
    /// Memory operand (for MOVS: the source; the destination is always ES:rDI).
    pub mem: Mem,
    /// Address size in bytes (2, 4, 8): wraps addresses and sizes rSI/rDI/rCX.
    pub addr_size: u8,
    /// REP prefix on STOS/MOVS.
    pub rep: bool,
}

/// Why an instruction was not decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// The bytes end before the instruction does.
    Truncated,
    /// An instruction (or form, e.g. LOCK, a register operand) outside the set above.
    Instruction,
}

/// The longest x86 instruction.
pub const MAX_LEN: usize = 15;

struct Bytes<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn next(&mut self) -> Result<u8, Unsupported> {
        if self.pos >= MAX_LEN {
            return Err(Unsupported::Instruction); // longer than any instruction: #GP
        }
        let v = *self.b.get(self.pos).ok_or(Unsupported::Truncated)?;
        self.pos = self.pos.saturating_add(1); // below MAX_LEN
        Ok(v)
    }

    /// A little-endian immediate of `n` bytes, sign-extended.
    fn signed(&mut self, n: u8) -> Result<i64, Unsupported> {
        let mut bytes = [0u8; 8];
        for b in bytes.iter_mut().take(n.into()) {
            *b = self.next()?;
        }
        Ok(sign_extend(u64::from_le_bytes(bytes), n) as i64)
    }
}

/// The bits of a `size`-byte value (or address).
pub const fn mask(size: u8) -> u64 {
    if size >= 8 { u64::MAX } else { !(u64::MAX << (size << 3)) } // size << 3: bits
}

/// `v`'s low `size` bytes, sign-extended to 64 bits.
#[allow(clippy::arithmetic_side_effects)] // No panic: size is 1..=7 at the subtraction.
pub const fn sign_extend(v: u64, size: u8) -> u64 {
    if size == 0 || size >= 8 {
        return v;
    }
    let shift = (8 - size as u32) << 3;
    ((v << shift) as i64 >> shift) as u64
}

/// Register `index` of `regs` (the decoder's indexes are 0-15; 0 for any other).
pub fn gpr_get(regs: &Gprs, index: u8) -> u64 {
    regs.get(usize::from(index)).copied().unwrap_or(0)
}

/// The address size in bytes in `mode`, with or without the 67 (address-size) prefix.
pub const fn addr_size(mode: Mode, prefix_67: bool) -> u8 {
    match mode {
        Mode::Bits64 => if prefix_67 { 4 } else { 8 },
        Mode::Bits32 => if prefix_67 { 2 } else { 4 },
        Mode::Bits16 => if prefix_67 { 4 } else { 2 },
    }
}

/// Steps a string instruction past `count` elements of `width` bytes: each register in
/// `indexes` (rSI, rDI) moves up, or down with RFLAGS.DF; REP counts rCX down. Returns
/// whether the instruction is done (no REP, or rCX reached 0). Registers wrap at the
/// address size.
pub fn string_step(regs: &mut Gprs, indexes: &[u8], width: u8, count: u64, addr_size: u8, rep: bool, rflags: u64) -> bool {
    let step = (width as u64).wrapping_mul(count); // moves wrap at the address size
    let delta = if rflags & rflags::DF != 0 { step.wrapping_neg() } else { step };
    for &r in indexes {
        let v = gpr_get(regs, r).wrapping_add(delta);
        write_reg(regs, Reg { index: r, high: false }, addr_size, v);
    }
    if !rep {
        return true;
    }
    let left = (gpr_get(regs, gpr::RCX) & mask(addr_size)).wrapping_sub(count) & mask(addr_size);
    write_reg(regs, Reg { index: gpr::RCX, high: false }, addr_size, left);
    left == 0
}

/// Decodes the instruction at the start of `bytes`.
pub fn decode(bytes: &[u8], mode: Mode) -> Result<Insn, Unsupported> {
    let mut b = Bytes { b: bytes, pos: 0 };
    let (mut opsize_prefix, mut addr_prefix, mut rep, mut seg, mut lock) = (false, false, false, None, false);
    let mut rex;
    let mut opcode = loop {
        let byte = b.next()?;
        // A REX prefix counts only right before the opcode.
        rex = 0;
        match byte {
            0x66 => opsize_prefix = true,
            0x67 => addr_prefix = true,
            0x26 => seg = Some(Seg::Es),
            0x2e => seg = Some(Seg::Cs),
            0x36 => seg = Some(Seg::Ss),
            0x3e => seg = Some(Seg::Ds),
            0x64 => seg = Some(Seg::Fs),
            0x65 => seg = Some(Seg::Gs),
            0xf3 => rep = true,
            0xf0 => lock = true,
            0xf2 => return Err(Unsupported::Instruction), // REPNE: not on these
            0x40..=0x4f if mode == Mode::Bits64 => {
                rex = byte;
                let next = b.next()?;
                if matches!(next, 0x40..=0x4f) || is_legacy_prefix(next) {
                    b.pos = b.pos.saturating_sub(1); // another prefix follows: this REX is ignored
                    continue;
                }
                break next;
            }
            _ => break byte,
        }
    };
    let rex_w = rex & 8 != 0;
    let opsize: u8 = match mode {
        Mode::Bits64 if rex_w => 8,
        Mode::Bits16 => if opsize_prefix { 4 } else { 2 },
        _ => if opsize_prefix { 2 } else { 4 },
    };
    let addr_size = addr_size(mode, addr_prefix);
    let two_byte = opcode == 0x0f;
    if two_byte {
        opcode = b.next()?;
    }
    let byte_reg = |index: u8| -> Reg {
        if rex == 0 && (4..8).contains(&index) {
            Reg { index: index & 3, high: true } // AH, CH, DH, BH
        } else {
            Reg { index, high: false }
        }
    };
    let string_mem = Mem { seg: seg.unwrap_or(Seg::Ds), base: Some(gpr::RSI), index: None, disp: 0, rip_relative: false };
    let (op, width, mem) = match (two_byte, opcode) {
        (false, 0x88..=0x8b) => {
            let (reg, mem) = modrm(&mut b, mode, addr_size, rex, seg)?;
            let width = if opcode & 1 == 0 { 1 } else { opsize };
            let r = if width == 1 { byte_reg(reg) } else { Reg { index: reg, high: false } };
            let op = if opcode & 2 == 0 {
                Op::StoreReg(r)
            } else {
                Op::Load { reg: r, reg_width: width, extend: Extend::None }
            };
            (op, width, mem)
        }
        (false, 0xc6 | 0xc7) => {
            let (reg, mem) = modrm(&mut b, mode, addr_size, rex, seg)?;
            if reg & 7 != 0 {
                return Err(Unsupported::Instruction);
            }
            let width = if opcode == 0xc6 { 1 } else { opsize };
            let imm = b.signed(width.min(4))? as u64 & mask(width);
            (Op::StoreImm(imm), width, mem)
        }
        (false, 0xa0..=0xa3) => {
            let offset = b.signed(addr_size)? as u64 & mask(addr_size);
            let width = if opcode & 1 == 0 { 1 } else { opsize };
            let mem = Mem { seg: seg.unwrap_or(Seg::Ds), base: None, index: None, disp: offset as i64, rip_relative: false };
            let r = Reg { index: gpr::RAX, high: false };
            let op = if opcode & 2 == 0 {
                Op::Load { reg: r, reg_width: width, extend: Extend::None }
            } else {
                Op::StoreReg(r)
            };
            (op, width, mem)
        }
        (false, 0x63) if mode == Mode::Bits64 => {
            let (reg, mem) = modrm(&mut b, mode, addr_size, rex, seg)?;
            let extend = if opsize == 8 { Extend::Sign } else { Extend::None };
            (Op::Load { reg: Reg { index: reg, high: false }, reg_width: opsize, extend }, opsize.min(4), mem)
        }
        (true, 0xb6 | 0xb7 | 0xbe | 0xbf) => {
            let (reg, mem) = modrm(&mut b, mode, addr_size, rex, seg)?;
            let width = if opcode & 1 == 0 { 1 } else { 2 };
            let extend = if opcode & 8 == 0 { Extend::Zero } else { Extend::Sign };
            (Op::Load { reg: Reg { index: reg, high: false }, reg_width: opsize, extend }, width, mem)
        }
        (false, 0xaa | 0xab) => (Op::Stos, if opcode == 0xaa { 1 } else { opsize }, string_mem),
        (false, 0xa4 | 0xa5) => (Op::Movs, if opcode == 0xa4 { 1 } else { opsize }, string_mem),
        (false, 0xac | 0xad) => (Op::Lods, if opcode == 0xac { 1 } else { opsize }, string_mem),
        // MOVNTI: a store with a non-temporal hint (32 or 64 bits; 66 is #UD).
        (true, 0xc3) if !opsize_prefix => {
            let (reg, mem) = modrm(&mut b, mode, addr_size, rex, seg)?;
            (Op::StoreReg(Reg { index: reg, high: false }), if opsize == 8 { 8 } else { 4 }, mem)
        }
        // ALU r/m, reg and reg, r/m (low bits 0-3 of 00-3F; 0F is the two-byte escape).
        (false, 0x00..=0x3f) if opcode & 7 <= 3 => {
            let (reg, mem) = modrm(&mut b, mode, addr_size, rex, seg)?;
            let width = if opcode & 1 == 0 { 1 } else { opsize };
            let r = if width == 1 { byte_reg(reg) } else { Reg { index: reg, high: false } };
            (Op::Alu { op: BinOp::from_bits(opcode >> 3), src: Src::Reg(r), to_mem: opcode & 2 == 0 }, width, mem)
        }
        // Group 1: ALU r/m, imm8 (80), imm16/32 (81), sign-extended imm8 (83).
        (false, 0x80 | 0x81 | 0x83) => {
            let (reg, mem) = modrm(&mut b, mode, addr_size, rex, seg)?;
            let width = if opcode == 0x80 { 1 } else { opsize };
            let imm_len = if opcode == 0x81 { width.min(4) } else { 1 };
            let imm = b.signed(imm_len)? as u64 & mask(width);
            (Op::Alu { op: BinOp::from_bits(reg), src: Src::Imm(imm), to_mem: true }, width, mem)
        }
        (false, 0x84..=0x87) => {
            let (reg, mem) = modrm(&mut b, mode, addr_size, rex, seg)?;
            let width = if opcode & 1 == 0 { 1 } else { opsize };
            let r = if width == 1 { byte_reg(reg) } else { Reg { index: reg, high: false } };
            (if opcode < 0x86 { Op::Test(Src::Reg(r)) } else { Op::Xchg(r) }, width, mem)
        }
        // Group 3: TEST r/m, imm; NOT; NEG (MUL and DIV are not emulated).
        (false, 0xf6 | 0xf7) => {
            let (reg, mem) = modrm(&mut b, mode, addr_size, rex, seg)?;
            let width = if opcode == 0xf6 { 1 } else { opsize };
            let op = match reg & 7 {
                0 | 1 => Op::Test(Src::Imm(b.signed(width.min(4))? as u64 & mask(width))),
                2 => Op::Unary(UnOp::Not),
                3 => Op::Unary(UnOp::Neg),
                _ => return Err(Unsupported::Instruction),
            };
            (op, width, mem)
        }
        // Groups 4 and 5: INC, DEC (CALL, JMP and PUSH are not emulated).
        (false, 0xfe | 0xff) => {
            let (reg, mem) = modrm(&mut b, mode, addr_size, rex, seg)?;
            let width = if opcode == 0xfe { 1 } else { opsize };
            let op = match reg & 7 {
                0 => UnOp::Inc,
                1 => UnOp::Dec,
                _ => return Err(Unsupported::Instruction),
            };
            (Op::Unary(op), width, mem)
        }
        (true, 0xa3 | 0xab | 0xb3 | 0xbb) => {
            let (reg, mem) = modrm(&mut b, mode, addr_size, rex, seg)?;
            let op = match opcode { 0xa3 => BitOp::Bt, 0xab => BitOp::Bts, 0xb3 => BitOp::Btr, _ => BitOp::Btc };
            (Op::Bit { op, src: Src::Reg(Reg { index: reg, high: false }) }, opsize, mem)
        }
        // Group 8: BT, BTS, BTR, BTC r/m, imm8.
        (true, 0xba) => {
            let (reg, mem) = modrm(&mut b, mode, addr_size, rex, seg)?;
            let op = match reg & 7 {
                4 => BitOp::Bt,
                5 => BitOp::Bts,
                6 => BitOp::Btr,
                7 => BitOp::Btc,
                _ => return Err(Unsupported::Instruction),
            };
            let imm = b.signed(1)? as u64 & 0xff;
            (Op::Bit { op, src: Src::Imm(imm) }, opsize, mem)
        }
        (true, 0xb0 | 0xb1 | 0xc0 | 0xc1) => {
            let (reg, mem) = modrm(&mut b, mode, addr_size, rex, seg)?;
            let width = if opcode & 1 == 0 { 1 } else { opsize };
            let r = if width == 1 { byte_reg(reg) } else { Reg { index: reg, high: false } };
            (if opcode < 0xc0 { Op::Cmpxchg(r) } else { Op::Xadd(r) }, width, mem)
        }
        _ => return Err(Unsupported::Instruction),
    };
    // LOCK only on an instruction that writes its memory operand back (else #UD).
    let lockable = matches!(op, Op::Alu { op: o, to_mem: true, .. } if o != BinOp::Cmp)
        || matches!(op, Op::Unary(_) | Op::Xchg(_) | Op::Xadd(_) | Op::Cmpxchg(_))
        || matches!(op, Op::Bit { op: o, .. } if o != BitOp::Bt);
    if lock && !lockable {
        return Err(Unsupported::Instruction);
    }
    let string = matches!(op, Op::Stos | Op::Movs | Op::Lods);
    Ok(Insn { len: b.pos as u8, op, width, mem, addr_size, rep: rep && string })
}

fn is_legacy_prefix(b: u8) -> bool {
    matches!(b, 0x66 | 0x67 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0xf0 | 0xf2 | 0xf3)
}

/// Whether `bytes` (fetched at RIP) start with RSM (0F AA) after legacy prefixes other than
/// LOCK, which makes it #UD.
pub fn is_rsm(bytes: &[u8]) -> bool {
    let Some(i) = bytes.iter().position(|&b| !is_legacy_prefix(b)) else { return false };
    !bytes.get(..i).unwrap_or_default().contains(&0xf0) && bytes.get(i..i.saturating_add(2)) == Some(&[0x0f, 0xaa][..])
}

/// Decodes a ModRM memory operand (with SIB and displacement): the `reg` field (REX.R
/// applied) and the address. A register operand (mod = 3) cannot touch memory.
fn modrm(b: &mut Bytes<'_>, mode: Mode, addr_size: u8, rex: u8, seg: Option<Seg>) -> Result<(u8, Mem), Unsupported> {
    let m = b.next()?;
    let (md, reg, rm) = (m >> 6, ((m >> 3) & 7) | (rex & 4) << 1, m & 7);
    if md == 3 {
        return Err(Unsupported::Instruction);
    }
    let mut mem = Mem { seg: Seg::Ds, base: None, index: None, disp: 0, rip_relative: false };
    let mut default_ss = false;
    if addr_size == 2 {
        // 16-bit forms: BX+SI, BX+DI, BP+SI, BP+DI, SI, DI, BP (or disp16), BX.
        const FORMS: [(Option<u8>, Option<u8>); 8] = [
            (Some(3), Some(6)), (Some(3), Some(7)), (Some(5), Some(6)), (Some(5), Some(7)),
            (Some(6), None), (Some(7), None), (Some(5), None), (Some(3), None),
        ];
        let (base, index) = FORMS.get(usize::from(rm)).copied().ok_or(Unsupported::Instruction)?;
        if md == 0 && rm == 6 {
            mem.disp = b.signed(2)?;
        } else {
            mem.base = base;
            mem.index = index.map(|i| (i, 1));
            default_ss = base == Some(gpr::RBP);
            mem.disp = match md { 1 => b.signed(1)?, 2 => b.signed(2)?, _ => 0 };
        }
    } else {
        let rex_b = (rex & 1) << 3;
        if rm == 4 {
            let sib = b.next()?;
            let (scale, index, base) = (1u8 << (sib >> 6), ((sib >> 3) & 7) | (rex & 2) << 2, sib & 7);
            if index != 4 {
                mem.index = Some((index, scale));
            }
            if base == 5 && md == 0 {
                mem.disp = b.signed(4)?;
            } else {
                mem.base = Some(base | rex_b);
                default_ss = matches!(base | rex_b, gpr::RSP | gpr::RBP);
            }
        } else if rm == 5 && md == 0 {
            mem.disp = b.signed(4)?;
            mem.rip_relative = mode == Mode::Bits64;
        } else {
            mem.base = Some(rm | rex_b);
            default_ss = rm | rex_b == gpr::RBP;
        }
        if md == 1 {
            mem.disp = b.signed(1)?;
        } else if md == 2 {
            mem.disp = b.signed(4)?;
        }
    }
    mem.seg = seg.unwrap_or(if default_ss { Seg::Ss } else { Seg::Ds });
    Ok((reg, mem))
}

impl Insn {
    /// The offset (effective address) of the memory operand, before the segment base.
    pub fn offset(&self, regs: &Gprs, rip: u64) -> u64 {
        let m = &self.mem;
        let mut a = m.disp as u64;
        if let Some(base) = m.base {
            a = a.wrapping_add(gpr_get(regs, base));
        }
        if let Some((index, scale)) = m.index {
            a = a.wrapping_add(gpr_get(regs, index).wrapping_mul(scale as u64));
        }
        if m.rip_relative {
            a = a.wrapping_add(rip.wrapping_add(self.len as u64));
        }
        // BT* with a register: the signed bit offset selects the operand-sized word too.
        if let Op::Bit { src: Src::Reg(r), .. } = self.op {
            let bit = sign_extend(read_reg(regs, r, self.width), self.width) as i64;
            let words = bit.wrapping_shr(self.width.trailing_zeros().wrapping_add(3)); // width is 2, 4 or 8: 4-6
            a = a.wrapping_add((words as u64).wrapping_mul(u64::from(self.width)));
        }
        a & mask(self.addr_size)
    }

    /// The string destination's offset (ES:rDI).
    pub fn dest_offset(&self, regs: &Gprs) -> u64 {
        gpr_get(regs, gpr::RDI) & mask(self.addr_size)
    }

    /// Whether a REP string instruction has nothing left to do (rCX = 0): it does no access.
    pub fn rep_done(&self, regs: &Gprs) -> bool {
        self.rep && gpr_get(regs, gpr::RCX) & mask(self.addr_size) == 0
    }

    /// The value a store writes (for STOS: rAX; for MOVS it comes from memory).
    pub fn store_value(&self, regs: &Gprs) -> Option<u64> {
        match self.op {
            Op::StoreReg(r) => Some(read_reg(regs, r, self.width)),
            Op::StoreImm(v) => Some(v),
            Op::Stos => Some(read_reg(regs, Reg { index: gpr::RAX, high: false }, self.width)),
            // MOVS's value comes from memory; a computing instruction's from `compute`.
            _ => None,
        }
    }

    /// Whether the instruction reads its memory operand (into a register, for MOVS as the
    /// source, or to compute with it).
    pub fn reads_memory(&self) -> bool {
        matches!(self.op, Op::Load { .. } | Op::Movs | Op::Lods) || self.computes()
    }

    /// Whether it computes with its memory operand ([`Insn::compute`]).
    pub fn computes(&self) -> bool {
        matches!(self.op, Op::Alu { .. } | Op::Test(_) | Op::Unary(_) | Op::Xchg(_) | Op::Xadd(_) | Op::Cmpxchg(_) | Op::Bit { .. })
    }

    /// Whether a computing instruction may write its memory operand back (the page must
    /// allow the write before it is read, as the processor checks).
    pub fn writes_back(&self) -> bool {
        match self.op {
            Op::Alu { op, to_mem, .. } => to_mem && op != BinOp::Cmp,
            Op::Bit { op, .. } => op != BitOp::Bt,
            Op::Unary(_) | Op::Xchg(_) | Op::Xadd(_) | Op::Cmpxchg(_) => true,
            _ => false,
        }
    }

    /// A computing instruction's work once `m`, its memory operand, was read: registers and
    /// RFLAGS updated; the value to write back to memory, if any. RIP is not moved.
    pub fn compute(&self, regs: &mut Gprs, flags: &mut u64, m: u64) -> Option<u64> {
        let w = self.width;
        let m = m & mask(w);
        let value = |regs: &Gprs, s: Src| match s {
            Src::Reg(r) => read_reg(regs, r, w),
            Src::Imm(v) => v,
        };
        let rax = Reg { index: gpr::RAX, high: false };
        match self.op {
            Op::Alu { op, src, to_mem: true } => {
                let (r, f) = alu::binary(op, m, value(regs, src), w, *flags);
                *flags = f;
                r
            }
            Op::Alu { op, src, to_mem: false } => {
                let (r, f) = alu::binary(op, value(regs, src), m, w, *flags);
                *flags = f;
                if let (Some(v), Src::Reg(reg)) = (r, src) {
                    write_reg(regs, reg, w, v);
                }
                None
            }
            Op::Test(src) => {
                *flags = alu::test(m, value(regs, src), w, *flags);
                None
            }
            Op::Unary(op) => {
                let (r, f) = alu::unary(op, m, w, *flags);
                *flags = f;
                Some(r)
            }
            Op::Xchg(reg) => {
                let old = read_reg(regs, reg, w);
                write_reg(regs, reg, w, m);
                Some(old)
            }
            Op::Xadd(reg) => {
                let (r, f) = alu::binary(BinOp::Add, m, read_reg(regs, reg, w), w, *flags);
                *flags = f;
                write_reg(regs, reg, w, m);
                r
            }
            Op::Cmpxchg(reg) => {
                let (_, f) = alu::binary(BinOp::Cmp, read_reg(regs, rax, w), m, w, *flags);
                *flags = f;
                if f & rflags::ZF != 0 {
                    Some(read_reg(regs, reg, w))
                } else {
                    write_reg(regs, rax, w, m);
                    Some(m)
                }
            }
            Op::Bit { op, src } => {
                let bits = u32::from(w).wrapping_mul(8).wrapping_sub(1); // width is 2, 4 or 8
                let (r, f) = alu::bit(op, m, value(regs, src) as u32 & bits, w, *flags);
                *flags = f;
                r
            }
            Op::Load { .. } | Op::StoreReg(_) | Op::StoreImm(_) | Op::Stos | Op::Movs | Op::Lods => None,
        }
    }

    /// Finishes the instruction once its memory access is done: `loaded` is the value read
    /// (for a load). Updates the registers and returns the new RIP, which stays on a REP
    /// instruction until rCX reaches 0 (the guest then executes it again: one element per
    /// pass).
    pub fn complete(&self, regs: &mut Gprs, rip: u64, rflags: u64, loaded: u64) -> u64 {
        let next = rip.wrapping_add(self.len as u64);
        match self.op {
            Op::Load { reg, reg_width, extend } => {
                let v = loaded & mask(self.width);
                let v = match extend {
                    Extend::Sign => sign_extend(v, self.width),
                    Extend::None | Extend::Zero => v,
                };
                write_reg(regs, reg, reg_width, v);
                next
            }
            Op::StoreReg(_) | Op::StoreImm(_) => next,
            // Their registers and flags are [`Insn::compute`]'s.
            Op::Alu { .. } | Op::Test(_) | Op::Unary(_) | Op::Xchg(_) | Op::Xadd(_) | Op::Cmpxchg(_) | Op::Bit { .. } => next,
            Op::Stos | Op::Movs | Op::Lods => {
                if self.op == Op::Lods {
                    let v = loaded & mask(self.width);
                    write_reg(regs, Reg { index: gpr::RAX, high: false }, self.width, v);
                }
                let indexes: &[u8] = match self.op {
                    Op::Movs => &[gpr::RSI, gpr::RDI],
                    Op::Lods => &[gpr::RSI],
                    _ => &[gpr::RDI],
                };
                if string_step(regs, indexes, self.width, 1, self.addr_size, self.rep, rflags) { next } else { rip }
            }
        }
    }
}

/// Reads `width` bytes of register `r`.
pub fn read_reg(regs: &Gprs, r: Reg, width: u8) -> u64 {
    if r.high {
        (gpr_get(regs, r.index) >> 8) & 0xff
    } else {
        gpr_get(regs, r.index) & mask(width)
    }
}

/// Writes `width` bytes of register `r` as the processor does: 8 and 16-bit writes keep the
/// other bits, 32-bit writes zero-extend to 64.
pub fn write_reg(regs: &mut Gprs, r: Reg, width: u8, v: u64) {
    let Some(slot) = regs.get_mut(usize::from(r.index)) else {
        return; // the decoder's indexes are 0-15
    };
    *slot = match (width, r.high) {
        (1, true) => (*slot & !0xff00) | (v & 0xff) << 8,
        (1 | 2, _) => (*slot & !mask(width)) | (v & mask(width)),
        (4, _) => v & 0xffff_ffff,
        _ => v,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const AL: Reg = Reg { index: 0, high: false };
    const fn r(index: u8) -> Reg {
        Reg { index, high: false }
    }
    fn mem(seg: Seg, base: Option<u8>, index: Option<(u8, u8)>, disp: i64) -> Mem {
        Mem { seg, base, index, disp, rip_relative: false }
    }
    fn load(reg: Reg, reg_width: u8, extend: Extend) -> Op {
        Op::Load { reg, reg_width, extend }
    }

    /// Immediates and displacements: sign-extended, and the error of the first byte that is
    /// missing (the bytes end: `Truncated`) or past the longest instruction (`Instruction`).
    #[test]
    fn immediates() {
        let b = [0xfe, 0xff, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12, 0x80];
        assert_eq!(Bytes { b: &b, pos: 0 }.signed(2), Ok(-2));
        assert_eq!(Bytes { b: &b, pos: 0 }.signed(1), Ok(-2));
        assert_eq!(Bytes { b: &b, pos: 8 }.signed(1), Ok(-128));
        let mut bytes = Bytes { b: &b, pos: 2 };
        assert_eq!(bytes.signed(4), Ok(0x5678_1234));
        assert_eq!(bytes.pos, 6);
        assert_eq!(Bytes { b: &b, pos: 1 }.signed(8), Ok(0x8012_3456_7812_34ff_u64 as i64));
        assert_eq!(Bytes { b: &b, pos: 6 }.signed(4), Err(Unsupported::Truncated));
        let long = [0u8; 20];
        let mut at_end = Bytes { b: &long, pos: 11 };
        assert_eq!(at_end.signed(4), Ok(0));
        assert_eq!(at_end.pos, MAX_LEN);
        assert_eq!(Bytes { b: &long, pos: 12 }.signed(4), Err(Unsupported::Instruction));
        // The bytes end before the limit does: the missing byte decides.
        assert_eq!(Bytes { b: &long[..14], pos: 12 }.signed(4), Err(Unsupported::Truncated));
        assert_eq!(Bytes { b: &long[..16], pos: 13 }.signed(4), Err(Unsupported::Instruction));
    }

    /// Encodings (as assemblers emit them) → expected decoding.
    #[test]
    fn decode_table() {
        use Mode::*;
        use Seg::*;
        let cases: &[(&[u8], Mode, u8, Op, u8, Mem, u8)] = &[
            // mov [rax], ecx
            (&[0x89, 0x08], Bits64, 2, Op::StoreReg(r(1)), 4, mem(Ds, Some(0), None, 0), 8),
            // mov rdx, [rbx+0x10]
            (&[0x48, 0x8b, 0x53, 0x10], Bits64, 4, load(r(2), 8, Extend::None), 8, mem(Ds, Some(3), None, 0x10), 8),
            // mov r9w, [r12+r13*4-8]  (66 47 8b 4c ac f8)
            (&[0x66, 0x47, 0x8b, 0x4c, 0xac, 0xf8], Bits64, 6, load(r(9), 2, Extend::None), 2,
             mem(Ds, Some(12), Some((13, 4)), -8), 8),
            // mov ah, [rsi]  (no REX: AH)
            (&[0x8a, 0x26], Bits64, 2, load(Reg { index: 0, high: true }, 1, Extend::None), 1, mem(Ds, Some(6), None, 0), 8),
            // mov spl, [rsi]  (REX: SPL)
            (&[0x40, 0x8a, 0x26], Bits64, 3, load(r(4), 1, Extend::None), 1, mem(Ds, Some(6), None, 0), 8),
            // mov byte [rdi], 0x80
            (&[0xc6, 0x07, 0x80], Bits64, 3, Op::StoreImm(0x80), 1, mem(Ds, Some(7), None, 0), 8),
            // mov qword [rbp-0x20], -2  (imm32 sign-extended)
            (&[0x48, 0xc7, 0x45, 0xe0, 0xfe, 0xff, 0xff, 0xff], Bits64, 8, Op::StoreImm(u64::MAX - 1), 8,
             mem(Ss, Some(5), None, -0x20), 8),
            // mov word [0x1000], 0x1234 (16-bit code, disp16)
            (&[0xc7, 0x06, 0x00, 0x10, 0x34, 0x12], Bits16, 6, Op::StoreImm(0x1234), 2, mem(Ds, None, None, 0x1000), 2),
            // mov al, [bp+di+2]  (16-bit: SS default)
            (&[0x8a, 0x43, 0x02], Bits16, 3, load(AL, 1, Extend::None), 1, mem(Ss, Some(5), Some((7, 1)), 2), 2),
            // mov [es:bx+si], ax
            (&[0x26, 0x89, 0x00], Bits16, 3, Op::StoreReg(r(0)), 2, mem(Es, Some(3), Some((6, 1)), 0), 2),
            // mov eax, [ebx*8+0x100] (32-bit, SIB without base)
            (&[0x8b, 0x04, 0xdd, 0x00, 0x01, 0x00, 0x00], Bits32, 7, load(r(0), 4, Extend::None), 4,
             mem(Ds, None, Some((3, 8)), 0x100), 4),
            // mov eax, [esp+4]
            (&[0x8b, 0x44, 0x24, 0x04], Bits32, 4, load(r(0), 4, Extend::None), 4, mem(Ss, Some(4), None, 4), 4),
            // mov [fs:eax], dx (32-bit, 66 and 64 prefixes)
            (&[0x66, 0x64, 0x89, 0x10], Bits32, 4, Op::StoreReg(r(2)), 2, mem(Fs, Some(0), None, 0), 4),
            // mov eax, [si] in 32-bit code with 67 (16-bit addressing)
            (&[0x67, 0x8b, 0x04], Bits32, 3, load(r(0), 4, Extend::None), 4, mem(Ds, Some(6), None, 0), 2),
            // movzx eax, byte [rdi]
            (&[0x0f, 0xb6, 0x07], Bits64, 3, load(r(0), 4, Extend::Zero), 1, mem(Ds, Some(7), None, 0), 8),
            // movsx rbx, word [rcx]
            (&[0x48, 0x0f, 0xbf, 0x19], Bits64, 4, load(r(3), 8, Extend::Sign), 2, mem(Ds, Some(1), None, 0), 8),
            // movsxd rax, dword [rdx]
            (&[0x48, 0x63, 0x02], Bits64, 3, load(r(0), 8, Extend::Sign), 4, mem(Ds, Some(2), None, 0), 8),
            // mov eax, [0x12345678] (A1, 32-bit moffs)
            (&[0xa1, 0x78, 0x56, 0x34, 0x12], Bits32, 5, load(r(0), 4, Extend::None), 4, mem(Ds, None, None, 0x1234_5678), 4),
            // mov [0x00000000fee00000], eax (A3 with a 64-bit moffs)
            (&[0xa3, 0, 0, 0xe0, 0xfe, 0, 0, 0, 0], Bits64, 9, Op::StoreReg(r(0)), 4, mem(Ds, None, None, 0xfee0_0000), 8),
            // rep stosd
            (&[0xf3, 0xab], Bits32, 2, Op::Stos, 4, mem(Ds, Some(6), None, 0), 4),
            // movsb with a GS source override
            (&[0x65, 0xa4], Bits64, 2, Op::Movs, 1, mem(Gs, Some(6), None, 0), 8),
            // lodsw (16-bit code), lodsq
            (&[0xad], Bits16, 1, Op::Lods, 2, mem(Ds, Some(6), None, 0), 2),
            (&[0x48, 0xad], Bits64, 2, Op::Lods, 8, mem(Ds, Some(6), None, 0), 8),
            // movnti [rbx + 8], ecx; movnti [rax], r9 (REX.W R)
            (&[0x0f, 0xc3, 0x4b, 0x08], Bits64, 4, Op::StoreReg(r(1)), 4, mem(Ds, Some(3), None, 8), 8),
            (&[0x4c, 0x0f, 0xc3, 0x08], Bits64, 4, Op::StoreReg(r(9)), 8, mem(Ds, Some(0), None, 0), 8),
            // a REX followed by a prefix is ignored: 48 66 89 08 = mov [rax], cx
            (&[0x48, 0x66, 0x89, 0x08], Bits64, 4, Op::StoreReg(r(1)), 2, mem(Ds, Some(0), None, 0), 8),
            // mov [r13], r8 (REX.B with rm=5, mod=1, disp8 0)
            (&[0x4d, 0x89, 0x45, 0x00], Bits64, 4, Op::StoreReg(r(8)), 8, mem(Ds, Some(13), None, 0), 8),
        ];
        for (bytes, mode, len, op, width, m, addr) in cases {
            let i = decode(bytes, *mode).unwrap_or_else(|e| panic!("{bytes:02x?}: {e:?}"));
            assert_eq!((i.len, i.op, i.width, i.mem, i.addr_size), (*len, *op, *width, *m, *addr), "{bytes:02x?}");
        }
    }

    #[test]
    fn rip_relative_and_offsets() {
        // mov eax, [rip+0x100]
        let i = decode(&[0x8b, 0x05, 0x00, 0x01, 0x00, 0x00], Mode::Bits64).unwrap();
        assert!(i.mem.rip_relative);
        assert_eq!(i.offset(&[0; 16], 0x1000), 0x1106);
        // 16-bit addressing wraps at 64 KiB: [bx+si+0x10] with bx=0xfff0, si=0x10
        let i = decode(&[0x8b, 0x40, 0x10], Mode::Bits16).unwrap();
        let mut regs = [0u64; 16];
        regs[3] = 0xfff0;
        regs[6] = 0x10;
        assert_eq!(i.offset(&regs, 0), 0x10);
        // 32-bit addressing wraps at 4 GiB: [eax-1] with eax = 0
        let i = decode(&[0x8b, 0x40, 0xff], Mode::Bits32).unwrap();
        assert_eq!(i.offset(&[0; 16], 0), 0xffff_ffff);
    }

    #[test]
    fn refused() {
        // mov eax, ecx: register operand
        assert_eq!(decode(&[0x89, 0xc8], Mode::Bits32), Err(Unsupported::Instruction));
        // lock mov, lock cmp, lock bt (#UD), c7 /1, mul [rax], call [rax], add eax, ecx
        assert_eq!(decode(&[0xf0, 0x89, 0x08], Mode::Bits64), Err(Unsupported::Instruction));
        assert_eq!(decode(&[0xf0, 0x39, 0x08], Mode::Bits64), Err(Unsupported::Instruction));
        assert_eq!(decode(&[0xf0, 0x0f, 0xa3, 0x08], Mode::Bits64), Err(Unsupported::Instruction));
        assert_eq!(decode(&[0xc7, 0x48, 0, 0, 0, 0, 0], Mode::Bits64), Err(Unsupported::Instruction));
        assert_eq!(decode(&[0xf7, 0x20], Mode::Bits64), Err(Unsupported::Instruction));
        assert_eq!(decode(&[0xff, 0x10], Mode::Bits64), Err(Unsupported::Instruction));
        assert_eq!(decode(&[0x01, 0xc8], Mode::Bits64), Err(Unsupported::Instruction));
        // movsxd is 64-bit only (63 is ARPL elsewhere); truncated bytes; 15 prefixes
        assert_eq!(decode(&[0x63, 0x02], Mode::Bits32), Err(Unsupported::Instruction));
        assert_eq!(decode(&[0x8b, 0x80, 0x00], Mode::Bits32), Err(Unsupported::Truncated));
        assert_eq!(decode(&[0x66; 16], Mode::Bits32), Err(Unsupported::Instruction));
    }

    /// The read-modify-write forms: decoding, then the registers, flags and written value.
    #[test]
    fn read_modify_write() {
        use Mode::*;
        let run = |bytes: &[u8], mode: Mode, regs: &mut Gprs, flags: &mut u64, m: u64| {
            let i = decode(bytes, mode).unwrap();
            assert!(i.reads_memory() && i.computes() && i.store_value(regs).is_none(), "{bytes:02x?}");
            assert_eq!(i.complete(regs, 0x100, *flags, 0), 0x100 + u64::from(i.len), "RIP past it");
            (i, i.compute(regs, flags, m))
        };
        let mut r = [0u64; 16];
        let mut f = 2u64;
        // lock add [rax], ecx: 0xffff_ffff + 1 = 0 with CF, ZF.
        r[1] = 1;
        let (i, w) = run(&[0xf0, 0x01, 0x08], Bits64, &mut r, &mut f, 0xffff_ffff);
        assert_eq!((i.len, i.width, w, f & alu::STATUS), (3, 4, Some(0), rflags::CF | rflags::ZF | rflags::PF | rflags::AF));
        // sub ecx, [rax] (register destination): ecx = 1 - 2, no write.
        let (_, w) = run(&[0x2b, 0x08], Bits64, &mut r, &mut f, 2);
        assert_eq!((w, r[1]), (None, 0xffff_ffff));
        // cmp byte [rbx], 0x10: flags only.
        let (i, w) = run(&[0x80, 0x3b, 0x10], Bits64, &mut r, &mut f, 0x10);
        assert_eq!((i.len, i.width, w, f & rflags::ZF), (3, 1, None, rflags::ZF));
        // or word [bp+2], 0x8000 in 16-bit code (81 /1 iw); and dword [rsi], -1 (83 /4 ib).
        let (i, w) = run(&[0x81, 0x4e, 0x02, 0x00, 0x80], Bits16, &mut r, &mut f, 0x1);
        assert_eq!((i.len, i.mem.seg, w), (5, Seg::Ss, Some(0x8001)));
        let (_, w) = run(&[0x83, 0x26, 0xff], Bits64, &mut r, &mut f, 0x1234);
        assert_eq!(w, Some(0x1234));
        // test [rax], edx with 0; test byte [rax], 0x80 (f6 /0 ib).
        r[2] = 0xf0;
        let (_, w) = run(&[0x85, 0x10], Bits64, &mut r, &mut f, 0x0f);
        assert_eq!((w, f & rflags::ZF), (None, rflags::ZF));
        let (i, _) = run(&[0xf6, 0x00, 0x80], Bits64, &mut r, &mut f, 0x80);
        assert_eq!((i.len, f & (rflags::ZF | rflags::SF)), (3, rflags::SF));
        // not qword [rax]; neg byte [rax]; inc word [rax]; dec dword [rax].
        assert_eq!(run(&[0x48, 0xf7, 0x10], Bits64, &mut r, &mut f, 0).1, Some(u64::MAX));
        assert_eq!(run(&[0xf6, 0x18], Bits64, &mut r, &mut f, 1).1, Some(0xff));
        assert_eq!(run(&[0x66, 0xff, 0x00], Bits64, &mut r, &mut f, 0xffff).1, Some(0));
        assert_eq!(run(&[0xff, 0x08], Bits64, &mut r, &mut f, 0).1, Some(0xffff_ffff));
        // xchg [rax], bl; xadd [rax], ecx.
        r[3] = 0x11;
        let (_, w) = run(&[0x86, 0x18], Bits64, &mut r, &mut f, 0x22);
        assert_eq!((w, r[3]), (Some(0x11), 0x22));
        r[1] = 5;
        let (_, w) = run(&[0x0f, 0xc1, 0x08], Bits64, &mut r, &mut f, 7);
        assert_eq!((w, r[1]), (Some(12), 7));
        // cmpxchg [rax], ecx: equal to eax writes ecx; different loads eax and writes [rax] back.
        (r[0], r[1]) = (9, 3);
        let (_, w) = run(&[0x0f, 0xb1, 0x08], Bits64, &mut r, &mut f, 9);
        assert_eq!((w, r[0], f & rflags::ZF), (Some(3), 9, rflags::ZF));
        let (_, w) = run(&[0x0f, 0xb1, 0x08], Bits64, &mut r, &mut f, 4);
        assert_eq!((w, r[0], f & rflags::ZF), (Some(4), 4, 0));
        // bts dword [rax], 33 (0f ba /5 ib: the bit is taken modulo 32); btr [rax], ecx.
        let (i, w) = run(&[0x0f, 0xba, 0x28, 33], Bits64, &mut r, &mut f, 0);
        assert_eq!((i.len, w, f & rflags::CF), (4, Some(2), 0));
        r[1] = 3;
        assert_eq!(run(&[0x0f, 0xb3, 0x08], Bits64, &mut r, &mut f, 0xf).1, Some(0x7));
        assert_eq!(f & rflags::CF, rflags::CF);
        // bt [rax], ecx with a register offset beyond the dword: the address moves by whole
        // dwords, signed (offset -1 is bit 31 of the dword below).
        r[0] = 0x1000;
        r[1] = 100;
        let i = decode(&[0x0f, 0xa3, 0x08], Bits64).unwrap();
        assert_eq!(i.offset(&r, 0), 0x1000 + 12);
        r[1] = 0xffff_ffff;
        assert_eq!(i.offset(&r, 0), 0x1000 - 4);
        let mut f2 = 0;
        i.compute(&mut r, &mut f2, 1 << 31);
        assert_eq!(f2 & rflags::CF, rflags::CF);
    }

    #[test]
    fn completion() {
        let mut regs = [0u64; 16];
        regs[0] = 0xffff_ffff_ffff_ffff;
        // mov ah, [rsi] loading 0x12: only bits 15:8 change
        let i = decode(&[0x8a, 0x26], Mode::Bits64).unwrap();
        assert_eq!(i.complete(&mut regs, 0x100, 0, 0x12), 0x102);
        assert_eq!(regs[0], 0xffff_ffff_ffff_12ff);
        // mov eax, [rsi]: 32-bit loads zero-extend
        let i = decode(&[0x8b, 0x06], Mode::Bits64).unwrap();
        i.complete(&mut regs, 0, 0, 0x8000_0001);
        assert_eq!(regs[0], 0x8000_0001);
        // movsx rbx, word [rcx] with 0x8001
        let i = decode(&[0x48, 0x0f, 0xbf, 0x19], Mode::Bits64).unwrap();
        i.complete(&mut regs, 0, 0, 0x8001);
        assert_eq!(regs[3], 0xffff_ffff_ffff_8001);
        // movzx ax, byte [rdi] (16-bit destination keeps the upper bits)
        regs[0] = 0xaaaa_aaaa_aaaa_aaaa;
        let i = decode(&[0x66, 0x0f, 0xb6, 0x07], Mode::Bits64).unwrap();
        i.complete(&mut regs, 0, 0, 0xff);
        assert_eq!(regs[0], 0xaaaa_aaaa_aaaa_00ff);
        // store value of mov [rax], bh
        regs[3] = 0x1234;
        let i = decode(&[0x88, 0x38], Mode::Bits64).unwrap();
        assert_eq!(i.store_value(&regs), Some(0x12));
    }

    #[test]
    fn string_steps() {
        let mut regs = [0u64; 16];
        regs[gpr::RCX as usize] = 2;
        regs[gpr::RDI as usize] = 0x1000;
        regs[gpr::RSI as usize] = 0x2000;
        // rep movsw, 16-bit addressing in 32-bit code (67): DI/SI/CX wrap at 16 bits
        let i = decode(&[0xf3, 0x66, 0xa5], Mode::Bits32).unwrap();
        assert!(i.rep && i.width == 2 && !i.rep_done(&regs));
        assert_eq!(i.complete(&mut regs, 0x50, 0, 0), 0x50); // one left: stays on the insn
        assert_eq!((regs[1], regs[6], regs[7]), (1, 0x2002, 0x1002));
        assert_eq!(i.complete(&mut regs, 0x50, 0, 0), 0x53); // done: next instruction
        assert!(i.rep_done(&regs));
        // std; stosb counts down; 16-bit addressing wraps
        regs[gpr::RDI as usize] = 0x1_0000;
        let i = decode(&[0x67, 0xaa], Mode::Bits32).unwrap();
        assert_eq!(i.dest_offset(&regs), 0);
        i.complete(&mut regs, 0, rflags::DF, 0);
        assert_eq!(regs[gpr::RDI as usize], 0x1_ffff);
        // A batch of 3 words (REP INSW with KVM's read-ahead), 32-bit addressing.
        regs[gpr::RCX as usize] = 0xffff_ffff_0000_0005;
        regs[gpr::RDI as usize] = 0x100;
        assert!(!string_step(&mut regs, &[gpr::RDI], 2, 3, 4, true, 0));
        assert_eq!((regs[gpr::RCX as usize], regs[gpr::RDI as usize]), (2, 0x106));
        assert!(string_step(&mut regs, &[gpr::RDI], 2, 2, 4, true, 0));
        // lodsb loads AL only; rSI moves, rDI does not
        regs[0] = 0x1111_2222;
        (regs[gpr::RSI as usize], regs[gpr::RDI as usize]) = (0x300, 2);
        let i = decode(&[0xac], Mode::Bits64).unwrap();
        assert!(i.reads_memory() && i.store_value(&regs).is_none());
        assert_eq!(i.complete(&mut regs, 0x10, 0, 0xabcd), 0x11);
        assert_eq!((regs[0], regs[gpr::RSI as usize], regs[gpr::RDI as usize]), (0x1111_22cd, 0x301, 2));
        // lodsd zero-extends into RAX
        let i = decode(&[0xad], Mode::Bits64).unwrap();
        i.complete(&mut regs, 0, rflags::DF, 0x8000_0001);
        assert_eq!((regs[0], regs[gpr::RSI as usize]), (0x8000_0001, 0x2fd));
        // MOVNTI with 66 is #UD
        assert!(decode(&[0x66, 0x0f, 0xc3, 0x08], Mode::Bits64).is_err());
    }

    #[test]
    fn rsm_is_recognized_after_prefixes_but_lock() {
        assert!(is_rsm(&[0x0f, 0xaa, 0x90]));
        assert!(is_rsm(&[0x66, 0x2e, 0x0f, 0xaa]));
        assert!(!is_rsm(&[0xf0, 0x0f, 0xaa]), "LOCK RSM is #UD");
        assert!(!is_rsm(&[0x0f, 0x0b]) && !is_rsm(&[0x0f]) && !is_rsm(&[0x66; 3]) && !is_rsm(&[]));
    }
}
