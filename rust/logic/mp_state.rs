// SPDX-License-Identifier: GPL-2.0

//! A vCPU's activity state with an in-kernel local APIC (`KVM_GET/SET_MP_STATE`) and what
//! INIT and SIPI do to it (KVM's `kvm_apic_accept_events`). Without one, every vCPU is
//! always runnable and userspace's APIC models the rest.

/// `KVM_MP_STATE_*` as x86 KVM has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpState {
    /// Running (`KVM_MP_STATE_RUNNABLE`).
    Runnable,
    /// An AP before its first INIT (`KVM_MP_STATE_UNINITIALIZED`).
    Uninitialized,
    /// Waiting for SIPI after INIT (`KVM_MP_STATE_INIT_RECEIVED`).
    InitReceived,
    /// In HLT (`KVM_MP_STATE_HALTED`).
    Halted,
    /// SEV-ES's AP reset hold (`KVM_MP_STATE_AP_RESET_HOLD`): accepted as KVM does, and
    /// woken like HLT.
    ApResetHold,
}

/// The ABI values.
pub mod abi {
    /// `KVM_MP_STATE_RUNNABLE`.
    pub const RUNNABLE: u32 = 0;
    /// `KVM_MP_STATE_UNINITIALIZED`.
    pub const UNINITIALIZED: u32 = 1;
    /// `KVM_MP_STATE_INIT_RECEIVED`.
    pub const INIT_RECEIVED: u32 = 2;
    /// `KVM_MP_STATE_HALTED`.
    pub const HALTED: u32 = 3;
    /// `KVM_MP_STATE_SIPI_RECEIVED` (obsolete: set as INIT_RECEIVED with a SIPI pending).
    pub const SIPI_RECEIVED: u32 = 4;
    /// `KVM_MP_STATE_AP_RESET_HOLD`.
    pub const AP_RESET_HOLD: u32 = 9;
}

impl MpState {
    /// A new vCPU's state (`kvm_arch_vcpu_create`): an AP with an in-kernel APIC waits for
    /// INIT; everything else runs.
    pub const fn initial(lapic_in_kernel: bool, bsp: bool) -> Self {
        if lapic_in_kernel && !bsp {
            Self::Uninitialized
        } else {
            Self::Runnable
        }
    }

    /// `KVM_GET_MP_STATE`'s value.
    pub const fn abi(self) -> u32 {
        match self {
            Self::Runnable => abi::RUNNABLE,
            Self::Uninitialized => abi::UNINITIALIZED,
            Self::InitReceived => abi::INIT_RECEIVED,
            Self::Halted => abi::HALTED,
            Self::ApResetHold => abi::AP_RESET_HOLD,
        }
    }

    /// `KVM_SET_MP_STATE` (`kvm_arch_vcpu_ioctl_set_mpstate`): the state and whether a SIPI
    /// is now pending; `None` (`EINVAL`) for an unknown state, or for any but RUNNABLE
    /// without an in-kernel APIC.
    pub const fn from_abi(v: u32, lapic_in_kernel: bool) -> Option<(Self, bool)> {
        let s = match v {
            abi::RUNNABLE => return Some((Self::Runnable, false)),
            abi::UNINITIALIZED => (Self::Uninitialized, false),
            abi::INIT_RECEIVED => (Self::InitReceived, false),
            abi::HALTED => (Self::Halted, false),
            abi::SIPI_RECEIVED => (Self::InitReceived, true),
            abi::AP_RESET_HOLD => (Self::ApResetHold, false),
            _ => return None,
        };
        if lapic_in_kernel {
            Some(s)
        } else {
            None
        }
    }

    /// The guest runs (`kvm_vcpu_running`); else the vCPU blocks until an event.
    pub const fn runs(self) -> bool {
        matches!(self, Self::Runnable)
    }

    /// After blocking ended with the vCPU runnable (`vcpu_block`): HLT and reset hold end.
    pub const fn woken(self) -> Self {
        match self {
            Self::Halted | Self::ApResetHold => Self::Runnable,
            s => s,
        }
    }
}

/// INIT and SIPI received and not yet acted on (KVM's `apic->pending_events` and
/// `sipi_vector`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InitSipi {
    init: bool,
    sipi: bool,
    sipi_vector: u8,
    /// In SMM: an INIT waits (latched, not pending), SIPIs are dropped.
    blocked: bool,
}

/// What [`InitSipi::accept`] asks of the vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Reset the vCPU as INIT does (`kvm_vcpu_reset(vcpu, true)`), first.
    pub init: bool,
    /// Then start at `vector << 12` (CS selector `vector << 8`, RIP 0).
    pub sipi: Option<u8>,
}

impl InitSipi {
    /// An INIT arrived: it replaces a pending SIPI.
    pub fn latch_init(&mut self) {
        *self = Self { init: true, sipi: false, ..*self };
    }

    /// A SIPI arrived with `vector` (dropped in SMM).
    pub fn latch_sipi(&mut self, vector: u8) {
        self.sipi_vector = vector;
        self.sipi = !self.blocked;
    }

    /// A SIPI is pending with the vector last latched (`KVM_SET_MP_STATE(SIPI_RECEIVED)`).
    pub fn pend_sipi(&mut self) {
        self.sipi = true;
    }

    /// Entering SMM (`on`) or leaving it: in SMM an INIT stays latched for after RSM and a SIPI
    /// is dropped (`kvm_apic_accept_events` while `kvm_apic_init_sipi_allowed` is false).
    pub fn set_blocked(&mut self, on: bool) {
        self.blocked = on;
        self.sipi &= !on;
    }

    /// Whether an INIT is latched (`KVM_GET_VCPU_EVENTS`' `smi.latched_init`).
    pub const fn init_latched(&self) -> bool {
        self.init
    }

    /// Latches or drops an INIT (`KVM_SET_VCPU_EVENTS` with `KVM_VCPUEVENT_VALID_SMM`).
    pub fn set_init_latched(&mut self, on: bool) {
        self.init = on;
    }

    /// Either is pending (`kvm_apic_has_pending_init_or_sipi`, an INIT only outside SMM): a
    /// blocked vCPU wakes.
    pub const fn pending(&self) -> bool {
        (self.init && !self.blocked) || self.sipi
    }

    /// Acts on what is pending (`kvm_apic_accept_events`): INIT resets the vCPU into
    /// INIT_RECEIVED (an AP) or RUNNABLE (the BSP); a SIPI then starts a vCPU in
    /// INIT_RECEIVED and is dropped in any other state.
    pub fn accept(&mut self, state: &mut MpState, bsp: bool) -> Accepted {
        let mut a = Accepted::default();
        if self.blocked {
            return a;
        }
        if core::mem::take(&mut self.init) {
            a.init = true;
            *state = if bsp { MpState::Runnable } else { MpState::InitReceived };
        }
        if core::mem::take(&mut self.sipi) && *state == MpState::InitReceived {
            a.sipi = Some(self.sipi_vector);
            *state = MpState::Runnable;
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_values() {
        assert_eq!(abi::RUNNABLE, kvm_bindings::KVM_MP_STATE_RUNNABLE);
        assert_eq!(abi::UNINITIALIZED, kvm_bindings::KVM_MP_STATE_UNINITIALIZED);
        assert_eq!(abi::INIT_RECEIVED, kvm_bindings::KVM_MP_STATE_INIT_RECEIVED);
        assert_eq!(abi::HALTED, kvm_bindings::KVM_MP_STATE_HALTED);
        assert_eq!(abi::SIPI_RECEIVED, kvm_bindings::KVM_MP_STATE_SIPI_RECEIVED);
        assert_eq!(abi::AP_RESET_HOLD, kvm_bindings::KVM_MP_STATE_AP_RESET_HOLD);
    }

    #[test]
    fn set_rules() {
        assert_eq!(MpState::from_abi(0, false), Some((MpState::Runnable, false)));
        for v in [1, 2, 3, 4, 9] {
            assert_eq!(MpState::from_abi(v, false), None, "state {v} needs an in-kernel APIC");
        }
        assert_eq!(MpState::from_abi(4, true), Some((MpState::InitReceived, true)), "SIPI_RECEIVED");
        assert_eq!(MpState::from_abi(3, true), Some((MpState::Halted, false)));
        for v in [5, 6, 7, 8, 10, 11, u32::MAX] {
            assert_eq!(MpState::from_abi(v, true), None, "state {v} is not x86's");
        }
        for s in [MpState::Runnable, MpState::Uninitialized, MpState::InitReceived, MpState::Halted, MpState::ApResetHold] {
            assert_eq!(MpState::from_abi(s.abi(), true).map(|x| x.0), Some(s));
        }
        assert_eq!(MpState::initial(true, false), MpState::Uninitialized);
        assert_eq!(MpState::initial(true, true), MpState::Runnable);
        assert_eq!(MpState::initial(false, false), MpState::Runnable);
    }

    #[test]
    fn init_then_sipi() {
        let mut p = InitSipi::default();
        let mut s = MpState::Uninitialized;
        p.latch_sipi(0x12);
        assert_eq!(p.accept(&mut s, false), Accepted::default(), "a SIPI before INIT is dropped");
        assert_eq!(s, MpState::Uninitialized);
        p.latch_init();
        assert!(p.pending());
        assert_eq!(p.accept(&mut s, false), Accepted { init: true, sipi: None });
        assert_eq!(s, MpState::InitReceived);
        p.latch_sipi(0x9a);
        p.latch_sipi(0x9b);
        assert_eq!(p.accept(&mut s, false), Accepted { init: false, sipi: Some(0x9b) });
        assert_eq!(s, MpState::Runnable);
        assert!(!p.pending());
        // INIT to the BSP: reset, runnable; a SIPI with it is dropped.
        let mut bsp = MpState::Halted;
        p.latch_init();
        p.latch_sipi(1);
        assert_eq!(p.accept(&mut bsp, true), Accepted { init: true, sipi: None });
        assert_eq!(bsp, MpState::Runnable);
        // INIT replaces a pending SIPI; SIPI_RECEIVED reuses the last vector.
        p.latch_sipi(7);
        p.latch_init();
        let mut ap = MpState::Runnable;
        assert_eq!(p.accept(&mut ap, false), Accepted { init: true, sipi: None });
        p.pend_sipi();
        assert_eq!(p.accept(&mut ap, false).sipi, Some(7));
    }

    #[test]
    fn waking() {
        assert_eq!(MpState::Halted.woken(), MpState::Runnable);
        assert_eq!(MpState::ApResetHold.woken(), MpState::Runnable);
        assert_eq!(MpState::InitReceived.woken(), MpState::InitReceived);
        assert!(MpState::Runnable.runs() && !MpState::Halted.runs());
    }

    #[test]
    fn smm_latches_init_and_drops_sipi() {
        let mut i = InitSipi::default();
        i.set_blocked(true);
        i.latch_init();
        i.latch_sipi(0x12);
        assert!(!i.pending() && i.init_latched(), "a latched INIT does not wake the vCPU in SMM");
        let mut state = MpState::Runnable;
        assert_eq!(i.accept(&mut state, false), Accepted::default());
        i.set_blocked(false);
        assert!(i.pending());
        assert_eq!(i.accept(&mut state, false), Accepted { init: true, sipi: None }, "the SIPI was dropped");
        assert_eq!(state, MpState::InitReceived);
    }
}
