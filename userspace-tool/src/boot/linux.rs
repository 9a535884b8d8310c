//! Booting a Linux bzImage with the x86 64-bit boot protocol (Documentation/arch/x86/boot.rst):
//! rust-vmm's linux-loader puts the kernel in guest memory and reads its setup header;
//! `rvmx run` builds the zero page (e820 map, command line, initrd), identity-mapped page
//! tables and a flat GDT, and enters `startup_64` in long mode with RSI at the zero page.

use std::fs::File;

use kvm_bindings::kvm_segment;
use kvm_ioctls::VcpuFd;
use linux_loader::{
    cmdline::Cmdline,
    configurator::{linux::LinuxBootConfigurator, BootConfigurator, BootParams},
    loader::{bootparam::boot_params, bzimage::BzImage, load_cmdline, KernelLoader},
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::acpi;
use crate::error::{Error, Result};
use rvmx_logic::arch::{cr0, cr4, efer};

/// Guest-physical layout below 1 MiB (the zero page, tables, command line).
const GDT: u64 = 0x500;
const ZERO_PAGE: u64 = 0x7000;
const BOOT_STACK: u64 = 0x8ff0;
const PML4: u64 = 0x9000;
const PDPT: u64 = 0xa000;
/// Four page directories mapping the first 4 GiB with 2 MiB pages.
const PD: u64 = 0xb000;
const CMDLINE: u64 = 0x20000;
const CMDLINE_MAX: usize = 4096;
/// Conventional memory ends where the EBDA would start.
const EBDA: u64 = 0x9fc00;
/// The kernel goes here (the protocol's default for a relocatable bzImage).
const HIMEM: u64 = 0x10_0000;
/// e820 entry types.
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// What `rvmx run` adds to the kernel command line of a machine without an I/O APIC (the
/// 8259s reach CPU 0 through its local APIC's LINT0).
pub const NO_IOAPIC: &str = "noapic";

/// What `boot` needs.
pub struct Boot<'a> {
    pub kernel: &'a std::path::Path,
    pub initrd: Option<&'a std::path::Path>,
    pub cmdline: &'a str,
    /// The machine has an I/O APIC (the kernel's irqchip).
    pub ioapic: bool,
}

/// Loads the kernel (and initrd) into `mem`, whose RAM is `ram` (`(address, bytes)`, the first
/// range from 0, see `layout::ram`), and sets up `vcpu` to enter it.
pub fn boot(mem: &GuestMemoryMmap, ram: &[(u64, u64)], vcpu: &VcpuFd, b: &Boot<'_>) -> Result<()> {
    let low_end = ram[0].1;
    let path = b.kernel;
    let mut file = File::open(path).map_err(Error::file(path))?;
    let loaded = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM)))
        .map_err(|source| Error::NotBzImage { path: path.to_path_buf(), source })?;
    let hdr = loaded.setup_header.ok_or_else(|| Error::NoSetupHeader(path.to_path_buf()))?;
    let mut params = boot_params { hdr, ..Default::default() };
    params.hdr.type_of_loader = 0xff; // "undefined" boot loader
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = 0x5372_6448; // "HdrS"

    let mut cmdline = Cmdline::new(CMDLINE_MAX)?;
    cmdline.insert_str(b.cmdline)?;
    if !b.ioapic {
        cmdline.insert_str(NO_IOAPIC)?;
    }
    load_cmdline(mem, GuestAddress(CMDLINE), &cmdline).map_err(Error::LoadCmdline)?;
    params.hdr.cmd_line_ptr = CMDLINE as u32;
    params.hdr.cmdline_size = cmdline.as_cstring().map_or(0, |c| c.as_bytes_with_nul().len() as u32);

    if let Some(initrd) = b.initrd {
        let bytes = std::fs::read(initrd).map_err(Error::file(initrd))?;
        // At the top of RAM below 4 GiB and the kernel's limit, page aligned.
        let top = low_end.min(params.hdr.initrd_addr_max as u64 + 1);
        let addr = top.checked_sub(bytes.len() as u64).map(|a| a & !0xfff)
            .filter(|a| *a >= loaded.kernel_end)
            .ok_or_else(|| Error::InitrdTooBig { path: initrd.to_path_buf(), len: bytes.len() })?;
        mem.write_slice(&bytes, GuestAddress(addr)).map_err(Error::guest_memory("initrd"))?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = bytes.len() as u32;
    }

    // RAM, and the ACPI tables' area (kept, as the RSDP must stay where the kernel found it).
    let mut map = vec![(0, EBDA, E820_RAM), (acpi::ADDR, acpi::ROOM as u64, E820_RESERVED), (HIMEM, low_end - HIMEM, E820_RAM)];
    map.extend(ram[1..].iter().map(|&(addr, len)| (addr, len, E820_RAM)));
    for (i, (addr, size, type_)) in map.iter().enumerate() {
        params.e820_table[i].addr = *addr;
        params.e820_table[i].size = *size;
        params.e820_table[i].type_ = *type_;
    }
    params.e820_entries = map.len() as u8;
    params.acpi_rsdp_addr = acpi::ADDR;
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&BootParams::new(&params, GuestAddress(ZERO_PAGE)), mem)
        .map_err(Error::ZeroPage)?;

    write_tables(mem)?;
    enter_long_mode(vcpu, loaded.kernel_load.0 + 0x200)
}

/// A flat GDT (null, 64-bit code at 0x8, data at 0x10) and page tables mapping 4 GiB 1:1.
fn write_tables(mem: &GuestMemoryMmap) -> Result<()> {
    let w = |addr: u64, v: u64| mem.write_obj(v, GuestAddress(addr)).map_err(Error::guest_memory("boot tables"));
    for (i, d) in [0u64, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff].iter().enumerate() {
        w(GDT + 8 * i as u64, *d)?;
    }
    w(PML4, PDPT | 3)?;
    for i in 0..4u64 {
        w(PDPT + 8 * i, (PD + 0x1000 * i) | 3)?;
    }
    for i in 0..4 * 512u64 {
        w(PD + 8 * i, (i << 21) | 0x83)?; // present, writable, 2 MiB
    }
    Ok(())
}

/// The register state the 64-bit boot protocol asks for.
fn enter_long_mode(vcpu: &VcpuFd, entry: u64) -> Result<()> {
    let mut s = vcpu.get_sregs().map_err(Error::ioctl("KVM_GET_SREGS"))?;
    let seg = |selector: u16, type_: u8, l: u8| kvm_segment {
        base: 0, limit: 0xffff_ffff, selector, type_, present: 1, dpl: 0, db: 1 - l, s: 1, l, g: 1,
        avl: 0, unusable: 0, padding: 0,
    };
    s.cs = seg(0x8, 11, 1);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (seg(0x10, 3, 0), seg(0x10, 3, 0), seg(0x10, 3, 0), seg(0x10, 3, 0), seg(0x10, 3, 0));
    s.gdt.base = GDT;
    s.gdt.limit = 3 * 8 - 1;
    s.idt.base = 0;
    s.idt.limit = 0;
    s.cr3 = PML4;
    s.cr4 = cr4::PAE;
    s.cr0 = cr0::PG | cr0::NE | cr0::ET | cr0::MP | cr0::PE;
    s.efer = efer::LME | efer::LMA;
    vcpu.set_sregs(&s).map_err(Error::ioctl("KVM_SET_SREGS"))?;
    let mut r = vcpu.get_regs().map_err(Error::ioctl("KVM_GET_REGS"))?;
    r.rip = entry;
    r.rsi = ZERO_PAGE;
    r.rsp = BOOT_STACK;
    r.rbp = BOOT_STACK;
    r.rflags = 2;
    vcpu.set_regs(&r).map_err(Error::ioctl("KVM_SET_REGS"))
}
