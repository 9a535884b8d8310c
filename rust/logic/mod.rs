// SPDX-License-Identifier: GPL-2.0

//! Host build of rvmx's kernel-independent modules: the same files the module compiles, so
//! their unit tests run with `cargo test` and the `rvmx` tool decodes exactly as the module does.

pub mod arch;
pub mod kvm_abi;
pub mod kvm_run;
pub mod memslot_rules;
pub mod vcpu_state;
pub mod vmcs_fields;
pub mod ept_bits;
pub mod vmx_exit;
pub mod cpuid_table;
pub mod msr_rules;
pub mod mce;
pub mod ioeventfd_rules;
pub mod coalesced_mmio;
pub mod pic;
pub mod ioapic;
pub mod pit;
pub mod vmx_caps;
pub mod vmx_controls;
pub mod insn;
pub mod mmio_fragments;
pub mod hva_index;
pub mod guest_paging;
pub mod hypercall;
pub mod xstate;
pub mod events;
pub mod guest_debug;
pub mod stats_format;
pub mod mitigation_rules;
pub mod kvmclock;
pub mod alu;
pub mod lapic;
pub mod apic_bus;
pub mod mp_state;
pub mod irq_routing;
pub mod x2apic_api;
pub mod tsc_sync;
pub mod binary_stats;
pub mod msr_filter;
pub mod smm;
pub mod steal_time;
pub mod halt_poll;
