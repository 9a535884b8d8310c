// SPDX-License-Identifier: GPL-2.0

//! The host kernel and processor as rvmx needs them, where the `kernel` crate has no
//! abstraction: privileged instructions, physical addresses, CPU hotplug, `cond_resched()`,
//! a killable mutex lock.
//! Each wrapped once, here, so the layers above contain no inline assembly.

pub(crate) mod clock;
pub(crate) mod cpuhp;
pub(crate) mod eventfd;
pub(crate) mod helpers;
pub(crate) mod lock;
pub(crate) mod mem;
pub(crate) mod sched;
pub(crate) mod uaccess;
pub(crate) mod x86;
