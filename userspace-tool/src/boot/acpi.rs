//! The ACPI tables firmware would leave for the guest, as Firecracker and cloud-hypervisor
//! write them (rust-vmm's `acpi_tables`): the RSDP where Linux scans for it (and in the zero
//! page), an XSDT naming the FADT and the MADT, a FACS, and a DSDT with the devices the guest
//! should know of. Distribution kernels find their CPUs only here (they are built without MP
//! table parsing).
//!
//! The machine is a PC without PCI: the FADT describes a legacy (not hardware-reduced) ACPI
//! platform whose PM1 registers are [`crate::devices::acpi_pm`] (power-off through `\_S5`),
//! whose reset register is the i8042's reset command, and which has no i8042 for the guest to
//! probe (the i8042 emulates only its reset line). The MADT lists a local APIC per vCPU and,
//! with the kernel's irqchip, its I/O APIC; the crate's MADT cannot carry the PC-AT flag, an
//! interrupt source override or local-APIC NMI entries, so the MADT is written here.

use acpi_tables::{
    aml,
    Aml,
    facs::FACS,
    fadt::{FADTBuilder, Flags},
    gas::{AccessSize, AddressSpace, GAS},
    rsdp::Rsdp,
    sdt::Sdt,
    xsdt::XSDT,
};

use super::checksum;
use crate::{
    devices::{acpi_pm, i8042, rtc, serial},
    layout,
};

/// Where the tables go: the RSDP first, on the 16-byte boundary Linux's scan of
/// 0xe0000-0xfffff finds.
pub const ADDR: u64 = 0xe0000;
/// The room they have there (to 1 MiB).
pub const ROOM: usize = 0x20000;

const OEM_ID: [u8; 6] = *b"RVMX  ";
const OEM_TABLE_ID: [u8; 8] = *b"RVMXRUN ";
const OEM_REVISION: u32 = 1;

/// The SCI's ISA IRQ (never raised: no ACPI event is ever pending).
const SCI_IRQ: u8 = 9;
/// IAPC_BOOT_ARCH: ISA devices present; no VGA. No 8042 bit: nothing to probe.
const BOOT_ARCH_LEGACY_DEVICES: u16 = 1 << 0;
const BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;

/// What the tables describe.
pub struct Machine {
    pub cpus: u8,
    /// The local APICs' address.
    pub lapic: u32,
    /// The I/O APIC's address and APIC ID, with the kernel's irqchip.
    pub ioapic: Option<(u32, u8)>,
    /// The virtio-mmio devices: register page and ISA interrupt line of each.
    pub virtio: Vec<(u32, u8)>,
}

/// The tables as one blob for guest-physical [`ADDR`]; `None` if they do not fit.
pub fn build(m: &Machine) -> Option<Vec<u8>> {
    let mut blob = Blob(vec![0; Rsdp::len()]);
    let facs = blob.place(&bytes(&FACS::new()), 64);
    let dsdt = blob.place(&dsdt(&m.virtio), 16);
    let fadt = blob.place(&bytes(&fadt(facs, dsdt)), 16);
    let madt = blob.place(&madt(m), 16);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt);
    xsdt.add_entry(madt);
    let xsdt = blob.place(&bytes(&xsdt), 16);
    let rsdp = bytes(&Rsdp::new(OEM_ID, xsdt));
    blob.0[..rsdp.len()].copy_from_slice(&rsdp);
    (blob.0.len() <= ROOM).then_some(blob.0)
}

/// The tables laid out from [`ADDR`].
struct Blob(Vec<u8>);

impl Blob {
    /// Appends `table` at the next multiple of `align`; its guest-physical address.
    fn place(&mut self, table: &[u8], align: usize) -> u64 {
        let at = self.0.len().next_multiple_of(align);
        self.0.resize(at, 0);
        self.0.extend_from_slice(table);
        ADDR + at as u64
    }
}

fn bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

/// The PM1 blocks (events at `acpi_pm::EVENT`, control at `acpi_pm::CONTROL`), the SCI, and
/// the reset register: the i8042's pulse-reset command.
fn fadt(facs: u64, dsdt: u64) -> acpi_tables::fadt::FADT {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .firmware_ctrl_64(facs)
        .dsdt_64(dsdt)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::PwrButton) // no fixed power or sleep button
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup);
    f.sci_int = u16::from(SCI_IRQ).into();
    f.pm1a_evt_blk = u32::from(acpi_pm::EVENT).into();
    f.pm1_evt_len = acpi_pm::EVENT_LEN;
    f.x_pm1a_evt_blk = io_register(acpi_pm::EVENT, acpi_pm::EVENT_LEN);
    f.pm1a_cnt_blk = u32::from(acpi_pm::CONTROL).into();
    f.pm1_cnt_len = acpi_pm::CONTROL_LEN;
    f.x_pm1a_cnt_blk = io_register(acpi_pm::CONTROL, acpi_pm::CONTROL_LEN);
    f.iapc_boot_arch = (BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_VGA_NOT_PRESENT).into();
    f.reset_reg = GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, i8042::COMMAND.into());
    f.reset_value = i8042::CMD_RESET;
    f.finalize()
}

/// A block of `len` bytes of ports at `port` (ACPICA reads the PM1 halves 16 bits wide).
fn io_register(port: u16, len: u8) -> GAS {
    GAS::new(AddressSpace::SystemIo, len.saturating_mul(8), 0, AccessSize::WordAccess, port.into())
}

/// `\_S5` and the devices the guest may bind drivers to: COM1, the CMOS clock and the
/// virtio-mmio devices (`LNRO0005`, which Linux's virtio_mmio driver matches, as on
/// cloud-hypervisor and QEMU's microvm).
fn dsdt(virtio: &[(u32, u8)]) -> Vec<u8> {
    let mut t = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let mut devices = Vec::new();
    isa_device(&mut devices, "COM1", "PNP0501", &[&aml::IO::new(serial::BASE, serial::BASE, 1, serial::LEN as u8), &irq(serial::IRQ)]);
    isa_device(&mut devices, "RTC_", "PNP0B00", &[&aml::IO::new(rtc::INDEX, rtc::INDEX, 1, 2), &irq(rtc::IRQ)]);
    for (i, &(base, line)) in virtio.iter().enumerate() {
        let (window, line) = (aml::Memory32Fixed::new(true, base, layout::VIRTIO_SIZE as u32), irq(line));
        let crs = aml::ResourceTemplate::new(vec![&window, &line]);
        let (hid, uid) = (aml::Name::new("_HID".into(), &"LNRO0005"), aml::Name::new("_UID".into(), &i));
        let crs = aml::Name::new("_CRS".into(), &crs);
        aml::Device::new(format!("VR{i:02}").as_str().into(), vec![&hid, &uid, &crs]).to_aml_bytes(&mut devices);
    }
    let devices = Raw(devices);
    aml::Scope::new("\\_SB_".into(), vec![&devices]).to_aml_bytes(&mut t);
    // SLP_TYPa and SLP_TYPb of soft off, which acpi_pm turns into the end of the VM.
    let s5 = aml::Package::new(vec![&acpi_pm::SOFT_OFF, &acpi_pm::SOFT_OFF, &aml::ZERO, &aml::ZERO]);
    aml::Name::new("\\_S5_".into(), &s5).to_aml_bytes(&mut t);
    t.update_checksum();
    t.as_slice().to_vec()
}

/// AML already serialized.
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

/// Appends to `out` device `name` with PNP ID `hid` and `resources` as its current resources.
fn isa_device(out: &mut Vec<u8>, name: &str, hid: &str, resources: &[&dyn Aml]) {
    let hid = aml::EISAName::new(hid);
    let crs = aml::ResourceTemplate::new(resources.to_vec());
    let (hid, crs) = (aml::Name::new("_HID".into(), &hid), aml::Name::new("_CRS".into(), &crs));
    aml::Device::new(name.into(), vec![&hid, &crs]).to_aml_bytes(out);
}

/// An ISA interrupt: edge-triggered, active high, not shared.
fn irq(n: u8) -> aml::Interrupt {
    aml::Interrupt::new(true, true, false, false, n.into())
}

/// MADT entry types and flags (ACPI 6.5, 5.2.12).
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_INTERRUPT_OVERRIDE: u8 = 2;
const MADT_LOCAL_APIC_NMI: u8 = 4;
const MADT_PCAT_COMPAT: u32 = 1;
const LOCAL_APIC_ENABLED: u32 = 1;
/// MPS INTI flags: active high, level-triggered.
const INTI_ACTIVE_HIGH_LEVEL: u16 = 0b01 | 0b11 << 2;

/// One local APIC per vCPU (processor UID = APIC ID = index), the 8259s (PC-AT flag), and with
/// an I/O APIC: it at GSI 0 (ISA IRQ n on pin n, as the kernel routes them), the SCI as a
/// level-triggered, active-high interrupt (what the kernel's I/O APIC and the line's idle level
/// agree on), and NMIs on every LINT1.
fn madt(m: &Machine) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(b"APIC");
    t.extend_from_slice(&0u32.to_le_bytes()); // length, below
    t.extend_from_slice(&[5, 0]); // revision, checksum (below)
    t.extend_from_slice(&OEM_ID);
    t.extend_from_slice(&OEM_TABLE_ID);
    t.extend_from_slice(&OEM_REVISION.to_le_bytes());
    t.extend_from_slice(&acpi_tables::CREATOR_ID);
    t.extend_from_slice(&acpi_tables::CREATOR_REVISION);
    t.extend_from_slice(&m.lapic.to_le_bytes());
    t.extend_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    for id in 0..m.cpus {
        t.extend_from_slice(&[MADT_LOCAL_APIC, 8, id, id]);
        t.extend_from_slice(&LOCAL_APIC_ENABLED.to_le_bytes());
    }
    if let Some((address, id)) = m.ioapic {
        t.extend_from_slice(&[MADT_IO_APIC, 12, id, 0]);
        t.extend_from_slice(&address.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes()); // GSI base
        t.extend_from_slice(&[MADT_INTERRUPT_OVERRIDE, 10, 0, SCI_IRQ]); // ISA bus, source
        t.extend_from_slice(&u32::from(SCI_IRQ).to_le_bytes());
        t.extend_from_slice(&INTI_ACTIVE_HIGH_LEVEL.to_le_bytes());
        // Every processor (UID 0xff): LINT1, flags "conforms to the bus".
        t.extend_from_slice(&[MADT_LOCAL_APIC_NMI, 6, 0xff, 0, 0, 1]);
    }
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    t[9] = checksum(&t);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(blob: &[u8], addr: u64) -> &[u8] {
        &blob[(addr - ADDR) as usize..]
    }
    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }
    /// The table at `addr`: its signature checked and its bytes (by its length) summing to 0.
    fn table<'a>(blob: &'a [u8], addr: u64, signature: &[u8; 4]) -> &'a [u8] {
        let t = at(blob, addr);
        assert_eq!(&t[..4], signature);
        let t = &t[..u32_at(t, 4) as usize];
        assert_eq!(checksum(t), 0, "{} checksum", String::from_utf8_lossy(signature));
        t
    }

    #[test]
    fn tables_chain_from_the_rsdp_with_valid_checksums() {
        let m = Machine { cpus: 3, lapic: 0xfee0_0000, ioapic: Some((0xfec0_0000, 3)), virtio: vec![(0xd000_0000, 5)] };
        let blob = build(&m).unwrap();
        assert_eq!(&blob[..8], b"RSD PTR ");
        assert_eq!(checksum(&blob[..20]), 0);
        assert_eq!(checksum(&blob[..36]), 0);
        assert_eq!(blob[15], 2, "ACPI 2.0+ RSDP");
        let xsdt = table(&blob, u64_at(&blob, 24), b"XSDT");
        let entries: Vec<u64> = (36..xsdt.len()).step_by(8).map(|o| u64_at(xsdt, o)).collect();
        assert_eq!(entries.len(), 2);
        let fadt = table(&blob, entries[0], b"FACP");
        let facs = u64_at(fadt, 132);
        assert_eq!(facs % 64, 0);
        assert_eq!(&at(&blob, facs)[..4], b"FACS");
        let dsdt = table(&blob, u64_at(fadt, 140), b"DSDT");
        let virtio = dsdt.windows(8).position(|w| w == b"LNRO0005").expect("the virtio device is in the DSDT");
        // Its _CRS: Memory32Fixed (0x86) with the window, then an extended interrupt on line 5.
        let crs = &dsdt[virtio..];
        let mem = crs.iter().position(|&b| b == 0x86).unwrap();
        assert_eq!((u32_at(crs, mem + 4), u32_at(crs, mem + 8)), (0xd000_0000, 0x1000));
        assert_eq!((crs[mem + 12], u32_at(crs, mem + 17)), (0x89, 5));
        assert_eq!(u32_at(fadt, 56), u32::from(acpi_pm::EVENT));
        assert_eq!(u32_at(fadt, 64), u32::from(acpi_pm::CONTROL));
        assert_eq!(u32_at(fadt, 112) & (1 << 10), 1 << 10, "reset register supported");
        assert_eq!(u32_at(fadt, 112) & Flags::HwReducedAcpi as u32, 0);
        assert_eq!(fadt[128], i8042::CMD_RESET);
        let madt = table(&blob, entries[1], b"APIC");
        assert_eq!((u32_at(madt, 36), u32_at(madt, 40)), (0xfee0_0000, 1));
        // Walk the entries: 3 local APICs, the I/O APIC, the SCI override, the NMI entry.
        let (mut off, mut kinds) = (44, Vec::new());
        while off < madt.len() {
            kinds.push(madt[off]);
            off += madt[off + 1] as usize;
        }
        assert_eq!(off, madt.len());
        assert_eq!(kinds, [0, 0, 0, 1, 2, 4]);
    }

    #[test]
    fn without_an_ioapic_the_madt_lists_only_the_cpus() {
        let blob = build(&Machine { cpus: 1, lapic: 0xfee0_0000, ioapic: None, virtio: vec![] }).unwrap();
        let madt_addr = u64_at(table(&blob, u64_at(&blob, 24), b"XSDT"), 44);
        assert_eq!(table(&blob, madt_addr, b"APIC").len(), 44 + 8);
    }

    #[test]
    fn the_dsdt_says_how_to_power_off() {
        let blob = build(&Machine { cpus: 1, lapic: 0xfee0_0000, ioapic: None, virtio: vec![] }).unwrap();
        let fadt = table(&blob, u64_at(table(&blob, u64_at(&blob, 24), b"XSDT"), 36), b"FACP");
        let dsdt = table(&blob, u64_at(fadt, 140), b"DSDT");
        // NameOp "_S5_" PackageOp: the package follows the name.
        let s5 = dsdt.windows(6).position(|w| w == b"\x08\\_S5_").expect("\\_S5_ in the DSDT");
        assert_eq!(dsdt[s5 + 6], 0x12, "a package");
        assert!(dsdt.windows(4).any(|w| w == b"COM1"));
    }

    #[test]
    fn the_largest_machine_fits() {
        assert!(build(&Machine { cpus: 255, lapic: 0xfee0_0000, ioapic: Some((0xfec0_0000, 255)), virtio: vec![] }).is_some());
    }
}
