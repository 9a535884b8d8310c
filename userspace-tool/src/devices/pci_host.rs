//! PCI configuration mechanism #1 (ports 0xcf8 and 0xcfc) with one device behind it: a host
//! bridge at 00:00.0, and nothing else. The machine has no PCI devices, but a kernel that
//! finds no way to reach configuration space says "PCI: Fatal: No config space access
//! function found" (even with `pci=off`); with the bridge it finds type-1 access, and with
//! ACPI (no PCI root in the DSDT) or a scan of bus 0 it finds nothing to drive.

use super::bus::{BusDevice, Effect};

/// CONFIG_ADDRESS (32 bits) and CONFIG_DATA (1, 2 or 4 bytes at 0xcfc-0xcff).
pub const ADDRESS: u16 = 0xcf8;
pub const DATA: u16 = 0xcfc;
/// The bus range's length, and CONFIG_DATA's offset in it.
pub const LEN: u64 = 8;
const DATA_OFFSET: u64 = (DATA - ADDRESS) as u64;

/// CONFIG_ADDRESS: enable bit, and the bus/device/function and dword it names.
const ENABLE: u32 = 1 << 31;
const BDF_SHIFT: u32 = 8;
const BDF_MASK: u32 = 0xffff;
const REGISTER_MASK: u32 = 0xfc;
/// Bits 30:24: reserved, or on AMD the extended register number (the bridge has no
/// extended space: reads there see nothing).
const EXTENDED: u32 = 0x7f00_0000;

/// The bridge's first dwords: vendor 8086 (Intel), device 0d57 (the virtual host bridge
/// cloud-hypervisor and Firecracker present), command/status 0, class 06/00/00 (host bridge),
/// header type 0.
const VENDOR_DEVICE: u32 = 0x0d57_8086;
const CLASS_REVISION: u32 = 0x0600_0000;

/// The address register; the bridge's space is constant.
#[derive(Default)]
pub struct PciHost {
    address: u32,
}

impl PciHost {
    /// The dword CONFIG_ADDRESS names: the bridge's, or all ones (no device there).
    fn dword(&self) -> u32 {
        if self.address & ENABLE == 0 || (self.address >> BDF_SHIFT) & BDF_MASK != 0 || self.address & EXTENDED != 0 {
            return u32::MAX;
        }
        match self.address & REGISTER_MASK {
            0x00 => VENDOR_DEVICE,
            0x08 => CLASS_REVISION,
            _ => 0, // read-only zeros: no BARs, no capabilities, no interrupt
        }
    }
}

impl BusDevice for PciHost {
    /// CONFIG_ADDRESS takes only 32-bit accesses (others go to the ISA bus on a PC);
    /// CONFIG_DATA any width that stays inside it.
    fn claims(&self, offset: u64, len: usize, _write: bool) -> bool {
        matches!(len, 1 | 2 | 4) && (offset == 0 && len == 4 || offset >= DATA_OFFSET && offset.is_multiple_of(len as u64))
    }

    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8], _now: u64) {
        let v = if offset == 0 { self.address } else { self.dword() >> ((offset - DATA_OFFSET) * 8) };
        data.copy_from_slice(&v.to_le_bytes()[..data.len()]);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8], _now: u64) -> Option<Effect> {
        if offset == 0 {
            self.address = u32::from_le_bytes(data.try_into().unwrap_or_default());
        }
        None // configuration writes: the bridge has nothing to change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_read(h: &mut PciHost, bdf: u32, reg: u32, len: usize) -> u32 {
        h.write(ADDRESS.into(), 0, &(ENABLE | bdf << BDF_SHIFT | reg & REGISTER_MASK).to_le_bytes(), 0);
        let mut d = [0; 4];
        let offset = DATA_OFFSET + u64::from(reg & 3);
        assert!(h.claims(offset, len, false));
        h.read(ADDRESS.into(), offset, &mut d[..len], 0);
        u32::from_le_bytes(d)
    }

    #[test]
    fn the_host_bridge_is_alone_on_bus_0() {
        let mut h = PciHost::default();
        assert_eq!(config_read(&mut h, 0, 0, 4), VENDOR_DEVICE);
        assert_eq!(config_read(&mut h, 0, 0x0a, 2), 0x0600, "class: host bridge");
        assert_eq!(config_read(&mut h, 0, 0x0e, 1), 0, "header type 0");
        assert_eq!(config_read(&mut h, 1 << 3, 0, 4), u32::MAX, "no device 1");
        assert_eq!(config_read(&mut h, 1 << 8, 0, 2), 0xffff, "no bus 1");
        h.write(ADDRESS.into(), 0, &(ENABLE | 1 << 24).to_le_bytes(), 0);
        assert_eq!(h.dword(), u32::MAX, "no extended register 0x100");
    }

    #[test]
    fn the_address_register_reads_back_and_takes_only_dwords() {
        let mut h = PciHost::default();
        h.write(ADDRESS.into(), 0, &ENABLE.to_le_bytes(), 0);
        let mut d = [0; 4];
        h.read(ADDRESS.into(), 0, &mut d, 0);
        assert_eq!(u32::from_le_bytes(d), ENABLE, "Linux's type-1 probe");
        assert!(!h.claims(3, 1, true) && !h.claims(0, 2, false), "byte and word accesses at 0xcf8");
        assert!(!h.claims(5, 2, false), "misaligned data access");
        h.write(ADDRESS.into(), 0, &0u32.to_le_bytes(), 0);
        assert_eq!(h.dword(), u32::MAX, "disabled");
    }
}
