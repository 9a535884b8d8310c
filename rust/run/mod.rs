// SPDX-License-Identifier: GPL-2.0

//! `KVM_RUN`: the loop and its VMX window, the exits, and the instructions rvmx emulates.

pub(crate) mod emulate;
pub(crate) mod exit;
pub(crate) mod vcpu_run;
