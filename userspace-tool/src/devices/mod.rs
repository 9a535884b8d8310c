//! The devices `rvmx run` emulates in userspace, since it asks the device for no in-kernel
//! irqchip: the PC's port-I/O devices (isa.rs, on a [`bus::Bus`]) and each vCPU's local APIC
//! (lapic.rs, on the MMIO bus of `vmm/machine.rs`). Each device is a [`bus::BusDevice`]. The
//! virtio devices (virtio/) sit on the MMIO bus too, each served by a thread of its own.

pub mod acpi_pm;
pub mod bus;
pub mod clock;
pub mod debug_exit;
pub mod i8042;
pub mod isa;
pub mod lapic;
pub mod line;
pub mod pci_host;
pub mod pic;
pub mod pit;
pub mod rtc;
pub mod serial;
pub mod virtio;
