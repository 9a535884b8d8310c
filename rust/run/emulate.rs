// SPDX-License-Identifier: GPL-2.0

//! Instructions rvmx finishes in software, outside the VMX window, because their memory
//! access has no RAM behind it: MMIO (an EPT violation outside every slot, or a write to a
//! read-only slot) and string I/O (INS/OUTS). The instruction is fetched through the guest's
//! page tables, decoded by [`crate::logic::insn`], and completed through `kvm_run` exactly as KVM
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
    logic::arch::vector,
    logic::guest_paging::{page_chunks, to_page_end, KnownTranslation, Paging, WalkError},
    logic::insn::{self, Gprs, Insn, Mode, Op, Seg},
    logic::ioeventfd_rules::Bus,
    logic::kvm_abi::{Regs, Segment, Sregs},
    logic::mmio_fragments::{self as fragments, Fragment, Fragments},
    run::kvm_run::KvmRun,
    kvm::vm::Memory,
    mm::guest_memory::MappedReads,
    logic::vmx_exit::Io,
};

/// KVM's read-ahead buffer for INS: at most this many bytes per exit.
const INS_BATCH_BYTES: u64 = 1024;

/// The bytes of the access being emulated: an MMIO operand, or an INS batch (KVM's
/// read-ahead), kept in the kernel across the exits that give userspace their MMIO parts.
pub(crate) struct Data([u8; INS_BATCH_BYTES as usize]);

impl Default for Data {
    fn default() -> Self {
        Data([0; INS_BATCH_BYTES as usize])
    }
}

impl Data {
    fn get(&self, offset: usize, len: usize) -> Result<&[u8], Failure> {
        self.0.get(offset..offset.saturating_add(len)).ok_or(Failure::Unsupported)
    }

    fn get_mut(&mut self, offset: usize, len: usize) -> Result<&mut [u8], Failure> {
        self.0.get_mut(offset..offset.saturating_add(len)).ok_or(Failure::Unsupported)
    }

    /// The first `width` bytes as a little-endian value.
    fn value(&self, width: u8) -> u64 {
        let mut b = [0u8; 8];
        let n = usize::from(width).min(8);
        if let (Some(to), Some(from)) = (b.get_mut(..n), self.0.get(..n)) {
            to.copy_from_slice(from);
        }
        u64::from_le_bytes(b)
    }
}

/// An INS or OUTS as the exit and its prefixes describe it.
#[derive(Clone, Copy)]
pub(crate) struct StringIo {
    size: u8,
    port: u16,
    addr_size: u8,
    rep: bool,
    /// Instruction length.
    len: u8,
}

/// An instruction waiting for userspace, continued at the next `KVM_RUN`. Each step is one
/// exit, in KVM's order; the data is in [`Data`].
#[derive(Clone, Copy)]
pub(crate) enum Pending {
    /// A read of MMIO `frags` (the current one is in `kvm_run`; the RAM part is read), then
    /// `then` with the value.
    MmioRead { frags: Fragments, then: AfterRead },
    /// The MMIO `frags` of a write the instruction has done (the current one is in
    /// `kvm_run`).
    MmioWrite { frags: Fragments },
    /// INS of `count` elements: userspace's data is in the PIO page.
    Ins { io: StringIo, count: u32 },
}

impl Pending {
    /// Whether finishing it at the next `KVM_RUN` completes an instruction for single-stepping
    /// (KVM reports no step after the last part of an MMIO write: it was done at the exit).
    pub(crate) fn completes_step(&self) -> bool {
        !matches!(self, Pending::MmioWrite { .. })
    }

    /// The last MMIO part of a write, which went out with the exit: the instruction was done
    /// then, and finishing it reads nothing (the usual end of an MMIO write).
    pub(crate) fn is_last_write(&self) -> bool {
        matches!(self, Pending::MmioWrite { frags } if frags.is_last())
    }
}

/// What finishes an instruction once its MMIO read is in.
#[derive(Clone, Copy)]
pub(crate) enum AfterRead {
    /// A load into a register, or MOVS storing the element at ES:rDI.
    Insn(Insn),
    /// OUTS: the element goes out to the port.
    Outs(StringIo),
}

/// Asks userspace for the current MMIO fragment of a read (`None` if none is left: the read
/// is complete); `then` finishes the instruction once every fragment is in.
fn read_exit(run: &KvmRun, frags: Fragments, then: AfterRead) -> Option<Outcome> {
    let f = frags.current()?;
    run.mmio(f.gpa, first(&[0u8; 8], f.len.into()), false);
    Some(Outcome::Exit(Some(Pending::MmioRead { frags, then })))
}

/// How an emulated instruction, or one step of it, ends.
pub(crate) enum Outcome {
    /// Done (or an ioeventfd took its write): the guest runs on.
    Done,
    /// `kvm_run` describes an exit (or an emulation failure); `Some` continues at the next
    /// `KVM_RUN`.
    Exit(Option<Pending>),
    /// The instruction faults: the exception goes to the guest, no exit.
    Fault(GuestFault),
    /// rvmx cannot emulate it (the caller decides, as KVM's `handle_emulation_failure`,
    /// whether it exits with this report and whether the guest gets #UD).
    Failed(Unemulated),
}

/// An instruction rvmx could not emulate, as `KVM_EXIT_INTERNAL_ERROR` reports it: its bytes
/// and up to two data words.
pub(crate) struct Unemulated {
    insn: [u8; insn::MAX_LEN],
    len: usize,
    data: [u64; 2],
    ndata: usize,
}

impl Unemulated {
    fn new(insn: &[u8], data: &[u64]) -> Self {
        let mut u = Self { insn: [0; insn::MAX_LEN], len: insn.len().min(insn::MAX_LEN), data: [0; 2], ndata: data.len().min(2) };
        if let (Some(dst), Some(src)) = (u.insn.get_mut(..u.len), insn.get(..u.len)) {
            dst.copy_from_slice(src);
        }
        if let (Some(dst), Some(src)) = (u.data.get_mut(..u.ndata), data.get(..u.ndata)) {
            dst.copy_from_slice(src);
        }
        u
    }

    /// Writes the exit (`KVM_INTERNAL_ERROR_EMULATION`).
    pub(crate) fn report(&self, run: &KvmRun) {
        run.emulation_failure(first(&self.insn, self.len), self.data.get(..self.ndata).unwrap_or(&[]));
    }
}

/// `KVM_TRANSLATE`: the guest-physical address of `linear` for a supervisor read through the
/// guest's current page tables (KVM's `kvm_mmu_gva_to_gpa_system`), `None` if it has none.
pub(crate) fn translate(mem: Memory<'_>, sregs: &Sregs, linear: u64) -> Option<u64> {
    let mut g = Guest::new(mem, sregs);
    g.paging.cpl = 0;
    g.translate(linear, false).ok()
}

/// AMD's VMMCALL.
const VMMCALL: [u8; 3] = [0x0f, 0x01, 0xd9];
/// Intel's VMCALL.
const VMCALL: [u8; 3] = [0x0f, 0x01, 0xc1];

/// Whether the instruction at the guest's RIP is RSM.
// Out of line: its stack frame exists only while it runs, not under every KVM_RUN.
#[inline(never)]
pub(crate) fn is_rsm(mem: Memory<'_>, regs: &Regs, sregs: &Sregs) -> bool {
    let g = Guest::new(mem, sregs);
    let mut bytes = [0u8; insn::MAX_LEN];
    let n = g.fetch(regs.rip, &mut bytes);
    insn::is_rsm(bytes.get(..n).unwrap_or_default())
}

/// A #UD at CS:RIP: if the instruction there is VMMCALL in protected mode (KVM's emulator
/// has it there only: real and virtual-8086 mode keep the #UD) and `patch` (the quirk is on),
/// it is rewritten to VMCALL through the guest's page tables, as KVM's
/// `emulator_fix_hypercall` does, and the guest runs it again (`Ok(true)`); a VMCALL there
/// (another vCPU patched it first) also runs again. `Ok(false)`: the guest gets its #UD.
/// `Err`: the write faults.
// Out of line: its stack frame exists only while it runs, not under every KVM_RUN.
#[inline(never)]
pub(crate) fn fix_hypercall(mem: Memory<'_>, regs: &Regs, sregs: &Sregs, patch: bool) -> Result<bool, GuestFault> {
    use crate::logic::arch::{cr0, rflags};
    if sregs.cr0 & cr0::PE == 0 || regs.rflags & rflags::VM != 0 {
        return Ok(false);
    }
    let mut g = Guest::new(mem, sregs);
    let mut bytes = [0u8; insn::MAX_LEN];
    let n = g.fetch(regs.rip, &mut bytes);
    let found = bytes.get(..VMMCALL.len()).filter(|_| n >= VMMCALL.len());
    if found == Some(&VMCALL[..]) {
        return Ok(true);
    }
    if !patch || found != Some(&VMMCALL[..]) {
        return Ok(false);
    }
    let la = g.linear(Seg::Cs, regs.rip);
    match g.parts(la, 0, VMCALL.len(), true) {
        Ok(parts) if parts.iter().all(|p| !p.mmio) => {
            let mut data = Data::default();
            let Ok(d) = data.get_mut(0, VMCALL.len()) else { return Ok(false) };
            d.copy_from_slice(&VMCALL);
            Ok(g.write_parts(&parts, &data).is_ok())
        }
        Ok(_) | Err(Failure::Unsupported) => Ok(false),
        Err(Failure::Fault(f)) => Err(f),
    }
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
    /// A page fault on the read of an instruction that writes back reports a write access.
    fn as_write(self, write: bool) -> Self {
        match self {
            Failure::Fault(f) if write && f.vector == vector::PF => Failure::Fault(GuestFault { error_code: f.error_code | 2, ..f }),
            other => other,
        }
    }

    /// A failed walk of the guest's tables for linear address `la`: #PF if the tables deny
    /// the access, unsupported if they are not in RAM.
    fn walk(e: WalkError, la: u64) -> Self {
        match e {
            WalkError::PageFault(error_code) => Failure::Fault(GuestFault { vector: vector::PF, error_code, cr2: Some(la) }),
            WalkError::NotRam(_) => Failure::Unsupported,
        }
    }
}

/// One page's part of an access.
#[derive(Clone, Copy, Default)]
struct Part {
    gpa: u64,
    /// Where its bytes are in [`Data`].
    offset: usize,
    len: usize,
    /// No RAM behind it for this access (MMIO, or a write to a read-only slot).
    mmio: bool,
}

impl Part {
    /// Adds its bytes from `skip` on to the MMIO fragments userspace gets.
    fn push_to(&self, frags: &mut Fragments, skip: usize) -> Result<(), Failure> {
        let len = self.len.checked_sub(skip).ok_or(Failure::Unsupported)?;
        let offset = self.offset.checked_add(skip).ok_or(Failure::Unsupported)?;
        let f = Fragment {
            gpa: self.gpa.wrapping_add(skip as u64),
            offset: u16::try_from(offset).map_err(|_| Failure::Unsupported)?,
            len: u16::try_from(len).map_err(|_| Failure::Unsupported)?,
        };
        if frags.push(f) { Ok(()) } else { Err(Failure::Unsupported) }
    }
}

/// The parts of one access: it spans at most two pages.
#[derive(Default)]
struct Parts {
    list: [Part; fragments::MAX],
    count: usize,
}

impl Parts {
    fn iter(&self) -> impl Iterator<Item = &Part> {
        self.list.iter().take(self.count)
    }

    /// Whether one of its MMIO parts is on the page of `gpa` (the exit came from this access).
    fn mmio_on_page_of(&self, gpa: u64) -> bool {
        self.iter().any(|p| p.mmio && p.gpa >> 12 == gpa >> 12)
    }
}

/// A device of this vCPU on its MMIO path, answered in the kernel (its local APIC): it takes
/// the accesses to its addresses instead of userspace.
pub(crate) trait LocalMmio {
    /// A read at `gpa` (within one page) into `buf`; false if `gpa` is not the device's.
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> bool;
    /// A write of `bytes` at `gpa`; false if `gpa` is not the device's.
    fn write(&mut self, gpa: u64, bytes: &[u8]) -> bool;
}

/// The guest as emulation sees it: registers, paging, its VM's memory and the vCPU's own
/// MMIO device, if it has one.
struct Guest<'a> {
    mem: Memory<'a>,
    sregs: &'a Sregs,
    paging: Paging,
    mode: Mode,
    local: Option<&'a mut dyn LocalMmio>,
    /// The translation the exit's own access used, if known: its page needs no walk.
    exit_page: Option<KnownTranslation>,
    /// The guest-physical page of the exit's own access, whether it wrote, and the slot
    /// table's generation then: the EPT fault found no RAM there for that access, so while
    /// the slots are unchanged the access is MMIO without another lookup.
    exit_mmio: Option<(u64, bool, u64)>,
}

/// An EPT violation's access: guest-physical address, exit qualification, the linear
/// address translated to it if the qualification says so (`violation::translated_linear`),
/// and the slot table's generation when the fault found no RAM there.
#[derive(Clone, Copy)]
pub(crate) struct EptAccess {
    pub(crate) gpa: u64,
    pub(crate) qualification: u64,
    pub(crate) linear: u64,
    pub(crate) slots_gen: u64,
}

fn gprs(r: &Regs) -> Gprs {
    [r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15]
}

fn set_gprs(r: &mut Regs, g: &Gprs) {
    [r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15] = *g;
}

impl<'a> Guest<'a> {
    fn new(mem: Memory<'a>, sregs: &'a Sregs) -> Self {
        let long = sregs.efer & crate::logic::arch::efer::LMA != 0;
        let mode = if long && sregs.cs.l != 0 {
            Mode::Bits64
        } else if sregs.cs.db != 0 {
            Mode::Bits32
        } else {
            Mode::Bits16
        };
        let paging = Paging { cr0: sregs.cr0, cr3: sregs.cr3, cr4: sregs.cr4, efer: sregs.efer, cpl: sregs.ss.dpl };
        Guest { mem, sregs, paging, mode, local: None, exit_page: None, exit_mmio: None }
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
        if self.mode == Mode::Bits64 && !crate::logic::msr_rules::canonical(la) {
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
        self.translate_in(&mut self.mem.mapped_reads(), linear, write)
    }

    /// [`Self::translate`], its entries read in the series `reads` (one MMU lock for all).
    fn translate_in(&self, reads: &mut MappedReads<'_>, linear: u64, write: bool) -> Result<u64, WalkError> {
        self.paging.translate(linear, write, |gpa, bytes| {
            let mut b = [0u8; 8];
            self.mem.read_ram_in(reads, gpa, b.get_mut(..bytes)?).ok()?;
            Some(u64::from_le_bytes(b))
        })
    }

    /// Reads guest RAM at linear address `linear`, page by page. Fails if any byte is not RAM
    /// or the guest's tables deny the read.
    fn read_linear(&self, linear: u64, buf: &mut [u8]) -> Result<(), Failure> {
        let mut reads = self.mem.mapped_reads();
        for (la, range) in page_chunks(linear, buf.len()) {
            let gpa = self.translate_in(&mut reads, la, false).map_err(|e| Failure::walk(e, la))?;
            let part = buf.get_mut(range).ok_or(Failure::Unsupported)?;
            self.mem.read_ram_in(&mut reads, gpa, part).map_err(|_| Failure::Unsupported)?;
        }
        Ok(())
    }

    /// The parts of an access of `len` bytes at linear address `la` whose data is at `offset`
    /// in [`Data`]: every page is translated before anything is read or written, so a fault
    /// on the second page leaves the first untouched.
    fn parts(&self, la: u64, offset: usize, len: usize, write: bool) -> Result<Parts, Failure> {
        let mut parts = Parts::default();
        for (la, range) in page_chunks(la, len) {
            let la = if self.mode == Mode::Bits64 { la } else { la & 0xffff_ffff };
            let gpa = match self.exit_page.and_then(|p| p.translate(la, write)) {
                Some(gpa) => gpa,
                None => self.translate(la, write).map_err(|e| Failure::walk(e, la))?,
            };
            let part = Part { gpa, offset: offset.saturating_add(range.start), len: range.len(), mmio: self.is_mmio(gpa, write) };
            *parts.list.get_mut(parts.count).ok_or(Failure::Unsupported)? = part;
            parts.count = parts.count.saturating_add(1);
        }
        Ok(parts)
    }

    /// Reads the RAM parts into `data`, and the parts the vCPU's own device or an in-kernel
    /// device of the VM answers; the other MMIO parts are left for userspace.
    fn read_parts(&mut self, parts: &Parts, data: &mut Data) -> Result<Fragments, Failure> {
        let mut frags = Fragments::default();
        for p in parts.iter() {
            if p.mmio {
                if let Some(l) = self.local.as_deref_mut() {
                    if l.read(p.gpa, data.get_mut(p.offset, p.len)?) {
                        continue;
                    }
                }
                if self.mem.mmio_read(p.gpa, data.get_mut(p.offset, p.len)?) {
                    continue;
                }
                p.push_to(&mut frags, 0)?;
            } else {
                self.read_gpa(p.gpa, data.get_mut(p.offset, p.len)?)?;
            }
        }
        Ok(frags)
    }

    /// Writes the RAM parts from `data` (each page logged dirty) and offers the MMIO parts to
    /// the VM's in-kernel devices (IOAPIC, ioeventfds, coalesced zones), 8 bytes at a time as
    /// KVM's `vcpu_mmio_write`; what they do not take is left for userspace.
    fn write_parts(&mut self, parts: &Parts, data: &Data) -> Result<Fragments, Failure> {
        let mut frags = Fragments::default();
        for p in parts.iter() {
            let bytes = data.get(p.offset, p.len)?;
            if p.mmio && self.local.as_deref_mut().is_some_and(|l| l.write(p.gpa, bytes)) {
                continue;
            }
            if !p.mmio {
                let uaddr = self.mem.ram_uaddr(p.gpa, true).ok_or(Failure::Unsupported)? as usize;
                let mut user = UserSlice::new(UserPtr::from_addr(uaddr), bytes.len()).writer();
                user.write_slice(bytes).map_err(|_| Failure::Unsupported)?;
                self.mem.written(p.gpa);
                continue;
            }
            let mut taken: usize = 0;
            for chunk in bytes.chunks(usize::from(fragments::EXIT_BYTES)) {
                let mut v = [0u8; 8];
                v.get_mut(..chunk.len()).ok_or(Failure::Unsupported)?.copy_from_slice(chunk);
                let gpa = p.gpa.wrapping_add(taken as u64);
                if !self.mem.io_write(Bus::Mmio, gpa, chunk.len() as u32, u64::from_le_bytes(v)) {
                    break;
                }
                taken = taken.saturating_add(chunk.len());
            }
            p.push_to(&mut frags, taken)?;
        }
        Ok(frags)
    }

    /// Whether `gpa` (for this access) is MMIO rather than RAM.
    fn is_mmio(&self, gpa: u64, write: bool) -> bool {
        let known = self.exit_mmio.is_some_and(|(page, w, slots)| page == gpa & !0xfff && w == write && slots == self.mem.slots_gen());
        known || !self.mem.is_ram(gpa, write)
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

/// Finishes the instruction whose access (`exit`) found no RAM; `local`
/// answers its own addresses (the vCPU's local APIC).
pub(crate) fn mmio<'a>(
    mem: Memory<'a>,
    regs: &mut Regs,
    sregs: &'a Sregs,
    run: &KvmRun,
    exit: EptAccess,
    data: &mut Data,
    local: Option<&'a mut dyn LocalMmio>,
) -> Outcome {
    let EptAccess { gpa, qualification, linear, slots_gen } = exit;
    let mut g = Guest::new(mem, sregs);
    g.local = local;
    g.exit_page = KnownTranslation::from_ept_violation(gpa, qualification, linear);
    g.exit_mmio = Some((gpa & !0xfff, qualification & crate::logic::ept_bits::violation::WRITE != 0, slots_gen));
    let mut bytes = [0u8; insn::MAX_LEN];
    let n = if qualification & crate::logic::ept_bits::violation::FETCH != 0 { 0 } else { g.fetch(regs.rip, &mut bytes) };
    let decoded = insn::decode(first(&bytes, n), g.mode).ok();
    match decoded.map(|i| mmio_access(&mut g, regs, &i, run, gpa, data)) {
        Some(Ok(outcome)) => outcome,
        Some(Err(Failure::Fault(f))) => Outcome::Fault(f),
        _ => {
            let len = decoded.map_or(n, |i| i.len as usize);
            Outcome::Failed(Unemulated::new(first(&bytes, len), &[gpa, qualification]))
        }
    }
}

/// An MMIO instruction: its read (a load, the source of MOVS) or its write. Each access may
/// be split between RAM and MMIO, or between two MMIO pages: the kernel does the RAM part,
/// userspace gets each MMIO part in its own exit, as KVM splits them.
fn mmio_access(g: &mut Guest<'_>, regs: &mut Regs, i: &Insn, run: &KvmRun, gpa: u64, data: &mut Data) -> Result<Outcome, Failure> {
    let r = gprs(regs);
    if i.rep_done(&r) {
        return Err(Failure::Unsupported); // no access to make: this exit cannot have come from it
    }
    if i.reads_memory() {
        let src = g.data_linear(i.mem.seg, i.offset(&r, regs.rip))?;
        // As KVM's emulator: the read first (a fault then is a write fault for an instruction
        // that writes back), the write's own permission at writeback.
        let parts = g.parts(src, 0, i.width.into(), false).map_err(|e| e.as_write(i.writes_back()))?;
        let frags = g.read_parts(&parts, data)?;
        // The exit must have come from this read (not another vCPU's change of the code).
        if frags.current().is_some() && !parts.mmio_on_page_of(gpa) {
            return Err(Failure::Unsupported);
        }
        if let Some(exit) = read_exit(run, frags, AfterRead::Insn(*i)) {
            return Ok(exit);
        }
        // Read at once: from the vCPU's own device (the exit came from that read), or from RAM
        // (the exit came from the write).
        let exit_gpa = (!parts.mmio_on_page_of(gpa)).then_some(gpa);
        return after_read(g, regs, i, run, exit_gpa, data);
    } else {
        let value = i.store_value(&r).unwrap_or(0).to_le_bytes();
        data.get_mut(0, i.width.into())?.copy_from_slice(first(&value, i.width.into()));
    }
    store(g, regs, i, run, Some(gpa), data)
}

/// The write of an MMIO instruction, its value in `data`. The instruction is done before any
/// exit (RIP, or rSI/rDI/rCX of a REP instruction, move on): userspace only takes the data.
/// `exit_gpa`: the access that exited, which must be this one.
fn store(g: &mut Guest<'_>, regs: &mut Regs, i: &Insn, run: &KvmRun, exit_gpa: Option<u64>, data: &Data) -> Result<Outcome, Failure> {
    let mut r = gprs(regs);
    let dst = match i.op {
        Op::Stos | Op::Movs => g.data_linear(Seg::Es, i.dest_offset(&r))?,
        _ => g.data_linear(i.mem.seg, i.offset(&r, regs.rip))?,
    };
    let parts = g.parts(dst, 0, i.width.into(), true)?;
    if exit_gpa.is_some_and(|gpa| !parts.mmio_on_page_of(gpa)) {
        return Err(Failure::Unsupported);
    }
    let frags = g.write_parts(&parts, data)?;
    regs.rip = i.complete(&mut r, regs.rip, regs.rflags, 0);
    set_gprs(regs, &r);
    Ok(write_exit(run, frags, data))
}

/// Finishes an instruction whose memory operand is read (in `data`): MOVS stores it, a
/// computing instruction computes and writes back, a load completes. `exit_gpa`: the access
/// that exited, if it must be the write (a load then cannot have exited).
fn after_read(g: &mut Guest<'_>, regs: &mut Regs, i: &Insn, run: &KvmRun, exit_gpa: Option<u64>, data: &mut Data) -> Result<Outcome, Failure> {
    if i.op == Op::Movs {
        return store(g, regs, i, run, exit_gpa, data);
    }
    if i.computes() {
        return compute(g, regs, i, run, exit_gpa, data);
    }
    if exit_gpa.is_some() {
        return Err(Failure::Unsupported); // a load from RAM cannot have exited
    }
    let mut r = gprs(regs);
    regs.rip = i.complete(&mut r, regs.rip, regs.rflags, data.value(i.width));
    set_gprs(regs, &r);
    Ok(Outcome::Done)
}

/// A computing instruction (ADD, XCHG, BTS... on memory) whose operand is read (in `data`):
/// registers and flags are updated, RIP moves past it, and the result, if it writes one, goes
/// to the same place (each MMIO part in its own exit, as KVM's emulator writes it back).
/// `exit_gpa`: the access that exited, if it must be the write.
fn compute(g: &mut Guest<'_>, regs: &mut Regs, i: &Insn, run: &KvmRun, exit_gpa: Option<u64>, data: &mut Data) -> Result<Outcome, Failure> {
    let mut r = gprs(regs);
    // The address, before the instruction changes its registers.
    let dst = g.data_linear(i.mem.seg, i.offset(&r, regs.rip))?;
    let mut flags = regs.rflags;
    let write = i.compute(&mut r, &mut flags, data.value(i.width));
    let frags = match write {
        Some(v) => {
            let parts = g.parts(dst, 0, i.width.into(), true)?;
            if exit_gpa.is_some_and(|gpa| !parts.mmio_on_page_of(gpa)) {
                return Err(Failure::Unsupported);
            }
            data.get_mut(0, i.width.into())?.copy_from_slice(first(&v.to_le_bytes(), i.width.into()));
            g.write_parts(&parts, data)?
        }
        None if exit_gpa.is_some() => return Err(Failure::Unsupported), // nothing to write: cannot have exited
        None => Fragments::default(),
    };
    regs.rflags = flags;
    regs.rip = i.complete(&mut r, regs.rip, flags, 0);
    set_gprs(regs, &r);
    Ok(write_exit(run, frags, data))
}

/// Gives userspace the first MMIO fragment of a write (if an ioeventfd did not take them
/// all); the rest follow, one exit each.
fn write_exit(run: &KvmRun, frags: Fragments, data: &Data) -> Outcome {
    match frags.current() {
        None => Outcome::Done,
        Some(f) => {
            run.mmio(f.gpa, data.get(f.offset.into(), f.len.into()).unwrap_or(&[]), true);
            Outcome::Exit(Some(Pending::MmioWrite { frags }))
        }
    }
}

/// INS/OUTS (`io` decoded from the exit qualification) of `len` bytes. OUTS sends one
/// element per exit (after reading it from MMIO, if it is there); INS asks for as many as fit
/// KVM's read-ahead (1 KiB, the rest of the destination page, rCX), as KVM does.
#[allow(clippy::too_many_arguments)] // the exit's facts, the vCPU's state and its device
// Out of line: its stack frame exists only while it runs, not under every KVM_RUN.
#[inline(never)]
pub(crate) fn string_io<'a>(
    mem: Memory<'a>,
    regs: &mut Regs,
    sregs: &'a Sregs,
    run: &KvmRun,
    io: Io,
    len: u8,
    data: &mut Data,
    local: Option<&'a mut dyn LocalMmio>,
) -> Outcome {
    let mut g = Guest::new(mem, sregs);
    g.local = local;
    match string_io_access(&mut g, regs, io, len, run, data) {
        Ok(o) => o,
        Err(Failure::Fault(f)) => Outcome::Fault(f),
        Err(Failure::Unsupported) => {
            let mut bytes = [0u8; insn::MAX_LEN];
            let n = g.fetch(regs.rip, &mut bytes).min(len as usize);
            Outcome::Failed(Unemulated::new(first(&bytes, n), &[]))
        }
    }
}

fn string_io_access(g: &mut Guest<'_>, regs: &mut Regs, io: Io, len: u8, run: &KvmRun, data: &mut Data) -> Result<Outcome, Failure> {
    // The address size comes from the instruction's prefixes, which the exit does not give:
    // decode them (the opcode itself, 6C-6F, is not one the MMIO decoder knows).
    let mut bytes = [0u8; insn::MAX_LEN];
    let n = g.fetch(regs.rip, &mut bytes).min(len as usize);
    let addr_size = string_io_addr_size(first(&bytes, n), g.mode).ok_or(Failure::Unsupported)?;
    let mask = insn::mask(addr_size);
    let size = u64::from(io.size);
    let r = gprs(regs);
    let count = if io.rep { insn::gpr_get(&r, insn::gpr::RCX) & mask } else { 1 };
    if count == 0 {
        return Err(Failure::Unsupported);
    }
    let s = StringIo { size: io.size, port: io.port, addr_size, rep: io.rep, len };
    let down = regs.rflags & crate::logic::arch::rflags::DF != 0;
    if io.input {
        let rdi = insn::gpr_get(&r, insn::gpr::RDI) & mask;
        let in_page = if down { rdi & 0xfff } else { to_page_end(rdi) };
        let batch = INS_BATCH_BYTES.checked_div(size).unwrap_or(1); // size is 1, 2 or 4
        let n = in_page.min(batch).min(count).max(1) as u32;
        run.io(true, io.size, io.port, n);
        Ok(Outcome::Exit(Some(Pending::Ins { io: s, count: n })))
    } else {
        // OUTS reads DS:rSI (or the override): find the segment among the prefixes.
        let seg = string_io_segment(first(&bytes, n));
        let src = g.data_linear(seg, insn::gpr_get(&r, insn::gpr::RSI) & mask)?;
        let parts = g.parts(src, 0, io.size.into(), false)?;
        let frags = g.read_parts(&parts, data)?;
        Ok(read_exit(run, frags, AfterRead::Outs(s)).unwrap_or_else(|| outs(&g.mem, regs, run, s, data)))
    }
}

/// OUTS of the element in `data`, to an in-kernel device or userspace, which only takes the
/// data: the instruction moves on first.
fn outs(mem: &Memory<'_>, regs: &mut Regs, run: &KvmRun, s: StringIo, data: &Data) -> Outcome {
    let value = data.value(s.size);
    let signalled = mem.io_write(Bus::Pio, s.port.into(), s.size.into(), value);
    if !signalled {
        run.write_pio_data(first(&value.to_le_bytes(), s.size.into()));
        run.io(false, s.size, s.port, 1);
    }
    finish_string(regs, insn::gpr::RSI, s.size, 1, s.addr_size, s.rep, s.len);
    if signalled { Outcome::Done } else { Outcome::Exit(None) }
}

/// Stores the INS batch userspace read (`count` elements in `data`) at ES:rDI, as KVM's
/// emulator does: a REP INS counting up stores it as one access, any other INS one element at
/// a time. The registers move past each access as it is done. An access with MMIO parts
/// exits with them and ends the batch there, as on KVM: the guest executes the instruction
/// again for the rest (with `rep`, rCX is not 0 yet), and the elements read after it are
/// dropped.
fn ins_store(g: &mut Guest<'_>, regs: &mut Regs, run: &KvmRun, s: StringIo, count: u32, data: &Data) -> Result<Outcome, Failure> {
    let down = regs.rflags & crate::logic::arch::rflags::DF != 0;
    let size = usize::from(s.size);
    let mut k = 0u32;
    while k < count {
        let n = if s.rep && !down { count.saturating_sub(k) } else { 1 };
        let la = g.data_linear(Seg::Es, regs.rdi & insn::mask(s.addr_size))?;
        let offset = (k as usize).saturating_mul(size);
        let parts = g.parts(la, offset, (n as usize).saturating_mul(size), true)?;
        let frags = g.write_parts(&parts, data)?;
        finish_string(regs, insn::gpr::RDI, s.size, n.into(), s.addr_size, s.rep, s.len);
        k = k.saturating_add(n);
        if frags.current().is_some() {
            return Ok(write_exit(run, frags, data));
        }
    }
    Ok(Outcome::Done)
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
// Out of line: its stack frame exists only while it runs, not under every KVM_RUN.
#[inline(never)]
pub(crate) fn pdptes(mem: Memory<'_>, sregs: &Sregs) -> Option<[u64; 4]> {
    let g = Guest::new(mem, sregs);
    g.paging
        .pdptes(|gpa, bytes| {
            let mut b = [0u8; 8];
            g.read_gpa(gpa, b.get_mut(..bytes)?).ok()?;
            Some(u64::from_le_bytes(b))
        })
        .ok()
        .flatten()
}

/// Continues a pending instruction at the start of `KVM_RUN`, userspace having answered its
/// last exit.
pub(crate) fn complete<'a>(
    mem: Memory<'a>,
    regs: &mut Regs,
    sregs: &'a Sregs,
    run: &KvmRun,
    p: Pending,
    data: &mut Data,
    local: Option<&'a mut dyn LocalMmio>,
) -> Outcome {
    let mut g = Guest::new(mem, sregs);
    g.local = local;
    match continue_pending(&mut g, regs, run, p, data) {
        Ok(o) => o,
        Err(Failure::Fault(f)) => Outcome::Fault(f),
        Err(Failure::Unsupported) => {
            // The memory changed under the instruction (a slot went away): nothing to guess,
            // and not the guest's doing (no #UD): to userspace.
            run.emulation_failure(&[], &[regs.rip]);
            Outcome::Exit(None)
        }
    }
}

fn continue_pending(g: &mut Guest<'_>, regs: &mut Regs, run: &KvmRun, p: Pending, data: &mut Data) -> Result<Outcome, Failure> {
    match p {
        Pending::MmioRead { mut frags, then } => {
            let f = frags.current().ok_or(Failure::Unsupported)?;
            let answer = run.mmio_data(f.len.min(fragments::EXIT_BYTES) as u8).to_le_bytes();
            data.get_mut(f.offset.into(), f.len.into())?.copy_from_slice(first(&answer, f.len.into()));
            frags.advance();
            if let Some(exit) = read_exit(run, frags, then) {
                return Ok(exit);
            }
            match then {
                AfterRead::Insn(insn) => after_read(g, regs, &insn, run, None, data),
                AfterRead::Outs(io) => Ok(outs(&g.mem, regs, run, io, data)),
            }
        }
        Pending::MmioWrite { mut frags } => {
            if frags.advance().is_some() {
                return Ok(write_exit(run, frags, data));
            }
            Ok(Outcome::Done)
        }
        Pending::Ins { io, count } => {
            let bytes = (count as usize).saturating_mul(io.size.into());
            run.read_pio_data(data.get_mut(0, bytes)?);
            // Userspace may have changed rCX meanwhile (KVM_SET_REGS). KVM's emulator reads it
            // again: no more than rCX elements are stored, and with rCX 0 the INS is done.
            let count = match io.rep {
                true => (insn::gpr_get(&gprs(regs), insn::gpr::RCX) & insn::mask(io.addr_size)).min(count.into()) as u32,
                false => count,
            };
            if count == 0 {
                // Done, rDI untouched (KVM's emulator moves on without the register quirk).
                regs.rip = regs.rip.wrapping_add(io.len.into());
                return Ok(Outcome::Done);
            }
            ins_store(g, regs, run, io, count, data)
        }
    }
}
