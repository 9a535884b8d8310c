// SPDX-License-Identifier: GPL-2.0

//! The IOAPIC of `KVM_CREATE_IRQCHIP` as KVM emulates it (arch/x86/kvm/ioapic.c): 24 pins,
//! the select/window registers at 0xfec00000, redirection entries, remote IRR for
//! level-triggered pins and the EOI that clears it, the re-delivery of a level still high
//! (delayed after 10000 in a row, as KVM does against interrupt storms), and the RTC pin's EOI
//! tracking that lets `KVM_IRQ_LINE_STATUS` report a coalesced RTC interrupt. The state is
//! `struct kvm_ioapic_state`. Pure logic, tested on the host: deliveries go through a function
//! the caller gives (the module's APIC bus), and the pins whose interrupt was acknowledged are
//! left for the caller to collect (KVM's ack notifiers: irqfd resampling, the PIT).

use super::lapic::{DeliveryMode, Irq, Shorthand};

/// Pins.
pub const PINS: usize = 24;
/// Where KVM's IOAPIC answers (its bus registration; `KVM_SET_IRQCHIP` cannot move it).
pub const DEFAULT_BASE: u64 = 0xfec0_0000;
/// Bytes of MMIO it answers.
pub const MEM_LENGTH: u64 = 0x100;
/// The pin whose EOIs are tracked for `KVM_IRQ_LINE_STATUS` (the RTC's, on ISA IRQ 8).
pub const RTC_GSI: u32 = 8;
/// `IOAPIC_VERSION_ID`.
const VERSION_ID: u32 = 0x11;
/// Re-deliveries of a level at EOI in a row before the next waits (KVM's
/// `IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT`).
const SUCCESSIVE_IRQ_MAX: u32 = 10000;
/// vCPUs whose RTC EOIs are tracked (the APIC bus's members).
const TRACKED: usize = 32;

/// MMIO offsets.
const REG_SELECT: u64 = 0x00;
const REG_WINDOW: u64 = 0x10;
/// Indirect registers.
const REG_APIC_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARB_ID: u32 = 0x02;

/// Redirection-entry fields (`union kvm_ioapic_redirect_entry`).
pub mod entry {
    /// Vector.
    pub const VECTOR: u64 = 0xff;
    /// Delivery mode, bits 10:8.
    pub const DELIVERY_SHIFT: u32 = 8;
    /// Logical destination mode.
    pub const DEST_LOGICAL: u64 = 1 << 11;
    /// Delivery status (read-only; KVM keeps it 0).
    pub const DELIVERY_STATUS: u64 = 1 << 12;
    /// Remote IRR (read-only): a level-triggered interrupt awaits its EOI.
    pub const REMOTE_IRR: u64 = 1 << 14;
    /// Level-triggered.
    pub const LEVEL: u64 = 1 << 15;
    /// Masked.
    pub const MASK: u64 = 1 << 16;
    /// Destination, bits 63:56.
    pub const DEST_SHIFT: u32 = 56;
}

/// `struct kvm_ioapic_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoapicState {
    /// Base address (userspace may set another; only the default one answers).
    pub base_address: u64,
    /// IOREGSEL.
    pub ioregsel: u32,
    /// IOAPIC ID.
    pub id: u32,
    /// Pins requesting an interrupt.
    pub irr: u32,
    /// Padding.
    pub pad: u32,
    /// Redirection table.
    pub redirtbl: [u64; PINS],
}
// SAFETY: `repr(C)` of integers without implicit padding (216 bytes, tested against
// kvm-bindings): any bit pattern is valid.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for IoapicState {}
// SAFETY: as above.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for IoapicState {}

impl Default for IoapicState {
    fn default() -> Self {
        Self { base_address: DEFAULT_BASE, ioregsel: 0, id: 0, irr: 0, pad: 0, redirtbl: [entry::MASK; PINS] }
    }
}

/// What a delivery reached: KVM's count (APICs that took it, -1 if none matched) and the
/// bus members it was posted to (bit `n` for member `n`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// `kvm_irq_delivery_to_apic`'s result.
    pub count: i32,
    /// Members posted to.
    pub targets: u32,
}

/// The interrupt message of redirection entry `e` (KVM's `ioapic_service`).
pub fn irq_of(e: u64) -> Irq {
    Irq {
        vector: (e & entry::VECTOR) as u8,
        delivery: DeliveryMode::from_bits((e >> entry::DELIVERY_SHIFT) as u32),
        logical: e & entry::DEST_LOGICAL != 0,
        level: true,
        trigger_level: e & entry::LEVEL != 0,
        shorthand: Shorthand::None,
        dest: (e >> entry::DEST_SHIFT) as u32 & 0xff,
        redirect_hint: false,
    }
}

/// Whether a guest access of `len` bytes at `gpa` is the IOAPIC's (KVM's bus registration at
/// the default base, then `ioapic_in_range` against the base the state holds).
pub fn claims(base: u64, gpa: u64, len: u32) -> bool {
    let in_bus = gpa >= DEFAULT_BASE && gpa.saturating_add(u64::from(len)) <= DEFAULT_BASE.wrapping_add(MEM_LENGTH);
    in_bus && gpa >= base && gpa < base.saturating_add(MEM_LENGTH)
}

/// The RTC pin's EOI tracking (KVM's `struct rtc_status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RtcStatus {
    pending_eoi: i32,
    /// Members that have not yet EOI'd the RTC interrupt, and its vector at each.
    map: u32,
    vectors: [u8; TRACKED],
}

/// The IOAPIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ioapic {
    /// Registers (`irr` as KVM keeps it internally: see [`Ioapic::state`]).
    state: IoapicState,
    /// Edge pins delivered since they were raised (not reported as pending).
    irr_delivered: u32,
    /// Per pin, one bit per interrupt source holding the line high.
    sources: [u32; PINS],
    /// Per pin, re-deliveries at EOI in a row.
    irq_eoi: [u32; PINS],
    rtc: RtcStatus,
    /// An interrupt storm was detected: call [`Ioapic::eoi_inject`] in about 10 ms.
    delayed_eoi: bool,
    /// Pins a guest's write unmasked since the last [`Ioapic::take_unmasked`] (KVM's mask
    /// notifiers).
    unmasked: u32,
    /// Pins whose stale request an unmasking dropped for their irqfd resampler to look at,
    /// since the last [`Ioapic::take_resampled`].
    resampled: u32,
}

impl Default for Ioapic {
    fn default() -> Self {
        Self::new()
    }
}

fn bit(pin: usize) -> u32 {
    1u32.checked_shl(pin as u32).unwrap_or(0)
}

impl Ioapic {
    /// The IOAPIC as `KVM_CREATE_IRQCHIP` makes it: every pin masked.
    pub fn new() -> Self {
        Self {
            state: IoapicState::default(),
            irr_delivered: 0,
            sources: [0; PINS],
            irq_eoi: [0; PINS],
            rtc: RtcStatus::default(),
            delayed_eoi: false,
            unmasked: 0,
            resampled: 0,
        }
    }

    /// The base address the state holds.
    pub fn base(&self) -> u64 {
        self.state.base_address
    }

    /// Redirection entry `pin` (masked if there is none).
    pub fn entry(&self, pin: u32) -> u64 {
        self.state.redirtbl.get(pin as usize).copied().unwrap_or(entry::MASK)
    }

    /// The pins unmasked since the last call (bit `n` for pin `n`).
    pub fn take_unmasked(&mut self) -> u32 {
        core::mem::take(&mut self.unmasked)
    }

    /// The pins whose resamplers are to be told (KVM's `kvm_notify_irqfd_resampler`) since the
    /// last call (bit `n` for pin `n`).
    pub fn take_resampled(&mut self) -> u32 {
        core::mem::take(&mut self.resampled)
    }

    /// Whether an interrupt storm asked for a delayed re-delivery since the last call.
    pub fn take_delayed_eoi(&mut self) -> bool {
        core::mem::take(&mut self.delayed_eoi)
    }

    /// Sends pin `pin`'s interrupt if it is not masked and not awaiting its EOI (KVM's
    /// `ioapic_service`): the delivery count, or -1.
    fn service(&mut self, pin: usize, line_status: bool, deliver: &mut dyn FnMut(&Irq) -> Delivered) -> i32 {
        let Some(&e) = self.state.redirtbl.get(pin) else { return -1 };
        if e & entry::MASK != 0 || (e & entry::LEVEL != 0 && e & entry::REMOTE_IRR != 0) {
            return -1;
        }
        let irq = irq_of(e);
        if !irq.trigger_level {
            self.irr_delivered |= bit(pin);
        }
        let d = deliver(&irq);
        if pin == RTC_GSI as usize && line_status {
            self.rtc.pending_eoi = if d.count < 0 { 0 } else { d.count };
            self.rtc.map = d.targets;
            for (i, v) in self.rtc.vectors.iter_mut().enumerate() {
                if d.targets & bit(i) != 0 {
                    *v = irq.vector;
                }
            }
        }
        if d.count != 0 && irq.trigger_level {
            if let Some(e) = self.state.redirtbl.get_mut(pin) {
                *e |= entry::REMOTE_IRR;
            }
        }
        d.count
    }

    /// The pin's level changes (KVM's `ioapic_set_irq`): 1 or more delivered, 0 coalesced,
    /// -1 masked or not delivered.
    fn set_pin(&mut self, pin: usize, level: bool, line_status: bool, deliver: &mut dyn FnMut(&Irq) -> Delivered) -> i32 {
        let mask = bit(pin);
        if !level {
            self.state.irr &= !mask;
            return 1;
        }
        // The RTC's interrupt is coalesced while a vCPU has not EOI'd the last one.
        if pin == RTC_GSI as usize && line_status && self.rtc.pending_eoi > 0 {
            return 0;
        }
        let old = self.state.irr;
        self.state.irr |= mask;
        if self.entry(pin as u32) & entry::LEVEL == 0 {
            self.irr_delivered &= !mask;
            if old == self.state.irr {
                return 0;
            }
        }
        self.service(pin, line_status, deliver)
    }

    /// Interrupt source `source` sets pin `pin`'s line to `level`; the line is the OR of its
    /// sources (KVM's `kvm_ioapic_set_irq`). `line_status`: the caller reports coalescing
    /// (`KVM_IRQ_LINE_STATUS`), which turns on the RTC tracking.
    pub fn set_irq(&mut self, pin: u32, source: u32, level: bool, line_status: bool, deliver: &mut dyn FnMut(&Irq) -> Delivered) -> i32 {
        let (Some(state), Some(b)) = (self.sources.get_mut(pin as usize), 1u32.checked_shl(source)) else { return -1 };
        if level {
            *state |= b;
        } else {
            *state &= !b;
        }
        let line = *state != 0;
        self.set_pin(pin as usize, line, line_status, deliver)
    }

    /// Whether pin `pin` is masked.
    pub fn masked(&self, pin: u32) -> bool {
        self.entry(pin) & entry::MASK != 0
    }

    fn read_indirect(&self) -> u32 {
        match self.state.ioregsel {
            REG_VERSION => ((PINS as u32).wrapping_sub(1) & 0xff) << 16 | VERSION_ID,
            REG_APIC_ID | REG_ARB_ID => (self.state.id & 0xf) << 24,
            sel => {
                // Registers 3-0xf wrap to a huge index: all ones, as on KVM.
                let index = sel.wrapping_sub(0x10) >> 1;
                let e = self.state.redirtbl.get(index as usize).copied().unwrap_or(u64::MAX);
                if sel & 1 != 0 { (e >> 32) as u32 } else { e as u32 }
            }
        }
    }

    /// A guest's read of `len` bytes at offset `offset` of the MMIO page: the value, of which
    /// the caller gives the guest `len` bytes (KVM answers lengths other than 1, 2, 4 and 8
    /// with nothing written, which the caller turns into zeros).
    pub fn mmio_read(&self, offset: u64) -> u64 {
        match offset & 0xff {
            REG_SELECT => u64::from(self.state.ioregsel),
            REG_WINDOW => u64::from(self.read_indirect()),
            _ => 0,
        }
    }

    /// A guest's write of `len` bytes of `data` at offset `offset` (KVM's
    /// `ioapic_mmio_write`). `resample(pin)` is asked, for a level-triggered pin unmasked
    /// with a request pending, whether an irqfd resampler will find out if the line is
    /// still high (then the request is dropped instead of delivered, and the pin is among
    /// [`Ioapic::take_resampled`]'s).
    pub fn mmio_write(
        &mut self,
        offset: u64,
        len: u32,
        data: u64,
        deliver: &mut dyn FnMut(&Irq) -> Delivered,
        resample: &mut dyn FnMut(u32) -> bool,
    ) {
        let data = match len {
            8 | 4 => data as u32,
            2 => data as u16 as u32,
            1 => data as u8 as u32,
            _ => return,
        };
        match offset & 0xff {
            REG_SELECT => self.state.ioregsel = data & 0xff,
            REG_WINDOW => self.write_indirect(data, deliver, resample),
            _ => {}
        }
    }

    fn write_indirect(&mut self, val: u32, deliver: &mut dyn FnMut(&Irq) -> Delivered, resample: &mut dyn FnMut(u32) -> bool) {
        match self.state.ioregsel {
            REG_VERSION | REG_ARB_ID => {}
            REG_APIC_ID => self.state.id = (val >> 24) & 0xf,
            sel => {
                let index = (sel.wrapping_sub(0x10) >> 1) as usize;
                let Some(e) = self.state.redirtbl.get_mut(index) else { return };
                let keep = *e & (entry::REMOTE_IRR | entry::DELIVERY_STATUS);
                let mut new = if sel & 1 != 0 {
                    (*e & 0xffff_ffff) | u64::from(val) << 32
                } else {
                    (*e & !0xffff_ffff) | u64::from(val)
                };
                new = (new & !(entry::REMOTE_IRR | entry::DELIVERY_STATUS)) | keep;
                // Linux and Xen expect an edge-triggered entry to drop remote IRR (an EOI for
                // IOAPICs without the EOI register).
                if new & entry::LEVEL == 0 {
                    new &= !entry::REMOTE_IRR;
                }
                if *e & entry::MASK != 0 && new & entry::MASK == 0 {
                    self.unmasked |= bit(index);
                }
                *e = new;
                if new & entry::LEVEL != 0
                    && self.state.irr & bit(index) != 0
                    && new & (entry::MASK | entry::REMOTE_IRR) == 0
                {
                    // The request may be stale (the line dropped while masked): a resampler
                    // finds out; without one, deliver it.
                    if resample(index as u32) {
                        self.state.irr &= !bit(index);
                        self.resampled |= bit(index);
                    } else {
                        self.service(index, false, deliver);
                    }
                }
            }
        }
    }

    /// Whether the EOI of `vector` by the APIC for which `matches(dest, logical)` says whether
    /// it is an entry's destination is the IOAPIC's business (KVM's `ioapic_handled_vectors`,
    /// here evaluated at the EOI): an entry with that vector aimed at it that is
    /// level-triggered, has an ack notifier (`notified`, bit per pin) or is the RTC's; or the
    /// RTC interrupt it has yet to EOI.
    pub fn handles(&self, member: usize, vector: u8, notified: u32, matches: &dyn Fn(u32, bool) -> bool) -> bool {
        if self.rtc.map & bit(member) != 0 && self.rtc.vectors.get(member) == Some(&vector) {
            return true;
        }
        self.state.redirtbl.iter().enumerate().any(|(pin, &e)| {
            let irq = irq_of(e);
            irq.vector == vector
                && (e & entry::LEVEL != 0 || notified & bit(pin) != 0 || pin == RTC_GSI as usize)
                && matches(irq.dest, irq.logical)
        })
    }

    /// The APIC of bus member `member` EOI'd `vector`, level-triggered in its TMR if
    /// `level`; `suppressed`: its EOI broadcast is suppressed (KVM's
    /// `kvm_ioapic_update_eoi`). Every pin with that vector is acknowledged (`ack(pin)`, KVM's
    /// ack notifiers, which may lower the line); a level pin then drops remote IRR and is
    /// delivered again if its line is still high. The kernel runs the steps itself
    /// ([`Ioapic::eoi_rtc`], [`Ioapic::has_vector`], [`Ioapic::eoi_pin`]) to drop its lock
    /// around the notifiers, as KVM does.
    #[cfg(test)]
    pub fn eoi(&mut self, member: usize, vector: u8, level: bool, suppressed: bool, deliver: &mut dyn FnMut(&Irq) -> Delivered, ack: &mut dyn FnMut(&mut Self, u32)) {
        self.eoi_rtc(member, vector);
        for pin in 0..PINS as u32 {
            if self.has_vector(pin, vector) {
                ack(self, pin);
                self.eoi_pin(pin, level, suppressed, deliver);
            }
        }
    }

    /// An EOI's first step: the RTC's tracking of the APIC at bus member `member`.
    pub fn eoi_rtc(&mut self, member: usize, vector: u8) {
        if self.rtc.map & bit(member) != 0 && self.rtc.vectors.get(member) == Some(&vector) {
            self.rtc.map &= !bit(member);
            self.rtc.pending_eoi = self.rtc.pending_eoi.saturating_sub(1).max(0);
        }
    }

    /// Whether pin `pin`'s entry has vector `vector` (an EOI of it acknowledges the pin).
    pub fn has_vector(&self, pin: u32, vector: u8) -> bool {
        (pin as usize) < PINS && self.entry(pin) & entry::VECTOR == u64::from(vector)
    }

    /// An EOI's step for pin `pin`, after its ack notifiers ran (KVM's
    /// `kvm_ioapic_update_eoi_one`).
    pub fn eoi_pin(&mut self, pin: u32, level: bool, suppressed: bool, deliver: &mut dyn FnMut(&Irq) -> Delivered) {
        let pin = pin as usize;
        if !level || suppressed {
            return;
        }
        let Some(e) = self.state.redirtbl.get_mut(pin) else { return };
        *e &= !entry::REMOTE_IRR;
        let masked = *e & entry::MASK != 0;
        let Some(count) = self.irq_eoi.get_mut(pin) else { return };
        if !masked && self.state.irr & bit(pin) != 0 {
            *count = count.saturating_add(1);
            if *count == SUCCESSIVE_IRQ_MAX {
                // Real hardware does not deliver at once at EOI: a guest that mishandles a
                // level interrupt still makes slow progress.
                *count = 0;
                self.delayed_eoi = true;
            } else {
                self.service(pin, false, deliver);
            }
        } else {
            *count = 0;
        }
    }

    /// The delayed re-delivery after a storm (KVM's `kvm_ioapic_eoi_inject_work`).
    pub fn eoi_inject(&mut self, deliver: &mut dyn FnMut(&Irq) -> Delivered) {
        for pin in 0..PINS {
            let e = self.entry(pin as u32);
            if e & entry::LEVEL != 0 && self.state.irr & bit(pin) != 0 && e & entry::REMOTE_IRR == 0 {
                self.service(pin, false, deliver);
            }
        }
    }

    /// `KVM_GET_IRQCHIP`: the registers, with delivered edges not shown as pending.
    pub fn state(&self) -> IoapicState {
        let mut s = self.state;
        s.irr &= !self.irr_delivered;
        s
    }

    /// `KVM_SET_IRQCHIP`: the registers as given, then the pending pins raised again (KVM's
    /// `kvm_set_ioapic`; its RTC tracking restore is approximated by the deliveries' own).
    pub fn set_state(&mut self, s: &IoapicState, deliver: &mut dyn FnMut(&Irq) -> Delivered) {
        self.state = *s;
        self.state.irr = 0;
        self.irr_delivered = 0;
        self.rtc = RtcStatus::default();
        for pin in (0..PINS).filter(|p| s.irr & bit(*p) != 0) {
            self.set_pin(pin, true, true, deliver);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_kvm_bindings() {
        use core::mem::{offset_of, size_of};
        use kvm_bindings as kb;
        assert_eq!(size_of::<IoapicState>(), size_of::<kb::kvm_ioapic_state>());
        assert_eq!(offset_of!(IoapicState, redirtbl), offset_of!(kb::kvm_ioapic_state, redirtbl));
        assert_eq!(offset_of!(IoapicState, irr), offset_of!(kb::kvm_ioapic_state, irr));
    }

    /// A bus where every interrupt reaches member 0.
    fn one_cpu(log: &mut Vec<Irq>) -> impl FnMut(&Irq) -> Delivered + '_ {
        move |i| {
            log.push(*i);
            Delivered { count: 1, targets: 1 }
        }
    }

    /// Writes redirection entry `pin` (high half first, as Linux does); deliveries go to `log`.
    fn program_logged(io: &mut Ioapic, pin: u32, low: u32, high: u32, log: &mut Vec<Irq>) {
        io.mmio_write(0, 4, u64::from(0x11 + 2 * pin), &mut one_cpu(log), &mut |_| false);
        io.mmio_write(0x10, 4, u64::from(high), &mut one_cpu(log), &mut |_| false);
        io.mmio_write(0, 4, u64::from(0x10 + 2 * pin), &mut one_cpu(log), &mut |_| false);
        io.mmio_write(0x10, 4, u64::from(low), &mut one_cpu(log), &mut |_| false);
    }

    fn program(io: &mut Ioapic, pin: u32, low: u32, high: u32) {
        program_logged(io, pin, low, high, &mut Vec::new());
    }

    fn read_reg(io: &mut Ioapic, sel: u32) -> u32 {
        io.mmio_write(0, 4, u64::from(sel), &mut |_| Delivered::default(), &mut |_| false);
        io.mmio_read(0x10) as u32
    }

    #[test]
    fn registers_read_as_kvms() {
        let mut io = Ioapic::new();
        assert_eq!(read_reg(&mut io, 1), 0x0017_0011);
        io.mmio_write(0, 4, 0, &mut |_| Delivered::default(), &mut |_| false);
        io.mmio_write(0x10, 4, 0x0f00_0000 | 0xff, &mut |_| Delivered::default(), &mut |_| false);
        assert_eq!(read_reg(&mut io, 0), 0x0f00_0000);
        assert_eq!(read_reg(&mut io, 2), 0x0f00_0000);
        assert_eq!(read_reg(&mut io, 0x10), 1 << 16, "masked at reset");
        assert_eq!(read_reg(&mut io, 5), u32::MAX, "no such register");
        assert_eq!(read_reg(&mut io, 0x10 + 2 * 24), u32::MAX);
        assert_eq!(io.mmio_read(0), 0x10 + 48);
        assert_eq!(io.mmio_read(0x20), 0);
        assert!(claims(DEFAULT_BASE, 0xfec0_0010, 4));
        assert!(!claims(DEFAULT_BASE, 0xfec0_00fe, 4));
        assert!(!claims(0xfe00_0000, 0xfec0_0010, 4), "moved by SET_IRQCHIP: nothing answers");
    }

    #[test]
    fn edge_pins_deliver_on_the_rising_edge() {
        let mut io = Ioapic::new();
        program(&mut io, 4, 0x31, 0x0100_0000);
        assert_eq!(io.take_unmasked(), 1 << 4);
        let mut log = Vec::new();
        assert_eq!(io.set_irq(4, 0, true, false, &mut one_cpu(&mut log)), 1);
        assert_eq!(io.state().irr, 0, "a delivered edge is not pending");
        assert_eq!(io.set_irq(4, 0, true, false, &mut one_cpu(&mut log)), 0, "no new edge");
        assert_eq!(io.state().irr, 1 << 4, "pending again once raised again, as KVM reports it");
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].vector, log[0].dest, log[0].trigger_level), (0x31, 1, false));
        io.set_irq(4, 0, false, false, &mut one_cpu(&mut log));
        assert_eq!(io.set_irq(4, 0, true, false, &mut one_cpu(&mut log)), 1);
        // Masked: pending, not delivered.
        program(&mut io, 5, 0x32 | 1 << 16, 0);
        assert_eq!(io.set_irq(5, 0, true, false, &mut one_cpu(&mut log)), -1);
        assert_eq!(io.state().irr, 1 << 5);
    }

    #[test]
    fn level_pins_wait_for_the_eoi() {
        let mut io = Ioapic::new();
        program(&mut io, 10, 0x40 | 1 << 15, 0);
        let mut log = Vec::new();
        assert_eq!(io.set_irq(10, 0, true, false, &mut one_cpu(&mut log)), 1);
        assert_ne!(io.entry(10) & entry::REMOTE_IRR, 0);
        assert_eq!(io.set_irq(10, 1, true, false, &mut one_cpu(&mut log)), -1, "remote IRR");
        assert!(io.handles(0, 0x40, 0, &|d, l| d == 0 && !l));
        assert!(!io.handles(0, 0x41, 0, &|_, _| true));
        // EOI with the line still high: acknowledged, then delivered again.
        let mut acked = Vec::new();
        io.eoi(0, 0x40, true, false, &mut one_cpu(&mut log), &mut |_, p| acked.push(p));
        assert_eq!(acked, [10]);
        assert_eq!(log.len(), 2);
        // Lines low: the EOI only clears remote IRR.
        io.set_irq(10, 0, false, false, &mut one_cpu(&mut log));
        io.set_irq(10, 1, false, false, &mut one_cpu(&mut log));
        io.eoi(0, 0x40, true, false, &mut one_cpu(&mut log), &mut |_, _| {});
        assert_eq!(io.entry(10) & entry::REMOTE_IRR, 0);
        assert_eq!(log.len(), 2);
        // A suppressed broadcast acknowledges but keeps remote IRR.
        io.set_irq(10, 0, true, false, &mut one_cpu(&mut log));
        io.eoi(0, 0x40, true, true, &mut one_cpu(&mut log), &mut |_, _| {});
        assert_ne!(io.entry(10) & entry::REMOTE_IRR, 0);
        // Rewriting as edge drops remote IRR; the write keeps it otherwise.
        program(&mut io, 10, 0x40, 0);
        assert_eq!(io.entry(10) & entry::REMOTE_IRR, 0);
    }

    #[test]
    fn an_ack_notifier_lowering_the_line_prevents_the_redelivery() {
        // A resampling irqfd: its notifier lowers the line before the EOI looks at it.
        let mut io = Ioapic::new();
        program(&mut io, 11, 0x4b | 1 << 15, 0);
        let mut log = Vec::new();
        assert_eq!(io.set_irq(11, 1, true, false, &mut one_cpu(&mut log)), 1);
        io.eoi(0, 0x4b, true, false, &mut one_cpu(&mut log), &mut |io, p| {
            io.set_irq(p, 1, false, false, &mut |_| Delivered::default());
        });
        assert_eq!(log.len(), 1, "not delivered again");
        assert_eq!(io.entry(11) & entry::REMOTE_IRR, 0);
        assert_eq!(io.state().irr, 0);
    }

    #[test]
    fn unmasking_a_pending_level_pin_resamples_or_delivers() {
        let mut io = Ioapic::new();
        program(&mut io, 3, 0x50 | 1 << 15 | 1 << 16, 0);
        let mut log = Vec::new();
        io.set_irq(3, 0, true, false, &mut one_cpu(&mut log));
        assert!(log.is_empty());
        io.mmio_write(0, 4, 0x10 + 6, &mut one_cpu(&mut log), &mut |_| true);
        io.mmio_write(0x10, 4, 0x50 | 1 << 15, &mut one_cpu(&mut log), &mut |p| p == 3);
        assert!(log.is_empty(), "a resampler finds out");
        assert_eq!(io.state().irr, 0);
        assert_eq!(io.take_resampled(), 1 << 3);
        assert_eq!(io.take_resampled(), 0);
        io.set_irq(3, 0, false, false, &mut one_cpu(&mut log));
        program(&mut io, 3, 0x50 | 1 << 15 | 1 << 16, 0);
        io.set_irq(3, 0, true, false, &mut one_cpu(&mut log));
        program_logged(&mut io, 3, 0x50 | 1 << 15, 0, &mut log);
        assert_eq!(log.len(), 1, "no resampler: delivered");
        assert_eq!(io.take_resampled(), 0);
    }

    #[test]
    fn storms_are_delayed() {
        let mut io = Ioapic::new();
        program(&mut io, 1, 0x60 | 1 << 15, 0);
        let mut log = Vec::new();
        io.set_irq(1, 0, true, false, &mut one_cpu(&mut log));
        for _ in 0..SUCCESSIVE_IRQ_MAX {
            io.eoi(0, 0x60, true, false, &mut one_cpu(&mut log), &mut |_, _| {});
        }
        assert!(io.take_delayed_eoi());
        assert_eq!(log.len(), SUCCESSIVE_IRQ_MAX as usize);
        io.eoi_inject(&mut one_cpu(&mut log));
        assert_eq!(log.len(), SUCCESSIVE_IRQ_MAX as usize + 1);
    }

    #[test]
    fn the_rtc_pin_reports_coalescing_until_its_eoi() {
        let mut io = Ioapic::new();
        program(&mut io, RTC_GSI, 0x38, 0);
        let mut log = Vec::new();
        assert_eq!(io.set_irq(RTC_GSI, 0, true, true, &mut one_cpu(&mut log)), 1);
        io.set_irq(RTC_GSI, 0, false, true, &mut one_cpu(&mut log));
        assert_eq!(io.set_irq(RTC_GSI, 0, true, true, &mut one_cpu(&mut log)), 0, "not EOI'd yet");
        assert!(io.handles(0, 0x38, 0, &|_, _| false), "the vCPU owes its EOI");
        io.eoi(0, 0x38, false, false, &mut one_cpu(&mut log), &mut |_, _| {});
        io.set_irq(RTC_GSI, 0, false, true, &mut one_cpu(&mut log));
        assert_eq!(io.set_irq(RTC_GSI, 0, true, true, &mut one_cpu(&mut log)), 1);
    }

    #[test]
    fn set_state_raises_the_pending_pins_again() {
        let mut io = Ioapic::new();
        let mut s = io.state();
        s.redirtbl[2] = 0x70;
        s.irr = 1 << 2;
        s.id = 3;
        let mut log = Vec::new();
        io.set_state(&s, &mut one_cpu(&mut log));
        assert_eq!(log.len(), 1);
        assert_eq!(io.state().irr, 0);
        assert_eq!(io.state().id, 3);
        assert_eq!(io.set_irq(99, 0, true, false, &mut one_cpu(&mut log)), -1);
    }
}
