// SPDX-License-Identifier: GPL-2.0

//! VMX itself: VMX operation and its interrupts-off windows, VMCS regions and access, the VM
//! entry stub, EPT tables, the host and guest state a VMCS holds, and where the guest's
//! segment and control registers live between windows.

pub(crate) mod entry;
pub(crate) mod ept;
pub(crate) mod guest_state;
pub(crate) mod host_state;
pub(crate) mod operation;
pub(crate) mod sregs;
pub(crate) mod vmcs;
