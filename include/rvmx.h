/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * rvmx userspace API.
 *
 * rvmx's ABI *is* KVM's: this header mirrors the parts of <linux/kvm.h> that rvmx implements,
 * with the same names, numbers and structures, so a program can include either. If
 * <linux/kvm.h> was included first, its definitions are used and the mirror below is skipped.
 * The only rvmx-specific definition is the device path.
 *
 * Implemented so far: the system fd (KVM_GET_API_VERSION, KVM_CHECK_EXTENSION,
 * KVM_GET_VCPU_MMAP_SIZE). Every other request fails as /dev/kvm fails an unknown one (EINVAL).
 */
#ifndef _RVMX_H
#define _RVMX_H

/* Open this instead of /dev/kvm. */
#define RVMX_DEVICE "/dev/rvmx"

#ifndef __LINUX_KVM_H
#include <linux/ioctl.h>

#define KVM_API_VERSION 12
#define KVMIO 0xAE

/* System ioctls: on the fd of /dev/rvmx. */
#define KVM_GET_API_VERSION       _IO(KVMIO, 0x00)
#define KVM_CREATE_VM             _IO(KVMIO, 0x01) /* not yet: EINVAL */
#define KVM_CHECK_EXTENSION       _IO(KVMIO, 0x03) /* 0 = not offered */
#define KVM_GET_VCPU_MMAP_SIZE    _IO(KVMIO, 0x04) /* kvm_run + PIO page + coalesced-MMIO page */

/* Layout of the vCPU mmap area, in pages. */
#define KVM_PIO_PAGE_OFFSET 1
#define KVM_COALESCED_MMIO_PAGE_OFFSET 2
#endif /* __LINUX_KVM_H */

#endif /* _RVMX_H */
