// SPDX-License-Identifier: GPL-2.0

//! The KVM userspace ABI that `/dev/rvmx` speaks: ioctl numbers, constants and answers.
//!
//! rvmx's ABI *is* KVM's (`include/uapi/linux/kvm.h`, `Documentation/virt/kvm/api.rst`), so
//! unmodified KVM clients work. Pure logic, also compiled and unit-tested on the host.

/// The ioctl "type" byte of every KVM ioctl.
pub const KVMIO: u32 = 0xAE;

/// `KVM_GET_API_VERSION` answers this; clients refuse anything else.
pub const KVM_API_VERSION: isize = 12;

/// Linux `_IOC` encoding (x86): direction in bits 31:30, size 29:16, type 15:8, number 7:0.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (KVMIO << 8) | nr
}
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;
const IOC_READ_WRITE: u32 = 3;

/// `_IO(KVMIO, nr)`.
pub const fn io(nr: u32) -> u32 {
    ioc(IOC_NONE, nr, 0)
}
/// `_IOW(KVMIO, nr, T)`: userspace writes a `T`.
pub const fn iow<T>(nr: u32) -> u32 {
    ioc(IOC_WRITE, nr, core::mem::size_of::<T>())
}
/// `_IOR(KVMIO, nr, T)`: userspace reads a `T`.
pub const fn ior<T>(nr: u32) -> u32 {
    ioc(IOC_READ, nr, core::mem::size_of::<T>())
}
/// `_IOWR(KVMIO, nr, T)` where `T` has `size` bytes.
pub const fn iowr(nr: u32, size: usize) -> u32 {
    ioc(IOC_READ_WRITE, nr, size)
}

// System ioctls (on the `/dev/rvmx` fd).
/// Returns [`KVM_API_VERSION`]; the argument must be 0.
pub const KVM_GET_API_VERSION: u32 = io(0x00);
/// Creates a VM and returns its fd.
pub const KVM_CREATE_VM: u32 = io(0x01);
/// Lists the MSRs saved and restored by `KVM_GET/SET_MSRS` (`struct kvm_msr_list`, 4 bytes).
pub const KVM_GET_MSR_INDEX_LIST: u32 = iowr(0x02, 4);
/// Lists the feature MSRs `KVM_GET_MSRS` on the system fd reads (`struct kvm_msr_list`).
pub const KVM_GET_MSR_FEATURE_INDEX_LIST: u32 = iowr(0x0a, 4);
/// Asks whether a capability is available; 0 means no, a positive value yes (or a limit).
pub const KVM_CHECK_EXTENSION: u32 = io(0x03);
/// Size of the vCPU fd's mmap area; the argument must be 0.
pub const KVM_GET_VCPU_MMAP_SIZE: u32 = io(0x04);
/// The CPUID entries a guest may be given (`struct kvm_cpuid2`, 8 bytes).
pub const KVM_GET_SUPPORTED_CPUID: u32 = iowr(0x05, 8);
/// The IA32_MCG_CAP bits `KVM_X86_SETUP_MCE` accepts (a `u64` written to the argument).
pub const KVM_X86_GET_MCE_CAP_SUPPORTED: u32 = ior::<u64>(0x9d);

/// `struct kvm_cpuid2` header: the entry count (and padding) before the entries.
pub const CPUID2_HEADER: usize = 8;

// VM ioctls (on a VM fd).
/// Creates vCPU number `arg` and returns its fd.
pub const KVM_CREATE_VCPU: u32 = io(0x41);
/// Adds, moves, resizes or deletes a guest memory slot.
pub const KVM_SET_USER_MEMORY_REGION: u32 = iow::<UserspaceMemoryRegion>(0x46);
/// Sets the guest-physical address of the three-page TSS area (needed by KVM without
/// unrestricted guest; accepted and recorded by rvmx).
pub const KVM_SET_TSS_ADDR: u32 = io(0x47);
/// Sets the guest-physical address of the identity-map page table (likewise).
pub const KVM_SET_IDENTITY_MAP_ADDR: u32 = iow::<u64>(0x48);
/// Sets the in-kernel irqchip's GSI routing (`struct kvm_irq_routing`: `nr`, `flags`, then
/// entries). rvmx never has an in-kernel irqchip, so the answer is KVM's without one.
pub const KVM_SET_GSI_ROUTING: u32 = iow::<u64>(0x6a);
/// Sets a GSI's level on the in-kernel irqchip (ENXIO without one).
pub const KVM_IRQ_LINE: u32 = iow::<IrqLevel>(0x61);
/// `KVM_IRQ_LINE` that also returns the delivery status (ENXIO without an irqchip).
pub const KVM_IRQ_LINE_STATUS: u32 = iowr(0x67, core::mem::size_of::<IrqLevel>());
/// Copies a slot's dirty bitmap out and starts a new logging round (`struct kvm_dirty_log`).
pub const KVM_GET_DIRTY_LOG: u32 = iow::<DirtyLog>(0x42);
/// `KVM_SET_USER_MEMORY_REGION` with the larger `struct kvm_userspace_memory_region2`
/// (guest_memfd fields, which only confidential VM types use: `KVM_MEM_GUEST_MEMFD` is
/// refused as KVM refuses it for the default VM type).
pub const KVM_SET_USER_MEMORY_REGION2: u32 = iow::<UserspaceMemoryRegion2>(0x49);
/// Registers (or removes) an eventfd that a guest write signals instead of exiting.
pub const KVM_IOEVENTFD: u32 = iow::<super::ioeventfd_rules::IoEventFdArg>(0x79);
/// Adds a coalesced-MMIO zone.
pub const KVM_REGISTER_COALESCED_MMIO: u32 = iow::<super::coalesced_mmio::Zone>(0x67);
/// Removes the coalesced-MMIO zones holding a range.
pub const KVM_UNREGISTER_COALESCED_MMIO: u32 = iow::<super::coalesced_mmio::Zone>(0x68);
/// Reads the VM's kvmclock (`struct kvm_clock_data`).
pub const KVM_GET_CLOCK: u32 = ior::<super::kvmclock::ClockData>(0x7c);
/// Sets it.
pub const KVM_SET_CLOCK: u32 = iow::<super::kvmclock::ClockData>(0x7b);
/// Injects an MSI into the in-kernel irqchip (`struct kvm_msi`): `EINVAL` without one, as KVM.
pub const KVM_SIGNAL_MSI: u32 = iow::<Msi>(0xa5);
/// Enables a capability on the fd it is issued on (`struct kvm_enable_cap`).
pub const KVM_ENABLE_CAP: u32 = iow::<EnableCap>(0xa3);
/// Reads the in-kernel local APIC's register page (`struct kvm_lapic_state`).
pub const KVM_GET_LAPIC: u32 = ior::<LapicState>(0x8e);
/// Writes it.
pub const KVM_SET_LAPIC: u32 = iow::<LapicState>(0x8f);
/// Routes a VM may have (`KVM_MAX_IRQ_ROUTES`): the limit of `KVM_CAP_SPLIT_IRQCHIP`'s
/// IOAPIC pins.
pub const MAX_IRQ_ROUTES: u64 = 4096;

/// Creates the in-kernel PIC pair and IOAPIC (and their default GSI routes).
pub const KVM_CREATE_IRQCHIP: u32 = io(0x60);
/// Creates the in-kernel PIT with the speaker port (`KVM_CREATE_PIT2` with
/// `KVM_PIT_SPEAKER_DUMMY`).
pub const KVM_CREATE_PIT: u32 = io(0x64);
/// Creates the in-kernel PIT (`struct kvm_pit_config`).
pub const KVM_CREATE_PIT2: u32 = iow::<super::pit::PitConfig>(0x77);
/// Reads the PIT's channels (`struct kvm_pit_state`).
pub const KVM_GET_PIT: u32 = iowr(0x65, core::mem::size_of::<super::pit::PitState>());
/// Writes them.
pub const KVM_SET_PIT: u32 = ior::<super::pit::PitState>(0x66);
/// Reads the PIT's channels and flags (`struct kvm_pit_state2`).
pub const KVM_GET_PIT2: u32 = ior::<super::pit::PitState2>(0x9f);
/// Writes them.
pub const KVM_SET_PIT2: u32 = iow::<super::pit::PitState2>(0xa0);
/// Turns the PIT's reinjection of missed ticks on or off (`struct kvm_reinject_control`).
pub const KVM_REINJECT_CONTROL: u32 = io(0x71);
/// Reads one in-kernel chip's state (`struct kvm_irqchip`).
pub const KVM_GET_IRQCHIP: u32 = iowr(0x62, core::mem::size_of::<Irqchip>());
/// Writes it.
pub const KVM_SET_IRQCHIP: u32 = ior::<Irqchip>(0x63);

/// `struct kvm_irqchip`: a chip id (`irq_routing::chip`) and its state (`struct
/// kvm_pic_state` or `struct kvm_ioapic_state` at the start of the 512-byte union).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Irqchip {
    /// `KVM_IRQCHIP_*`.
    pub chip_id: u32,
    /// Padding.
    pub pad: u32,
    /// The union.
    pub chip: [u8; 512],
}
// SAFETY: `repr(C)` of two `u32`s and a byte array, no padding (tested against kvm-bindings):
// any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for Irqchip {}
// SAFETY: as for `FromBytes`.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for Irqchip {}

/// `struct kvm_lapic_state`: the first 1 KiB of the APIC page.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LapicState {
    /// The registers, 16 bytes apart, as the APIC page lays them out.
    pub regs: [u8; 1024],
}
// SAFETY: `repr(C)` with one byte array: any bit pattern is a valid value, no padding.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for LapicState {}
// SAFETY: as for `FromBytes`: every byte is the array's.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for LapicState {}

/// `struct kvm_enable_cap`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnableCap {
    /// The `KVM_CAP_*` number.
    pub cap: u32,
    /// Must be 0 for every capability rvmx enables.
    pub flags: u32,
    /// The capability's arguments.
    pub args: [u64; 4],
    /// Padding.
    pub pad: [u8; 64],
}
// SAFETY: `repr(C)` with two `u32`s, four `u64`s and bytes, no gap (its size is
// <linux/kvm.h>'s, tested against kvm-bindings): any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for EnableCap {}

/// `struct kvm_device_attr` (`KVM_HAS/GET/SET_DEVICE_ATTR`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DeviceAttr {
    /// No flags are defined for the attributes rvmx has.
    pub flags: u32,
    /// The attribute group (`KVM_VCPU_TSC_CTRL` on a vCPU fd).
    pub group: u32,
    /// The attribute within the group.
    pub attr: u64,
    /// The userspace address of the value.
    pub addr: u64,
}
// SAFETY: `repr(C)`, two `u32`s then two `u64`s, no gap (24 bytes, tested against
// kvm-bindings): any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for DeviceAttr {}

/// The one VM type rvmx creates (`KVM_CREATE_VM`'s argument): a plain VM.
pub const KVM_X86_DEFAULT_VM: usize = 0;

/// `struct kvm_pre_fault_memory`: the guest-physical range to map ahead of the guest.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PreFaultMemory {
    /// Start (page-aligned); moves on as pages are mapped.
    pub gpa: u64,
    /// Bytes (page-aligned); what is left.
    pub size: u64,
    /// None defined.
    pub flags: u64,
    /// Padding.
    pub padding: [u64; 5],
}
// SAFETY: `repr(C)`, `u64`s only (64 bytes, tested against kvm-bindings): any bit pattern is
// valid, and every byte is a field's.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for PreFaultMemory {}
// SAFETY: as above.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for PreFaultMemory {}

/// Maps guest memory ahead of the guest's accesses (on a vCPU fd).
pub const KVM_PRE_FAULT_MEMORY: u32 = iowr(0xd5, core::mem::size_of::<PreFaultMemory>());

/// Sets the VM's MSR filter (`struct kvm_msr_filter`).
pub const KVM_X86_SET_MSR_FILTER: u32 = iow::<super::msr_filter::FilterArg>(0xc6);

/// A read-only fd with the VM's or the vCPU's statistics (on either fd).
pub const KVM_GET_STATS_FD: u32 = io(0xce);

/// Chooses the vCPU id that starts as the BSP (before any vCPU is created).
pub const KVM_SET_BOOT_CPU_ID: u32 = io(0x78);

/// Sets, reads, or asks whether a device (here: a vCPU) has an attribute.
pub const KVM_SET_DEVICE_ATTR: u32 = iow::<DeviceAttr>(0xe1);
/// See [`KVM_SET_DEVICE_ATTR`].
pub const KVM_GET_DEVICE_ATTR: u32 = iow::<DeviceAttr>(0xe2);
/// See [`KVM_SET_DEVICE_ATTR`].
pub const KVM_HAS_DEVICE_ATTR: u32 = iow::<DeviceAttr>(0xe3);
/// A vCPU's TSC attribute group, and its one attribute: the TSC offset.
pub const KVM_VCPU_TSC_CTRL: u32 = 0;
/// See [`KVM_VCPU_TSC_CTRL`].
pub const KVM_VCPU_TSC_OFFSET: u64 = 0;

/// `struct kvm_msi`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Msi {
    /// Address (low, high), data, `KVM_MSI_VALID_DEVID`, device id.
    pub address_lo: u32,
    /// Address bits 63:32.
    pub address_hi: u32,
    /// The message.
    pub data: u32,
    /// `KVM_MSI_VALID_DEVID`.
    pub flags: u32,
    /// The device's id where flags say it is valid.
    pub devid: u32,
    /// Padding.
    pub pad: [u8; 12],
}
// SAFETY: `repr(C)` with five `u32`s and bytes, no gap (tested against kvm-bindings): any bit
// pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for Msi {}

/// `struct kvm_irqfd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IrqFdArg {
    /// The eventfd.
    pub fd: u32,
    /// The GSI it raises.
    pub gsi: u32,
    /// `KVM_IRQFD_FLAG_*`.
    pub flags: u32,
    /// The resample eventfd (with `KVM_IRQFD_FLAG_RESAMPLE`).
    pub resamplefd: u32,
    /// Padding.
    pub pad: [u8; 16],
}
// SAFETY: `repr(C)` with four `u32`s and bytes, no gap (tested against kvm-bindings): any bit
// pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for IrqFdArg {}

/// `KVM_IRQFD_FLAG_DEASSIGN`.
pub const IRQFD_FLAG_DEASSIGN: u32 = 1;
/// `KVM_IRQFD_FLAG_RESAMPLE`.
pub const IRQFD_FLAG_RESAMPLE: u32 = 2;
/// Assigns an eventfd to a GSI (or removes it).
pub const KVM_IRQFD: u32 = iow::<IrqFdArg>(0x76);

/// `KVM_X86_QUIRK_*`: KVM's historical behaviours a VMM may turn off with
/// `KVM_CAP_DISABLE_QUIRKS2`; rvmx has these.
pub mod quirk {
    /// An in-kernel local APIC's LINT0 is unmasked in ExtINT mode on the BSP at RESET and
    /// INIT (where the PIC's interrupts come in).
    pub const LINT0_REENABLED: u64 = 1 << 0;
    /// An OUT to port 0x7e exits with RIP already past it.
    pub const OUT_7E_INC_RIP: u64 = 1 << 3;
    /// IA32_MISC_ENABLE.MWAIT is a plain bit (without the quirk it needs SSE3 and sets
    /// CPUID.MWAIT, and MONITOR/MWAIT follow it).
    pub const MISC_ENABLE_NO_MWAIT: u64 = 1 << 4;
    /// VMMCALL (AMD's hypercall, #UD on Intel) is rewritten to VMCALL in guest memory.
    pub const FIX_HYPERCALL_INSN: u64 = 1 << 5;
    /// MONITOR and MWAIT are NOPs whatever the guest's CPUID (without it, #UD unless enabled).
    pub const MWAIT_NEVER_UD_FAULTS: u64 = 1 << 6;
    /// The quirks rvmx implements (the value of `KVM_CAP_DISABLE_QUIRKS2`).
    pub const SUPPORTED: u64 = LINT0_REENABLED | OUT_7E_INC_RIP | MISC_ENABLE_NO_MWAIT | FIX_HYPERCALL_INSN | MWAIT_NEVER_UD_FAULTS;
}

/// The VM-wide settings a vCPU's exits and MSR accesses follow, copied into the vCPU at each
/// `KVM_RUN` and vCPU ioctl that needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmSettings {
    /// `KVM_X86_QUIRK_*` bits userspace turned off (`KVM_CAP_DISABLE_QUIRKS(2)`).
    pub disabled_quirks: u64,
    /// Guests may read MSR_PLATFORM_INFO (`KVM_CAP_MSR_PLATFORM_INFO`).
    pub platform_info_readable: bool,
    /// The MSR failures userspace handles (`KVM_CAP_X86_USER_SPACE_MSR`,
    /// `super::msr_filter::reason`).
    pub user_space_msr: u32,
    /// Instructions rvmx cannot emulate always go to userspace, without #UD
    /// (`KVM_CAP_EXIT_ON_EMULATION_FAILURE`).
    pub exit_on_emulation_failure: bool,
}

impl Default for VmSettings {
    fn default() -> Self {
        Self { disabled_quirks: 0, platform_info_readable: true, user_space_msr: 0, exit_on_emulation_failure: false }
    }
}

impl VmSettings {
    /// Whether quirk `q` is in force.
    pub const fn has_quirk(&self, q: u64) -> bool {
        self.disabled_quirks & q == 0
    }
}

// vCPU ioctls (on a vCPU fd).
/// Runs the vCPU until an exit userspace must handle.
pub const KVM_RUN: u32 = io(0x80);
/// Reads the general-purpose registers.
pub const KVM_GET_REGS: u32 = ior::<Regs>(0x81);
/// Writes the general-purpose registers.
pub const KVM_SET_REGS: u32 = iow::<Regs>(0x82);
/// Reads segment, control and descriptor-table registers.
pub const KVM_GET_SREGS: u32 = ior::<Sregs>(0x83);
/// Writes segment, control and descriptor-table registers.
pub const KVM_SET_SREGS: u32 = iow::<Sregs>(0x84);
/// Reads the x87/SSE state.
pub const KVM_GET_FPU: u32 = ior::<Fpu>(0x8c);
/// Writes the x87/SSE state.
pub const KVM_SET_FPU: u32 = iow::<Fpu>(0x8d);
/// Reads guest MSRs (`struct kvm_msrs` header, 8 bytes, then entries).
pub const KVM_GET_MSRS: u32 = iowr(0x88, 8);
/// Writes guest MSRs.
pub const KVM_SET_MSRS: u32 = iow::<u64>(0x89);
/// Sets the vCPU's CPUID table (`struct kvm_cpuid2` header, 8 bytes).
pub const KVM_SET_CPUID2: u32 = iow::<u64>(0x90);
/// Reads the vCPU's CPUID table.
pub const KVM_GET_CPUID2: u32 = iowr(0x91, 8);
/// Reads the XSAVE image (`struct kvm_xsave`, 4096 bytes, standard format).
pub const KVM_GET_XSAVE: u32 = ior::<Xsave>(0xa4);
/// Writes the XSAVE image.
pub const KVM_SET_XSAVE: u32 = iow::<Xsave>(0xa5);
/// Reads the extended control registers (XCR0).
pub const KVM_GET_XCRS: u32 = ior::<Xcrs>(0xa6);
/// Writes the extended control registers.
pub const KVM_SET_XCRS: u32 = iow::<Xcrs>(0xa7);
/// Reads DR0-3, DR6, DR7.
pub const KVM_GET_DEBUGREGS: u32 = ior::<DebugRegs>(0xa1);
/// Writes DR0-3, DR6, DR7.
pub const KVM_SET_DEBUGREGS: u32 = iow::<DebugRegs>(0xa2);
/// Queues an external interrupt (`struct kvm_interrupt { __u32 irq; }`), without an
/// in-kernel irqchip.
pub const KVM_INTERRUPT: u32 = iow::<u32>(0x86);
/// Single-step and breakpoints for a userspace debugger (`struct kvm_guest_debug`).
pub const KVM_SET_GUEST_DEBUG: u32 = iow::<super::guest_debug::GuestDebugArg>(0x9b);
/// Translates a guest linear address through the guest's page tables (`struct kvm_translation`).
pub const KVM_TRANSLATE: u32 = iowr(0x85, core::mem::size_of::<Translation>());
/// The guest's TSC frequency in kHz (the return value).
pub const KVM_GET_TSC_KHZ: u32 = io(0xa3);
/// Sets it (the argument); rvmx has no TSC scaling: only the host's rate.
pub const KVM_SET_TSC_KHZ: u32 = io(0xa2);
/// Reads the vCPU's multiprocessing state (`struct kvm_mp_state { __u32 mp_state; }`).
pub const KVM_GET_MP_STATE: u32 = ior::<u32>(0x98);
/// Writes it.
pub const KVM_SET_MP_STATE: u32 = iow::<u32>(0x99);
/// Queues an NMI.
pub const KVM_NMI: u32 = io(0x9a);
/// Queues an SMI.
pub const KVM_SMI: u32 = io(0xb7);
/// Sets the guest-physical address of the TPR-access page (`struct kvm_vapic_addr`).
pub const KVM_SET_VAPIC_ADDR: u32 = iow::<u64>(0x93);
/// Reads pending and in-flight events (`struct kvm_vcpu_events`).
pub const KVM_GET_VCPU_EVENTS: u32 = ior::<super::events::VcpuEvents>(0x9f);
/// Writes them.
pub const KVM_SET_VCPU_EVENTS: u32 = iow::<super::events::VcpuEvents>(0xa0);
/// Gives the vCPU its IA32_MCG_CAP: bank count and capabilities (a `u64`).
pub const KVM_X86_SETUP_MCE: u32 = iow::<u64>(0x9c);
/// Puts a machine-check error in a bank and raises #MC if it is uncorrected.
pub const KVM_X86_SET_MCE: u32 = iow::<super::mce::X86Mce>(0x9e);
/// `KVM_SET_SIGNAL_MASK`: `struct kvm_signal_mask { __u32 len; __u8 sigset[]; }`.
pub const KVM_SET_SIGNAL_MASK: u32 = iow::<u32>(0x8b);

/// `struct kvm_userspace_memory_region`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserspaceMemoryRegion {
    /// Slot number (bits 15:0; address-space id in 31:16, which must be 0 on rvmx).
    pub slot: u32,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
    /// Guest-physical start, page aligned.
    pub guest_phys_addr: u64,
    /// Size in bytes, page aligned; 0 deletes the slot.
    pub memory_size: u64,
    /// Start of the backing memory in the caller's address space, page aligned.
    pub userspace_addr: u64,
}
// SAFETY: `repr(C)` with two `u32`s then three `u64`s (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for UserspaceMemoryRegion {}

/// `struct kvm_userspace_memory_region2`: the first five fields are
/// [`UserspaceMemoryRegion`]'s.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserspaceMemoryRegion2 {
    /// As in [`UserspaceMemoryRegion`].
    pub slot: u32,
    /// As in [`UserspaceMemoryRegion`].
    pub flags: u32,
    /// As in [`UserspaceMemoryRegion`].
    pub guest_phys_addr: u64,
    /// As in [`UserspaceMemoryRegion`].
    pub memory_size: u64,
    /// As in [`UserspaceMemoryRegion`].
    pub userspace_addr: u64,
    /// Offset in the guest_memfd (with `KVM_MEM_GUEST_MEMFD` only).
    pub guest_memfd_offset: u64,
    /// The guest_memfd (likewise).
    pub guest_memfd: u32,
    /// Padding.
    pub pad1: u32,
    /// Padding.
    pub pad2: [u64; 14],
}
// SAFETY: `repr(C)` with integers only, the padding explicit fields (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for UserspaceMemoryRegion2 {}

impl UserspaceMemoryRegion2 {
    /// The fields both requests share.
    pub const fn region(&self) -> UserspaceMemoryRegion {
        UserspaceMemoryRegion {
            slot: self.slot,
            flags: self.flags,
            guest_phys_addr: self.guest_phys_addr,
            memory_size: self.memory_size,
            userspace_addr: self.userspace_addr,
        }
    }
}
/// `struct kvm_irq_level`: a GSI and its level (`KVM_IRQ_LINE_STATUS` returns the status in
/// the first word).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IrqLevel {
    /// The GSI (or, back from `KVM_IRQ_LINE_STATUS`, the status).
    pub irq: u32,
    /// 1 raises the line, 0 lowers it.
    pub level: u32,
}
// SAFETY: `repr(C)` with two `u32` fields (its size is <linux/kvm.h>'s, tested against
// kvm-bindings): no uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for IrqLevel {}
// SAFETY: as above: two `u32`s, no padding, so every byte is initialized.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for IrqLevel {}


/// `struct kvm_dirty_log`: which slot, and where its bitmap goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirtyLog {
    /// Slot number (address space in bits 31:16).
    pub slot: u32,
    /// Padding.
    pub padding: u32,
    /// User address of the bitmap: one bit per page, rounded up to 64-bit words.
    pub dirty_bitmap: u64,
}
// SAFETY: `repr(C)` with two `u32`s then a `u64` (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for DirtyLog {}

/// Slot flag: log guest writes for `KVM_GET_DIRTY_LOG`.
pub const KVM_MEM_LOG_DIRTY_PAGES: u32 = 1 << 0;
/// Slot flag: guest writes exit to userspace as MMIO.
pub const KVM_MEM_READONLY: u32 = 1 << 1;

/// `struct kvm_regs`: general-purpose registers, RIP and RFLAGS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}
// SAFETY: `repr(C)` with only `u64` fields (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for Regs {}
// SAFETY: as for `FromBytes`: every byte of a `Regs` is an initialized field.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for Regs {}

/// `struct kvm_segment`: a segment register with its hidden part.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    pub unusable: u8,
    pub padding: u8,
}

/// `struct kvm_dtable`: GDTR or IDTR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Dtable {
    pub base: u64,
    pub limit: u16,
    pub padding: [u16; 3],
}

/// `struct kvm_sregs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Sregs {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: Dtable,
    pub idt: Dtable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    /// Pending external interrupt, one bit per vector (at most one set).
    pub interrupt_bitmap: [u64; 4],
}
// SAFETY: `repr(C)` with `Segment`s, `Dtable`s and `u64`s, every padding byte an explicit field (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for Sregs {}
// SAFETY: as for `FromBytes`: every byte of a `Sregs` is an initialized field.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for Sregs {}

/// `struct kvm_fpu`: x87 and SSE state (the FXSAVE image's contents, KVM's layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Fpu {
    pub fpr: [[u8; 16]; 8],
    pub fcw: u16,
    pub fsw: u16,
    /// Abridged tag word, as FXSAVE stores it.
    pub ftwx: u8,
    pub pad1: u8,
    pub last_opcode: u16,
    pub last_ip: u64,
    pub last_dp: u64,
    pub xmm: [[u8; 16]; 16],
    pub mxcsr: u32,
    pub pad2: u32,
}
// SAFETY: `repr(C)` with integers and byte arrays, the padding explicit fields (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for Fpu {}
// SAFETY: as for `FromBytes`: every byte of a `Fpu` is an initialized field.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for Fpu {}

/// The `N` bytes at `at` of `buf` (zeros past its end, which no caller's constant offset
/// reaches).
pub fn le_bytes<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut b = [0; N];
    if let Some(s) = buf.get(at..at.saturating_add(N)) {
        b.copy_from_slice(s);
    }
    b
}

impl Fpu {
    /// From a 512-byte FXSAVE64 image (SDM vol. 1, table 10-2). MXCSR is reported as 0, as
    /// KVM's `kvm_arch_vcpu_ioctl_get_fpu` leaves it (it travels in `KVM_GET_XSAVE`).
    pub fn from_fxsave(fx: &[u8; 512]) -> Self {
        let mut f = Fpu {
            fpr: [[0; 16]; 8],
            fcw: u16::from_le_bytes(le_bytes(fx, 0)),
            fsw: u16::from_le_bytes(le_bytes(fx, 2)),
            ftwx: fx[4],
            pad1: 0,
            last_opcode: u16::from_le_bytes(le_bytes(fx, 6)),
            last_ip: u64::from_le_bytes(le_bytes(fx, 8)),
            last_dp: u64::from_le_bytes(le_bytes(fx, 16)),
            xmm: [[0; 16]; 16],
            mxcsr: 0,
            pad2: 0,
        };
        // ST0-7 from byte 32, XMM0-15 right after them from byte 160, 16 bytes each.
        let regs = f.fpr.iter_mut().chain(f.xmm.iter_mut());
        for (reg, src) in regs.zip(fx.chunks_exact(16).skip(2)) {
            reg.copy_from_slice(src);
        }
        f
    }

    /// Into a FXSAVE64 image (bytes it does not cover are left as they are). MXCSR is not
    /// taken, as KVM's `kvm_arch_vcpu_ioctl_set_fpu` ignores it (`KVM_SET_XSAVE` sets it).
    pub fn to_fxsave(&self, fx: &mut [u8; 512]) {
        fx[0..2].copy_from_slice(&self.fcw.to_le_bytes());
        fx[2..4].copy_from_slice(&self.fsw.to_le_bytes());
        fx[4] = self.ftwx;
        fx[6..8].copy_from_slice(&self.last_opcode.to_le_bytes());
        fx[8..16].copy_from_slice(&self.last_ip.to_le_bytes());
        fx[16..24].copy_from_slice(&self.last_dp.to_le_bytes());
        let regs = self.fpr.iter().chain(self.xmm.iter());
        for (dst, reg) in fx.chunks_exact_mut(16).skip(2).zip(regs) {
            dst.copy_from_slice(reg);
        }
    }
}

/// `struct kvm_xsave`: an XSAVE image in standard format (see `xstate`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Xsave {
    /// The image.
    pub region: [u32; 1024],
}
// SAFETY: `repr(C)` with one array of `u32`s (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for Xsave {}
// SAFETY: as for `FromBytes`: every byte of a `Xsave` is an initialized field.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for Xsave {}

/// `struct kvm_xcr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Xcr {
    pub xcr: u32,
    pub reserved: u32,
    pub value: u64,
}

/// `struct kvm_xcrs`: up to [`MAX_XCRS`] XCRs (rvmx, like KVM, has XCR0 only).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Xcrs {
    pub nr_xcrs: u32,
    pub flags: u32,
    pub xcrs: [Xcr; MAX_XCRS],
    pub padding: [u64; 16],
}
// SAFETY: `repr(C)` with `u32`s, `Xcr`s (integers with an explicit pad) and `u64`s (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for Xcrs {}
// SAFETY: as for `FromBytes`: every byte of a `Xcrs` is an initialized field.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for Xcrs {}

/// `struct kvm_translation`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Translation {
    pub linear_address: u64,
    pub physical_address: u64,
    pub valid: u8,
    pub writeable: u8,
    pub usermode: u8,
    pub pad: [u8; 5],
}
// SAFETY: `repr(C)` with two `u64`s, three `u8`s and an explicit 5-byte pad (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for Translation {}
// SAFETY: as for `FromBytes`: every byte of a `Translation` is an initialized field.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for Translation {}

/// `KVM_MAX_XCRS`.
pub const MAX_XCRS: usize = 16;

/// `struct kvm_debugregs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct DebugRegs {
    pub db: [u64; 4],
    pub dr6: u64,
    pub dr7: u64,
    pub flags: u64,
    pub reserved: [u64; 9],
}
// SAFETY: `repr(C)` with only `u64` fields (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for DebugRegs {}
// SAFETY: as for `FromBytes`: every byte of a `DebugRegs` is an initialized field.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for DebugRegs {}

/// `struct kvm_msr_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MsrEntry {
    pub index: u32,
    pub reserved: u32,
    pub data: u64,
}
// SAFETY: `repr(C)` with two `u32`s then a `u64` (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for MsrEntry {}
// SAFETY: as for `FromBytes`: every byte of a `MsrEntry` is an initialized field.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for MsrEntry {}

/// Most entries one `KVM_GET/SET_MSRS` takes (KVM's `MAX_IO_MSRS`).
pub const MAX_IO_MSRS: u32 = 256;

/// Page offset of the PIO data page in the vCPU mmap area (`KVM_PIO_PAGE_OFFSET`).
pub const KVM_PIO_PAGE_OFFSET: usize = 1;
/// Page offset of the coalesced-MMIO ring (`KVM_COALESCED_MMIO_PAGE_OFFSET`).
pub const KVM_COALESCED_MMIO_PAGE_OFFSET: usize = 2;

/// Pages in a vCPU mmap area: `kvm_run`, the PIO data page, and the VM's coalesced-MMIO ring.
pub const VCPU_MMAP_PAGES: usize = KVM_COALESCED_MMIO_PAGE_OFFSET + 1;

/// Size in bytes of the vCPU mmap area for `page_size`-byte pages.
pub const fn vcpu_mmap_size(page_size: usize) -> usize {
    VCPU_MMAP_PAGES.saturating_mul(page_size)
}

/// vCPUs per VM (`KVM_CAP_NR_VCPUS`, `KVM_CAP_MAX_VCPUS`).
pub const MAX_VCPUS: usize = 8;
/// vCPU ids are below this (`KVM_CAP_MAX_VCPU_ID`).
pub const MAX_VCPU_ID: u32 = 8;

/// `KVM_CAP_*` numbers rvmx answers for (`<linux/kvm.h>`).
pub mod cap {
    /// `KVM_SET_USER_MEMORY_REGION`.
    pub const USER_MEMORY: usize = 3;
    /// `KVM_SET_TSS_ADDR`.
    pub const SET_TSS_ADDR: usize = 4;
    /// Recommended vCPUs per VM.
    pub const NR_VCPUS: usize = 9;
    /// Memory slots per VM.
    pub const NR_MEMSLOTS: usize = 10;
    /// `KVM_SET_IDENTITY_MAP_ADDR`.
    pub const SET_IDENTITY_MAP_ADDR: usize = 37;
    /// Maximum vCPUs per VM.
    pub const MAX_VCPUS: usize = 66;
    /// `KVM_CHECK_EXTENSION` on a VM fd.
    pub const CHECK_EXTENSION_VM: usize = 105;
    /// vCPU ids are below this.
    pub const MAX_VCPU_ID: usize = 128;
    /// `KVM_GET_SUPPORTED_CPUID` and `KVM_SET_CPUID2`.
    pub const EXT_CPUID: usize = 7;
    /// `KVM_MEM_READONLY` slots: guest writes to them exit as MMIO.
    pub const READONLY_MEM: usize = 81;
    /// `KVM_GET/SET_MP_STATE`.
    pub const MP_STATE: usize = 14;
    /// `KVM_NMI`.
    pub const USER_NMI: usize = 22;
    /// `KVM_SET_GUEST_DEBUG`.
    pub const SET_GUEST_DEBUG: usize = 23;
    /// `KVM_GET_TSC_KHZ`.
    pub const GET_TSC_KHZ: usize = 61;
    /// `KVM_SET_GUEST_DEBUG`'s valid control bits.
    pub const SET_GUEST_DEBUG2: usize = 195;
    /// `KVM_GET/SET_VCPU_EVENTS`.
    pub const VCPU_EVENTS: usize = 41;
    /// `KVM_GET/SET_DEBUGREGS`.
    pub const DEBUGREGS: usize = 50;
    /// `KVM_GET/SET_XSAVE`.
    pub const XSAVE: usize = 55;
    /// `KVM_GET/SET_XCRS`.
    pub const XCRS: usize = 56;
    /// Deleting a slot (`memory_size` 0) works (a fixed KVM bug, still asked for by QEMU).
    pub const DESTROY_MEMORY_REGION_WORKS: usize = 21;
    /// Slots may be adjacent (likewise).
    pub const JOIN_MEMORY_REGIONS_WORKS: usize = 30;
    /// `KVM_SET_GSI_ROUTING` exists (it needs an in-kernel irqchip to succeed, on KVM too).
    pub const IRQ_ROUTING: usize = 25;
    /// `kvm_run.immediate_exit`.
    pub const IMMEDIATE_EXIT: usize = 136;
    /// `KVM_IOEVENTFD`.
    pub const IOEVENTFD: usize = 36;
    /// `KVM_IOEVENTFD` with `len` 0 (any width).
    pub const IOEVENTFD_NO_LENGTH: usize = 100;
    /// Likewise, on every bus.
    pub const IOEVENTFD_ANY_LENGTH: usize = 122;
    /// `KVM_REGISTER_COALESCED_MMIO` (answered with the ring's page offset).
    pub const COALESCED_MMIO: usize = 15;
    /// Coalesced zones of ports too.
    pub const COALESCED_PIO: usize = 162;
    /// `KVM_CREATE_PIT`.
    pub const PIT: usize = 11;
    /// `KVM_CREATE_PIT2`.
    pub const PIT2: usize = 33;
    /// `KVM_GET/SET_PIT2`.
    pub const PIT_STATE2: usize = 35;
    /// `KVM_REINJECT_CONTROL`.
    pub const REINJECT_CONTROL: usize = 24;
    /// `KVM_SET_USER_MEMORY_REGION2`.
    pub const USER_MEMORY2: usize = 231;
    /// `KVM_SET_BOOT_CPU_ID`.
    pub const SET_BOOT_CPU_ID: usize = 34;
    /// `KVM_GET_STATS_FD`.
    pub const BINARY_STATS_FD: usize = 203;
    /// Guest RDMSR/WRMSR failures to userspace (`KVM_EXIT_X86_RDMSR/WRMSR`).
    pub const X86_USER_SPACE_MSR: usize = 188;
    /// `KVM_X86_SET_MSR_FILTER`.
    pub const X86_MSR_FILTER: usize = 189;
    /// `kvm_run.kvm_valid_regs`/`kvm_dirty_regs`; the value is the register sets.
    pub const SYNC_REGS: usize = 74;
    /// The `KVM_CREATE_VM` types, as a bit mask: only `KVM_X86_DEFAULT_VM` (0).
    pub const VM_TYPES: usize = 235;
    /// MSR_PLATFORM_INFO; `KVM_ENABLE_CAP` on the VM says whether guests may read it.
    pub const MSR_PLATFORM_INFO: usize = 159;
    /// `KVM_HAS/GET/SET_DEVICE_ATTR` on a vCPU fd (the TSC offset).
    pub const VCPU_ATTRIBUTES: usize = 127;
    /// `KVM_GET_MSR_FEATURE_INDEX_LIST` and `KVM_GET_MSRS` on the system fd.
    pub const GET_MSR_FEATURES: usize = 153;
    /// Guest memory follows changes of the host mapping (MMU notifiers).
    pub const SYNC_MMU: usize = 16;
    /// `KVM_EXIT_MEMORY_FAULT` accompanies `EFAULT` from `KVM_RUN`.
    pub const MEMORY_FAULT_INFO: usize = 232;
    /// Machine-check MSRs and `KVM_X86_SETUP_MCE`/`SET_MCE`; the value is the bank limit.
    pub const MCE: usize = 31;
    /// A debugger's single step over an instruction the kernel emulates or userspace completes
    /// is reported (`KVM_EXIT_DEBUG`) at the next instruction.
    pub const X86_ROBUST_SINGLESTEP: usize = 51;
    /// `KVM_GET/SET_CLOCK`; the value is the flags they know.
    pub const ADJUST_CLOCK: usize = 39;
    /// `kvm_run.internal` carries `ndata` words of data.
    pub const INTERNAL_ERROR_DATA: usize = 40;
    /// `KVM_SIGNAL_MSI` exists (it needs an in-kernel irqchip to succeed, on KVM too).
    pub const SIGNAL_MSI: usize = 77;
    /// System-management mode: `KVM_SMI`, SMI IPIs, the SMM fields of `KVM_GET/SET_VCPU_EVENTS`,
    /// IA32_SMBASE, RSM.
    pub const X86_SMM: usize = 117;
    /// Memory slots in more than one address space (bits 31:16 of the slot number); the value
    /// is how many (the second is what SMM sees).
    pub const MULTI_ADDRESS_SPACE: usize = 118;
    /// `KVM_ENABLE_CAP` on a VM fd.
    pub const ENABLE_CAP_VM: usize = 98;
    /// `KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS)`: any bits, the known ones taken.
    pub const DISABLE_QUIRKS: usize = 116;
    /// Likewise, refusing unknown bits; the value is the quirks rvmx has.
    pub const DISABLE_QUIRKS2: usize = 213;
    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`: an in-kernel local APIC per vCPU.
    pub const SPLIT_IRQCHIP: usize = 121;
    /// An in-kernel irqchip: `KVM_CREATE_IRQCHIP` (QEMU's default `kernel-irqchip=on`, and
    /// what QEMU asks for before it uses `kernel-irqchip=split`).
    pub const IRQCHIP: usize = 0;
    /// `KVM_EXIT_HLT` (an HLT with no in-kernel local APIC exits to userspace).
    pub const HLT: usize = 1;
    /// The local APIC timer's TSC-deadline mode (with the in-kernel APIC).
    pub const TSC_DEADLINE_TIMER: usize = 72;
    /// `KVM_IRQ_LINE_STATUS`.
    pub const IRQ_INJECT_STATUS: usize = 26;
    /// `KVM_IRQFD` (without resampling in split mode).
    pub const IRQFD: usize = 32;
    /// `KVM_IRQFD_FLAG_RESAMPLE` (taken with the full irqchip; KVM reports it always).
    pub const IRQFD_RESAMPLE: usize = 82;
    /// `KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)`: 32-bit x2APIC IDs, the broadcast quirk, EOI
    /// broadcast suppression.
    pub const X2APIC_API: usize = 129;
    /// `KVM_PRE_FAULT_MEMORY`.
    pub const PRE_FAULT_MEMORY: usize = 236;
    /// `KVM_ENABLE_CAP` on a vCPU: its PV MSRs and hypercalls need their CPUID features.
    pub const ENFORCE_PV_FEATURE_CPUID: usize = 190;
    /// Emulation failures always exit to userspace (`KVM_ENABLE_CAP` on the VM, 0 or 1).
    pub const EXIT_ON_EMULATION_FAILURE: usize = 204;
    /// The local APIC timer's bus period in ns (1 on the system fd; the VM's on a VM fd).
    pub const X86_APIC_BUS_CYCLES_NS: usize = 237;
    /// Halt polling, and `KVM_ENABLE_CAP` of a VM's own maximum polling time (ns).
    pub const HALT_POLL: usize = 182;
}

/// The capabilities rvmx provides, with the value `KVM_CHECK_EXTENSION` returns for each.
///
/// Honest by construction: a capability appears here only once the feature behind it works.
pub const CAPABILITIES: &[(usize, isize)] = &[
    (cap::USER_MEMORY, 1),
    (cap::SET_TSS_ADDR, 1),
    (cap::NR_VCPUS, MAX_VCPUS as isize),
    (cap::NR_MEMSLOTS, super::memslot_rules::MAX_SLOTS as isize),
    (cap::SET_IDENTITY_MAP_ADDR, 1),
    (cap::MAX_VCPUS, MAX_VCPUS as isize),
    (cap::CHECK_EXTENSION_VM, 1),
    (cap::MAX_VCPU_ID, MAX_VCPU_ID as isize),
    (cap::EXT_CPUID, 1),
    (cap::READONLY_MEM, 1),
    (cap::MP_STATE, 1),
    (cap::USER_NMI, 1),
    (cap::VCPU_EVENTS, 1),
    (cap::SET_GUEST_DEBUG, 1),
    (cap::GET_TSC_KHZ, 1),
    (cap::SET_GUEST_DEBUG2, super::guest_debug::control::VALID as isize),
    (cap::DEBUGREGS, 1),
    (cap::XSAVE, 1),
    (cap::XCRS, 1),
    (cap::DESTROY_MEMORY_REGION_WORKS, 1),
    (cap::JOIN_MEMORY_REGIONS_WORKS, 1),
    (cap::IRQ_ROUTING, MAX_IRQ_ROUTES as isize),
    (cap::IMMEDIATE_EXIT, 1),
    (cap::MCE, super::mce::MAX_BANKS as isize),
    (cap::IOEVENTFD, 1),
    (cap::IOEVENTFD_NO_LENGTH, 1),
    (cap::IOEVENTFD_ANY_LENGTH, 1),
    (cap::COALESCED_MMIO, KVM_COALESCED_MMIO_PAGE_OFFSET as isize),
    (cap::COALESCED_PIO, 1),
    (cap::HLT, 1),
    // The full in-kernel irqchip (the PIC pair and the IOAPIC) and the 8254.
    (cap::IRQCHIP, 1),
    (cap::PIT, 1),
    (cap::PIT2, 1),
    (cap::PIT_STATE2, 1),
    (cap::REINJECT_CONTROL, 1),
    (cap::USER_MEMORY2, 1),
    (cap::VCPU_ATTRIBUTES, 1),
    (cap::MSR_PLATFORM_INFO, 1),
    (cap::VM_TYPES, 1 << KVM_X86_DEFAULT_VM),
    (cap::SET_BOOT_CPU_ID, 1),
    (cap::BINARY_STATS_FD, 1),
    (cap::X86_USER_SPACE_MSR, 1),
    (cap::X86_MSR_FILTER, 1),
    (cap::PRE_FAULT_MEMORY, 1),
    (cap::EXIT_ON_EMULATION_FAILURE, 1),
    (cap::ENFORCE_PV_FEATURE_CPUID, 1),
    (cap::SYNC_REGS, super::kvm_run::sync_regs::VALID as isize),
    (cap::GET_MSR_FEATURES, 1),
    (cap::SYNC_MMU, 1),
    (cap::MEMORY_FAULT_INFO, 1),
    (cap::ADJUST_CLOCK, super::kvmclock::CLOCK_VALID_FLAGS as isize),
    (cap::INTERNAL_ERROR_DATA, 1),
    (cap::X86_ROBUST_SINGLESTEP, 1),
    (cap::SIGNAL_MSI, 1),
    (cap::X86_SMM, 1),
    (cap::MULTI_ADDRESS_SPACE, super::memslot_rules::AddressSpace::COUNT as isize),
    (cap::ENABLE_CAP_VM, 1),
    (cap::DISABLE_QUIRKS, 1),
    (cap::DISABLE_QUIRKS2, quirk::SUPPORTED as isize),
    // The split irqchip: in-kernel local APICs, MSI routes and irqfds.
    (cap::SPLIT_IRQCHIP, 1),
    (cap::TSC_DEADLINE_TIMER, 1),
    (cap::IRQ_INJECT_STATUS, 1),
    (cap::IRQFD, 1),
    (cap::IRQFD_RESAMPLE, 1),
    (cap::X2APIC_API, super::x2apic_api::VALID as isize),
    (cap::X86_APIC_BUS_CYCLES_NS, super::lapic::APIC_BUS_CYCLE_NS_DEFAULT as isize),
    (cap::HALT_POLL, 1),
];

/// The answer to `KVM_CHECK_EXTENSION(cap)`: like KVM, 0 for anything unknown (never an error).
pub fn check_extension(cap: usize) -> isize {
    CAPABILITIES.iter().find(|(c, _)| *c == cap).map_or(0, |(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    /// Layouts equal rust-vmm's kvm-bindings (generated from `<linux/kvm.h>`).
    #[test]
    fn struct_layouts_match_kvm_bindings() {
        use kvm_bindings as kb;
        assert_eq!(size_of::<UserspaceMemoryRegion>(), size_of::<kb::kvm_userspace_memory_region>());
        assert_eq!(size_of::<Regs>(), size_of::<kb::kvm_regs>());
        assert_eq!(offset_of!(Regs, rip), offset_of!(kb::kvm_regs, rip));
        assert_eq!(size_of::<Segment>(), size_of::<kb::kvm_segment>());
        assert_eq!(offset_of!(Segment, unusable), offset_of!(kb::kvm_segment, unusable));
        assert_eq!(size_of::<Dtable>(), size_of::<kb::kvm_dtable>());
        assert_eq!(size_of::<Sregs>(), size_of::<kb::kvm_sregs>());
        assert_eq!(size_of::<Xsave>(), size_of::<kb::kvm_xsave>());
        use crate::events::VcpuEvents;
        assert_eq!(size_of::<VcpuEvents>(), size_of::<kb::kvm_vcpu_events>());
        assert_eq!(offset_of!(VcpuEvents, flags), offset_of!(kb::kvm_vcpu_events, flags));
        assert_eq!(offset_of!(VcpuEvents, sipi_vector), offset_of!(kb::kvm_vcpu_events, sipi_vector));
        assert_eq!(offset_of!(VcpuEvents, exception_has_payload), offset_of!(kb::kvm_vcpu_events, exception_has_payload));
        assert_eq!(size_of::<Xcrs>(), size_of::<kb::kvm_xcrs>());
        assert_eq!(offset_of!(Xcrs, padding), offset_of!(kb::kvm_xcrs, padding));
        assert_eq!(size_of::<DebugRegs>(), size_of::<kb::kvm_debugregs>());
        assert_eq!(offset_of!(DebugRegs, flags), offset_of!(kb::kvm_debugregs, flags));
        assert_eq!(offset_of!(Sregs, gdt), offset_of!(kb::kvm_sregs, gdt));
        assert_eq!(offset_of!(Sregs, efer), offset_of!(kb::kvm_sregs, efer));
        assert_eq!(offset_of!(Sregs, interrupt_bitmap), offset_of!(kb::kvm_sregs, interrupt_bitmap));
        use crate::cpuid_table::CpuidEntry;
        assert_eq!(size_of::<CpuidEntry>(), size_of::<kb::kvm_cpuid_entry2>());
        assert_eq!(offset_of!(CpuidEntry, edx), offset_of!(kb::kvm_cpuid_entry2, edx));
        assert_eq!(CPUID2_HEADER, size_of::<kb::kvm_cpuid2>());
        assert_eq!(size_of::<MsrEntry>(), size_of::<kb::kvm_msr_entry>());
        assert_eq!(size_of::<Fpu>(), size_of::<kb::kvm_fpu>());
        assert_eq!(offset_of!(Fpu, xmm), offset_of!(kb::kvm_fpu, xmm));
        assert_eq!(offset_of!(Fpu, mxcsr), offset_of!(kb::kvm_fpu, mxcsr));
        assert_eq!(offset_of!(MsrEntry, data), offset_of!(kb::kvm_msr_entry, data));
    }

    #[test]
    fn vm_and_vcpu_ioctl_numbers_match_linux() {
        assert_eq!(KVM_CREATE_VCPU, 0xae41);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
        assert_eq!(KVM_SET_TSS_ADDR, 0xae47);
        assert_eq!(KVM_SET_IDENTITY_MAP_ADDR, 0x4008_ae48);
        assert_eq!(KVM_SET_GSI_ROUTING, 0x4008_ae6a);
        assert_eq!(KVM_IOEVENTFD, 0x4040_ae79);
        assert_eq!(KVM_REGISTER_COALESCED_MMIO, 0x4010_ae67);
        assert_eq!(KVM_UNREGISTER_COALESCED_MMIO, 0x4010_ae68);
        assert_eq!(KVM_GET_DIRTY_LOG, 0x4010_ae42);
        assert_eq!(KVM_SET_USER_MEMORY_REGION2, 0x40a0_ae49);
        assert_eq!(size_of::<UserspaceMemoryRegion2>(), size_of::<kvm_bindings::kvm_userspace_memory_region2>());
        assert_eq!(KVM_GET_MSR_FEATURE_INDEX_LIST, 0xc004_ae0a);
        assert_eq!(size_of::<DirtyLog>(), size_of::<kvm_bindings::kvm_dirty_log>());
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_SET_REGS, 0x4090_ae82);
        assert_eq!(KVM_GET_SREGS, 0x8138_ae83);
        assert_eq!(KVM_SET_SREGS, 0x4138_ae84);
        assert_eq!(KVM_SET_CPUID2, 0x4008_ae90);
        assert_eq!(KVM_GET_MSRS, 0xc008_ae88);
        assert_eq!(KVM_GET_FPU, 0x81a0_ae8c);
        assert_eq!(KVM_GET_XSAVE, 0x9000_aea4);
        assert_eq!(KVM_INTERRUPT, 0x4004_ae86);
        assert_eq!((KVM_NMI, KVM_SMI), (0xae9a, 0xaeb7));
        assert_eq!((KVM_GET_MP_STATE, KVM_SET_MP_STATE), (0x8004_ae98, 0x4004_ae99));
        assert_eq!((KVM_GET_TSC_KHZ, KVM_SET_TSC_KHZ), (0xaea3, 0xaea2));
        assert_eq!((KVM_GET_CLOCK, KVM_SET_CLOCK), (0x8030_ae7c, 0x4030_ae7b));
        assert_eq!((KVM_SIGNAL_MSI, KVM_ENABLE_CAP), (0x4020_aea5, 0x4068_aea3));
        assert_eq!((size_of::<Msi>(), size_of::<EnableCap>()), (size_of::<kvm_bindings::kvm_msi>(), size_of::<kvm_bindings::kvm_enable_cap>()));
        assert_eq!(offset_of!(EnableCap, args), offset_of!(kvm_bindings::kvm_enable_cap, args));
        assert_eq!(size_of::<DeviceAttr>(), size_of::<kvm_bindings::kvm_device_attr>());
        assert_eq!(offset_of!(DeviceAttr, addr), offset_of!(kvm_bindings::kvm_device_attr, addr));
        assert_eq!((KVM_SET_DEVICE_ATTR, KVM_HAS_DEVICE_ATTR), (0x4018_aee1, 0x4018_aee3));
        assert_eq!(KVM_SET_BOOT_CPU_ID, 0xae78);
        assert_eq!(KVM_GET_STATS_FD, 0xaece);
        assert_eq!(KVM_X86_SET_MSR_FILTER, 0x4188_aec6);
        assert_eq!(KVM_PRE_FAULT_MEMORY, 0xc040_aed5);
        assert_eq!(size_of::<PreFaultMemory>(), size_of::<kvm_bindings::kvm_pre_fault_memory>());
        assert_eq!(offset_of!(Msi, devid), offset_of!(kvm_bindings::kvm_msi, devid));
        assert_eq!(quirk::LINT0_REENABLED, kvm_bindings::KVM_X86_QUIRK_LINT0_REENABLED as u64);
        assert_eq!(quirk::OUT_7E_INC_RIP, kvm_bindings::KVM_X86_QUIRK_OUT_7E_INC_RIP as u64);
        assert_eq!(quirk::FIX_HYPERCALL_INSN, kvm_bindings::KVM_X86_QUIRK_FIX_HYPERCALL_INSN as u64);
        assert_eq!((KVM_GET_LAPIC, KVM_SET_LAPIC), (0x8400_ae8e, 0x4400_ae8f));
        assert_eq!(size_of::<LapicState>(), size_of::<kvm_bindings::kvm_lapic_state>());
        assert_eq!(KVM_TRANSLATE, 0xc018_ae85);
        assert_eq!(size_of::<Translation>(), size_of::<kvm_bindings::kvm_translation>());
        assert_eq!(KVM_SET_GUEST_DEBUG, 0x4048_ae9b);
        assert_eq!(size_of::<crate::guest_debug::GuestDebugArg>(), size_of::<kvm_bindings::kvm_guest_debug>());
        assert_eq!(KVM_GET_VCPU_EVENTS, 0x8040_ae9f);
        assert_eq!(KVM_SET_VCPU_EVENTS, 0x4040_aea0);
        assert_eq!(KVM_SET_XSAVE, 0x5000_aea5);
        assert_eq!(KVM_GET_XCRS, 0x8188_aea6);
        assert_eq!(KVM_SET_XCRS, 0x4188_aea7);
        assert_eq!(KVM_GET_DEBUGREGS, 0x8080_aea1);
        assert_eq!(KVM_SET_DEBUGREGS, 0x4080_aea2);
        assert_eq!(KVM_SET_FPU, 0x41a0_ae8d);
        assert_eq!(KVM_SET_MSRS, 0x4008_ae89);
        assert_eq!(KVM_GET_CPUID2, 0xc008_ae91);
        assert_eq!(KVM_SET_SIGNAL_MASK, 0x4004_ae8b);
        assert_eq!((KVM_X86_SETUP_MCE, KVM_X86_GET_MCE_CAP_SUPPORTED), (0x4008_ae9c, 0x8008_ae9d));
        assert_eq!(KVM_X86_SET_MCE, 0x4040_ae9e);
        assert_eq!(size_of::<crate::mce::X86Mce>(), size_of::<kvm_bindings::kvm_x86_mce>());
    }

    /// Numbers as `<linux/kvm.h>` defines them (checked against the C header's values).
    #[test]
    fn ioctl_numbers_match_linux() {
        assert_eq!(KVM_GET_API_VERSION, 0xae00);
        assert_eq!(KVM_CREATE_VM, 0xae01);
        assert_eq!(KVM_GET_MSR_INDEX_LIST, 0xc004_ae02);
        assert_eq!(KVM_CHECK_EXTENSION, 0xae03);
        assert_eq!(KVM_GET_VCPU_MMAP_SIZE, 0xae04);
        assert_eq!(KVM_GET_SUPPORTED_CPUID, 0xc008_ae05);
        assert_eq!(KVM_IRQ_LINE, 0x4008_ae61);
        assert_eq!(KVM_CREATE_IRQCHIP, 0xae60);
        assert_eq!(KVM_CREATE_PIT, 0xae64);
        assert_eq!(KVM_CREATE_PIT2, 0x4040_ae77);
        assert_eq!(KVM_GET_PIT, 0xc048_ae65);
        assert_eq!(KVM_SET_PIT, 0x8048_ae66);
        assert_eq!(KVM_GET_PIT2, 0x8070_ae9f);
        assert_eq!(KVM_SET_PIT2, 0x4070_aea0);
        assert_eq!(KVM_REINJECT_CONTROL, 0xae71);
        assert_eq!(KVM_GET_IRQCHIP, 0xc208_ae62);
        assert_eq!(KVM_SET_IRQCHIP, 0x8208_ae63);
        assert_eq!(core::mem::size_of::<Irqchip>(), core::mem::size_of::<kvm_bindings::kvm_irqchip>());
        assert_eq!(KVM_SET_VAPIC_ADDR, 0x4008_ae93);
        assert_eq!(KVM_IRQFD, 0x4020_ae76);
        assert_eq!(size_of::<IrqFdArg>(), size_of::<kvm_bindings::kvm_irqfd>());
        assert_eq!(offset_of!(IrqFdArg, resamplefd), offset_of!(kvm_bindings::kvm_irqfd, resamplefd));
        assert_eq!((IRQFD_FLAG_DEASSIGN, IRQFD_FLAG_RESAMPLE), (kvm_bindings::KVM_IRQFD_FLAG_DEASSIGN, kvm_bindings::KVM_IRQFD_FLAG_RESAMPLE));
        assert_eq!(KVM_IRQ_LINE_STATUS, 0xc008_ae67);
        assert_eq!(core::mem::size_of::<IrqLevel>(), core::mem::size_of::<kvm_bindings::kvm_irq_level>());
    }

    #[test]
    fn fpu_round_trips_through_fxsave() {
        let mut fx = [0u8; 512];
        for (i, b) in fx.iter_mut().enumerate() {
            *b = i as u8;
        }
        let f = Fpu::from_fxsave(&fx);
        assert_eq!((f.fcw, f.fsw, f.ftwx), (0x0100, 0x0302, 4));
        assert_eq!(f.xmm[0][0], 160);
        assert_eq!(f.fpr[7][15], 159);
        let mut back = [0u8; 512];
        f.to_fxsave(&mut back);
        let mut expected = fx;
        expected[5] = 0; // reserved
        expected[24..32].fill(0); // MXCSR (KVM neither reports nor takes it), MXCSR_MASK
        assert_eq!(back[..416], expected[..416]);
        assert_eq!(f.mxcsr, 0);
        let mut kept = [0xaau8; 512];
        Fpu { mxcsr: 1 << 16, ..f }.to_fxsave(&mut kept);
        assert_eq!(kept[24..28], [0xaa; 4], "MXCSR left as it was");
    }

    #[test]
    fn mmap_size_is_kvms_x86_size() {
        assert_eq!(vcpu_mmap_size(4096), 12288);
    }

    #[test]
    fn capability_numbers_match_linux() {
        use kvm_bindings as kb;
        let pairs = [
            (cap::USER_MEMORY, kb::KVM_CAP_USER_MEMORY),
            (cap::COALESCED_MMIO, kb::KVM_CAP_COALESCED_MMIO),
            (cap::COALESCED_PIO, kb::KVM_CAP_COALESCED_PIO),
            (cap::PIT, kb::KVM_CAP_PIT),
            (cap::PIT2, kb::KVM_CAP_PIT2),
            (cap::PIT_STATE2, kb::KVM_CAP_PIT_STATE2),
            (cap::REINJECT_CONTROL, kb::KVM_CAP_REINJECT_CONTROL),
            (cap::SET_TSS_ADDR, kb::KVM_CAP_SET_TSS_ADDR),
            (cap::NR_VCPUS, kb::KVM_CAP_NR_VCPUS),
            (cap::NR_MEMSLOTS, kb::KVM_CAP_NR_MEMSLOTS),
            (cap::SET_IDENTITY_MAP_ADDR, kb::KVM_CAP_SET_IDENTITY_MAP_ADDR),
            (cap::MAX_VCPUS, kb::KVM_CAP_MAX_VCPUS),
            (cap::CHECK_EXTENSION_VM, kb::KVM_CAP_CHECK_EXTENSION_VM),
            (cap::MAX_VCPU_ID, kb::KVM_CAP_MAX_VCPU_ID),
            (cap::EXT_CPUID, kb::KVM_CAP_EXT_CPUID),
            (cap::READONLY_MEM, kb::KVM_CAP_READONLY_MEM),
            (cap::MP_STATE, kb::KVM_CAP_MP_STATE),
            (cap::USER_NMI, kb::KVM_CAP_USER_NMI),
            (cap::VCPU_EVENTS, kb::KVM_CAP_VCPU_EVENTS),
            (cap::SET_GUEST_DEBUG, kb::KVM_CAP_SET_GUEST_DEBUG),
            (cap::GET_TSC_KHZ, kb::KVM_CAP_GET_TSC_KHZ),
            (cap::SET_GUEST_DEBUG2, kb::KVM_CAP_SET_GUEST_DEBUG2),
            (cap::DEBUGREGS, kb::KVM_CAP_DEBUGREGS),
            (cap::XSAVE, kb::KVM_CAP_XSAVE),
            (cap::XCRS, kb::KVM_CAP_XCRS),
            (cap::SYNC_MMU, kb::KVM_CAP_SYNC_MMU),
            (cap::MEMORY_FAULT_INFO, kb::KVM_CAP_MEMORY_FAULT_INFO),
            (cap::ADJUST_CLOCK, kb::KVM_CAP_ADJUST_CLOCK),
            (cap::INTERNAL_ERROR_DATA, kb::KVM_CAP_INTERNAL_ERROR_DATA),
            (cap::X86_ROBUST_SINGLESTEP, kb::KVM_CAP_X86_ROBUST_SINGLESTEP),
            (cap::SIGNAL_MSI, kb::KVM_CAP_SIGNAL_MSI),
            (cap::X86_SMM, kb::KVM_CAP_X86_SMM),
            (cap::MULTI_ADDRESS_SPACE, kb::KVM_CAP_MULTI_ADDRESS_SPACE),
            (cap::ENABLE_CAP_VM, kb::KVM_CAP_ENABLE_CAP_VM),
            (cap::DISABLE_QUIRKS, kb::KVM_CAP_DISABLE_QUIRKS),
            (cap::DISABLE_QUIRKS2, kb::KVM_CAP_DISABLE_QUIRKS2),
            (cap::SPLIT_IRQCHIP, kb::KVM_CAP_SPLIT_IRQCHIP),
            (cap::IRQCHIP, kb::KVM_CAP_IRQCHIP),
            (cap::HLT, kb::KVM_CAP_HLT),
            (cap::TSC_DEADLINE_TIMER, kb::KVM_CAP_TSC_DEADLINE_TIMER),
            (cap::IRQ_INJECT_STATUS, kb::KVM_CAP_IRQ_INJECT_STATUS),
            (cap::IRQFD, kb::KVM_CAP_IRQFD),
            (cap::IRQFD_RESAMPLE, kb::KVM_CAP_IRQFD_RESAMPLE),
            (cap::X2APIC_API, kb::KVM_CAP_X2APIC_API),
        ];
        for (ours, linux) in pairs {
            assert_eq!(ours, linux as usize);
        }
        assert_eq!(check_extension(cap::NR_MEMSLOTS), 32764, "KVM_USER_MEM_SLOTS");
    }

    #[test]
    fn unknown_extensions_answer_zero() {
        for cap in [2, 1000, usize::MAX] {
            assert_eq!(check_extension(cap), 0);
        }
    }
}
