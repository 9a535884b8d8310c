//! The i8042 keyboard controller (rust-vmm's vm-superio), for its one use in a VM: the CPU
//! reset line a guest pulls to reboot (command 0xfe).

use vm_superio::I8042Device;

use super::{
    bus::{BusDevice, Effect},
    line::Line,
};

/// The data and command ports.
pub const DATA: u16 = 0x60;
pub const COMMAND: u16 = 0x64;
/// The command that pulses the CPU reset line (also the ACPI reset register's value).
pub const CMD_RESET: u8 = 0xfe;

/// The controller and its reset line.
pub struct I8042 {
    dev: I8042Device<Line>,
    reset: Line,
}

impl Default for I8042 {
    fn default() -> Self {
        let reset = Line::default();
        I8042 { dev: I8042Device::new(reset.clone()), reset }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], _now: u64) {
        data[0] = self.dev.read((base + offset - DATA as u64) as u8);
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8], _now: u64) -> Option<Effect> {
        let _ = self.dev.write((base + offset - DATA as u64) as u8, data[0]);
        self.reset.take().then_some(Effect::Reset)
    }
}
