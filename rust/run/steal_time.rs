// SPDX-License-Identifier: GPL-2.0

//! The vCPU's steal-time structure in guest memory (`MSR_KVM_STEAL_TIME`, rules in
//! `logic/steal_time.rs`), brought up to date before the guest runs, outside the window (the
//! writes may fault), as KVM's `record_steal_time`.

use crate::{
    host::clock,
    kvm::vm::Vm,
    logic::{memslot_rules::AddressSpace, steal_time::{offset, versions}},
    run::state::VcpuState,
};

/// Adds the time the vCPU's thread waited for a CPU since the last update to the structure,
/// when asked for (an MSR write, a new `KVM_RUN`) or when that time grew. A structure outside
/// guest RAM is left alone, as KVM leaves one it cannot map.
pub(crate) fn sync(st: &mut VcpuState, vm: &Vm) {
    // Guests without steal time stop here: this runs before every window.
    let Some(gpa) = st.steal.gpa() else { return };
    let Some(run_delay) = clock::run_delay() else { return };
    if !st.steal.due(run_delay) {
        return;
    }
    st.steal.update = false;
    let mut mem = vm.memory(AddressSpace::Guest);
    // Not preempted now (KVM clears it at each update).
    if mem.write(gpa.wrapping_add(offset::PREEMPTED), &[0]).is_err() {
        return;
    }
    // `steal` then `version`, read together.
    let mut head = [0u8; 12];
    if mem.read(gpa.wrapping_add(offset::STEAL), &mut head).is_err() {
        return;
    }
    let [s0, s1, s2, s3, s4, s5, s6, s7, v0, v1, v2, v3] = head;
    let (odd, even) = versions(u32::from_le_bytes([v0, v1, v2, v3]));
    let _ = mem.write(gpa.wrapping_add(offset::VERSION), &odd.to_le_bytes());
    let steal = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]).wrapping_add(run_delay.wrapping_sub(st.steal.last_run_delay));
    let _ = mem.write(gpa.wrapping_add(offset::STEAL), &steal.to_le_bytes());
    st.steal.last_run_delay = run_delay;
    // Closed even if the middle failed, so that the guest never waits on an odd version.
    let _ = mem.write(gpa.wrapping_add(offset::VERSION), &even.to_le_bytes());
}
