// SPDX-License-Identifier: GPL-2.0

//! Physical addresses of kernel pages, for the structures the processor reads by physical
//! address (VMXON regions, VMCSs, EPT tables).

use kernel::{bindings, ffi::c_void, page::Page, prelude::*};

use crate::host::helpers;

/// Returns the physical address of `page`.
pub(crate) fn page_phys(page: &Page) -> u64 {
    // SAFETY: `page.as_ptr()` is a valid `struct page` for as long as `page` lives, and
    // `page_to_phys` only computes an address from it.
    unsafe { helpers::rvmx_page_to_phys(page.as_ptr().cast()) }
}

/// The kernel virtual address of `page` (its direct mapping: rvmx's pages are kernel
/// allocations, never highmem on x86-64).
pub(crate) fn page_address(page: &Page) -> *mut u8 {
    // SAFETY: `page.as_ptr()` is a valid `struct page` for as long as `page` lives, and
    // `page_address` only computes an address from it.
    unsafe { helpers::rvmx_page_address(page.as_ptr().cast()).cast() }
}

/// The kernel virtual address of the page-table page at physical address `phys`.
///
/// Only for pages the caller owns (EPT tables): the direct map covers all of RAM.
pub(crate) fn phys_to_virt(phys: u64) -> *mut u64 {
    // SAFETY: `phys_to_virt` only computes an address; dereferencing it is the caller's
    // business (and is valid for pages it owns).
    unsafe { helpers::rvmx_phys_to_virt(phys).cast() }
}

/// Whether the current task's address space has the page at user address `uaddr` (writable,
/// if `write`), found without locks or faults (KVM's `hva_to_pfn_fast`): a cheap probe before
/// costlier lookups that are useless without it.
pub(crate) fn host_has_page(uaddr: u64, write: bool) -> bool {
    // SAFETY: the helper checks `uaddr` itself and takes no reference it does not drop.
    unsafe { helpers::rvmx_host_has_page(uaddr as usize, write) }
}

/// Consecutive pages of the VM owner's address space, pinned only for as long as it takes to
/// map them in EPT. Afterwards the VM's MMU notifier, not a pin, keeps the mapping honest (as in
/// KVM): when the host unmaps, moves or frees a page, the EPT entry goes first. Dropping the
/// value unpins the pages, marking them dirty if they were mapped writable (the guest may write
/// them behind the host's page tables). It may sleep: never dropped under the MMU lock.
pub(crate) struct PinnedRun {
    pages: Pages,
    dirty: bool,
}

// SAFETY: pinned pages may be unpinned from any thread.
unsafe impl Send for PinnedRun {}

/// The pinned pages' `struct page` pointers: in place for one page (an isolated fault, a write
/// to a page mapped read-only), on the heap for a fault-around run, so that the usual single
/// page costs no allocation.
enum Pages {
    One([*mut bindings::page; 1]),
    Many(KVec<*mut bindings::page>),
}

impl Pages {
    /// Room for `count` pointers, all null.
    fn new(count: usize) -> Result<Self, kernel::alloc::AllocError> {
        Ok(match count {
            1 => Pages::One([core::ptr::null_mut()]),
            _ => Pages::Many(KVec::from_elem(core::ptr::null_mut(), count, GFP_KERNEL_ACCOUNT)?),
        })
    }

    fn as_mut_slice(&mut self) -> &mut [*mut bindings::page] {
        match self {
            Pages::One(p) => p,
            Pages::Many(v) => v,
        }
    }

    fn as_slice(&self) -> &[*mut bindings::page] {
        match self {
            Pages::One(p) => p,
            Pages::Many(v) => v,
        }
    }

    /// Keeps the first `n` (the ones pinned; `n` is at most the room, and at least 1).
    fn truncate(&mut self, n: usize) {
        if let Pages::Many(v) = self {
            v.truncate(n);
        }
    }
}

/// Why no page could be pinned.
pub(crate) enum PinError {
    /// Nothing (or nothing writable, for a write) is mapped there: `EFAULT` for the VMM.
    Fault,
    /// A signal arrived while the host was faulting the page in (e.g. a userfaultfd wait):
    /// `KVM_RUN` returns `EINTR`, as KVM's.
    Interrupted,
    /// The page is poisoned (a memory error): the VMM gets SIGBUS, as from KVM.
    Poisoned,
}

impl PinnedRun {
    /// Pins the pages from user address `uaddr` on (up to `count`; writable ones if `write`)
    /// that the host already has, without faulting anything in: KVM's fast path. `None` if
    /// the first is not there.
    pub(crate) fn pin_present(uaddr: u64, count: usize, write: bool) -> Option<Self> {
        let flags = bindings::FOLL_NOFAULT | bindings::FOLL_HONOR_NUMA_FAULT | if write { bindings::FOLL_WRITE } else { 0 };
        let mut pages = Pages::new(count).ok()?;
        let nr = i32::try_from(count).ok()?;
        // SAFETY: `pages` has room for `count` page pointers; the call checks `uaddr` itself.
        let n = unsafe { bindings::pin_user_pages_fast(uaddr as usize, nr, flags, pages.as_mut_slice().as_mut_ptr()) };
        if n <= 0 {
            return None;
        }
        pages.truncate(n as usize);
        Some(Self { pages, dirty: false })
    }

    /// Faults in and pins up to `count` consecutive pages from user address `uaddr` of the
    /// current process (writable if `write`; fewer if the mapping ends or a page cannot be
    /// had), as KVM's slow path does: a signal interrupts the wait, a poisoned page is
    /// reported as such.
    pub(crate) fn pin(uaddr: u64, count: usize, write: bool) -> Result<Self, PinError> {
        let flags = bindings::FOLL_INTERRUPTIBLE | bindings::FOLL_HWPOISON | bindings::FOLL_HONOR_NUMA_FAULT
            | if write { bindings::FOLL_WRITE } else { 0 };
        let mut pages = Pages::new(count).map_err(|_| PinError::Fault)?;
        // SAFETY: `pages` has room for `count` page pointers; the call checks `uaddr` itself.
        let n = unsafe { bindings::pin_user_pages_unlocked(uaddr as usize, count, pages.as_mut_slice().as_mut_ptr(), flags) };
        if n <= 0 {
            let e = Error::from_errno(i32::try_from(n).unwrap_or(0)); // 0 (no page) is EFAULT's
            return Err(if e == EINTR || e == ERESTARTSYS {
                PinError::Interrupted
            } else if e.to_errno().wrapping_neg() == bindings::EHWPOISON as i32 {
                PinError::Poisoned
            } else {
                PinError::Fault
            });
        }
        pages.truncate(n as usize);
        Ok(Self { pages, dirty: false })
    }

    /// How many pages are pinned.
    pub(crate) fn len(&self) -> usize {
        self.pages.as_slice().len()
    }

    /// The physical addresses of the pages, in order.
    pub(crate) fn phys(&self) -> impl Iterator<Item = u64> + '_ {
        // SAFETY: each page is pinned while `self` lives, so it is a valid `struct page`.
        self.pages.as_slice().iter().map(|&p| unsafe { helpers::rvmx_page_to_phys(p.cast()) })
    }

    /// The pages were mapped writable: mark them dirty when they are unpinned.
    pub(crate) fn set_dirty(&mut self) {
        self.dirty = true;
    }
}

impl Drop for PinnedRun {
    fn drop(&mut self) {
        let pages = self.pages.as_mut_slice();
        // SAFETY: each page was pinned once by `pin` and is unpinned once here.
        unsafe { bindings::unpin_user_pages_dirty_lock(pages.as_mut_ptr(), pages.len(), self.dirty) };
    }
}

/// Tells the current task that the guest touched poisoned memory at user address `uaddr`
/// (SIGBUS, `BUS_MCEERR_AR`), as KVM's `kvm_send_hwpoison_signal`: QEMU then injects a
/// machine check into the guest.
pub(crate) fn hwpoison_signal(uaddr: u64) {
    // SAFETY: the current task is alive; the address is only reported in the signal.
    unsafe {
        bindings::send_sig_mceerr(bindings::BUS_MCEERR_AR as i32, uaddr as usize as *mut c_void, 12, kernel::current!().as_ptr())
    };
}
