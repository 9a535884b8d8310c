// SPDX-License-Identifier: GPL-2.0

//! The virtual-APIC page of a vCPU with an in-kernel local APIC: with the "use TPR shadow"
//! control the processor keeps the guest's TPR there (offset 0x80, bits 7:4 = CR8), so MOV
//! to and from CR8 run without exits (KVM's TPR shadow). Only the TPR is used: the APIC's
//! registers stay in the model (`logic/lapic.rs`), which takes the TPR back after each exit.

use kernel::{page::Page, prelude::*};

use crate::host::mem::{page_phys, phys_to_virt};

/// Byte offset of the virtual TPR (VTPR) in the page (SDM 29.1.1).
const VTPR: usize = 0x80;

pub(crate) struct VirtualApicPage {
    page: Page,
    vtpr: *mut u32,
}

// SAFETY: the pointer is into `page`, which this owns and frees with it; moving it to another
// thread moves both.
unsafe impl Send for VirtualApicPage {}
// SAFETY: the page is the vCPU's, reached only by the thread that holds the vCPU mutex (and by
// the processor inside that thread's windows), so two threads never use it at once.
unsafe impl Sync for VirtualApicPage {}

impl VirtualApicPage {
    pub(crate) fn new() -> Result<Self> {
        let page = Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?;
        let base = phys_to_virt(page_phys(&page)).cast::<u8>();
        // SAFETY: VTPR < PAGE_SIZE: inside the page, aligned to 4 bytes.
        let vtpr = unsafe { base.add(VTPR) }.cast::<u32>();
        Ok(Self { page, vtpr })
    }

    /// Its physical address, for the VMCS.
    pub(crate) fn phys(&self) -> u64 {
        page_phys(&self.page)
    }

    /// The TPR as CR8 shows it (VTPR bits 7:4).
    pub(crate) fn cr8(&self) -> u64 {
        // SAFETY: inside our page, under the vCPU mutex; the processor writes it only while
        // this thread runs the guest.
        u64::from(unsafe { self.vtpr.read_volatile() } >> 4 & 0xf)
    }

    /// Sets the TPR the guest's CR8 reads (`cr8`, bits 3:0).
    pub(crate) fn set_cr8(&self, cr8: u64) {
        // SAFETY: as in `cr8`.
        unsafe { self.vtpr.write_volatile(((cr8 & 0xf) as u32) << 4) };
    }
}
