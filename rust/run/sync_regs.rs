// SPDX-License-Identifier: GPL-2.0

//! `KVM_CAP_SYNC_REGS`: register sets exchanged through `kvm_run` instead of the GET/SET
//! ioctls. At the start of `KVM_RUN`, the sets userspace marked in `kvm_dirty_regs` are taken
//! in, checked as the ioctls check them; at its end, those marked in `kvm_valid_regs` are
//! stored (KVM's `sync_regs`/`store_regs`). Each set is copied out of the shared page once,
//! so a thread that rewrites it meanwhile changes nothing that was checked.

use kernel::prelude::*;

use crate::{
    kvm::vm::Vm,
    logic::kvm_run::sync_regs::{EVENTS, REGS, SREGS, VALID},
    run::{kvm_run::KvmRun, state::{RunState, VcpuState}},
};

/// Before the run: `EINVAL` for a bit of no set in either mask, or a set KVM would refuse.
// Inlined: most VMMs sync nothing, and that is one test.
#[inline(always)]
pub(crate) fn take_in(st: &mut VcpuState, run: &KvmRun, vm: &Vm) -> Result {
    match run.sync_masks() {
        (0, 0) => Ok(()),
        (valid, dirty) => take_sets_in(st, run, vm, valid, dirty),
    }
}

// Out of line: its stack frame exists only while it runs, not under every KVM_RUN.
#[inline(never)]
fn take_sets_in(st: &mut VcpuState, run: &KvmRun, vm: &Vm, valid: u64, dirty: u64) -> Result {
    if (valid | dirty) & !VALID != 0 {
        return Err(EINVAL);
    }
    if dirty & REGS != 0 {
        st.set_user_regs(run.synced_regs().ok_or(EINVAL)?);
        run.clear_dirty(REGS);
    }
    if dirty & SREGS != 0 {
        st.set_user_sregs(run.synced_sregs().ok_or(EINVAL)?, vm).map_err(|()| EINVAL)?;
        run.clear_dirty(SREGS);
    }
    if dirty & EVENTS != 0 {
        st.set_user_events(&run.synced_events().ok_or(EINVAL)?).map_err(|()| EINVAL)?;
        run.clear_dirty(EVENTS);
    }
    Ok(())
}

/// After the run, whatever its outcome: the sets `kvm_valid_regs` asks for. The segment
/// registers are read back from the VMCS for it; if VMX cannot be entered for that, the
/// error (the run's own error comes first).
// Inlined: most VMMs sync nothing, and that is one test.
#[inline(always)]
pub(crate) fn store(st: &mut RunState, run: &KvmRun) -> Result {
    match run.sync_masks().0 {
        0 => Ok(()),
        valid => store_sets(st, run, valid),
    }
}

// Out of line: its stack frame exists only while it runs, not under every KVM_RUN.
#[inline(never)]
fn store_sets(st: &mut RunState, run: &KvmRun, valid: u64) -> Result {
    if valid & REGS != 0 {
        run.put_synced_regs(st.regs);
    }
    let synced = match valid & SREGS {
        0 => Ok(()),
        _ => st.sync_sregs().map(|()| run.put_synced_sregs(st.user_sregs())),
    };
    if valid & EVENTS != 0 {
        let events = st.user_events();
        run.put_synced_events(events);
    }
    synced
}
