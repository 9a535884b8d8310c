// SPDX-License-Identifier: GPL-2.0

//! One local APIC as KVM's in-kernel LAPIC models it (`arch/x86/kvm/lapic.c`, `lapic.h`,
//! `arch/x86/include/asm/apicdef.h`): the 1 KiB register page in KVM's layout (so
//! `KVM_GET_LAPIC`/`KVM_SET_LAPIC` are a copy plus KVM's fixups), xAPIC MMIO and x2APIC MSR
//! accesses with KVM's masks and faults, IA32_APIC_BASE transitions, IRR/ISR/TMR, TPR/PPR,
//! EOI, ICR and MSI decoding, destination matching and the APIC timer's arithmetic.
//!
//! Pure: what needs the rest of the VM (other vCPUs, hrtimers, event injection, a userspace
//! I/O APIC) is returned as an [`Effect`] or [`Accepted`] for the caller to carry out. KVM's
//! caches (`isr_count`, `highest_isr_cache`, `irr_pending`) are not kept: the bitmaps are
//! scanned, which gives the same answers. The register page always holds the current PPR
//! (KVM recomputes it on every path that reads it).
//!
//! Left to the caller (they need the VM or the host): the APIC map and lowest-priority
//! arbitration across vCPUs, hrtimers and the TSC deadline, INIT/SIPI/NMI/SMI injection,
//! the split irqchip's `ioapic_handled_vectors`, APICv, PV EOI, TPR access reporting,
//! Hyper-V SynIC, and the LVTPC auto-mask for Intel guests. ICR is KVM-on-VMX's single
//! 64-bit register in x2APIC mode.

use super::arch::apic_base;

/// Register offsets in the APIC page (`apicdef.h`). The x2APIC MSR of a register is
/// `0x800 + offset / 16` ([`x2apic_msr`]).
pub mod reg {
    /// Local APIC ID (xAPIC: bits 31:24; x2APIC: the 32-bit ID).
    pub const ID: u32 = 0x20;
    /// Version and number of LVT entries.
    pub const LVR: u32 = 0x30;
    /// Task priority.
    pub const TASKPRI: u32 = 0x80;
    /// Arbitration priority (reads 0 in KVM; absent in x2APIC).
    pub const ARBPRI: u32 = 0x90;
    /// Processor priority (read-only, derived from TPR and ISR).
    pub const PROCPRI: u32 = 0xa0;
    /// End of interrupt (write-only).
    pub const EOI: u32 = 0xb0;
    /// Remote read (not implemented by KVM).
    pub const RRR: u32 = 0xc0;
    /// Logical destination (read-only in x2APIC, derived from the ID).
    pub const LDR: u32 = 0xd0;
    /// Destination format (absent in x2APIC).
    pub const DFR: u32 = 0xe0;
    /// Spurious-interrupt vector and software enable.
    pub const SPIV: u32 = 0xf0;
    /// In-service register: 8 words of 32 vectors at 16-byte stride.
    pub const ISR: u32 = 0x100;
    /// Trigger-mode register (1 = level), same layout.
    pub const TMR: u32 = 0x180;
    /// Interrupt-request register, same layout.
    pub const IRR: u32 = 0x200;
    /// Error status (never set by KVM).
    pub const ESR: u32 = 0x280;
    /// LVT CMCI (absent: KVM's 6 LVT entries without MCG_CMCI_P).
    pub const LVTCMCI: u32 = 0x2f0;
    /// Interrupt command, low half (x2APIC: the whole 64-bit ICR at this offset).
    pub const ICR: u32 = 0x300;
    /// Interrupt command, high half (xAPIC only).
    pub const ICR2: u32 = 0x310;
    /// LVT timer.
    pub const LVTT: u32 = 0x320;
    /// LVT thermal monitor.
    pub const LVTTHMR: u32 = 0x330;
    /// LVT performance counter.
    pub const LVTPC: u32 = 0x340;
    /// LVT LINT0.
    pub const LVT0: u32 = 0x350;
    /// LVT LINT1.
    pub const LVT1: u32 = 0x360;
    /// LVT error.
    pub const LVTERR: u32 = 0x370;
    /// Timer initial count.
    pub const TMICT: u32 = 0x380;
    /// Timer current count (read-only, computed from the running timer).
    pub const TMCCT: u32 = 0x390;
    /// Timer divide configuration.
    pub const TDCR: u32 = 0x3e0;
    /// Self IPI (x2APIC only, write-only).
    pub const SELF_IPI: u32 = 0x3f0;
}

/// The LVT registers KVM has (`LVT_TIMER` .. `LVT_CMCI`), in index order. An APIC has the
/// first six, and CMCI too once its vCPU's IA32_MCG_CAP has MCG_CMCI_P
/// (`kvm_apic_calc_nr_lvt_entries`).
pub const LVTS: [u32; 7] = [reg::LVTT, reg::LVTTHMR, reg::LVTPC, reg::LVT0, reg::LVT1, reg::LVTERR, reg::LVTCMCI];
/// LVT entries without CMCI.
const LVTS_WITHOUT_CMCI: usize = 6;

/// LVT bits (`apicdef.h`).
pub mod lvt {
    /// The vector.
    pub const VECTOR: u32 = 0xff;
    /// Delivery mode (bits 10:8).
    pub const MODE_MASK: u32 = 0x700;
    /// Delivery mode NMI.
    pub const MODE_NMI: u32 = 0x400;
    /// Delivery mode ExtINT.
    pub const MODE_EXTINT: u32 = 0x700;
    /// Delivery status (send pending).
    pub const SEND_PENDING: u32 = 1 << 12;
    /// Input pin polarity (LINT0/1).
    pub const INPUT_POLARITY: u32 = 1 << 13;
    /// Remote IRR (LINT0/1).
    pub const REMOTE_IRR: u32 = 1 << 14;
    /// Level triggered (LINT0/1).
    pub const LEVEL_TRIGGER: u32 = 1 << 15;
    /// Masked.
    pub const MASKED: u32 = 1 << 16;
    /// Timer mode field (bits 18:17).
    pub const TIMER_MODE: u32 = 3 << 17;
    /// Timer mode periodic.
    pub const TIMER_PERIODIC: u32 = 1 << 17;
    /// Timer mode TSC-deadline.
    pub const TIMER_TSCDEADLINE: u32 = 2 << 17;
    /// KVM's `LVT_MASK`: the bits every LVT keeps.
    pub const LVT_MASK: u32 = MASKED | SEND_PENDING | VECTOR;
    /// KVM's `LINT_MASK`: LINT0/LINT1 also keep mode, polarity, remote IRR and trigger.
    pub const LINT_MASK: u32 = LVT_MASK | MODE_MASK | INPUT_POLARITY | REMOTE_IRR | LEVEL_TRIGGER;
    /// KVM's `apic_lvt_mask[]`, by index of [`super::LVTS`] (the timer's mode bits are
    /// added from the guest's CPUID at write time).
    pub const WRITE_MASK: [u32; 7] =
        [LVT_MASK, LVT_MASK | MODE_MASK, LVT_MASK | MODE_MASK, LINT_MASK, LINT_MASK, LVT_MASK, LVT_MASK | MODE_MASK];
}

/// SPIV bits.
pub mod spiv {
    /// APIC software enable.
    pub const ENABLED: u32 = 1 << 8;
    /// Focus processor checking disabled.
    pub const FOCUS_DISABLED: u32 = 1 << 9;
    /// Suppress EOI broadcast (directed EOI), writable only when LVR advertises it.
    pub const DIRECTED_EOI: u32 = 1 << 12;
}

/// ICR bits (`apicdef.h`, `lapic.h`).
pub mod icr {
    /// The vector.
    pub const VECTOR: u32 = 0xff;
    /// Delivery mode (bits 10:8).
    pub const MODE_MASK: u32 = 0x700;
    /// Logical destination mode.
    pub const DEST_LOGICAL: u32 = 1 << 11;
    /// Delivery status; KVM delivers at once so it always reads 0.
    pub const BUSY: u32 = 1 << 12;
    /// Level assert.
    pub const ASSERT: u32 = 1 << 14;
    /// Level triggered.
    pub const LEVEL_TRIGGER: u32 = 1 << 15;
    /// Destination shorthand (bits 19:18).
    pub const SHORT_MASK: u32 = 0xc0000;
    /// Shorthand: self.
    pub const DEST_SELF: u32 = 0x40000;
    /// Shorthand: all including self.
    pub const DEST_ALLINC: u32 = 0x80000;
    /// Shorthand: all excluding self.
    pub const DEST_ALLBUT: u32 = 0xc0000;
    /// x2APIC ICR bits that #GP (KVM's `X2APIC_ICR_RESERVED_BITS`: 31:20, 17:16, 13).
    pub const X2APIC_RESERVED: u64 = 0xfff0_0000 | 0x3_0000 | 1 << 13;
}

/// KVM's `APIC_VERSION` (Xeon/Pentium 4 integrated APIC).
pub const VERSION: u32 = 0x14;
/// LVR: EOI broadcast suppression supported.
pub const LVR_DIRECTED_EOI: u32 = 1 << 24;
/// The xAPIC page's default physical address.
pub const DEFAULT_BASE: u64 = 0xfee0_0000;
/// The first x2APIC MSR (`APIC_BASE_MSR`); KVM routes `0x800..=0x8ff` to the APIC.
pub const X2APIC_MSR_BASE: u32 = 0x800;
/// The last x2APIC MSR.
pub const X2APIC_MSR_LAST: u32 = 0x8ff;
/// Physical/logical broadcast in xAPIC mode.
pub const APIC_BROADCAST: u32 = 0xff;
/// Broadcast in x2APIC mode.
pub const X2APIC_BROADCAST: u32 = 0xffff_ffff;
/// DFR: flat model.
pub const DFR_FLAT: u32 = 0xffff_ffff;
/// DFR: cluster model.
pub const DFR_CLUSTER: u32 = 0x0fff_ffff;
/// KVM's `APIC_BUS_CYCLE_NS_DEFAULT`: a 1 GHz APIC bus.
pub const APIC_BUS_CYCLE_NS_DEFAULT: u64 = 1;

/// Whether a VM's APIC bus may tick every `ns` nanoseconds (`KVM_CAP_X86_APIC_BUS_CYCLES_NS`):
/// not 0, and the longest timer period (TMICT 2^32-1, divided by 128) fits in 64 bits of
/// nanoseconds, as KVM checks.
pub const fn valid_bus_cycle_ns(ns: u64) -> bool {
    /// TMICT's largest value times the largest divider (128).
    const LONGEST_COUNT: u64 = (u32::MAX as u64) << 7;
    ns != 0 && LONGEST_COUNT.checked_mul(ns).is_some()
}
/// KVM's shortest periodic timer (`min_timer_period_us` = 200, a module parameter).
pub const MIN_TIMER_PERIOD_NS: u64 = 200_000;
/// `cpuid_query_maxphyaddr` without leaf 0x80000008 (the value before `KVM_SET_CPUID2`).
pub const DEFAULT_MAXPHYADDR: u8 = 36;

/// The x2APIC MSR of register `offset` (KVM's `X2APIC_MSR`).
pub const fn x2apic_msr(offset: u32) -> u32 {
    X2APIC_MSR_BASE | (offset >> 4 & 0xff)
}

/// The LDR of an x2APIC with ID `id`: cluster in 31:16, one bit of 16 in 15:0
/// (`kvm_apic_calc_x2apic_ldr`).
pub const fn x2apic_ldr(id: u32) -> u32 {
    (id >> 4) << 16 | 1 << (id & 0xf)
}

/// An access the guest gets #GP for (an x2APIC MSR or IA32_APIC_BASE write KVM refuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault;

/// `KVM_SET_LAPIC` refused with `-EINVAL`: an x2APIC ID other than the vCPU's with
/// `KVM_X2APIC_API_USE_32BIT_IDS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidState;

/// The APIC's mode from IA32_APIC_BASE (KVM's `enum lapic_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// EN = 0, EXTD = 0: hardware disabled.
    Disabled,
    /// EN = 0, EXTD = 1: not allowed.
    Invalid,
    /// xAPIC (MMIO).
    XApic,
    /// x2APIC (MSRs).
    X2Apic,
}

impl Mode {
    /// The mode an IA32_APIC_BASE value selects (`kvm_apic_mode`).
    pub const fn of(base: u64) -> Self {
        match (base & apic_base::ENABLE != 0, base & apic_base::EXTD != 0) {
            (false, false) => Self::Disabled,
            (false, true) => Self::Invalid,
            (true, false) => Self::XApic,
            (true, true) => Self::X2Apic,
        }
    }
}

/// The APIC timer's mode (LVTT bits 18:17 within the guest's `timer_mode_mask`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    /// Counts TMICT down once.
    OneShot,
    /// Reloads TMICT at 0.
    Periodic,
    /// Fires at IA32_TSC_DEADLINE; TMICT/TMCCT ignored.
    TscDeadline,
    /// Mode 3: KVM runs no timer in it.
    Reserved,
}

impl TimerMode {
    /// The mode an LVTT value selects (after KVM's mask).
    pub const fn from_lvtt(lvtt: u32) -> Self {
        match lvtt & lvt::TIMER_MODE {
            0 => Self::OneShot,
            lvt::TIMER_PERIODIC => Self::Periodic,
            lvt::TIMER_TSCDEADLINE => Self::TscDeadline,
            _ => Self::Reserved,
        }
    }
}

/// The divisor TDCR selects: 1 to 128 (`update_divide_count`).
pub const fn divide_count(tdcr: u32) -> u32 {
    let v = tdcr & 0xf;
    // Bits 3 and 1:0 form a 3-bit exponent minus one; 0b111 wraps to divide by 1.
    let exp = ((v & 3) | (v & 8) >> 1).wrapping_add(1) & 7;
    1 << exp
}

/// Nanoseconds of `count` timer ticks (`tmict_to_ns`), saturating for a huge bus cycle.
pub const fn count_to_ns(count: u32, divide: u32, bus_cycle_ns: u64) -> u64 {
    (count as u64).saturating_mul(bus_cycle_ns).saturating_mul(divide as u64)
}

/// The timer period for an initial count (`tmict_to_ns` then
/// `limit_periodic_timer_frequency`: a periodic timer runs at most every 200 us). 0: no timer.
pub const fn period_ns(tmict: u32, divide: u32, bus_cycle_ns: u64, mode: TimerMode) -> u64 {
    let p = count_to_ns(tmict, divide, bus_cycle_ns);
    if matches!(mode, TimerMode::Periodic) && p != 0 && p < MIN_TIMER_PERIOD_NS {
        MIN_TIMER_PERIOD_NS
    } else {
        p
    }
}

/// TMCCT from the time left to the timer's target (`apic_get_tmcct`): 0 without an initial
/// count or period, else the remaining time modulo the period in ticks. A negative
/// `remaining_ns` (target passed) counts as 0.
pub fn tmcct(tmict: u32, period_ns: u64, remaining_ns: i64, divide: u32, bus_cycle_ns: u64) -> u32 {
    if tmict == 0 || period_ns == 0 {
        return 0;
    }
    let remaining = u64::try_from(remaining_ns).unwrap_or(0);
    let ns = remaining.checked_rem(period_ns).unwrap_or(0);
    let tick = bus_cycle_ns.saturating_mul(u64::from(divide));
    // The quotient fits: ns < period <= tmict * tick (or 200 us for a short periodic timer).
    ns.checked_div(tick).map_or(0, |c| u32::try_from(c).unwrap_or(u32::MAX))
}

/// Time left to the target `elapsed_ns` after the timer started, as KVM's target moves: a
/// one-shot target stays, a periodic one advances by a period at each expiry.
pub fn remaining_ns(mode: TimerMode, period_ns: u64, elapsed_ns: u64) -> i64 {
    let left = match mode {
        TimerMode::OneShot => period_ns.saturating_sub(elapsed_ns),
        TimerMode::Periodic => match elapsed_ns.checked_rem(period_ns) {
            Some(into) => period_ns.saturating_sub(into),
            None => 0,
        },
        TimerMode::TscDeadline | TimerMode::Reserved => 0,
    };
    i64::try_from(left).unwrap_or(i64::MAX)
}

/// TMCCT `elapsed_ns` after TMICT was written: [`tmcct`] of [`remaining_ns`]; 0 in
/// TSC-deadline and reserved modes (KVM runs no count-down there).
pub fn current_count(mode: TimerMode, tmict: u32, divide: u32, bus_cycle_ns: u64, elapsed_ns: u64) -> u32 {
    let period = period_ns(tmict, divide, bus_cycle_ns, mode);
    tmcct(tmict, period, remaining_ns(mode, period, elapsed_ns), divide, bus_cycle_ns)
}

/// The first expiry after `KVM_SET_LAPIC` restored TMCCT = `count` (`set_target_expiration`
/// with `APIC_TMCCT`): the restored count's time, a full period if it is 0 (periodic) or
/// above the period, 0 (expire now) for a one-shot count of 0.
pub const fn restore_deadline_ns(mode: TimerMode, count: u32, period_ns: u64, divide: u32, bus_cycle_ns: u64) -> u64 {
    let d = count_to_ns(count, divide, bus_cycle_ns);
    if d == 0 {
        if matches!(mode, TimerMode::Periodic) { period_ns } else { 0 }
    } else if d > period_ns {
        period_ns
    } else {
        d
    }
}

/// Nanoseconds for `ticks` of a TSC running at `tsc_khz` (a TSC deadline's distance),
/// saturating; no 128-bit division (the kernel has none).
pub const fn tsc_ticks_to_ns(ticks: u64, tsc_khz: u32) -> u64 {
    let khz = tsc_khz as u64;
    let (Some(whole), Some(part)) = (ticks.checked_div(khz), ticks.checked_rem(khz)) else { return 0 };
    // part < khz < 2^32, so part * 10^6 < 2^52.
    let frac = match (part.saturating_mul(1_000_000)).checked_div(khz) {
        Some(f) => f,
        None => 0,
    };
    whole.saturating_mul(1_000_000).saturating_add(frac)
}

/// The time left to a running timer once TDCR changed the divisor from `old` to `new`
/// (`update_target_expiration`: it scales with the divisor).
pub const fn rescale_ns(left_ns: u64, old: u32, new: u32) -> u64 {
    match left_ns.saturating_mul(new as u64).checked_div(old as u64) {
        Some(v) => v,
        None => left_ns,
    }
}

/// An interrupt's delivery mode (ICR, MSI data, LVT bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Fixed.
    Fixed,
    /// Lowest priority.
    LowestPriority,
    /// SMI.
    Smi,
    /// Remote read (KVM: wakes a PV-halted vCPU).
    RemoteRead,
    /// NMI.
    Nmi,
    /// INIT.
    Init,
    /// Start-up (SIPI).
    StartUp,
    /// ExtINT (from the PIC).
    ExtInt,
}

impl DeliveryMode {
    /// The mode in bits 2:0 of `v`.
    pub const fn from_bits(v: u32) -> Self {
        match v & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            3 => Self::RemoteRead,
            4 => Self::Nmi,
            5 => Self::Init,
            6 => Self::StartUp,
            _ => Self::ExtInt,
        }
    }
}

/// ICR destination shorthand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    /// The destination field chooses.
    None,
    /// The sender only.
    ToSelf,
    /// Every APIC.
    AllIncludingSelf,
    /// Every APIC but the sender.
    AllExcludingSelf,
}

/// An interrupt on its way to local APICs (KVM's `struct kvm_lapic_irq`), from an ICR write,
/// a self IPI or an MSI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irq {
    /// Vector.
    pub vector: u8,
    /// Delivery mode.
    pub delivery: DeliveryMode,
    /// Logical (else physical) destination mode.
    pub logical: bool,
    /// Level asserted (ICR bit 14; MSIs always assert).
    pub level: bool,
    /// Level (else edge) triggered.
    pub trigger_level: bool,
    /// Destination shorthand.
    pub shorthand: Shorthand,
    /// Destination: 8 bits in xAPIC format, 32 in x2APIC.
    pub dest: u32,
    /// MSI redirection hint: delivered as lowest priority.
    pub redirect_hint: bool,
}

impl Irq {
    /// Decodes an ICR (`kvm_icr_to_lapic_irq`): the destination is ICR2 bits 31:24 in xAPIC
    /// mode and all of the high half in x2APIC mode.
    pub const fn from_icr(low: u32, high: u32, x2apic: bool) -> Self {
        Self {
            vector: (low & icr::VECTOR) as u8,
            delivery: DeliveryMode::from_bits(low >> 8),
            logical: low & icr::DEST_LOGICAL != 0,
            level: low & icr::ASSERT != 0,
            trigger_level: low & icr::LEVEL_TRIGGER != 0,
            shorthand: match low & icr::SHORT_MASK {
                0 => Shorthand::None,
                icr::DEST_SELF => Shorthand::ToSelf,
                icr::DEST_ALLINC => Shorthand::AllIncludingSelf,
                _ => Shorthand::AllExcludingSelf,
            },
            dest: if x2apic { high } else { high >> 24 },
            redirect_hint: false,
        }
    }

    /// Decodes an MSI as KVM routes it (`kvm_msi_to_lapic_irq`): destination in address bits
    /// 19:12, plus address_hi bits 31:8 as destination bits 31:8 with
    /// `KVM_X2APIC_API_USE_32BIT_IDS`; logical mode and redirection hint in address bits 2
    /// and 3; vector, delivery mode and trigger in data bits 7:0, 10:8 and 15; always
    /// asserted. `None`: the route is invalid (`kvm_msi_route_invalid`: address_hi bits 7:0
    /// set with 32-bit IDs, `-EINVAL`). KVM checks neither the 0xfee base nor the
    /// extended destination ID bits (see [`msi_ext_dest_id`]).
    pub const fn from_msi(address_lo: u32, address_hi: u32, data: u32, x2apic_format: bool) -> Option<Self> {
        if x2apic_format && address_hi & 0xff != 0 {
            return None;
        }
        let mut dest = address_lo >> 12 & 0xff;
        if x2apic_format {
            dest |= address_hi & 0xffff_ff00;
        }
        Some(Self {
            vector: (data & 0xff) as u8,
            delivery: DeliveryMode::from_bits(data >> 8),
            logical: address_lo & 1 << 2 != 0,
            level: true,
            trigger_level: data & 1 << 15 != 0,
            shorthand: Shorthand::None,
            dest,
            redirect_hint: address_lo & 1 << 3 != 0,
        })
    }

    /// Delivered to one of the matching APICs (`kvm_lowest_prio_delivery`).
    pub const fn lowest_priority(&self) -> bool {
        matches!(self.delivery, DeliveryMode::LowestPriority) || self.redirect_hint
    }

    /// What the interrupt asks of an APIC it reaches, before that APIC's state has a say
    /// (`__apic_accept_irq`'s switch): fixed and lowest priority go to IRR (a level-triggered
    /// deassert is dropped); INIT counts if edge or asserted; ExtINT is dropped (the PIC
    /// path takes it).
    pub const fn request(&self) -> Request {
        match self.delivery {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                if self.trigger_level && !self.level {
                    Request::None
                } else {
                    Request::Fixed { vector: self.vector, level_triggered: self.trigger_level }
                }
            }
            DeliveryMode::RemoteRead => Request::RemoteRead,
            DeliveryMode::Smi => Request::Smi,
            DeliveryMode::Nmi => Request::Nmi,
            DeliveryMode::Init if !self.trigger_level || self.level => Request::Init,
            DeliveryMode::Init | DeliveryMode::ExtInt => Request::None,
            DeliveryMode::StartUp => Request::Sipi(self.vector),
        }
    }
}

/// What an interrupt asks of an APIC it reaches ([`Irq::request`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Set the vector in IRR (and TMR as the trigger mode says).
    Fixed {
        /// Vector.
        vector: u8,
        /// Level triggered.
        level_triggered: bool,
    },
    /// An NMI.
    Nmi,
    /// INIT.
    Init,
    /// A SIPI with this vector.
    Sipi(u8),
    /// An SMI.
    Smi,
    /// Remote read.
    RemoteRead,
    /// Nothing.
    None,
}

/// The 15-bit destination of an MSI in the extended destination ID format a guest uses with
/// `KVM_FEATURE_MSI_EXT_DEST_ID` (Linux's `virt_destid_8_14`): bits 7:0 from address bits
/// 19:12, bits 14:8 from address bits 11:5. KVM itself never decodes bits 11:5: userspace
/// rewrites such MSIs into address_hi (32-bit IDs) before they reach KVM's routes.
pub const fn msi_ext_dest_id(address_lo: u32) -> u32 {
    (address_lo >> 12 & 0xff) | (address_lo >> 5 & 0x7f) << 8
}

/// Which of a lowest-priority interrupt's `n` candidate APICs gets it with KVM's vector
/// hashing (`kvm_vector_to_index`: the (vector mod n)-th); `None` without candidates.
pub const fn vector_hash_index(vector: u8, n: u32) -> Option<u32> {
    (vector as u32).checked_rem(n)
}

/// Who sent an interrupt, as destination matching sees it (KVM's `source` argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An I/O APIC or MSI (KVM: no source APIC).
    Device,
    /// An IPI from this APIC.
    ThisApic,
    /// An IPI from another APIC.
    OtherApic,
}

/// An EOI that cleared an ISR bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eoi {
    /// The vector whose ISR bit was cleared.
    pub vector: u8,
    /// TMR had the vector as level triggered (what an in-kernel I/O APIC gets as the
    /// trigger mode; a split irqchip's EOI exit uses the caller's `ioapic_handled_vectors`).
    pub level_triggered: bool,
    /// SPIV's directed-EOI bit is set: whether that suppresses the broadcast to the I/O
    /// APIC is the VM's choice (`kvm_lapic_suppress_eoi_broadcast`).
    pub directed: bool,
}

/// What the caller does after an APIC write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing.
    None,
    /// An EOI: tell the I/O APIC, re-evaluate pending interrupts (`KVM_REQ_EVENT`).
    Eoi(Eoi),
    /// Send this IPI (ICR or SELF_IPI write); ICR's busy bit is already clear.
    SendIpi(Irq),
    /// TPR written and PPR recomputed; `event`: PPR fell and an interrupt became deliverable
    /// (`KVM_REQ_EVENT`), else only the TPR threshold needs updating.
    Tpr {
        /// Re-evaluate pending interrupts.
        event: bool,
    },
    /// ID, LDR or DFR written: destination lookups (KVM's APIC map) are stale.
    MapChanged,
    /// SPIV written. `changed`: the software enable flipped (destination lookups stale).
    /// Disabled: every LVT is now masked and pending timer ticks are dropped.
    Spiv {
        /// The APIC is software enabled.
        enabled: bool,
        /// The software enable changed.
        changed: bool,
    },
    /// TMICT written outside TSC-deadline mode: cancel the timer, drop pending ticks and
    /// start it from the new count (`start_apic_timer`); a period of 0 leaves it stopped.
    TimerStart,
    /// TDCR changed the divisor: a running timer's remaining time scales by `new / old`
    /// and it restarts (`update_target_expiration`).
    TimerDivide {
        /// Divisor before.
        old: u32,
        /// Divisor now.
        new: u32,
    },
    /// LVTT changed the timer mode (`apic_update_lvtt`). `cancel`: into or out of
    /// TSC-deadline mode: TMICT is now 0; cancel the timer, forget period and deadline.
    TimerMode {
        /// Mode before.
        old: TimerMode,
        /// Mode now.
        new: TimerMode,
        /// Cancel the timer.
        cancel: bool,
    },
    /// IA32_APIC_BASE changed from `old`: MMIO base, MMIO/MSR interception and destination
    /// lookups may need updating.
    ApicBase {
        /// The previous value.
        old: u64,
    },
}

/// What accepting an interrupt did (`__apic_accept_irq`); all but `Fixed` and `Dropped`
/// are the caller's to carry out on its vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Discarded (KVM returns 0).
    Dropped,
    /// Set in IRR (fixed or lowest priority); kick the vCPU.
    Fixed,
    /// Inject an SMI.
    Smi,
    /// Inject an NMI.
    Nmi,
    /// Latch INIT (replacing a pending SIPI).
    Init,
    /// Latch a SIPI with this vector.
    Sipi(u8),
    /// Remote read: KVM marks the vCPU PV-unhalted and kicks it.
    RemoteRead,
}

/// Per-vCPU settings from the guest's CPUID (applied by KVM after `KVM_SET_CPUID2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// CPUID.1:ECX.x2APIC: IA32_APIC_BASE.EXTD may be set.
    pub x2apic: bool,
    /// CPUID.1:ECX.TSC_DEADLINE: LVTT mode bits 18:17 (else bit 17 only).
    pub tsc_deadline: bool,
    /// Advertise directed EOI in LVR (KVM: x2APIC in CPUID and the VM's suppress-EOI
    /// broadcast mode allows it).
    pub directed_eoi: bool,
    /// Guest MAXPHYADDR: IA32_APIC_BASE bits from here up are reserved.
    pub maxphyaddr: u8,
}

/// The readable registers, one bit per 16-byte slot (`kvm_lapic_readable_reg_mask`).
const fn readable_mask(x2apic: bool, cmci: bool) -> u64 {
    const fn bit(r: u32) -> u64 {
        1 << (r >> 4)
    }
    let mut m = bit(reg::ID) | bit(reg::LVR) | bit(reg::TASKPRI) | bit(reg::PROCPRI)
        | bit(reg::LDR) | bit(reg::SPIV) | 0xff << (reg::ISR >> 4) | 0xff << (reg::TMR >> 4)
        | 0xff << (reg::IRR >> 4) | bit(reg::ESR) | bit(reg::ICR) | bit(reg::LVTT)
        | bit(reg::LVTTHMR) | bit(reg::LVTPC) | bit(reg::LVT0) | bit(reg::LVT1)
        | bit(reg::LVTERR) | bit(reg::TMICT) | bit(reg::TMCCT) | bit(reg::TDCR);
    if !x2apic {
        m |= bit(reg::ARBPRI) | bit(reg::DFR) | bit(reg::ICR2);
    }
    if cmci {
        m |= bit(reg::LVTCMCI);
    }
    m
}

/// Whether an APIC takes a PIC interrupt (ExtINT), from its hardware enable and LVT0: disabled,
/// or LVT0 unmasked in ExtINT mode (`kvm_apic_accept_pic_intr`).
pub const fn accepts_extint(hw_enabled: bool, lvt0: u32) -> bool {
    !hw_enabled || lvt0 & lvt::MASKED == 0 && lvt0 & lvt::MODE_MASK == lvt::MODE_EXTINT
}

/// Whether an LVT value is in NMI mode and unmasked (`apic_lvt_nmi_mode`).
const fn lvt_nmi_mode(v: u32) -> bool {
    v & (lvt::MODE_MASK | lvt::MASKED) == lvt::MODE_NMI
}

/// The register of `vector` in the bitmap at `base` (ISR, TMR, IRR).
const fn vector_reg(base: u32, vector: u8) -> u32 {
    base | ((vector as u32) >> 5) << 4
}

/// `vector`'s bit in its register.
const fn vector_bit(vector: u8) -> u32 {
    1 << (vector & 31)
}

/// `highest_irr` if its class is above `ppr` (`apic_has_interrupt_for_ppr`'s test).
fn above_ppr(highest_irr: Option<u8>, ppr: u32) -> Option<u8> {
    highest_irr.filter(|&v| u32::from(v) & 0xf0 > ppr)
}

/// An APIC's addressing state (what KVM's APIC map is built from): enough to decide whether
/// an interrupt is for it, kept apart from the APIC so that senders on other vCPUs can match
/// destinations without the target's lock. It packs into 64 bits ([`Address::pack`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    /// The vCPU ID (the x2APIC ID).
    pub vcpu_id: u32,
    /// The xAPIC ID (ID bits 31:24).
    pub xapic_id: u8,
    /// LDR.
    pub ldr: u32,
    /// DFR.
    pub dfr: u32,
    /// x2APIC mode.
    pub x2apic: bool,
    /// IA32_APIC_BASE.EN (KVM's `kvm_apic_present`).
    pub hw_enabled: bool,
    /// SPIV's software enable.
    pub sw_enabled: bool,
    /// LINT0 takes the PIC's interrupts (KVM's `kvm_apic_accept_pic_intr`): an in-kernel
    /// PIC wakes such a vCPU when its output rises.
    pub extint: bool,
}

impl Address {
    /// 64 bits: LDR, xAPIC ID, DFR's model (flat, cluster or other), the four flags.
    pub const fn pack(&self) -> u64 {
        let model = match self.dfr {
            DFR_FLAT => 1,
            DFR_CLUSTER => 2,
            _ => 0,
        };
        self.ldr as u64
            | (self.xapic_id as u64) << 32
            | model << 40
            | (self.x2apic as u64) << 48
            | (self.hw_enabled as u64) << 49
            | (self.sw_enabled as u64) << 50
            | (self.extint as u64) << 51
    }

    /// The address [`Address::pack`] gave for vCPU `vcpu_id` (a DFR other than flat and
    /// cluster comes back as 0: it matches no logical destination either way).
    pub const fn unpack(vcpu_id: u32, v: u64) -> Self {
        Self {
            vcpu_id,
            xapic_id: (v >> 32) as u8,
            ldr: v as u32,
            dfr: match v >> 40 & 3 {
                1 => DFR_FLAT,
                2 => DFR_CLUSTER,
                _ => 0,
            },
            x2apic: v & 1 << 48 != 0,
            hw_enabled: v & 1 << 49 != 0,
            sw_enabled: v & 1 << 50 != 0,
            extint: v & 1 << 51 != 0,
        }
    }

    /// Whether this APIC is a destination (`kvm_apic_match_dest` with `kvm_apic_mda`'s
    /// broadcast quirk: without `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`, a device's
    /// destination 0xff is the x2APIC broadcast for an x2APIC target).
    pub fn matches_dest(
        &self,
        source: Source,
        shorthand: Shorthand,
        dest: u32,
        logical: bool,
        broadcast_quirk_disabled: bool,
    ) -> bool {
        let device_broadcast = source == Source::Device && dest == APIC_BROADCAST;
        let mda = if !broadcast_quirk_disabled && device_broadcast && self.x2apic {
            X2APIC_BROADCAST
        } else {
            dest
        };
        match shorthand {
            Shorthand::None if logical => self.match_logical(mda),
            Shorthand::None => self.match_physical(mda),
            Shorthand::ToSelf => source == Source::ThisApic,
            Shorthand::AllIncludingSelf => true,
            Shorthand::AllExcludingSelf => source != Source::ThisApic,
        }
    }

    fn is_broadcast(&self, mda: u32) -> bool {
        mda == if self.x2apic { X2APIC_BROADCAST } else { APIC_BROADCAST }
    }

    /// `kvm_apic_match_physical_addr`: broadcast, else the x2APIC ID in x2APIC mode or for a
    /// destination above 0xff (KVM's hotplug hack), else the xAPIC ID.
    pub fn match_physical(&self, mda: u32) -> bool {
        if self.is_broadcast(mda) {
            return true;
        }
        if self.x2apic || mda > 0xff {
            return mda == self.vcpu_id;
        }
        mda == u32::from(self.xapic_id)
    }

    /// `kvm_apic_match_logical_addr`: broadcast; x2APIC: same cluster (bits 31:16) and a
    /// common bit in 15:0; xAPIC flat: a common bit of the 8-bit logical ID; xAPIC
    /// cluster: same cluster (bits 7:4) and a common bit in 3:0; other DFR models: none.
    pub fn match_logical(&self, mda: u32) -> bool {
        if self.is_broadcast(mda) {
            return true;
        }
        let ldr = self.ldr;
        if self.x2apic {
            return ldr >> 16 == mda >> 16 && ldr & mda & 0xffff != 0;
        }
        let id = ldr >> 24;
        match self.dfr {
            DFR_FLAT => id & mda != 0,
            DFR_CLUSTER => id >> 4 == mda >> 4 && id & mda & 0xf != 0,
            _ => false,
        }
    }
}

/// One local APIC: KVM's register page and the state KVM derives from it.
#[derive(Clone, Debug)]
pub struct Lapic {
    /// The first 1 KiB of the APIC page, as 32-bit words (KVM's layout).
    regs: [u32; 256],
    /// IA32_APIC_BASE.
    apic_base: u64,
    /// The vCPU ID, which is the x2APIC ID.
    vcpu_id: u32,
    /// SPIV's enable bit as last written (`apic->sw_enabled`).
    sw_enabled: bool,
    /// The timer mode the timer runs in (`lapic_timer.timer_mode`).
    timer_mode: TimerMode,
    /// LVTT mode bits the guest may set: 0 before CPUID is set, as in KVM.
    timer_mode_mask: u32,
    /// TDCR's divisor.
    divide: u32,
    /// LVT0 is in NMI mode (the PIT's NMI watchdog delivery).
    lvt0_nmi: bool,
    /// LVT entries: the first this many of [`LVTS`] (6, or 7 with CMCI).
    nr_lvt: usize,
    /// Settings from CPUID.
    caps: Caps,
}

impl Lapic {
    /// A vCPU's APIC after creation and RESET (`kvm_create_lapic`, `kvm_lapic_reset`):
    /// xAPIC at 0xfee00000 (BSP flag for the BSP), software disabled, LVTs masked (LINT0
    /// ExtINT on the BSP, KVM's default `KVM_X86_QUIRK_LINT0_REENABLED`), CPUID not yet set.
    pub fn new(vcpu_id: u32, bsp: bool) -> Self {
        let mut a = Self {
            regs: [0; 256],
            apic_base: apic_base::ENABLE,
            vcpu_id,
            sw_enabled: false,
            timer_mode: TimerMode::OneShot,
            timer_mode_mask: 0,
            divide: 1,
            lvt0_nmi: false,
            nr_lvt: LVTS_WITHOUT_CMCI,
            caps: Caps { x2apic: false, tsc_deadline: false, directed_eoi: false, maxphyaddr: DEFAULT_MAXPHYADDR },
        };
        a.reset(false, bsp, true);
        a
    }

    /// RESET (`init_event` false) or INIT (`kvm_lapic_reset`). RESET also sets
    /// IA32_APIC_BASE and the xAPIC ID; INIT keeps both (and an x2APIC's LDR). The caller
    /// cancels the timer and drops its pending ticks. `lint0_reenabled`: KVM's
    /// `KVM_X86_QUIRK_LINT0_REENABLED` (on unless disabled), which unmasks LINT0 as ExtINT
    /// on the BSP.
    pub fn reset(&mut self, init_event: bool, bsp: bool, lint0_reenabled: bool) {
        if !init_event {
            let bsp_bit = if bsp { apic_base::BSP } else { 0 };
            self.set_base_raw(DEFAULT_BASE | apic_base::ENABLE | bsp_bit);
            self.set_xapic_id();
        }
        self.update_version();
        for &r in self.lvts() {
            self.set(r, lvt::MASKED);
        }
        self.update_lvtt();
        if bsp && lint0_reenabled {
            self.set(reg::LVT0, lvt::MODE_EXTINT);
        }
        self.lvt0_nmi = lvt_nmi_mode(self.get(reg::LVT0));
        self.set(reg::DFR, DFR_FLAT);
        self.set_spiv(0xff);
        self.set(reg::TASKPRI, 0);
        let x2 = self.x2apic_mode();
        if !x2 {
            self.set(reg::LDR, 0);
        }
        self.set(reg::ESR, 0);
        self.set(reg::ICR, 0);
        // x2APIC: ICR is one 64-bit register (KVM's VMX layout), ICR2 is untouched.
        self.set(if x2 { reg::ICR | 4 } else { reg::ICR2 }, 0);
        self.set(reg::TDCR, 0);
        self.set(reg::TMICT, 0);
        for i in 0..8u32 {
            self.set(reg::IRR | i << 4, 0);
            self.set(reg::ISR | i << 4, 0);
            self.set(reg::TMR | i << 4, 0);
        }
        self.divide = divide_count(0);
        self.update_ppr();
    }

    /// The LVT registers this APIC has.
    fn lvts(&self) -> &'static [u32] {
        LVTS.get(..self.nr_lvt).unwrap_or(&LVTS)
    }

    /// IA32_MCG_CAP changed (`kvm_apic_after_set_mcg_cap`): with `cmci` (MCG_CMCI_P) the APIC
    /// has an LVT CMCI entry, masked when it appears; LVR shows the count.
    pub fn set_cmci(&mut self, cmci: bool) {
        let n = if cmci { LVTS.len() } else { LVTS_WITHOUT_CMCI };
        if n == self.nr_lvt {
            return;
        }
        for &r in LVTS.get(self.nr_lvt..n).unwrap_or(&[]) {
            self.set(r, lvt::MASKED);
        }
        self.nr_lvt = n;
        self.update_version();
    }

    /// Applies the guest's CPUID (what `kvm_vcpu_after_set_cpuid` does to the APIC): the
    /// timer mode mask, LVR's directed-EOI bit, EXTD's availability and MAXPHYADDR.
    pub fn set_cpuid(&mut self, caps: Caps) {
        self.caps = caps;
        self.timer_mode_mask = if caps.tsc_deadline { lvt::TIMER_MODE } else { lvt::TIMER_PERIODIC };
        self.update_version();
    }

    /// A register's raw 32-bit value (0 beyond the 1 KiB page or unaligned).
    pub fn get(&self, offset: u32) -> u32 {
        if offset & 3 != 0 {
            return 0;
        }
        self.regs.get((offset >> 2) as usize).copied().unwrap_or(0)
    }

    /// Sets a raw register (ignores offsets outside the page).
    fn set(&mut self, offset: u32, v: u32) {
        if offset & 3 == 0 {
            if let Some(r) = self.regs.get_mut((offset >> 2) as usize) {
                *r = v;
            }
        }
    }

    /// IA32_APIC_BASE.
    pub const fn apic_base(&self) -> u64 {
        self.apic_base
    }

    /// The APIC page's guest-physical address (KVM's `base_address`).
    pub const fn base_address(&self) -> u64 {
        self.apic_base & apic_base::BASE
    }

    /// The mode IA32_APIC_BASE selects.
    pub const fn mode(&self) -> Mode {
        Mode::of(self.apic_base)
    }

    /// x2APIC mode (`apic_x2apic_mode`).
    pub const fn x2apic_mode(&self) -> bool {
        self.apic_base & apic_base::EXTD != 0
    }

    /// IA32_APIC_BASE.EN (`kvm_apic_hw_enabled`).
    pub const fn hw_enabled(&self) -> bool {
        self.apic_base & apic_base::ENABLE != 0
    }

    /// SPIV's software enable (`kvm_apic_sw_enabled`).
    pub const fn sw_enabled(&self) -> bool {
        self.sw_enabled
    }

    /// Both enables (`apic_enabled`): fixed interrupts are accepted.
    pub const fn enabled(&self) -> bool {
        self.sw_enabled && self.hw_enabled()
    }

    /// The x2APIC ID (the vCPU ID, read-only in KVM).
    pub const fn x2apic_id(&self) -> u32 {
        self.vcpu_id
    }

    /// The xAPIC ID: ID bits 31:24 (`kvm_xapic_id`).
    pub fn xapic_id(&self) -> u8 {
        (self.get(reg::ID) >> 24) as u8
    }

    /// The timer's current mode.
    pub const fn timer_mode(&self) -> TimerMode {
        self.timer_mode
    }

    /// TDCR's divisor (1 to 128).
    pub const fn divide(&self) -> u32 {
        self.divide
    }

    /// LVT0 is unmasked in NMI mode (KVM counts these for the PIT's NMI watchdog).
    pub const fn lvt0_nmi_mode(&self) -> bool {
        self.lvt0_nmi
    }

    /// Whether a PIC interrupt (ExtINT) may be taken: APIC hardware disabled, or LVT0
    /// unmasked in ExtINT mode (`kvm_apic_accept_pic_intr`).
    pub fn accept_pic_intr(&self) -> bool {
        accepts_extint(self.hw_enabled(), self.get(reg::LVT0))
    }

    /// LVR from the LVT count and caps (`kvm_apic_set_version`).
    fn update_version(&mut self) {
        let n = self.nr_lvt as u32;
        let mut v = VERSION | n.wrapping_sub(1) << 16;
        if self.caps.x2apic && self.caps.directed_eoi {
            v |= LVR_DIRECTED_EOI;
        }
        self.set(reg::LVR, v);
    }

    /// ID = the vCPU ID truncated to 8 bits, in bits 31:24 (`kvm_apic_set_xapic_id`).
    fn set_xapic_id(&mut self) {
        self.set(reg::ID, (self.vcpu_id & 0xff) << 24);
    }

    /// ID and LDR of x2APIC mode (`kvm_apic_set_x2apic_id`).
    fn set_x2apic_id(&mut self) {
        self.set(reg::ID, self.vcpu_id);
        self.set(reg::LDR, x2apic_ldr(self.vcpu_id));
    }

    /// `apic_set_spiv`: stores the value, returns whether the software enable changed.
    fn set_spiv(&mut self, v: u32) -> bool {
        let enabled = v & spiv::ENABLED != 0;
        self.set(reg::SPIV, v);
        let changed = enabled != self.sw_enabled;
        self.sw_enabled = enabled;
        changed
    }

    /// `apic_update_lvtt`: follows LVTT's timer mode; into or out of TSC-deadline mode
    /// clears TMICT.
    fn update_lvtt(&mut self) -> Effect {
        let new = TimerMode::from_lvtt(self.get(reg::LVTT) & self.timer_mode_mask);
        let old = self.timer_mode;
        if new == old {
            return Effect::None;
        }
        let cancel = (old == TimerMode::TscDeadline) != (new == TimerMode::TscDeadline);
        if cancel {
            self.set(reg::TMICT, 0);
        }
        self.timer_mode = new;
        Effect::TimerMode { old, new, cancel }
    }

    /// The highest vector set in the bitmap at `base` (`apic_find_highest_vector`).
    fn highest(&self, base: u32) -> Option<u8> {
        (0..8u32).rev().find_map(|i| {
            let w = self.get(base | i << 4);
            w.checked_ilog2().map(|b| (i << 5 | b) as u8)
        })
    }

    fn test_vector(&self, base: u32, vector: u8) -> bool {
        self.get(vector_reg(base, vector)) & vector_bit(vector) != 0
    }

    fn set_vector(&mut self, base: u32, vector: u8, on: bool) {
        let r = vector_reg(base, vector);
        let v = self.get(r);
        self.set(r, if on { v | vector_bit(vector) } else { v & !vector_bit(vector) });
    }

    /// Whether `vector` is set in IRR.
    pub fn irr(&self, vector: u8) -> bool {
        self.test_vector(reg::IRR, vector)
    }

    /// Whether `vector` is set in ISR.
    pub fn isr(&self, vector: u8) -> bool {
        self.test_vector(reg::ISR, vector)
    }

    /// Whether `vector` is level triggered in TMR.
    pub fn tmr(&self, vector: u8) -> bool {
        self.test_vector(reg::TMR, vector)
    }

    /// The highest vector in IRR.
    pub fn highest_irr(&self) -> Option<u8> {
        self.highest(reg::IRR)
    }

    /// The highest vector in ISR.
    pub fn highest_isr(&self) -> Option<u8> {
        self.highest(reg::ISR)
    }

    /// Recomputes PPR (`__apic_update_ppr`): TPR if its class is at least the highest
    /// in-service class, else that class. Returns whether PPR fell.
    fn update_ppr(&mut self) -> bool {
        let old = self.get(reg::PROCPRI);
        let tpr = self.get(reg::TASKPRI);
        let isrv = self.highest_isr().map_or(0, u32::from);
        let ppr = if tpr & 0xf0 >= isrv & 0xf0 { tpr & 0xff } else { isrv & 0xf0 };
        self.set(reg::PROCPRI, ppr);
        ppr < old
    }

    /// The highest IRR vector whose class is above `ppr` (`apic_has_interrupt_for_ppr`).
    fn pending_above(&self, ppr: u32) -> Option<u8> {
        above_ppr(self.highest_irr(), ppr)
    }

    /// `apic_update_ppr`'s `KVM_REQ_EVENT` condition: PPR fell and an interrupt is now
    /// deliverable.
    fn update_ppr_event(&mut self) -> bool {
        self.update_ppr() && self.pending_above(self.get(reg::PROCPRI)).is_some()
    }

    /// Processor priority.
    pub fn ppr(&self) -> u32 {
        self.get(reg::PROCPRI)
    }

    /// The interrupt to deliver now, if any (`kvm_apic_has_interrupt`): none with the APIC
    /// hardware disabled, else the highest IRR vector whose class is above PPR's.
    pub fn highest_pending(&self) -> Option<u8> {
        self.highest_pending_of(self.highest_irr())
    }

    /// [`Lapic::highest_pending`] with IRR's highest vector `highest_irr` scanned already
    /// (the checks before a VM entry share one scan).
    pub fn highest_pending_of(&self, highest_irr: Option<u8>) -> Option<u8> {
        if !self.hw_enabled() {
            return None;
        }
        above_ppr(highest_irr, self.ppr())
    }

    /// The interrupt is being injected (`kvm_apic_ack_interrupt`): IRR to ISR, PPR raised.
    pub fn ack(&mut self, vector: u8) {
        self.set_vector(reg::IRR, vector, false);
        self.set_vector(reg::ISR, vector, true);
        self.update_ppr();
    }

    /// An EOI (`apic_set_eoi`): clears the highest ISR bit and lowers PPR; `None` when
    /// nothing is in service (KVM ignores such EOIs). TMR is left as it is.
    pub fn eoi(&mut self) -> Option<Eoi> {
        let vector = self.highest_isr()?;
        self.set_vector(reg::ISR, vector, false);
        self.update_ppr();
        Some(Eoi {
            vector,
            level_triggered: self.tmr(vector),
            directed: self.get(reg::SPIV) & spiv::DIRECTED_EOI != 0,
        })
    }

    /// The TPR threshold for a TPR shadow (KVM's `vmx_update_cr8_intercept`): the class of the
    /// highest interrupt in IRR when the TPR holds it back (a CR8 write below it then exits,
    /// and the interrupt is delivered), else 0. Never above the TPR's class, as VM entry
    /// requires.
    pub fn tpr_threshold(&self) -> u32 {
        self.tpr_threshold_for(self.highest_irr())
    }

    /// [`Lapic::tpr_threshold`] with IRR's highest vector `highest_irr` scanned already.
    pub fn tpr_threshold_for(&self, highest_irr: Option<u8>) -> u32 {
        let tpr = self.get(reg::TASKPRI) >> 4 & 0xf;
        match highest_irr {
            Some(v) if self.hw_enabled() && u32::from(v) >> 4 <= tpr => u32::from(v) >> 4,
            _ => 0,
        }
    }

    /// CR8 (`kvm_lapic_get_cr8`): TPR bits 7:4.
    pub fn cr8(&self) -> u64 {
        u64::from(self.get(reg::TASKPRI) >> 4 & 0xf)
    }

    /// MOV to CR8 (`kvm_lapic_set_tpr`): TPR = CR8 bits 3:0 << 4. Returns `apic_update_ppr`'s
    /// `KVM_REQ_EVENT` condition.
    pub fn set_cr8(&mut self, cr8: u64) -> bool {
        self.set_tpr(((cr8 & 0xf) as u32) << 4)
    }

    /// The TPR register (bits 7:0).
    pub fn tpr(&self) -> u32 {
        self.get(reg::TASKPRI)
    }

    /// A write of the TPR register (bits 7:0 of `v`), PPR recomputed; returns `apic_update_ppr`'s
    /// `KVM_REQ_EVENT` condition.
    pub fn set_tpr(&mut self, v: u32) -> bool {
        self.set(reg::TASKPRI, v & 0xff);
        self.update_ppr_event()
    }

    /// A fixed interrupt arrives (`__apic_accept_irq`, fixed mode, asserted): dropped unless
    /// the APIC is hardware and software enabled; else TMR follows the trigger mode and
    /// the vector is set in IRR. KVM accepts any vector (vectors 0-15 never rise above
    /// PPR, and ESR is never set).
    pub fn accept_fixed(&mut self, vector: u8, level_triggered: bool) -> bool {
        if !self.enabled() {
            return false;
        }
        self.set_vector(reg::TMR, vector, level_triggered);
        self.set_vector(reg::IRR, vector, true);
        true
    }

    /// An interrupt for this APIC (`__apic_accept_irq`): what [`Irq::request`] asks, with
    /// fixed interrupts set in IRR if the APIC is enabled.
    pub fn accept(&mut self, irq: &Irq) -> Accepted {
        match irq.request() {
            Request::Fixed { vector, level_triggered } => {
                if self.accept_fixed(vector, level_triggered) {
                    Accepted::Fixed
                } else {
                    Accepted::Dropped
                }
            }
            Request::RemoteRead => Accepted::RemoteRead,
            Request::Smi => Accepted::Smi,
            Request::Nmi => Accepted::Nmi,
            Request::Init => Accepted::Init,
            Request::Sipi(v) => Accepted::Sipi(v),
            Request::None => Accepted::Dropped,
        }
    }

    /// Delivers the interrupt an LVT describes (`kvm_apic_local_deliver`, e.g. the timer's
    /// at expiry): nothing if the APIC is hardware disabled or the LVT masked. `lvt_reg`
    /// is one of this APIC's [`LVTS`]. (KVM's masking of LVTPC after delivery to Intel
    /// guests is the caller's.)
    pub fn local_deliver(&mut self, lvt_reg: u32) -> Accepted {
        let v = self.get(lvt_reg);
        if !self.lvts().contains(&lvt_reg) || !self.hw_enabled() || v & lvt::MASKED != 0 {
            return Accepted::Dropped;
        }
        let irq = Irq {
            vector: (v & lvt::VECTOR) as u8,
            delivery: DeliveryMode::from_bits(v >> 8),
            logical: false,
            level: true,
            trigger_level: v & lvt::LEVEL_TRIGGER != 0,
            shorthand: Shorthand::ToSelf,
            dest: 0,
            redirect_hint: false,
        };
        self.accept(&irq)
    }

    /// What destination matching needs of this APIC, as other vCPUs see it.
    pub fn address(&self) -> Address {
        Address {
            vcpu_id: self.vcpu_id,
            xapic_id: self.xapic_id(),
            ldr: self.get(reg::LDR),
            dfr: self.get(reg::DFR),
            x2apic: self.x2apic_mode(),
            hw_enabled: self.hw_enabled(),
            sw_enabled: self.sw_enabled,
            extint: self.accept_pic_intr(),
        }
    }

    /// A register read (`kvm_lapic_reg_read` + `__apic_read`): `len` bytes (1, 2 or 4) at
    /// `offset`, within one 32-bit register. `None` where KVM fails the read (crossing a
    /// register, beyond 0x3f0, reserved or write-only, or a bad length). `tmcct` is TMCCT
    /// from the caller's timer ([`tmcct`]); TSC-deadline mode reads 0. ARBPRI reads 0.
    pub fn reg_read(&self, offset: u32, len: u32, tmcct: u32) -> Option<u32> {
        let align = offset & 0xf;
        if align.saturating_add(len) > 4 || offset > 0x3f0 {
            return None;
        }
        if readable_mask(self.x2apic_mode(), self.nr_lvt > LVTS_WITHOUT_CMCI) & 1 << (offset >> 4) == 0 {
            return None;
        }
        let r = offset & !0xf;
        let v = match r {
            reg::ARBPRI => 0,
            reg::TMCCT if self.timer_mode == TimerMode::TscDeadline => 0,
            reg::TMCCT => tmcct,
            _ => self.get(r),
        };
        let v = v >> (align << 3);
        match len {
            1 => Some(v & 0xff),
            2 => Some(v & 0xffff),
            4 => Some(v),
            _ => None,
        }
    }

    /// A guest MMIO read of the APIC page (`apic_mmio_read`): all ones while the APIC is
    /// hardware disabled or in x2APIC mode (KVM's default `KVM_X86_QUIRK_LAPIC_MMIO_HOLE`),
    /// else [`Lapic::reg_read`]. `None`: KVM leaves the destination unwritten.
    pub fn read(&self, offset: u32, len: u32, tmcct: u32) -> Option<u32> {
        if !self.hw_enabled() || self.x2apic_mode() {
            return Some(match len {
                1 => 0xff,
                2 => 0xffff,
                3 => 0xff_ffff,
                _ => u32::MAX,
            });
        }
        self.reg_read(offset, len, tmcct)
    }

    /// A guest MMIO write of the APIC page (`apic_mmio_write`): ignored while hardware
    /// disabled or in x2APIC mode (MMIO hole quirk), unless 4 bytes at a 16-byte aligned
    /// offset within the 4 KiB page (the caller drops other lengths), and where KVM's
    /// register write fails (read-only, reserved).
    pub fn write(&mut self, offset: u32, value: u32) -> Effect {
        if !self.hw_enabled() || self.x2apic_mode() || offset & 0xf != 0 || offset >= 0x1000 {
            return Effect::None;
        }
        self.reg_write(offset & 0xff0, value).unwrap_or(Effect::None)
    }

    /// An x2APIC RDMSR of `msr` (`kvm_x2apic_msr_read`): #GP outside x2APIC mode, outside
    /// 0x800-0x8ff, or for a register KVM cannot read; ICR reads as one 64-bit value.
    pub fn x2apic_read(&self, msr: u32, tmcct: u32) -> Result<u64, Fault> {
        if !self.x2apic_mode() || !(X2APIC_MSR_BASE..=X2APIC_MSR_LAST).contains(&msr) {
            return Err(Fault);
        }
        let r = (msr & 0xff) << 4;
        if r == reg::ICR {
            return Ok(self.icr64());
        }
        self.reg_read(r, 4, tmcct).map(u64::from).ok_or(Fault)
    }

    /// An x2APIC WRMSR (`kvm_x2apic_msr_write`): #GP outside x2APIC mode or 0x800-0x8ff;
    /// ICR is written whole (reserved bits #GP, busy cleared); other registers #GP with bits
    /// 63:32 set or where KVM's register write fails (read-only, reserved, DFR, LDR, ID,
    /// ICR2, a non-zero ESR, SELF_IPI bits above 7:0).
    pub fn x2apic_write(&mut self, msr: u32, value: u64) -> Result<Effect, Fault> {
        if !self.x2apic_mode() || !(X2APIC_MSR_BASE..=X2APIC_MSR_LAST).contains(&msr) {
            return Err(Fault);
        }
        let r = (msr & 0xff) << 4;
        if r == reg::ICR {
            if value & icr::X2APIC_RESERVED != 0 {
                return Err(Fault);
            }
            let v = value & !u64::from(icr::BUSY);
            let (low, high) = (v as u32, (v >> 32) as u32);
            self.set(reg::ICR, low);
            self.set(reg::ICR | 4, high);
            return Ok(Effect::SendIpi(Irq::from_icr(low, high, true)));
        }
        let v = u32::try_from(value).map_err(|_| Fault)?;
        self.reg_write(r, v)
    }

    /// x2APIC ICR as one 64-bit register (KVM on VMX: `x2apic_icr_is_split` false).
    fn icr64(&self) -> u64 {
        u64::from(self.get(reg::ICR)) | u64::from(self.get(reg::ICR | 4)) << 32
    }

    /// A 32-bit register write (`kvm_lapic_reg_write`); `Err` where KVM returns 1 (the MMIO
    /// path ignores it, the x2APIC path raises #GP). ICR here is xAPIC's (low half, with ICR2).
    pub fn reg_write(&mut self, offset: u32, v: u32) -> Result<Effect, Fault> {
        let x2 = self.x2apic_mode();
        match offset {
            reg::ID if !x2 => {
                self.set(reg::ID, v >> 24 << 24);
                Ok(Effect::MapChanged)
            }
            reg::TASKPRI => Ok(Effect::Tpr { event: self.set_tpr(v) }),
            reg::EOI => Ok(self.eoi().map_or(Effect::None, Effect::Eoi)),
            reg::LDR if !x2 => {
                self.set(reg::LDR, v & 0xff00_0000);
                Ok(Effect::MapChanged)
            }
            reg::DFR if !x2 => {
                self.set(reg::DFR, v | DFR_CLUSTER);
                Ok(Effect::MapChanged)
            }
            reg::SPIV => {
                let mask = if self.get(reg::LVR) & LVR_DIRECTED_EOI != 0 { 0x3ff | spiv::DIRECTED_EOI } else { 0x3ff };
                let changed = self.set_spiv(v & mask);
                if v & spiv::ENABLED == 0 {
                    for &r in self.lvts() {
                        self.set(r, self.get(r) | lvt::MASKED);
                    }
                    // Masking leaves LVTT's mode alone, so this changes nothing in practice.
                    self.update_lvtt();
                }
                Ok(Effect::Spiv { enabled: self.sw_enabled, changed })
            }
            reg::ICR if !x2 => {
                let low = v & !icr::BUSY;
                self.set(reg::ICR, low);
                Ok(Effect::SendIpi(Irq::from_icr(low, self.get(reg::ICR2), false)))
            }
            reg::ICR2 if !x2 => {
                self.set(reg::ICR2, v & 0xff00_0000);
                Ok(Effect::None)
            }
            reg::LVTTHMR | reg::LVTPC | reg::LVT0 | reg::LVT1 | reg::LVTERR | reg::LVTCMCI => {
                // An entry this APIC lacks (CMCI without MCG_CMCI_P): as a reserved register.
                let mask = self
                    .lvts()
                    .iter()
                    .zip(lvt::WRITE_MASK)
                    .find_map(|(&r, m)| (r == offset).then_some(m))
                    .ok_or(Fault)?;
                let v = if self.sw_enabled { v } else { v | lvt::MASKED } & mask;
                if offset == reg::LVT0 {
                    self.lvt0_nmi = lvt_nmi_mode(v);
                }
                self.set(offset, v);
                Ok(Effect::None)
            }
            reg::LVTT => {
                let v = if self.sw_enabled { v } else { v | lvt::MASKED };
                self.set(reg::LVTT, v & (lvt::LVT_MASK | self.timer_mode_mask));
                Ok(self.update_lvtt())
            }
            reg::TMICT => {
                if self.timer_mode == TimerMode::TscDeadline {
                    return Ok(Effect::None);
                }
                self.set(reg::TMICT, v);
                Ok(Effect::TimerStart)
            }
            reg::TDCR => {
                let old = self.divide;
                self.set(reg::TDCR, v & 0xb);
                self.divide = divide_count(v & 0xb);
                Ok(if old == self.divide { Effect::None } else { Effect::TimerDivide { old, new: self.divide } })
            }
            reg::ESR if x2 && v != 0 => Err(Fault),
            reg::ESR => Ok(Effect::None),
            reg::SELF_IPI if x2 && v & !icr::VECTOR == 0 => {
                Ok(Effect::SendIpi(Irq::from_icr(icr::DEST_SELF | v, 0, true)))
            }
            _ => Err(Fault),
        }
    }

    /// A write of IA32_APIC_BASE (`kvm_apic_set_base`): the same value is a no-op; reserved
    /// bits (MAXPHYADDR and up, 9:0 but BSP, EXTD without x2APIC in CPUID) and EN = 0 with
    /// EXTD = 1 #GP; the guest (not the host) may not go x2APIC -> xAPIC or disabled ->
    /// x2APIC. Enabling sets the xAPIC ID from the vCPU ID; entering x2APIC sets the x2APIC
    /// ID and LDR; leaving it (still enabled) sets the xAPIC ID again.
    pub fn set_apic_base(&mut self, value: u64, host_initiated: bool) -> Result<Effect, Fault> {
        if value == self.apic_base {
            return Ok(Effect::None);
        }
        let gpa_reserved = u64::MAX.checked_shl(u32::from(self.caps.maxphyaddr)).unwrap_or(0);
        let extd = if self.caps.x2apic { 0 } else { apic_base::EXTD };
        let reserved = gpa_reserved | 0x2ff | extd;
        let (old_mode, new_mode) = (self.mode(), Mode::of(value));
        if value & reserved != 0 || new_mode == Mode::Invalid {
            return Err(Fault);
        }
        if !host_initiated
            && matches!((old_mode, new_mode), (Mode::X2Apic, Mode::XApic) | (Mode::Disabled, Mode::X2Apic))
        {
            return Err(Fault);
        }
        let old = self.apic_base;
        self.set_base_raw(value);
        Ok(Effect::ApicBase { old })
    }

    /// `__kvm_apic_set_base` without checks.
    fn set_base_raw(&mut self, value: u64) {
        let changed = self.apic_base ^ value;
        self.apic_base = value;
        if changed & apic_base::ENABLE != 0 && value & apic_base::ENABLE != 0 {
            self.set_xapic_id();
        }
        if changed & apic_base::EXTD != 0 {
            if value & apic_base::EXTD != 0 {
                self.set_x2apic_id();
            } else if value & apic_base::ENABLE != 0 {
                self.set_xapic_id();
            }
        }
    }

    /// `KVM_GET_LAPIC` (`kvm_apic_get_state`): the page with TMCCT = `tmcct` (0 in
    /// TSC-deadline mode); in x2APIC mode ICR2 gets ICR's high half and, without
    /// `x2apic_format` (`KVM_X2APIC_API_USE_32BIT_IDS`), ID is the x2APIC ID << 24.
    pub fn get_state(&self, tmcct: u32, x2apic_format: bool) -> [u8; 1024] {
        let mut regs = self.regs;
        let count = if self.timer_mode == TimerMode::TscDeadline { 0 } else { tmcct };
        let mut put = |off: u32, v: u32| {
            if let Some(r) = regs.get_mut((off >> 2) as usize) {
                *r = v;
            }
        };
        put(reg::TMCCT, count);
        if self.x2apic_mode() {
            if !x2apic_format {
                put(reg::ID, self.vcpu_id << 24);
            }
            put(reg::ICR2, self.get(reg::ICR | 4));
        }
        let mut out = [0u8; 1024];
        // Array chunks: no division by a run-time chunk size (objtool sees no panic path).
        for (o, r) in out.as_chunks_mut::<4>().0.iter_mut().zip(regs.iter()) {
            *o = r.to_le_bytes();
        }
        out
    }

    /// `KVM_SET_LAPIC` (`kvm_apic_set_state`). SPIV is applied first (as KVM, even if the
    /// state is then refused). In x2APIC mode: with `x2apic_format` an ID other than the
    /// vCPU's is refused, else the ID is forced to the vCPU's; LDR is derived from it; ICR
    /// becomes the 64-bit ICR | ICR2 << 32. Then the page is copied, LVR recomputed, PPR,
    /// timer mode, LVT0's NMI mode and the divisor rederived, and TMCCT cleared. Returns
    /// the TMCCT userspace gave: the caller restarts the timer from it
    /// ([`restore_deadline_ns`], KVM's `__start_apic_timer(apic, APIC_TMCCT)`).
    pub fn set_state(&mut self, state: &[u8; 1024], x2apic_format: bool) -> Result<u32, InvalidState> {
        let mut regs = [0u32; 256];
        for (r, b) in regs.iter_mut().zip(state.as_chunks::<4>().0) {
            *r = u32::from_le_bytes(*b);
        }
        let word = |regs: &[u32; 256], off: u32| regs.get((off >> 2) as usize).copied().unwrap_or(0);
        self.set_spiv(word(&regs, reg::SPIV));
        if self.x2apic_mode() {
            let id = self.vcpu_id;
            if x2apic_format && word(&regs, reg::ID) != id {
                return Err(InvalidState);
            }
            let icr2 = word(&regs, reg::ICR2);
            for (off, v) in [(reg::ID, id), (reg::LDR, x2apic_ldr(id)), (reg::ICR | 4, icr2)] {
                if let Some(r) = regs.get_mut((off >> 2) as usize) {
                    *r = v;
                }
            }
        }
        let tmcct = word(&regs, reg::TMCCT);
        self.regs = regs;
        self.update_version();
        self.update_ppr();
        self.update_lvtt();
        self.lvt0_nmi = lvt_nmi_mode(self.get(reg::LVT0));
        self.divide = divide_count(self.get(reg::TDCR));
        self.set(reg::TMCCT, 0);
        Ok(tmcct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An xAPIC, software enabled, CPUID set with x2APIC and TSC-deadline.
    fn enabled(id: u32) -> Lapic {
        let mut a = Lapic::new(id, id == 0);
        a.set_cpuid(Caps { x2apic: true, tsc_deadline: true, directed_eoi: false, maxphyaddr: 46 });
        assert_eq!(a.write(reg::SPIV, 0x1ff), Effect::Spiv { enabled: true, changed: true });
        a
    }

    fn x2(id: u32) -> Lapic {
        let mut a = enabled(id);
        assert!(a.set_apic_base(DEFAULT_BASE | apic_base::ENABLE | apic_base::EXTD, false).is_ok());
        a
    }

    #[test]
    fn bus_cycle_limits() {
        assert!(!valid_bus_cycle_ns(0));
        assert!(valid_bus_cycle_ns(1) && valid_bus_cycle_ns(40));
        let max = u64::MAX / (u32::MAX as u64 * 128);
        assert!(valid_bus_cycle_ns(max) && !valid_bus_cycle_ns(max + 1));
    }

    #[test]
    fn timer_conversions() {
        assert_eq!(tsc_ticks_to_ns(3_000_000, 3_000_000), 1_000_000);
        assert_eq!(tsc_ticks_to_ns(1, 3_000_000), 0);
        assert_eq!(tsc_ticks_to_ns(4_500_000, 3_000_000), 1_500_000);
        assert_eq!(tsc_ticks_to_ns(u64::MAX, 1), u64::MAX, "saturates");
        assert_eq!(tsc_ticks_to_ns(u64::MAX, 2_000_000), u64::MAX / 2);
        assert_eq!(tsc_ticks_to_ns(5, 0), 0);
        assert_eq!(rescale_ns(1000, 2, 128), 64_000);
        assert_eq!(rescale_ns(64_000, 128, 2), 1000);
        assert_eq!(rescale_ns(u64::MAX, 1, 128), u64::MAX);
        assert_eq!(rescale_ns(7, 0, 4), 7);
    }

    #[test]
    fn abi_matches_kvm_bindings() {
        assert_eq!(core::mem::size_of::<kvm_bindings::kvm_lapic_state>(), 1024);
        assert_eq!(kvm_bindings::KVM_APIC_REG_SIZE, 1024);
        assert_eq!(Lapic::new(0, true).get_state(0, false).len(), 1024);
        assert_eq!(x2apic_msr(reg::ICR), 0x830);
        assert_eq!(x2apic_msr(reg::ID), 0x802);
        assert_eq!(x2apic_msr(reg::SELF_IPI), 0x83f);
        assert_eq!(x2apic_msr(reg::TDCR), 0x83e);
    }

    #[test]
    fn cmci_lvt_follows_mcg_cap() {
        // kvm_apic_after_set_mcg_cap: the seventh LVT appears masked, LVR's max LVT follows.
        let mut a = enabled(0);
        assert_eq!(a.reg_write(reg::LVTCMCI, 0xa9), Err(Fault), "no CMCI entry yet");
        assert_eq!(a.reg_read(reg::LVTCMCI, 4, 0), None);
        assert_eq!(a.local_deliver(reg::LVTCMCI), Accepted::Dropped);
        a.set_cmci(true);
        assert_eq!(a.get(reg::LVR) >> 16 & 0xff, 6);
        assert_eq!(a.reg_read(reg::LVTCMCI, 4, 0), Some(lvt::MASKED));
        assert_eq!(a.reg_write(reg::LVTCMCI, 0x1_f7a9), Ok(Effect::None));
        assert_eq!(a.get(reg::LVTCMCI), 0x1_17a9, "vector, mode, delivery status and mask kept (LVT_MASK | APIC_MODE_MASK)");
        a.reg_write(reg::LVTCMCI, 0xa9).unwrap();
        assert_eq!(a.local_deliver(reg::LVTCMCI), Accepted::Fixed);
        assert_eq!(a.write(reg::SPIV, 0xff), Effect::Spiv { enabled: false, changed: true });
        assert_ne!(a.get(reg::LVTCMCI) & lvt::MASKED, 0, "masked with the others");
        a.set_cmci(false);
        assert_eq!(a.get(reg::LVR) >> 16 & 0xff, 5);
        assert_eq!(a.local_deliver(reg::LVTCMCI), Accepted::Dropped);
    }

    #[test]
    fn reset_values() {
        // kvm_create_lapic + kvm_lapic_reset(false).
        let a = Lapic::new(3, false);
        assert_eq!(a.apic_base(), 0xfee0_0800);
        assert_eq!(Lapic::new(0, true).apic_base(), 0xfee0_0900);
        assert_eq!(a.get(reg::ID), 3 << 24);
        assert_eq!(a.get(reg::LVR), 0x0005_0014, "version 0x14, 6 LVT entries (max LVT 5)");
        for &r in &LVTS[..6] {
            assert_eq!(a.get(r), lvt::MASKED);
        }
        assert_eq!(a.get(reg::DFR), 0xffff_ffff);
        assert_eq!(a.get(reg::SPIV), 0xff);
        assert!(!a.sw_enabled() && a.hw_enabled() && !a.enabled());
        assert_eq!((a.get(reg::TASKPRI), a.ppr(), a.get(reg::LDR), a.get(reg::ESR)), (0, 0, 0, 0));
        assert_eq!((a.get(reg::TDCR), a.divide(), a.get(reg::TMICT)), (0, 2, 0));
        assert_eq!(a.timer_mode(), TimerMode::OneShot);
        // KVM_X86_QUIRK_LINT0_REENABLED: the BSP's LINT0 is ExtINT, unmasked.
        let bsp = Lapic::new(0, true);
        assert_eq!(bsp.get(reg::LVT0), 0x700);
        assert!(bsp.accept_pic_intr());
        assert!(!a.accept_pic_intr());
        let mut q = Lapic::new(0, true);
        q.reset(false, true, false);
        assert_eq!(q.get(reg::LVT0), lvt::MASKED, "quirk disabled");
        // xAPIC IDs are the vCPU ID truncated to 8 bits.
        assert_eq!(Lapic::new(0x1_05, false).get(reg::ID), 0x05 << 24);
    }

    #[test]
    fn init_keeps_id_and_base() {
        // kvm_lapic_reset(true): APIC_BASE and ID kept.
        let mut a = enabled(2);
        a.write(reg::ID, 7 << 24);
        a.write(reg::TASKPRI, 0x40);
        assert!(a.accept_fixed(0x50, false));
        a.reset(true, false, true);
        assert_eq!(a.get(reg::ID), 7 << 24);
        assert_eq!(a.get(reg::SPIV), 0xff);
        assert!(!a.sw_enabled());
        assert_eq!((a.get(reg::TASKPRI), a.highest_irr()), (0, None));
        let mut b = x2(0x21);
        b.reset(true, false, true);
        assert!(b.x2apic_mode());
        assert_eq!((b.get(reg::ID), b.get(reg::LDR)), (0x21, x2apic_ldr(0x21)), "x2APIC LDR survives INIT");
    }

    #[test]
    fn set_cpuid_updates_version_and_timer_mask() {
        // kvm_apic_set_version and timer_mode_mask from kvm_vcpu_after_set_cpuid.
        let mut a = Lapic::new(0, true);
        a.write(reg::SPIV, 0x100);
        // Before CPUID KVM's timer_mode_mask is 0: LVTT mode bits are dropped.
        a.write(reg::LVTT, lvt::TIMER_PERIODIC | 0x30);
        assert_eq!(a.get(reg::LVTT), 0x30);
        a.set_cpuid(Caps { x2apic: false, tsc_deadline: false, directed_eoi: true, maxphyaddr: 40 });
        assert_eq!(a.get(reg::LVR), 0x0005_0014, "directed EOI needs x2APIC");
        a.write(reg::LVTT, lvt::TIMER_TSCDEADLINE | 0x30);
        assert_eq!(a.get(reg::LVTT), 0x30, "bit 18 without TSC-deadline in CPUID");
        a.set_cpuid(Caps { x2apic: true, tsc_deadline: true, directed_eoi: true, maxphyaddr: 40 });
        assert_eq!(a.get(reg::LVR), 0x0105_0014);
        assert!(matches!(a.write(reg::LVTT, lvt::TIMER_TSCDEADLINE | 0x30), Effect::TimerMode { cancel: true, .. }));
        assert_eq!(a.timer_mode(), TimerMode::TscDeadline);
    }

    #[test]
    fn write_masks() {
        // kvm_lapic_reg_write masks.
        let mut a = enabled(1);
        assert_eq!(a.write(reg::ID, 0x1234_5678), Effect::MapChanged);
        assert_eq!(a.get(reg::ID), 0x1200_0000);
        assert!(matches!(a.write(reg::TASKPRI, 0xffff_ff35), Effect::Tpr { .. }));
        assert_eq!(a.get(reg::TASKPRI), 0x35);
        a.write(reg::LDR, 0x0312_3456);
        assert_eq!(a.get(reg::LDR), 0x0300_0000);
        a.write(reg::DFR, 0);
        assert_eq!(a.get(reg::DFR), DFR_CLUSTER);
        a.write(reg::DFR, 0x5000_0000);
        assert_eq!(a.get(reg::DFR), 0x5fff_ffff);
        a.write(reg::SPIV, 0xffff_ffff);
        assert_eq!(a.get(reg::SPIV), 0x3ff, "no directed EOI without LVR bit 24");
        a.write(reg::ICR2, 0xffff_ffff);
        assert_eq!(a.get(reg::ICR2), 0xff00_0000);
        a.write(reg::LVTTHMR, 0xffff_ffff);
        assert_eq!(a.get(reg::LVTTHMR), 0x1_17ff);
        a.write(reg::LVTPC, 0xffff_ffff);
        assert_eq!(a.get(reg::LVTPC), 0x1_17ff);
        a.write(reg::LVT0, 0xffff_ffff);
        assert_eq!(a.get(reg::LVT0), 0x1_f7ff, "LINT_MASK: no bit 11");
        a.write(reg::LVT1, 0xffff_ffff);
        assert_eq!(a.get(reg::LVT1), 0x1_f7ff);
        a.write(reg::LVTERR, 0xffff_ffff);
        assert_eq!(a.get(reg::LVTERR), 0x1_10ff);
        a.write(reg::LVTT, 0xffff_ffff);
        assert_eq!(a.get(reg::LVTT), 0x7_10ff, "TSC-deadline CPUID: mode bits 18:17");
        a.write(reg::TDCR, 0xffff_ffff);
        assert_eq!(a.get(reg::TDCR), 0xb);
        assert_eq!(a.timer_mode(), TimerMode::Reserved);
        assert_eq!(a.write(reg::TMICT, 5), Effect::TimerStart, "mode 3 is not TSC-deadline: stored (no timer runs)");
        assert_eq!(a.get(reg::TMICT), 5);
    }

    #[test]
    fn read_only_reserved_and_unaligned_writes_are_ignored() {
        // apic_mmio_write: only 4-byte aligned writes; kvm_lapic_reg_write default: ret 1.
        let mut a = enabled(1);
        let before = a.get_state(0, false);
        for off in [reg::LVR, reg::ARBPRI, reg::PROCPRI, reg::RRR, reg::ISR, reg::TMR, reg::IRR + 0x70,
                    reg::LVTCMCI, reg::TMCCT, 0x3a0, 0x3b0, 0x3c0, 0x3d0, reg::SELF_IPI, 0x400, 0xff0, 0x10] {
            assert_eq!(a.write(off, 0xffff_ffff), Effect::None, "{off:#x}");
        }
        assert_eq!(a.write(reg::TASKPRI + 4, 0xff), Effect::None, "not 16-byte aligned");
        assert_eq!(a.write(0x1000 | reg::TASKPRI, 0xff), Effect::None, "outside the page");
        assert_eq!(a.write(reg::ESR, 0xffff_ffff), Effect::None);
        assert_eq!(a.get_state(0, false), before);
        assert_eq!(a.get(reg::ESR), 0, "KVM never sets ESR");
    }

    #[test]
    fn reads() {
        // kvm_lapic_reg_read + __apic_read + kvm_lapic_readable_reg_mask.
        let mut a = enabled(5);
        a.write(reg::TASKPRI, 0x20);
        assert_eq!(a.read(reg::ID, 4, 0), Some(5 << 24));
        assert_eq!(a.read(reg::ID + 3, 1, 0), Some(5), "byte access");
        assert_eq!(a.read(reg::LVR + 2, 2, 0), Some(5));
        assert_eq!(a.read(reg::ID + 2, 4, 0), None, "crosses the register");
        assert_eq!(a.read(reg::ID + 4, 4, 0), None);
        assert_eq!(a.read(reg::TASKPRI, 3, 0), None, "length 3");
        assert_eq!(a.read(reg::ARBPRI, 4, 0), Some(0));
        assert_eq!(a.read(reg::PROCPRI, 4, 0), Some(0x20));
        for off in [0x0, 0x10, 0x40, 0x70, reg::EOI, reg::RRR, reg::LVTCMCI, 0x3a0, 0x3f0, 0x400, 0xff0] {
            assert_eq!(a.read(off, 4, 0), None, "{off:#x}: reserved or write-only");
        }
        a.write(reg::TMICT, 1000);
        assert_eq!(a.read(reg::TMCCT, 4, 77), Some(77), "TMCCT from the caller's timer");
        assert_eq!(a.read(reg::TMICT, 4, 77), Some(1000));
        assert_eq!(a.read(reg::DFR, 4, 0), Some(0xffff_ffff));
        a.write(reg::LVTT, lvt::TIMER_TSCDEADLINE);
        assert_eq!(a.read(reg::TMCCT, 4, 77), Some(0), "TSC-deadline mode");
    }

    #[test]
    fn mmio_hole_when_disabled_or_x2apic() {
        // apic_mmio_read/write with KVM_X86_QUIRK_LAPIC_MMIO_HOLE.
        let mut a = x2(1);
        assert_eq!(a.read(reg::ID, 4, 0), Some(u32::MAX));
        assert_eq!(a.read(reg::ID, 1, 0), Some(0xff));
        assert_eq!(a.write(reg::TASKPRI, 0x50), Effect::None);
        assert_eq!(a.get(reg::TASKPRI), 0);
        let mut d = enabled(1);
        assert!(d.set_apic_base(DEFAULT_BASE, false).is_ok());
        assert_eq!(d.read(reg::LVR, 2, 0), Some(0xffff));
        assert_eq!(d.write(reg::TASKPRI, 0x50), Effect::None);
    }

    #[test]
    fn spiv_software_disable_masks_lvts() {
        // kvm_lapic_reg_write APIC_SPIV: clearing the enable masks every LVT; LVT writes
        // while disabled are masked.
        let mut a = enabled(0);
        a.write(reg::LVTT, 0x20_0ec);
        a.write(reg::LVT0, 0x700);
        a.write(reg::LVTERR, 0xfe);
        assert_eq!(a.get(reg::LVTT) & lvt::MASKED, 0);
        assert_eq!(a.write(reg::SPIV, 0xff), Effect::Spiv { enabled: false, changed: true });
        for &r in &LVTS[..6] {
            assert_ne!(a.get(r) & lvt::MASKED, 0, "{r:#x}");
        }
        assert_eq!(a.get(reg::LVTT), 0x3_00ec, "mode and vector kept");
        a.write(reg::LVT1, 0x400);
        assert_eq!(a.get(reg::LVT1), 0x1_0400);
        assert_eq!(a.write(reg::SPIV, 0xff), Effect::Spiv { enabled: false, changed: false });
        assert!(!a.accept_fixed(0x40, false), "software disabled: dropped");
        a.write(reg::SPIV, 0x1ff);
        assert_eq!(a.get(reg::LVT1), 0x1_0400, "re-enabling does not unmask");
    }

    #[test]
    fn directed_eoi_spiv_bit() {
        // SPIV bit 12 writable only when LVR advertises it.
        let mut a = enabled(0);
        a.set_cpuid(Caps { x2apic: true, tsc_deadline: true, directed_eoi: true, maxphyaddr: 46 });
        a.write(reg::SPIV, 0x11ff);
        assert_eq!(a.get(reg::SPIV), 0x11ff);
        a.write(reg::TASKPRI, 0);
        assert!(a.accept_fixed(0x61, true));
        a.ack(0x61);
        assert_eq!(a.eoi(), Some(Eoi { vector: 0x61, level_triggered: true, directed: true }));
    }

    #[test]
    fn ppr_from_tpr_and_isr() {
        // __apic_update_ppr.
        let mut a = enabled(0);
        a.write(reg::TASKPRI, 0x35);
        assert_eq!(a.ppr(), 0x35);
        a.accept_fixed(0x51, false);
        a.ack(0x51);
        assert_eq!(a.ppr(), 0x50, "ISR class above TPR's");
        a.write(reg::TASKPRI, 0x57);
        assert_eq!(a.ppr(), 0x57, "TPR class equal: TPR with its low bits");
        a.write(reg::TASKPRI, 0x10);
        a.eoi();
        assert_eq!(a.ppr(), 0x10);
        assert_eq!(a.cr8(), 1);
        a.set_cr8(0xfa);
        assert_eq!((a.get(reg::TASKPRI), a.cr8(), a.ppr()), (0xa0, 0xa, 0xa0));
    }

    #[test]
    fn pending_priority() {
        // kvm_apic_has_interrupt / apic_has_interrupt_for_ppr: IRR class above PPR.
        let mut a = enabled(0);
        assert_eq!(a.highest_pending(), None);
        a.accept_fixed(0x31, false);
        a.accept_fixed(0x82, false);
        a.accept_fixed(0x45, false);
        assert_eq!(a.highest_pending(), Some(0x82));
        a.set_cr8(8);
        assert_eq!(a.highest_pending(), None, "class 8 not above PPR 0x80");
        assert!(a.set_cr8(7), "PPR fell with 0x82 deliverable: KVM_REQ_EVENT");
        assert!(!a.set_cr8(9), "PPR rose");
        assert!(!a.set_cr8(9), "unchanged");
        a.set_cr8(0);
        a.ack(0x82);
        assert_eq!(a.highest_pending(), None, "0x45 below in-service 0x82");
        assert!((a.irr(0x45), a.isr(0x82), a.irr(0x82)) == (true, true, false));
        // Vectors 0-15 are accepted (KVM sets no ESR) but never deliverable.
        let mut b = enabled(0);
        assert!(b.accept_fixed(5, false));
        assert!(b.irr(5));
        assert_eq!(b.highest_pending(), None);
        // Hardware disabled: nothing deliverable (kvm_apic_present).
        a.set_cr8(0);
        assert_eq!(a.set_apic_base(DEFAULT_BASE, false), Ok(Effect::ApicBase { old: 0xfee0_0900 }));
        assert_eq!(a.highest_pending(), None);
        assert!(!a.accept_fixed(0x90, false));
    }

    #[test]
    fn tpr_threshold_follows_the_held_back_interrupt() {
        // vmx_update_cr8_intercept: IRR's class when the TPR holds it back, else 0.
        let mut a = enabled(0);
        assert_eq!(a.tpr_threshold(), 0, "nothing pending");
        // The whole TPR byte, as the TPR shadow's page holds it; CR8 is its class.
        a.set_tpr(0x125);
        assert_eq!((a.tpr(), a.cr8(), a.ppr()), (0x25, 2, 0x25));
        a.set_tpr(0);
        a.accept_fixed(0x52, false);
        assert_eq!(a.tpr_threshold(), 0, "deliverable: no CR8 write needs to exit");
        a.set_cr8(5);
        assert_eq!(a.tpr_threshold(), 5, "held back by TPR class 5: a write below 5 exits");
        a.set_cr8(9);
        assert_eq!(a.tpr_threshold(), 5);
        a.set_cr8(4);
        assert_eq!(a.tpr_threshold(), 0);
        // Held back by an interrupt in service, not by the TPR: no threshold.
        a.set_cr8(0);
        a.accept_fixed(0x90, false);
        a.ack(0x90);
        assert_eq!(a.tpr_threshold(), 0);
    }

    #[test]
    fn eoi_order_and_tmr() {
        // apic_set_eoi: the highest ISR bit; TMR reports level; TMR follows each accept.
        let mut a = enabled(0);
        assert!(a.accept_fixed(0x40, true));
        a.ack(0x40);
        assert!(a.accept_fixed(0x90, false));
        a.ack(0x90);
        assert!(a.accept_fixed(0x60, true));
        a.ack(0x60);
        assert_eq!(a.ppr(), 0x90);
        assert_eq!(a.eoi(), Some(Eoi { vector: 0x90, level_triggered: false, directed: false }));
        assert_eq!(a.ppr(), 0x60);
        assert_eq!(a.write(reg::EOI, 0), Effect::Eoi(Eoi { vector: 0x60, level_triggered: true, directed: false }));
        assert_eq!(a.eoi().map(|e| (e.vector, e.level_triggered)), Some((0x40, true)));
        assert_eq!(a.eoi(), None, "nothing in service");
        assert_eq!(a.write(reg::EOI, 0), Effect::None);
        assert!(a.tmr(0x40), "EOI leaves TMR");
        a.accept_fixed(0x40, false);
        assert!(!a.tmr(0x40), "an edge accept clears TMR");
    }

    #[test]
    fn accept_by_delivery_mode() {
        // __apic_accept_irq.
        let mut a = enabled(0);
        let irq = |low: u32| Irq::from_icr(low, 0, false);
        assert_eq!(a.accept(&irq(0x4000 | 0x8000 | 0x33)), Accepted::Fixed);
        assert!(a.tmr(0x33));
        assert_eq!(a.accept(&irq(0x8000 | 0x34)), Accepted::Dropped, "level deassert");
        assert_eq!(a.accept(&irq(0x100 | 0x35)), Accepted::Fixed, "lowest priority");
        assert_eq!(a.accept(&irq(0x200)), Accepted::Smi);
        assert_eq!(a.accept(&irq(0x300)), Accepted::RemoteRead);
        assert_eq!(a.accept(&irq(0x400)), Accepted::Nmi);
        assert_eq!(a.accept(&irq(0x500)), Accepted::Init);
        assert_eq!(a.accept(&irq(0x500 | 0x8000 | 0x4000)), Accepted::Init);
        assert_eq!(a.accept(&irq(0x500 | 0x8000)), Accepted::Dropped, "INIT level de-assert");
        assert_eq!(a.accept(&irq(0x600 | 0x9a)), Accepted::Sipi(0x9a));
        assert_eq!(a.accept(&irq(0x700)), Accepted::Dropped);
        // kvm_apic_local_deliver.
        a.write(reg::LVTT, 0xec);
        assert_eq!(a.local_deliver(reg::LVTT), Accepted::Fixed);
        assert!(a.irr(0xec));
        a.write(reg::LVT1, 0x400);
        assert_eq!(a.local_deliver(reg::LVT1), Accepted::Nmi);
        a.write(reg::LVTERR, lvt::MASKED | 0xfe);
        assert_eq!(a.local_deliver(reg::LVTERR), Accepted::Dropped);
        assert_eq!(a.local_deliver(reg::TASKPRI), Accepted::Dropped);
    }

    #[test]
    fn lvt0_nmi_mode() {
        // apic_manage_nmi_watchdog.
        let mut a = enabled(0);
        a.write(reg::LVT0, 0x400);
        assert!(a.lvt0_nmi_mode());
        a.write(reg::LVT0, 0x1_0400);
        assert!(!a.lvt0_nmi_mode());
    }

    #[test]
    fn icr_writes_send_ipis() {
        // kvm_lapic_reg_write APIC_ICR: busy cleared, destination from ICR2.
        let mut a = enabled(0);
        a.write(reg::ICR2, 0x0300_0000);
        let e = a.write(reg::ICR, 0x1000 | 0x4000 | 0x40);
        let Effect::SendIpi(irq) = e else { panic!("{e:?}") };
        assert_eq!(irq, Irq { vector: 0x40, delivery: DeliveryMode::Fixed, logical: false, level: true,
            trigger_level: false, shorthand: Shorthand::None, dest: 3, redirect_hint: false });
        assert_eq!(a.get(reg::ICR), 0x4040, "busy cleared");
    }

    #[test]
    fn icr_decoding() {
        // kvm_icr_to_lapic_irq.
        for (bits, mode) in [(0, DeliveryMode::Fixed), (1, DeliveryMode::LowestPriority), (2, DeliveryMode::Smi),
            (3, DeliveryMode::RemoteRead), (4, DeliveryMode::Nmi), (5, DeliveryMode::Init),
            (6, DeliveryMode::StartUp), (7, DeliveryMode::ExtInt)] {
            assert_eq!(Irq::from_icr(bits << 8, 0, false).delivery, mode);
        }
        for (bits, s) in [(0, Shorthand::None), (1, Shorthand::ToSelf), (2, Shorthand::AllIncludingSelf),
            (3, Shorthand::AllExcludingSelf)] {
            assert_eq!(Irq::from_icr(bits << 18, 0, false).shorthand, s);
        }
        let i = Irq::from_icr(0xc_cd21, 0xab12_3456, false);
        assert_eq!((i.vector, i.logical, i.level, i.trigger_level, i.dest), (0x21, true, true, true, 0xab));
        assert_eq!(Irq::from_icr(0, 0xab12_3456, true).dest, 0xab12_3456, "x2APIC: 32-bit destination");
        assert!(Irq::from_icr(0x100, 0, false).lowest_priority());
        assert!(!Irq::from_icr(0, 0, false).lowest_priority());
    }

    #[test]
    fn physical_matching() {
        // kvm_apic_match_physical_addr, with the hotplug hack.
        let mut a = enabled(0x105);
        assert_eq!(a.xapic_id(), 5);
        let m = |a: &Lapic, d: u32| a.address().matches_dest(Source::OtherApic, Shorthand::None, d, false, false);
        assert!(m(&a, 5) && m(&a, 0xff) && m(&a, 0x105));
        assert!(!m(&a, 6) && !m(&a, 0x205));
        a.write(reg::ID, 9 << 24);
        assert!(m(&a, 9) && !m(&a, 5), "guest-written xAPIC ID");
        let b = x2(0x105);
        assert!(m(&b, 0x105) && m(&b, X2APIC_BROADCAST));
        assert!(!m(&b, 5) && !m(&b, 0xff), "0xff is not broadcast for an x2APIC IPI");
    }

    #[test]
    fn broadcast_quirk() {
        // kvm_apic_mda: a device's 0xff is broadcast to an x2APIC unless the quirk is off.
        let b = x2(3);
        assert!(b.address().matches_dest(Source::Device, Shorthand::None, 0xff, false, false));
        assert!(!b.address().matches_dest(Source::Device, Shorthand::None, 0xff, false, true));
        assert!(!b.address().matches_dest(Source::OtherApic, Shorthand::None, 0xff, false, false));
    }

    #[test]
    fn shorthands() {
        // kvm_apic_match_dest.
        let a = enabled(1);
        for (s, this, other, dev) in [(Shorthand::ToSelf, true, false, false),
            (Shorthand::AllIncludingSelf, true, true, true), (Shorthand::AllExcludingSelf, false, true, true)] {
            assert_eq!(a.address().matches_dest(Source::ThisApic, s, 0x77, false, false), this);
            assert_eq!(a.address().matches_dest(Source::OtherApic, s, 0x77, false, false), other);
            assert_eq!(a.address().matches_dest(Source::Device, s, 0x77, false, false), dev);
        }
    }

    #[test]
    fn logical_matching() {
        // kvm_apic_match_logical_addr: flat, cluster, x2APIC cluster, broadcast.
        let mut a = enabled(0);
        let m = |a: &Lapic, d: u32| a.address().matches_dest(Source::OtherApic, Shorthand::None, d, true, false);
        a.write(reg::LDR, 0x0400_0000);
        assert!(m(&a, 0x04) && m(&a, 0x0f) && m(&a, 0xff));
        assert!(!m(&a, 0x03) && !m(&a, 0x100));
        a.write(reg::DFR, 0x0fff_ffff);
        a.write(reg::LDR, 0x2400_0000);
        assert!(m(&a, 0x24) && m(&a, 0x2c) && m(&a, 0xff));
        assert!(!m(&a, 0x14) && !m(&a, 0x23));
        a.write(reg::DFR, 0x5000_0000);
        assert!(!m(&a, 0x24), "unknown model matches nothing");
        assert!(m(&a, 0xff), "but broadcast");
        let b = x2(0x23);
        assert_eq!(b.get(reg::LDR), 0x0002_0008);
        assert!(m(&b, 0x0002_0008) && m(&b, 0x0002_ffff) && m(&b, X2APIC_BROADCAST));
        assert!(!m(&b, 0x0001_0008) && !m(&b, 0x0002_0004) && !m(&b, 0xff));
    }

    #[test]
    fn msi_decoding() {
        // kvm_msi_to_lapic_irq, x86_msi_msg_get_destid, kvm_msi_route_invalid.
        let i = Irq::from_msi(0xfee1_200c, 0, 0xc1a2, false).expect("valid");
        assert_eq!(i, Irq { vector: 0xa2, delivery: DeliveryMode::LowestPriority, logical: true, level: true,
            trigger_level: true, shorthand: Shorthand::None, dest: 0x12, redirect_hint: true });
        assert!(i.lowest_priority());
        let f = Irq::from_msi(0xfee0_3000, 0x0000_0100, 0x0031, false).expect("valid");
        assert_eq!((f.dest, f.delivery, f.logical, f.trigger_level), (3, DeliveryMode::Fixed, false, false));
        assert_eq!(Irq::from_msi(0xfee0_3000, 0x1234_5600, 0, true).map(|i| i.dest), Some(0x1234_5603));
        assert_eq!(Irq::from_msi(0xfee0_3000, 0x1234_5601, 0, true), None, "address_hi 7:0 with 32-bit IDs");
        assert_eq!(Irq::from_msi(0xfee0_3000, 0x1234_5601, 0, false).map(|i| i.dest), Some(3));
        assert_eq!(Irq::from_msi(0xfee0_3000, 0, 0x400, false).map(|i| i.delivery), Some(DeliveryMode::Nmi));
        // Extended destination ID: bits 11:5 are APIC ID bits 14:8 (KVM ignores them).
        let lo = 0xfee0_0000 | 0x34 << 12 | 0x7f << 5;
        assert_eq!(msi_ext_dest_id(lo), 0x7f34);
        assert_eq!(Irq::from_msi(lo, 0, 0, true).map(|i| i.dest), Some(0x34));
        assert_eq!(vector_hash_index(0x35, 4), Some(1));
        assert_eq!(vector_hash_index(0x35, 0), None);
    }

    #[test]
    fn x2apic_msrs() {
        // kvm_x2apic_msr_read/write, kvm_lapic_msr_read/write.
        let mut a = x2(0x42);
        assert_eq!(a.x2apic_read(0x802, 0), Ok(0x42));
        assert_eq!(a.x2apic_read(0x80d, 0), Ok(u64::from(x2apic_ldr(0x42))));
        assert_eq!(a.x2apic_read(0x803, 0), Ok(0x5_0014));
        assert_eq!(a.x2apic_read(0x839, 9), Ok(9), "TMCCT");
        for msr in [0x809, 0x80b, 0x80e, 0x831, 0x83f, 0x82f, 0x800, 0x840, 0x8ff, 0x7ff, 0x900] {
            assert_eq!(a.x2apic_read(msr, 0), Err(Fault), "{msr:#x}: ARBPRI, EOI, DFR, ICR2, SELF_IPI, CMCI, reserved");
        }
        assert!(matches!(a.x2apic_write(0x808, 0x20), Ok(Effect::Tpr { .. })));
        assert_eq!(a.x2apic_read(0x808, 0), Ok(0x20));
        assert_eq!(a.x2apic_write(0x808, 1 << 32), Err(Fault), "bits 63:32");
        for msr in [0x802, 0x803, 0x80a, 0x80d, 0x80e, 0x831, 0x839, 0x82f, 0x810, 0x840] {
            assert_eq!(a.x2apic_write(msr, 0), Err(Fault), "{msr:#x}");
        }
        assert_eq!(a.x2apic_write(0x828, 0), Ok(Effect::None), "ESR 0");
        assert_eq!(a.x2apic_write(0x828, 1), Err(Fault), "ESR non-zero");
        assert_eq!(a.x2apic_write(0x80b, 0), Ok(Effect::None), "EOI with nothing in service");
        // SELF_IPI: the vector only.
        let e = a.x2apic_write(0x83f, 0x55);
        assert_eq!(e.map(|e| matches!(e, Effect::SendIpi(Irq { vector: 0x55, shorthand: Shorthand::ToSelf, .. }))), Ok(true));
        assert_eq!(a.x2apic_write(0x83f, 0x155), Err(Fault));
        // ICR: one 64-bit write; reserved bits #GP; busy cleared.
        let e = a.x2apic_write(0x830, 0x0000_0007_0000_45fd | 1 << 12);
        let Ok(Effect::SendIpi(irq)) = e else { panic!("{e:?}") };
        assert_eq!((irq.dest, irq.vector, irq.delivery, irq.level), (7, 0xfd, DeliveryMode::Init, true));
        assert_eq!(a.x2apic_read(0x830, 0), Ok(0x0000_0007_0000_45fd), "64-bit, busy cleared");
        assert_eq!(a.get(reg::ICR2), 0, "ICR2 untouched (VMX: one 64-bit ICR)");
        for bad in [1u64 << 13, 1 << 16, 1 << 17, 1 << 20, 1 << 31] {
            assert_eq!(a.x2apic_write(0x830, bad), Err(Fault), "{bad:#x}");
        }
        // Not in x2APIC mode: every x2APIC MSR #GPs.
        let mut x = enabled(1);
        assert_eq!(x.x2apic_read(0x802, 0), Err(Fault));
        assert_eq!(x.x2apic_write(0x808, 0), Err(Fault));
        assert_eq!(x.write(reg::SELF_IPI, 0x30), Effect::None, "no SELF_IPI in xAPIC mode");
    }

    #[test]
    fn apic_base_transitions() {
        // kvm_apic_set_base.
        let en = DEFAULT_BASE | apic_base::ENABLE;
        let x2en = en | apic_base::EXTD;
        let mut a = Lapic::new(0x30, false);
        assert_eq!(a.set_apic_base(en, false), Ok(Effect::None), "same value");
        assert_eq!(a.set_apic_base(x2en, false), Err(Fault), "EXTD without x2APIC in CPUID");
        a.set_cpuid(Caps { x2apic: true, tsc_deadline: false, directed_eoi: false, maxphyaddr: 36 });
        assert_eq!(a.set_apic_base(1 << 36 | en, false), Err(Fault), "above MAXPHYADDR");
        assert_eq!(a.set_apic_base(en | 1 << 9, false), Err(Fault), "reserved bit 9");
        assert_eq!(a.set_apic_base(en | 1, false), Err(Fault));
        assert_eq!(a.set_apic_base(DEFAULT_BASE | apic_base::EXTD, true), Err(Fault), "EXTD without EN");
        assert_eq!(a.set_apic_base(en | apic_base::BSP, false), Ok(Effect::ApicBase { old: en }));
        assert_eq!(a.set_apic_base(x2en, false), Ok(Effect::ApicBase { old: en | apic_base::BSP }));
        assert_eq!(a.mode(), Mode::X2Apic);
        assert_eq!((a.get(reg::ID), a.get(reg::LDR)), (0x30, 0x0003_0001));
        assert_eq!(a.set_apic_base(en, false), Err(Fault), "x2APIC -> xAPIC by the guest");
        assert_eq!(a.set_apic_base(en, true), Ok(Effect::ApicBase { old: x2en }), "but by the host");
        assert_eq!(a.get(reg::ID), 0x30 << 24, "xAPIC ID again");
        assert!(a.set_apic_base(x2en, false).is_ok());
        assert!(a.set_apic_base(DEFAULT_BASE, false).is_ok(), "x2APIC -> disabled");
        assert_eq!(a.mode(), Mode::Disabled);
        assert_eq!(a.set_apic_base(x2en, false), Err(Fault), "disabled -> x2APIC by the guest");
        assert!(a.set_apic_base(0xfed0_0000 | apic_base::ENABLE, false).is_ok(), "disabled -> xAPIC, moved");
        assert_eq!((a.base_address(), a.get(reg::ID)), (0xfed0_0000, 0x30 << 24));
        let mut h = Lapic::new(1, false);
        h.set_cpuid(Caps { x2apic: true, tsc_deadline: false, directed_eoi: false, maxphyaddr: 52 });
        assert!(h.set_apic_base(DEFAULT_BASE, false).is_ok());
        assert!(h.set_apic_base(x2en, true).is_ok(), "the host may go disabled -> x2APIC");
        assert!(h.set_apic_base(0x000f_ffff_fee0_0000 | apic_base::ENABLE | apic_base::EXTD, false).is_ok());
    }

    #[test]
    fn get_set_lapic_round_trip_and_id_fixups() {
        // kvm_apic_get_state / kvm_apic_set_state / kvm_apic_state_fixup.
        let mut a = enabled(4);
        a.write(reg::TASKPRI, 0x20);
        a.accept_fixed(0x70, true);
        a.ack(0x70);
        a.write(reg::TMICT, 12345);
        let s = a.get_state(1000, false);
        let word = |s: &[u8; 1024], off: usize| u32::from_le_bytes([s[off], s[off + 1], s[off + 2], s[off + 3]]);
        assert_eq!(word(&s, 0x390), 1000, "TMCCT from the timer");
        assert_eq!(word(&s, 0x20), 4 << 24);
        assert_eq!(word(&s, 0x100 + 0x30), 1 << 16, "ISR bit 0x70: word 3, bit 16");
        assert_eq!(word(&s, 0x180 + 0x30), 1 << 16, "TMR");
        let mut b = Lapic::new(4, false);
        assert_eq!(b.set_state(&s, false), Ok(1000));
        assert!(b.sw_enabled());
        assert_eq!(b.get(reg::TMCCT), 0);
        assert_eq!(b.ppr(), 0x70);
        assert_eq!(b.get_state(1000, false), s);
        // x2APIC: ID in bits 31:24 without 32-bit IDs, as is with them; ICR2 from ICR's high half.
        let mut x = x2(0x1_0203);
        x.x2apic_write(0x830, 0x0000_0009_0000_0040).expect("ICR");
        let s = x.get_state(0, false);
        assert_eq!(word(&s, 0x20), 0x0300_0000, "x2APIC ID << 24, truncated");
        assert_eq!(word(&s, 0x310), 9, "ICR2 = ICR bits 63:32");
        let s32 = x.get_state(0, true);
        assert_eq!(word(&s32, 0x20), 0x1_0203);
        let mut y = x2(0x1_0203);
        let mut bad = s32;
        bad[0xd0] = 0x55;
        bad[0x20] = 0x04;
        assert_eq!(y.set_state(&bad, true), Err(InvalidState), "ID mismatch with 32-bit IDs");
        assert_eq!(y.set_state(&bad, false), Ok(0), "ignored without");
        assert_eq!((y.get(reg::ID), y.get(reg::LDR)), (0x1_0203, x2apic_ldr(0x1_0203)), "ID forced, LDR derived");
        assert_eq!(y.x2apic_read(0x830, 0), Ok(0x0000_0009_0000_0040), "ICR | ICR2 << 32");
        assert_eq!(y.set_state(&s32, true), Ok(0));
    }

    #[test]
    fn set_state_rederives() {
        // kvm_apic_set_state: LVR recomputed, timer mode, divisor, PPR.
        let a = enabled(0);
        let mut s = a.get_state(0, false);
        s[0x30..0x34].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        s[0x320..0x324].copy_from_slice(&(lvt::TIMER_TSCDEADLINE | 0xec).to_le_bytes());
        s[0x380..0x384].copy_from_slice(&500u32.to_le_bytes());
        s[0x3e0..0x3e4].copy_from_slice(&0xau32.to_le_bytes());
        s[0x80..0x84].copy_from_slice(&0x45u32.to_le_bytes());
        s[0xf0..0xf4].copy_from_slice(&0xffu32.to_le_bytes());
        let mut b = enabled(0);
        assert_eq!(b.set_state(&s, false), Ok(0));
        assert_eq!(b.get(reg::LVR), 0x5_0014);
        assert_eq!(b.timer_mode(), TimerMode::TscDeadline);
        assert_eq!(b.get(reg::TMICT), 0, "into TSC-deadline mode clears TMICT");
        assert_eq!(b.divide(), 128);
        assert_eq!(b.ppr(), 0x45);
        assert!(!b.sw_enabled());
    }

    #[test]
    fn timer_register_effects() {
        // kvm_lapic_reg_write APIC_TMICT / APIC_TDCR / APIC_LVTT, apic_update_lvtt.
        let mut a = enabled(0);
        assert_eq!(a.write(reg::TMICT, 100), Effect::TimerStart);
        assert_eq!(a.write(reg::TDCR, 0), Effect::None, "already divide by 2");
        assert_eq!(a.write(reg::TDCR, 0xb), Effect::TimerDivide { old: 2, new: 1 });
        assert_eq!(a.write(reg::LVTT, lvt::TIMER_PERIODIC | 0x20),
            Effect::TimerMode { old: TimerMode::OneShot, new: TimerMode::Periodic, cancel: false });
        assert_eq!(a.get(reg::TMICT), 100);
        assert_eq!(a.write(reg::LVTT, lvt::TIMER_PERIODIC | 0x21), Effect::None, "same mode");
        assert_eq!(a.write(reg::LVTT, lvt::TIMER_TSCDEADLINE | 0x20),
            Effect::TimerMode { old: TimerMode::Periodic, new: TimerMode::TscDeadline, cancel: true });
        assert_eq!(a.get(reg::TMICT), 0);
        assert_eq!(a.write(reg::TMICT, 100), Effect::None, "ignored in TSC-deadline mode");
        assert_eq!(a.get(reg::TMICT), 0);
        assert_eq!(a.write(reg::LVTT, 0x20),
            Effect::TimerMode { old: TimerMode::TscDeadline, new: TimerMode::OneShot, cancel: true });
        assert_eq!(TimerMode::from_lvtt(3 << 17), TimerMode::Reserved);
    }

    #[test]
    fn divide_values() {
        // update_divide_count.
        for (tdcr, d) in [(0x0, 2), (0x1, 4), (0x2, 8), (0x3, 16), (0x8, 32), (0x9, 64), (0xa, 128), (0xb, 1),
            (0x4, 2), (0xf, 1), (0xffff_fff0, 2)] {
            assert_eq!(divide_count(tdcr), d, "{tdcr:#x}");
        }
    }

    #[test]
    fn timer_arithmetic() {
        // tmict_to_ns, limit_periodic_timer_frequency, apic_get_tmcct.
        let bus = APIC_BUS_CYCLE_NS_DEFAULT;
        assert_eq!(period_ns(1000, 2, bus, TimerMode::OneShot), 2000);
        assert_eq!(period_ns(1000, 2, bus, TimerMode::Periodic), MIN_TIMER_PERIOD_NS, "200 us floor");
        assert_eq!(period_ns(0, 2, bus, TimerMode::Periodic), 0);
        assert_eq!(period_ns(u32::MAX, 128, bus, TimerMode::OneShot), u64::from(u32::MAX) * 128);
        assert_eq!(period_ns(u32::MAX, 128, u64::MAX, TimerMode::OneShot), u64::MAX, "saturates");
        // One-shot: counts down, then stays 0.
        assert_eq!(current_count(TimerMode::OneShot, 1000, 2, bus, 0), 0, "remaining == period: mod gives 0");
        assert_eq!(current_count(TimerMode::OneShot, 1000, 2, bus, 1), 999);
        assert_eq!(current_count(TimerMode::OneShot, 1000, 2, bus, 500), 750);
        assert_eq!(current_count(TimerMode::OneShot, 1000, 2, bus, 5000), 0);
        // Periodic: wraps each period.
        assert_eq!(current_count(TimerMode::Periodic, 1_000_000, 1, bus, 250_000), 750_000);
        assert_eq!(current_count(TimerMode::Periodic, 1_000_000, 1, bus, 3_250_000), 750_000);
        // Huge TMICT and divide 128 stay exact.
        let big = current_count(TimerMode::OneShot, u32::MAX, 128, bus, 128);
        assert_eq!(big, u32::MAX - 1);
        assert_eq!(current_count(TimerMode::Periodic, u32::MAX, 128, bus, u64::MAX), {
            let p = u64::from(u32::MAX) * 128;
            ((p - u64::MAX % p) % p / 128) as u32
        });
        assert_eq!(current_count(TimerMode::TscDeadline, 1000, 1, bus, 1), 0);
        assert_eq!(tmcct(0, 100, 50, 1, bus), 0, "TMICT 0");
        assert_eq!(tmcct(10, 100, -5, 1, bus), 0, "target passed");
        assert_eq!(tmcct(10, 0, 50, 1, bus), 0, "no period");
        assert_eq!(tmcct(10, 100, 50, 1, 0), 0, "zero bus cycle does not divide by zero");
        assert_eq!(remaining_ns(TimerMode::Periodic, 0, 5), 0);
        // set_target_expiration with APIC_TMCCT.
        assert_eq!(restore_deadline_ns(TimerMode::OneShot, 10, 2000, 2, bus), 20);
        assert_eq!(restore_deadline_ns(TimerMode::OneShot, 0, 2000, 2, bus), 0);
        assert_eq!(restore_deadline_ns(TimerMode::Periodic, 0, 2000, 2, bus), 2000);
        assert_eq!(restore_deadline_ns(TimerMode::Periodic, 5000, 2000, 2, bus), 2000, "above the period");
    }

    #[test]
    fn never_panics_on_any_offset() {
        // Every offset and MSR, any value: no panic, page size kept.
        let mut a = enabled(0);
        let mut b = x2(1);
        for off in (0..0x1100u32).step_by(4) {
            for len in [1, 2, 3, 4, 8] {
                let _ = a.read(off, len, u32::MAX);
                let _ = a.reg_read(off, len, 0);
            }
            let _ = a.write(off, u32::MAX);
            let _ = a.write(off, 0);
            let _ = b.reg_write(off, u32::MAX);
        }
        for msr in 0x7f0..0x910u32 {
            let _ = b.x2apic_read(msr, 0);
            let _ = b.x2apic_write(msr, u64::MAX);
            let _ = b.x2apic_write(msr, 0);
        }
        for v in 0..=255u8 {
            a.write(reg::SPIV, 0x1ff);
            a.accept_fixed(v, v & 1 == 0);
            a.ack(v);
        }
        while a.eoi().is_some() {}
        assert_eq!(a.ppr(), a.get(reg::TASKPRI) & 0xff);
        let _ = a.set_apic_base(u64::MAX, true);
        let mut c = Lapic::new(u32::MAX, false);
        c.set_cpuid(Caps { x2apic: true, tsc_deadline: true, directed_eoi: true, maxphyaddr: 255 });
        assert!(c.set_apic_base(DEFAULT_BASE | apic_base::ENABLE | apic_base::EXTD, false).is_ok());
        assert_eq!(c.get(reg::LDR), 0xffff_8000, "cluster bits above 31 drop");
        let _ = c.get_state(0, false);
    }
}
