// SPDX-License-Identifier: GPL-2.0

//! KVM's objects and their file descriptors: the system fd (`/dev/rvmx`), VMs, vCPUs,
//! ioeventfds, coalesced-MMIO zones, and their statistics in debugfs.

pub(crate) mod coalesced_mmio;
pub(crate) mod fd;
pub(crate) mod ioeventfd;
pub(crate) mod stats;
pub(crate) mod stats_fd;
pub(crate) mod system;
pub(crate) mod vcpu;
pub(crate) mod vm;
pub(crate) mod vm_fd;
