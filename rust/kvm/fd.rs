// SPDX-License-Identifier: GPL-2.0

//! File descriptors for VM and vCPU objects, as KVM has them: anonymous inodes whose private
//! data is a reference-counted object. Closing the fd drops the reference; the object lives on
//! while anything else (a vCPU's VM, a running ioctl) still holds it.
//!
//! The kernel crate has no anonymous-inode abstraction; this wraps `anon_inode_getfile_fmode`
//! once.

use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    bindings, ffi,
    fs::{file::FileDescriptorReservation, File},
    mm::virt::VmaNew,
    module::this_module,
    prelude::*,
    sync::{aref::ARef, Arc, ArcBorrow},
    uaccess::{UserPtr, UserSlice, UserSliceWriter},
};

use crate::host::helpers;

/// An object userspace reaches through an fd of its own.
pub(crate) trait FdObject: Send + Sync + Sized + 'static {
    /// The anonymous inode's name, as `/proc/PID/fd` shows it ("anon_inode:kvm-vm").
    const NAME: &'static CStr;
    /// Whether the fd can be mapped.
    const HAS_MMAP: bool = false;

    /// Handles an ioctl on the fd.
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize>;

    /// Sets up a mapping of the fd.
    fn mmap(_this: ArcBorrow<'_, Self>, _vma: &VmaNew) -> Result {
        Err(ENODEV)
    }

    /// Whether the fd can be read (`read`, `pread`).
    const HAS_READ: bool = false;

    /// Reads from byte `pos` of the fd's contents into `out`: how many bytes (0 at the end).
    fn read(_this: ArcBorrow<'_, Self>, _out: &mut UserSliceWriter, _pos: u64) -> Result<usize> {
        Err(EINVAL)
    }
}

/// `FMODE_PREAD` (include/linux/fs.h): the file takes `pread`.
const FMODE_PREAD: ffi::c_uint = 1 << 3;

/// Installs a new fd (O_RDWR | O_CLOEXEC, like KVM's) holding `obj`; returns its number.
pub(crate) fn install<T: FdObject>(obj: Arc<T>) -> Result<i32> {
    install_with(obj, bindings::O_RDWR, 0)
}

/// Installs a new read-only fd (O_RDONLY | O_CLOEXEC, with `pread`, like KVM's statistics
/// fds) holding `obj`; returns its number.
pub(crate) fn install_readonly<T: FdObject>(obj: Arc<T>) -> Result<i32> {
    install_with(obj, bindings::O_RDONLY, FMODE_PREAD)
}

/// Installs a new fd opened with `access` (and O_CLOEXEC) and `fmode`, holding `obj`, as
/// `anon_inode_getfd` does: the number reserved first, the file made, then both joined.
fn install_with<T: FdObject>(obj: Arc<T>, access: u32, fmode: ffi::c_uint) -> Result<i32> {
    let fd = FileDescriptorReservation::get_unused_fd_flags(bindings::O_CLOEXEC)?;
    let ptr = obj.into_raw();
    // SAFETY: `FOPS` is a static table for `T`; `ptr` comes from `Arc::into_raw` and is owned
    // by the file from here on (released in `release`).
    let file = unsafe {
        helpers::anon_inode_getfile_fmode(
            T::NAME.as_char_ptr(),
            core::ptr::from_ref(FdOps::<T>::fops()).cast(),
            ptr.cast_mut().cast(),
            (access | bindings::O_CLOEXEC) as ffi::c_int,
            fmode,
        )
    };
    let file = match kernel::error::from_err_ptr(file).map(NonNull::new) {
        Ok(Some(f)) => f,
        r => {
            // SAFETY: no file was created, so the reference is still ours to drop.
            drop(unsafe { Arc::from_raw(ptr) });
            return Err(r.err().unwrap_or(ENOMEM));
        }
    };
    let n = fd.reserved_fd() as i32;
    // SAFETY: the new file's one reference is ours; `File` is `repr(transparent)` over
    // `struct file`.
    fd.fd_install(unsafe { ARef::<File>::from_raw(file.cast::<File>()) });
    Ok(n)
}

struct FdOps<T>(PhantomData<T>);

impl<T: FdObject> FdOps<T> {
    const FOPS: bindings::file_operations = bindings::file_operations {
        // The module stays loaded while any VM or vCPU fd is open.
        owner: this_module::<crate::RvmxModule>().as_ptr(),
        unlocked_ioctl: Some(Self::ioctl),
        release: Some(Self::release),
        mmap: if T::HAS_MMAP { Some(Self::mmap) } else { None },
        read: if T::HAS_READ { Some(Self::read) } else { None },
        llseek: Some(bindings::noop_llseek),
        // SAFETY: every other field of `file_operations` may be zero (absent).
        ..unsafe { core::mem::zeroed() }
    };

    const fn fops() -> &'static bindings::file_operations {
        &Self::FOPS
    }

    /// # Safety
    ///
    /// `file` must be a file created by [`install_with`] for `T`, not yet released.
    unsafe fn object<'a>(file: *mut bindings::file) -> ArcBorrow<'a, T> {
        // SAFETY: per the contract, `private_data` is the `Arc<T>` pointer `install_with` stored;
        // the file holds that reference until `release`, which cannot run during this call.
        unsafe { ArcBorrow::from_raw((*file).private_data.cast::<T>()) }
    }

    unsafe extern "C" fn ioctl(
        file: *mut bindings::file,
        cmd: ffi::c_uint,
        arg: ffi::c_ulong,
    ) -> ffi::c_long {
        // SAFETY: the VFS calls this only on files made with `FOPS`, which are live.
        let obj = unsafe { Self::object(file) };
        match T::ioctl(obj, cmd, arg as usize) {
            Ok(v) => v as ffi::c_long,
            Err(e) => e.to_errno() as ffi::c_long,
        }
    }

    unsafe extern "C" fn mmap(file: *mut bindings::file, vma: *mut bindings::vm_area_struct) -> ffi::c_int {
        // SAFETY: as in `ioctl`.
        let obj = unsafe { Self::object(file) };
        // SAFETY: the VFS calls `mmap` with a VMA under construction for this file.
        let vma = unsafe { VmaNew::from_raw(vma) };
        match T::mmap(obj, vma) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    unsafe extern "C" fn read(
        file: *mut bindings::file,
        buf: *mut ffi::c_char,
        len: usize,
        pos: *mut bindings::loff_t,
    ) -> isize {
        // SAFETY: as in `ioctl`.
        let obj = unsafe { Self::object(file) };
        // SAFETY: the VFS passes the position to read from and update, valid for this call.
        let pos = unsafe { &mut *pos };
        let Ok(start) = u64::try_from(*pos) else { return EINVAL.to_errno() as isize };
        let mut out = UserSlice::new(UserPtr::from_addr(buf as usize), len).writer();
        match T::read(obj, &mut out, start) {
            Ok(n) => {
                *pos = pos.saturating_add(n as bindings::loff_t);
                n as isize
            }
            Err(e) => e.to_errno() as isize,
        }
    }

    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> ffi::c_int {
        // SAFETY: the file's reference, stored by `install_with`, is dropped exactly once, here.
        drop(unsafe { Arc::from_raw((*file).private_data.cast::<T>()) });
        0
    }
}
