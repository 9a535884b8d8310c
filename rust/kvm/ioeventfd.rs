// SPDX-License-Identifier: GPL-2.0

//! `KVM_IOEVENTFD`: eventfds that a guest's port or MMIO write signals in the kernel instead
//! of exiting to userspace (a virtio queue notification costs no trip through the VMM). The
//! rules are KVM's (logic/ioeventfd_rules.rs); this file holds the eventfds.

use kernel::prelude::*;

use crate::{host::eventfd::EventFd, logic::ioeventfd_rules::{flags, Bus, IoEventFdArg, Refusal, Rule}};

/// Most registrations per VM (KVM's bus limit is 1000 devices).
const MAX: usize = 1000;

/// A VM's registrations.
#[derive(Default)]
pub(crate) struct IoEventFds {
    list: KVec<(Rule, EventFd)>,
}

impl IoEventFds {
    /// `KVM_IOEVENTFD`: registers or (with DEASSIGN) removes one, with KVM's errnos:
    /// `EINVAL` for a bad request, `EBADF`/`EINVAL` for a bad fd, `EEXIST` for a collision,
    /// `ENOENT` for a removal that names nothing, `ENOSPC` when full.
    pub(crate) fn ioctl(&mut self, arg: &IoEventFdArg) -> Result {
        let rule = Rule::from_arg(arg).map_err(|Refusal::Invalid| EINVAL)?;
        let fd = EventFd::get(arg.fd)?;
        if arg.flags & flags::DEASSIGN != 0 {
            let i = self.list.iter().position(|(r, e)| *r == rule && e.context() == fd.context()).ok_or(ENOENT)?;
            self.list.remove(i)?;
            return Ok(());
        }
        if self.list.iter().any(|(r, _)| r.collides(&rule)) {
            return Err(EEXIST);
        }
        if self.list.len() >= MAX {
            return Err(ENOSPC);
        }
        self.list.push((rule, fd), GFP_KERNEL_ACCOUNT)?;
        Ok(())
    }

    /// Whether any is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// A guest write of `len` bytes of `value` at `addr`: signals the registration it matches
    /// (at most one can) and returns true, or returns false (the write goes to userspace).
    pub(crate) fn write(&self, bus: Bus, addr: u64, len: u32, value: u64) -> bool {
        match self.list.iter().find(|(r, _)| r.matches(bus, addr, len, value)) {
            Some((_, e)) => {
                e.signal();
                true
            }
            None => false,
        }
    }
}
