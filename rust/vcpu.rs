// SPDX-License-Identifier: GPL-2.0

//! A vCPU: its architectural state, the shared `kvm_run` pages, and the vCPU fd's ioctls.
//! Ioctls on one vCPU are serialised by `state`'s mutex, like KVM's `vcpu->mutex`.

use kernel::{
    mm::virt::VmaNew,
    new_mutex,
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::{Arc, ArcBorrow, Mutex},
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

use crate::{
    fd::FdObject,
    kvm_abi::{self, *},
    vcpu_state,
    vm::Vm,
};

// SAFETY: plain `repr(C)` structs of integers, valid for any bit pattern, with no padding
// (their sizes equal the sum of their fields, checked against kvm-bindings on the host).
unsafe impl FromBytes for Regs {}
// SAFETY: as above.
unsafe impl AsBytes for Regs {}
// SAFETY: as above.
unsafe impl FromBytes for Sregs {}
// SAFETY: as above.
unsafe impl AsBytes for Sregs {}
// SAFETY: as above.
unsafe impl FromBytes for UserspaceMemoryRegion {}

/// Register state while the vCPU is not running.
struct VcpuState {
    regs: Regs,
    sregs: Sregs,
}

#[pin_data]
pub(crate) struct Vcpu {
    vm: Arc<Vm>,
    id: u32,
    /// The vCPU mmap area: `kvm_run`, the PIO data page, the (unused) coalesced-MMIO page.
    pages: [Page; kvm_abi::VCPU_MMAP_PAGES],
    #[pin]
    state: Mutex<VcpuState>,
}

impl Vcpu {
    pub(crate) fn new(vm: Arc<Vm>, id: u32) -> Result<Arc<Self>> {
        let page = || Page::alloc_page(GFP_KERNEL | __GFP_ZERO);
        let pages = [page()?, page()?, page()?];
        let sregs = vcpu_state::reset_sregs(id);
        Ok(Arc::pin_init(
            pin_init!(Vcpu {
                vm,
                id,
                pages,
                state <- new_mutex!(VcpuState {
                    regs: vcpu_state::reset_regs(),
                    sregs,
                }),
            }),
            GFP_KERNEL,
        )?)
    }

    fn set_sregs(&self, sregs: Sregs) -> Result {
        // Until KVM_SET_CPUID2 gives the guest CPUID.LM and .NX, KVM refuses long mode and
        // NXE, and so does rvmx.
        let efer_ok = vcpu_state::efer_allowed(false, false);
        if !vcpu_state::sregs_valid(&sregs, efer_ok) || vcpu_state::pending_interrupt(&sregs).is_err() {
            return Err(EINVAL);
        }
        self.state.lock().sregs = sregs;
        Ok(())
    }
}

/// A reader of a `T` at userspace address `arg`.
fn read_user<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>()).reader().read()
}

/// Writes `value` to userspace address `arg`.
fn write_user<T: AsBytes>(arg: usize, value: &T) -> Result {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>()).writer().write(value)
}

impl FdObject for Vcpu {
    const NAME: &'static CStr = c"kvm-vcpu";
    const HAS_MMAP: bool = true;

    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.vm.check_owner()?;
        match cmd {
            KVM_GET_REGS => write_user(arg, &this.state.lock().regs)?,
            KVM_SET_REGS => {
                let mut regs: Regs = read_user(arg)?;
                regs.rflags |= vcpu_state::RFLAGS_FIXED;
                this.state.lock().regs = regs;
            }
            KVM_GET_SREGS => write_user(arg, &this.state.lock().sregs)?,
            KVM_SET_SREGS => this.set_sregs(read_user(arg)?)?,
            // KVM's vCPU fd answers EINVAL to requests it does not know.
            _ => return Err(EINVAL),
        }
        Ok(0)
    }

    /// Maps (part of) the vCPU area: page 0 `kvm_run`, page 1 PIO data, page 2 reserved.
    fn mmap(this: ArcBorrow<'_, Self>, vma: &VmaNew) -> Result {
        // SAFETY: `vma` is a valid VMA under construction; `vm_pgoff` is plain data.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
        let npages = (vma.end() - vma.start()) / PAGE_SIZE;
        let end = pgoff.checked_add(npages).ok_or(EINVAL)?;
        if end > this.pages.len() {
            return Err(EINVAL);
        }
        let mixed = vma.set_mixedmap();
        for (i, page) in this.pages[pgoff..end].iter().enumerate() {
            mixed.vm_insert_page(vma.start() + i * PAGE_SIZE, page)?;
        }
        Ok(())
    }
}

impl Vcpu {
    /// The vCPU's number, as given to `KVM_CREATE_VCPU`.
    #[allow(dead_code)]
    pub(crate) fn id(&self) -> u32 {
        self.id
    }
}
