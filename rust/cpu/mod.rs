// SPDX-License-Identifier: GPL-2.0

//! Guest CPU state that is not in the VMCS, switched with the host's around each VMX window:
//! MSRs, the FPU and XSAVE state, debug registers, and the speculative-execution protections.

pub(crate) mod debugregs;
pub(crate) mod fpu;
pub(crate) mod kvmclock;
pub(crate) mod mitigations;
pub(crate) mod msr;
pub(crate) mod msr_filter;
