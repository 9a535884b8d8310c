// SPDX-License-Identifier: GPL-2.0

//! The parts of one emulated access that no RAM backs, given to userspace one `KVM_EXIT_MMIO`
//! at a time, as KVM's `mmio_fragments`.
//!
//! An access covers at most two pages (an MMIO instruction's operand is at most 8 bytes, an
//! INS batch at most 1 KiB in the pages of its first element), so it has at most two MMIO
//! parts. Each part goes out in pieces of at most 8 bytes (`kvm_run.mmio.data`), in address
//! order; the kernel reads and writes the RAM parts itself.

/// At most this many parts (KVM's `KVM_MAX_MMIO_FRAGMENTS`).
pub const MAX: usize = 2;

/// The most one `KVM_EXIT_MMIO` carries.
pub const EXIT_BYTES: u16 = 8;

/// A run of MMIO bytes of one access.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Guest-physical address of its first byte.
    pub gpa: u64,
    /// Where its bytes are in the access's data.
    pub offset: u16,
    /// How many bytes.
    pub len: u16,
}

/// The MMIO parts of one access, and how far userspace has got through them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fragments {
    list: [Fragment; MAX],
    count: u8,
    current: u8,
}

impl Fragments {
    /// Adds the next part (in address order); false if there are already [`MAX`]. Empty parts
    /// are not kept.
    pub fn push(&mut self, f: Fragment) -> bool {
        if f.len == 0 {
            return true;
        }
        match self.list.get_mut(usize::from(self.count)) {
            Some(slot) => {
                *slot = f;
                self.count = self.count.saturating_add(1);
                true
            }
            None => false,
        }
    }

    /// What the next exit carries (at most [`EXIT_BYTES`]), `None` when all went out.
    pub fn current(&self) -> Option<Fragment> {
        if self.current >= self.count {
            return None;
        }
        let f = self.list.get(usize::from(self.current))?;
        Some(Fragment { len: f.len.min(EXIT_BYTES), ..*f })
    }

    /// Whether [`Self::current`] is the last piece (or none is left).
    pub fn is_last(&self) -> bool {
        let mut rest = *self;
        rest.advance().is_none()
    }

    /// Moves past the piece [`Self::current`] gave; returns what the next exit carries.
    pub fn advance(&mut self) -> Option<Fragment> {
        let f = self.list.get_mut(usize::from(self.current))?;
        if f.len > EXIT_BYTES {
            f.gpa = f.gpa.wrapping_add(EXIT_BYTES.into());
            f.offset = f.offset.saturating_add(EXIT_BYTES);
            f.len = f.len.saturating_sub(EXIT_BYTES);
        } else {
            self.current = self.current.saturating_add(1);
        }
        self.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_go_out_in_order_in_pieces_of_8() {
        let mut f = Fragments::default();
        assert!(f.push(Fragment { gpa: 0x1ff4, offset: 0, len: 12 }));
        assert!(f.push(Fragment { gpa: 0x2000, offset: 12, len: 3 }));
        assert!(!f.push(Fragment { gpa: 0x3000, offset: 15, len: 1 }), "at most two parts");
        assert_eq!(f.current(), Some(Fragment { gpa: 0x1ff4, offset: 0, len: 8 }));
        assert!(!f.is_last());
        assert_eq!(f.advance(), Some(Fragment { gpa: 0x1ffc, offset: 8, len: 4 }));
        assert!(!f.is_last(), "the second part follows");
        assert_eq!(f.advance(), Some(Fragment { gpa: 0x2000, offset: 12, len: 3 }));
        assert!(f.is_last());
        assert_eq!(f.advance(), None);
        assert!(f.is_last());
        assert_eq!(f.advance(), None, "stays done");
    }

    #[test]
    fn no_parts_no_exit() {
        let mut f = Fragments::default();
        assert!(f.push(Fragment { gpa: 0x1000, offset: 0, len: 0 }));
        assert_eq!(f.current(), None);
        assert!(f.is_last());
        assert_eq!(f.advance(), None);
    }
}
