// SPDX-License-Identifier: GPL-2.0

//! VMCS regions and access to the current VMCS (VMPTRLD, VMREAD, VMWRITE, VMCLEAR).
//!
//! A VMCS is current only inside a VMX window ([`crate::vmx::operation::VmxOperation`]); [`Current`]
//! borrows the window, so no VMCS access can happen outside one. Leaving the window VMCLEARs
//! the VMCS: its data is written back to memory and its launch state becomes "clear", so the
//! next window, on any CPU, starts with VMPTRLD + VMLAUNCH. That is how vCPUs migrate
//! between CPUs without IPIs.

use core::arch::asm;
use kernel::{page::Page, prelude::*};

use crate::{
    host::mem::page_phys,
    logic::vmcs_fields::{Field, ReadWrite, Width},
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

/// Whether a VMX instruction failed (CF or ZF set: VMfailInvalid or VMfailValid).
macro_rules! vmx_failed {
    ($insn:literal, $($operands:tt)*) => {{
        let failed: u8;
        // SAFETY: see the callers; the instruction only touches the operands given.
        unsafe { asm!(concat!($insn, "\n", "setna {failed}"), $($operands)*, failed = out(reg_byte) failed, options(nostack)) };
        failed != 0
    }};
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
        // The operand is a pointer to the physical address; the CPU is in VMX operation
        // (`op`) and the region holds the right revision id.
        if vmx_failed!("vmptrld [{pa}]", pa = in(reg) &phys) {
            return Err(EIO);
        }
        Ok(Self { phys, _op: op })
    }

    /// Reads a field.
    pub(crate) fn read<W: Width, A>(&self, field: Field<W, A>) -> W::Value {
        let value: u64;
        // SAFETY: a VMCS is current (`self`); VMREAD of a valid encoding only reads it. An
        // unsupported field fails the instruction and leaves `value` as the register held, 0.
        unsafe {
            asm!("xor {v:e}, {v:e}", "vmread {v}, {f}", f = in(reg) field.encoding as u64,
                 v = out(reg) value, options(nostack))
        };
        W::from_raw(value)
    }

    /// Writes a field. Returns `false` if the processor refused (unsupported field or a
    /// value with reserved bits set), which the next VM entry would report anyway.
    pub(crate) fn write<W: Width>(&self, field: Field<W, ReadWrite>, value: W::Value) -> bool {
        !vmx_failed!("vmwrite {enc}, {v}", enc = in(reg) field.encoding as u64, v = in(reg) W::to_raw(value))
    }
}

impl Drop for Current<'_> {
    fn drop(&mut self) {
        // VMCLEAR writes the VMCS back to memory and makes it not current, so it can be loaded
        // on another CPU in a later window. A failure here is impossible for a VMCS that
        // VMPTRLD accepted.
        let _ = vmx_failed!("vmclear [{pa}]", pa = in(reg) &self.phys);
    }
}
