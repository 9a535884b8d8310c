// SPDX-License-Identifier: GPL-2.0

//! `KVM_CREATE_PIT2`: the 8254 in the kernel (rules in `logic/pit.rs`). Its ports are 0x40-0x43
//! and, with `KVM_PIT_SPEAKER_DUMMY`, 0x61. Channel 0 runs on a host hrtimer whose expiries
//! pulse GSI 0. With reinjection on (the default, `KVM_REINJECT_CONTROL`), ticks the guest has
//! not yet acknowledged wait: the next one is sent when the interrupt controller reports the
//! EOI of GSI 0 ([`Ticks`], KVM's ack notifier), and unmasking the pin forgets them (KVM's mask
//! notifier), so a guest that was busy gets every tick, one at a time.

use core::sync::atomic::{AtomicI64, Ordering::Relaxed};
use kernel::{
    impl_has_hr_timer, new_mutex, new_spinlock_irq,
    prelude::*,
    sync::{Arc, ArcBorrow, Mutex, SpinLockIrq},
    time::{
        hrtimer::{AbsoluteSoftMode, ArcHrTimerHandle, HrTimer, HrTimerCallback, HrTimerCallbackContext, HrTimerPointer, HrTimerRestart},
        ClockSource, Delta, Monotonic,
    },
};

use super::{
    bus::ApicBus,
    timer::{after, until},
};
use crate::logic::pit::{Now, Pit, PitState2, Timer};

/// The PIT's interrupt source on GSI 0 (KVM's third source id, after userspace's and the
/// irqfd resampler's).
pub(crate) const PIT_SOURCE: u32 = 2;
/// `KVM_PIT_SPEAKER_DUMMY`.
pub(crate) const SPEAKER_DUMMY: u32 = 1;

/// Reinjection's bookkeeping (KVM's `pending`, `irq_ack`, `reinject`), shared with the bus's
/// ack path.
#[pin_data]
pub(crate) struct Ticks {
    #[pin]
    state: SpinLockIrq<TickState>,
}

struct TickState {
    reinject: bool,
    /// Expiries not yet sent.
    pending: u32,
    /// The last tick sent was acknowledged (or none was sent).
    irq_ack: bool,
}

impl Ticks {
    fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Ticks { state <- new_spinlock_irq!(TickState { reinject: true, pending: 0, irq_ack: true }) }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// The timer expired: whether to send a tick now (KVM's `pit_timer_fn` and
    /// `pit_do_work`): without reinjection always; with it, once the last one was acked.
    fn expired(&self) -> bool {
        let mut t = self.state.lock();
        if !t.reinject {
            return true;
        }
        t.pending = t.pending.saturating_add(1);
        core::mem::take(&mut t.irq_ack)
    }

    /// The timer was late by `n` more periods (host load): with reinjection they are owed
    /// too (KVM's timer adds one period per expiry and fires again for each).
    fn missed(&self, n: u64) {
        let mut t = self.state.lock();
        if t.reinject {
            t.pending = t.pending.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }

    /// Whether GSI 0's EOIs matter (KVM registers its ack notifier only with reinjection on).
    pub(crate) fn reinjecting(&self) -> bool {
        self.state.lock().reinject
    }

    /// GSI 0's interrupt was acknowledged: whether to send a waiting tick now (KVM's
    /// `kvm_pit_ack_irq`: the one just acked still counts in `pending`).
    pub(crate) fn acked(&self) -> bool {
        let mut t = self.state.lock();
        if !t.reinject {
            return false;
        }
        t.irq_ack = true;
        if t.pending == 0 {
            return false;
        }
        t.pending = t.pending.saturating_sub(1);
        if t.pending == 0 {
            return false;
        }
        t.irq_ack = false;
        true
    }

    /// GSI 0 was unmasked, or the timer started anew: waiting ticks are forgotten.
    pub(crate) fn reset(&self) {
        let mut t = self.state.lock();
        t.pending = 0;
        t.irq_ack = true;
    }

    fn set_reinject(&self, on: bool) {
        let mut t = self.state.lock();
        if t.reinject != on && on {
            t.pending = 0;
            t.irq_ack = true;
        }
        t.reinject = on;
    }
}

/// What channel 0's hrtimer needs.
#[pin_data]
pub(crate) struct Expiry {
    #[pin]
    timer: HrTimer<Expiry>,
    ticks: Arc<Ticks>,
    bus: Arc<ApicBus>,
    /// The period while periodic, else 0.
    period_ns: AtomicI64,
}

impl_has_hr_timer! {
    impl HasHrTimer<Self> for Expiry { mode: AbsoluteSoftMode<Monotonic>, field: self.timer }
}

impl HrTimerCallback for Expiry {
    type Pointer<'a> = Arc<Self>;

    /// Softirq context: a tick on GSI 0 (every lock on the way is an interrupts-off spinlock).
    fn run(this: ArcBorrow<'_, Self>, mut ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        if this.ticks.expired() {
            pulse(&this.bus);
        }
        match this.period_ns.load(Relaxed) {
            p if p > 0 => {
                let overruns = ctx.forward_now(Delta::from_nanos(p));
                if overruns > 1 {
                    this.ticks.missed(overruns.saturating_sub(1));
                }
                HrTimerRestart::Restart
            }
            _ => HrTimerRestart::NoRestart,
        }
    }
}

/// A tick: GSI 0 raised and lowered by the PIT's source.
pub(crate) fn pulse(bus: &ApicBus) {
    let _ = bus.set_gsi(0, PIT_SOURCE, true, false);
    let _ = bus.set_gsi(0, PIT_SOURCE, false, false);
}

struct Inner {
    pit: Pit,
    /// Channel 0's period as last programmed (KVM's `ps->period`, kept after a stop).
    period_ns: i64,
    running: Option<ArcHrTimerHandle<Expiry>>,
}

/// A VM's PIT.
#[pin_data]
pub(crate) struct PitDevice {
    expiry: Arc<Expiry>,
    /// Port 0x61 is the PIT's (`KVM_PIT_SPEAKER_DUMMY`).
    speaker: bool,
    #[pin]
    inner: Mutex<Inner>,
}

/// The monotonic clock, ns.
fn now_ns() -> i64 {
    Monotonic::ktime_get()
}

impl PitDevice {
    /// `KVM_CREATE_PIT2` with `flags` (the caller checked the VM may have one): channels
    /// reset, reinjection on.
    pub(crate) fn new(bus: Arc<ApicBus>, flags: u32) -> Result<Arc<Self>> {
        let ticks = Ticks::new()?;
        let (expiry_ticks, expiry_bus) = (ticks.clone(), bus.clone());
        let expiry = Arc::pin_init(
            pin_init!(Expiry { timer <- HrTimer::new(), ticks: expiry_ticks, bus: expiry_bus, period_ns: AtomicI64::new(0) }),
            GFP_KERNEL_ACCOUNT,
        )?;
        let pit = Pit::new(now_ns(), true);
        let dev = Arc::pin_init(
            pin_init!(PitDevice {
                expiry,
                speaker: flags & SPEAKER_DUMMY != 0,
                inner <- new_mutex!(Inner { pit, period_ns: 0, running: None }),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        // Published once nothing can fail: GSI 0's EOIs and unmasking reach these ticks.
        bus.set_pit_ticks(ticks);
        Ok(dev)
    }

    /// Now, as channel 0 counts it: the part of its period its timer has run.
    fn now(&self, inner: &Inner) -> Now {
        let ns = now_ns();
        if inner.period_ns == 0 {
            return Now { ns, ch0_elapsed: 0 };
        }
        let remaining = until(self.expiry.timer.expires());
        Now { ns, ch0_elapsed: inner.period_ns.saturating_sub(remaining) }
    }

    /// Carries out what the model asked of channel 0's timer.
    fn apply(&self, inner: &mut Inner, t: Timer) {
        match t {
            Timer::Keep => {}
            Timer::Stop => inner.running = None,
            Timer::Start { first_ns, period_ns } => {
                inner.running = None;
                inner.period_ns = period_ns.unwrap_or(first_ns);
                self.expiry.ticks.reset();
                self.expiry.period_ns.store(period_ns.unwrap_or(0), Relaxed);
                inner.running = Some(self.expiry.clone().start(after(u64::try_from(first_ns).unwrap_or(0))));
            }
        }
    }

    /// A guest's OUT of `len` bytes of `value` to `port`: true if the PIT took it (KVM's
    /// devices: 0x40-0x43, and 0x61-0x64 with the speaker; the access must lie inside one).
    pub(crate) fn port_write(&self, port: u16, len: u32, value: u64) -> bool {
        match claim(port, len, self.speaker) {
            Some(Port::Counter(p)) => {
                let mut inner = self.inner.lock();
                let now = self.now(&inner);
                let t = inner.pit.write(p, value as u8, now);
                self.apply(&mut inner, t);
                true
            }
            Some(Port::Speaker) => {
                self.inner.lock().pit.write_speaker(value as u32, now_ns());
                true
            }
            // 0x62-0x64 are the speaker device's but answer nothing (KVM: EOPNOTSUPP).
            Some(Port::SpeakerOther) | None => false,
        }
    }

    /// A guest's IN of `len` bytes from `port`, if the PIT answers it.
    pub(crate) fn port_read(&self, port: u16, len: u32) -> Option<u32> {
        match claim(port, len, self.speaker)? {
            Port::Counter(p) => {
                let mut inner = self.inner.lock();
                let now = self.now(&inner);
                Some(u32::from(inner.pit.read(p, now)))
            }
            Port::Speaker => {
                let inner = self.inner.lock();
                Some(inner.pit.read_speaker(self.now(&inner)))
            }
            Port::SpeakerOther => None,
        }
    }

    /// `KVM_GET_PIT2`.
    pub(crate) fn state(&self) -> PitState2 {
        self.inner.lock().pit.get_state()
    }

    /// `KVM_SET_PIT`: the channels, each count loaded again (the flags stay).
    pub(crate) fn set_channels(&self, channels: &[crate::logic::pit::ChannelState; 3]) {
        let mut inner = self.inner.lock();
        let s = PitState2 { channels: *channels, ..inner.pit.get_state() };
        let t = inner.pit.set_state(&s, now_ns());
        self.apply(&mut inner, t);
    }

    /// `KVM_SET_PIT2`.
    pub(crate) fn set_state(&self, s: &PitState2) {
        let mut inner = self.inner.lock();
        let t = inner.pit.set_state(s, now_ns());
        self.apply(&mut inner, t);
    }

    /// `KVM_REINJECT_CONTROL`.
    pub(crate) fn set_reinject(&self, on: bool) {
        let _serialized = self.inner.lock();
        self.expiry.ticks.set_reinject(on);
    }
}

/// Where an access goes.
enum Port {
    /// 0x40 + n.
    Counter(u16),
    /// 0x61.
    Speaker,
    /// 0x62-0x64: inside the speaker device, which only answers 0x61.
    SpeakerOther,
}

/// The PIT's port for an access of `len` bytes at `port`, if its devices hold it.
fn claim(port: u16, len: u32, speaker: bool) -> Option<Port> {
    let end = u32::from(port).checked_add(len)?;
    if (0x40..0x44).contains(&port) && end <= 0x44 {
        return Some(Port::Counter(port & 3));
    }
    if speaker && (0x61..0x65).contains(&port) && end <= 0x65 {
        return Some(if port == 0x61 { Port::Speaker } else { Port::SpeakerOther });
    }
    None
}

