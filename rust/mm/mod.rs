// SPDX-License-Identifier: GPL-2.0

//! A VM's guest memory: slots of userspace memory, their EPT mappings, dirty logging, and the
//! MMU notifier that keeps EPT in step with the VM owner's page tables.

pub(crate) mod guest_memory;
pub(crate) mod mmu_notifier;
