// SPDX-License-Identifier: GPL-2.0

//! The host state around a VMX window: what the VMCS must restore at every VM exit, and what
//! a VM exit does not restore (GDTR/IDTR limits, LDTR, DS/ES, the TSS limit), put back by
//! hand before interrupts are enabled again.

use core::arch::asm;
use kernel::prelude::*;

use crate::{vmx::vmcs::Current, logic::vmcs_fields::*, host::x86};

extern "C" {
    fn rvmx_invalidate_tss_limit();
}

/// Operand of SGDT/SIDT/LGDT/LIDT.
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct DescPtr {
    limit: u16,
    base: u64,
}

/// MSR numbers of the host state the VMCS carries.
mod msr {
    pub(super) const SYSENTER_CS: u32 = 0x174;
    pub(super) const SYSENTER_ESP: u32 = 0x175;
    pub(super) const SYSENTER_EIP: u32 = 0x176;
    pub(super) const PAT: u32 = 0x277;
    pub(super) const EFER: u32 = 0xc000_0080;
    pub(super) const FS_BASE: u32 = 0xc000_0100;
    pub(super) const GS_BASE: u32 = 0xc000_0101;
}

/// Host descriptor tables and data segments, saved at the start of a window.
pub(crate) struct HostState {
    gdt: DescPtr,
    idt: DescPtr,
    ldt: u16,
    ds: u16,
    es: u16,
    tr: u16,
}

macro_rules! read_seg {
    ($seg:literal) => {{
        let v: u16;
        // SAFETY: reading a segment selector has no side effects.
        unsafe { asm!(concat!("mov {0:x}, ", $seg), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

impl HostState {
    /// Saves what a VM exit will not restore. Fails (EIO) if the task has non-zero FS or GS
    /// selectors, which a VM exit would zero and rvmx does not reload (64-bit processes keep
    /// them zero; reloading GS safely needs the kernel's KVM-only helpers).
    pub(crate) fn save() -> Result<Self> {
        let mut gdt = DescPtr::default();
        let mut idt = DescPtr::default();
        let (ldt, tr): (u16, u16);
        // SAFETY: SGDT/SIDT store 10 bytes into the given operands; SLDT/STR read registers.
        unsafe {
            asm!("sgdt [{}]", in(reg) &mut gdt, options(nostack, preserves_flags));
            asm!("sidt [{}]", in(reg) &mut idt, options(nostack, preserves_flags));
            asm!("sldt {0:x}", out(reg) ldt, options(nomem, nostack, preserves_flags));
            asm!("str {0:x}", out(reg) tr, options(nomem, nostack, preserves_flags));
        }
        if read_seg!("fs") != 0 || read_seg!("gs") != 0 {
            return Err(EIO);
        }
        Ok(Self { gdt, idt, ldt, ds: read_seg!("ds"), es: read_seg!("es"), tr })
    }

    /// The base of the host TSS, from its 16-byte descriptor in the GDT.
    fn tr_base(&self) -> u64 {
        let desc = self.gdt.base.wrapping_add((self.tr & !7) as u64) as *const u32;
        // SAFETY: TR selects a valid 16-byte system descriptor inside the live GDT.
        let (w0, w1, w2) = unsafe { (desc.read(), desc.add(1).read(), desc.add(2).read()) };
        ((w0 >> 16) as u64) | (((w1 & 0xff) as u64) << 16) | (((w1 >> 24) as u64) << 24) | ((w2 as u64) << 32)
    }

    /// Writes the VMCS host-state area for this CPU and task.
    pub(crate) fn write_to(&self, cur: &Current<'_>) {
        cur.write(HOST_CR0, x86::read_cr0());
        cur.write(HOST_CR3, x86::read_cr3());
        cur.write(HOST_CR4, x86::read_cr4());
        cur.write(HOST_CS_SELECTOR, read_seg!("cs"));
        cur.write(HOST_SS_SELECTOR, read_seg!("ss"));
        // DS/ES/FS/GS are zero after exit (RPL must be 0); DS/ES are reloaded in `restore`.
        for f in [HOST_DS_SELECTOR, HOST_ES_SELECTOR, HOST_FS_SELECTOR, HOST_GS_SELECTOR] {
            cur.write(f, 0);
        }
        cur.write(HOST_TR_SELECTOR, self.tr);
        cur.write(HOST_TR_BASE, self.tr_base());
        cur.write(HOST_GDTR_BASE, self.gdt.base);
        cur.write(HOST_IDTR_BASE, self.idt.base);
        cur.write(HOST_FS_BASE, x86::rdmsr(msr::FS_BASE));
        cur.write(HOST_GS_BASE, x86::rdmsr(msr::GS_BASE));
        cur.write(HOST_SYSENTER_CS, x86::rdmsr(msr::SYSENTER_CS) as u32);
        cur.write(HOST_SYSENTER_ESP, x86::rdmsr(msr::SYSENTER_ESP));
        cur.write(HOST_SYSENTER_EIP, x86::rdmsr(msr::SYSENTER_EIP));
        cur.write(HOST_IA32_EFER, x86::rdmsr(msr::EFER));
        cur.write(HOST_IA32_PAT, x86::rdmsr(msr::PAT));
    }

    /// Puts back what the VM exits of this window changed. Interrupts are still off.
    pub(crate) fn restore(&self) {
        // SAFETY: reloads the exact values saved in `save` on this CPU (interrupts have been
        // off since, so nothing else changed them); the TSS-limit helper is the kernel's own
        // recipe (host/helpers.c).
        unsafe {
            asm!("lgdt [{}]", in(reg) &self.gdt, options(nostack, preserves_flags));
            asm!("lidt [{}]", in(reg) &self.idt, options(nostack, preserves_flags));
            asm!("lldt {0:x}", in(reg) self.ldt, options(nostack, preserves_flags));
            asm!("mov ds, {0:x}", in(reg) self.ds, options(nostack, preserves_flags));
            asm!("mov es, {0:x}", in(reg) self.es, options(nostack, preserves_flags));
            rvmx_invalidate_tss_limit();
        }
    }
}
