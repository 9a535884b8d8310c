// SPDX-License-Identifier: GPL-2.0

//! Ioctl arguments in user memory: the struct an argument points to, read or written whole
//! with the kernel crate's `UserSlice` (`EFAULT` if the memory is not there).

use kernel::{
    prelude::*,
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

/// Reads the `T` an ioctl argument points to (`EFAULT` if it cannot).
pub(crate) fn read_user<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>()).reader().read()
}

/// The address of the field at `offset` in the struct an ioctl argument points to (`EFAULT`
/// past the end of the address space, where no copy could succeed).
pub(crate) fn user_field(arg: usize, offset: usize) -> Result<usize> {
    arg.checked_add(offset).ok_or(EFAULT)
}

/// Writes `value` where an ioctl argument points (`EFAULT` if it cannot).
pub(crate) fn write_user<T: AsBytes>(arg: usize, value: &T) -> Result {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>()).writer().write(value)
}
