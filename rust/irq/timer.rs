// SPDX-License-Identifier: GPL-2.0

//! The local APIC timer on a host hrtimer, as KVM's software timer (`lapic.c`'s
//! `apic_timer_fn`): one-shot and periodic from TMICT, TSC-deadline from IA32_TSC_DEADLINE.
//! At expiry the callback posts a tick in the vCPU's [`Mailbox`] and kicks the vCPU; the vCPU
//! delivers LVTT when it takes the tick (several ticks are one interrupt, as KVM's `pending`).
//! The arithmetic (periods, TMCCT, restored counts) is `logic/lapic.rs`'s.

use core::sync::atomic::{AtomicI64, Ordering::Relaxed};
use kernel::{
    impl_has_hr_timer,
    prelude::*,
    sync::{Arc, ArcBorrow},
    time::{
        hrtimer::{AbsoluteSoftMode, ArcHrTimerHandle, HrTimer, HrTimerCallback, HrTimerCallbackContext, HrTimerPointer, HrTimerRestart},
        Delta, Instant, Monotonic,
    },
};

use super::{bus::ApicBus, mailbox::Mailbox};

/// What the hrtimer's callback needs: where to post, and the period of a periodic timer.
#[pin_data]
pub(crate) struct Expiry {
    #[pin]
    timer: HrTimer<Expiry>,
    mailbox: Arc<Mailbox>,
    bus: Arc<ApicBus>,
    /// The period while periodic, else 0 (read at each expiry: LVTT may change the mode of
    /// a running timer).
    period_ns: AtomicI64,
}

impl_has_hr_timer! {
    impl HasHrTimer<Self> for Expiry { mode: AbsoluteSoftMode<Monotonic>, field: self.timer }
}

impl HrTimerCallback for Expiry {
    type Pointer<'a> = Arc<Self>;

    /// Softirq context (the mailbox's lock and the wakeup are not raw spinlocks, which a hard
    /// interrupt may not take): post, kick, and go on a period later if periodic.
    fn run(this: ArcBorrow<'_, Self>, mut ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        this.mailbox.post(|p, _| p.timer_ticks = p.timer_ticks.saturating_add(1));
        this.bus.kick(&this.mailbox);
        match this.period_ns.load(Relaxed) {
            p if p > 0 => {
                ctx.forward_now(Delta::from_nanos(p));
                HrTimerRestart::Restart
            }
            _ => HrTimerRestart::NoRestart,
        }
    }
}

/// A vCPU's APIC timer.
pub(crate) struct ApicTimer {
    expiry: Arc<Expiry>,
    /// Set while the timer is started; dropping it cancels the hrtimer.
    running: Option<ArcHrTimerHandle<Expiry>>,
}

impl ApicTimer {
    pub(crate) fn new(mailbox: Arc<Mailbox>, bus: Arc<ApicBus>) -> Result<Self> {
        let expiry = Arc::pin_init(
            pin_init!(Expiry { timer <- HrTimer::new(), mailbox, bus, period_ns: AtomicI64::new(0) }),
            GFP_KERNEL_ACCOUNT,
        )?;
        Ok(Self { expiry, running: None })
    }

    /// Stops the timer (waiting for a callback that runs) and drops ticks not yet taken.
    pub(crate) fn cancel(&mut self) {
        self.running = None;
        self.expiry.mailbox.clear_timer_ticks();
    }

    /// Starts it to expire `ns` from now (at once for 0), then every `period_ns` if that is
    /// not 0 (KVM's `start_apic_timer`: ticks not taken are dropped).
    pub(crate) fn start(&mut self, ns: u64, period_ns: u64) {
        self.cancel();
        self.expiry.period_ns.store(i64::try_from(period_ns).unwrap_or(i64::MAX), Relaxed);
        let at = after(ns);
        self.running = Some(self.expiry.clone().start(at));
    }

    /// LVTT changed a running timer between one-shot and periodic.
    pub(crate) fn set_period(&self, period_ns: u64) {
        self.expiry.period_ns.store(i64::try_from(period_ns).unwrap_or(i64::MAX), Relaxed);
    }

    /// Nanoseconds to the next expiry (negative once passed); `None` if stopped.
    pub(crate) fn remaining_ns(&self) -> Option<i64> {
        self.running.as_ref()?;
        Some(until(self.expiry.timer.expires()))
    }
}

/// Nanoseconds from now to `expires` (negative once passed): what an hrtimer has left.
pub(crate) fn until(expires: Instant<Monotonic>) -> i64 {
    // Two monotonic times (both in 0..=KTIME_MAX): the difference fits.
    #[allow(clippy::arithmetic_side_effects)]
    let left = expires - Instant::<Monotonic>::now();
    left.as_nanos()
}

/// The furthest a guest's timer is set: 2^62 ns (146 years) from now, so that the sum with
/// the monotonic clock stays below KTIME_MAX (the kernel's `Instant + Delta` panics past it).
const MAX_NS: u64 = 1 << 62;

/// The monotonic time `ns` from now, `ns` capped at [`MAX_NS`] (the APIC timer's and the
/// PIT's).
pub(crate) fn after(ns: u64) -> Instant<Monotonic> {
    let delta = Delta::from_nanos(ns.min(MAX_NS) as i64); // at most 2^62: fits
    // The clock is far below 2^62 (146 years of uptime), and `delta` at most 2^62.
    #[allow(clippy::arithmetic_side_effects)]
    let at = Instant::<Monotonic>::now() + delta;
    at
}
