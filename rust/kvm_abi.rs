// SPDX-License-Identifier: GPL-2.0

//! The KVM userspace ABI that `/dev/rvmx` speaks: ioctl numbers, constants and answers.
//!
//! rvmx's ABI *is* KVM's (`include/uapi/linux/kvm.h`, `Documentation/virt/kvm/api.rst`), so
//! unmodified KVM clients work. Pure logic, also compiled and unit-tested on the host.

/// The ioctl "type" byte of every KVM ioctl.
pub const KVMIO: u32 = 0xAE;

/// `KVM_GET_API_VERSION` answers this; clients refuse anything else.
pub const KVM_API_VERSION: isize = 12;

/// Linux `_IOC` encoding (x86): direction in bits 31:30, size 29:16, type 15:8, number 7:0.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (KVMIO << 8) | nr
}
const IOC_NONE: u32 = 0;
const IOC_READ_WRITE: u32 = 3;

/// `_IO(KVMIO, nr)`.
pub const fn io(nr: u32) -> u32 {
    ioc(IOC_NONE, nr, 0)
}
/// `_IOWR(KVMIO, nr, T)` where `T` has `size` bytes.
pub const fn iowr(nr: u32, size: usize) -> u32 {
    ioc(IOC_READ_WRITE, nr, size)
}

// System ioctls (on the `/dev/rvmx` fd).
/// Returns [`KVM_API_VERSION`]; the argument must be 0.
pub const KVM_GET_API_VERSION: u32 = io(0x00);
/// Creates a VM and returns its fd.
pub const KVM_CREATE_VM: u32 = io(0x01);
/// Lists the MSRs saved and restored by `KVM_GET/SET_MSRS` (`struct kvm_msr_list`, 4 bytes).
pub const KVM_GET_MSR_INDEX_LIST: u32 = iowr(0x02, 4);
/// Asks whether a capability is available; 0 means no, a positive value yes (or a limit).
pub const KVM_CHECK_EXTENSION: u32 = io(0x03);
/// Size of the vCPU fd's mmap area; the argument must be 0.
pub const KVM_GET_VCPU_MMAP_SIZE: u32 = io(0x04);
/// The CPUID entries a guest may be given (`struct kvm_cpuid2`, 8 bytes).
pub const KVM_GET_SUPPORTED_CPUID: u32 = iowr(0x05, 8);

/// Page offset of the PIO data page in the vCPU mmap area (`KVM_PIO_PAGE_OFFSET`).
pub const KVM_PIO_PAGE_OFFSET: usize = 1;
/// Page offset of the coalesced-MMIO ring (`KVM_COALESCED_MMIO_PAGE_OFFSET`).
pub const KVM_COALESCED_MMIO_PAGE_OFFSET: usize = 2;

/// Pages in a vCPU mmap area: `kvm_run`, the PIO data page, and the coalesced-MMIO ring page.
///
/// rvmx does not offer `KVM_CAP_COALESCED_MMIO` (that page stays zero), but it reports KVM's x86
/// size so that a client's mappings have the same layout on `/dev/kvm` and `/dev/rvmx`.
pub const VCPU_MMAP_PAGES: usize = KVM_COALESCED_MMIO_PAGE_OFFSET + 1;

/// Size in bytes of the vCPU mmap area for `page_size`-byte pages.
pub const fn vcpu_mmap_size(page_size: usize) -> usize {
    VCPU_MMAP_PAGES * page_size
}

/// The capabilities rvmx provides, with the value `KVM_CHECK_EXTENSION` returns for each.
///
/// Honest by construction: a capability appears here only once the feature behind it works.
/// The system fd exists but VMs do not yet, so no capability is offered so far.
pub const CAPABILITIES: &[(usize, isize)] = &[];

/// The answer to `KVM_CHECK_EXTENSION(cap)`: like KVM, 0 for anything unknown (never an error).
pub fn check_extension(cap: usize) -> isize {
    CAPABILITIES.iter().find(|(c, _)| *c == cap).map_or(0, |(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers as `<linux/kvm.h>` defines them (checked against the C header's values).
    #[test]
    fn ioctl_numbers_match_linux() {
        assert_eq!(KVM_GET_API_VERSION, 0xae00);
        assert_eq!(KVM_CREATE_VM, 0xae01);
        assert_eq!(KVM_GET_MSR_INDEX_LIST, 0xc004_ae02);
        assert_eq!(KVM_CHECK_EXTENSION, 0xae03);
        assert_eq!(KVM_GET_VCPU_MMAP_SIZE, 0xae04);
        assert_eq!(KVM_GET_SUPPORTED_CPUID, 0xc008_ae05);
    }

    #[test]
    fn mmap_size_is_kvms_x86_size() {
        assert_eq!(vcpu_mmap_size(4096), 12288);
    }

    #[test]
    fn unknown_extensions_answer_zero() {
        for cap in [0, 1, 7, 1000, usize::MAX] {
            assert_eq!(check_extension(cap), 0);
        }
    }
}
