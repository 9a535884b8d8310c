//! One local APIC per vCPU (xAPIC, its registers memory-mapped at 0xfee00000), emulated in
//! userspace as KVM's ABI expects without an in-kernel irqchip: the guest's accesses to the
//! page exit as MMIO, and the vector the APIC hands out is injected with `KVM_INTERRUPT`.
//! What Linux uses: ID, version, TPR/PPR, EOI, LDR/DFR, the spurious vector (software enable),
//! ISR/IRR, ESR, the ICR (fixed, NMI, INIT and STARTUP IPIs with physical, logical and
//! shorthand destinations), the LVT and the timer (one-shot and periodic, with its divider).
//! TSC-deadline mode is not offered (the guest's CPUID says so). Time is nanoseconds the caller
//! passes in, so the model is tested without sleeping.

use super::bus::{BusDevice, Effect};

/// Where the APIC page is (IA32_APIC_BASE's default), and its size.
pub const BASE: u64 = 0xfee0_0000;
pub const SIZE: u64 = 0x1000;

/// Register offsets in the page (SDM vol. 3A, table 11-1).
mod reg {
    pub const ID: u32 = 0x20;
    pub const VERSION: u32 = 0x30;
    pub const TPR: u32 = 0x80;
    pub const APR: u32 = 0x90;
    pub const PPR: u32 = 0xa0;
    pub const EOI: u32 = 0xb0;
    pub const LDR: u32 = 0xd0;
    pub const DFR: u32 = 0xe0;
    pub const SVR: u32 = 0xf0;
    pub const ISR: u32 = 0x100;
    pub const IRR: u32 = 0x200;
    pub const ESR: u32 = 0x280;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    /// LVT timer, thermal, performance counters, LINT0, LINT1, error: 0x320 to 0x370.
    pub const LVT: u32 = 0x320;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3e0;
}

/// LVT entries, in register order.
const LVT_TIMER: usize = 0;
const LVT_LINT0: usize = 3;
const LVT_COUNT: usize = 6;
/// Bits software may write in each LVT entry: vector, delivery mode, polarity, trigger mode,
/// mask; the timer has its periodic bit and no delivery mode; the error entry only a vector.
const LVT_WRITABLE: [u32; LVT_COUNT] = [0x3_00ff, 0x1_07ff, 0x1_07ff, 0x1_a7ff, 0x1_a7ff, 0x1_00ff];
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
/// Delivery mode ExtINT in LINT0: the 8259's interrupts come through this input.
const DM_EXTINT: u32 = 7 << 8;
/// SVR: the APIC is software-enabled.
const SVR_ENABLED: u32 = 1 << 8;
/// Version 0x14 (integrated APIC), highest LVT entry 5.
const VERSION: u32 = 0x14 | ((LVT_COUNT as u32 - 1) << 16);

/// The timer's input clock before the divider: one tick per nanosecond.
pub const TIMER_HZ: u64 = 1_000_000_000;

/// An IPI's delivery mode (ICR bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Fixed or lowest priority: the vector goes to the IRR.
    Fixed(u8),
    Nmi,
    /// INIT with the level asserted: the target resets and waits for a STARTUP.
    Init,
    /// STARTUP: a target waiting for it starts in real mode at `vector << 12`.
    Startup(u8),
}

/// Who receives an IPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// APIC ID (0xff: everyone).
    Physical(u8),
    /// A logical destination, matched against each LDR as its DFR model says.
    Logical(u8),
    /// Shorthands.
    ToSelf,
    All,
    AllButSelf,
}

/// An IPI the guest sent by writing the ICR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    pub delivery: Delivery,
    pub dest: Dest,
}

/// One local APIC.
#[derive(Clone, Debug)]
pub struct Lapic {
    id: u8,
    tpr: u8,
    ldr: u32,
    dfr: u32,
    svr: u32,
    /// 256-bit registers as eight 32-bit words, as the page shows them.
    isr: [u32; 8],
    irr: [u32; 8],
    icr_low: u32,
    icr_high: u32,
    lvt: [u32; LVT_COUNT],
    timer_initial: u32,
    /// Divide configuration register (bits 0, 1, 3).
    timer_divide: u32,
    /// When the count was loaded (ns), and how many periods were already signalled.
    timer_start: u64,
    timer_fired: u64,
}

/// Sets or clears bit `v` of a 256-bit register.
fn set(r: &mut [u32; 8], v: u8, on: bool) {
    if on { r[v as usize / 32] |= 1 << (v % 32) } else { r[v as usize / 32] &= !(1 << (v % 32)) }
}
/// The highest vector set in a 256-bit register.
fn highest(r: &[u32; 8]) -> Option<u8> {
    (0..8).rev().find(|&i| r[i] != 0).map(|i| (i * 32 + 31 - r[i].leading_zeros() as usize) as u8)
}

impl Lapic {
    /// The power-on state of the APIC with ID `id`. The BSP's LINT0 passes the 8259's
    /// interrupts through (ExtINT), as firmware leaves it in virtual-wire mode.
    pub fn new(id: u8, bsp: bool) -> Self {
        let mut lvt = [LVT_MASKED; LVT_COUNT];
        if bsp {
            lvt[LVT_LINT0] = DM_EXTINT;
        }
        Lapic {
            id, tpr: 0, ldr: 0, dfr: !0, svr: 0xff, isr: [0; 8], irr: [0; 8],
            icr_low: 0, icr_high: 0, lvt, timer_initial: 0, timer_divide: 0, timer_start: 0, timer_fired: 0,
        }
    }

    /// The APIC ID.
    pub fn id(&self) -> u8 {
        self.id
    }

    fn software_enabled(&self) -> bool {
        self.svr & SVR_ENABLED != 0
    }

    /// Processor priority: the task priority or the class of the highest vector in service.
    fn ppr(&self) -> u8 {
        let isr_class = highest(&self.isr).unwrap_or(0) & 0xf0;
        if self.tpr & 0xf0 >= isr_class { self.tpr } else { isr_class }
    }

    /// Whether the 8259's output reaches the CPU: LINT0 unmasked in ExtINT mode.
    pub fn accepts_pic(&self) -> bool {
        self.lvt[LVT_LINT0] & (LVT_MASKED | 7 << 8) == DM_EXTINT
    }

    /// A fixed interrupt arrives (from an IPI or the timer). Dropped while the APIC is
    /// software-disabled, as KVM does, and for the reserved vectors 0-15.
    pub fn accept(&mut self, vector: u8) {
        if self.software_enabled() && vector >= 16 {
            set(&mut self.irr, vector, true);
        }
    }

    /// The vector the APIC would deliver now: the highest requested above the processor priority.
    pub fn pending(&self) -> Option<u8> {
        highest(&self.irr).filter(|v| v & 0xf0 > self.ppr() & 0xf0)
    }

    /// INTA: the pending vector moves from the IRR to the ISR.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let v = self.pending()?;
        set(&mut self.irr, v, false);
        set(&mut self.isr, v, true);
        Some(v)
    }

    /// Whether `dest` names this APIC; `from_self` when this APIC sent the IPI.
    pub fn is_target(&self, dest: Dest, from_self: bool) -> bool {
        match dest {
            Dest::Physical(id) => id == 0xff || id == self.id,
            Dest::Logical(d) => {
                let ldr = (self.ldr >> 24) as u8;
                match self.dfr >> 28 {
                    0xf => d & ldr != 0, // flat
                    _ => d == 0xff || (d >> 4 == ldr >> 4 && d & ldr & 0xf != 0), // cluster
                }
            }
            Dest::ToSelf => from_self,
            Dest::All => true,
            Dest::AllButSelf => !from_self,
        }
    }

    /// The timer's divider (TDCR: 2, 4, ..., 128, or 1).
    fn divide(&self) -> u64 {
        let d = (self.timer_divide & 3) | (self.timer_divide & 8) >> 1;
        if d == 7 { 1 } else { 2 << d }
    }

    /// Nanoseconds per period of the loaded count.
    fn period(&self) -> u64 {
        self.timer_initial as u64 * self.divide() * 1_000_000_000 / TIMER_HZ
    }

    fn periodic(&self) -> bool {
        self.lvt[LVT_TIMER] & LVT_PERIODIC != 0
    }

    fn timer_current(&self, now: u64) -> u32 {
        let period = self.period();
        if period == 0 {
            return 0;
        }
        let elapsed = now.saturating_sub(self.timer_start);
        if !self.periodic() && elapsed >= period {
            return 0;
        }
        let left = period - elapsed % period;
        (left as u128 * TIMER_HZ as u128 / 1_000_000_000 / self.divide() as u128) as u32
    }

    /// When the timer next expires (ns), if it is counting.
    pub fn next_timer(&self) -> Option<u64> {
        let period = self.period();
        (period != 0 && (self.periodic() || self.timer_fired == 0))
            .then(|| self.timer_start + (self.timer_fired + 1) * period)
    }

    /// Signals the timer's expiries up to `now` (periods missed are coalesced into one
    /// interrupt, as a busy CPU would see them).
    pub fn tick(&mut self, now: u64) {
        let Some(due) = self.next_timer() else { return };
        if now < due {
            return;
        }
        let periods = (now - self.timer_start) / self.period();
        self.timer_fired = if self.periodic() { periods } else { 1 };
        if self.lvt[LVT_TIMER] & LVT_MASKED == 0 {
            self.accept(self.lvt[LVT_TIMER] as u8);
        }
    }

    /// A 32-bit read at `offset` in the page. Unimplemented registers read as 0.
    pub fn read_reg(&mut self, offset: u32, now: u64) -> u32 {
        let word = |r: &[u32; 8], base: u32| r[((offset - base) / 0x10) as usize];
        match offset {
            reg::ID => (self.id as u32) << 24,
            reg::VERSION => VERSION,
            reg::TPR => self.tpr as u32,
            reg::APR => 0,
            reg::PPR => self.ppr() as u32,
            reg::LDR => self.ldr,
            reg::DFR => self.dfr,
            reg::SVR => self.svr,
            0x100..=0x170 if offset.is_multiple_of(0x10) => word(&self.isr, reg::ISR),
            0x200..=0x270 if offset.is_multiple_of(0x10) => word(&self.irr, reg::IRR),
            reg::ICR_LOW => self.icr_low, // delivery status always idle
            reg::ICR_HIGH => self.icr_high,
            0x320..=0x370 if offset.is_multiple_of(0x10) => self.lvt[((offset - reg::LVT) / 0x10) as usize],
            reg::TIMER_INITIAL => self.timer_initial,
            reg::TIMER_CURRENT => self.timer_current(now),
            reg::TIMER_DIVIDE => self.timer_divide,
            _ => 0, // TMR (every interrupt is edge-triggered), ESR (no errors recorded), reserved
        }
    }

    /// A 32-bit write at `offset`; an ICR write returns the IPI to route.
    pub fn write_reg(&mut self, offset: u32, v: u32, now: u64) -> Option<Ipi> {
        match offset {
            reg::ID => self.id = (v >> 24) as u8,
            reg::TPR => self.tpr = v as u8,
            reg::EOI => {
                if let Some(vec) = highest(&self.isr) {
                    set(&mut self.isr, vec, false);
                }
            }
            reg::LDR => self.ldr = v & 0xff00_0000,
            reg::DFR => self.dfr = v | 0x0fff_ffff,
            reg::SVR => {
                self.svr = v & 0x3ff;
                if !self.software_enabled() {
                    // Software-disabling masks every LVT entry (SDM 11.4.7.2).
                    self.lvt.iter_mut().for_each(|l| *l |= LVT_MASKED);
                }
            }
            reg::ESR => {}
            reg::ICR_HIGH => self.icr_high = v & 0xff00_0000,
            reg::ICR_LOW => {
                self.icr_low = v & 0x000c_cfff;
                return self.ipi();
            }
            0x320..=0x370 if offset.is_multiple_of(0x10) => {
                let i = ((offset - reg::LVT) / 0x10) as usize;
                let masked = if self.software_enabled() { 0 } else { LVT_MASKED };
                self.lvt[i] = v & LVT_WRITABLE[i] | masked;
            }
            reg::TIMER_INITIAL => {
                self.timer_initial = v;
                self.timer_start = now;
                self.timer_fired = 0;
            }
            reg::TIMER_DIVIDE => {
                // Keep the count running: restart the period from the current count.
                let current = self.timer_current(now);
                self.timer_divide = v & 0xb;
                if self.timer_initial != 0 && current != 0 {
                    let done = self.timer_initial - current;
                    self.timer_start = now.saturating_sub(done as u64 * self.divide() * 1_000_000_000 / TIMER_HZ);
                }
            }
            _ => {} // read-only and reserved registers
        }
        None
    }

    /// The IPI an ICR write sends. SMI, the INIT level de-assert (an arbitration-ID
    /// resynchronization) and reserved modes do nothing.
    fn ipi(&self) -> Option<Ipi> {
        let v = self.icr_low;
        let vector = v as u8;
        let delivery = match (v >> 8) & 7 {
            0 | 1 => Delivery::Fixed(vector),
            4 => Delivery::Nmi,
            5 if v & 1 << 14 != 0 || v & 1 << 15 == 0 => Delivery::Init,
            6 => Delivery::Startup(vector),
            _ => return None,
        };
        let target = (self.icr_high >> 24) as u8;
        let dest = match (v >> 18) & 3 {
            0 if v & 1 << 11 != 0 => Dest::Logical(target),
            0 => Dest::Physical(target),
            1 => Dest::ToSelf,
            2 => Dest::All,
            _ => Dest::AllButSelf,
        };
        Some(Ipi { delivery, dest })
    }
}

/// The page as the guest sees it: aligned 32-bit accesses reach the registers, any other access
/// hits nothing (reads all ones, writes dropped).
impl BusDevice for Lapic {
    fn claims(&self, offset: u64, len: usize, _write: bool) -> bool {
        len == 4 && offset.is_multiple_of(4)
    }

    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8], now: u64) {
        data.copy_from_slice(&self.read_reg(offset as u32, now).to_le_bytes());
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8], now: u64) -> Option<Effect> {
        let v = u32::from_le_bytes(data.try_into().unwrap_or_default());
        self.write_reg(offset as u32, v, now).map(Effect::Ipi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(id: u8) -> Lapic {
        let mut a = Lapic::new(id, id == 0);
        a.write_reg(reg::SVR, 0x1ff, 0);
        a
    }

    #[test]
    fn identity_and_reset_state() {
        let mut a = Lapic::new(1, false);
        assert_eq!(a.read_reg(reg::ID, 0), 1 << 24);
        assert_eq!(a.read_reg(reg::VERSION, 0), 0x5_0014);
        assert_eq!(a.read_reg(reg::DFR, 0), !0);
        assert_eq!(a.read_reg(reg::SVR, 0), 0xff);
        assert_eq!(a.read_reg(reg::LVT + 0x30, 0), LVT_MASKED, "an AP's LINT0 is masked");
        assert!(!a.accepts_pic());
        assert!(Lapic::new(0, true).accepts_pic(), "the BSP is in virtual-wire mode");
        a.accept(0x40);
        assert_eq!(a.pending(), None, "software-disabled: fixed interrupts dropped");
    }

    #[test]
    fn priority_isr_and_eoi() {
        let mut a = enabled(0);
        a.accept(0x31);
        a.accept(0x61);
        a.accept(0x65);
        assert_eq!(a.acknowledge(), Some(0x65));
        assert_eq!(a.read_reg(reg::ISR + 0x30, 0), 1 << 5);
        assert_eq!(a.read_reg(reg::PPR, 0), 0x60);
        assert_eq!(a.pending(), None, "0x61 is in the class in service");
        a.write_reg(reg::EOI, 0, 0);
        assert_eq!(a.acknowledge(), Some(0x61));
        a.write_reg(reg::EOI, 0, 0);
        a.write_reg(reg::TPR, 0x40, 0);
        assert_eq!(a.pending(), None, "0x31 is below the task priority");
        a.write_reg(reg::TPR, 0x10, 0);
        assert_eq!(a.acknowledge(), Some(0x31));
        a.accept(5);
        assert_eq!(a.read_reg(reg::IRR, 0), 0, "vectors 0-15 are not accepted");
    }

    #[test]
    fn lvt_masked_while_software_disabled() {
        let mut a = enabled(0);
        a.write_reg(reg::LVT + 0x30, 0x700, 0);
        assert!(a.accepts_pic());
        a.write_reg(reg::SVR, 0xff, 0);
        assert!(!a.accepts_pic(), "disabling masks LINT0");
        a.write_reg(reg::LVT + 0x30, 0x700, 0);
        assert!(!a.accepts_pic(), "and the mask cannot be cleared until enabled");
    }

    #[test]
    fn icr_sends_ipis() {
        let mut a = enabled(0);
        a.write_reg(reg::ICR_HIGH, 1 << 24, 0);
        assert_eq!(a.write_reg(reg::ICR_LOW, 0xc500, 0), Some(Ipi { delivery: Delivery::Init, dest: Dest::Physical(1) }));
        assert_eq!(a.write_reg(reg::ICR_LOW, 0x8500, 0), None, "INIT de-assert");
        assert_eq!(a.write_reg(reg::ICR_LOW, 0x0608, 0), Some(Ipi { delivery: Delivery::Startup(8), dest: Dest::Physical(1) }));
        assert_eq!(a.write_reg(reg::ICR_LOW, 0xc00fd, 0), Some(Ipi { delivery: Delivery::Fixed(0xfd), dest: Dest::AllButSelf }));
        assert_eq!(a.write_reg(reg::ICR_LOW, 0x40400, 0), Some(Ipi { delivery: Delivery::Nmi, dest: Dest::ToSelf }));
        assert_eq!(a.write_reg(reg::ICR_LOW, 0x8f2, 0), Some(Ipi { delivery: Delivery::Fixed(0xf2), dest: Dest::Logical(1) }));
        assert_eq!(a.read_reg(reg::ICR_LOW, 0) & 1 << 12, 0, "delivery status idle");
    }

    #[test]
    fn destinations() {
        let mut b = enabled(1);
        assert!(b.is_target(Dest::Physical(1), false) && b.is_target(Dest::Physical(0xff), false));
        assert!(!b.is_target(Dest::Physical(0), false));
        b.write_reg(reg::LDR, 0x0200_0000, 0);
        assert!(b.is_target(Dest::Logical(0x03), false) && !b.is_target(Dest::Logical(0x01), false));
        b.write_reg(reg::DFR, 0x0fff_ffff, 0); // cluster model
        b.write_reg(reg::LDR, 0x2100_0000, 0);
        assert!(b.is_target(Dest::Logical(0x23), false) && !b.is_target(Dest::Logical(0x13), false));
        assert!(b.is_target(Dest::AllButSelf, false) && !b.is_target(Dest::AllButSelf, true));
        assert!(b.is_target(Dest::ToSelf, true) && !b.is_target(Dest::ToSelf, false));
    }

    #[test]
    fn one_shot_timer() {
        let mut a = enabled(0);
        a.write_reg(reg::LVT, 0xec, 0);
        a.write_reg(reg::TIMER_DIVIDE, 0x3, 0); // divide by 16
        a.write_reg(reg::TIMER_INITIAL, 1000, 100);
        assert_eq!(a.next_timer(), Some(100 + 16_000));
        assert_eq!(a.read_reg(reg::TIMER_CURRENT, 100 + 1600), 900);
        a.tick(100 + 15_999);
        assert_eq!(a.pending(), None);
        a.tick(100 + 16_000);
        assert_eq!(a.pending(), Some(0xec));
        assert_eq!((a.next_timer(), a.read_reg(reg::TIMER_CURRENT, 20_000)), (None, 0));
    }

    #[test]
    fn periodic_timer_and_mask() {
        let mut a = enabled(0);
        a.write_reg(reg::LVT, 0x2_00ec, 0);
        a.write_reg(reg::TIMER_DIVIDE, 0xb, 0); // divide by 1
        a.write_reg(reg::TIMER_INITIAL, 100, 0);
        a.tick(350);
        assert_eq!(a.acknowledge(), Some(0xec));
        a.write_reg(reg::EOI, 0, 0);
        assert_eq!(a.next_timer(), Some(400), "missed periods coalesced");
        assert_eq!(a.read_reg(reg::TIMER_CURRENT, 350), 50);
        a.write_reg(reg::LVT, 0x3_00ec, 0);
        a.tick(400);
        assert_eq!(a.pending(), None, "masked: counts, does not interrupt");
        assert_eq!(a.next_timer(), Some(500));
    }
}
