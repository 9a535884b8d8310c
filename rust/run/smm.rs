// SPDX-License-Identifier: GPL-2.0

//! System-management mode, between windows (KVM's `enter_smm` and `emulator_leave_smm`). The
//! guest never runs in the processor's SMM: an SMI saves the vCPU's state in SMRAM (address
//! space 1, at SMBASE + 0xfe00) and VMX then runs the SMM handler in big real mode at SMBASE +
//! 0x8000 with address space 1's EPT; RSM, which outside the processor's SMM is a #UD, loads
//! the saved state back.

use kernel::prelude::*;

use crate::{
    kvm::vm::Vm,
    logic::{
        arch::efer,
        events::{block, shadow_from_abi, shadow_to_abi},
        memslot_rules::AddressSpace,
        smm::{self, CpuSnapshot, SmmState},
        vcpu_state,
    },
    run::{emulate, state::VcpuState},
};

/// Whether the guest's CPUID has long mode: KVM's save-state map is then the 64-bit one.
fn long_mode(st: &VcpuState) -> bool {
    st.allowed.efer & efer::LME != 0
}

/// What an SMI saves of the vCPU.
fn snapshot(st: &VcpuState) -> CpuSnapshot {
    CpuSnapshot {
        regs: st.regs,
        sregs: *st.sregs.get(),
        dr6: st.debug.dr6,
        dr7: st.debug.dr7,
        // The processor's SMBASE is 32 bits (KVM keeps what userspace wrote in the MSR).
        smbase: st.msrs.smbase as u32,
        shadow: shadow_to_abi(st.interruptibility),
    }
}

/// Whether an SMI is taken before the next entry: one waits, the vCPU is not in SMM already,
/// and no event is being delivered or raised (KVM's `can_inject` and `vmx_smi_allowed`).
pub(crate) fn smi_ready(st: &VcpuState) -> bool {
    st.events.smi_pending && !st.smm.active && !st.events.needs_reinjection() && st.events.exception.is_none()
}

/// Takes the pending SMI: the state goes to SMRAM, the vCPU starts in SMM. `EIO` if SMRAM
/// cannot be written (no RAM there in address space 1): the vCPU stays as it was, with the SMI
/// pending (KVM marks the whole VM dead).
// Out of line: its stack frame exists only while it runs, not under every KVM_RUN.
#[inline(never)]
pub(crate) fn enter(st: &mut VcpuState, vm: &Vm) -> Result {
    let long_mode = long_mode(st);
    let cpu = snapshot(st);
    vm.memory(AddressSpace::Smm).write(smm::map_address(cpu.smbase), &smm::save(&cpu, long_mode)).map_err(|_| EIO)?;
    st.events.smi_pending = false;
    st.msrs.smi_count = st.msrs.smi_count.wrapping_add(1);
    st.set_smm(SmmState { active: true, inside_nmi: st.nmi_masked() });
    let (regs, sregs, dr7) = smm::entry_state(&cpu, long_mode);
    (st.regs, st.debug.dr7) = (regs, dr7);
    st.sregs.set(sregs);
    // No shadow; NMIs blocked until RSM.
    st.interruptibility = st.interruptibility & !(block::STI | block::MOV_SS) | block::NMI;
    st.pdptes = None;
    Ok(())
}

/// RSM in SMM: the vCPU leaves SMM with the state the save-state map holds. `false` if that
/// state cannot be had or loaded (KVM's RSM then shuts the vCPU down).
// Out of line: its stack frame exists only while it runs, not under every KVM_RUN.
#[inline(never)]
pub(crate) fn leave(st: &mut VcpuState, vm: &Vm) -> bool {
    let (long_mode, now) = (long_mode(st), snapshot(st));
    let mut map = [0u8; smm::SAVE_LEN];
    if vm.memory(AddressSpace::Smm).read(smm::map_address(now.smbase), &mut map).is_err() {
        return false;
    }
    if !st.smm.inside_nmi {
        st.interruptibility &= !block::NMI;
    }
    st.set_smm(SmmState::default());
    let Some(cpu) = smm::restore(&map, long_mode, &now) else { return false };
    // What KVM's CR0/CR4/EFER writes refuse; PAE paging needs its PDPTEs in RAM.
    if !vcpu_state::sregs_valid(&cpu.sregs, st.allowed.efer, st.allowed.cr4) {
        return false;
    }
    let pdptes = match emulate::pae_legacy(&cpu.sregs) {
        true => match emulate::pdptes(vm.memory(AddressSpace::Guest), &cpu.sregs) {
            Some(p) => Some(p),
            None => return false,
        },
        false => None,
    };
    (st.regs, st.debug.dr6, st.debug.dr7) = (cpu.regs, cpu.dr6, cpu.dr7);
    st.sregs.set(cpu.sregs);
    st.msrs.smbase = cpu.smbase.into();
    st.interruptibility = st.interruptibility & !(block::STI | block::MOV_SS) | shadow_from_abi(cpu.shadow);
    st.pdptes = pdptes;
    true
}
