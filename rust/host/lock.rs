// SPDX-License-Identifier: GPL-2.0

//! Taking a mutex killably, as KVM takes a vCPU's for each of its ioctls
//! (`mutex_lock_killable`): the `kernel` crate's `Mutex` has only the uninterruptible `lock`.
//! A thread that waits while the vCPU's `KVM_RUN` sleeps in a halted guest then waits in
//! `TASK_KILLABLE`, which the hung-task detector leaves alone (an uninterruptible wait of two
//! minutes is reported, and with `hung_task_panic` panics the host), and a fatal signal ends
//! its wait.

use kernel::{
    prelude::*,
    sync::{lock::Guard, Mutex, MutexGuard},
};

use super::helpers::rvmx_mutex_lock_killable;

/// Locks `m`, or `EINTR` if a fatal signal comes first.
pub(crate) fn lock_killable<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    let raw = core::ptr::from_ref(m).cast_mut().cast::<kernel::bindings::mutex>();
    // SAFETY: `Lock` is `repr(C)` with the kernel's `struct mutex` as its first field and only
    // zero-sized fields before the data (the layout `Lock::from_raw` relies on); the mutex is
    // initialised because `m` exists.
    if unsafe { rvmx_mutex_lock_killable(raw) } != 0 {
        return Err(EINTR);
    }
    // SAFETY: this task now owns the mutex; a `Mutex`'s guard state is `()`.
    Ok(unsafe { Guard::new(m, ()) })
}
