// SPDX-License-Identifier: GPL-2.0

//! `KVM_IOEVENTFD` as KVM decides it: which registrations are valid, which collide, which
//! one a deassignment names, and which guest write signals which eventfd (virt/kvm/eventfd.c).
//! Pure logic, tested on the host; the module keeps the eventfds (kvm/ioeventfd.rs).

/// `struct kvm_ioeventfd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoEventFdArg {
    /// The value a write must have (with [`flags::DATAMATCH`]).
    pub datamatch: u64,
    /// Guest-physical (MMIO) or port (PIO) address.
    pub addr: u64,
    /// Access width in bytes: 1, 2, 4 or 8; 0 (MMIO only in practice) for any width.
    pub len: u32,
    /// The eventfd.
    pub fd: i32,
    /// [`flags`].
    pub flags: u32,
    /// Padding.
    pub pad: [u32; 9],
}
// SAFETY: `repr(C)` with integers only, the padding an explicit field (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for IoEventFdArg {}

/// `KVM_IOEVENTFD_FLAG_*`.
pub mod flags {
    /// Signal only for writes of `datamatch`.
    pub const DATAMATCH: u32 = 1 << 0;
    /// A port, not a guest-physical address.
    pub const PIO: u32 = 1 << 1;
    /// Remove the registration instead.
    pub const DEASSIGN: u32 = 1 << 2;
    /// s390's virtio-ccw notification bus (accepted as KVM does; never written on x86).
    pub const VIRTIO_CCW_NOTIFY: u32 = 1 << 3;
    /// A hint with no effect on x86 (accepted as KVM does).
    pub const FAST_MMIO: u32 = 1 << 4;
    /// Every flag KVM knows.
    pub const VALID: u32 = DATAMATCH | PIO | DEASSIGN | VIRTIO_CCW_NOTIFY | FAST_MMIO;
}

/// The bus a registration listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    /// Guest-physical writes that exit as MMIO.
    Mmio,
    /// `OUT` to a port.
    Pio,
    /// virtio-ccw notifications (no such writes on x86).
    Ccw,
}

/// A registration, without its eventfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Bus.
    pub bus: Bus,
    /// Address or port.
    pub addr: u64,
    /// Width, 0 for any.
    pub len: u32,
    /// The value to match; `None` for any (a wildcard).
    pub datamatch: Option<u64>,
}

/// Why a request is refused (KVM's errno).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// EINVAL.
    Invalid,
}

impl Rule {
    /// The registration `arg` describes, checked as KVM's `kvm_assign_ioeventfd` checks it
    /// (width, range overflow, unknown flags, DATAMATCH without a width). Deassignment
    /// checks nothing more than the bus and fields, as KVM.
    pub fn from_arg(arg: &IoEventFdArg) -> Result<Self, Refusal> {
        let bus = if arg.flags & flags::PIO != 0 {
            Bus::Pio
        } else if arg.flags & flags::VIRTIO_CCW_NOTIFY != 0 {
            Bus::Ccw
        } else {
            Bus::Mmio
        };
        let datamatch = (arg.flags & flags::DATAMATCH != 0).then_some(arg.datamatch);
        let rule = Self { bus, addr: arg.addr, len: arg.len, datamatch };
        if arg.flags & flags::DEASSIGN != 0 {
            return Ok(rule);
        }
        if !matches!(arg.len, 0 | 1 | 2 | 4 | 8)
            || arg.addr.checked_add(arg.len as u64).is_none()
            || arg.flags & !flags::VALID != 0
            || (arg.len == 0 && datamatch.is_some())
        {
            return Err(Refusal::Invalid);
        }
        Ok(rule)
    }

    /// Whether registering `self` next to `other` is refused with EEXIST: same bus and
    /// address, and either of them takes any width, or equal widths where either takes any
    /// value or both the same value.
    pub fn collides(&self, other: &Rule) -> bool {
        self.bus == other.bus
            && self.addr == other.addr
            && (self.len == 0
                || other.len == 0
                || (self.len == other.len
                    && match (self.datamatch, other.datamatch) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    }))
    }

    /// Whether a guest write of `len` bytes of `value` at `addr` on `bus` signals this rule.
    pub fn matches(&self, bus: Bus, addr: u64, len: u32, value: u64) -> bool {
        if self.bus != bus || self.addr != addr {
            return false;
        }
        if self.len == 0 {
            return true;
        }
        if self.len != len {
            return false;
        }
        let mask = if len >= 8 { !0 } else { !(u64::MAX << (len << 3)) }; // len << 3: bits
        self.datamatch.is_none_or(|d| d == value & mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(addr: u64, len: u32, flags: u32, datamatch: u64) -> IoEventFdArg {
        IoEventFdArg { addr, len, flags, datamatch, fd: 3, ..Default::default() }
    }

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<IoEventFdArg>(), 64);
        assert_eq!(core::mem::offset_of!(IoEventFdArg, flags), 24);
    }

    #[test]
    fn validity() {
        assert_eq!(Rule::from_arg(&arg(0x700, 3, flags::PIO, 0)), Err(Refusal::Invalid));
        assert_eq!(Rule::from_arg(&arg(!0, 4, 0, 0)), Err(Refusal::Invalid), "range overflow");
        assert_eq!(Rule::from_arg(&arg(0x1000, 4, 1 << 5, 0)), Err(Refusal::Invalid), "unknown flag");
        assert!(Rule::from_arg(&arg(0x1000, 4, flags::FAST_MMIO, 0)).is_ok());
        assert_eq!(Rule::from_arg(&arg(0x1000, 0, flags::DATAMATCH, 0)), Err(Refusal::Invalid));
        let r = Rule::from_arg(&arg(0x700, 2, flags::PIO | flags::DATAMATCH, 0x55)).unwrap();
        assert_eq!(r, Rule { bus: Bus::Pio, addr: 0x700, len: 2, datamatch: Some(0x55) });
        // A deassignment is only looked up.
        assert!(Rule::from_arg(&arg(0x700, 3, flags::PIO | flags::DEASSIGN, 0)).is_ok());
    }

    #[test]
    fn collisions() {
        let any = Rule { bus: Bus::Mmio, addr: 0x1000, len: 0, datamatch: None };
        let four = Rule { len: 4, ..any };
        let four_1 = Rule { datamatch: Some(1), ..four };
        let four_2 = Rule { datamatch: Some(2), ..four };
        assert!(any.collides(&four_1) && four_1.collides(&any));
        assert!(four.collides(&four_1), "a wildcard covers every value");
        assert!(!four_1.collides(&four_2));
        assert!(!four_1.collides(&Rule { len: 2, ..four_1 }));
        assert!(!four.collides(&Rule { bus: Bus::Pio, ..four }));
    }

    #[test]
    fn matching() {
        let r = Rule { bus: Bus::Pio, addr: 0x700, len: 1, datamatch: Some(0x42) };
        assert!(r.matches(Bus::Pio, 0x700, 1, 0x1142), "only the written bytes count");
        assert!(!r.matches(Bus::Pio, 0x700, 1, 0x43));
        assert!(!r.matches(Bus::Pio, 0x700, 2, 0x42), "width must be exact");
        assert!(!r.matches(Bus::Mmio, 0x700, 1, 0x42));
        let any = Rule { bus: Bus::Mmio, addr: 0x1000, len: 0, datamatch: None };
        assert!(any.matches(Bus::Mmio, 0x1000, 8, 7) && !any.matches(Bus::Mmio, 0x1004, 4, 7));
    }
}
