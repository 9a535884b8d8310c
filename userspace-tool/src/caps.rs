//! Capability names for `rvmx info`, and the host CPU's VMX capabilities read through the
//! `msr` driver and decoded by the same code the module uses (`rvmx-logic`).

use std::{fs::File, os::unix::fs::FileExt};

use kvm_bindings::*;
use rvmx_logic::vmx_caps::{check_platform, Msr, VmxCaps, IA32_FEATURE_CONTROL};

/// The KVM capabilities `rvmx info` asks about, by their `<linux/kvm.h>` names.
pub const KNOWN: &[(&str, u32)] = &[
    ("IRQCHIP", KVM_CAP_IRQCHIP),
    ("HLT", KVM_CAP_HLT),
    ("USER_MEMORY", KVM_CAP_USER_MEMORY),
    ("SET_TSS_ADDR", KVM_CAP_SET_TSS_ADDR),
    ("EXT_CPUID", KVM_CAP_EXT_CPUID),
    ("NR_VCPUS", KVM_CAP_NR_VCPUS),
    ("NR_MEMSLOTS", KVM_CAP_NR_MEMSLOTS),
    ("MP_STATE", KVM_CAP_MP_STATE),
    ("COALESCED_MMIO", KVM_CAP_COALESCED_MMIO),
    ("SYNC_MMU", KVM_CAP_SYNC_MMU),
    ("USER_NMI", KVM_CAP_USER_NMI),
    ("SET_GUEST_DEBUG", KVM_CAP_SET_GUEST_DEBUG),
    ("IOEVENTFD", KVM_CAP_IOEVENTFD),
    ("SET_IDENTITY_MAP_ADDR", KVM_CAP_SET_IDENTITY_MAP_ADDR),
    ("INTERNAL_ERROR_DATA", KVM_CAP_INTERNAL_ERROR_DATA),
    ("VCPU_EVENTS", KVM_CAP_VCPU_EVENTS),
    ("DEBUGREGS", KVM_CAP_DEBUGREGS),
    ("XSAVE", KVM_CAP_XSAVE),
    ("XCRS", KVM_CAP_XCRS),
    ("GET_TSC_KHZ", KVM_CAP_GET_TSC_KHZ),
    ("MAX_VCPUS", KVM_CAP_MAX_VCPUS),
    ("READONLY_MEM", KVM_CAP_READONLY_MEM),
    ("CHECK_EXTENSION_VM", KVM_CAP_CHECK_EXTENSION_VM),
    ("MAX_VCPU_ID", KVM_CAP_MAX_VCPU_ID),
    ("IMMEDIATE_EXIT", KVM_CAP_IMMEDIATE_EXIT),
    ("GET_MSR_FEATURES", KVM_CAP_GET_MSR_FEATURES),
    ("USER_MEMORY2", KVM_CAP_USER_MEMORY2),
    ("SPLIT_IRQCHIP", KVM_CAP_SPLIT_IRQCHIP),
    ("TSC_DEADLINE_TIMER", KVM_CAP_TSC_DEADLINE_TIMER),
    ("X2APIC_API", KVM_CAP_X2APIC_API),
    ("IRQ_ROUTING", KVM_CAP_IRQ_ROUTING),
    ("IRQ_INJECT_STATUS", KVM_CAP_IRQ_INJECT_STATUS),
    ("IRQFD", KVM_CAP_IRQFD),
    ("SIGNAL_MSI", KVM_CAP_SIGNAL_MSI),
];

/// Reads MSR `msr` of CPU 0 through `/dev/cpu/0/msr`.
fn read_msr(file: &File, msr: Msr) -> Option<u64> {
    let mut buf = [0u8; 8];
    file.read_exact_at(&mut buf, msr.0.into()).ok()?;
    Some(u64::from_ne_bytes(buf))
}

/// The `msr` driver's node cannot be opened: the host's VMX capabilities are unknown.
#[derive(Debug, thiserror::Error)]
#[error("/dev/cpu/0/msr: {0}; load the msr module")]
pub struct NoMsr(#[source] std::io::Error);

/// One line describing the host CPU's VMX capabilities, or why it cannot run rvmx.
pub fn host_vmx() -> Result<String, NoMsr> {
    let file = File::open("/dev/cpu/0/msr").map_err(NoMsr)?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has_vmx = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "vmx"));
    let ecx = if has_vmx { rvmx_logic::vmx_caps::CPUID_1_ECX_VMX } else { 0 };
    let check = check_platform(ecx, read_msr(&file, IA32_FEATURE_CONTROL).unwrap_or(0))
        .and_then(|()| VmxCaps::read(|msr| read_msr(&file, msr)));
    Ok(match check {
        Ok(caps) => caps.to_string(),
        Err(why) => format!("unusable: {why}"),
    })
}
