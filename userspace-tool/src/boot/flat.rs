//! A raw image (`--flat`), as test guests are: copied to guest memory and entered in real
//! mode, as firmware would hand over a boot sector.

use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::error::{Error, Result};

/// A raw binary image.
pub struct FlatImage {
    pub bytes: Vec<u8>,
    pub load: u64,
    pub entry: u64,
}

impl FlatImage {
    /// Whether the image fits in `mem_size` bytes of guest memory and starts in real mode:
    /// checked before any VM exists, so a bad argument is one line.
    pub fn check(&self, mem_size: usize) -> Result<()> {
        let end = self.load.checked_add(self.bytes.len() as u64).filter(|e| *e <= mem_size as u64);
        if end.is_none() {
            return Err(Error::ImageTooBig { len: self.bytes.len(), load: self.load, mem: mem_size });
        }
        if self.entry >= 0x10_0000 {
            return Err(Error::EntryAbove1M(self.entry));
        }
        Ok(())
    }

    /// Copies the image into `mem` and points `vcpu` at its entry.
    pub fn load(&self, mem: &GuestMemoryMmap, vcpu: &VcpuFd) -> Result<()> {
        mem.write_slice(&self.bytes, GuestAddress(self.load)).map_err(Error::guest_memory("loading the image"))?;
        enter_real_mode(vcpu, self.entry)
    }
}

/// Real mode at `entry` (< 1 MiB): CS covers the 64 KiB around it, IP is the rest.
fn enter_real_mode(vcpu: &VcpuFd, entry: u64) -> Result<()> {
    let mut s = vcpu.get_sregs().map_err(Error::ioctl("KVM_GET_SREGS"))?;
    s.cs.base = entry & !0xffff;
    s.cs.selector = (s.cs.base >> 4) as u16;
    vcpu.set_sregs(&s).map_err(Error::ioctl("KVM_SET_SREGS"))?;
    let mut r = vcpu.get_regs().map_err(Error::ioctl("KVM_GET_REGS"))?;
    r.rip = entry & 0xffff;
    r.rflags = 2;
    vcpu.set_regs(&r).map_err(Error::ioctl("KVM_SET_REGS"))
}
