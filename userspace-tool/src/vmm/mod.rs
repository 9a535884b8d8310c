//! `rvmx run`: one VM. [`run`] creates it (guest memory from rust-vmm's vm-memory in one slot,
//! the interrupt controller where `--irqchip` says, the vCPUs with their CPUID, cpuid.rs),
//! loads the guest (`boot/`), then runs a thread per vCPU (vcpu.rs) over what they share
//! (machine.rs: the port devices, with `--irqchip user` each CPU's local APIC and power state),
//! and one that feeds stdin to COM1 (console.rs). A vCPU thread hands each exit that comes back
//! to userspace to a bus (`devices/bus.rs`); the VM ends with an [`Outcome`].

mod console;
mod cpuid;
mod exit_count;
mod idle;
mod kick;
mod machine;
mod outcome;
mod trace;
mod vcpu;
mod virtio;

pub use outcome::Outcome;
pub use trace::Trace;

use std::{io::Write, time::Duration};

use kvm_bindings::{kvm_enable_cap, kvm_pit_config, kvm_userspace_memory_region, KVM_CAP_SPLIT_IRQCHIP, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::{
    devices::{
        isa::Isa,
        lapic, serial,
        virtio::{block::{Block, Disk}, rng::Rng},
    },
    error::{Error, Result},
    layout,
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
    /// Where the interrupt controller is.
    pub irqchip: Irqchip,
    /// Disk images for virtio-blk devices (the guest's vda, vdb, ...).
    pub disks: Vec<DiskSpec>,
    /// A virtio-rng device.
    pub rng: bool,
}

/// `--disk FILE[,ro]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: std::path::PathBuf,
    pub read_only: bool,
}

/// Where the interrupt controller is. Without the kernel's, the 8259s and the 8254 are here,
/// the 8259s wired to CPU 0's LINT0 (virtual-wire mode: the MP table lists no I/O APIC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Irqchip {
    /// The local APICs in the kernel (`KVM_CAP_SPLIT_IRQCHIP`): IPIs, APIC timers, INIT,
    /// STARTUP and HLT stay there; the 8259's interrupts go in with `KVM_INTERRUPT`.
    Split,
    /// All of it in the kernel, as Firecracker has it (`KVM_CREATE_IRQCHIP`, `KVM_CREATE_PIT2`):
    /// the 8259s, the I/O APIC (in the MP table), the 8254 and the local APICs. Only the UART
    /// (its IRQ 4 through an irqfd), the i8042 and the CMOS clock stay here.
    Kernel,
    /// Every local APIC here too (devices/lapic.rs), as with no in-kernel irqchip.
    User,
}

/// Where the kernel's I/O APIC answers (`KVM_CREATE_IRQCHIP`'s).
const IOAPIC_BASE: u32 = 0xfec0_0000;

/// `KVM_CREATE_IRQCHIP` and `KVM_CREATE_PIT2` (port 0x61 answered there too), and an irqfd
/// for COM1's IRQ (KVM's default routes take GSI 4 to both chips).
fn kernel_irqchip(vm: &VmFd) -> Result<EventFd> {
    vm.create_irq_chip().map_err(Error::ioctl("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
    vm.create_pit2(pit).map_err(Error::ioctl("KVM_CREATE_PIT2"))?;
    let com1 = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Os("eventfd", e))?;
    vm.register_irqfd(&com1, serial::IRQ.into()).map_err(Error::ioctl("KVM_IRQFD"))?;
    Ok(com1)
}

/// What the guest runs.
pub enum Image {
    /// A raw image, loaded at `load` and entered at `entry` in real mode.
    Flat(crate::boot::flat::FlatImage),
    /// A Linux bzImage, with an optional initrd and its command line.
    Linux { kernel: std::path::PathBuf, initrd: Option<std::path::PathBuf>, cmdline: String },
}

/// Runs `cfg` on `kvm`, the guest's serial console on `console`: one thread per vCPU.
pub fn run<W: Write + Send>(kvm: &Kvm, cfg: &Config, console: W) -> Result<Ran> {
    if let Image::Flat(flat) = &cfg.image {
        flat.check(cfg.mem_size)?;
    }
    if matches!(cfg.image, Image::Linux { .. }) && cfg.mem_size < 16 << 20 {
        return Err(Error::LinuxMemory);
    }
    let max = kvm.get_max_vcpus();
    if cfg.cpus == 0 || cfg.cpus as usize > max {
        return Err(Error::Cpus { cpus: cfg.cpus, max });
    }
    // The disks first: a bad image ends the run before anything is created or written.
    let mut devices: Vec<Box<dyn crate::devices::virtio::Device>> = Vec::new();
    for (i, d) in cfg.disks.iter().enumerate() {
        let disk = Disk::open(&d.path, d.read_only)?;
        devices.push(Box::new(Block::new(disk, i)));
    }
    if cfg.rng {
        devices.push(Box::new(Rng));
    }
    let ram = layout::ram(cfg.mem_size as u64);
    let ranges: Vec<_> = ram.iter().map(|&(addr, len)| (GuestAddress(addr), len as usize)).collect();
    let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).map_err(|e| Error::Memory(cfg.mem_size, e))?;
    let vm = kvm.create_vm().map_err(Error::ioctl("KVM_CREATE_VM"))?;
    for (slot, &(addr, len)) in ram.iter().enumerate() {
        let host = mem.get_host_address(GuestAddress(addr)).map_err(Error::guest_memory("guest memory"))?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32, flags: 0, guest_phys_addr: addr, memory_size: len, userspace_addr: host as u64,
        };
        // SAFETY: `mem` maps the region and outlives the VM (both live until this function
        // returns; the machine that takes the VM is declared later, so it is dropped first).
        unsafe { vm.set_user_memory_region(region) }.map_err(Error::ioctl("KVM_SET_USER_MEMORY_REGION"))?;
    }
    let in_kernel = cpuid::Apic::InKernel { tsc_deadline: kvm.check_extension(Cap::TscDeadlineTimer) };
    let (apic, com1_irq) = match cfg.irqchip {
        Irqchip::Split => {
            // No I/O APIC here: no GSI routes kept for one.
            let split = kvm_enable_cap { cap: KVM_CAP_SPLIT_IRQCHIP, ..Default::default() };
            vm.enable_cap(&split).map_err(Error::SplitIrqchip)?;
            (in_kernel, None)
        }
        Irqchip::Kernel => (in_kernel, Some(kernel_irqchip(&vm)?)),
        Irqchip::User => (cpuid::Apic::User, None),
    };
    let virtio = virtio::attach(&vm, devices, cfg.irqchip == Irqchip::Kernel)?;
    let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(Error::ioctl("KVM_GET_SUPPORTED_CPUID"))?;
    let mut vcpus = Vec::new();
    for index in 0..cfg.cpus as usize {
        let fd = vm.create_vcpu(index as u64).map_err(|e| Error::CreateVcpu(index, e))?;
        fd.set_cpuid2(&cpuid::for_cpu(&supported, index as u8, apic)).map_err(Error::ioctl("KVM_SET_CPUID2"))?;
        let regs = fd.get_regs().map_err(Error::ioctl("KVM_GET_REGS"))?;
        let sregs = fd.get_sregs().map_err(Error::ioctl("KVM_GET_SREGS"))?;
        vcpus.push(Vcpu { fd, index, reset: (regs, sregs) });
    }
    match &cfg.image {
        Image::Flat(flat) => {
            flat.load(&mem, &vcpus[0].fd)?;
        }
        Image::Linux { kernel, initrd, cmdline } => {
            let ioapic = cfg.irqchip == Irqchip::Kernel;
            let boot = crate::boot::linux::Boot { kernel, initrd: initrd.as_deref(), cmdline, ioapic };
            crate::boot::linux::boot(&mem, &ram, &vcpus[0].fd, &boot)?;
            // The processors and their APICs, as firmware would list them: in ACPI's tables,
            // and for kernels built without ACPI in an MP table, which can describe only a
            // machine with an I/O APIC (without one, a kernel that reads it says "BIOS bug, no
            // explicit IRQ entries") and at most 40 CPUs (larger machines: ACPI alone).
            let leaf1 = supported.as_slice().iter().find(|e| e.function == 1).map_or((0, 0), |e| (e.eax, e.edx));
            let mp = ioapic.then(|| crate::boot::mptable::build(cfg.cpus, leaf1.0, leaf1.1, lapic::BASE as u32, IOAPIC_BASE));
            if let Some(mp) = mp.flatten() {
                mem.write_slice(&mp, GuestAddress(crate::boot::mptable::ADDR)).map_err(Error::guest_memory("MP table"))?;
            }
            let acpi = crate::boot::acpi::Machine {
                cpus: cfg.cpus, lapic: lapic::BASE as u32, ioapic: ioapic.then_some((IOAPIC_BASE, cfg.cpus)),
                virtio: virtio.iter().map(|v| (v.base as u32, v.irq)).collect(),
            };
            let tables = crate::boot::acpi::build(&acpi).ok_or(Error::AcpiTables(cfg.cpus))?;
            mem.write_slice(&tables, GuestAddress(crate::boot::acpi::ADDR)).map_err(Error::guest_memory("ACPI tables"))?;
        }
    }
    kick::install()?;
    let _terminal = console::Terminal::raw();
    let deadline = cfg.timeout.map(|t| t.as_nanos() as u64);
    let machine = Machine::new(Isa::new(console, cfg.irqchip != Irqchip::Kernel), cfg.cpus, deadline, cfg.irqchip, com1_irq, vm, virtio);
    let results: Vec<Result<Trace>> = std::thread::scope(|s| {
        let threads: Vec<_> = vcpus.into_iter().map(|v| {
            let m = &machine;
            s.spawn(move || vcpu::run(m, v))
        }).collect();
        s.spawn(|| console::pump(&machine));
        for i in 0..machine.virtio.len() {
            let (m, mem) = (&machine, &mem);
            s.spawn(move || virtio::serve(m, i, mem));
        }
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
