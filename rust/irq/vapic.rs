// SPDX-License-Identifier: GPL-2.0

//! The virtual-APIC page of a vCPU with an in-kernel local APIC: with the "use TPR shadow"
//! control the processor keeps the guest's TPR there (offset 0x80, bits 7:4 = CR8), so MOV
//! to and from CR8 run without exits (KVM's TPR shadow). Only the TPR is used: the APIC's
//! registers stay in the model (`logic/lapic.rs`), which takes the whole TPR byte back after
//! each exit (a MOV to CR8 also clears bits 3:0, as KVM's page, its APIC registers, shows).

use kernel::{page::Page, prelude::*};

use crate::host::mem::{page_address, page_phys};

/// Byte offset of the virtual TPR (VTPR) in the page (SDM 29.1.1).
const VTPR: usize = 0x80;

pub(crate) struct VirtualApicPage {
    page: Page,
    vtpr: *mut u32,
}

// SAFETY: the pointer is into `page`, which this owns and frees with it; moving it to another
// thread moves both. (Not `Sync`: it is written through `&mut self` only.)
unsafe impl Send for VirtualApicPage {}

impl VirtualApicPage {
    pub(crate) fn new() -> Result<Self> {
        let page = Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?;
        let base = page_address(&page);
        // SAFETY: VTPR < PAGE_SIZE: inside the page, aligned to 4 bytes.
        let vtpr = unsafe { base.add(VTPR) }.cast::<u32>();
        Ok(Self { page, vtpr })
    }

    /// Its physical address, for the VMCS.
    pub(crate) fn phys(&self) -> u64 {
        page_phys(&self.page)
    }

    /// The TPR byte (VTPR bits 7:0; CR8 is bits 7:4).
    pub(crate) fn tpr(&self) -> u32 {
        // SAFETY: inside our page, owned by this thread's vCPU state; the processor writes it
        // only while this thread runs the guest.
        unsafe { self.vtpr.read_volatile() & 0xff }
    }

    /// Sets the TPR byte the guest's CR8 reads (bits 7:4 of `tpr`).
    pub(crate) fn set_tpr(&mut self, tpr: u32) {
        // SAFETY: as in `tpr`.
        unsafe { self.vtpr.write_volatile(tpr & 0xff) };
    }
}
