//! The virtio devices' side of the machine: each device's register page on the MMIO bus, its
//! `QueueNotify` register turned into an eventfd by `KVM_IOEVENTFD` (a notification costs the
//! guest no exit to userspace), its interrupt line (an irqfd with the kernel's irqchip, else a
//! pulse at the userspace 8259s), and the thread that serves its queues.

use std::{io::Write, os::fd::AsRawFd};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::machine::Machine;
use crate::{
    devices::virtio::{self, mmio::Transport},
    error::{Error, Result},
    layout,
};

/// A virtio device in the machine.
pub struct Slot {
    pub transport: Transport,
    /// Its register page.
    pub base: u64,
    /// Its ISA interrupt line.
    pub irq: u8,
    /// With the kernel's irqchip: the irqfd that raises the line there.
    irqfd: Option<EventFd>,
}

/// Puts `devices` in the machine of VM `vm`, in order (window and line `i` for the `i`th); with
/// `kernel_irqchip` their lines are irqfds.
pub fn attach(vm: &VmFd, devices: Vec<Box<dyn virtio::Device>>, kernel_irqchip: bool) -> Result<Vec<Slot>> {
    if devices.len() > layout::VIRTIO_IRQS.len() {
        return Err(Error::TooManyVirtio(layout::VIRTIO_IRQS.len()));
    }
    devices.into_iter().enumerate().map(|(i, device)| {
        let (base, irq) = (layout::virtio_window(i), layout::VIRTIO_IRQS[i]);
        let transport = Transport::new(device).map_err(|e| Error::Os("eventfd", e))?;
        let notify = IoEventAddress::Mmio(base + u64::from(VIRTIO_MMIO_QUEUE_NOTIFY));
        vm.register_ioevent(&transport.notify, &notify, NoDatamatch).map_err(Error::ioctl("KVM_IOEVENTFD"))?;
        let irqfd = if kernel_irqchip {
            let fd = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Os("eventfd", e))?;
            vm.register_irqfd(&fd, irq.into()).map_err(Error::ioctl("KVM_IRQFD"))?;
            Some(fd)
        } else {
            None
        };
        Ok(Slot { transport, base, irq, irqfd })
    }).collect()
}

/// Device `i`'s thread: serves its queues whenever the guest notifies, until the VM stops.
pub fn serve<W: Write>(m: &Machine<W>, i: usize, mem: &GuestMemoryMmap) {
    let slot = &m.virtio[i];
    while !m.stopping() {
        let mut pfd = libc::pollfd { fd: slot.transport.notify.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; the timeout lets the loop see the VM stop.
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        // Non-blocking: a notification another read already took is no error.
        let _ = slot.transport.notify.read();
        if slot.transport.work(mem) {
            interrupt(m, slot);
        }
    }
}

/// Raises `slot`'s line: an edge, as its ACPI description says.
fn interrupt<W: Write>(m: &Machine<W>, slot: &Slot) {
    match &slot.irqfd {
        // A full counter only means an edge is already on its way.
        Some(fd) => {
            let _ = fd.write(1);
        }
        None => m.pulse_irq(slot.irq),
    }
}
