// SPDX-License-Identifier: GPL-2.0

//! Physical addresses of kernel pages, for the structures the processor reads by physical
//! address (VMXON regions, VMCSs, EPT tables).

use kernel::{bindings, ffi::c_void, page::Page, prelude::*};

extern "C" {
    /// `page_to_phys()`, a macro in C; exported to Rust by `helpers.c`. The page is passed as
    /// `void *` because bindgen's `struct page` is not FFI-safe in Rust's eyes.
    fn rvmx_page_to_phys(page: *mut c_void) -> u64;
    /// `phys_to_virt()`: the direct-map address of a physical address.
    fn rvmx_phys_to_virt(phys: u64) -> *mut c_void;
}

/// Returns the physical address of `page`.
pub(crate) fn page_phys(page: &Page) -> u64 {
    // SAFETY: `page.as_ptr()` is a valid `struct page` for as long as `page` lives, and
    // `page_to_phys` only computes an address from it.
    unsafe { rvmx_page_to_phys(page.as_ptr().cast()) }
}

/// The kernel virtual address of the page-table page at physical address `phys`.
///
/// Only for pages the caller owns (EPT tables): the direct map covers all of RAM.
pub(crate) fn phys_to_virt(phys: u64) -> *mut u64 {
    // SAFETY: `phys_to_virt` only computes an address; dereferencing it is the caller's
    // business (and is valid for pages it owns).
    unsafe { rvmx_phys_to_virt(phys).cast() }
}

/// Consecutive pages of the VM owner's address space, pinned only for as long as it takes to
/// map them in EPT. Afterwards the VM's MMU notifier, not a pin, keeps the mapping honest (as in
/// KVM): when the host unmaps, moves or frees a page, the EPT entry goes first. Dropping the
/// value unpins the pages, marking them dirty if they were mapped writable (the guest may write
/// them behind the host's page tables). It may sleep: never dropped under the MMU lock.
pub(crate) struct PinnedRun {
    pages: KVec<*mut bindings::page>,
    dirty: bool,
}

// SAFETY: pinned pages may be unpinned from any thread.
unsafe impl Send for PinnedRun {}

impl PinnedRun {
    /// Pins up to `count` consecutive pages from user address `uaddr` of the current process
    /// (writable if `write`; fewer if the mapping ends or a page cannot be pinned; at least
    /// one, else an error: `EFAULT` if nothing is mapped there).
    pub(crate) fn pin(uaddr: u64, count: usize, write: bool) -> Result<Self> {
        let mut pages = KVec::from_elem(core::ptr::null_mut(), count, GFP_KERNEL_ACCOUNT)?;
        let flags = if write { bindings::FOLL_WRITE } else { 0 };
        let nr = i32::try_from(count).map_err(|_| EINVAL)?;
        // SAFETY: `pages` has room for `count` page pointers; the call checks `uaddr` itself.
        let n = unsafe { bindings::pin_user_pages_fast(uaddr as usize, nr, flags, pages.as_mut_ptr()) };
        if n <= 0 {
            return Err(if n < 0 { Error::from_errno(n) } else { EFAULT });
        }
        pages.truncate(n as usize);
        Ok(Self { pages, dirty: false })
    }

    /// How many pages are pinned.
    pub(crate) fn len(&self) -> usize {
        self.pages.len()
    }

    /// The physical addresses of the pages, in order.
    pub(crate) fn phys(&self) -> impl Iterator<Item = u64> + '_ {
        // SAFETY: each page is pinned while `self` lives, so it is a valid `struct page`.
        self.pages.iter().map(|&p| unsafe { rvmx_page_to_phys(p.cast()) })
    }

    /// The pages were mapped writable: mark them dirty when they are unpinned.
    pub(crate) fn set_dirty(&mut self) {
        self.dirty = true;
    }
}

impl Drop for PinnedRun {
    fn drop(&mut self) {
        // SAFETY: each page was pinned once by `pin` and is unpinned once here.
        unsafe { bindings::unpin_user_pages_dirty_lock(self.pages.as_mut_ptr(), self.pages.len(), self.dirty) };
    }
}
