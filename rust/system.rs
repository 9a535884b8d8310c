// SPDX-License-Identifier: GPL-2.0

//! `/dev/rvmx`: the system fd, answering KVM's system ioctls exactly as `/dev/kvm` does.

use kernel::{
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    page::PAGE_SIZE,
    prelude::*,
};

use crate::{
    kvm_abi::{self, *},
    vm::Vm,
};

/// An open `/dev/rvmx`. Like KVM's system fd, it carries no state of its own.
pub(crate) struct SystemFd;

#[vtable]
impl MiscDevice for SystemFd {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        Ok(KBox::new(SystemFd, GFP_KERNEL)?)
    }

    fn ioctl(_me: &SystemFd, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            KVM_GET_API_VERSION if arg == 0 => Ok(KVM_API_VERSION),
            KVM_CHECK_EXTENSION => Ok(kvm_abi::check_extension(arg)),
            KVM_CREATE_VM => Vm::create(arg),
            KVM_GET_VCPU_MMAP_SIZE if arg == 0 => Ok(kvm_abi::vcpu_mmap_size(PAGE_SIZE) as isize),
            // KVM answers EINVAL to a non-zero argument and to every ioctl it does not know
            // (kvm_dev_ioctl -> kvm_arch_dev_ioctl), never ENOTTY.
            _ => Err(EINVAL),
        }
    }
}
