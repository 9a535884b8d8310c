// SPDX-License-Identifier: GPL-2.0

//! Instructions rvmx finishes in software, outside the VMX window, because their memory
//! access has no RAM behind it: MMIO (an EPT violation outside every slot, or a write to a
//! read-only slot) and string I/O (INS/OUTS). The instruction is fetched through the guest's
//! page tables, decoded by [`crate::insn`], and completed through `kvm_run` exactly as KVM
//! completes it:
//! - MMIO writes and OUTS are committed when they exit (RIP past the instruction, or on the
//!   same REP instruction with rCX one less); userspace only consumes the data.
//! - MMIO reads and INS complete at the next `KVM_RUN`, with the data userspace put in
//!   `kvm_run` (MMIO) or the PIO page (INS).
//!
//! Anything the decoder does not know, or an access the checks below cannot prove, ends in
//! `KVM_EXIT_INTERNAL_ERROR` (emulation) with the instruction bytes: never a guess.

use kernel::{
    prelude::*,
    uaccess::{UserPtr, UserSlice},
};

use crate::{
    events::vector,
    guest_paging::{page_chunks, to_page_end, Paging, WalkError},
    insn::{self, Gprs, Insn, Mode, Op, Seg},
    ioeventfd_rules::Bus,
    kvm_abi::{Regs, Segment, Sregs},
    run::KvmRun,
    vm::{Memory, Vm},
    vmx_exit::Io,
};

/// The EPT-violation qualification bit for an instruction fetch.
const FETCH: u64 = 1 << 2;
/// KVM's read-ahead buffer for INS: at most this many bytes per exit.
const INS_BATCH_BYTES: u64 = 1024;

/// An instruction waiting for userspace's data, finished at the next `KVM_RUN`.
#[derive(Clone, Copy)]
pub(crate) enum Pending {
    /// An MMIO read into a register, or (MOVS from MMIO) into guest RAM at `to_ram`.
    MmioRead { insn: Insn, to_ram: Option<u64> },
    /// INS of `count` elements of `size` bytes (`rep`: counted in rCX).
    Ins { size: u8, count: u32, addr_size: u8, rep: bool, len: u8 },
}

/// `KVM_TRANSLATE`: the guest-physical address of `linear` for a supervisor read through the
/// guest's current page tables (KVM's `kvm_mmu_gva_to_gpa_system`), `None` if it has none.
pub(crate) fn translate(vm: &Vm, sregs: &Sregs, linear: u64) -> Option<u64> {
    let mut g = Guest::new(vm.memory(), sregs);
    g.paging.cpl = 0;
    g.translate(linear, false).ok()
}

/// Why an instruction could not be finished.
enum Failure {
    /// rvmx cannot emulate it: reported to userspace, never guessed.
    Unsupported,
    /// It faults, as on the processor (a non-canonical address, a page the guest's tables
    /// deny): the exception goes to the guest, as KVM's emulator raises it.
    Fault(GuestFault),
}

/// An exception an emulated instruction raises in the guest.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GuestFault {
    /// Its vector (#GP, #SS or #PF).
    pub(crate) vector: u8,
    /// Its error code.
    pub(crate) error_code: u32,
    /// For #PF: the linear address that faulted (CR2).
    pub(crate) cr2: Option<u64>,
}

impl Failure {
    /// A failed walk of the guest's tables for linear address `la`: #PF if the tables deny
    /// the access, unsupported if they are not in RAM.
    fn walk(e: WalkError, la: u64) -> Self {
        match e {
            WalkError::PageFault(error_code) => Failure::Fault(GuestFault { vector: vector::PF, error_code, cr2: Some(la) }),
            WalkError::NotRam(_) => Failure::Unsupported,
        }
    }
}

/// The guest as emulation sees it: registers, paging, and its VM's memory.
struct Guest<'a> {
    mem: Memory<'a>,
    sregs: &'a Sregs,
    paging: Paging,
    mode: Mode,
}

fn gprs(r: &Regs) -> Gprs {
    [r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15]
}

fn set_gprs(r: &mut Regs, g: &Gprs) {
    [r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15] = *g;
}

impl<'a> Guest<'a> {
    fn new(mem: Memory<'a>, sregs: &'a Sregs) -> Self {
        let long = sregs.efer & crate::vcpu_state::efer::LMA != 0;
        let mode = if long && sregs.cs.l != 0 {
            Mode::Bits64
        } else if sregs.cs.db != 0 {
            Mode::Bits32
        } else {
            Mode::Bits16
        };
        let paging = Paging { cr0: sregs.cr0, cr3: sregs.cr3, cr4: sregs.cr4, efer: sregs.efer, cpl: sregs.ss.dpl };
        Guest { mem, sregs, paging, mode }
    }

    fn segment(&self, seg: Seg) -> &Segment {
        let s = self.sregs;
        match seg {
            Seg::Es => &s.es, Seg::Cs => &s.cs, Seg::Ss => &s.ss,
            Seg::Ds => &s.ds, Seg::Fs => &s.fs, Seg::Gs => &s.gs,
        }
    }

    /// The linear address of `seg:offset` (in 64-bit mode only FS and GS have a base).
    fn linear(&self, seg: Seg, offset: u64) -> u64 {
        if self.mode == Mode::Bits64 {
            match seg {
                Seg::Fs | Seg::Gs => self.segment(seg).base.wrapping_add(offset),
                _ => offset,
            }
        } else {
            self.segment(seg).base.wrapping_add(offset) & 0xffff_ffff
        }
    }

    /// The linear address of a data access to `seg:offset`: in 64-bit mode it must be
    /// canonical, else #GP(0) (#SS(0) through SS), as the processor checks.
    fn data_linear(&self, seg: Seg, offset: u64) -> Result<u64, Failure> {
        let la = self.linear(seg, offset);
        if self.mode == Mode::Bits64 && !crate::msr_rules::canonical(la) {
            let vector = if seg == Seg::Ss { vector::SS } else { vector::GP };
            return Err(Failure::Fault(GuestFault { vector, error_code: 0, cr2: None }));
        }
        Ok(la)
    }

    /// Reads guest RAM at `gpa` (not crossing a page).
    fn read_gpa(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Failure> {
        self.mem.read_ram(gpa, buf).map_err(|_| Failure::Unsupported)
    }

    fn translate(&self, linear: u64, write: bool) -> Result<u64, WalkError> {
        self.paging.translate(linear, write, |gpa, bytes| {
            let mut b = [0u8; 8];
            self.read_gpa(gpa, b.get_mut(..bytes)?).ok()?;
            Some(u64::from_le_bytes(b))
        })
    }

    /// Reads guest RAM at linear address `linear`, page by page. Fails if any byte is not RAM
    /// or the guest's tables deny the read.
    fn read_linear(&self, linear: u64, buf: &mut [u8]) -> Result<(), Failure> {
        for (la, range) in page_chunks(linear, buf.len()) {
            let gpa = self.translate(la, false).map_err(|e| Failure::walk(e, la))?;
            self.read_gpa(gpa, buf.get_mut(range).ok_or(Failure::Unsupported)?)?;
        }
        Ok(())
    }

    /// Writes `buf` to guest RAM at linear address `linear`, page by page (each page logged
    /// dirty). Fails if any byte is not writable RAM or the guest's tables deny the write.
    fn write_linear(&mut self, linear: u64, buf: &[u8]) -> Result<(), Failure> {
        for (la, range) in page_chunks(linear, buf.len()) {
            let gpa = self.translate(la, true).map_err(|e| Failure::walk(e, la))?;
            let uaddr = self.mem.ram_uaddr(gpa, true).ok_or(Failure::Unsupported)? as usize;
            let chunk = buf.get(range).ok_or(Failure::Unsupported)?;
            UserSlice::new(UserPtr::from_addr(uaddr), chunk.len()).writer().write_slice(chunk).map_err(|_| Failure::Unsupported)?;
        }
        Ok(())
    }

    /// Whether `gpa` (for this access) is MMIO rather than RAM.
    fn is_mmio(&self, gpa: u64, write: bool) -> bool {
        !self.mem.is_ram(gpa, write)
    }

    /// Fetches up to 15 instruction bytes at CS:RIP (fewer if the next page is not RAM).
    fn fetch(&self, rip: u64, bytes: &mut [u8; insn::MAX_LEN]) -> usize {
        let rip = self.linear(Seg::Cs, rip);
        let first = (to_page_end(rip) as usize).min(insn::MAX_LEN);
        let Some((head, rest)) = bytes.split_at_mut_checked(first) else {
            return 0;
        };
        if self.read_linear(rip, head).is_err() {
            return 0;
        }
        if !rest.is_empty() && self.read_linear(rip.wrapping_add(first as u64), rest).is_err() {
            return first;
        }
        insn::MAX_LEN
    }
}

/// The first `n` bytes of `b` (all of it if shorter).
fn first(b: &[u8], n: usize) -> &[u8] {
    b.get(..n).unwrap_or(b)
}

/// Finishes the instruction whose access at `gpa` (EPT `qualification`) found no RAM.
pub(crate) fn mmio(mem: Memory<'_>, regs: &mut Regs, sregs: &Sregs, run: &KvmRun, gpa: u64, qualification: u64) -> Mmio {
    let g = Guest::new(mem, sregs);
    let mut bytes = [0u8; insn::MAX_LEN];
    let n = if qualification & FETCH != 0 { 0 } else { g.fetch(regs.rip, &mut bytes) };
    let decoded = insn::decode(first(&bytes, n), g.mode).ok();
    match decoded.map(|i| (i, mmio_access(&g, regs, &i, run, gpa))) {
        Some((_, Ok(outcome))) => outcome,
        Some((_, Err(Failure::Fault(f)))) => Mmio::Fault(f),
        _ => {
            let len = decoded.map_or(n, |i| i.len as usize);
            run.emulation_failure(first(&bytes, len), &[gpa, qualification]);
            Mmio::Exit(None)
        }
    }
}

/// How an MMIO access ends.
pub(crate) enum Mmio {
    /// `kvm_run` describes the exit (or an emulation failure); a read completes on the next
    /// `KVM_RUN` with `Pending`.
    Exit(Option<Pending>),
    /// A write an ioeventfd took: done, no exit.
    Signalled,
    /// The instruction faults: the exception goes to the guest, no exit.
    Fault(GuestFault),
}

fn mmio_access(g: &Guest<'_>, regs: &mut Regs, i: &Insn, run: &KvmRun, gpa: u64) -> Result<Mmio, Failure> {
    let mut r = gprs(regs);
    if i.rep_done(&r) {
        return Err(Failure::Unsupported); // no access to make: this exit cannot have come from it
    }
    let src = g.data_linear(i.mem.seg, i.offset(&r, regs.rip))?;
    let dst = g.data_linear(Seg::Es, i.dest_offset(&r))?;
    let translate = |la: u64, write: bool| g.translate(la, write).map_err(|e| Failure::walk(e, la));
    let width = i.width as u64;
    // The access must be the one that exited, whole inside its page (KVM would split a
    // page-crossing MMIO access in two; rvmx reports it instead).
    let exact = |mem_gpa: u64| mem_gpa == gpa && width <= to_page_end(gpa);
    let (mmio_write, value, to_ram) = match i.op {
        Op::Load { .. } | Op::StoreReg(_) | Op::StoreImm(_) => {
            let write = !i.reads_memory();
            if !exact(translate(src, write)?) || !g.is_mmio(gpa, write) {
                return Err(Failure::Unsupported);
            }
            (write, i.store_value(&r).unwrap_or(0), None)
        }
        Op::Stos => {
            if !exact(translate(dst, true)?) || !g.is_mmio(gpa, true) {
                return Err(Failure::Unsupported);
            }
            (true, i.store_value(&r).unwrap_or(0), None)
        }
        Op::Movs => {
            let (src_gpa, dst_gpa) = (translate(src, false)?, translate(dst, true)?);
            match (g.is_mmio(src_gpa, false), g.is_mmio(dst_gpa, true)) {
                // RAM to MMIO: read the element now, the exit writes it.
                (false, true) if exact(dst_gpa) => {
                    let mut b = [0u8; 8];
                    g.read_linear(src, b.get_mut(..usize::from(i.width)).ok_or(Failure::Unsupported)?)?;
                    (true, u64::from_le_bytes(b), None)
                }
                // MMIO to RAM: the exit reads it, the next KVM_RUN stores it.
                (true, false) if exact(src_gpa) => (false, 0, Some(dst)),
                _ => return Err(Failure::Unsupported), // MMIO to MMIO: not emulated
            }
        }
    };
    if mmio_write {
        let signalled = g.mem.ioeventfd_write(Bus::Mmio, gpa, i.width as u32, value);
        if !signalled {
            run.mmio(gpa, first(&value.to_le_bytes(), i.width.into()), true);
        }
        let rip = i.complete(&mut r, regs.rip, regs.rflags, 0);
        set_gprs(regs, &r);
        regs.rip = rip;
        Ok(if signalled { Mmio::Signalled } else { Mmio::Exit(None) })
    } else {
        run.mmio(gpa, first(&[0u8; 8], i.width.into()), false);
        Ok(Mmio::Exit(Some(Pending::MmioRead { insn: *i, to_ram })))
    }
}

/// INS/OUTS (`io` decoded from the exit qualification) of `len` bytes. OUTS sends one
/// element per exit; INS asks for as many as fit KVM's read-ahead (1 KiB, the rest of the
/// destination page, rCX), as KVM does.
/// `Err` if the instruction faults (an OUTS source the guest cannot read): nothing exits.
pub(crate) fn string_io(vm: &Vm, regs: &mut Regs, sregs: &Sregs, run: &KvmRun, io: Io, len: u8) -> Result<Option<Pending>, GuestFault> {
    let g = Guest::new(vm.memory(), sregs);
    match string_io_access(&g, regs, io, len, run) {
        Ok(p) => Ok(p),
        Err(Failure::Fault(f)) => Err(f),
        Err(Failure::Unsupported) => {
            let mut bytes = [0u8; insn::MAX_LEN];
            let n = g.fetch(regs.rip, &mut bytes).min(len as usize);
            run.emulation_failure(first(&bytes, n), &[]);
            Ok(None)
        }
    }
}

fn string_io_access(g: &Guest<'_>, regs: &mut Regs, io: Io, len: u8, run: &KvmRun) -> Result<Option<Pending>, Failure> {
    // The address size comes from the instruction's prefixes, which the exit does not give:
    // decode them (the opcode itself, 6C-6F, is not one the MMIO decoder knows).
    let mut bytes = [0u8; insn::MAX_LEN];
    let n = g.fetch(regs.rip, &mut bytes).min(len as usize);
    let addr_size = string_io_addr_size(first(&bytes, n), g.mode).ok_or(Failure::Unsupported)?;
    let mask = insn::mask(addr_size);
    let size = io.size as u64;
    let r = gprs(regs);
    let count = if io.rep { insn::gpr_get(&r, insn::gpr::RCX) & mask } else { 1 };
    if count == 0 {
        return Err(Failure::Unsupported);
    }
    let down = regs.rflags & insn::RFLAGS_DF != 0;
    if io.input {
        let rdi = insn::gpr_get(&r, insn::gpr::RDI) & mask;
        let in_page = if down { rdi & 0xfff } else { to_page_end(rdi) };
        let batch = INS_BATCH_BYTES.checked_div(size).unwrap_or(1); // size is 1, 2 or 4
        let n = in_page.min(batch).min(count).max(1) as u32;
        run.io(true, io.size, io.port, n);
        Ok(Some(Pending::Ins { size: io.size, count: n, addr_size, rep: io.rep, len }))
    } else {
        // OUTS reads DS:rSI (or the override): find the segment among the prefixes.
        let seg = string_io_segment(first(&bytes, n));
        let src = g.data_linear(seg, insn::gpr_get(&r, insn::gpr::RSI) & mask)?;
        let mut b = [0u8; 4];
        let b = b.get_mut(..usize::from(io.size)).ok_or(Failure::Unsupported)?;
        g.read_linear(src, b)?;
        run.write_pio_data(b);
        run.io(false, io.size, io.port, 1);
        finish_string(regs, insn::gpr::RSI, io.size, 1, addr_size, io.rep, len);
        Ok(None)
    }
}

/// Moves rSI or rDI past `count` elements, counts rCX down for REP, and moves RIP past the
/// instruction once it is done.
fn finish_string(regs: &mut Regs, index: u8, size: u8, count: u64, addr_size: u8, rep: bool, len: u8) {
    let mut r = gprs(regs);
    let done = insn::string_step(&mut r, &[index], size, count, addr_size, rep, regs.rflags);
    set_gprs(regs, &r);
    if done {
        regs.rip = regs.rip.wrapping_add(len as u64);
    }
}

/// The address size of an INS/OUTS from its prefixes.
fn string_io_addr_size(bytes: &[u8], mode: Mode) -> Option<u8> {
    let mut addr_prefix = false;
    for &b in bytes {
        match b {
            0x67 => addr_prefix = true,
            0x6c..=0x6f => return Some(insn::addr_size(mode, addr_prefix)),
            _ => {}
        }
    }
    None
}

fn string_io_segment(bytes: &[u8]) -> Seg {
    let mut seg = Seg::Ds;
    for &b in bytes.iter().take_while(|b| !matches!(b, 0x6c..=0x6f)) {
        seg = match b {
            0x26 => Seg::Es, 0x2e => Seg::Cs, 0x36 => Seg::Ss, 0x64 => Seg::Fs, 0x65 => Seg::Gs,
            0x3e => Seg::Ds,
            _ => seg,
        };
    }
    seg
}

/// Whether `sregs` select PAE paging outside long mode (which uses the PDPTE registers).
pub(crate) fn pae_legacy(sregs: &Sregs) -> bool {
    Paging { cr0: sregs.cr0, cr4: sregs.cr4, efer: sregs.efer, ..Default::default() }.pae_legacy()
}

/// The four PDPTEs for PAE paging with `sregs` (CR3), read from guest RAM, or `None` if they
/// are not in RAM or one has reserved bits set.
pub(crate) fn pdptes(vm: &Vm, sregs: &Sregs) -> Option<[u64; 4]> {
    let g = Guest::new(vm.memory(), sregs);
    g.paging
        .pdptes(|gpa, bytes| {
            let mut b = [0u8; 8];
            g.read_gpa(gpa, b.get_mut(..bytes)?).ok()?;
            Some(u64::from_le_bytes(b))
        })
        .ok()
        .flatten()
}

/// How the completion of a pending instruction ended, when it did not.
pub(crate) enum Incomplete {
    /// The data cannot be put where the instruction says: `kvm_run` holds an emulation
    /// failure.
    Failed,
    /// The instruction faults (its destination is non-canonical or not writable by the
    /// guest's tables): the exception goes to the guest; for INS the elements before the
    /// faulting one are done, as on the processor.
    Fault(GuestFault),
}

/// Finishes a pending instruction with userspace's data, at the start of `KVM_RUN`.
pub(crate) fn complete(vm: &Vm, regs: &mut Regs, sregs: &Sregs, run: &KvmRun, p: Pending) -> Result<(), Incomplete> {
    let mut g = Guest::new(vm.memory(), sregs);
    match p {
        Pending::MmioRead { insn, to_ram } => {
            let value = run.mmio_data(insn.width);
            if let Some(dst) = to_ram {
                match g.write_linear(dst, first(&value.to_le_bytes(), insn.width.into())) {
                    Ok(()) => {}
                    Err(Failure::Fault(f)) => return Err(Incomplete::Fault(f)),
                    Err(Failure::Unsupported) => {
                        run.emulation_failure(&[], &[dst]);
                        return Err(Incomplete::Failed);
                    }
                }
            }
            let mut r = gprs(regs);
            let rip = insn.complete(&mut r, regs.rip, regs.rflags, value);
            set_gprs(regs, &r);
            regs.rip = rip;
        }
        Pending::Ins { size, count, addr_size, rep, len } => {
            let mask = insn::mask(addr_size);
            let down = regs.rflags & insn::RFLAGS_DF != 0;
            let rdi = regs.rdi & mask;
            for k in 0..count as u64 {
                // Guest addresses wrap around the address space (and the address size).
                let step = k.wrapping_mul(size as u64);
                let offset = if down { rdi.wrapping_sub(step) } else { rdi.wrapping_add(step) } & mask;
                let b = run.pio_data((k as usize).saturating_mul(size.into()), size);
                let written = g.data_linear(Seg::Es, offset).and_then(|la| g.write_linear(la, first(&b, size.into())));
                match written {
                    Ok(()) => {}
                    Err(Failure::Fault(f)) => {
                        if k != 0 {
                            finish_string(regs, insn::gpr::RDI, size, k, addr_size, rep, len);
                        }
                        return Err(Incomplete::Fault(f));
                    }
                    Err(Failure::Unsupported) => {
                        run.emulation_failure(&[], &[offset]);
                        return Err(Incomplete::Failed);
                    }
                }
            }
            finish_string(regs, insn::gpr::RDI, size, count as u64, addr_size, rep, len);
        }
    }
    Ok(())
}
