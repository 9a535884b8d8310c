// SPDX-License-Identifier: GPL-2.0

//! The in-kernel interrupt controller: a local APIC per vCPU (KVM's split irqchip). Its rules
//! and registers are `logic/lapic.rs`; this layer holds each vCPU's APIC and answers the
//! guest's and userspace's accesses to it.

pub(crate) mod bus;
pub(crate) mod irqfd;
pub(crate) mod lapic;
pub(crate) mod mailbox;
pub(crate) mod routing;
pub(crate) mod timer;
