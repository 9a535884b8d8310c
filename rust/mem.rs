// SPDX-License-Identifier: GPL-2.0

//! Physical addresses of kernel pages, for the structures the processor reads by physical
//! address (VMXON regions, VMCSs, EPT tables).

use kernel::{ffi::c_void, page::Page};

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
