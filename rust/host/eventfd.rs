// SPDX-License-Identifier: GPL-2.0

//! A counted reference to an eventfd's context: what `KVM_IOEVENTFD` signals on a guest write
//! and `KVM_IRQFD`'s resampler signals when a level-triggered interrupt is acknowledged. The
//! `kernel` crate has no eventfd abstraction.

use core::ptr::NonNull;
use kernel::{bindings, error::from_err_ptr, prelude::*};

pub(crate) struct EventFd(NonNull<bindings::eventfd_ctx>);

// SAFETY: an eventfd context is reference-counted and may be signalled and put from any thread.
unsafe impl Send for EventFd {}
// SAFETY: `&EventFd` only signals or compares, and `eventfd_signal` takes the context's own lock.
unsafe impl Sync for EventFd {}

impl EventFd {
    /// The eventfd open as `fd` in the calling process: `EBADF` if there is none, `EINVAL` if
    /// it is not an eventfd.
    pub(crate) fn get(fd: i32) -> Result<Self> {
        // SAFETY: the callee looks `fd` up in the current task's table and checks it.
        let ctx = from_err_ptr(unsafe { bindings::eventfd_ctx_fdget(fd) })?;
        NonNull::new(ctx).map(Self).ok_or(EINVAL)
    }

    /// Adds one to its count and wakes its waiters. Any context (the context's lock is taken
    /// with interrupts saved).
    pub(crate) fn signal(&self) {
        // SAFETY: we hold a reference to the context. (`eventfd_signal` is this, inline.)
        unsafe { bindings::eventfd_signal_mask(self.0.as_ptr(), 0) }
    }

    /// The context, for identity comparisons only.
    pub(crate) fn context(&self) -> *const c_void {
        self.0.as_ptr().cast_const().cast()
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: the reference taken by `get`, dropped once.
        unsafe { bindings::eventfd_ctx_put(self.0.as_ptr()) }
    }
}
