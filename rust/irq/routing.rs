// SPDX-License-Identifier: GPL-2.0

//! A VM's GSI routes (`KVM_SET_GSI_ROUTING`, rules in `logic/irq_routing.rs`): `KVM_IRQ_LINE`
//! and irqfds on a GSI set its routes' lines (an MSI, or the in-kernel PIC and IOAPIC pins of
//! `KVM_CREATE_IRQCHIP`); with a split irqchip, an EOI of a vector that a level-triggered
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
        irq_routing::{self, Route, RoutingEntry, RoutingHeader, Target},
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
    /// (`x2apic_format`: `KVM_X2APIC_API_USE_32BIT_IDS` is on; `irqchip`: routes to the
    /// in-kernel PIC and IOAPIC are allowed).
    pub(crate) fn set(&self, arg: usize, x2apic_format: bool, irqchip: bool) -> Result {
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
            routes.push(irq_routing::check(e, x2apic_format, irqchip).ok_or(EINVAL)?, GFP_KERNEL_ACCOUNT)?;
        }
        // A GSI's routes in any order: their statuses are summed.
        routes.sort_unstable_by_key(|r| r.gsi);
        if irq_routing::has_conflicts(&routes) {
            return Err(EINVAL);
        }
        self.replace(routes);
        Ok(())
    }

    /// `KVM_CREATE_IRQCHIP`'s routes (KVM's `kvm_setup_default_ioapic_and_pic_routing`).
    pub(crate) fn set_default(&self) -> Result {
        let mut routes = KVVec::new();
        for r in irq_routing::default_routes() {
            routes.push(r, GFP_KERNEL_ACCOUNT)?;
        }
        self.replace(routes);
        Ok(())
    }

    fn replace(&self, routes: KVVec<Route>) {
        let old = core::mem::replace(&mut *self.routes.lock(), routes);
        drop(old); // freed outside the lock
    }

    /// The GSI routed to a chip's pin, if any (KVM's `kvm_irq_map_chip_pin`).
    pub(crate) fn gsi_of(&self, target: Target) -> Option<u32> {
        irq_routing::gsi_of(&self.routes.lock(), target)
    }

    /// The IOAPIC pins whose GSI (as [`GsiRoutes::gsi_of`] finds it) `wanted` accepts.
    pub(crate) fn ioapic_pins_where(&self, wanted: impl Fn(u32) -> bool) -> u32 {
        irq_routing::ioapic_pins_where(&self.routes.lock(), wanted)
    }

    /// The same for the PIC pair's pins.
    pub(crate) fn pic_pins_where(&self, wanted: impl Fn(u32) -> bool) -> u32 {
        irq_routing::pic_pins_where(&self.routes.lock(), wanted)
    }

    /// Where `gsi` leads (up to three routes; `None` past the last).
    pub(crate) fn targets(&self, gsi: u32) -> [Option<Target>; 3] {
        let mut out = [None; 3];
        let routes = self.routes.lock();
        for (o, r) in out.iter_mut().zip(irq_routing::routes_of(&routes, gsi)) {
            *o = Some(r.target);
        }
        out
    }


    /// Whether the APIC at `address` must report its EOI of `vector` to userspace: a
    /// level-triggered route of an IOAPIC pin sends `vector` to it (`kvm_scan_ioapic_routes`,
    /// evaluated at the EOI with the APIC's address then).
    pub(crate) fn ioapic_eoi(&self, vector: u8, address: &Address, api: X2apicApi) -> bool {
        let pins = self.ioapic_pins.load(Relaxed);
        let routes = self.routes.lock();
        routes.iter().take_while(|r| r.gsi < pins).any(|r| {
            r.level_triggered()
                && r.as_msi().and_then(|(lo, hi, data)| Irq::from_msi(lo, hi, data, api.x2apic_format)).is_some_and(|irq| {
                    irq.vector == vector
                        && address.matches_dest(Source::Device, Shorthand::None, irq.dest, irq.logical, api.broadcast_quirk_disabled)
                })
        })
    }
}
