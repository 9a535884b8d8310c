//! `rvmx run`: one VM, guest memory from rust-vmm's vm-memory, its vCPUs (each on its thread,
//! vcpu.rs) and the devices they share (machine.rs); it ends with how the guest stopped.

pub mod console;
pub mod kick;
pub mod machine;
pub mod vcpu;

use std::{collections::BTreeMap, io::Write, time::Duration};

use kvm_bindings::{kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

use crate::{
    devices::{isa::Isa, lapic},
    error::{Error, Result},
};
use machine::Machine;
use vcpu::Vcpu;

/// What to run.
pub struct Config {
    /// Guest RAM at guest-physical 0, in bytes.
    pub mem_size: usize,
    /// vCPUs (APIC IDs 0..cpus); the others wait for CPU 0's INIT and STARTUP IPIs.
    pub cpus: u8,
    /// What the guest runs.
    pub image: Image,
    /// Count exits by reason and print the table at the end.
    pub trace_exits: bool,
    /// Read the module's statistics of the VM before it is closed (`--stats`).
    pub stats: bool,
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
    /// No CPU can run again: each is in HLT with interrupts off or no timer running, or
    /// waits for a STARTUP IPI.
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
    pub fn count(&mut self, reason: &'static str) {
        *self.0.entry(reason).or_default() += 1;
    }
}

/// Runs `cfg` on `kvm`, the guest's serial console on `console`: one thread per vCPU.
pub fn run<W: Write + Send>(kvm: &Kvm, cfg: &Config, console: W) -> Result<Ran> {
    if let Image::Flat(flat) = &cfg.image {
        let end = flat.load.checked_add(flat.bytes.len() as u64).filter(|e| *e <= cfg.mem_size as u64);
        if end.is_none() {
            return Err(Error::ImageTooBig { len: flat.bytes.len(), load: flat.load, mem: cfg.mem_size });
        }
        if flat.entry >= 0x10_0000 {
            return Err(Error::EntryAbove1M(flat.entry));
        }
    }
    if matches!(cfg.image, Image::Linux { .. }) && cfg.mem_size < 16 << 20 {
        return Err(Error::LinuxMemory);
    }
    let max = kvm.get_max_vcpus();
    if cfg.cpus == 0 || cfg.cpus as usize > max {
        return Err(Error::Cpus { cpus: cfg.cpus, max });
    }
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), cfg.mem_size)])
        .map_err(|e| Error::Memory(cfg.mem_size, e))?;
    let vm = kvm.create_vm().map_err(Error::ioctl("KVM_CREATE_VM"))?;
    let host = mem.get_host_address(GuestAddress(0)).map_err(Error::guest_memory("guest memory"))?;
    let region = kvm_userspace_memory_region {
        slot: 0, flags: 0, guest_phys_addr: 0, memory_size: cfg.mem_size as u64, userspace_addr: host as u64,
    };
    // SAFETY: `mem` maps the region and outlives the VM (both live until this function returns).
    unsafe { vm.set_user_memory_region(region) }.map_err(Error::ioctl("KVM_SET_USER_MEMORY_REGION"))?;
    let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(Error::ioctl("KVM_GET_SUPPORTED_CPUID"))?;
    let mut vcpus = Vec::new();
    for index in 0..cfg.cpus as usize {
        let fd = vm.create_vcpu(index as u64).map_err(|e| Error::CreateVcpu(index, e))?;
        fd.set_cpuid2(&cpuid(&supported, index as u8)).map_err(Error::ioctl("KVM_SET_CPUID2"))?;
        let regs = fd.get_regs().map_err(Error::ioctl("KVM_GET_REGS"))?;
        let sregs = fd.get_sregs().map_err(Error::ioctl("KVM_GET_SREGS"))?;
        vcpus.push(Vcpu { fd, index, reset: (regs, sregs) });
    }
    match &cfg.image {
        Image::Flat(flat) => {
            mem.write_slice(&flat.bytes, GuestAddress(flat.load)).map_err(Error::guest_memory("loading the image"))?;
            enter_real_mode(&vcpus[0].fd, flat.entry)?;
        }
        Image::Linux { kernel, initrd, cmdline } => {
            let boot = crate::boot::linux::Boot { kernel, initrd: initrd.as_deref(), cmdline };
            crate::boot::linux::boot(&mem, cfg.mem_size as u64, &vcpus[0].fd, &boot)?;
            // The processors and their APICs, as firmware would list them.
            let leaf1 = supported.as_slice().iter().find(|e| e.function == 1).map_or((0, 0), |e| (e.eax, e.edx));
            let mp = crate::boot::mptable::build(cfg.cpus, leaf1.0, leaf1.1, lapic::BASE as u32)
                .ok_or(Error::MpTable(cfg.cpus))?;
            mem.write_slice(&mp, GuestAddress(crate::boot::mptable::ADDR)).map_err(Error::guest_memory("MP table"))?;
        }
    }
    kick::install()?;
    let _terminal = console::Terminal::raw();
    let deadline = cfg.timeout.map(|t| t.as_nanos() as u64);
    let machine = Machine::new(Isa::new(console), cfg.cpus, deadline);
    let results: Vec<Result<Trace>> = std::thread::scope(|s| {
        let threads: Vec<_> = vcpus.into_iter().map(|v| {
            let m = &machine;
            s.spawn(move || vcpu::run(m, v))
        }).collect();
        s.spawn(|| console::pump(&machine));
        threads.into_iter().map(|t| t.join().unwrap_or(Err(Error::Panicked))).collect()
    });
    let mut trace = Trace::default();
    for r in results {
        for (reason, n) in r?.0 {
            *trace.0.entry(reason).or_default() += n;
        }
    }
    let isa = machine.isa();
    if isa.unclaimed.reads + isa.unclaimed.writes > 0 {
        trace.0.insert("io_unclaimed", isa.unclaimed.reads + isa.unclaimed.writes);
    }
    drop(isa);
    let outcome = machine.outcome().ok_or(Error::NoOutcome)?;
    // While the VM is still open: its debugfs directory goes with it.
    let stats = cfg.stats.then(crate::stats::own_vm);
    Ok(Ran { outcome, trace, stats })
}

/// How a guest run ended, and what was counted on the way.
pub struct Ran {
    pub outcome: Outcome,
    pub trace: Trace,
    /// The module's statistics of the VM, if asked for.
    pub stats: Option<Result<crate::stats::VmStats, crate::stats::Error>>,
}

/// CPU `id`'s CPUID: what the device supports, with its initial APIC ID in leaf 1, and
/// neither x2APIC nor the TSC-deadline timer (the local APIC is a userspace xAPIC).
fn cpuid(supported: &CpuId, id: u8) -> CpuId {
    let mut c = supported.clone();
    for e in c.as_mut_slice().iter_mut().filter(|e| e.function == 1) {
        e.ebx = (e.ebx & 0x00ff_ffff) | (id as u32) << 24;
        e.ecx &= !(1 << 21 | 1 << 24); // x2APIC, TSC-deadline
        e.edx |= 1 << 9; // APIC
    }
    c
}

/// Real mode at `entry` (< 1 MiB): CS covers the 64 KiB around it, IP is the rest.
fn enter_real_mode(vcpu: &VcpuFd, entry: u64) -> Result<()> {
    let mut s = vcpu.get_sregs().map_err(Error::ioctl("KVM_GET_SREGS"))?;
    s.cs.base = entry & !0xffff;
    s.cs.selector = (s.cs.base >> 4) as u16;
    vcpu.set_sregs(&s).map_err(Error::ioctl("KVM_SET_SREGS"))?;
    let mut r = vcpu.get_regs().map_err(Error::ioctl("KVM_GET_REGS"))?;
    r.rip = entry & 0xffff;
    r.rflags = 2;
    vcpu.set_regs(&r).map_err(Error::ioctl("KVM_SET_REGS"))
}
