// SPDX-License-Identifier: GPL-2.0

//! `KVM_RUN`: the loop that runs a vCPU until userspace has work to do.
//!
//! Each turn opens one interrupts-off VMX window: VMPTRLD, host and guest state into the VMCS,
//! INVEPT, then enter the guest as many times as exits can be handled in the kernel. The
//! window closes (guest state stored, VMCLEAR, host tables restored, VMXOFF) for anything that
//! needs the host: an interrupt, faulting in guest memory, or a return to userspace. Between
//! windows the loop checks for signals and reschedules, so a spinning guest never wedges a CPU.

use kernel::{current, prelude::*, time::Instant};

use crate::{
    host::sched::cond_resched,
    kvm::vm::Vm,
    logic::{arch::{rflags, CR8_TPR}, kvm_abi::quirk, kvm_run::exit_reason, mp_state::MpState},
    run::{
        complete::complete,
        counters::VcpuStats,
        exit::{self, Next},
        kvm_run::KvmRun,
        steal_time,
        sync_regs,
        pvclock,
        smm,
        state::RunState,
        window::{window, Target},
    },
};

/// `KVM_RUN` of a vCPU of `vm`; `kvm_run`'s interrupt fields are filled whatever the outcome.
pub(crate) fn run(t: &Target<'_>, st: &mut RunState, run: &KvmRun, vm: &Vm) -> Result<isize> {
    t.stats.run();
    let r = run_loop(t, st, run, vm);
    end_halt(st, vm, t.stats);
    // KVM stores them on every return, also after an error.
    let stored = sync_regs::store(st, run);
    let r = r.and_then(|n| stored.map(|()| n));
    let if_flag = st.regs.rflags & rflags::IF != 0;
    let (cr8, apic_base) = st.apic.as_ref().map_or((st.sregs.cr8(), st.sregs.apic_base()), |a| (a.cr8(), a.apic_base()));
    // With the PIC in the kernel, userspace has nothing to inject: always ready (KVM).
    let pic_in_kernel = st.apic.as_ref().is_some_and(|a| a.pic_in_kernel());
    let ready = pic_in_kernel || (st.events.ready_for_interrupt(if_flag, st.interruptibility) && st.apic.as_ref().is_none_or(|a| a.accepts_extint()));
    run.post_run(ready, if_flag, cr8, apic_base, st.smm.active);
    if let Some(reason) = run.reason() {
        t.stats.user_exit(reason);
    }
    r
}

// Its only caller is `run`: inlined there, one call and frame fewer per `KVM_RUN`.
#[inline(always)]
fn run_loop(t: &Target<'_>, st: &mut RunState, run: &KvmRun, vm: &Vm) -> Result<isize> {
    st.take_vm_settings(vm);
    let lint0_reenabled = st.vm.has_quirk(quirk::LINT0_REENABLED);
    if st.apic.as_ref().is_some_and(|a| a.mp_state() == MpState::Uninitialized) {
        return uninitialized(st, run, lint0_reenabled);
    }
    // Userspace can put a vCPU in SMM into INIT_RECEIVED, where nothing could wake it (KVM).
    if st.smm.active && st.apic.as_ref().is_some_and(|a| a.mp_state() == MpState::InitReceived) {
        return Err(EINVAL);
    }
    sync_regs::take_in(st, run, vm)?;
    // A new KVM_RUN: the steal time is brought up to date at the first entry (KVM requests it
    // whenever the vCPU is loaded).
    st.steal.update = st.steal.gpa().is_some();
    // Userspace's APIC gives the guest its TPR in kvm_run.cr8 (KVM's "re-sync apic's tpr");
    // an in-kernel one keeps its own.
    if st.apic.is_none() {
        let cr8 = run.cr8();
        if cr8 & !CR8_TPR != 0 {
            return Err(EINVAL);
        }
        st.sregs.set_cr8(cr8);
    }
    if let Some(r) = complete(&mut st.vcpu, run, vm) {
        return r;
    }
    // KVM 7.3 leaves the exit reason as it was (an I/O the run just completed stays the last
    // exit: the selftests' ucall code reads it again).
    if run.immediate_exit() {
        return Err(EINTR);
    }
    if core::mem::take(&mut st.events.triple_fault) {
        run.set_exit_reason(exit_reason::SHUTDOWN);
        return Ok(0);
    }
    loop {
        if current!().signal_pending() {
            run.set_exit_reason(exit_reason::INTR);
            return Err(EINTR);
        }
        cond_resched();
        // The VM's settings as they are now (a change kicks the vCPU out of its window).
        st.take_vm_settings(vm);
        let lint0_reenabled = st.vm.has_quirk(quirk::LINT0_REENABLED);
        if st.apic.is_some() && !ready_to_enter(st, lint0_reenabled)? {
            // Asleep until something was posted or a signal came: look again.
            block(st, vm);
            continue;
        }
        end_halt(st, vm, t.stats);
        if smm::smi_ready(st) {
            st.sync_sregs()?;
            smm::enter(st, vm)?;
        }
        pvclock::sync(&mut st.vcpu, vm);
        steal_time::sync(&mut st.vcpu, vm);
        match window(t, st, run)? {
            Next::ToUser => return Ok(0),
            Next::Host | Next::Reenter => {}
            Next::Finish(d) => {
                if let Some(r) = exit::finish(d, st, run, vm, t.stats) {
                    return r;
                }
            }
        }
    }
}

/// Waits, with an in-kernel APIC, until something is posted or a signal comes (KVM's
/// `kvm_vcpu_halt`): a halted vCPU first polls, from the start of its halt, for the adaptive
/// time its recent halts call for (`logic::halt_poll`), then sleeps; one waiting for INIT or
/// SIPI sleeps at once. The halt ends when the vCPU runs again ([`end_halt`]).
fn block(st: &mut RunState, vm: &Vm) {
    let st = &mut st.vcpu;
    let Some(apic) = st.apic.as_ref() else { return };
    let mailbox = apic.mailbox();
    if apic.mp_state() != MpState::Halted {
        mailbox.wait();
        return;
    }
    let (start, window) = st.halt_poll.window(vm.max_halt_poll_ns(), Instant::now);
    // A signal ends the halt without a sleep (the caller returns to userspace).
    if mailbox.poll(start, window) || current!().signal_pending() {
        return;
    }
    if mailbox.wait() {
        st.halt_poll.slept();
    }
}

/// The halt under way, if any, is over (the vCPU runs again, or `KVM_RUN` returns): the
/// polling time adapts to how long it lasted, and the statistics count its poll.
fn end_halt(st: &mut RunState, vm: &Vm, stats: &VcpuStats) {
    // Every window but the first after a halt: nothing to adapt or count.
    if !st.vcpu.halt_poll.in_halt() {
        return;
    }
    let elapsed = |start: Instant<_>| u64::try_from(start.elapsed().as_nanos()).unwrap_or(0);
    if let Some((true, woken)) = st.vcpu.halt_poll.end(|| vm.max_halt_poll_ns(), elapsed) {
        stats.halt_poll(woken);
    }
}

/// With an in-kernel APIC, before entering the guest: acts on INIT and SIPI, takes what was
/// posted, and ends a halt that an event ends (KVM's `vcpu_block` after waking). Whether the
/// guest may run; if not, the caller sleeps until something is posted.
fn ready_to_enter(st: &mut RunState, lint0_reenabled: bool) -> Result<bool> {
    // Posted first: an INIT then clears what came before it (KVM's nmi_queued, the IRR).
    st.take_posted();
    st.accept_init_sipi(lint0_reenabled)?;
    let Some(state) = st.apic.as_ref().map(|a| a.mp_state()) else { return Ok(true) };
    Ok(match state {
        MpState::Runnable => true,
        MpState::Halted | MpState::ApResetHold if st.has_wake_event() => {
            st.apic.as_mut().map(|a| a.wake());
            true
        }
        // Waiting for INIT or SIPI (taken above), or halted without an event.
        _ => false,
    })
}

/// `KVM_RUN` of an AP that no INIT reached yet (KVM): waits for one, acts on it, and returns
/// `EAGAIN` (run again) or `EINTR` for a signal; with `immediate_exit`, `EINTR` at once.
fn uninitialized(st: &mut RunState, run: &KvmRun, lint0_reenabled: bool) -> Result<isize> {
    if run.immediate_exit() {
        return Err(EINTR);
    }
    // Interrupts posted meanwhile are taken (and dropped by the disabled APIC).
    while !st.take_posted() && !current!().signal_pending() {
        st.apic.as_ref().map(|a| a.mailbox().wait());
    }
    st.accept_init_sipi(lint0_reenabled)?;
    if current!().signal_pending() {
        run.set_exit_reason(exit_reason::INTR);
        return Err(EINTR);
    }
    Err(EAGAIN)
}
