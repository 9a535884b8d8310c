//! What the vCPU threads of `rvmx run` share: the port devices, with `--irqchip user` one local
//! APIC per CPU (on the MMIO bus, where each CPU sees its own) and each CPU's power state
//! (running, halted, waiting for a STARTUP IPI), and how one thread wakes another: a condition
//! variable when it sleeps in userspace, a signal when it is in KVM_RUN.
//! The VM ends when one CPU stops it (reset, debug exit, triple fault, error, timeout) or when
//! no CPU can run again (with the split irqchip, as idle.rs finds out).

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Condvar, Mutex, MutexGuard,
    },
    time::Duration,
};

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use super::{idle, kick::KICK_SIGNAL, virtio, Irqchip, Outcome};
use crate::{layout, devices::{
    bus::{Bus, BusDevice, Effect},
    clock::Clock,
    isa::Isa,
    lapic::{self, Delivery, Ipi, Lapic},
}};

/// Where a CPU is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    /// Runs the guest, or sleeps in HLT until one of its own timers fires.
    Running,
    /// In HLT with nothing of its own to wake it (interrupts off, or no timer): only another
    /// CPU can.
    Halted,
    /// An INIT arrived: the CPU resets, then waits for a STARTUP.
    InitPending,
    /// After INIT (and at power-on for the application processors).
    WaitForSipi,
    /// A STARTUP arrived with this vector: the CPU starts in real mode at `vector << 12`.
    Started(u8),
}

impl Power {
    /// Whether the CPU can run again without another CPU's help.
    fn inactive(self) -> bool {
        matches!(self, Power::Halted | Power::WaitForSipi)
    }
}

/// The part of a CPU other threads touch, under its lock.
pub struct CpuState {
    /// Its local APIC with `--irqchip user` (with the split irqchip the kernel's answers).
    pub lapic: Lapic,
    /// With `--irqchip user`; with the split irqchip the kernel keeps it and every CPU here
    /// stays [`Power::Running`].
    pub power: Power,
    /// With the split irqchip: what its thread last saw of it.
    look: idle::Look,
    /// An NMI IPI waits to be injected with `KVM_NMI`.
    pub nmi: bool,
    /// Bumped by every wake-up, so a sleeper cannot miss one.
    kicks: u64,
    /// The thread running the vCPU while it is in its loop (signalled out of KVM_RUN).
    thread: Option<libc::pthread_t>,
}

impl CpuState {
    /// The wake-up count, to sleep on ([`Machine::sleep`]).
    pub fn kicks_seen(&self) -> u64 {
        self.kicks
    }
}

/// One CPU.
pub struct Cpu {
    state: Mutex<CpuState>,
    wake: Condvar,
}

/// The devices on the MMIO bus, by name.
#[derive(Clone, Copy, Debug)]
enum Mmio {
    /// The accessing CPU's own local APIC.
    LocalApic,
    /// A virtio device's register page, by its index in [`Machine::virtio`].
    Virtio(usize),
}

/// The whole machine.
pub struct Machine<W: Write> {
    pub irqchip: Irqchip,
    /// With the kernel's irqchip: the irqfd that raises COM1's IRQ there.
    com1_irq: Option<EventFd>,
    /// The VM, closed with the machine: the kernel's PIT is read from it.
    pub vm: VmFd,
    isa: Mutex<Isa<W>>,
    mmio: Bus<Mmio>,
    /// The virtio devices (vmm/virtio.rs).
    pub virtio: Vec<virtio::Slot>,
    pub cpus: Vec<Cpu>,
    pub clock: Clock,
    /// When `--timeout` ends the VM (ns on `clock`).
    pub deadline: Option<u64>,
    /// CPUs that cannot run again by themselves ([`Power::inactive`]).
    inactive: AtomicUsize,
    stopping: AtomicBool,
    /// The user's input is still open (until `console::pump` sees its end): it can wake CPU 0.
    input_open: AtomicBool,
    outcome: Mutex<Option<Outcome>>,
}

/// Locks `m`, also after a thread panicked with it held (the state stays usable for ending).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<W: Write> Machine<W> {
    /// A machine with `cpus` CPUs (APIC IDs 0..cpus) on VM `vm`; CPU 0 runs, the others
    /// wait for a STARTUP (in the kernel unless `--irqchip user`). `com1_irq` with the kernel's
    /// irqchip; the virtio devices `virtio`.
    pub fn new(isa: Isa<W>, cpus: u8, deadline: Option<u64>, irqchip: Irqchip, com1_irq: Option<EventFd>, vm: VmFd, virtio: Vec<virtio::Slot>) -> Self {
        let clock = isa.clock;
        let user = irqchip == Irqchip::User;
        let cpus: Vec<Cpu> = (0..cpus)
            .map(|id| Cpu {
                state: Mutex::new(CpuState {
                    lapic: Lapic::new(id, id == 0),
                    power: if id == 0 || !user { Power::Running } else { Power::WaitForSipi },
                    look: idle::Look::default(),
                    nmi: false,
                    kicks: 0,
                    thread: None,
                }),
                wake: Condvar::new(),
            })
            .collect();
        let inactive = AtomicUsize::new(if user { cpus.len() - 1 } else { 0 });
        let mut ranges: Vec<_> = virtio.iter().enumerate().map(|(i, v)| (v.base, layout::VIRTIO_SIZE, Mmio::Virtio(i))).collect();
        if user {
            ranges.push((lapic::BASE, lapic::SIZE, Mmio::LocalApic));
        }
        let mmio = Bus::new(&ranges);
        Machine { irqchip, com1_irq, vm, isa: Mutex::new(isa), mmio, virtio, cpus, clock, deadline, inactive, stopping: AtomicBool::new(false), input_open: AtomicBool::new(true),
                  outcome: Mutex::new(None) }
    }

    /// CPU `i`'s state, locked.
    pub fn state(&self, i: usize) -> MutexGuard<'_, CpuState> {
        lock(&self.cpus[i].state)
    }

    /// The port devices, locked.
    pub fn isa(&self) -> MutexGuard<'_, Isa<W>> {
        lock(&self.isa)
    }

    /// Turns what the port devices signalled into interrupt requests: at the userspace PIC, or
    /// with the kernel's irqchip COM1's edge through its irqfd.
    pub fn update_irqs(&self, isa: &mut Isa<W>) {
        match &self.com1_irq {
            Some(irqfd) => {
                if isa.take_serial_irq() {
                    // A full counter only means an edge is already on its way.
                    let _ = irqfd.write(1);
                }
            }
            None => isa.update_irqs(),
        }
    }

    /// A device's edge on ISA line `irq` at the userspace 8259s, which are wired to CPU 0.
    pub fn pulse_irq(&self, irq: u8) {
        let mut isa = self.isa();
        isa.pic.pulse(irq);
        let raised = isa.pic.has_interrupt();
        drop(isa);
        if raised {
            self.kick(0, None);
        }
    }

    /// CPU `me`'s MMIO read at `addr`; all ones where no device answers.
    pub fn mmio_read(&self, me: usize, addr: u64, data: &mut [u8]) {
        data.fill(0xff);
        let Some((dev, base, offset)) = self.mmio.find(addr) else { return };
        match dev {
            Mmio::Virtio(i) => self.virtio[i].transport.read(offset, data),
            Mmio::LocalApic => {
                let lapic = &mut self.state(me).lapic;
                if lapic.claims(offset, data.len(), false) {
                    lapic.read(base, offset, data, self.clock.now());
                }
            }
        }
    }

    /// CPU `me`'s MMIO write at `addr`; what it asks of the machine.
    pub fn mmio_write(&self, me: usize, addr: u64, data: &[u8]) -> Option<Effect> {
        let (dev, base, offset) = self.mmio.find(addr)?;
        match dev {
            Mmio::Virtio(i) => {
                self.virtio[i].transport.write(offset, data);
                None
            }
            Mmio::LocalApic => {
                let lapic = &mut self.state(me).lapic;
                if !lapic.claims(offset, data.len(), true) {
                    return None;
                }
                lapic.write(base, offset, data, self.clock.now())
            }
        }
    }

    /// Carries out what CPU `me`'s device write asked; the outcome if it ends the VM. Called
    /// without any lock held: an IPI takes its targets' locks.
    pub fn apply(&self, me: usize, effect: Effect) -> Option<Outcome> {
        match effect {
            Effect::Reset => Some(Outcome::Reset),
            Effect::PowerOff => Some(Outcome::PowerOff),
            Effect::DebugExit(status) => Some(Outcome::DebugExit(status)),
            Effect::Ipi(ipi) => {
                self.send_ipi(me, ipi);
                None
            }
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Ends the VM with `outcome` (the first one given wins; `None` for an error the caller
    /// reports itself) and wakes every CPU so that its thread returns.
    pub fn stop(&self, outcome: Option<Outcome>) {
        let mut o = lock(&self.outcome);
        if o.is_none() && !self.stopping() {
            *o = outcome;
        }
        self.stopping.store(true, Ordering::Release);
        drop(o);
        for i in 0..self.cpus.len() {
            self.kick(i, None);
        }
    }

    /// Whether the user's input can still wake CPU 0.
    pub fn input_open(&self) -> bool {
        self.input_open.load(Ordering::Acquire)
    }

    /// The console says whether input may still come; CPU 0 looks again at what can wake it.
    pub fn set_input_open(&self, open: bool) {
        self.input_open.store(open, Ordering::Release);
        self.kick(0, None);
    }

    /// How the VM ended.
    pub fn outcome(&self) -> Option<Outcome> {
        lock(&self.outcome).take()
    }

    /// Moves CPU `i` (its state `st`, locked) to `power`; the VM ends once no CPU can run.
    pub fn set_power(&self, st: &mut CpuState, power: Power) {
        match (st.power.inactive(), power.inactive()) {
            (false, true) => {
                let inactive = self.inactive.fetch_add(1, Ordering::AcqRel) + 1;
                if inactive == self.cpus.len() {
                    // Deferred: `stop` takes every CPU's lock, and the caller holds one.
                    self.stopping.store(true, Ordering::Release);
                    let mut o = lock(&self.outcome);
                    o.get_or_insert(Outcome::Halted);
                }
            }
            (true, false) => {
                self.inactive.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
        st.power = power;
    }

    /// Wakes CPU `i`: out of its sleep (a halted CPU runs again and looks at what changed) and
    /// out of KVM_RUN, unless `from` is that CPU itself. `st` when the caller holds its lock.
    fn wake(&self, i: usize, st: &mut CpuState, from: Option<usize>) {
        st.kicks += 1;
        if st.power == Power::Halted {
            self.set_power(st, Power::Running);
        }
        self.cpus[i].wake.notify_all();
        if let (Some(t), true) = (st.thread, from != Some(i)) {
            // SAFETY: `t` is a live thread: it clears `thread` under this lock before it ends.
            unsafe { libc::pthread_kill(t, KICK_SIGNAL) };
        }
    }

    /// Wakes CPU `i` (see `wake`).
    pub fn kick(&self, i: usize, from: Option<usize>) {
        let mut st = self.state(i);
        self.wake(i, &mut st, from);
    }

    /// Delivers an IPI that CPU `from` sent to every APIC it names.
    pub fn send_ipi(&self, from: usize, ipi: Ipi) {
        for i in 0..self.cpus.len() {
            let mut st = self.state(i);
            if !st.lapic.is_target(ipi.dest, i == from) {
                continue;
            }
            match ipi.delivery {
                Delivery::Fixed(v) => st.lapic.accept(v),
                Delivery::Nmi => st.nmi = true,
                Delivery::Init => self.set_power(&mut st, Power::InitPending),
                Delivery::Startup(v) if st.power == Power::WaitForSipi => self.set_power(&mut st, Power::Started(v)),
                Delivery::Startup(_) => continue, // ignored unless waiting for one
            }
            self.wake(i, &mut st, Some(from));
        }
    }

    /// With the split irqchip: CPU `i`'s thread saw, in a look from `start` to `end` (ns on the
    /// clock), whether its CPU is `stopped`, and its exit count (idle.rs); the VM ends once none
    /// can run again.
    pub fn saw(&self, i: usize, stopped: bool, exits: u64, start: u64, end: u64) {
        self.state(i).look.saw(stopped, exits, start, end);
        if !stopped {
            return;
        }
        let looks: Vec<idle::Look> = (0..self.cpus.len()).map(|c| self.state(c).look).collect();
        if idle::none_can_run(&looks) {
            self.stop(Some(Outcome::Halted));
        }
    }

    /// Registers the calling thread as CPU `i`'s (`Some`), or unregisters it before it ends.
    pub fn set_thread(&self, i: usize, thread: Option<libc::pthread_t>) {
        self.state(i).thread = thread;
    }

    /// The wake-up count of CPU `i`, to sleep on.
    pub fn kicks(&self, i: usize) -> u64 {
        self.state(i).kicks
    }

    /// Sleeps until CPU `i` is woken after `seen` kicks, until `until` (ns on the clock), or
    /// until the VM stops.
    pub fn sleep(&self, i: usize, seen: u64, until: Option<u64>) {
        let mut st = self.state(i);
        while st.kicks == seen && !self.stopping() {
            let now = self.clock.now();
            let wait = match until {
                Some(t) if t <= now => return,
                Some(t) => Duration::from_nanos(t - now),
                None => Duration::from_secs(3600),
            };
            st = self.cpus[i].wake.wait_timeout(st, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}
