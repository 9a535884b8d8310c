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

/// A page of a user address space, pinned (FOLL_LONGTERM) for as long as the value lives:
/// guest memory that EPT maps. Dropping it unpins the page.
pub(crate) struct PinnedPage {
    page: *mut bindings::page,
}

// SAFETY: a pinned page may be unpinned from any thread.
unsafe impl Send for PinnedPage {}
// SAFETY: shared access only reads the physical address.
unsafe impl Sync for PinnedPage {}

impl PinnedPage {
    /// Pins `count` consecutive pages from user address `uaddr` of the current process
    /// (writable if `write`; fewer if the mapping ends or a page cannot be pinned; at least
    /// one, else an error: `EFAULT` if nothing is mapped there).
    pub(crate) fn pin_run(uaddr: u64, count: usize, write: bool) -> Result<KVec<Self>> {
        let mut pages = KVec::from_elem(core::ptr::null_mut(), count, GFP_KERNEL)?;
        let mut pinned = KVec::with_capacity(count, GFP_KERNEL)?;
        let flags = bindings::FOLL_LONGTERM | if write { bindings::FOLL_WRITE } else { 0 };
        let nr = i32::try_from(count).map_err(|_| EINVAL)?;
        // SAFETY: `pages` has room for `count` page pointers; the call checks `uaddr` itself.
        let n = unsafe { bindings::pin_user_pages_fast(uaddr as usize, nr, flags, pages.as_mut_ptr()) };
        if n <= 0 {
            return Err(if n < 0 { Error::from_errno(n) } else { EFAULT });
        }
        for &page in pages.iter().take(n as usize) {
            // Capacity reserved above: cannot fail, and each pinned page gets its owner.
            pinned.push(Self { page }, GFP_KERNEL)?;
        }
        Ok(pinned)
    }

    /// The page's physical address.
    pub(crate) fn phys(&self) -> u64 {
        // SAFETY: the page is pinned, so `self.page` is a valid `struct page`.
        unsafe { rvmx_page_to_phys(self.page.cast()) }
    }
}

impl Drop for PinnedPage {
    fn drop(&mut self) {
        // SAFETY: pinned once by `pin`, unpinned once here.
        unsafe { bindings::unpin_user_page(self.page) };
    }
}
