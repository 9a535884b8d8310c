// SPDX-License-Identifier: GPL-2.0

//! `KVM_SET_GUEST_DEBUG`: a debugger in userspace single-steps the guest and sets hardware
//! and software breakpoints of its own; the #DB and #BP they cause exit to it with
//! `KVM_EXIT_DEBUG` instead of reaching the guest. Also the DR6 a #DB that rvmx intercepts
//! and hands back to the guest must leave. Pure logic, host-tested.

/// `kvm_guest_debug.control` bits.
pub mod control {
    /// Debugging on; without it the rest is ignored.
    pub const ENABLE: u32 = 1 << 0;
    /// Exit after every guest instruction.
    pub const SINGLESTEP: u32 = 1 << 1;
    /// INT3 exits (#BP).
    pub const USE_SW_BP: u32 = 1 << 16;
    /// The debugger's DR0-3/DR7 replace the guest's.
    pub const USE_HW_BP: u32 = 1 << 17;
    /// Inject a #DB into the guest.
    pub const INJECT_DB: u32 = 1 << 18;
    /// Inject a #BP into the guest.
    pub const INJECT_BP: u32 = 1 << 19;
    /// No interrupts while debugging.
    pub const BLOCKIRQ: u32 = 1 << 20;
    /// Everything rvmx accepts (KVM's x86 `KVM_GUESTDBG_VALID_MASK`).
    pub const VALID: u32 = ENABLE | SINGLESTEP | USE_SW_BP | USE_HW_BP | INJECT_DB | INJECT_BP | BLOCKIRQ;
}

/// `struct kvm_guest_debug` (x86).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestDebugArg {
    /// `control` bits.
    pub control: u32,
    /// Padding.
    pub pad: u32,
    /// DR0-3 and DR7 (indices 4-6 unused) for `USE_HW_BP`.
    pub debugreg: [u64; 8],
}
// SAFETY: `repr(C)` with two `u32`s then `u64`s (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for GuestDebugArg {}

/// The debugger's settings for a vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Debugger {
    /// `control` without the one-shot INJECT bits; 0 when not enabled.
    pub control: u32,
    /// The debugger's DR0-3 (with `USE_HW_BP`).
    pub db: [u64; 4],
    /// The debugger's DR7 (with `USE_HW_BP`).
    pub dr7: u64,
}

/// Vectors.
const DB: u32 = 1;
const BP: u32 = 3;
const AC: u32 = 17;

impl Debugger {
    /// The settings in `a`, or `None` (EINVAL) for a DR7 with bits 63:32 set (VM entry would
    /// fail). Unknown control bits are ignored, as KVM does.
    pub fn from_arg(a: &GuestDebugArg) -> Option<Self> {
        if a.control & control::ENABLE == 0 {
            return Some(Self::default());
        }
        let hw = a.control & control::USE_HW_BP != 0;
        if hw && a.debugreg[7] >> 32 != 0 {
            return None;
        }
        Some(Self {
            control: a.control & control::VALID & !(control::INJECT_DB | control::INJECT_BP),
            db: if hw { [a.debugreg[0], a.debugreg[1], a.debugreg[2], a.debugreg[3]] } else { [0; 4] },
            dr7: if hw { a.debugreg[7] } else { 0 },
        })
    }

    /// Single-stepping: the guest runs with RFLAGS.TF (hidden from it).
    pub fn single_step(&self) -> bool {
        self.control & control::SINGLESTEP != 0
    }

    /// The debugger's DR0-3/DR7 are in force instead of the guest's.
    pub fn hw_breakpoints(&self) -> bool {
        self.control & control::USE_HW_BP != 0
    }

    /// A #DB goes to the debugger, not to the guest.
    pub fn takes_db(&self) -> bool {
        self.single_step() || self.hw_breakpoints()
    }

    /// No interrupts are injected.
    pub fn blocks_irqs(&self) -> bool {
        self.control & control::BLOCKIRQ != 0
    }

    /// The exception bitmap: #DB and #AC always (a guest can make the processor loop
    /// delivering them without ever exiting, CVE-2015-8104 and CVE-2015-5307: rvmx sees each
    /// and hands it back), #BP when the debugger uses software breakpoints.
    pub fn exception_bitmap(&self) -> u32 {
        1 << DB | 1 << AC | if self.control & control::USE_SW_BP != 0 { 1 << BP } else { 0 }
    }
}

/// DR6 bits that read as 1 (KVM's `DR6_ACTIVE_LOW`).
pub const DR6_ACTIVE_LOW: u64 = 0xffff_0ff0;
/// DR6.BS: single step.
pub const DR6_BS: u64 = 1 << 14;

/// The guest's DR6 after a #DB whose exit qualification is `payload` (the DR6 bits the
/// processor would have set) is delivered to it: B0-B3 replaced, the other bits
/// accumulated, the active-low RTM bit inverted as the processor does (KVM's
/// `kvm_deliver_exception_payload`).
pub const fn dr6_after_db(dr6: u64, payload: u64) -> u64 {
    let mut v = dr6 & !0xf;
    v |= DR6_ACTIVE_LOW;
    v |= payload;
    v ^= payload & DR6_ACTIVE_LOW;
    v & !(1 << 12)
}

#[cfg(test)]
mod tests {
    use super::{control::*, *};

    #[test]
    fn settings() {
        let mut a = GuestDebugArg { control: SINGLESTEP, ..Default::default() };
        assert_eq!(Debugger::from_arg(&a), Some(Debugger::default()), "not enabled: nothing");
        a.control = ENABLE | SINGLESTEP | INJECT_DB;
        let d = Debugger::from_arg(&a).unwrap();
        assert!(d.single_step() && d.takes_db() && !d.hw_breakpoints());
        assert_eq!(d.control & INJECT_DB, 0, "one-shot bits are not kept");
        a.control = ENABLE | 1 << 2;
        assert_eq!(Debugger::from_arg(&a).unwrap().control, ENABLE, "unknown bits ignored");
        a = GuestDebugArg { control: ENABLE | USE_HW_BP, debugreg: [1, 2, 3, 4, 0, 0, 0, 0x401], ..Default::default() };
        assert_eq!(Debugger::from_arg(&a).unwrap().db, [1, 2, 3, 4]);
        a.debugreg[7] = 1 << 32;
        assert_eq!(Debugger::from_arg(&a), None);
    }

    #[test]
    fn bitmap() {
        assert_eq!(Debugger::default().exception_bitmap(), 1 << 1 | 1 << 17);
        let d = Debugger { control: ENABLE | USE_SW_BP, ..Default::default() };
        assert_eq!(d.exception_bitmap(), 1 << 1 | 1 << 3 | 1 << 17);
    }

    #[test]
    fn dr6_payloads() {
        assert_eq!(dr6_after_db(0xffff_0ff0, 0x2), 0xffff_0ff2, "data breakpoint 1");
        assert_eq!(dr6_after_db(0xffff_0ff1, 0x4000), 0xffff_4ff0, "single step replaces B0-B3");
        assert_eq!(dr6_after_db(0xffff_4ff0, 0x2000), 0xffff_6ff0, "BD accumulates");
        assert_eq!(dr6_after_db(0xffff_0ff0, 1 << 16), 0xfffe_0ff0, "RTM is active low");
    }
}
