//! Prints a KVM system fd's answers, one `key value` line each, so the answers of `/dev/rvmx`
//! and `/dev/kvm` can be compared line by line (tests/vm/suite.sh, tests/run).
//!
//! Usage: kvm-abi-check DEVICE. Values are numbers or errno names.

use std::{ffi::CString, process::ExitCode};

use rvmx_logic::kvm_abi::{self, KVM_CHECK_EXTENSION, KVM_GET_API_VERSION, KVM_GET_VCPU_MMAP_SIZE};

fn errno_name(e: i32) -> String {
    match e {
        libc::EINVAL => "EINVAL".into(),
        libc::ENOTTY => "ENOTTY".into(),
        libc::ENODEV => "ENODEV".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::E2BIG => "E2BIG".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::EBADF => "EBADF".into(),
        libc::EPERM => "EPERM".into(),
        other => format!("errno{other}"),
    }
}

/// The result of an ioctl: its return value or its errno name.
fn ioctl(fd: i32, cmd: u32, arg: u64) -> String {
    // SAFETY: every request below takes an integer argument or none; none writes memory.
    let r = unsafe { libc::ioctl(fd, cmd as _, arg) };
    if r < 0 {
        errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        r.to_string()
    }
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-abi-check DEVICE");
        return ExitCode::from(2);
    };
    let path = CString::new(dev.clone()).expect("path");
    // SAFETY: `path` is a valid NUL-terminated string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        eprintln!("kvm-abi-check: {dev}: {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    println!("api_version {}", ioctl(fd, KVM_GET_API_VERSION, 0));
    println!("api_version_with_arg {}", ioctl(fd, KVM_GET_API_VERSION, 1));
    println!("vcpu_mmap_size {}", ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0));
    println!("vcpu_mmap_size_with_arg {}", ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 1));
    // Every capability number KVM has defined so far, and a few it never will.
    for cap in (0..=256u64).chain([1000, 0xffff_ffff, u64::MAX]) {
        println!("extension {cap} {}", ioctl(fd, KVM_CHECK_EXTENSION, cap));
    }
    // Requests /dev/kvm does not know: wrong type byte, unused numbers, VM-fd and vCPU-fd
    // requests sent to the system fd.
    let unknown = [
        0u32,
        0x1234,
        kvm_abi::io(0x7f),
        kvm_abi::io(0xff),
        kvm_abi::iowr(0x44, 8), // KVM_CREATE_VCPU is _IO(0x41); 0x44 is unused
        kvm_abi::io(0x41),      // KVM_CREATE_VCPU: a VM-fd request
        kvm_abi::io(0x80),      // KVM_RUN: a vCPU-fd request
    ];
    for cmd in unknown {
        println!("ioctl {cmd:#x} {}", ioctl(fd, cmd, 0));
    }
    // The system fd cannot be mapped, read or written.
    // SAFETY: mmap with a null hint and a valid fd; a success is unmapped at once.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, fd, 0) };
    if p == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        println!("mmap {}", errno_name(e));
    } else {
        // SAFETY: `p` is the 4096-byte mapping just made.
        unsafe { libc::munmap(p, 4096) };
        println!("mmap ok");
    }
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is 8 writable bytes.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    println!("read {}", if r < 0 { errno_name(e) } else { r.to_string() });
    // SAFETY: `fd` is open and closed once.
    unsafe { libc::close(fd) };
    ExitCode::SUCCESS
}
