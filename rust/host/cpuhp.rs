// SPDX-License-Identifier: GPL-2.0

//! A CPU hotplug "online" callback, registered for as long as the value lives.
//!
//! The kernel crate has no CPU hotplug abstraction; this wraps `__cpuhp_setup_state` and
//! `__cpuhp_remove_state` once.

use kernel::{bindings, error::to_result, ffi, prelude::*};

/// The signature the hotplug core calls, on the CPU coming online.
pub(crate) type StartupFn = unsafe extern "C" fn(cpu: ffi::c_uint) -> ffi::c_int;

/// A dynamic `CPUHP_AP_ONLINE_DYN` state whose startup callback runs on each CPU as it comes
/// online, and on every online CPU at registration.
pub(crate) struct OnlineCallback {
    state: ffi::c_int,
}

impl OnlineCallback {
    /// Registers `startup` and runs it now on every online CPU (on that CPU). If it fails on
    /// any CPU, the registration is undone and the error returned.
    pub(crate) fn register(name: &'static CStr, startup: StartupFn) -> Result<Self> {
        // SAFETY: `name` is a static NUL-terminated string and `startup` a valid function for
        // the hotplug core to call; no teardown callback is needed (rvmx holds no per-CPU
        // state outside its interrupts-off windows).
        let state = unsafe {
            bindings::__cpuhp_setup_state(
                bindings::cpuhp_state_CPUHP_AP_ONLINE_DYN,
                name.as_char_ptr(),
                true,
                Some(startup),
                None,
                false,
            )
        };
        to_result(state)?;
        Ok(Self { state })
    }
}

impl Drop for OnlineCallback {
    fn drop(&mut self) {
        // SAFETY: `state` was returned by a successful `__cpuhp_setup_state` and is removed
        // once. After this returns, the hotplug core no longer calls the startup function.
        unsafe { bindings::__cpuhp_remove_state(self.state as bindings::cpuhp_state, false) };
    }
}
