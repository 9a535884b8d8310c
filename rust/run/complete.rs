// SPDX-License-Identifier: GPL-2.0

//! Work an exit leaves for userspace ([`Pending`]), finished in one place (KVM's `complete_userspace_io`):
//! at the start of the next `KVM_RUN`, or at once when an ioeventfd took an OUT.

use kernel::prelude::*;

use crate::{
    kvm::vm::Vm,
    run::{
        emulate,
        kvm_run::KvmRun,
        state::{Pending, VcpuState},
    },
};

/// Finishes the pending work. `Some` if `KVM_RUN` returns now: the next part of an emulated
/// instruction went to userspace, or a single step is reported.
pub(crate) fn complete(st: &mut VcpuState, run: &KvmRun, vm: &Vm) -> Option<Result<isize>> {
    let p = st.pending.take()?;
    let done = match p {
        // Userspace moved RIP (KVM_SET_REGS) while the access was out: KVM drops it.
        Pending::PortIn { rip, at, .. } | Pending::PortOut { rip, at, .. } if rip != st.linear_rip_since(at) => false,
        Pending::PortIn { size, len, .. } => {
            let mut b = [0u8; 4];
            run.read_pio_data(b.get_mut(..usize::from(size)).unwrap_or(&mut []));
            let data = u64::from(u32::from_le_bytes(b));
            st.regs.rax = match size {
                1 => (st.regs.rax & !0xff) | data,
                2 => (st.regs.rax & !0xffff) | data,
                _ => data, // 32-bit results zero-extend into RAX
            };
            st.skip(len);
            true
        }
        Pending::PortOut { len, .. } => {
            st.skip(len);
            true
        }
        // As KVM's complete_fast_msr_access: no RIP check.
        Pending::Msr { write, len } => match run.msr_reply() {
            (true, _) => {
                st.raise_gp0();
                false
            }
            (false, data) => {
                if !write {
                    // 32-bit register writes: the upper halves clear.
                    st.regs.rax = data & 0xffff_ffff;
                    st.regs.rdx = data >> 32;
                }
                st.skip(len);
                true
            }
        },
        // The usual end of an MMIO write: it was done at its exit, its last part is out.
        Pending::Emulated(e) if e.is_last_write() => {
            st.end_shadow();
            true
        }
        Pending::Emulated(e) => {
            st.end_shadow();
            let before = (st.regs.rip, st.regs.rcx);
            let mem = vm.memory(st.address_space());
            let local = st.apic.as_mut().map(|a| a as &mut dyn emulate::LocalMmio);
            let outcome = emulate::complete(mem, &mut st.regs, st.sregs.for_emulation(), run, e, &mut st.emulated, local);
            st.emulated_progress(before);
            match outcome {
                emulate::Outcome::Done => true,
                emulate::Outcome::Exit(next) => {
                    st.pending = next.map(Pending::Emulated);
                    return Some(Ok(0));
                }
                emulate::Outcome::Fault(f) => {
                    st.raise(f);
                    false
                }
                emulate::Outcome::Failed(f) => {
                    if st.emulation_failed() {
                        f.report(run);
                        return Some(Ok(0));
                    }
                    false
                }
            }
        }
    };
    (done && p.completes_step() && st.stepped(run)).then_some(Ok(0))
}
