// SPDX-License-Identifier: GPL-2.0

//! VMCS regions and access to the current VMCS (VMPTRLD, VMREAD, VMWRITE, VMCLEAR).
//!
//! A VMCS is current only inside a VMX window ([`crate::vmx::operation::VmxOperation`]); [`Current`]
//! borrows the window, so no VMCS access can happen outside one. Leaving the window VMCLEARs
//! the VMCS: its data is written back to memory and its launch state becomes "clear", so the
//! next window, on any CPU, starts with VMPTRLD + VMLAUNCH. That is how vCPUs migrate
//! between CPUs without IPIs.

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use kernel::{page::Page, prelude::*};

use crate::{
    host::{mem::page_phys, x86},
    logic::vmcs_fields::{Field, ReadWrite, Width, VM_INSTRUCTION_ERROR},
    vmx::operation::VmxOperation,
};

/// A VMCS region: one page holding the revision identifier.
pub(crate) struct Vmcs {
    _page: Page,
    phys: u64,
}

impl Vmcs {
    pub(crate) fn new(revision_id: u32) -> Result<Self> {
        let page = Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?;
        let rev = revision_id.to_ne_bytes();
        // SAFETY: `rev` is 4 readable bytes; the page is 4096 bytes and ours alone.
        unsafe { page.write_raw(rev.as_ptr(), 0, rev.len())? };
        Ok(Self { phys: page_phys(&page), _page: page })
    }
}

/// The current VMCS of this CPU, for the life of a VMX window. Dropping it VMCLEARs.
pub(crate) struct Current<'a> {
    phys: u64,
    _op: &'a VmxOperation<'a>,
}

impl<'a> Current<'a> {
    /// Makes `vmcs` current on this CPU (VMPTRLD).
    pub(crate) fn load(op: &'a VmxOperation<'a>, vmcs: &'a Vmcs) -> Result<Self> {
        let phys = vmcs.phys;
        // SAFETY: in VMX operation (`op`); the region holds the revision id, and `vmcs` is
        // borrowed for as long as it is current, so it cannot be current elsewhere.
        if !unsafe { x86::vmptrld(phys) } {
            return Err(EIO);
        }
        Ok(Self { phys, _op: op })
    }

    /// Reads a field.
    pub(crate) fn read<W: Width, A>(&self, field: Field<W, A>) -> W::Value {
        // SAFETY: a VMCS is current (`self`); VMREAD only reads it.
        W::from_raw(unsafe { x86::vmread(field.encoding as u64) })
    }

    /// Writes a field. The processor refuses only a field it does not have or a read-only one:
    /// a bug in rvmx, logged with the processor's reason (as KVM's `vmwrite_error`). Bad
    /// values are found by the next VM entry, which reports them to userspace.
    pub(crate) fn write<W: Width>(&self, field: Field<W, ReadWrite>, value: W::Value) {
        let raw = W::to_raw(value);
        // SAFETY: a VMCS is current (`self`); the processor checks the value at VM entry.
        if !unsafe { x86::vmwrite(field.encoding as u64, raw) } {
            self.write_failed(field.encoding, raw);
        }
    }

    #[cold]
    fn write_failed(&self, encoding: u32, value: u64) {
        static REPORTS: AtomicU32 = AtomicU32::new(0);
        if REPORTS.fetch_add(1, Relaxed) < 8 {
            let error = self.read(VM_INSTRUCTION_ERROR);
            pr_err!("VMWRITE failed: field {:#x} value {:#x} error {}\n", encoding, value, error);
        }
    }
}

impl Drop for Current<'_> {
    fn drop(&mut self) {
        // VMCLEAR writes the VMCS back to memory and makes it not current, so it can be loaded
        // on another CPU in a later window. A failure here is impossible for a VMCS that
        // VMPTRLD accepted.
        // SAFETY: in VMX operation (`_op` outlives `self`); the region is the one loaded.
        let _ = unsafe { x86::vmclear(self.phys) };
    }
}
