// SPDX-License-Identifier: GPL-2.0

//! Physical addresses of kernel pages, for the structures the processor reads by physical
//! address (VMXON regions, VMCSs, EPT tables).

use kernel::{ffi::c_void, page::Page};

extern "C" {
    /// `page_to_phys()`, a macro in C; exported to Rust by `helpers.c`. The page is passed as
    /// `void *` because bindgen's `struct page` is not FFI-safe in Rust's eyes.
    fn rvmx_page_to_phys(page: *mut c_void) -> u64;
}

/// Returns the physical address of `page`.
pub(crate) fn page_phys(page: &Page) -> u64 {
    // SAFETY: `page.as_ptr()` is a valid `struct page` for as long as `page` lives, and
    // `page_to_phys` only computes an address from it.
    unsafe { rvmx_page_to_phys(page.as_ptr().cast()) }
}
