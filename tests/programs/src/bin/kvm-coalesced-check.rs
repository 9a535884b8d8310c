//! Coalesced MMIO and port I/O (`KVM_REGISTER_COALESCED_MMIO`), through raw ioctls on
//! rust-vmm's fds: which writes a zone takes into the ring page and which still exit, how a
//! full ring or a `last` index userspace spoiled makes a write exit, what unregistration
//! removes, the errnos and the zone limit, and that every vCPU fd maps the same ring.
//! Every exit and every ring entry is printed as `key value` lines; tests/vm/suite.sh runs it
//! on `/dev/rvmx` and `/dev/kvm` in the same boot and requires identical output.
//!
//! Usage: kvm-coalesced-check DEVICE

use std::{ffi::CString, os::fd::AsRawFd, process::ExitCode};

use kvm_bindings::{kvm_coalesced_mmio, kvm_coalesced_mmio_zone};
use kvm_ioctls::{Kvm, VcpuExit, VmFd};
use rvmx_test_programs::{code, guest, Guest};

const REGISTER: libc::c_ulong = 0x4010_ae67;
const UNREGISTER: libc::c_ulong = 0x4010_ae68;
const CAP_COALESCED_MMIO: libc::c_ulong = 15;
const CAP_COALESCED_PIO: libc::c_ulong = 162;

// Real mode. MMIO zone 0x20000..0x20010 (DS = 0x2000), port zone 0x70..0x72.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl zones_start", ".globl zones_end",
    ".code16",
    "zones_start:",
    "mov ax, 0x2000",
    "mov ds, ax",
    "mov byte ptr [0], 0x11",
    "mov word ptr [2], 0x2233",
    "mov dword ptr [4], 0x44556677",
    "mov word ptr [15], 0x8899",            // runs past the zone: exits
    "mov byte ptr [0x10], 0xaa",            // outside: exits
    "mov al, 0x8f",
    "out 0x70, al",
    "out 0x71, al",
    "out 0x71, ax",                         // runs past the zone: exits
    "in al, 0x71",                          // reads always exit
    "mov ax, 0x1234",
    "out 0x70, ax",
    "xor ax, ax",
    "mov ds, ax",
    "mov si, 0x3000",
    "mov cx, 3",
    "mov dx, 0x70",
    "rep outsb",                            // each element into the ring
    "mov ax, 0x2000",
    "mov ds, ax",
    "mov edi, 0x3a3b3c3d",
    "mov dword ptr [8], edi",               // a MOV from a register
    "out 0x80, al",
    "zones_loop:",                          // then writes until the ring is full
    "mov byte ptr [1], al",
    "out 0x70, al",
    "inc al",
    "jmp zones_loop",
    ".code64",
    "zones_end:",
    ".popsection",
);

extern "C" {
    static zones_start: u8;
    static zones_end: u8;
}

fn zone_ioctl(vm: &VmFd, req: libc::c_ulong, addr: u64, size: u32, pio: u32) -> Result<(), i32> {
    let z = kvm_coalesced_mmio_zone { addr, size, __bindgen_anon_1: kvm_bindings::kvm_coalesced_mmio_zone__bindgen_ty_1 { pio } };
    // SAFETY: the argument is a valid zone for these two ioctls.
    let r = unsafe { libc::ioctl(vm.as_raw_fd(), req, &z) };
    if r < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { Ok(()) }
}

/// The ring page as seen through a vCPU's mapping: `first`, `last`, entries.
struct Ring(*mut u8);

impl Ring {
    const ENTRIES: u32 = 170;
    fn first(&self) -> u32 {
        // SAFETY: the ring page is mapped for the process's life.
        unsafe { self.0.cast::<u32>().read_volatile() }
    }
    fn last(&self) -> u32 {
        // SAFETY: as above.
        unsafe { self.0.add(4).cast::<u32>().read_volatile() }
    }
    fn set(&self, first: u32, last: u32) {
        // SAFETY: as above.
        unsafe {
            self.0.cast::<u32>().write_volatile(first);
            self.0.add(4).cast::<u32>().write_volatile(last);
        }
    }
    fn entry(&self, i: u32) -> kvm_coalesced_mmio {
        // SAFETY: entry `i` (below ENTRIES) lies in the page.
        unsafe { self.0.add(8 + 24 * (i % Self::ENTRIES) as usize).cast::<kvm_coalesced_mmio>().read_volatile() }
    }
    /// Prints and consumes what is between `first` and `last`, as a VMM does at each exit.
    fn drain(&self, name: &str) {
        let (mut at, last) = (self.first(), self.last());
        if last >= Self::ENTRIES || at >= Self::ENTRIES {
            println!("{name} ring first {at} last {last}");
            return;
        }
        while at != last {
            let e = self.entry(at);
            // SAFETY: `pio` and `pad` share their bytes.
            let pio = unsafe { e.__bindgen_anon_1.pio };
            println!("{name} ring [{at}] addr {:#x} len {} pio {pio} data {:02x?}", e.phys_addr, e.len, e.data);
            at = (at + 1) % Self::ENTRIES;
        }
        self.set(at, at);
    }
}

fn ring_of(g: &mut Guest) -> Ring {
    let run = g.vcpu.get_kvm_run() as *mut kvm_bindings::kvm_run as *mut u8;
    // SAFETY: the vCPU area kvm-ioctls maps is KVM_GET_VCPU_MMAP_SIZE long (3 pages).
    Ring(unsafe { run.add(2 * 4096) })
}

/// Runs `max` exits, draining the ring before printing each (as QEMU does).
fn run(name: &str, g: &mut Guest, ring: &Ring, max: usize) {
    for i in 0..max {
        let exit = g.vcpu.run();
        let line = match exit {
            Ok(VcpuExit::IoOut(port, data)) => format!("io_out port {port:#x} data {data:02x?}"),
            Ok(VcpuExit::IoIn(port, data)) => {
                data.fill(0x5a);
                format!("io_in port {port:#x} size {}", data.len())
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => format!("mmio_write addr {addr:#x} data {data:02x?}"),
            Ok(VcpuExit::MmioRead(addr, data)) => {
                data.fill(0);
                format!("mmio_read addr {addr:#x} len {}", data.len())
            }
            Ok(VcpuExit::Hlt) => "hlt".into(),
            Ok(other) => format!("other {other:?}"),
            Err(e) => format!("error {}", e.errno()),
        };
        ring.drain(name);
        println!("{name} exit {i} {line}");
        if line == "hlt" || line.starts_with("other") || line.starts_with("error") {
            break;
        }
    }
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-coalesced-check DEVICE");
        return ExitCode::from(2);
    };
    let kvm = Kvm::new_with_path(&CString::new(dev).unwrap()).expect("open device");
    // SAFETY: KVM_CHECK_EXTENSION takes its argument by value.
    let cap = |c: libc::c_ulong| unsafe { libc::ioctl(kvm.as_raw_fd(), 0xae03, c) };
    println!("cap coalesced_mmio {} coalesced_pio {}", cap(CAP_COALESCED_MMIO), cap(CAP_COALESCED_PIO));
    println!("vcpu_mmap_size {}", kvm.get_vcpu_mmap_size().unwrap());

    // Errnos: pio must be 0 or 1; unregistering what is not there succeeds.
    let (g, _) = setup(&kvm, false);
    println!("errno register_pio2 {:?}", zone_ioctl(&g.vm, REGISTER, 0x20000, 16, 2));
    println!("errno unregister_pio2 {:?}", zone_ioctl(&g.vm, UNREGISTER, 0x20000, 16, 2));
    println!("errno unregister_none {:?}", zone_ioctl(&g.vm, UNREGISTER, 0x20000, 16, 0));
    println!("errno register_empty {:?}", zone_ioctl(&g.vm, REGISTER, 0x50000, 0, 0));
    println!("errno unregister_empty {:?}", zone_ioctl(&g.vm, UNREGISTER, 0x50000, 0, 0));
    // The bus limit: zones on one bus until ENOSPC (each its own device on KVM's bus).
    let mut n = 0;
    let err = loop {
        match zone_ioctl(&g.vm, REGISTER, 0x100000 + n * 8, 8, 0) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        if n > 2000 {
            break 0;
        }
    };
    println!("limit mmio_zones {n} then errno {err}");
    println!("limit pio_zone {:?}", zone_ioctl(&g.vm, REGISTER, 0x80, 1, 1));
    drop(g);

    // The guest's writes: the ring fills between exits, and the loop at the end fills it up.
    let (mut g, ring) = setup(&kvm, true);
    println!("ring at_start first {} last {}", ring.first(), ring.last());
    run("zones", &mut g, &ring, 6);
    // Another vCPU's mapping shows the same page.
    let other = g.vm.create_vcpu(1).unwrap();
    // SAFETY: a shared mapping of the vCPU fd's area from page 2, one page, never unmapped.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, other.as_raw_fd(), 2 * 4096)
    };
    if p == libc::MAP_FAILED {
        println!("other_vcpu mmap failed");
    } else {
        ring.set(7, 9);
        let o = Ring(p.cast());
        println!("other_vcpu ring first {} last {}", o.first(), o.last());
    }

    // A full ring: room for two entries only (KVM leaves one free), then the write exits.
    let (mut g, ring) = setup(&kvm, true);
    ring.set(5, 2);
    run("full", &mut g, &ring, 1);
    println!("full ring first {} last {}", ring.first(), ring.last());
    // `last` out of range: nothing is written, the write exits.
    let (mut g, ring) = setup(&kvm, true);
    ring.set(0, 1000);
    run("spoiled", &mut g, &ring, 1);
    println!("spoiled ring first {} last {}", ring.first(), ring.last());

    // Unregistering a range inside a zone removes the zone; one that runs past it nothing.
    let (mut g, ring) = setup(&kvm, true);
    println!("unregister pio_wider {:?}", zone_ioctl(&g.vm, UNREGISTER, 0x70, 4, 1));
    println!("unregister mmio_inside {:?}", zone_ioctl(&g.vm, UNREGISTER, 0x20004, 4, 0));
    run("after_unregister", &mut g, &ring, 14);
    ExitCode::SUCCESS
}

/// A real-mode VM running the guest above, with its zones registered if `zones`.
fn setup(kvm: &Kvm, zones: bool) -> (Guest, Ring) {
    // SAFETY: the symbols are the guest assembled above.
    let mut g = guest(kvm, unsafe { code(&zones_start, &zones_end) });
    // SAFETY: inside the 64 KiB mapping.
    unsafe { std::ptr::copy_nonoverlapping(b"xyz".as_ptr(), g.mem.add(0x3000), 3) };
    let ring = ring_of(&mut g);
    if zones {
        println!("register mmio {:?}", zone_ioctl(&g.vm, REGISTER, 0x20000, 16, 0));
        println!("register pio {:?}", zone_ioctl(&g.vm, REGISTER, 0x70, 2, 1));
    }
    (g, ring)
}
