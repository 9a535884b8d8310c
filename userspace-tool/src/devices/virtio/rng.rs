//! virtio-rng (virtio 1.2, 5.4): fills each buffer the driver queues with bytes from the host's
//! random-number generator (`getrandom`, as `/dev/urandom`). The guest's hwrng core mixes them
//! into its entropy pool, so a guest without a hardware RNG instruction does not wait for
//! entropy at boot.

use std::io::Write;

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use vm_memory::GuestMemoryMmap;

use super::{Chain, Device};

/// The most one request gets (the driver asks for less: a page or so at a time).
const MAX_REQUEST: usize = 64 << 10;

pub struct Rng;

impl Device for Rng {
    fn id(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn name(&self) -> &str {
        "virtio-rng"
    }

    fn features(&self) -> u64 {
        0
    }

    fn queues(&self) -> usize {
        1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_bytes(&[], offset, data);
    }

    fn handle(&self, _queue: usize, chain: Chain<'_>, mem: &GuestMemoryMmap) -> u32 {
        // A chain with device-readable parts or bad addresses gets nothing.
        let Ok(mut writer) = chain.writer(mem) else { return 0 };
        let mut bytes = vec![0u8; writer.available_bytes().min(MAX_REQUEST)];
        if getrandom(&mut bytes).is_err() || writer.write_all(&bytes).is_err() {
            return 0;
        }
        writer.bytes_written() as u32
    }
}

/// Fills `buf` from the host's random-number generator.
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match n {
            n if n > 0 => done += n as usize,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return Err(std::io::Error::last_os_error()),
        }
    }
    Ok(())
}
