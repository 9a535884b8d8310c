// SPDX-License-Identifier: GPL-2.0

//! A VM's MMU notifier, KVM's memory model: EPT entries are derived from the VM owner's page
//! tables, and whenever the host changes a mapping behind a slot (munmap, mmap(MAP_FIXED),
//! mprotect, MADV_DONTNEED, fork's copy-on-write, page migration, swapping, KSM, THP) the
//! notifier removes the EPT entries first. The registration is C (`mm/mmu_notifier.c`: Rust-for-
//! Linux has no binding); the callbacks land in [`Vm`].

use kernel::{error::from_err_ptr, ffi::c_void, prelude::*, sync::Arc};

use crate::{host::helpers, mm::guest_memory::GuestMemory};

/// The registration; dropping it unregisters (and drops its reference on the mm).
pub(crate) struct MmuNotifier {
    notifier: *mut c_void,
    /// What the callbacks reach, kept alive until the registration is gone.
    _memory: Arc<GuestMemory>,
}

// SAFETY: the registration may be dropped from any thread in process context.
unsafe impl Send for MmuNotifier {}
// SAFETY: shared references give no access to the pointer.
unsafe impl Sync for MmuNotifier {}

impl MmuNotifier {
    /// Registers a notifier for `memory` on the calling process's address space.
    pub(crate) fn register(memory: Arc<GuestMemory>) -> Result<Self> {
        let ptr: *const GuestMemory = &*memory;
        // SAFETY: `memory` is kept alive by `Self` until the notifier is unregistered; the C
        // side only hands the pointer back to the callbacks below.
        let n = unsafe { helpers::rvmx_mmu_notifier_register(ptr.cast()) };
        Ok(Self { notifier: from_err_ptr(n)?, _memory: memory })
    }
}

impl Drop for MmuNotifier {
    fn drop(&mut self) {
        // SAFETY: registered by `register`, unregistered once here; this waits for callbacks
        // still running, so none runs once `self._memory` goes.
        unsafe { helpers::rvmx_mmu_notifier_unregister(self.notifier) };
    }
}

/// Runs `f` on the guest memory behind a callback's pointer.
///
/// # Safety
///
/// `ptr` is the pointer given to `register`, still registered (so still alive).
unsafe fn with_memory<R>(ptr: *const c_void, f: impl FnOnce(&GuestMemory) -> R) -> R {
    // SAFETY: the caller's promise; the reference does not outlive `f`.
    f(unsafe { &*ptr.cast::<GuestMemory>() })
}

/// `invalidate_range_start`: the host is about to change the mappings of `[start, end)`.
/// It may reschedule only if `blockable`, so it also serves the OOM reaper.
#[no_mangle]
unsafe extern "C" fn rvmx_vm_invalidate_start(ptr: *const c_void, start: usize, end: usize, blockable: bool) -> i32 {
    // SAFETY: called by the registered notifier (mm/mmu_notifier.c) with the pointer it was
    // registered with.
    unsafe { with_memory(ptr, |m| m.invalidate_start(start as u64, end as u64, blockable)) };
    0
}

/// `invalidate_range_end`: the change of `[start, end)` is done.
#[no_mangle]
unsafe extern "C" fn rvmx_vm_invalidate_end(ptr: *const c_void, start: usize, end: usize) {
    // SAFETY: called by the registered notifier (mm/mmu_notifier.c) with the pointer it was
    // registered with.
    unsafe { with_memory(ptr, |m| m.invalidate_end(start as u64, end as u64)) };
}

/// `clear_flush_young` and `clear_young`: whether the guest used host pages of `[start, end)`
/// since the last call; it will have to touch them again to count. Atomic context.
#[no_mangle]
unsafe extern "C" fn rvmx_vm_clear_young(ptr: *const c_void, start: usize, end: usize) -> bool {
    // SAFETY: called by the registered notifier (mm/mmu_notifier.c) with the pointer it was
    // registered with.
    unsafe { with_memory(ptr, |m| m.clear_young(start as u64, end as u64)) }
}

/// `test_young`: whether the guest used host pages of `[start, end)` since the last clear.
/// Atomic context.
#[no_mangle]
unsafe extern "C" fn rvmx_vm_test_young(ptr: *const c_void, start: usize, end: usize) -> bool {
    // SAFETY: called by the registered notifier (mm/mmu_notifier.c) with the pointer it was
    // registered with.
    unsafe { with_memory(ptr, |m| m.test_young(start as u64, end as u64)) }
}

/// `release`: the address space is going away (its owner exited, or the notifier is being
/// unregistered).
#[no_mangle]
unsafe extern "C" fn rvmx_vm_release(ptr: *const c_void) {
    // SAFETY: called by the registered notifier (mm/mmu_notifier.c) with the pointer it was
    // registered with.
    unsafe { with_memory(ptr, |m| m.release()) };
}
