// SPDX-License-Identifier: GPL-2.0

//! The guest's segment, descriptor-table and control registers (`kvm_sregs`), kept where they
//! were last written, as KVM keeps its `regs_avail`/`regs_dirty`: after a window the VMCS
//! holds the newest (VMCLEAR leaves them in its memory), and a window reads them back only
//! when the exit's work outside it needs them; elsewhere `RunState::sync_sregs` reads them in
//! a short VMX window of its own. A window writes them into the VMCS only when
//! they were changed outside one (`KVM_SET_SREGS`, INIT, SMM, an emulated instruction).
//!
//! An MMIO exit reads back only what emulating its access needs
//! ([`guest_state::store_emulation_sregs`], 12 fields of 45): [`GuestSregs::for_emulation`].
//!
//! CR2, CR8 and APIC_BASE are not in the VMCS: they are always here.

use kernel::prelude::*;

use crate::{logic::kvm_abi::Sregs, vmx::{guest_state, vmcs::Current}};

/// Where the newest copy is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Home {
    /// Here and in the VMCS alike.
    Both,
    /// In the VMCS (a window ran since they were read back).
    Vmcs,
    /// Here (changed outside a window): the next window writes them.
    Here,
    /// In the VMCS, but what the instruction emulator reads is here too.
    Emulation,
}

/// The guest's `kvm_sregs` and where their newest copy is.
pub(crate) struct GuestSregs {
    s: Sregs,
    home: Home,
}

/// A read of registers the VMCS holds newer ones of is a bug in rvmx (a caller that did not
/// sync first): said once in the kernel log (the tests look for it) instead of going unseen.
fn stale_read() {
    static SAID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, core::sync::atomic::Ordering::Relaxed) {
        pr_err!("BUG: guest segment registers read while the VMCS holds newer ones\n");
    }
}

impl GuestSregs {
    /// Registers set outside a window (at creation): the first window writes them.
    pub(crate) fn new(s: Sregs) -> Self {
        Self { s, home: Home::Here }
    }

    /// Whether the VMCS holds newer ones (read them back before [`Self::get`]).
    pub(crate) fn stale(&self) -> bool {
        matches!(self.home, Home::Vmcs | Home::Emulation)
    }

    /// The registers, outside a window, once synced.
    pub(crate) fn get(&self) -> &Sregs {
        if self.stale() {
            stale_read();
        }
        &self.s
    }

    /// The registers to change outside a window, once synced: the next window writes them.
    pub(crate) fn get_mut(&mut self) -> &mut Sregs {
        if self.stale() {
            stale_read();
        }
        self.home = Home::Here;
        &mut self.s
    }

    /// Replaces them all (no sync needed: nothing of the old ones is kept).
    pub(crate) fn set(&mut self, s: Sregs) {
        self.s = s;
        self.home = Home::Here;
    }

    pub(crate) fn cr2(&self) -> u64 {
        self.s.cr2
    }

    pub(crate) fn set_cr2(&mut self, v: u64) {
        self.s.cr2 = v;
    }

    /// The TPR without an in-kernel APIC (userspace's APIC keeps the guest's there).
    pub(crate) fn cr8(&self) -> u64 {
        self.s.cr8
    }

    pub(crate) fn set_cr8(&mut self, v: u64) {
        self.s.cr8 = v;
    }

    /// IA32_APIC_BASE without an in-kernel APIC.
    pub(crate) fn apic_base(&self) -> u64 {
        self.s.apic_base
    }

    pub(crate) fn set_apic_base(&mut self, v: u64) {
        self.s.apic_base = v;
    }

    /// What a window writes into the VMCS: the registers if they changed outside one.
    pub(crate) fn to_load(&self) -> Option<&Sregs> {
        (self.home == Home::Here).then_some(&self.s)
    }

    /// The window that loaded them (or found them in the VMCS) is over: the guest may have
    /// changed them there.
    pub(crate) fn left_in_vmcs(&mut self) {
        self.home = Home::Vmcs;
    }

    /// What the instruction emulator reads (modes, paging, segment bases, CPL), once synced
    /// or read for emulation ([`Self::sync_for_emulation`]). Nothing else may use it: the
    /// other fields may be older than the VMCS's.
    pub(crate) fn for_emulation(&self) -> &Sregs {
        if self.home != Home::Emulation && self.stale() {
            stale_read();
        }
        &self.s
    }

    /// Whether [`Self::for_emulation`] needs a sync first.
    pub(crate) fn stale_for_emulation(&self) -> bool {
        self.home == Home::Vmcs
    }

    /// Reads back from `cur` what emulation needs, if the VMCS holds newer registers.
    pub(crate) fn sync_for_emulation(&mut self, cur: &Current<'_>) {
        if self.stale_for_emulation() {
            guest_state::store_emulation_sregs(cur, &mut self.s);
            self.home = Home::Emulation;
        }
    }

    /// Reads them back from `cur`, this vCPU's VMCS, if it holds newer ones.
    pub(crate) fn sync(&mut self, cur: &Current<'_>) {
        if self.stale() {
            guest_state::store_sregs(cur, &mut self.s);
            self.home = Home::Both;
        }
    }
}
