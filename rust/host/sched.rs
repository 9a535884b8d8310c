// SPDX-License-Identifier: GPL-2.0

//! The scheduler call the kernel crate lacks: `cond_resched()` (a macro in C, `host/helpers.c`).

use crate::host::helpers;

/// Lets the scheduler run another task if one is waiting. Process context, no spinlock held.
pub(crate) fn cond_resched() {
    // SAFETY: the caller is in process context and holds no spinlock (the function's contract);
    // `cond_resched` may sleep there.
    unsafe { helpers::rvmx_cond_resched() };
}
