//! The CPUID each vCPU sees: what the device supports, adjusted for the machine `rvmx run`
//! emulates (its own APIC ID, and only the xAPIC features the userspace local APIC has).

use kvm_bindings::CpuId;

/// CPU `id`'s CPUID: what the device supports, with its initial APIC ID in leaf 1, and
/// neither x2APIC nor the TSC-deadline timer (the local APIC is a userspace xAPIC).
pub fn for_cpu(supported: &CpuId, id: u8) -> CpuId {
    let mut c = supported.clone();
    for e in c.as_mut_slice().iter_mut().filter(|e| e.function == 1) {
        e.ebx = (e.ebx & 0x00ff_ffff) | (id as u32) << 24;
        e.ecx &= !(1 << 21 | 1 << 24); // x2APIC, TSC-deadline
        e.edx |= 1 << 9; // APIC
    }
    c
}
