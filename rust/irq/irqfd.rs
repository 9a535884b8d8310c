// SPDX-License-Identifier: GPL-2.0

//! `KVM_IRQFD` (in-kernel irqchip): an eventfd that injects a GSI when signalled, so a device
//! model's interrupt reaches the guest without a trip through the VMM's vCPU thread. Each
//! signal pulses the GSI (KVM's `irqfd_inject`): its MSI route is sent, its PIC and IOAPIC
//! pins see an edge; a GSI without a route injects nothing (as KVM). With
//! `KVM_IRQFD_FLAG_RESAMPLE` (full irqchip only, as KVM) a signal raises the line and leaves
//! it high until the guest acknowledges the interrupt (`irq/resample.rs`). The eventfd side
//! is C (`irq/irqfd.c`).

use kernel::{error::from_err_ptr, ffi::c_void, prelude::*, sync::Arc};

use super::{
    bus::{ApicBus, USERSPACE_SOURCE},
    resample::RESAMPLE_SOURCE,
};
use crate::{
    host::{eventfd::EventFd, helpers},
    logic::kvm_abi::{IrqFdArg, IRQFD_FLAG_DEASSIGN, IRQFD_FLAG_RESAMPLE},
};

/// One assignment; dropping it stops listening.
struct IrqFd {
    raw: *mut c_void,
    /// The eventfd's context, compared for identity only.
    eventfd: *const c_void,
    gsi: u32,
    /// It holds its line high until the guest acknowledges it (its resampler is the bus's,
    /// under this id).
    resample: Option<u64>,
    /// What the wakeup injects into, alive while it may run.
    bus: Arc<ApicBus>,
}

// SAFETY: the C object may be freed from any thread in process context; its wakeup runs on
// whatever CPU signals the eventfd and only reads the fields set at creation.
unsafe impl Send for IrqFd {}

impl IrqFd {
    /// Its eventfd was released: it listens no more and only waits to be freed.
    fn hung_up(&self) -> bool {
        // SAFETY: a live irqfd (freed only by `drop`).
        unsafe { helpers::rvmx_irqfd_hung_up(self.raw) }
    }
}

impl Drop for IrqFd {
    fn drop(&mut self) {
        // SAFETY: created by `rvmx_irqfd_new` and freed once, here; after the call no wakeup
        // runs for it, so `bus` may go.
        unsafe { helpers::rvmx_irqfd_free(self.raw) };
        // Then its resampler, lowering the line if it was the GSI's last (KVM's
        // `irqfd_resampler_shutdown`, after the irqfd stopped injecting).
        if let Some(id) = self.resample {
            if let Some(gsi) = self.bus.resamplers.remove(id) {
                let _ = self.bus.set_gsi(gsi, RESAMPLE_SOURCE, false, false);
            }
        }
    }
}

/// A VM's irqfds (under its lock).
#[derive(Default)]
pub(crate) struct IrqFds {
    list: KVec<IrqFd>,
    /// The id of the next resampling irqfd.
    next_id: u64,
}

impl IrqFds {
    /// `KVM_IRQFD`, checked as KVM's `kvm_irqfd`: `in_kernel`, the VM has an in-kernel
    /// irqchip (split or full); `full`, the full one.
    pub(crate) fn ioctl(&mut self, arg: &IrqFdArg, in_kernel: bool, full: bool, bus: &Arc<ApicBus>) -> Result {
        // Entries whose eventfd was closed are freed here (KVM frees them on the hang-up), so
        // assigning and closing eventfds in a loop keeps at most one of them.
        self.list.retain(|e| !e.hung_up());
        if arg.flags & !(IRQFD_FLAG_DEASSIGN | IRQFD_FLAG_RESAMPLE) != 0 {
            return Err(EINVAL);
        }
        let fd = arg.fd as i32; // a negative fd is EBADF below, as on KVM
        if arg.flags & IRQFD_FLAG_DEASSIGN != 0 {
            return self.deassign(fd, arg.gsi);
        }
        // kvm_arch_irqfd_allowed: an in-kernel irqchip; resampling only with the full one.
        let resample = arg.flags & IRQFD_FLAG_RESAMPLE != 0;
        if !in_kernel || (resample && !full) {
            return Err(EINVAL);
        }
        let target: *const ApicBus = &**bus;
        // SAFETY: `target` stays alive as long as the entry (its `bus`); the C side only hands
        // it back to `rvmx_irqfd_inject`.
        let raw = from_err_ptr(unsafe { helpers::rvmx_irqfd_new(fd, arg.gsi, resample, target.cast()) })?;
        // SAFETY: `raw` is a live irqfd from the call above.
        let eventfd = unsafe { helpers::rvmx_irqfd_eventfd(raw) };
        // Dropped unarmed on an error below; with `resample` unset until its resampler exists.
        let mut f = IrqFd { raw, eventfd, gsi: arg.gsi, resample: None, bus: bus.clone() };
        if resample {
            let resamplefd = EventFd::get(arg.resamplefd as i32)?;
            let id = self.next_id;
            self.next_id = id.wrapping_add(1);
            bus.resamplers.add(arg.gsi, id, resamplefd)?;
            f.resample = Some(id);
        }
        if self.list.iter().any(|e| e.eventfd == eventfd) {
            return Err(EBUSY);
        }
        self.list.push(f, GFP_KERNEL_ACCOUNT)?;
        if let Some(f) = self.list.last() {
            // SAFETY: a live, not yet armed irqfd.
            unsafe { helpers::rvmx_irqfd_arm(f.raw) };
        }
        Ok(())
    }

    /// Removes the assignment of `fd`'s eventfd to `gsi`, if there is one (KVM answers 0
    /// either way, and `EBADF`/`EINVAL` for a bad fd or one that is no eventfd).
    fn deassign(&mut self, fd: i32, gsi: u32) -> Result {
        let e = EventFd::get(fd)?;
        self.list.retain(|f| !(core::ptr::eq(f.eventfd, e.context()) && f.gsi == gsi));
        Ok(())
    }
}

/// An irqfd's eventfd was signalled: pulse `gsi` as userspace's source, or raise it as the
/// resampling irqfds' source (lowered at the guest's acknowledgement). Any context (the
/// eventfd's wait-queue lock is held, interrupts off).
///
/// # Safety
///
/// `target` is the bus the irqfd was created with, kept alive by the entry.
#[no_mangle]
unsafe extern "C" fn rvmx_irqfd_inject(target: *const c_void, gsi: u32, resample: bool) {
    // SAFETY: the caller's promise (irq/irqfd.c passes the pointer it was created with).
    let bus = unsafe { &*target.cast::<ApicBus>() };
    if resample {
        let _ = bus.set_gsi(gsi, RESAMPLE_SOURCE, true, false);
    } else {
        let _ = bus.set_gsi(gsi, USERSPACE_SOURCE, true, false);
        let _ = bus.set_gsi(gsi, USERSPACE_SOURCE, false, false);
    }
}
