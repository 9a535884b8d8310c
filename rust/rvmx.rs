// SPDX-License-Identifier: GPL-2.0

//! rvmx: a small hypervisor with KVM's userspace ABI, written in Rust.
//!
//! Guests run in VMX non-root mode; privileged operations trap to this module in root mode;
//! EPT maps only memory userspace gave the guest; devices are emulated in userspace. Loading
//! the module checks the CPU and registers `/dev/rvmx`, which speaks KVM's ioctls.
//!
//! One concept per file:
//! - [`vmx_caps`]: VMX capability MSRs and what rvmx requires of them (pure logic).
//! - [`kvm_abi`]: KVM's ioctl numbers and answers (pure logic).
//! - [`x86`]: the privileged instructions, wrapped once.
//! - [`mem`]: physical addresses of kernel pages.
//! - [`cpuhp`]: a CPU-online callback.
//! - [`vmx`]: VMXON regions and the interrupts-off windows that hold VMX operation.
//! - [`system`]: the `/dev/rvmx` system fd.
//! - [`fd`]: anonymous-inode fds for VM and vCPU objects.
//! - [`memslot_rules`]: what `KVM_SET_USER_MEMORY_REGION` may do (pure logic).
//! - [`vm`]: a VM and its VM fd.
//! - [`vcpu_state`]: reset values and validity of vCPU registers (pure logic).
//! - [`vcpu`]: a vCPU and its vCPU fd.
//! - [`vmcs_fields`]: VMCS field encodings as typed constants (pure logic).
//! - [`vmcs`]: VMCS regions and VMREAD/VMWRITE on the current one.
//! - [`ept_bits`], [`ept`]: EPT entry encodings (pure) and a VM's EPT tables.
//! - [`entry`]: the VM entry/exit stub.
//! - [`host_state`], [`guest_state`]: host state around a window; controls and guest state.
//! - [`vmx_exit`], [`exit`]: exit reasons decoded (pure) and the exit dispatch.
//! - [`run`]: `KVM_RUN` and the VMX window.
//! - [`events`]: interrupts, NMIs and exceptions for the guest, and their reinjection (pure).
//! - [`insn`], [`guest_paging`], [`emulate`]: the MMIO instruction decoder and the guest page
//!   walk (pure), and the MMIO and string-I/O exits built on them.
//! - [`cpuid_table`]: the CPUID rvmx offers guests and the CPUID exit's lookup (pure logic).
//! - [`msr_rules`], [`msr`]: which MSRs a guest has (pure) and where they live.
//! - [`xstate`], [`fpu`]: the guest's XSAVE image and XCR0 rules (pure), switched with the
//!   host's FPU state inside a window.
//! - [`debugregs`]: the guest's debug registers and the host's put back after a window.
//! - [`guest_debug`]: `KVM_SET_GUEST_DEBUG`, a userspace debugger's view of the guest (pure).
//! - [`stats_format`], [`stats`]: per-vCPU counters and their text (pure), in debugfs.

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

mod cpuhp;
#[allow(dead_code)]
pub mod cpuid_table;
mod emulate;
#[allow(dead_code)]
pub mod events;
mod entry;
mod ept;
#[allow(dead_code)]
pub mod ept_bits;
mod exit;
mod fd;
mod fpu;
mod debugregs;
#[allow(dead_code)]
pub mod guest_paging;
#[allow(dead_code)]
pub mod guest_debug;
mod guest_state;
mod host_state;
#[allow(dead_code)]
pub mod insn;
// Shared with the host tests and the `rvmx` tool (hence `pub`), which use items the module
// does not (yet).
#[allow(dead_code)]
pub mod kvm_abi;
mod ioeventfd;
#[allow(dead_code)]
pub mod ioeventfd_rules;
#[allow(dead_code)]
pub mod mce;
mod guest_memory;
pub mod hva_index;
mod mem;
pub mod mmio_fragments;
mod mmu_notifier;
mod mitigations;
#[allow(dead_code)]
pub mod mitigation_rules;
mod msr;
#[allow(dead_code)]
pub mod msr_rules;
#[allow(dead_code)]
pub mod memslot_rules;
mod run;
mod sched;
mod stats;
#[allow(dead_code)]
pub mod stats_format;
mod system;
mod vcpu;
#[allow(dead_code)]
pub mod vcpu_state;
mod vm;
mod vmcs;
#[allow(dead_code)]
pub mod vmcs_fields;
mod vmx;
#[allow(dead_code)]
pub mod vmx_caps;
#[allow(dead_code)]
pub mod vmx_exit;
mod x86;
#[allow(dead_code)]
pub mod xstate;

module! {
    type: RvmxModule,
    name: "rvmx",
    authors: ["The rvmx developers"],
    description: "A small KVM-compatible hypervisor for Intel VMX, in Rust",
    license: "GPL",
    params: {
        fault_around: u32 {
            default: 16,
            description: "Guest pages mapped per EPT fault on first touch: the unmapped ones of the aligned block of this many pages (power of two, up to 512) around the page touched; 1 maps only that page, as KVM does",
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
    _dev: MiscDeviceRegistration<system::SystemFd>,
    _vmx: vmx::VmxRegistration,
    /// debugfs' `rvmx` directory, gone after every VM's.
    _stats: stats::StatsRoot,
}

impl kernel::InPlaceModule for RvmxModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            // VMX is checked before /dev/rvmx appears.
            _vmx: vmx::VmxRegistration::new()?,
            _stats: stats::StatsRoot::new()?,
            _dev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"rvmx" }),
        })
    }
}
