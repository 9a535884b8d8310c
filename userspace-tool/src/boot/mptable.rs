//! The Intel MultiProcessor Specification 1.4 table that tells a kernel built without ACPI how
//! many CPUs it has and where their local APICs are: a floating pointer found by the guest's
//! scan of the last KiB of conventional memory, then a configuration table with one processor
//! entry per vCPU, the ISA bus and the kernel's I/O APIC, ISA IRQ n on its pin n (KVM's
//! default GSI routes), with LINT0 taking ExtINT and LINT1 NMIs, as Firecracker lists them.
//! Only a machine with an I/O APIC (`--irqchip kernel`) gets one: the table has no way to
//! describe the 8259s alone, and Linux calls one without I/O interrupt entries a BIOS bug.

use super::checksum;

/// Where the tables go: the last KiB below 640 KiB, the first place Linux looks.
pub const ADDR: u64 = 0x9fc00;
/// The room they have there.
pub const ROOM: usize = 0x400;

const FLOATING_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const CPU_LEN: usize = 20;
const BUS_LEN: usize = 8;
const IOAPIC_LEN: usize = 8;
const INTSRC_LEN: usize = 8;
/// The ISA IRQs routed to the I/O APIC.
const ISA_IRQS: u8 = 16;
/// Interrupt types of I/O and local interrupt entries.
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// Processor entry flags.
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;

/// The bytes for guest-physical [`ADDR`], for `cpus` CPUs with APIC IDs 0..cpus, each with
/// CPUID leaf 1's `signature` (EAX) and `features` (EDX), their local APICs at `lapic` and, if
/// an I/O APIC at `ioapic` (APIC ID `cpus`). `None` if they do not fit.
pub fn build(cpus: u8, signature: u32, features: u32, lapic: u32, ioapic: u32) -> Option<Vec<u8>> {
    let io_entries = 1 + ISA_IRQS as usize + 2;
    let io_len = IOAPIC_LEN + (ISA_IRQS as usize + 2) * INTSRC_LEN;
    let table_len = HEADER_LEN + CPU_LEN * cpus as usize + BUS_LEN + io_len;
    if FLOATING_LEN + table_len > ROOM {
        return None;
    }
    let mut t = Vec::with_capacity(table_len);
    t.extend_from_slice(b"PCMP");
    t.extend_from_slice(&(table_len as u16).to_le_bytes());
    t.push(4); // specification revision 1.4
    t.push(0); // checksum, below
    t.extend_from_slice(b"RVMX    ");
    t.extend_from_slice(b"rvmx run    ");
    t.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    t.extend_from_slice(&0u16.to_le_bytes());
    t.extend_from_slice(&((cpus as usize + 1 + io_entries) as u16).to_le_bytes()); // entries
    t.extend_from_slice(&lapic.to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes()); // no extended table
    for id in 0..cpus {
        t.push(0); // processor
        t.push(id);
        t.push(0x14); // local APIC version
        t.push(CPU_ENABLED | if id == 0 { CPU_BOOTPROCESSOR } else { 0 });
        t.extend_from_slice(&signature.to_le_bytes());
        t.extend_from_slice(&features.to_le_bytes());
        t.extend_from_slice(&[0; 8]);
    }
    t.extend_from_slice(&[1, 0]); // bus 0
    t.extend_from_slice(b"ISA   ");
    let id = cpus;
    t.extend_from_slice(&[2, id, 0x11, 1]); // I/O APIC: ID, version, enabled
    t.extend_from_slice(&ioapic.to_le_bytes());
    for irq in 0..ISA_IRQS {
        // I/O interrupt: conforming polarity and trigger (ISA: edge, active high).
        t.extend_from_slice(&[3, INT_TYPE_INT, 0, 0, 0, irq, id, irq]);
    }
    // Local interrupts, to every local APIC (0xff): ExtINT on LINT0, NMI on LINT1.
    t.extend_from_slice(&[4, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    t.extend_from_slice(&[4, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    t[7] = checksum(&t);

    let mut f = Vec::with_capacity(FLOATING_LEN + table_len);
    f.extend_from_slice(b"_MP_");
    f.extend_from_slice(&((ADDR as usize + FLOATING_LEN) as u32).to_le_bytes());
    f.push(1); // length in 16-byte units
    f.push(4);
    f.push(0); // checksum, below
    f.extend_from_slice(&[0; 5]); // a configuration table is present; no IMCR
    f[10] = checksum(&f);
    f.extend_from_slice(&t);
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_sum_to_zero_and_list_every_cpu() {
        let b = build(2, 0x906ea, 0x178bfbff, 0xfee0_0000, 0xfec0_0000).unwrap();
        let sum = |s: &[u8]| s.iter().fold(0u8, |a, x| a.wrapping_add(*x));
        assert_eq!((&b[..4], sum(&b[..16]), b[8], b[9]), (&b"_MP_"[..], 0, 1, 4));
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 0x9fc10);
        let t = &b[16..];
        assert_eq!(&t[..4], b"PCMP");
        assert_eq!(u32::from_le_bytes(t[36..40].try_into().unwrap()), 0xfee0_0000);
        assert_eq!((t[44], t[45], t[47]), (0, 0, 3), "CPU 0: enabled, boot processor");
        assert_eq!((t[64], t[65], t[67]), (0, 1, 1), "CPU 1: enabled");
        assert_eq!(&t[84..92], b"\x01\x00ISA   ");
    }

    #[test]
    fn the_kernel_irqchip_lists_its_ioapic() {
        let b = build(2, 0x906ea, 0x178bfbff, 0xfee0_0000, 0xfec0_0000).unwrap();
        let t = &b[16..];
        let len = u16::from_le_bytes([t[4], t[5]]) as usize;
        assert_eq!((len, t.iter().take(len).fold(0u8, |a, x| a.wrapping_add(*x))), (44 + 40 + 8 + 8 + 18 * 8, 0));
        assert_eq!(u16::from_le_bytes([t[34], t[35]]), 2 + 1 + 1 + 16 + 2, "entries");
        let io = &t[92..100];
        assert_eq!((io[0], io[1], io[2], io[3]), (2, 2, 0x11, 1), "I/O APIC 2, enabled");
        assert_eq!(u32::from_le_bytes(io[4..8].try_into().unwrap()), 0xfec0_0000);
        for irq in 0..16u8 {
            let e = &t[100 + 8 * irq as usize..][..8];
            assert_eq!(e, [3, 0, 0, 0, 0, irq, 2, irq], "ISA IRQ {irq} on pin {irq}");
        }
        assert_eq!(&t[228..236], [4, 3, 0, 0, 0, 0, 0xff, 0], "ExtINT on LINT0");
        assert_eq!(&t[236..244], [4, 1, 0, 0, 0, 0, 0xff, 1], "NMI on LINT1");
        assert!(build(41, 0, 0, 0, 0).is_none(), "does not fit in the KiB");
        assert!(build(40, 0, 0, 0, 0).is_some());
    }
}
