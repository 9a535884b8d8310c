// SPDX-License-Identifier: GPL-2.0

//! rvmx: a small hypervisor with KVM's userspace ABI, written in Rust.
//!
//! Guests run in VMX non-root mode; privileged operations trap to this module in root mode;
//! EPT maps only memory userspace gave the guest; devices are emulated in userspace. Loading
//! the module checks the CPU and registers `/dev/rvmx`, which speaks KVM's ioctls.
//!
//! The map of the module is in `docs/architecture.md`; each folder's `mod.rs` says what its
//! layer owns.

// A panic in the kernel crashes the host, and guests and ioctl callers control many values:
// no overflowing arithmetic, unchecked indexing, unwrap or panic (`make lint`, docs/no-panics.md).
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use kernel::{
    miscdevice::{MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
};

// Layers, from the hardware up (docs/architecture.md says which uses which).
/// Kernel-independent logic (ABI, encodings, rules), also built on the host for `cargo test`.
/// Shared with the `rvmx` tool, so the module does not use every item.
#[allow(dead_code)]
pub mod logic;
mod host;
mod vmx;
mod mm;
mod cpu;
mod run;
mod irq;
mod kvm;

module! {
    type: RvmxModule,
    name: "rvmx",
    authors: ["The rvmx developers"],
    description: "A small KVM-compatible hypervisor for Intel VMX, in Rust",
    license: "GPL",
    params: {
        fault_around: u32 {
            default: 16,
            description: "Guest pages mapped per EPT fault on first touch: the unmapped ones of the aligned block of this many pages (power of two, up to 512) around the page touched, if the host has them all or the guest has a page beside it (it touches memory in order); 1 maps only that page, as KVM does",
        },
        halt_poll_ns: u32 {
            default: 200000,
            description: "Longest time (ns) a vCPU whose guest halted watches for a wake-up before it sleeps, as KVM's parameter of the same name but set at load time only (a VM may set its own with KVM_CAP_HALT_POLL); the time polled adapts per vCPU below it; 0: no polling",
        },
        dump_invalid_vmcs: bool {
            default: false,
            description: "Log the guest state of a VMCS whose VM entry failed (at most 8 per load), as kvm_intel's parameter of the same name",
        },
    },
}

#[pin_data]
struct RvmxModule {
    /// Declared first so it is dropped first: no file can reach VMX state after that.
    #[pin]
    _dev: MiscDeviceRegistration<kvm::system::SystemFd>,
    _vmx: vmx::operation::VmxRegistration,
    /// debugfs' `rvmx` directory, gone after every VM's.
    _stats: kvm::stats::StatsRoot,
}

impl kernel::InPlaceModule for RvmxModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            // VMX is checked before /dev/rvmx appears.
            _vmx: vmx::operation::VmxRegistration::new()?,
            _stats: kvm::stats::StatsRoot::new()?,
            _dev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"rvmx" }),
        })
    }
}
