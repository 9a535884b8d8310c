// SPDX-License-Identifier: GPL-2.0

//! The host state around a VMX window: what the VMCS must restore at every VM exit, and what
//! a VM exit does not restore (GDTR/IDTR limits, LDTR, DS/ES, the TSS limit), put back by
//! hand before interrupts are enabled again.

use kernel::prelude::*;

use crate::{
    host::helpers,
    host::x86::{self, DescPtr, Seg},
    logic::{arch::msr, vmcs_fields::*},
    vmx::vmcs::Current,
};

/// What the host state a VMCS holds was written for (see [`HostState::write_to`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostKey {
    cpu: u32,
    cr0: u64,
    cr3: u64,
    cr4: u64,
    fs_base: u64,
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

impl HostState {
    /// Saves what a VM exit will not restore. Fails (EIO) if the task has non-zero FS or GS
    /// selectors, which a VM exit would zero and rvmx does not reload (64-bit processes keep
    /// them zero; reloading GS safely needs the kernel's KVM-only helpers).
    pub(crate) fn save() -> Result<Self> {
        if x86::selector(Seg::Fs) != 0 || x86::selector(Seg::Gs) != 0 {
            return Err(EIO);
        }
        Ok(Self {
            gdt: x86::sgdt(),
            idt: x86::sidt(),
            ldt: x86::sldt(),
            ds: x86::selector(Seg::Ds),
            es: x86::selector(Seg::Es),
            tr: x86::str(),
        })
    }

    /// The base of the host TSS, from its 16-byte descriptor in the GDT.
    fn tr_base(&self) -> u64 {
        let desc = self.gdt.base.wrapping_add((self.tr & !7) as u64) as *const u32;
        // SAFETY: TR selects a valid 16-byte system descriptor inside the live GDT.
        let (w0, w1, w2) = unsafe { (desc.read(), desc.add(1).read(), desc.add(2).read()) };
        ((w0 >> 16) as u64) | (((w1 & 0xff) as u64) << 16) | (((w1 >> 24) as u64) << 24) | ((w2 as u64) << 32)
    }

    /// Writes the VMCS host-state area for this CPU and task, unless `written` says the VMCS
    /// holds it already: the VMCS keeps its host state across VMCLEAR, and what it holds
    /// depends only on the CPU (its GDT, TSS, GS base, SYSENTER stack), the task's address
    /// space (CR3), CR0, CR4 and the task's FS base, which userspace may change at any time
    /// (WRFSBASE). `written` is the VMCS's own: `None` for a VMCS never loaded.
    pub(crate) fn write_to(&self, cur: &Current<'_>, written: &mut Option<HostKey>) {
        let key = HostKey {
            cpu: kernel::cpu::CpuId::current().as_u32(),
            cr0: x86::read_cr0(),
            cr3: x86::read_cr3(),
            cr4: x86::read_cr4(),
            fs_base: x86::rdmsr(msr::FS_BASE),
        };
        if *written == Some(key) {
            return;
        }
        cur.write(HOST_CR0, key.cr0);
        cur.write(HOST_CR3, key.cr3);
        cur.write(HOST_CR4, key.cr4);
        cur.write(HOST_CS_SELECTOR, x86::selector(Seg::Cs));
        cur.write(HOST_SS_SELECTOR, x86::selector(Seg::Ss));
        // DS/ES/FS/GS are zero after exit (RPL must be 0); DS/ES are reloaded in `restore`.
        for f in [HOST_DS_SELECTOR, HOST_ES_SELECTOR, HOST_FS_SELECTOR, HOST_GS_SELECTOR] {
            cur.write(f, 0);
        }
        cur.write(HOST_TR_SELECTOR, self.tr);
        cur.write(HOST_TR_BASE, self.tr_base());
        cur.write(HOST_GDTR_BASE, self.gdt.base);
        cur.write(HOST_IDTR_BASE, self.idt.base);
        cur.write(HOST_FS_BASE, key.fs_base);
        cur.write(HOST_GS_BASE, x86::rdmsr(msr::GS_BASE));
        cur.write(HOST_SYSENTER_CS, x86::rdmsr(msr::SYSENTER_CS) as u32);
        cur.write(HOST_SYSENTER_ESP, x86::rdmsr(msr::SYSENTER_ESP));
        cur.write(HOST_SYSENTER_EIP, x86::rdmsr(msr::SYSENTER_EIP));
        cur.write(HOST_IA32_EFER, x86::rdmsr(msr::EFER));
        cur.write(HOST_IA32_PAT, x86::rdmsr(msr::PAT));
        *written = Some(key);
    }

    /// Puts back what the VM exits of this window changed. Interrupts are still off.
    pub(crate) fn restore(&self) {
        // SAFETY: the exact values saved in `save` on this CPU (interrupts have been off
        // since, so nothing else changed them).
        unsafe { x86::load_host_tables(&self.gdt, &self.idt, self.ldt, self.ds, self.es) };
        // SAFETY: the kernel's own recipe for the TSS limit a VM exit set to 0x67
        // (host/helpers.c), interrupts off.
        unsafe { helpers::rvmx_invalidate_tss_limit() };
    }
}
