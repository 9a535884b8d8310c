// SPDX-License-Identifier: GPL-2.0

//! A VM: its memory slots and vCPUs, reached through a VM fd (`KVM_CREATE_VM`).

use kernel::{
    current, new_mutex,
    prelude::*,
    sync::{Arc, ArcBorrow, Mutex},
    uaccess::{UserPtr, UserSlice},
};

use crate::{
    fd::{self, FdObject},
    kvm_abi::{self, *},
    memslot_rules::{self, Change, Refusal, Slot},
    vcpu::Vcpu,
};

/// The identity of the calling process's address space, as KVM records `kvm->mm`.
pub(crate) fn current_mm() -> usize {
    current!().mm().map_or(0, |mm| mm as *const _ as usize)
}

#[pin_data]
pub(crate) struct Vm {
    /// The creator's address space: KVM refuses VM and vCPU ioctls from any other (`EIO`),
    /// e.g. from a forked child, because guest memory is the creator's.
    mm: usize,
    #[pin]
    inner: Mutex<VmInner>,
}

struct VmInner {
    slots: KVec<Slot>,
    vcpu_ids: KVec<u32>,
}

impl Vm {
    /// `KVM_CREATE_VM`: only type 0 (the default x86 VM) exists.
    pub(crate) fn create(vm_type: usize) -> Result<isize> {
        if vm_type != 0 {
            return Err(EINVAL);
        }
        let vm = Arc::pin_init(
            pin_init!(Vm {
                mm: current_mm(),
                inner <- new_mutex!(VmInner {
                    slots: KVec::new(),
                    vcpu_ids: KVec::new(),
                }),
            }),
            GFP_KERNEL,
        )?;
        Ok(fd::install(vm)? as isize)
    }

    /// Fails with `EIO` unless called from the VM creator's address space (as KVM does).
    pub(crate) fn check_owner(&self) -> Result {
        if current_mm() != self.mm {
            return Err(EIO);
        }
        Ok(())
    }

    fn set_memory_region(&self, arg: usize) -> Result<isize> {
        let region: UserspaceMemoryRegion =
            UserSlice::new(UserPtr::from_addr(arg), size_of::<UserspaceMemoryRegion>())
                .reader()
                .read()?;
        let mut inner = self.inner.lock();
        match memslot_rules::decide(&region, &inner.slots) {
            Err(Refusal::Invalid) => Err(EINVAL),
            Err(Refusal::Overlap) => Err(EEXIST),
            Ok(Change::Unchanged) => Ok(0),
            Ok(Change::Create(slot)) => {
                inner.slots.push(slot, GFP_KERNEL)?;
                Ok(0)
            }
            Ok(Change::Delete(id)) => {
                inner.slots.retain(|s| s.id != id);
                Ok(0)
            }
            Ok(Change::Move(slot)) => {
                for s in inner.slots.iter_mut().filter(|s| s.id == slot.id) {
                    *s = slot;
                }
                Ok(0)
            }
        }
    }

    fn create_vcpu(this: ArcBorrow<'_, Self>, id: usize) -> Result<isize> {
        let id = u32::try_from(id).map_err(|_| EINVAL)?;
        if id >= MAX_VCPU_ID {
            return Err(EINVAL);
        }
        {
            let mut inner = this.inner.lock();
            if inner.vcpu_ids.iter().any(|v| *v == id) {
                return Err(EEXIST);
            }
            if inner.vcpu_ids.len() >= MAX_VCPUS {
                return Err(EINVAL);
            }
            inner.vcpu_ids.push(id, GFP_KERNEL)?;
        }
        let vcpu = Vcpu::new(this.into(), id).and_then(|v| Ok(fd::install(v)? as isize));
        if vcpu.is_err() {
            this.inner.lock().vcpu_ids.retain(|v| *v != id);
        }
        vcpu
    }
}

impl FdObject for Vm {
    const NAME: &'static CStr = c"kvm-vm";

    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.check_owner()?;
        match cmd {
            KVM_CREATE_VCPU => Vm::create_vcpu(this, arg),
            KVM_SET_USER_MEMORY_REGION => this.set_memory_region(arg),
            KVM_CHECK_EXTENSION => Ok(kvm_abi::check_extension(arg)),
            // With unrestricted guest rvmx needs neither the real-mode TSS nor the identity map
            // that KVM keeps for CPUs without it: both are checked as KVM checks them, then
            // not used.
            KVM_SET_TSS_ADDR => {
                // The three pages must fit below 4 GiB.
                if arg as u64 > (u32::MAX as u64 + 1) - 3 * 4096 {
                    return Err(EINVAL);
                }
                Ok(0)
            }
            KVM_SET_IDENTITY_MAP_ADDR => {
                if !this.inner.lock().vcpu_ids.is_empty() {
                    return Err(EINVAL); // only before the first vCPU
                }
                let _addr: u64 = UserSlice::new(UserPtr::from_addr(arg), 8).reader().read()?;
                Ok(0)
            }
            // KVM's VM fd answers ENOTTY to requests it does not know (kvm_arch_vm_ioctl).
            _ => Err(ENOTTY),
        }
    }
}
