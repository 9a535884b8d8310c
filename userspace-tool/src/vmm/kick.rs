//! Getting a vCPU thread out of KVM_RUN: [`KICK_SIGNAL`], sent by another thread or by the
//! thread's own timer, sets `immediate_exit` in its `kvm_run`, so that KVM_RUN returns EINTR
//! whether the signal came during the call or just before it.

use std::cell::Cell;

use kvm_bindings::kvm_run;
use kvm_ioctls::VcpuFd;

use crate::error::{Error, Result};

/// The signal that makes a vCPU thread leave KVM_RUN (its handler sets `immediate_exit`).
pub const KICK_SIGNAL: libc::c_int = libc::SIGUSR1;

thread_local! {
    /// This thread's `kvm_run`, for the handler (const-initialized: no lazy setup in it).
    static RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int) {
    let run = RUN.with(|r| r.get());
    if !run.is_null() {
        // SAFETY: `run` is this thread's mapped kvm_run while it is set (Timer::drop
        // clears it before the vCPU goes away); a volatile store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Installs the handler, without SA_RESTART so that KVM_RUN returns.
pub fn install() -> Result<()> {
    // SAFETY: a zeroed sigaction with a handler that only stores a byte is valid.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_kick as *const () as usize;
    // SAFETY: installs a handler for KICK_SIGNAL; `sa` is initialized.
    if unsafe { libc::sigaction(KICK_SIGNAL, &sa, std::ptr::null_mut()) } < 0 {
        return Err(Error::Os("sigaction", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A one-shot timer that sends [`KICK_SIGNAL`] to the thread that created it.
pub struct Timer(libc::timer_t);

impl Timer {
    /// The calling thread's timer; `vcpu`'s kvm_run becomes the handler's target.
    pub fn new(vcpu: &mut VcpuFd) -> Result<Self> {
        RUN.with(|r| r.set(vcpu.get_kvm_run()));
        // SAFETY: a zeroed sigevent is valid; the fields that matter are set below.
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = KICK_SIGNAL;
        // SAFETY: gettid has no preconditions.
        sev.sigev_notify_thread_id = unsafe { libc::syscall(libc::SYS_gettid) } as libc::c_int;
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `sev` and `id` are valid for the call.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id) } < 0 {
            return Err(Error::Os("timer_create", std::io::Error::last_os_error()));
        }
        Ok(Timer(id))
    }

    /// Fires `ns` from now (at least 1 µs), or never.
    pub fn at(&self, ns: Option<u64>) {
        let ns = ns.map_or(0, |n| n.max(1000));
        let value = libc::timespec { tv_sec: (ns / 1_000_000_000) as _, tv_nsec: (ns % 1_000_000_000) as _ };
        let t = libc::itimerspec { it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
        // SAFETY: `self.0` is a live timer and `t` a valid itimerspec.
        unsafe { libc::timer_settime(self.0, 0, &t, std::ptr::null_mut()) };
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a live timer, deleted once.
        unsafe { libc::timer_delete(self.0) };
        RUN.with(|r| r.set(std::ptr::null_mut()));
    }
}
