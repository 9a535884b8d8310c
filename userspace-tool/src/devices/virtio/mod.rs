//! virtio devices on the virtio-mmio transport (virtio 1.2, sections 2-4.2): the guest finds
//! each in ACPI's DSDT (a `LNRO0005` device with its register page and its interrupt line),
//! queues its requests in guest memory, and notifies by writing `QueueNotify`, which
//! `KVM_IOEVENTFD` turns into an eventfd signal without leaving the kernel. A thread per device
//! (vmm/virtio.rs) serves the queues and raises the device's line when it used buffers.
//!
//! The rings are rust-vmm's virtio-queue; a device here only turns one descriptor chain into
//! the bytes it wrote back ([`Device::handle`]).

pub mod block;
pub mod mmio;
pub mod rng;

use virtio_queue::DescriptorChain;
use vm_memory::GuestMemoryMmap;

/// A descriptor chain from one of a device's queues.
pub type Chain<'a> = DescriptorChain<&'a GuestMemoryMmap>;

/// The largest queue a device offers (the driver may pick a smaller power of two).
pub const QUEUE_MAX: u16 = 256;

/// What a virtio device is to its transport.
/// Shared by the vCPU threads (configuration reads) and its own thread (requests).
pub trait Device: Send + Sync {
    /// Its virtio device ID (5 Device Types).
    fn id(&self) -> u32;
    /// Its name in messages.
    fn name(&self) -> &str;
    /// The device-specific feature bits it offers (the transport adds the ring's and
    /// VERSION_1).
    fn features(&self) -> u64;
    /// How many queues it has.
    fn queues(&self) -> usize;
    /// Reads `data.len()` bytes of its configuration space at `offset` (zeros past its end).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Serves one request from queue `queue`: the bytes it wrote into the chain's
    /// device-writable part, for the used ring.
    fn handle(&self, queue: usize, chain: Chain<'_>, mem: &GuestMemoryMmap) -> u32;
}

/// Copies the bytes of `config` at `offset` into `data`; zeros where `config` ends.
pub fn read_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else { return };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_past_the_end_are_zero() {
        let mut d = [0xffu8; 4];
        read_bytes(&[1, 2, 3], 1, &mut d);
        assert_eq!(d, [2, 3, 0, 0]);
        read_bytes(&[1, 2, 3], 9, &mut d);
        assert_eq!(d, [0; 4]);
        read_bytes(&[1, 2, 3], u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
    }
}
