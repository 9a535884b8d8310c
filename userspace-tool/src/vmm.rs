//! `rvmx run`: one VM with one vCPU, guest memory from rust-vmm's vm-memory, the port devices
//! of devices.rs, and the exit loop, which ends with how the guest stopped.

use std::{collections::BTreeMap, io::Write, os::fd::AsRawFd, time::Duration};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

use crate::{
    devices::{PortBus, Stop},
    pic::Pic,
};

/// What to run.
pub struct Config {
    /// Guest RAM at guest-physical 0, in bytes.
    pub mem_size: usize,
    /// What the guest runs.
    pub image: Image,
    /// Count exits by reason and print the table at the end.
    pub trace_exits: bool,
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
}

/// What the guest runs.
pub enum Image {
    /// A raw image, loaded at `load` and entered at `entry` in real mode.
    Flat(FlatImage),
    /// A Linux bzImage, with an optional initrd and its command line.
    Linux { kernel: std::path::PathBuf, initrd: Option<std::path::PathBuf>, cmdline: String },
}

/// A raw binary image.
pub struct FlatImage {
    pub bytes: Vec<u8>,
    pub load: u64,
    pub entry: u64,
}

/// How the guest stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// HLT with interrupts off, or with no timer running: nothing can wake the guest.
    Halted,
    /// The guest reset the machine through the i8042 (`reboot`).
    Reset,
    /// The guest wrote its status to the debug-exit port.
    DebugExit(u8),
    /// Triple fault: `KVM_EXIT_SHUTDOWN`.
    Shutdown,
    /// The VM entry failed: the hardware's reason.
    FailEntry(u64),
    /// `KVM_EXIT_INTERNAL_ERROR` with its suberror.
    Internal(u32),
    /// An exit `rvmx run` does not handle.
    Unexpected(String),
    /// `--timeout` expired; where the guest was.
    TimedOut(String),
}

impl Outcome {
    /// The exit status of `rvmx run`: 0 for a clean stop, the guest's own status through the
    /// debug-exit port, else a distinct value per failure (documented in the README).
    pub fn status(&self) -> u8 {
        match self {
            Outcome::Halted | Outcome::Reset => 0,
            Outcome::DebugExit(v) => *v,
            Outcome::Shutdown => 10,
            Outcome::FailEntry(_) => 11,
            Outcome::Internal(_) => 12,
            Outcome::Unexpected(_) => 13,
            Outcome::TimedOut(_) => 14,
        }
    }

    /// One line for the user.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Halted => "guest halted".into(),
            Outcome::Reset => "guest reset the machine (i8042)".into(),
            Outcome::DebugExit(v) => format!("guest exited with status {v} (debug-exit port)"),
            Outcome::Shutdown => "guest shut down: triple fault (KVM_EXIT_SHUTDOWN)".into(),
            Outcome::FailEntry(r) => format!("VM entry failed: hardware reason {r:#x}"),
            Outcome::Internal(s) => format!("internal error in the hypervisor: suberror {s}"),
            Outcome::Unexpected(e) => format!("unexpected exit: {e}"),
            Outcome::TimedOut(at) => format!("timed out; guest at {at}"),
        }
    }
}

/// Exits by reason (`--trace-exits`).
#[derive(Default)]
pub struct Trace(pub BTreeMap<&'static str, u64>);

impl Trace {
    fn count(&mut self, reason: &'static str) {
        *self.0.entry(reason).or_default() += 1;
    }
}

/// Runs `cfg` on `kvm`, the guest's serial console on `console`.
pub fn run<W: Write>(kvm: &Kvm, cfg: &Config, console: W) -> Result<(Outcome, Trace), String> {
    if let Image::Flat(flat) = &cfg.image {
        let end = flat.load.checked_add(flat.bytes.len() as u64).filter(|e| *e <= cfg.mem_size as u64);
        if end.is_none() {
            return Err(format!("an image of {} bytes does not fit at {:#x} in {} bytes of guest memory",
                               flat.bytes.len(), flat.load, cfg.mem_size));
        }
        if flat.entry >= 0x10_0000 {
            return Err(format!("entry {:#x}: a flat image starts in real mode, below 1 MiB", flat.entry));
        }
    }
    if matches!(cfg.image, Image::Linux { .. }) && cfg.mem_size < 16 << 20 {
        return Err("a Linux guest needs at least 16M of memory".into());
    }
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), cfg.mem_size)])
        .map_err(|e| format!("guest memory of {} bytes: {e}", cfg.mem_size))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let host = mem.get_host_address(GuestAddress(0)).map_err(|e| format!("guest memory: {e}"))?;
    let region = kvm_userspace_memory_region {
        slot: 0, flags: 0, guest_phys_addr: 0, memory_size: cfg.mem_size as u64, userspace_addr: host as u64,
    };
    // SAFETY: `mem` maps the region and outlives the VM (both live until this function returns).
    unsafe { vm.set_user_memory_region(region) }.map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
    let mut vcpu = vm.create_vcpu(0).map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    match &cfg.image {
        Image::Flat(flat) => {
            mem.write_slice(&flat.bytes, GuestAddress(flat.load)).map_err(|e| format!("loading the image: {e}"))?;
            vcpu.set_cpuid2(&cpuid).map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
            enter_real_mode(&vcpu, flat.entry)?;
        }
        Image::Linux { kernel, initrd, cmdline } => {
            vcpu.set_cpuid2(&crate::linux::cpuid(cpuid)).map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
            let boot = crate::linux::Boot { kernel, initrd: initrd.as_deref(), cmdline };
            crate::linux::boot(&mem, cfg.mem_size as u64, &vcpu, &boot)?;
        }
    }

    let mut bus = PortBus::new(console);
    let mut trace = Trace::default();
    alarm::install()?;
    let deadline = cfg.timeout.map(|t| t.as_nanos() as u64);
    let outcome = loop {
        bus.update_irqs();
        offer_interrupt(&mut vcpu, &mut bus.pic)?;
        if deadline.is_some_and(|d| bus.now() >= d) {
            break Outcome::TimedOut(where_is(&vcpu));
        }
        // Leave KVM_RUN (EINTR) when the timer next fires or time is up, even if the guest
        // never exits.
        let wake = [bus.pit.next_irq0(), deadline].into_iter().flatten().min();
        alarm::at(wake.map(|t| t.saturating_sub(bus.now())));
        let exit = vcpu.run();
        match exit {
            Ok(VcpuExit::IoOut(port, data)) => {
                trace.count("io_out");
                if let Some(stop) = bus.write(port, data) {
                    break match stop {
                        Stop::Reset => Outcome::Reset,
                        Stop::DebugExit(v) => Outcome::DebugExit(v),
                    };
                }
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                trace.count("io_in");
                bus.read(port, data);
            }
            Ok(VcpuExit::MmioRead(_, data)) => {
                trace.count("mmio_read");
                data.fill(0xff); // nothing is mapped there
            }
            Ok(VcpuExit::MmioWrite(..)) => trace.count("mmio_write"),
            Ok(VcpuExit::Hlt) => {
                trace.count("hlt");
                // Only the timer can wake the guest (when interrupts are on): sleep until it
                // fires. Otherwise the guest stopped for good.
                let if_flag = vcpu.get_kvm_run().if_flag != 0;
                match bus.pit.next_irq0() {
                    Some(t) if if_flag => std::thread::sleep(Duration::from_nanos(t.saturating_sub(bus.now()))),
                    _ if if_flag && bus.pic.has_interrupt() => {}
                    _ => break Outcome::Halted,
                }
            }
            Ok(VcpuExit::IrqWindowOpen) => trace.count("irq_window_open"),
            Ok(VcpuExit::Shutdown) => {
                trace.count("shutdown");
                break Outcome::Shutdown;
            }
            Ok(VcpuExit::FailEntry(reason, _cpu)) => {
                trace.count("fail_entry");
                break Outcome::FailEntry(reason);
            }
            Ok(VcpuExit::InternalError) => {
                trace.count("internal_error");
                // SAFETY: `internal` is the union member KVM_EXIT_INTERNAL_ERROR fills.
                break Outcome::Internal(unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror });
            }
            Ok(VcpuExit::Intr) => trace.count("intr"),
            Ok(other) => break Outcome::Unexpected(format!("{other:?}")),
            Err(e) if e.errno() == libc::EINTR => trace.count("intr"),
            Err(e) => return Err(format!("KVM_RUN: {e}")),
        }
    };
    alarm::at(None);
    if bus.unclaimed.reads + bus.unclaimed.writes > 0 {
        trace.0.insert("io_unclaimed", bus.unclaimed.reads + bus.unclaimed.writes);
    }
    Ok((outcome, trace))
}

/// The vCPU's mode and instruction pointer, for a stuck guest's report.
fn where_is(vcpu: &VcpuFd) -> String {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => format!("rip {:#x} rsp {:#x} rflags {:#x} cs {:#x} cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}",
                                  r.rip, r.rsp, r.rflags, s.cs.selector, s.cr0, s.cr3, s.cr4, s.efer),
        _ => "unknown (registers unreadable)".into(),
    }
}

/// `KVM_INTERRUPT` (kvm-ioctls has no wrapper for it): queues external interrupt `vector`.
const KVM_INTERRUPT: libc::c_ulong = 0x4004_ae86;

/// Hands the PIC's request to the vCPU the way KVM's ABI asks without an in-kernel irqchip:
/// injected with `KVM_INTERRUPT` when `kvm_run` says the guest can take one, otherwise an
/// interrupt window is requested and the next exit comes as soon as it can.
fn offer_interrupt(vcpu: &mut VcpuFd, pic: &mut Pic) -> Result<(), String> {
    let run = vcpu.get_kvm_run();
    let ready = run.ready_for_interrupt_injection != 0 && run.if_flag != 0;
    run.request_interrupt_window = 0;
    if !pic.has_interrupt() {
        return Ok(());
    }
    if !ready {
        vcpu.get_kvm_run().request_interrupt_window = 1;
        return Ok(());
    }
    let Some(vector) = pic.acknowledge() else { return Ok(()) };
    let irq = vector as u32;
    // SAFETY: KVM_INTERRUPT reads one u32 from the pointer, which points to `irq`.
    if unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_INTERRUPT, &irq) } < 0 {
        return Err(format!("KVM_INTERRUPT: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A one-shot SIGALRM that makes `KVM_RUN` return (`EINTR`) when the timer is due.
mod alarm {
    extern "C" fn on_alarm(_: libc::c_int) {}

    /// Installs the handler, without SA_RESTART so that KVM_RUN returns.
    pub fn install() -> Result<(), String> {
        // SAFETY: a zeroed sigaction with a handler that does nothing is valid.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_alarm as *const () as usize;
        // SAFETY: installs a handler for SIGALRM; `sa` is initialized.
        if unsafe { libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()) } < 0 {
            return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Arms the alarm `ns` from now (at least 1 µs), or disarms it.
    pub fn at(ns: Option<u64>) {
        let ns = ns.map_or(0, |n| n.max(1000));
        let value = libc::timeval { tv_sec: (ns / 1_000_000_000) as _, tv_usec: ((ns % 1_000_000_000) / 1000) as _ };
        let t = libc::itimerval { it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 }, it_value: value };
        // SAFETY: `t` is a valid itimerval; the old value is not wanted.
        unsafe { libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut()) };
    }
}

/// Real mode at `entry` (< 1 MiB): CS covers the 64 KiB around it, IP is the rest.
fn enter_real_mode(vcpu: &VcpuFd, entry: u64) -> Result<(), String> {
    let mut s = vcpu.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    s.cs.base = entry & !0xffff;
    s.cs.selector = (s.cs.base >> 4) as u16;
    vcpu.set_sregs(&s).map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let mut r = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    r.rip = entry & 0xffff;
    r.rflags = 2;
    vcpu.set_regs(&r).map_err(|e| format!("KVM_SET_REGS: {e}"))
}
