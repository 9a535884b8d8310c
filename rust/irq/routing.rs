// SPDX-License-Identifier: GPL-2.0

//! A split irqchip's GSI routes (`KVM_SET_GSI_ROUTING`, rules in `logic/irq_routing.rs`):
//! `KVM_IRQ_LINE` on a routed GSI sends its MSI, and an EOI of a vector that a level-triggered
//! route of the userspace IOAPIC's pins sends to this APIC is reported to userspace.

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
use kernel::{
    new_spinlock_irq,
    prelude::*,
    sync::SpinLockIrq,
    uaccess::{UserPtr, UserSlice},
};

use crate::{
    host::uaccess::read_user,
    logic::{
        irq_routing::{self, Route, RoutingEntry, RoutingHeader},
        kvm_abi::MAX_IRQ_ROUTES,
        lapic::{Address, Irq, Shorthand, Source},
        x2apic_api::X2apicApi,
    },
};

#[pin_data]
pub(crate) struct GsiRoutes {
    /// Sorted by GSI. Interrupts off: read inside windows (EOIs).
    #[pin]
    routes: SpinLockIrq<KVVec<Route>>,
    /// GSIs below this are the userspace IOAPIC's pins (`KVM_CAP_SPLIT_IRQCHIP`'s count).
    ioapic_pins: AtomicU32,
}

impl GsiRoutes {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(GsiRoutes { routes <- new_spinlock_irq!(KVVec::new()), ioapic_pins: AtomicU32::new(0) })
    }

    /// The split irqchip was enabled with `pins` IOAPIC pins.
    pub(crate) fn set_ioapic_pins(&self, pins: u32) {
        self.ioapic_pins.store(pins, Relaxed);
    }

    /// `KVM_SET_GSI_ROUTING` at `arg`: replaces the table; `EINVAL` for a table KVM refuses
    /// (`x2apic_format`: `KVM_X2APIC_API_USE_32BIT_IDS` is on).
    pub(crate) fn set(&self, arg: usize, x2apic_format: bool) -> Result {
        let header: RoutingHeader = read_user(arg)?;
        if u64::from(header.nr) > MAX_IRQ_ROUTES || header.flags != 0 {
            return Err(EINVAL);
        }
        let nr = header.nr as usize; // at most 4096
        let mut entries = KVVec::from_elem(RoutingEntry::default(), nr, GFP_KERNEL_ACCOUNT)?;
        let at = arg.checked_add(size_of::<RoutingHeader>()).ok_or(EFAULT)?;
        let mut reader = UserSlice::new(UserPtr::from_addr(at), nr.saturating_mul(size_of::<RoutingEntry>())).reader();
        for e in entries.iter_mut() {
            *e = reader.read()?;
        }
        let mut routes = KVVec::with_capacity(nr, GFP_KERNEL_ACCOUNT)?;
        for e in entries.iter() {
            routes.push(irq_routing::check(e, x2apic_format).ok_or(EINVAL)?, GFP_KERNEL_ACCOUNT)?;
        }
        routes.sort_unstable_by_key(|r| r.gsi);
        if irq_routing::has_duplicates(&routes) {
            return Err(EINVAL);
        }
        let old = core::mem::replace(&mut *self.routes.lock(), routes);
        drop(old); // freed outside the lock
        Ok(())
    }

    /// The MSI of `gsi`, as the APICs take it.
    pub(crate) fn lookup(&self, gsi: u32, api: X2apicApi) -> Option<Irq> {
        let r = irq_routing::lookup(&self.routes.lock(), gsi)?;
        Irq::from_msi(r.address_lo, r.address_hi, r.data, api.x2apic_format)
    }

    /// Whether the APIC at `address` must report its EOI of `vector` to userspace: a
    /// level-triggered route of an IOAPIC pin sends `vector` to it (`kvm_scan_ioapic_routes`,
    /// evaluated at the EOI with the APIC's address then).
    pub(crate) fn ioapic_eoi(&self, vector: u8, address: &Address, api: X2apicApi) -> bool {
        let pins = self.ioapic_pins.load(Relaxed);
        let routes = self.routes.lock();
        routes.iter().take_while(|r| r.gsi < pins).any(|r| {
            r.level_triggered()
                && Irq::from_msi(r.address_lo, r.address_hi, r.data, api.x2apic_format).is_some_and(|irq| {
                    irq.vector == vector
                        && address.matches_dest(Source::Device, Shorthand::None, irq.dest, irq.logical, api.broadcast_quirk_disabled)
                })
        })
    }
}
