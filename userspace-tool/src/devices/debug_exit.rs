//! The debug-exit port (as QEMU's isa-debug-exit): a test guest ends the VM with a status,
//! which `rvmx run` exits with.

use super::bus::{BusDevice, Effect};

/// Its port.
pub const PORT: u16 = 0xf4;

/// The port: write-only, any width; the first byte is the status.
pub struct DebugExit;

impl BusDevice for DebugExit {
    fn claims(&self, _offset: u64, _len: usize, write: bool) -> bool {
        write
    }

    fn read(&mut self, _base: u64, _offset: u64, _data: &mut [u8], _now: u64) {
        // Never called: reads are not claimed, so they see an empty bus.
    }

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8], _now: u64) -> Option<Effect> {
        Some(Effect::DebugExit(data[0]))
    }
}
