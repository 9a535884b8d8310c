//! One vCPU's thread in `rvmx run`: offers interrupts (the 8259's through the boot CPU's
//! LINT0; with `--irqchip user` its local APIC's too), runs the guest, and handles each exit
//! that comes back to userspace: port I/O and MMIO to the devices' buses; with `--irqchip user`
//! also HLT, INIT and STARTUP IPIs, which the kernel keeps with the split irqchip.

use std::{io::Write, os::fd::AsRawFd};

use kvm_bindings::{
    kvm_msr_entry, kvm_regs, kvm_sregs, Msrs, KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED,
    KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use rvmx_logic::{
    arch::{apic_base::ENABLE as APIC_BASE_ENABLE, msr::TSC_DEADLINE},
    kvm_abi::KVM_INTERRUPT,
    lapic::{accepts_extint, lvt, reg},
};

use super::{
    exit_count, idle, kick,
    machine::{Machine, Power},
    Irqchip, Outcome, Trace,
};
use crate::{
    devices::lapic,
    error::{Error, Result},
};

/// A vCPU and what its thread needs to reset it.
pub struct Vcpu {
    pub fd: VcpuFd,
    pub index: usize,
    /// The registers at creation, which INIT restores.
    pub reset: (kvm_regs, kvm_sregs),
}

/// Runs CPU `v.index` of `m` until the VM stops; the exits it saw.
pub fn run<W: Write>(m: &Machine<W>, mut v: Vcpu) -> Result<Trace> {
    let me = v.index;
    let timer = kick::Timer::new(&mut v.fd)?;
    // SAFETY: pthread_self has no preconditions.
    m.set_thread(me, Some(unsafe { libc::pthread_self() }));
    let mut trace = Trace::default();
    let r = cpu_loop(m, &mut v, &timer, &mut trace).map_err(Error::on_vcpu(me));
    m.set_thread(me, None);
    drop(timer);
    // Whatever ended this CPU ends the VM: wake the others so that they return too.
    m.stop(None);
    r.map(|()| trace)
}

fn cpu_loop<W: Write>(m: &Machine<W>, v: &mut Vcpu, timer: &kick::Timer, trace: &mut Trace) -> Result<()> {
    let me = v.index;
    let user = m.irqchip == Irqchip::User;
    // With the split irqchip: the vCPU's exit count, and when this thread next looks whether
    // its CPU is stopped.
    let exits = if user { None } else { Some(exit_count::ExitCount::new(&v.fd)?) };
    let mut next_look = 0;
    loop {
        v.fd.set_kvm_immediate_exit(0);
        if m.stopping() {
            return Ok(());
        }
        let now = m.clock.now();
        if m.deadline.is_some_and(|d| now >= d) {
            m.stop(Some(Outcome::TimedOut(format!("vCPU {me}: {}", where_is(&v.fd)))));
            return Ok(());
        }
        if user && !power(m, v)? {
            continue;
        }
        if let Some(exits) = exits.as_ref().filter(|_| now >= next_look) {
            let count = exits.read()?;
            let stopped = stopped_in_kernel(m, v)?;
            m.saw(me, stopped, count, now, m.clock.now());
            next_look = now.saturating_add(idle::PERIOD.as_nanos() as u64);
            if m.stopping() {
                return Ok(());
            }
        }
        offer_interrupt(m, v)?;
        let look = (!user).then_some(next_look);
        timer.at(next_wake(m, me, look).map(|t| t.saturating_sub(m.clock.now())));
        let exit = v.fd.run();
        let stop = match exit {
            Ok(VcpuExit::IoOut(port, data)) => {
                trace.count("io_out");
                let mut batch = [0u8; IO_DATA_MAX];
                let batch = copy_io(&mut batch, data);
                // `count` accesses of `size` bytes each (REP OUTS), one by one as on the bus.
                let size = io_size(&mut v.fd);
                let mut isa = m.isa();
                let effect = batch.chunks(size).fold(None, |effect, one| effect.or(isa.write(port, one)));
                m.update_irqs(&mut isa);
                // The 8259 is wired to CPU 0: wake it if this write raised an interrupt.
                let raised = me != 0 && isa.pic.has_interrupt();
                drop(isa);
                if raised {
                    m.kick(0, Some(me));
                }
                effect.and_then(|e| m.apply(me, e))
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                trace.count("io_in");
                let len = data.len().min(IO_DATA_MAX);
                let size = io_size(&mut v.fd);
                let mut batch = [0u8; IO_DATA_MAX];
                let mut isa = m.isa();
                // `count` accesses of `size` bytes each (REP INS), one by one as on the bus.
                batch[..len].chunks_mut(size).for_each(|one| isa.read(port, one));
                drop(isa);
                io_data(&mut v.fd, len).copy_from_slice(&batch[..len]);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                trace.count("mmio_read");
                m.mmio_read(me, addr, data);
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                trace.count("mmio_write");
                m.mmio_write(me, addr, data).and_then(|e| m.apply(me, e))
            }
            Ok(VcpuExit::Hlt) if user => {
                trace.count("hlt");
                halt(m, v);
                None
            }
            Ok(VcpuExit::IrqWindowOpen) => {
                trace.count("irq_window_open");
                None
            }
            Ok(VcpuExit::Shutdown) => {
                trace.count("shutdown");
                Some(Outcome::Shutdown)
            }
            Ok(VcpuExit::FailEntry(reason, _cpu)) => {
                trace.count("fail_entry");
                Some(Outcome::FailEntry(reason))
            }
            Ok(VcpuExit::InternalError) => {
                trace.count("internal_error");
                // SAFETY: `internal` is the union member KVM_EXIT_INTERNAL_ERROR fills.
                Some(Outcome::Internal(unsafe { v.fd.get_kvm_run().__bindgen_anon_1.internal.suberror }))
            }
            Ok(VcpuExit::Intr) => {
                trace.count("intr");
                None
            }
            Ok(other) => Some(Outcome::Unexpected(format!("{other:?}"))),
            Err(e) if e.errno() == libc::EINTR => {
                trace.count("intr");
                None
            }
            // An application processor left its wait for INIT/STARTUP in the kernel: run again.
            Err(e) if e.errno() == libc::EAGAIN => {
                trace.count("again");
                None
            }
            Err(e) => return Err(Error::Ioctl("KVM_RUN", e)),
        };
        if let Some(outcome) = stop {
            m.stop(Some(outcome));
            return Ok(());
        }
    }
}

/// The most data one KVM_EXIT_IO carries: its page of `kvm_run` (count x size bytes).
const IO_DATA_MAX: usize = 4096;

/// Copies an OUT exit's data into `buf`: the vCPU's `kvm_run` is read again while the devices
/// take it.
fn copy_io<'a>(buf: &'a mut [u8; IO_DATA_MAX], data: &[u8]) -> &'a [u8] {
    let n = data.len().min(IO_DATA_MAX);
    buf[..n].copy_from_slice(&data[..n]);
    &buf[..n]
}

/// The width of each access of the KVM_EXIT_IO that just came back (kvm-ioctls' `VcpuExit`
/// gives only their bytes together); at least 1.
fn io_size(vcpu: &mut VcpuFd) -> usize {
    // SAFETY: `io` is the union member KVM_EXIT_IO fills, and the caller saw that exit.
    usize::from(unsafe { vcpu.get_kvm_run().__bindgen_anon_1.io.size }).max(1)
}

/// The data area of the KVM_EXIT_IO that just came back, `len` bytes (count x size), to answer
/// an IN in.
fn io_data(vcpu: &mut VcpuFd, len: usize) -> &mut [u8] {
    let run = vcpu.get_kvm_run();
    // SAFETY: as in `io_size`.
    let offset = unsafe { run.__bindgen_anon_1.io.data_offset } as usize;
    // SAFETY: the device put the exit's `len` bytes at `data_offset` inside this vCPU's kvm_run
    // mapping, which lives as long as `vcpu`; kvm-ioctls' `run` made the same slice for this
    // exit (and `len` is at most what it made).
    unsafe { std::slice::from_raw_parts_mut((run as *mut kvm_bindings::kvm_run).cast::<u8>().add(offset), len) }
}

/// Applies INIT and STARTUP and sleeps while the CPU waits for one; whether it may run.
fn power<W: Write>(m: &Machine<W>, v: &mut Vcpu) -> Result<bool> {
    let me = v.index;
    let mut st = m.state(me);
    match st.power {
        Power::Running => Ok(true),
        Power::Halted => {
            // Back from a halt that nothing but time ended: running, so counted as active.
            m.set_power(&mut st, Power::Running);
            Ok(true)
        }
        Power::InitPending => {
            st.lapic = lapic::Lapic::new(st.lapic.id(), me == 0);
            st.nmi = false;
            m.set_power(&mut st, Power::WaitForSipi);
            drop(st);
            v.fd.set_regs(&v.reset.0).map_err(Error::ioctl("KVM_SET_REGS"))?;
            v.fd.set_sregs(&v.reset.1).map_err(Error::ioctl("KVM_SET_SREGS"))?;
            Ok(false)
        }
        Power::WaitForSipi => {
            let seen = st.kicks_seen();
            drop(st);
            m.sleep(me, seen, m.deadline);
            Ok(false)
        }
        Power::Started(vector) => {
            m.set_power(&mut st, Power::Running);
            drop(st);
            start_at(&v.fd, vector)?;
            Ok(true)
        }
    }
}

/// A STARTUP IPI's effect: real mode, CS = vector << 8, IP = 0.
fn start_at(vcpu: &VcpuFd, vector: u8) -> Result<()> {
    let mut s = vcpu.get_sregs().map_err(Error::ioctl("KVM_GET_SREGS"))?;
    s.cs.selector = (vector as u16) << 8;
    s.cs.base = (vector as u64) << 12;
    vcpu.set_sregs(&s).map_err(Error::ioctl("KVM_SET_SREGS"))?;
    let mut r = vcpu.get_regs().map_err(Error::ioctl("KVM_GET_REGS"))?;
    r.rip = 0;
    vcpu.set_regs(&r).map_err(Error::ioctl("KVM_SET_REGS"))
}

/// When one of this CPU's own timers that live here next fires: its userspace APIC's timer,
/// and the PIT for CPU 0 (the 8259 is wired to it).
fn own_timer<W: Write>(m: &Machine<W>, me: usize) -> Option<u64> {
    let pit = if me == 0 { m.isa().pit.next_irq0() } else { None };
    let apic = if m.irqchip == Irqchip::User { m.state(me).lapic.next_timer() } else { None };
    [apic, pit].into_iter().flatten().min()
}

/// When this CPU must next leave the guest by itself: a timer, the timeout, or `look`.
fn next_wake<W: Write>(m: &Machine<W>, me: usize, look: Option<u64>) -> Option<u64> {
    [own_timer(m, me), m.deadline, look].into_iter().flatten().min()
}

/// With the split irqchip: whether this CPU is stopped (idle.rs): waiting for a STARTUP IPI,
/// or halted with no event pending and interrupts off, or with nothing that could interrupt
/// it (no vector in IRR, the kernel's APIC timer not running and, for CPU 0, no 8259 request
/// LINT0 would take, no PIT tick coming, the input closed). The vCPU's posted interrupts are
/// taken first (KVM_GET_VCPU_EVENTS, KVM_GET_LAPIC), so none is missed.
fn stopped_in_kernel<W: Write>(m: &Machine<W>, v: &mut Vcpu) -> Result<bool> {
    let mp = v.fd.get_mp_state().map_err(Error::ioctl("KVM_GET_MP_STATE"))?.mp_state;
    match mp {
        KVM_MP_STATE_UNINITIALIZED | KVM_MP_STATE_INIT_RECEIVED => return Ok(true),
        KVM_MP_STATE_HALTED => {}
        _ => return Ok(false),
    }
    let e = v.fd.get_vcpu_events().map_err(Error::ioctl("KVM_GET_VCPU_EVENTS"))?;
    let nmi = e.nmi.injected != 0 || (e.nmi.pending != 0 && e.nmi.masked == 0);
    if nmi || e.exception.injected != 0 || e.exception.pending != 0 || e.interrupt.injected != 0 {
        return Ok(false);
    }
    if v.fd.get_kvm_run().if_flag == 0 {
        return Ok(true);
    }
    let page = v.fd.get_lapic().map_err(Error::ioctl("KVM_GET_LAPIC"))?;
    let apic = |offset: u32| {
        let o = offset as usize;
        u32::from_le_bytes([page.regs[o] as u8, page.regs[o + 1] as u8, page.regs[o + 2] as u8, page.regs[o + 3] as u8])
    };
    if (0..8).any(|i| apic(reg::IRR + i * 0x10) != 0) {
        return Ok(false);
    }
    let hw_enabled = v.fd.get_sregs().map_err(Error::ioctl("KVM_GET_SREGS"))?.apic_base & APIC_BASE_ENABLE != 0;
    let takes_extint = accepts_extint(hw_enabled, apic(reg::LVT0));
    let devices = match m.irqchip {
        Irqchip::Kernel => kernel_devices_may_interrupt(m)?,
        _ => takes_extint && pic_may_interrupt(m, v.index),
    };
    Ok(!(apic_timer_running(&v.fd, apic(reg::LVTT), apic)? || devices))
}

/// Whether the 8259 may still interrupt CPU `me` (it is wired to CPU 0 only).
fn pic_may_interrupt<W: Write>(m: &Machine<W>, me: usize) -> bool {
    if me != 0 {
        return false;
    }
    let mut isa = m.isa();
    isa.update_irqs();
    isa.pic.has_interrupt() || isa.pit.next_irq0().is_some() || m.input_open()
}

/// With the kernel's irqchip: whether its devices may still interrupt a CPU, through the
/// 8259s or the I/O APIC: the 8254 counting periodically (modes 2 and 3; a one-shot count is
/// taken as spent), or the user's input open (COM1). Anything already requested would be in
/// the CPU's IRR or about to be.
fn kernel_devices_may_interrupt<W: Write>(m: &Machine<W>) -> Result<bool> {
    let pit = m.vm.get_pit2().map_err(Error::ioctl("KVM_GET_PIT2"))?;
    Ok(matches!(pit.channels[0].mode, 2 | 3) || m.input_open())
}

/// Whether the vCPU's in-kernel APIC timer (LVTT `lvtt`, registers through `reg`) will fire
/// again: unmasked, and a TSC deadline set, a periodic count, or a one-shot count not yet run
/// down.
fn apic_timer_running(vcpu: &VcpuFd, lvtt: u32, reg: impl Fn(u32) -> u32) -> Result<bool> {
    Ok(match lvtt & lvt::TIMER_MODE {
        _ if lvtt & lvt::MASKED != 0 => false,
        lvt::TIMER_TSCDEADLINE => {
            let mut msrs = Msrs::from_entries(&[kvm_msr_entry { index: TSC_DEADLINE, ..Default::default() }])
                .map_err(|_| Error::Os("KVM_GET_MSRS", std::io::Error::from_raw_os_error(libc::ENOMEM)))?;
            vcpu.get_msrs(&mut msrs).map_err(Error::ioctl("KVM_GET_MSRS"))? == 1 && msrs.as_slice()[0].data != 0
        }
        lvt::TIMER_PERIODIC => reg(reg::TMICT) != 0,
        _ => reg(reg::TMCCT) != 0,
    })
}

/// HLT: sleeps until the CPU has something to do: an interrupt it can take, an NMI, INIT or
/// STARTUP, or the timeout. With interrupts off, or with no timer of its own running (nor,
/// for CPU 0, the user's input open), only another CPU can wake it ([`Power::Halted`]).
fn halt<W: Write>(m: &Machine<W>, v: &mut Vcpu) {
    let me = v.index;
    let if_flag = v.fd.get_kvm_run().if_flag != 0;
    loop {
        let seen = m.kicks(me);
        let now = m.clock.now();
        if m.stopping() || m.deadline.is_some_and(|d| now >= d) {
            return;
        }
        {
            let st = m.state(me);
            if st.nmi || matches!(st.power, Power::InitPending | Power::Started(_)) {
                return;
            }
        }
        if if_flag && interrupt_pending(m, me) {
            return;
        }
        let wake = own_timer(m, me).filter(|_| if_flag);
        if wake.is_some_and(|t| now >= t) {
            return;
        }
        let input = me == 0 && if_flag && m.input_open();
        if wake.is_none() && !input {
            let mut st = m.state(me);
            if st.kicks_seen() == seen {
                m.set_power(&mut st, Power::Halted);
            }
        }
        // Whoever wakes a halted CPU makes it Running; the loop decides again.
        m.sleep(me, seen, wake.or(m.deadline));
    }
}

/// Turns due timers into requests; whether CPU `me` has an interrupt to take.
fn interrupt_pending<W: Write>(m: &Machine<W>, me: usize) -> bool {
    let now = m.clock.now();
    let mut isa = m.isa();
    isa.update_irqs();
    let mut st = m.state(me);
    st.lapic.tick(now);
    st.lapic.pending().is_some() || (me == 0 && st.lapic.accepts_pic() && isa.pic.has_interrupt())
}

/// Hands the next interrupt to the vCPU the way KVM's ABI asks: injected with `KVM_INTERRUPT`
/// when `kvm_run` says the guest can take one, otherwise an interrupt window is requested and
/// the next exit comes as soon as it can. The 8259's requests (ExtINT through CPU 0's LINT0)
/// come before the userspace APIC's; an NMI IPI goes first. With the split irqchip only the
/// 8259's are left here, and `ready_for_interrupt_injection` also says LINT0 takes them.
fn offer_interrupt<W: Write>(m: &Machine<W>, v: &mut Vcpu) -> Result<()> {
    let me = v.index;
    let run = v.fd.get_kvm_run();
    let ready = run.ready_for_interrupt_injection != 0 && run.if_flag != 0;
    run.request_interrupt_window = 0;
    if m.irqchip == Irqchip::Kernel {
        return Ok(()); // the kernel's chips inject
    }
    let now = m.clock.now();
    let mut isa = m.isa();
    isa.update_irqs();
    if m.irqchip == Irqchip::Split {
        if me != 0 || !isa.pic.has_interrupt() {
            return Ok(());
        }
        if !ready {
            v.fd.get_kvm_run().request_interrupt_window = 1;
            return Ok(());
        }
        return isa.pic.acknowledge().map_or(Ok(()), |vector| inject(&v.fd, vector));
    }
    let mut st = m.state(me);
    st.lapic.tick(now);
    if std::mem::take(&mut st.nmi) {
        v.fd.nmi().map_err(Error::ioctl("KVM_NMI"))?;
    }
    let pic = me == 0 && st.lapic.accepts_pic() && isa.pic.has_interrupt();
    if !pic && st.lapic.pending().is_none() {
        return Ok(());
    }
    if !ready {
        v.fd.get_kvm_run().request_interrupt_window = 1;
        return Ok(());
    }
    let vector = if pic { isa.pic.acknowledge() } else { st.lapic.acknowledge() };
    vector.map_or(Ok(()), |vector| inject(&v.fd, vector))
}

/// `KVM_INTERRUPT` with `vector`.
fn inject(vcpu: &VcpuFd, vector: u8) -> Result<()> {
    let irq = vector as u32;
    // kvm-ioctls has no wrapper for KVM_INTERRUPT: the module's own ABI names the number.
    // SAFETY: KVM_INTERRUPT reads one u32 from the pointer, which points to `irq`.
    if unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_INTERRUPT.into(), &irq) } < 0 {
        return Err(Error::Os("KVM_INTERRUPT", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The vCPU's mode and instruction pointer, for a stuck guest's report.
fn where_is(vcpu: &VcpuFd) -> String {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => format!("rip {:#x} rsp {:#x} rflags {:#x} cs {:#x} cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}",
                                  r.rip, r.rsp, r.rflags, s.cs.selector, s.cr0, s.cr3, s.cr4, s.efer),
        _ => "unknown (registers unreadable)".into(),
    }
}
