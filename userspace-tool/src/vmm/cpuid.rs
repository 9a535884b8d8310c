//! The CPUID each vCPU sees: what the device supports, adjusted for the machine `rvmx run`
//! emulates (its own APIC ID, and the local APIC features of where the APIC is).

use kvm_bindings::CpuId;
use rvmx_logic::cpuid_table::{LEAF1_ECX_TSC_DEADLINE, LEAF1_ECX_X2APIC};

/// Leaf 1 EDX: an on-chip local APIC.
const LEAF1_EDX_APIC: u32 = 1 << 9;

/// The local APIC features a guest may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Apic {
    /// The kernel's: x2APIC as the device supports it, and the TSC-deadline timer if it
    /// reports `KVM_CAP_TSC_DEADLINE_TIMER` (KVM lists it there, not in the CPUID it supports).
    InKernel { tsc_deadline: bool },
    /// The userspace xAPIC of devices/lapic.rs: neither x2APIC nor TSC deadline.
    User,
}

/// CPU `id`'s CPUID: what the device supports, with its initial APIC ID in leaf 1 and the
/// local APIC's features as `apic` says.
pub fn for_cpu(supported: &CpuId, id: u8, apic: Apic) -> CpuId {
    let mut c = supported.clone();
    for e in c.as_mut_slice().iter_mut().filter(|e| e.function == 1) {
        e.ebx = (e.ebx & 0x00ff_ffff) | (id as u32) << 24;
        e.edx |= LEAF1_EDX_APIC;
        match apic {
            Apic::InKernel { tsc_deadline: true } => e.ecx |= LEAF1_ECX_TSC_DEADLINE,
            Apic::InKernel { tsc_deadline: false } => e.ecx &= !LEAF1_ECX_TSC_DEADLINE,
            Apic::User => e.ecx &= !(LEAF1_ECX_X2APIC | LEAF1_ECX_TSC_DEADLINE),
        }
    }
    c
}
