// SPDX-License-Identifier: GPL-2.0

//! The guest's own paging (SDM vol. 3, chapter 4), walked in software: to fetch the
//! instruction behind an MMIO exit, to reach the RAM side of a MOVS, and to load the PAE
//! PDPTEs. Pure logic, host-tested; guest memory is read through a callback.

/// The control registers that select and shape the guest's paging.
#[derive(Clone, Copy, Debug, Default)]
pub struct Paging {
    /// CR0 as the guest sees it.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// Current privilege level (user accesses are checked against U/S).
    pub cpl: u8,
}

use super::arch::{cr0, cr4, efer};

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
/// Physical-address bits 51:12 of a PAE/4-level entry.
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Why a translation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The guest's tables deny the access: the processor would raise #PF with this error code.
    PageFault(u32),
    /// A paging structure at this guest-physical address is not in guest RAM.
    NotRam(u64),
}

impl Paging {
    /// Whether paging is on.
    pub const fn enabled(&self) -> bool {
        self.cr0 & cr0::PG != 0
    }

    /// PAE paging outside long mode (the mode that uses the four PDPTE registers).
    pub const fn pae_legacy(&self) -> bool {
        self.enabled() && self.cr4 & cr4::PAE != 0 && self.efer & efer::LMA == 0
    }

    /// Translates `linear` for a data access (`write` or read) or an instruction fetch.
    /// `read(gpa, bytes)` reads a 4- or 8-byte paging-structure entry from guest RAM.
    pub fn translate(
        &self,
        linear: u64,
        write: bool,
        mut read: impl FnMut(u64, usize) -> Option<u64>,
    ) -> Result<u64, WalkError> {
        if !self.enabled() {
            // Without long mode, linear addresses are 32 bits wide.
            return Ok(if self.efer & efer::LMA != 0 { linear } else { linear & 0xffff_ffff });
        }
        let user = self.cpl == 3;
        let fault = |present: bool| {
            WalkError::PageFault(present as u32 | (write as u32) << 1 | (user as u32) << 2)
        };
        let mut entry_read = |gpa: u64, bytes: usize| read(gpa, bytes).ok_or(WalkError::NotRam(gpa));
        let mut writable = true;
        let mut user_ok = true;
        let mut note = |e: u64| {
            writable &= e & RW != 0;
            user_ok &= e & US != 0;
        };
        let (phys, page_mask) = if self.cr4 & cr4::PAE == 0 {
            // 32-bit paging: 2 levels of 1024 4-byte entries; 4 MiB pages with CR4.PSE.
            let linear = linear & 0xffff_ffff;
            // Tables are page-aligned: the entry's offset is ORed in.
            let pde = entry_read((self.cr3 & 0xffff_f000) | ((linear >> 22) & 0x3ff) << 2, 4)?;
            if pde & P == 0 {
                return Err(fault(false));
            }
            note(pde);
            if pde & PS != 0 && self.cr4 & cr4::PSE != 0 {
                // PSE-36: bits 20:13 are physical-address bits 39:32.
                ((pde & 0xffc0_0000) | ((pde >> 13) & 0xff) << 32, 0x3f_ffffu64)
            } else {
                let pte = entry_read((pde & 0xffff_f000) | ((linear >> 12) & 0x3ff) << 2, 4)?;
                if pte & P == 0 {
                    return Err(fault(false));
                }
                note(pte);
                (pte & 0xffff_f000, 0xfff)
            }
        } else {
            // PAE (3 levels from the PDPT) or 4-level paging; 8-byte entries, 9-bit indexes.
            let (mut table, top) = if self.efer & efer::LMA != 0 {
                (self.cr3 & ADDR, 4)
            } else {
                let linear = linear & 0xffff_ffff;
                let pdpte = entry_read((self.cr3 & 0xffff_ffe0) | ((linear >> 30) & 3) << 3, 8)?;
                if pdpte & P == 0 {
                    return Err(fault(false));
                }
                (pdpte & ADDR, 2)
            };
            let mut level: u32 = top;
            loop {
                // The linear-address bits this level translates start at bit 12 + 9 * (level - 1).
                let shift = match level { 1 => 12, 2 => 21, 3 => 30, _ => 39 };
                let index = (linear >> shift) & 0x1ff;
                let e = entry_read(table | index << 3, 8)?;
                if e & P == 0 {
                    return Err(fault(false));
                }
                note(e);
                let size_mask = !(u64::MAX << shift);
                // Large pages: 1 GiB at level 3 (only in long mode), 2 MiB at level 2.
                if level == 1 || (e & PS != 0 && (level == 2 || (level == 3 && top == 4))) {
                    break (e & ADDR & !size_mask, size_mask);
                }
                table = e & ADDR;
                level = level.saturating_sub(1); // level > 1 here
            }
        };
        if user && !user_ok {
            return Err(fault(true));
        }
        if write && !writable && (user || self.cr0 & cr0::WP != 0) {
            return Err(fault(true));
        }
        Ok(phys | (linear & page_mask))
    }

    /// The four PDPTEs that PAE paging outside long mode loads when it is turned on (or CR3
    /// written), or `None` if one is present with reserved bits set (the processor's #GP).
    pub fn pdptes(&self, mut read: impl FnMut(u64, usize) -> Option<u64>) -> Result<Option<[u64; 4]>, WalkError> {
        let mut out = [0u64; 4];
        for (i, e) in out.iter_mut().enumerate() {
            let gpa = (self.cr3 & 0xffff_ffe0) | (i as u64) << 3;
            *e = read(gpa, 8).ok_or(WalkError::NotRam(gpa))?;
            // Reserved: bits 2:1, 8:5 and the bits above the physical-address width (52).
            if *e & P != 0 && *e & (0x1e6 | 0xfff0_0000_0000_0000) != 0 {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }
}

/// Bytes from linear address `la` to the end of its 4 KiB page (1 to 4096).
#[allow(clippy::arithmetic_side_effects)] // No panic: la & 0xfff is below 0x1000.
pub const fn to_page_end(la: u64) -> u64 {
    0x1000 - (la & 0xfff)
}

/// The pieces of `len` bytes at linear address `linear` that do not cross a page: each one's
/// address and its range in the buffer.
pub fn page_chunks(linear: u64, len: usize) -> impl Iterator<Item = (u64, core::ops::Range<usize>)> {
    let mut done = 0;
    core::iter::from_fn(move || {
        (done < len).then(|| {
            let la = linear.wrapping_add(done as u64);
            let start = done;
            done = done.saturating_add((to_page_end(la) as usize).min(len.saturating_sub(done)));
            (la, start..done)
        })
    })
}

/// A linear page the processor translated for an access that then exited (an EPT violation
/// whose qualification gives the linear address), with the guest's paging checks passed for
/// that access: an emulator may use it for that page instead of walking the guest's tables,
/// as KVM's emulator uses the exit's GPA (`emulator_read_write_onepage`). A write's checks
/// cover reads too; a read's do not cover writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownTranslation {
    linear: u64,
    gpa: u64,
    write: bool,
}

impl KnownTranslation {
    /// From an EPT violation at `gpa` with `qualification` and the guest linear address field
    /// `linear`; `None` unless the qualification says that field is the translated address
    /// and both are at the same offset in their page (as KVM checks: a field that does not
    /// describe the same access is never trusted).
    pub const fn from_ept_violation(gpa: u64, qualification: u64, linear: u64) -> Option<Self> {
        use super::ept_bits::violation;
        if !violation::translated_linear(qualification) || linear & 0xfff != gpa & 0xfff {
            return None;
        }
        let write = qualification & violation::WRITE != 0;
        Some(KnownTranslation { linear: linear & !0xfff, gpa: gpa & !0xfff, write })
    }

    /// The guest-physical address of `la` for an access (`write`) its checks covered.
    pub const fn translate(&self, la: u64, write: bool) -> Option<u64> {
        if la & !0xfff == self.linear && (self.write || !write) { Some(self.gpa | (la & 0xfff)) } else { None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn known_translations_cover_their_page_and_access() {
        use crate::ept_bits::violation::{LINEAR_TRANSLATED, LINEAR_VALID, READ, WRITE};
        let both = LINEAR_VALID | LINEAR_TRANSLATED;
        // Without both qualification bits the linear address is not the access's.
        assert_eq!(KnownTranslation::from_ept_violation(0xd0123, READ | LINEAR_VALID, 0x7f00_0123), None);
        assert_eq!(KnownTranslation::from_ept_violation(0xd0123, READ | LINEAR_TRANSLATED, 0x7f00_0123), None);
        // Offsets that differ: not the same access.
        assert_eq!(KnownTranslation::from_ept_violation(0xd1000, READ | both, 0x7f00_0ffe), None);
        let read = KnownTranslation::from_ept_violation(0xd0123, READ | both, 0x7f00_0123).unwrap();
        assert_eq!(read.translate(0x7f00_0ffc, false), Some(0xd0ffc));
        assert_eq!(read.translate(0x7f00_0ffc, true), None, "a read's checks do not allow a write");
        assert_eq!(read.translate(0x7f00_1000, false), None, "another page");
        let write = KnownTranslation::from_ept_violation(0xd0123, WRITE | both, 0x7f00_0123).unwrap();
        assert_eq!(write.translate(0x7f00_0000, true), Some(0xd0000));
        assert_eq!(write.translate(0x7f00_0008, false), Some(0xd0008));
    }

    #[test]
    fn accesses_split_at_page_boundaries() {
        let v: Vec<_> = page_chunks(0x1ffe, 5).collect();
        assert_eq!(v, [(0x1ffe, 0..2), (0x2000, 2..5)]);
        let v: Vec<_> = page_chunks(0x3000, 8192).collect();
        assert_eq!(v, [(0x3000, 0..4096), (0x4000, 4096..8192)]);
        assert_eq!(page_chunks(0x10, 0).count(), 0);
        let v: Vec<_> = page_chunks(u64::MAX - 1, 4).collect();
        assert_eq!(v, [(u64::MAX - 1, 0..2), (0, 2..4)], "wraps like the address space");
    }

    /// A sparse guest memory of paging entries.
    struct Mem(HashMap<u64, u64>);
    impl Mem {
        fn read(&self, gpa: u64, bytes: usize) -> Option<u64> {
            let v = *self.0.get(&gpa).unwrap_or(&0);
            Some(if bytes == 4 { v & 0xffff_ffff } else { v })
        }
    }

    #[test]
    fn no_paging() {
        let p = Paging::default();
        assert_eq!(p.translate(0x1_0000_1234, false, |_, _| None), Ok(0x1234));
    }

    #[test]
    fn four_level_4k_2m_1g() {
        let mut m = HashMap::new();
        // PML4 at 0x1000; PDPT at 0x2000; PD at 0x3000; PT at 0x4000.
        m.insert(0x1000, 0x2000 | P | RW);
        m.insert(0x2000, 0x3000 | P | RW);
        m.insert(0x2008, 0x4000_0000 | P | PS); // 1 GiB page for 0x4000_0000.., read-only
        m.insert(0x3000, 0x4000 | P | RW);
        m.insert(0x3008, 0x0060_0000 | P | RW | PS); // 2 MiB page at 0x20_0000
        m.insert(0x4000 + 5 * 8, 0xabc_d000 | P | RW);
        let m = Mem(m);
        let p = Paging { cr0: cr0::PG | 1, cr3: 0x1000, cr4: cr4::PAE, efer: efer::LMA | 1 << 8, cpl: 0 };
        let rd = |g, b| m.read(g, b);
        assert_eq!(p.translate(0x5123, false, rd), Ok(0xabc_d123));
        assert_eq!(p.translate(0x2f_0001, true, rd), Ok(0x6f_0001));
        assert_eq!(p.translate(0x7fff_fff0, false, rd), Ok(0x7fff_fff0));
        assert_eq!(p.translate(0x6123, false, rd), Err(WalkError::PageFault(0)));
        // Writing the read-only 1 GiB page: #PF only with CR0.WP (or from user mode).
        assert_eq!(p.translate(0x4000_0000, true, rd), Ok(0x4000_0000));
        let wp = Paging { cr0: p.cr0 | cr0::WP, ..p };
        assert_eq!(wp.translate(0x4000_0000, true, rd), Err(WalkError::PageFault(3)));
        // User mode needs U/S at every level.
        let user = Paging { cpl: 3, ..p };
        assert_eq!(user.translate(0x5123, false, rd), Err(WalkError::PageFault(5)));
        // A table outside guest RAM.
        assert_eq!(p.translate(0x5123, false, |g, b| if g == 0x4028 { None } else { m.read(g, b) }),
                   Err(WalkError::NotRam(0x4028)));
    }

    #[test]
    fn legacy_32bit_and_pae() {
        let mut m = HashMap::new();
        // 32-bit: PD at 0x1000; PDE 1 → PT at 0x2000; PDE 2 a 4 MiB page at 0x0140_0000 with
        // PSE-36 bits giving physical bit 32.
        m.insert(0x1004, 0x2000 | P | RW);
        m.insert(0x1008, 0x0140_0000 | P | RW | PS | 1 << 13);
        m.insert(0x2000 + 3 * 4, 0x0009_9000 | P);
        let m = Mem(m);
        let p = Paging { cr0: cr0::PG | 1, cr3: 0x1000, cr4: cr4::PSE, efer: 0, cpl: 0 };
        let rd = |g, b| m.read(g, b);
        assert_eq!(p.translate(0x0040_3abc, false, rd), Ok(0x9_9abc));
        assert_eq!(p.translate(0x0080_0010, false, rd), Ok(0x1_0140_0010));
        // Without CR4.PSE the PS bit is ignored: PDE 2 points at a page table.
        let nopse = Paging { cr4: 0, ..p };
        assert_eq!(nopse.translate(0x0080_0010, false, rd), Err(WalkError::PageFault(0)));

        let mut m = HashMap::new();
        // PAE: PDPT at 0x1020 (32-byte aligned), PDPTE 0 → PD 0x3000 → 2 MiB page at 0x80_0000.
        m.insert(0x1020, 0x3000 | P);
        m.insert(0x3000 + 8, 0x80_0000 | P | RW | PS);
        m.insert(0x1028, 0x4000 | P | 1 << 5); // reserved bit 5
        let m = Mem(m);
        let p = Paging { cr0: cr0::PG | 1, cr3: 0x1020, cr4: cr4::PAE, efer: 0, cpl: 0 };
        assert!(p.pae_legacy());
        assert_eq!(p.translate(0x0020_1234, false, |g, b| m.read(g, b)), Ok(0x80_1234));
        assert_eq!(p.pdptes(|g, b| m.read(g, b)), Ok(None));
        let p2 = Paging { cr3: 0x1000, ..p };
        assert_eq!(p2.pdptes(|g, b| m.read(g, b)), Ok(Some([0, 0, 0, 0])));
    }
}
