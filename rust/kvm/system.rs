// SPDX-License-Identifier: GPL-2.0

//! `/dev/rvmx`: the system fd, answering KVM's system ioctls exactly as `/dev/kvm` does.

use kernel::{
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    page::PAGE_SIZE,
    prelude::*,
    uaccess::{UserPtr, UserSlice},
};

use crate::{
    host::uaccess::user_field,
    logic::cpuid_table::{self, CpuidEntry, GuestControls},
    logic::kvm_abi::{self, *},
    kvm::vm::Vm,
    vmx::operation::Vmx,
    host::x86,
};

/// `KVM_GET_MSR_INDEX_LIST`: like KVM, the count is written back, then `E2BIG` if the
/// caller's array is smaller.
/// IA32_SPEC_CTRL is listed where this CPU can read it (KVM's `kvm_probe_msr_to_save`).
fn get_msr_index_list(arg: usize) -> Result<isize> {
    use crate::logic::{arch::msr::SPEC_CTRL, msr_rules::INDEX_LIST};
    let mut list = [SPEC_CTRL; INDEX_LIST.len() + 1];
    for (to, from) in list.iter_mut().zip(INDEX_LIST.iter()) {
        *to = *from;
    }
    let spec_ctrl = x86::rdmsr_safe(SPEC_CTRL).is_some();
    write_msr_list(arg, if spec_ctrl { &list } else { &INDEX_LIST })
}

/// Feature MSRs (`KVM_GET_MSR_FEATURE_INDEX_LIST`, read with `KVM_GET_MSRS` on this fd):
/// values userspace may give a vCPU: the microcode revision (the host's), the
/// ARCH_CAPABILITIES a guest gets on this host, and PLATFORM_INFO's CPUID faulting. KVM also
/// lists PERF_CAPABILITIES and nested VMX's, which rvmx does not emulate.
const FEATURE_MSRS: [u32; 3] = [
    crate::logic::arch::msr::ARCH_CAPABILITIES,
    crate::logic::arch::msr::UCODE_REV,
    crate::logic::arch::msr::PLATFORM_INFO,
];

/// `KVM_GET_MSRS` on the system fd: feature MSR values, stopping at the first index that is
/// not one (KVM).
fn get_feature_msrs(arg: usize) -> Result<isize> {
    let arch_capabilities = Vmx::get().ok_or(ENODEV)?.mitigations().for_guests().arch_capabilities;
    crate::cpu::msr::for_each_entry(arg, true, |e| {
        let v = match e.index {
            crate::logic::arch::msr::ARCH_CAPABILITIES => Some(arch_capabilities),
            crate::logic::arch::msr::UCODE_REV => crate::host::x86::rdmsr_safe(e.index),
            crate::logic::arch::msr::PLATFORM_INFO => Some(crate::logic::msr_rules::PLATFORM_INFO_CPUID_FAULT),
            _ => None,
        };
        v.map(|v| e.data = v).is_some()
    })
}

/// Writes `list` as a `struct kvm_msr_list`: the count, then the indices if the caller's
/// array holds them (`E2BIG` otherwise), as KVM.
fn write_msr_list(arg: usize, list: &[u32]) -> Result<isize> {
    let (mut reader, mut writer) = UserSlice::new(UserPtr::from_addr(arg), 4).reader_writer();
    let n: u32 = reader.read()?;
    writer.write(&(list.len() as u32))?;
    if (n as usize) < list.len() {
        return Err(E2BIG);
    }
    let mut w = UserSlice::new(UserPtr::from_addr(user_field(arg, 4)?), size_of_val(list)).writer();
    for msr in list {
        w.write(msr)?;
    }
    Ok(0)
}

/// `KVM_GET_SUPPORTED_CPUID`: the host's CPUID filtered to what rvmx gives guests. Like KVM:
/// `E2BIG` if the caller's array is too small (nent unchanged), else nent is set.
fn get_supported_cpuid(arg: usize) -> Result<isize> {
    let vmx = Vmx::get().ok_or(ENODEV)?;
    let caps = vmx.caps();
    let ctl = GuestControls {
        invpcid: caps.procbased2.allows(crate::logic::vmx_controls::proc2::ENABLE_INVPCID),
        rdtscp: caps.procbased2.allows(crate::logic::vmx_controls::proc2::ENABLE_RDTSCP),
        xfeatures: vmx.fpu().xcr0,
        speculation: {
            let g = vmx.mitigations().for_guests();
            let sc = g.spec_ctrl;
            // KVM's kvm_set_cpu_caps: the host's controls, Intel's and AMD's bits for each;
            // only with the MSR itself, which rvmx switches only then.
            cpuid_table::Speculation {
                ibpb: g.ibpb,
                flush_l1d: g.flush_l1d,
                md_clear: g.md_clear,
                spec_ctrl: sc.msr && sc.intel,
                ibrs: sc.msr && sc.ibrs,
                stibp: sc.msr && sc.stibp,
                ssbd: sc.msr && sc.ssbd,
                ssb_no: g.ssb_no,
                ibpb_ret: g.ibpb && sc.intel && !sc.eibrs_pbrsb,
            }
        },
        // The split irqchip's local APIC emulates it, whatever the host has (as KVM).
        x2apic: true,
        steal_time: crate::host::clock::run_delay().is_some(),
    };
    let mut table = KVec::with_capacity(cpuid_table::MAX_ENTRIES, GFP_KERNEL_ACCOUNT)?;
    table.resize(cpuid_table::MAX_ENTRIES, CpuidEntry::default(), GFP_KERNEL_ACCOUNT)?;
    let n = cpuid_table::supported(x86::cpuid_count, ctl, &mut table);
    let (mut reader, mut writer) = UserSlice::new(UserPtr::from_addr(arg), CPUID2_HEADER).reader_writer();
    let nent: u32 = reader.read()?;
    if nent < 1 || (nent as usize) < n {
        return Err(E2BIG);
    }
    writer.write(&(n as u32))?;
    let table = table.get(..n).ok_or(E2BIG)?;
    let mut entries = UserSlice::new(UserPtr::from_addr(user_field(arg, CPUID2_HEADER)?), size_of_val(table)).writer();
    for e in table {
        entries.write(e)?;
    }
    Ok(0)
}

/// An open `/dev/rvmx`. Like KVM's system fd, it carries no state of its own.
pub(crate) struct SystemFd;

#[vtable]
impl MiscDevice for SystemFd {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        Ok(KBox::new(SystemFd, GFP_KERNEL_ACCOUNT)?)
    }

    fn ioctl(_me: &SystemFd, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            KVM_GET_API_VERSION if arg == 0 => Ok(KVM_API_VERSION),
            KVM_CHECK_EXTENSION => Ok(kvm_abi::check_extension(arg)),
            KVM_CREATE_VM => Vm::create(arg),
            KVM_GET_SUPPORTED_CPUID => get_supported_cpuid(arg),
            KVM_GET_MSR_INDEX_LIST => get_msr_index_list(arg),
            KVM_GET_MSR_FEATURE_INDEX_LIST => write_msr_list(arg, &FEATURE_MSRS),
            KVM_GET_MSRS => get_feature_msrs(arg),
            KVM_X86_GET_MCE_CAP_SUPPORTED => {
                crate::host::uaccess::write_user(arg, &crate::logic::mce::SUPPORTED_CAP)?;
                Ok(0)
            }
            KVM_GET_VCPU_MMAP_SIZE if arg == 0 => Ok(kvm_abi::vcpu_mmap_size(PAGE_SIZE) as isize),
            // KVM answers EINVAL to a non-zero argument and to every ioctl it does not know
            // (kvm_dev_ioctl -> kvm_arch_dev_ioctl), never ENOTTY.
            _ => Err(EINVAL),
        }
    }
}
