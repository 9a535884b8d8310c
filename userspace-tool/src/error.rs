//! What can go wrong in `rvmx`, one variant per failure, each with the one line `main` prints
//! after `rvmx: `. The wording lives here once; the tests grep some of it.

use std::path::PathBuf;

use rvmx_logic::kvm_abi::KVM_API_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: invalid path")]
    DevicePath(String),
    /// The node is missing: usually the module is not loaded.
    #[error("{0}: no such device (is the module loaded? try: insmod rvmx.ko)")]
    NoDevice(String),
    #[error("{path}: {source}")]
    Device { path: String, source: kvm_ioctls::Error },
    #[error("{device}: API version {version}, expected {KVM_API_VERSION}")]
    ApiVersion { device: String, version: i32 },
    /// An ioctl failed: its name and the errno.
    #[error("{0}: {1}")]
    Ioctl(&'static str, #[source] kvm_ioctls::Error),
    /// The device has no split irqchip (an older rvmx, or a KVM without one).
    #[error("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP): {0} (the device has no in-kernel local APIC: try --irqchip user)")]
    SplitIrqchip(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_VCPU {0}: {1}")]
    CreateVcpu(usize, #[source] kvm_ioctls::Error),
    /// A host call (sigaction, timer_create, a raw ioctl) failed.
    #[error("{0}: {1}")]
    Os(&'static str, #[source] std::io::Error),
    /// What failed on a vCPU's thread, with its index.
    #[error("vCPU {0}: {1}")]
    Vcpu(usize, #[source] Box<Error>),
    /// A file the user named (an image, the console) cannot be read or created.
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: std::io::Error },

    #[error("give --kernel or --flat")]
    NoImage,
    #[error("an image of {len} bytes does not fit at {load:#x} in {mem} bytes of guest memory")]
    ImageTooBig { len: usize, load: u64, mem: usize },
    #[error("entry {0:#x}: a flat image starts in real mode, below 1 MiB")]
    EntryAbove1M(u64),
    #[error("a Linux guest needs at least 16M of memory")]
    LinuxMemory,
    #[error("{cpus} vCPUs: the device allows 1 to {max}")]
    Cpus { cpus: u8, max: usize },
    #[error("guest memory of {0} bytes: {1}")]
    Memory(usize, #[source] vm_memory::Error),
    /// Guest memory refused an access: what was being written.
    #[error("{0}: {1}")]
    GuestMemory(&'static str, #[source] vm_memory::GuestMemoryError),
    #[error("{0} vCPUs do not fit in the ACPI tables")]
    AcpiTables(u8),
    #[error(transparent)]
    Disk(#[from] crate::devices::virtio::block::DiskError),
    #[error("too many virtio devices: the machine has interrupt lines for {0}")]
    TooManyVirtio(usize),

    #[error("{}: not a loadable bzImage: {source}", path.display())]
    NotBzImage { path: PathBuf, source: linux_loader::loader::Error },
    #[error("{}: no setup header", .0.display())]
    NoSetupHeader(PathBuf),
    #[error("command line: {0}")]
    Cmdline(#[from] linux_loader::cmdline::Error),
    #[error("command line: {0}")]
    LoadCmdline(#[source] linux_loader::loader::Error),
    #[error("{}: {len} bytes do not fit in guest memory", path.display())]
    InitrdTooBig { path: PathBuf, len: usize },
    #[error("zero page: {0}")]
    ZeroPage(#[source] linux_loader::configurator::Error),

    #[error("a vCPU thread panicked")]
    Panicked,
    #[error("the VM stopped without an outcome")]
    NoOutcome,
    #[error(transparent)]
    Stats(#[from] crate::stats::Error),
}

impl Error {
    /// For `map_err`: ioctl `name` failed.
    pub fn ioctl(name: &'static str) -> impl Fn(kvm_ioctls::Error) -> Error {
        move |e| Error::Ioctl(name, e)
    }

    /// For `map_err`: guest memory refused what `what` wrote.
    pub fn guest_memory(what: &'static str) -> impl Fn(vm_memory::GuestMemoryError) -> Error {
        move |e| Error::GuestMemory(what, e)
    }

    /// For `map_err`: the file at `path` failed.
    pub fn file(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::File { path: path.to_path_buf(), source }
    }

    /// The same error, as vCPU `index`'s.
    pub fn on_vcpu(index: usize) -> impl Fn(Error) -> Error {
        move |e| Error::Vcpu(index, Box::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_wording() {
        let einval = || kvm_ioctls::Error::new(libc::EINVAL);
        assert_eq!(Error::NoDevice("/dev/x".into()).to_string(), "/dev/x: no such device (is the module loaded? try: insmod rvmx.ko)");
        assert_eq!(Error::ApiVersion { device: "/dev/x".into(), version: 11 }.to_string(), "/dev/x: API version 11, expected 12");
        assert_eq!(Error::on_vcpu(1)(Error::Ioctl("KVM_RUN", einval())).to_string(), "vCPU 1: KVM_RUN: Invalid argument (os error 22)");
        assert_eq!(Error::CreateVcpu(2, einval()).to_string(), "KVM_CREATE_VCPU 2: Invalid argument (os error 22)");
        let too_big = Error::ImageTooBig { len: 2019, load: 0x1000, mem: 4096 };
        assert_eq!(too_big.to_string(), "an image of 2019 bytes does not fit at 0x1000 in 4096 bytes of guest memory");
        assert_eq!(Error::EntryAbove1M(0x100000).to_string(), "entry 0x100000: a flat image starts in real mode, below 1 MiB");
    }
}
