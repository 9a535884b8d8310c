// SPDX-License-Identifier: GPL-2.0

//! A VM's EPT: the only guest-physical → host-physical translation its guest has. Entries are
//! added on demand, one 4 KiB page at a time, for memory userspace gave the VM in a slot;
//! nothing else is ever mapped, so the guest cannot reach any other host page.

use core::arch::asm;
use kernel::{page::Page, prelude::*};

use crate::{
    ept_bits::{self, ADDR_MASK},
    mem::{page_phys, phys_to_virt},
    vmx::VmxOperation,
    vmx_caps::{ept_vpid, VmxCaps},
};

/// Flushes this CPU's cached translations for `eptp` (single-context INVEPT, or all-context
/// where only that exists). Every window does this before entering the guest, so mappings
/// removed while the vCPU was elsewhere are never used.
pub(crate) fn invept(_op: &VmxOperation<'_>, caps: &VmxCaps, eptp: u64) {
    let kind: u64 = if caps.ept_vpid & ept_vpid::INVEPT_SINGLE != 0 { 1 } else { 2 };
    let descriptor = [eptp, 0u64];
    // SAFETY: in VMX operation (`_op`); the descriptor is 16 readable bytes on this stack.
    unsafe { asm!("invept {k}, [{d}]", k = in(reg) kind, d = in(reg) &descriptor, options(nostack)) };
}

/// The 4-level EPT of one VM. Modified only under the VM's lock, outside VMX windows.
pub(crate) struct Ept {
    root_phys: u64,
    /// Every table page, the root first; freed with the EPT.
    tables: KVec<Page>,
}

impl Ept {
    pub(crate) fn new() -> Result<Self> {
        let root = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        let root_phys = page_phys(&root);
        let mut tables = KVec::new();
        tables.push(root, GFP_KERNEL)?;
        Ok(Self { root_phys, tables })
    }

    /// The EPT pointer to put in a VMCS.
    pub(crate) fn eptp(&self) -> u64 {
        ept_bits::eptp(self.root_phys)
    }

    /// The level-1 entry for `gpa`, creating the tables on the way (may sleep).
    fn leaf_slot(&mut self, gpa: u64) -> Result<*mut u64> {
        let mut table = self.root_phys;
        for level in (2..=4).rev() {
            // SAFETY: `table` is one of our table pages (the root or an entry we wrote) and
            // the index is below 512, so the pointer stays inside that page.
            let entry = unsafe { phys_to_virt(table).add(ept_bits::index(gpa, level)) };
            // SAFETY: as above; the VM lock makes us the only writer.
            let value = unsafe { entry.read_volatile() };
            table = if ept_bits::present(value) {
                value & ADDR_MASK
            } else {
                let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
                let phys = page_phys(&page);
                self.tables.push(page, GFP_KERNEL)?;
                // SAFETY: as above. The new table is zeroed before it becomes visible.
                unsafe { entry.write_volatile(ept_bits::table_entry(phys)) };
                phys
            };
        }
        // SAFETY: `table` is now a level-1 table of ours.
        Ok(unsafe { phys_to_virt(table).add(ept_bits::index(gpa, 1)) })
    }

    /// Maps the guest page at `gpa` to the host page at `hpa`.
    pub(crate) fn map(&mut self, gpa: u64, hpa: u64, writable: bool) -> Result {
        let slot = self.leaf_slot(gpa)?;
        // SAFETY: `slot` points into one of our level-1 tables.
        unsafe { slot.write_volatile(ept_bits::leaf_entry(hpa, writable)) };
        Ok(())
    }

    /// The level-1 entry for `gpa` if the walk reaches one that is present.
    fn leaf(&self, gpa: u64) -> Option<*mut u64> {
        let mut table = self.root_phys;
        for level in (1..=4).rev() {
            // SAFETY: as in `leaf_slot`.
            let entry = unsafe { phys_to_virt(table).add(ept_bits::index(gpa, level)) };
            // SAFETY: as above.
            let value = unsafe { entry.read_volatile() };
            if !ept_bits::present(value) {
                return None;
            }
            if level == 1 {
                return Some(entry);
            }
            table = value & ADDR_MASK;
        }
        None
    }

    /// Copies the guest bytes at `gpa` (inside one page) into `buf` from the host page mapped
    /// there, if one is: emulation reads what the guest sees without a user-memory access.
    pub(crate) fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let offset = (gpa & 0xfff) as usize;
        if buf.len() > crate::guest_paging::to_page_end(gpa) as usize {
            return false;
        }
        let Some(entry) = self.leaf(gpa) else { return false };
        // SAFETY: `leaf` returns a pointer into one of our level-1 tables.
        let hpa = unsafe { entry.read_volatile() } & ADDR_MASK;
        let page = phys_to_virt(hpa).cast::<u8>();
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: a mapped page is pinned until it is unmapped, which needs the VM's lock
            // that the caller holds; the direct map covers it and `offset + i` < 4096. The
            // guest may write it meanwhile: byte-wise volatile reads, as its own view.
            *b = unsafe { page.add(offset).add(i).read_volatile() };
        }
        true
    }

    /// Whether the guest page at `gpa` is mapped.
    pub(crate) fn is_mapped(&self, gpa: u64) -> bool {
        self.leaf(gpa).is_some()
    }

    /// Lets guest writes to the mapped page at `gpa` through, or makes them fault (dirty
    /// logging). Removing write access needs a flush before it holds: the caller kicks the
    /// vCPUs (every window starts with INVEPT).
    pub(crate) fn set_writable(&mut self, gpa: u64, writable: bool) {
        if let Some(entry) = self.leaf(gpa) {
            // SAFETY: `entry` is in one of our level-1 tables; the VM lock makes us the only
            // writer.
            unsafe {
                let v = entry.read_volatile();
                entry.write_volatile(if writable { v | ept_bits::WRITE } else { v & !ept_bits::WRITE });
            }
        }
    }

    /// The walk for `gpa` down to the first misconfigured entry: its level, value and why, or
    /// `None` if the walk finds none (it is read while other vCPUs may change it).
    pub(crate) fn find_misconfiguration(&self, gpa: u64) -> Option<(u32, u64, &'static str)> {
        let mut table = self.root_phys;
        for level in (1..=4).rev() {
            // SAFETY: as in `leaf_slot`.
            let value = unsafe { phys_to_virt(table).add(ept_bits::index(gpa, level)).read_volatile() };
            if let Some(why) = ept_bits::misconfiguration(value, level) {
                return Some((level, value, why));
            }
            if !ept_bits::present(value) || value & (1 << 7) != 0 {
                return None;
            }
            table = value & ADDR_MASK;
        }
        None
    }

    /// Removes the mapping of the guest page at `gpa`, if any. The caller flushes the TLBs
    /// (every window starts with INVEPT) and kicks running vCPUs before freeing the page.
    pub(crate) fn unmap(&mut self, gpa: u64) {
        if let Some(entry) = self.leaf(gpa) {
            // SAFETY: as in `set_writable`.
            unsafe { entry.write_volatile(0) };
        }
    }
}
