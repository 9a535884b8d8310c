// SPDX-License-Identifier: GPL-2.0

//! File descriptors for VM and vCPU objects, as KVM has them: anonymous inodes whose private
//! data is a reference-counted object. Closing the fd drops the reference; the object lives on
//! while anything else (a vCPU's VM, a running ioctl) still holds it.
//!
//! The kernel crate has no anonymous-inode abstraction; this wraps `anon_inode_getfd` once.

use core::marker::PhantomData;
use kernel::{
    bindings, ffi,
    mm::virt::VmaNew,
    module::this_module,
    prelude::*,
    sync::{Arc, ArcBorrow},
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
}

/// Installs a new fd (O_RDWR | O_CLOEXEC, like KVM's) holding `obj`; returns its number.
pub(crate) fn install<T: FdObject>(obj: Arc<T>) -> Result<i32> {
    let ptr = obj.into_raw();
    // SAFETY: `FOPS` is a static table for `T`; `ptr` comes from `Arc::into_raw` and is owned
    // by the file from here on (released in `release`).
    let fd = unsafe {
        helpers::anon_inode_getfd(
            T::NAME.as_char_ptr(),
            core::ptr::from_ref(FdOps::<T>::fops()).cast(),
            ptr.cast_mut().cast(),
            (bindings::O_RDWR | bindings::O_CLOEXEC) as ffi::c_int,
        )
    };
    if fd < 0 {
        // SAFETY: no file was created, so the reference is still ours to drop.
        drop(unsafe { Arc::from_raw(ptr) });
        return Err(Error::from_errno(fd));
    }
    Ok(fd)
}

struct FdOps<T>(PhantomData<T>);

impl<T: FdObject> FdOps<T> {
    const FOPS: bindings::file_operations = bindings::file_operations {
        // The module stays loaded while any VM or vCPU fd is open.
        owner: this_module::<crate::RvmxModule>().as_ptr(),
        unlocked_ioctl: Some(Self::ioctl),
        release: Some(Self::release),
        mmap: if T::HAS_MMAP { Some(Self::mmap) } else { None },
        llseek: Some(bindings::noop_llseek),
        // SAFETY: every other field of `file_operations` may be zero (absent).
        ..unsafe { core::mem::zeroed() }
    };

    const fn fops() -> &'static bindings::file_operations {
        &Self::FOPS
    }

    /// # Safety
    ///
    /// `file` must be a file created by [`install`] for `T`, not yet released.
    unsafe fn object<'a>(file: *mut bindings::file) -> ArcBorrow<'a, T> {
        // SAFETY: per the contract, `private_data` is the `Arc<T>` pointer `install` stored;
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

    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> ffi::c_int {
        // SAFETY: the file's reference, stored by `install`, is dropped exactly once, here.
        drop(unsafe { Arc::from_raw((*file).private_data.cast::<T>()) });
        0
    }
}
