// SPDX-License-Identifier: GPL-2.0

//! kvmclock's pages in guest memory: the vCPU's time page (`MSR_KVM_SYSTEM_TIME_NEW`) and the
//! VM's wall-clock page (`MSR_KVM_WALL_CLOCK_NEW`), written before the guest runs, outside the
//! window (the writes may fault), with KVM's version protocol: odd while the page changes.

use kernel::{prelude::*, transmute::AsBytes};

use crate::{
    kvm::vm::{Memory, Vm},
    logic::{kvmclock::{self, time_page}, memslot_rules::AddressSpace},
    run::state::VcpuState,
};

/// Bytes of a page's version field (the first field of both pages).
const VERSION: usize = core::mem::size_of::<u32>();
/// Offset of the time page's flags.
const FLAGS: u64 = core::mem::offset_of!(kvmclock::TimeInfo, flags) as u64;

/// Writes what the vCPU's kvmclock needs in guest memory before its next entry: the wall-clock
/// page if its MSR was written, the time page if it changed, the VM clock moved, or (without a
/// stable TSC) the vCPU moved to another CPU. A page outside guest RAM is left alone, as KVM
/// leaves a page it cannot map.
pub(crate) fn sync(st: &mut VcpuState, vm: &Vm) {
    st.vm_clock.vcpu_runs();
    if core::mem::take(&mut st.kvmclock.wall_clock) {
        write_wall_clock(st, vm);
    }
    // Guests without kvmclock stop here: this runs before every window.
    if !st.kvmclock.enabled() {
        return;
    }
    st.vm_clock.recheck();
    let generation = st.vm_clock.generation();
    let cpu = kernel::cpu::CpuId::current().as_u32();
    if !st.kvmclock.page_due(generation, st.vm_clock.stable(), cpu) {
        return;
    }
    let c = &mut st.kvmclock;
    (c.update, c.generation, c.cpu) = (false, generation, cpu);
    let Some(gpa) = time_page(c.system_time) else { return };
    let Some(info) = st.vm_clock.page_clock().time_info(st.msrs.tsc_offset) else { return };
    let mut mem = vm.memory(AddressSpace::Guest);
    let Ok(current) = read_version(&mem, gpa) else { return };
    let version = kvmclock::time_update_version(current);
    // The guest's PVCLOCK_GUEST_STOPPED stays, as KVM keeps it (`kvm_setup_guest_pvclock`).
    let mut flags = [0u8];
    let _ = mem.read(gpa.wrapping_add(FLAGS), &mut flags);
    let flags = info.flags | (flags[0] & kvmclock::PVCLOCK_GUEST_STOPPED);
    let _ = write_versioned(&mut mem, gpa, version, kvmclock::TimeInfo { version, flags, ..info }.as_bytes());
}

/// The VM's wall-clock page, at the address in its MSR (none for 0, as KVM).
pub(crate) fn write_wall_clock(st: &VcpuState, vm: &Vm) {
    let gpa = st.vm_clock.wall_clock_msr();
    if gpa == 0 {
        return;
    }
    let mut mem = vm.memory(AddressSpace::Guest);
    let Ok(current) = read_version(&mem, gpa) else { return };
    let version = kvmclock::wall_update_version(current);
    let _ = write_versioned(&mut mem, gpa, version, st.vm_clock.wall_clock(version).as_bytes());
}

/// The version word at `gpa`.
fn read_version(mem: &Memory<'_>, gpa: u64) -> Result<u32> {
    let mut v = [0u8; VERSION];
    mem.read(gpa, &mut v)?;
    Ok(u32::from_le_bytes(v))
}

/// Writes `version` (odd), then `page` (which carries it), then `version + 1`: a guest reading
/// meanwhile sees an odd or changed version and reads again. The closing version is written
/// even if part of the page could not be (as KVM does), so a guest never waits on an odd one.
fn write_versioned(mem: &mut Memory<'_>, gpa: u64, version: u32, page: &[u8]) -> Result {
    mem.write(gpa, &version.to_le_bytes())?;
    let _ = mem.write(gpa, page);
    mem.write(gpa, &version.wrapping_add(1).to_le_bytes())
}
