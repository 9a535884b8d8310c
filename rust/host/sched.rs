// SPDX-License-Identifier: GPL-2.0

//! The scheduler calls the kernel crate lacks: `cond_resched()` (a macro in C, `host/helpers.c`)
//! and the reschedule IPI that kicks another CPU out of the guest.

use crate::host::helpers;

/// Lets the scheduler run another task if one is waiting. Process context, no spinlock held.
pub(crate) fn cond_resched() {
    // SAFETY: the caller is in process context and holds no spinlock (the function's contract);
    // `cond_resched` may sleep there.
    unsafe { helpers::rvmx_cond_resched() };
}

/// Whether this task may go on polling (busy-waiting) on its CPU: no other task waits to run
/// there (KVM's `kvm_vcpu_can_poll`).
pub(crate) fn may_poll() -> bool {
    // SAFETY: both checks only read this CPU's run queue and the current task's flags.
    unsafe { helpers::rvmx_may_poll() }
}

/// Makes CPU `cpu` leave the guest it runs, if it runs one: a reschedule IPI (none to this
/// CPU or to one offline). Any context.
pub(crate) fn kick_cpu(cpu: u32) {
    let Ok(cpu) = i32::try_from(cpu) else { return };
    // SAFETY: `smp_send_reschedule` may be sent from any context to any online CPU, which
    // the helper checks with preemption off; a spurious one is harmless (the scheduler
    // finds nothing to do).
    unsafe { helpers::rvmx_kick_cpu(cpu) };
}
