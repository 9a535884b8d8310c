//! `rvmx`: the userspace side of rvmx. Drives `/dev/rvmx` (or `/dev/kvm`, for comparison)
//! through rust-vmm's `kvm-ioctls`, exactly as any KVM client would.

mod caps;

use std::{ffi::CString, process::ExitCode};

use clap::{Parser, Subcommand};
use kvm_ioctls::Kvm;

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
}

/// Opens `path` as a KVM system fd, with an error that says what to do.
fn open_device(path: &str) -> Result<Kvm, String> {
    let c = CString::new(path).map_err(|_| format!("{path}: invalid path"))?;
    Kvm::new_with_path(&c).map_err(|e| match e.errno() {
        libc::ENOENT => {
            format!("{path}: no such device (is the module loaded? try: insmod rvmx.ko)")
        }
        _ => format!("{path}: {e}"),
    })
}

fn info(device: &str) -> Result<(), String> {
    let kvm = open_device(device)?;
    let version = kvm.get_api_version();
    let mmap = kvm.get_vcpu_mmap_size().map_err(|e| format!("KVM_GET_VCPU_MMAP_SIZE: {e}"))?;
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
    if version != 12 {
        return Err(format!("{device}: API version {version}, expected 12"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { device } => info(&device),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rvmx: {e}");
            ExitCode::FAILURE
        }
    }
}
