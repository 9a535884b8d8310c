// SPDX-License-Identifier: GPL-2.0

//! `KVM_RUN`: the loop ([`vcpu_run`]) and its VMX window ([`window`]), the exits ([`exit`]),
//! the instructions rvmx emulates ([`emulate`]), the work an exit leaves for the next
//! `KVM_RUN` ([`complete`]), the vCPU's state between runs ([`state`]) and the `kvm_run`
//! page ([`kvm_run`]).

pub(crate) mod complete;
pub(crate) mod counters;
pub(crate) mod emulate;
pub(crate) mod exit;
pub(crate) mod kvm_run;
pub(crate) mod pvclock;
pub(crate) mod smm;
pub(crate) mod state;
pub(crate) mod steal_time;
pub(crate) mod sync_regs;
pub(crate) mod vcpu_run;
pub(crate) mod window;
