// SPDX-License-Identifier: GPL-2.0

//! The in-kernel interrupt controller: a local APIC per vCPU (KVM's split irqchip) and, with
//! `KVM_CREATE_IRQCHIP`, the PIC pair and the IOAPIC. Their rules and registers are
//! `logic/lapic.rs`, `logic/pic.rs` and `logic/ioapic.rs`; this layer holds them and answers
//! the guest's and userspace's accesses.

pub(crate) mod bus;
pub(crate) mod irqchip;
pub(crate) mod irqfd;
pub(crate) mod lapic;
pub(crate) mod mailbox;
pub(crate) mod pit;
pub(crate) mod resample;
pub(crate) mod routing;
pub(crate) mod timer;
pub(crate) mod vapic;
