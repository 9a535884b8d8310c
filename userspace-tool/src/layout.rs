//! The guest-physical address map of the machine `rvmx run` builds: RAM from 0, with the
//! 32-bit MMIO hole (virtio-mmio devices, the I/O APIC, the local APICs) left out of it, the
//! RAM that does not fit below the hole continuing at 4 GiB, as on a PC.

/// Where RAM below 4 GiB ends and the MMIO hole begins.
pub const HOLE_START: u64 = 0xc000_0000;
/// Where the hole ends: RAM resumes here.
pub const HOLE_END: u64 = 1 << 32;

/// The virtio-mmio devices' register windows, one page each from here.
pub const VIRTIO_BASE: u64 = 0xd000_0000;
pub const VIRTIO_SIZE: u64 = 0x1000;
/// The ISA interrupt lines free for them on a PC (the 8259s and the I/O APIC alike), one each:
/// their number is how many virtio devices a machine can have.
pub const VIRTIO_IRQS: [u8; 4] = [5, 6, 10, 11];

/// Device `i`'s register window.
pub fn virtio_window(i: usize) -> u64 {
    VIRTIO_BASE + i as u64 * VIRTIO_SIZE
}

/// The RAM ranges `(guest address, bytes)` of a machine with `size` bytes of RAM.
pub fn ram(size: u64) -> Vec<(u64, u64)> {
    let low = size.min(HOLE_START);
    let mut ranges = vec![(0, low)];
    if size > low {
        ranges.push((HOLE_END, size - low));
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_skips_the_hole() {
        assert_eq!(ram(256 << 20), [(0, 256 << 20)]);
        assert_eq!(ram(HOLE_START), [(0, HOLE_START)]);
        assert_eq!(ram(4 << 30), [(0, HOLE_START), (HOLE_END, (4 << 30) - HOLE_START)]);
    }

    #[test]
    fn devices_sit_in_the_hole() {
        let last = virtio_window(VIRTIO_IRQS.len() - 1) + VIRTIO_SIZE;
        assert!(VIRTIO_BASE >= HOLE_START && last <= 0xfec0_0000, "below the I/O APIC");
    }
}
