//! `rvmx`: the userspace side of rvmx. Drives `/dev/rvmx` (or `/dev/kvm`, for comparison)
//! through rust-vmm's `kvm-ioctls`, exactly as any KVM client would.

mod boot;
mod caps;
mod devices;
mod error;
mod layout;
mod stats;
mod vmm;

use std::{ffi::CString, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use kvm_ioctls::Kvm;
use rvmx_logic::kvm_abi::KVM_API_VERSION;

use error::{Error, Result};

#[derive(Parser)]
#[command(name = "rvmx", version, about = "A small KVM-compatible hypervisor's command")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what the device offers (API version, vCPU mmap size, capabilities) and the host
    /// CPU's VMX capabilities.
    Info {
        /// The KVM-compatible device to open.
        #[arg(long, default_value = "/dev/rvmx")]
        device: String,
    },
    /// Run a guest: a Linux bzImage, or a raw image entered in real mode. Its serial port
    /// (COM1) is this terminal; it ends with HLT (interrupts off), an i8042 reset (a guest
    /// `reboot`), a triple fault, or a byte written to port 0xf4 (then the exit status).
    Run {
        /// The KVM-compatible device to open.
        #[arg(long, default_value = "/dev/rvmx")]
        device: String,
        /// A Linux bzImage, booted with the 64-bit boot protocol.
        #[arg(long, required_unless_present = "flat", conflicts_with = "flat")]
        kernel: Option<PathBuf>,
        /// An initrd (initramfs) for the kernel.
        #[arg(long, requires = "kernel")]
        initrd: Option<PathBuf>,
        /// The kernel's command line.
        #[arg(long, requires = "kernel", default_value = "console=ttyS0 reboot=k panic=-1")]
        cmdline: String,
        /// A raw image (with --entry).
        #[arg(long, requires = "entry")]
        flat: Option<PathBuf>,
        /// Where a raw image starts (below 1 MiB: real mode), e.g. 0x7c00.
        #[arg(long, value_parser = parse_addr)]
        entry: Option<u64>,
        /// Where the image is loaded (default: the entry).
        #[arg(long, value_parser = parse_addr)]
        load: Option<u64>,
        /// vCPUs: CPU 0 boots, the guest starts the others with INIT and STARTUP IPIs.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=64))]
        cpus: u8,
        /// Guest memory, e.g. 256M or 1G.
        #[arg(long, default_value = "256M", value_parser = parse_size)]
        mem: usize,
        /// Count exits by reason and print the table at the end (on stderr).
        #[arg(long)]
        trace_exits: bool,
        /// Write the guest's serial output to this file instead of stdout (input stays stdin).
        #[arg(long)]
        console: Option<PathBuf>,
        /// Stop the guest after this many seconds (exit status 14, with where it was).
        #[arg(long)]
        timeout: Option<u64>,
        /// Print the module's statistics of the VM at the end (on stderr; rvmx only).
        #[arg(long)]
        stats: bool,
        /// Where the interrupt controller is: the local APICs in the kernel (split irqchip;
        /// the 8259s and the 8254 stay here), all of it and the 8254 in the kernel (kernel:
        /// only the UART, the i8042 and the CMOS clock stay here), or all of it here (user).
        #[arg(long, value_enum, default_value_t = vmm::Irqchip::Split)]
        irqchip: vmm::Irqchip,
        /// A disk image as a virtio-blk device (the guest's /dev/vda, then vdb...), read-write,
        /// or read-only with ",ro". Repeatable. The image is locked while the VM runs.
        #[arg(long, value_name = "FILE[,ro]", value_parser = parse_disk)]
        disk: Vec<vmm::DiskSpec>,
        /// A virtio-rng device: the guest's entropy from the host's random-number generator.
        #[arg(long)]
        rng: bool,
    },
    /// Show rvmx's statistics of running VMs (from debugfs): exits by reason, exits to
    /// userspace, EPT faults, VMX windows, time in guest mode; per VM and per vCPU.
    Stat {
        /// One VM: its directory name (PID-N), or a process ID for all of its VMs.
        vm: Option<String>,
        /// Where rvmx's debugfs directory is.
        #[arg(long, default_value = stats::DEBUGFS)]
        debugfs: PathBuf,
    },
}

/// A command-line value clap's own parsers cannot check (clap prints it after the value).
#[derive(Debug, PartialEq, thiserror::Error)]
enum ArgError {
    #[error("'{0}' is not an address (use 0x... or decimal)")]
    Address(String),
    #[error("'{0}' is not a memory size (use a number with K, M or G, e.g. 256M)")]
    Size(String),
    #[error("memory size {0}: must be whole 4 KiB pages, from 4K to 64G")]
    SizeRange(String),
    #[error("'{0}' is not a disk (use FILE or FILE,ro)")]
    Disk(String),
}

/// A guest-physical address: hexadecimal with 0x, or decimal.
fn parse_addr(s: &str) -> Result<u64, ArgError> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| ArgError::Address(s.into()))
}

/// A memory size: bytes, or a number with K, M or G; whole pages, 4K to 64G.
fn parse_size(s: &str) -> Result<usize, ArgError> {
    let bad = || ArgError::Size(s.into());
    let (digits, shift) = match s.as_bytes().last().ok_or_else(bad)?.to_ascii_uppercase() {
        b'K' => (&s[..s.len() - 1], 10),
        b'M' => (&s[..s.len() - 1], 20),
        b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(1 << shift).ok_or_else(bad)?;
    if bytes % 4096 != 0 || !(4096..=64 << 30).contains(&bytes) {
        return Err(ArgError::SizeRange(s.into()));
    }
    Ok(bytes as usize)
}

/// `FILE` or `FILE,ro`.
fn parse_disk(s: &str) -> Result<vmm::DiskSpec, ArgError> {
    let (path, read_only) = match s.strip_suffix(",ro") {
        Some(path) => (path, true),
        None => (s, false),
    };
    if path.is_empty() {
        return Err(ArgError::Disk(s.into()));
    }
    Ok(vmm::DiskSpec { path: path.into(), read_only })
}

/// Opens `path` as a KVM system fd, with an error that says what to do.
fn open_device(path: &str) -> Result<Kvm> {
    let c = CString::new(path).map_err(|_| Error::DevicePath(path.into()))?;
    Kvm::new_with_path(&c).map_err(|source| match source.errno() {
        libc::ENOENT => Error::NoDevice(path.into()),
        _ => Error::Device { path: path.into(), source },
    })
}

fn info(device: &str) -> Result<()> {
    let kvm = open_device(device)?;
    let version = kvm.get_api_version();
    let mmap = kvm.get_vcpu_mmap_size().map_err(Error::ioctl("KVM_GET_VCPU_MMAP_SIZE"))?;
    println!("device:          {device}");
    println!("API version:     {version}");
    println!("vCPU mmap size:  {mmap} bytes");
    let offered: Vec<String> = caps::KNOWN
        .iter()
        .filter_map(|&(name, cap)| {
            let v = kvm.check_extension_raw(cap.into());
            (v > 0).then(|| if v == 1 { name.to_string() } else { format!("{name}={v}") })
        })
        .collect();
    println!(
        "capabilities:    {}",
        if offered.is_empty() { "none yet".to_string() } else { offered.join(" ") }
    );
    match caps::host_vmx() {
        Ok(line) => println!("host VMX:        {line}"),
        Err(e) => println!("host VMX:        unknown ({e})"),
    }
    if version as isize != KVM_API_VERSION {
        return Err(Error::ApiVersion { device: device.into(), version });
    }
    Ok(())
}

/// `rvmx run`: the guest's status (see [`vmm::Outcome::status`]).
fn run(device: &str, cfg: vmm::Config, console: Option<&std::path::Path>) -> Result<u8> {
    let kvm = open_device(device)?;
    let out: Box<dyn std::io::Write + Send> = match console {
        Some(path) => Box::new(std::fs::File::create(path).map_err(Error::file(path))?),
        None => Box::new(std::io::stdout()),
    };
    let vmm::Ran { outcome, trace, stats } = vmm::run(&kvm, &cfg, out)?;
    if cfg.trace_exits {
        eprintln!("rvmx: exits by reason:");
        for (reason, n) in &trace.0 {
            eprintln!("  {reason:<16} {n}");
        }
    }
    match stats {
        Some(Ok(vm)) => eprint!("rvmx: the module's statistics of this VM:\n{}", stats::table(&vm)),
        Some(Err(e)) => eprintln!("rvmx: statistics: {e}"),
        None => {}
    }
    eprintln!("rvmx: {}", outcome.describe());
    Ok(outcome.status())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { device } => info(&device).map(|()| 0),
        Command::Stat { vm, debugfs } => stats::stat(&debugfs, vm.as_deref()).map(|()| 0).map_err(Error::from),
        Command::Run { device, kernel, initrd, cmdline, flat, entry, load, cpus, mem, trace_exits, console, timeout, stats, irqchip, disk, rng } => {
            let image = match (kernel, flat) {
                (Some(kernel), _) => Ok(vmm::Image::Linux { kernel, initrd, cmdline }),
                (None, Some(flat)) => std::fs::read(&flat).map_err(Error::file(&flat)).map(|bytes| {
                    let entry = entry.unwrap_or(0);
                    vmm::Image::Flat(boot::flat::FlatImage { bytes, load: load.unwrap_or(entry), entry })
                }),
                (None, None) => Err(Error::NoImage),
            };
            let timeout = timeout.map(std::time::Duration::from_secs);
            image.and_then(|image| run(&device, vmm::Config { mem_size: mem, cpus, image, trace_exits, stats, timeout, irqchip, disks: disk, rng }, console.as_deref()))
        }
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("rvmx: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_addresses() {
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("8192"), Ok(8192));
        assert!(parse_size("12X").unwrap_err().to_string().contains("not a memory size"));
        assert!(parse_size("1000").unwrap_err().to_string().contains("whole 4 KiB pages"));
        assert!(parse_size("65G").is_err() && parse_size("").is_err() && parse_size("M").is_err());
        assert_eq!(parse_addr("0x7c00"), Ok(0x7c00));
        assert_eq!(parse_addr("4096"), Ok(4096));
        assert!(parse_addr("0xzz").is_err());
        assert_eq!(parse_disk("a.img"), Ok(vmm::DiskSpec { path: "a.img".into(), read_only: false }));
        assert_eq!(parse_disk("/x/a,b,ro"), Ok(vmm::DiskSpec { path: "/x/a,b".into(), read_only: true }));
        assert!(parse_disk(",ro").is_err() && parse_disk("").is_err());
    }
}
