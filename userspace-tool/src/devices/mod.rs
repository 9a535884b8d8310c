//! The devices `rvmx run` emulates in userspace, since it asks the device for no in-kernel
//! irqchip: the PC's port-I/O devices and each vCPU's local APIC.

pub mod isa;
pub mod lapic;
pub mod pic;
pub mod pit;
pub mod rtc;
