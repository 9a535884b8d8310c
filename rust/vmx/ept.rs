// SPDX-License-Identifier: GPL-2.0

//! A VM's EPT: the only guest-physical → host-physical translation its guest has. Entries are
//! added on demand, one 4 KiB page at a time, for memory userspace gave the VM in a slot, and
//! removed whenever the host mapping behind them changes (the VM's MMU notifier); nothing else
//! is ever mapped, so the guest cannot reach any other host page.
//!
//! The tables are changed under the VM's MMU spinlock, which the MMU notifier also takes, so
//! nothing here may sleep or allocate: table pages come from a [`TableCache`] filled before.

use core::ops::Range;
use kernel::{bindings, page::Page, prelude::*};

use crate::{
    logic::ept_bits::{self, ADDR_MASK},
    host::mem::{page_phys, phys_to_virt},
    vmx::operation::VmxOperation,
    logic::vmx_caps::{ept_vpid, VmxCaps},
};

/// Flushes this CPU's cached translations for `eptp` (single-context INVEPT, or all-context
/// where only that exists). Every window does this before entering the guest, so mappings
/// removed while the vCPU was elsewhere are never used.
pub(crate) fn invept(_op: &VmxOperation<'_>, caps: &VmxCaps, eptp: u64) {
    let kind: u64 = if caps.ept_vpid & ept_vpid::INVEPT_SINGLE != 0 { 1 } else { 2 };
    // SAFETY: in VMX operation (`_op`); single-context where the processor has it, else
    // all-context: rvmx loads only where one of them exists (`vmx_caps`).
    unsafe { crate::host::x86::invept(kind, eptp) };
}

/// Zeroed pages for new tables, allocated before the MMU lock is taken (an allocation under
/// it could enter reclaim, which calls the MMU notifier, which waits for the lock). One
/// mapping needs at most three (levels 3, 2 and 1 below the root); a fault-around run stays
/// inside one level-1 table.
pub(crate) struct TableCache {
    pages: KVec<Page>,
}

/// Tables one mapping may need.
const TABLES_PER_MAP: usize = 3;

impl TableCache {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self { pages: KVec::with_capacity(TABLES_PER_MAP, GFP_KERNEL_ACCOUNT)? })
    }

    /// Fills the cache for one mapping (may sleep). Pages are charged to the caller's memory
    /// cgroup, as KVM charges page tables.
    pub(crate) fn top_up(&mut self) -> Result {
        while self.pages.len() < TABLES_PER_MAP {
            let page = Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?;
            self.pages.push(page, GFP_KERNEL_ACCOUNT)?; // within the capacity reserved by `new`
        }
        Ok(())
    }
}

/// Hands a zeroed table page over to the tree: from now on it is reached (and freed) only
/// through its physical address in an entry.
fn adopt(page: Page) -> u64 {
    let phys = page_phys(&page);
    core::mem::forget(page);
    phys
}

/// Frees a table page that [`adopt`] handed to the tree.
///
/// # Safety
///
/// `phys` is a table page of a tree, no longer referenced by any entry or used by any CPU.
unsafe fn free_table(phys: u64) {
    // SAFETY: `phys` is a page `Page::alloc_page` allocated (order 0) and adopted by the tree;
    // the caller guarantees nothing uses it. `free_pages` takes its direct-map address.
    unsafe { bindings::free_pages(phys_to_virt(phys) as usize, 0) };
}

/// log2 of the bytes one entry at `level` (1 to 4) covers.
const fn entry_shift(level: u32) -> u32 {
    match level {
        1 => 12,
        2 => 21,
        3 => 30,
        _ => 39,
    }
}

/// The indices of the entries of a table whose first entry maps `base` and whose entries each
/// map 2^`shift` bytes that overlap `range`; `None` if none does. Always below 512.
fn entries_in(range: &Range<u64>, base: u64, shift: u32) -> Option<core::ops::RangeInclusive<u64>> {
    let table_end = base.saturating_add(512 << shift);
    if range.end <= base || range.start >= table_end || range.start >= range.end {
        return None;
    }
    let first = range.start.saturating_sub(base) >> shift;
    let last = range.end.min(table_end).saturating_sub(base).saturating_sub(1) >> shift;
    Some(first..=last)
}

/// The guest-physical bits that name a 2 MiB region (what one level-1 table maps).
const REGION_MASK: u64 = !((1 << entry_shift(2)) - 1);

/// The mappings around one guest page (see [`Ept::near`]); valid under the MMU lock that
/// borrowed the tree.
pub(crate) struct Near<'a> {
    ept: &'a Ept,
    region: u64,
    /// The direct-map address of the region's level-1 table, if there is one.
    table: Option<*mut u64>,
}

impl Near<'_> {
    /// The present level-1 entry for the guest page at `gpa`, if there is one (a page
    /// outside the region takes a walk of its own).
    fn entry(&self, gpa: u64) -> Option<u64> {
        if gpa & REGION_MASK != self.region {
            return self.ept.near(gpa).entry(gpa);
        }
        let table = self.table?;
        // SAFETY: `table` is the direct-map address of a level-1 table of the tree, which
        // stays while `self.ept` is borrowed (tables go only through `&mut Ept`); the index is
        // below 512.
        let e = unsafe { table.add(ept_bits::index(gpa, 1)).read_volatile() };
        ept_bits::present(e).then_some(e)
    }

    /// Whether the guest page at `gpa` is mapped (writable, if `write`).
    pub(crate) fn mapped(&self, gpa: u64, write: bool) -> bool {
        self.entry(gpa).is_some_and(|e| !write || e & ept_bits::WRITE != 0)
    }
}

/// The 4-level EPT of one VM.
pub(crate) struct Ept {
    root_phys: u64,
    /// Tables emptied by [`Ept::unmap_range`] and detached from the tree, waiting for a flush
    /// before they may be freed (a CPU may still cache them): a list linked through each
    /// table's first entry (a page address, never a present entry), 0 when empty.
    detached: u64,
}

impl Ept {
    pub(crate) fn new() -> Result<Self> {
        let root = Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?;
        Ok(Self { root_phys: adopt(root), detached: 0 })
    }

    /// The EPT pointer to put in a VMCS.
    pub(crate) fn eptp(&self) -> u64 {
        ept_bits::eptp(self.root_phys)
    }

    /// Entry `index` (below 512, so inside the page) of the table at `table`.
    fn entry_at(table: u64, index: usize) -> *mut u64 {
        phys_to_virt(table).wrapping_add(index)
    }

    /// The entry for `gpa` in the table at `table` (a table of this tree, at `level`).
    fn entry(table: u64, gpa: u64, level: u32) -> *mut u64 {
        Self::entry_at(table, ept_bits::index(gpa, level))
    }

    /// The level-1 entry for `gpa`, creating tables from `cache` on the way.
    fn leaf_slot(&mut self, gpa: u64, cache: &mut TableCache) -> Result<*mut u64> {
        let mut table = self.root_phys;
        for level in (2..=4).rev() {
            let entry = Self::entry(table, gpa, level);
            // SAFETY: `entry` points into one of our tables; the MMU lock makes us the only
            // writer.
            let value = unsafe { entry.read_volatile() };
            table = if ept_bits::present(value) {
                value & ADDR_MASK
            } else {
                let phys = adopt(cache.pages.pop().ok_or(ENOMEM)?);
                // SAFETY: as above. The new table is zeroed before it becomes visible.
                unsafe { entry.write_volatile(ept_bits::table_entry(phys)) };
                phys
            };
        }
        Ok(Self::entry(table, gpa, 1))
    }

    /// Maps the guest page at `gpa` to the host page at `hpa`.
    pub(crate) fn map(&mut self, gpa: u64, hpa: u64, writable: bool, cache: &mut TableCache) -> Result {
        let slot = self.leaf_slot(gpa, cache)?;
        // SAFETY: `slot` points into one of our level-1 tables.
        unsafe { slot.write_volatile(ept_bits::leaf_entry(hpa, writable)) };
        Ok(())
    }

    /// The level-1 table that maps `gpa`'s 2 MiB region, if the walk reaches one.
    fn leaf_table(&self, gpa: u64) -> Option<u64> {
        // Unrolled: each level's index is a constant shift (every emulated access walks).
        let level3 = Self::next_table(self.root_phys, gpa, 4)?;
        let level2 = Self::next_table(level3, gpa, 3)?;
        Self::next_table(level2, gpa, 2)
    }

    /// The table that the entry for `gpa` in `table` (at `level`) points to, if present.
    #[inline(always)]
    fn next_table(table: u64, gpa: u64, level: u32) -> Option<u64> {
        // SAFETY: `entry` points into one of our tables.
        let value = unsafe { Self::entry(table, gpa, level).read_volatile() };
        ept_bits::present(value).then_some(value & ADDR_MASK)
    }

    /// The mappings around `gpa`, for a fault that looks at its neighbours: the level-1 table
    /// of `gpa`'s 2 MiB region is looked up once.
    pub(crate) fn near(&self, gpa: u64) -> Near<'_> {
        Near { ept: self, region: gpa & REGION_MASK, table: self.leaf_table(gpa).map(phys_to_virt) }
    }

    /// Copies the guest bytes at `gpa` (inside one page) into `buf` from the host page mapped
    /// there, if one is: emulation reads what the guest sees without a user-memory access.
    pub(crate) fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let offset = (gpa & 0xfff) as usize;
        if buf.len() > crate::logic::guest_paging::to_page_end(gpa) as usize {
            return false;
        }
        let Some(entry) = self.near(gpa).entry(gpa) else { return false };
        let hpa = entry & ADDR_MASK;
        let page = phys_to_virt(hpa).cast::<u8>();
        // A guest page-table entry (an aligned 8 bytes): one read, as the processor's page
        // walker reads it (a guest changing it meanwhile is seen before or after, not torn).
        if let Ok(word) = <&mut [u8; 8]>::try_from(&mut *buf) {
            if offset % 8 == 0 {
                // SAFETY: as for the byte reads below (the page stays while EPT maps it, under
                // the MMU lock the caller holds); `offset` is 8-byte aligned and at most 4088.
                *word = unsafe { page.add(offset).cast::<u64>().read_volatile() }.to_le_bytes();
                return true;
            }
        }
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: the page stays in the VM owner's address space while EPT maps it: the
            // MMU notifier removes the entry (under the MMU lock, which the caller holds)
            // before the host unmaps or frees it. The direct map covers it and
            // `offset + i` < 4096. The guest may write it meanwhile: byte-wise volatile
            // reads, as its own view.
            *b = unsafe { page.add(offset).add(i).read_volatile() };
        }
        true
    }

    /// Whether the guest page at `gpa` is mapped (writable, if `write`).
    pub(crate) fn is_mapped(&self, gpa: u64, write: bool) -> bool {
        self.near(gpa).mapped(gpa, write)
    }

    /// Calls `f` on every present leaf entry for guest pages in `range`, visiting only the
    /// entries that overlap it and skipping tables that are not there; returns whether there
    /// was any. The caller holds the MMU lock.
    fn for_each_leaf(&mut self, range: Range<u64>, mut f: impl FnMut(*mut u64)) -> bool {
        let mut any = false;
        // SAFETY: the root is a level-4 table of this tree whose first entry maps 0.
        unsafe {
            Self::walk(self.root_phys, 4, &range, 0, &mut |e| {
                any = true;
                f(e)
            })
        };
        any
    }

    /// The recursive part of [`Self::for_each_leaf`].
    ///
    /// # Safety
    ///
    /// `table` is a table of this tree at `level` (1 to 4) whose first entry maps `base`.
    unsafe fn walk(table: u64, level: u32, range: &Range<u64>, base: u64, f: &mut impl FnMut(*mut u64)) {
        let shift = entry_shift(level);
        let Some(entries) = entries_in(range, base, shift) else { return };
        for i in entries {
            let start = base.wrapping_add(i << shift);
            // `i` < 512 (`entries_in`): an entry of `table`.
            let entry = Self::entry_at(table, i as usize);
            // SAFETY: `entry` points into one of our tables.
            let value = unsafe { entry.read_volatile() };
            if !ept_bits::present(value) {
                continue;
            }
            if level == 1 {
                f(entry);
            } else {
                // SAFETY: a present entry above level 1 points to a table of this tree one
                // level down whose first entry maps `start`. At most three levels deep.
                unsafe { Self::walk(value & ADDR_MASK, level.saturating_sub(1), range, start, f) };
            }
        }
    }

    /// Removes the mappings of the guest pages in `range`; returns whether there were any.
    /// Tables left empty are detached. The caller then makes sure no vCPU still runs with the
    /// old entries, and only then frees what was detached: [`Self::free_detached`].
    pub(crate) fn unmap_range(&mut self, range: Range<u64>) -> bool {
        // SAFETY: the root is a level-4 table of this tree whose first entry maps 0.
        let (any, _) = unsafe { Self::unmap_walk(self.root_phys, 4, &range, 0, &mut self.detached) };
        any
    }

    /// The recursive part of [`Self::unmap_range`] for the table at `table`: whether a leaf
    /// went, and whether the table is empty now.
    ///
    /// # Safety
    ///
    /// As for [`Self::walk`]; the caller holds the MMU lock.
    unsafe fn unmap_walk(table: u64, level: u32, range: &Range<u64>, base: u64, detached: &mut u64) -> (bool, bool) {
        let shift = entry_shift(level);
        let Some(entries) = entries_in(range, base, shift) else { return (false, false) };
        let mut any = false;
        for i in entries {
            let start = base.wrapping_add(i << shift);
            // `i` < 512 (`entries_in`): an entry of `table`.
            let entry = Self::entry_at(table, i as usize);
            // SAFETY: `entry` points into one of our tables; the MMU lock makes us the only
            // writer.
            let value = unsafe { entry.read_volatile() };
            if !ept_bits::present(value) {
                continue;
            }
            if level == 1 {
                // SAFETY: as above.
                unsafe { entry.write_volatile(0) };
                any = true;
                continue;
            }
            let child = value & ADDR_MASK;
            // SAFETY: a present entry above level 1 points to a table of this tree one level
            // down whose first entry maps `start`.
            let (removed, empty) = unsafe { Self::unmap_walk(child, level.saturating_sub(1), range, start, detached) };
            any |= removed;
            if empty {
                // SAFETY: as above. The child is empty: its first entry may link the list
                // (a page address with the permission bits clear is not present).
                unsafe {
                    entry.write_volatile(0);
                    Self::entry_at(child, 0).write_volatile(*detached);
                }
                *detached = child;
            }
        }
        // SAFETY: the 512 entries of `table`.
        let empty = any && (0..512).all(|i| unsafe { Self::entry_at(table, i).read_volatile() } == 0);
        (any, empty)
    }

    /// Frees the tables [`Self::unmap_range`] detached. Only after every CPU that may have
    /// cached them has left its window (a flush that started after they were detached).
    pub(crate) fn free_detached(&mut self) {
        while self.detached != 0 {
            let table = self.detached;
            // SAFETY: a detached table of ours: its first entry links the list.
            self.detached = unsafe { Self::entry_at(table, 0).read_volatile() };
            // SAFETY: detached from the tree, and the caller has flushed.
            unsafe { free_table(table) };
        }
    }

    /// Whether any guest page in `range` is mapped.
    pub(crate) fn any_mapped(&mut self, range: Range<u64>) -> bool {
        self.for_each_leaf(range, |_| {})
    }

    /// Makes guest writes to the mapped pages in `range` fault (dirty logging); returns
    /// whether any was mapped. Needs the same flush as [`Self::unmap_range`].
    pub(crate) fn write_protect_range(&mut self, range: Range<u64>) -> bool {
        // SAFETY: as in `unmap_range`.
        self.for_each_leaf(range, |e| unsafe { e.write_volatile(e.read_volatile() & !ept_bits::WRITE) })
    }

    /// The walk for `gpa` down to the first misconfigured entry: its level, value and why, or
    /// `None` if the walk finds none (it is read while other vCPUs may change it).
    pub(crate) fn find_misconfiguration(&self, gpa: u64) -> Option<(u32, u64, &'static str)> {
        let mut table = self.root_phys;
        for level in (1..=4).rev() {
            // SAFETY: as in `leaf`.
            let value = unsafe { Self::entry(table, gpa, level).read_volatile() };
            if let Some(why) = ept_bits::misconfiguration(value, level) {
                return Some((level, value, why));
            }
            if !ept_bits::present(value) || value & ept_bits::LARGE_PAGE != 0 {
                return None;
            }
            table = value & ADDR_MASK;
        }
        None
    }

    /// Frees the table at `table` (at `level`) and every table below it.
    ///
    /// # Safety
    ///
    /// `table` is a table of this tree at `level` that no CPU uses any more and that nothing
    /// else will reach after this.
    unsafe fn free_tree(table: u64, level: u32) {
        if level > 1 {
            for i in 0..512 {
                // SAFETY: entry `i` of one of our tables.
                let value = unsafe { Self::entry_at(table, i).read_volatile() };
                if ept_bits::present(value) {
                    // SAFETY: a present entry above level 1 points to a table one level down.
                    unsafe { Self::free_tree(value & ADDR_MASK, level.saturating_sub(1)) };
                }
            }
        }
        // SAFETY: the caller's promise; its entries were handled above.
        unsafe { free_table(table) };
    }
}

impl Drop for Ept {
    fn drop(&mut self) {
        // SAFETY: no vCPU runs on this EPT any more (they hold the VM alive, and every window
        // flushes before entering) and its notifier is gone: nothing reaches the tree.
        unsafe { Self::free_tree(self.root_phys, 4) };
        self.free_detached();
    }
}
