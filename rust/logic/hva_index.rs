// SPDX-License-Identifier: GPL-2.0

//! The slots' host address ranges, sorted by start, with the running maximum of their ends:
//! the MMU notifier finds the slots behind a host range with one binary search and a walk over
//! the candidates (KVM keeps an interval tree), instead of looking at every slot. Every
//! munmap or mprotect in the VMM's process asks.

use core::ops::Range;

/// One slot's host range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvaEntry {
    /// The slot's userspace address.
    pub start: u64,
    /// Its end (exclusive).
    pub end: u64,
    /// Its guest-physical address: unique (slots never overlap), so (start, gpa) orders the
    /// entries.
    pub gpa: u64,
    /// The largest `end` of this entry and of every entry before it.
    pub max_end: u64,
}

impl HvaEntry {
    /// The entry for a slot (its `max_end` is set when it is placed).
    pub fn new(start: u64, size: u64, gpa: u64) -> Self {
        HvaEntry { start, end: start.saturating_add(size), gpa, max_end: 0 }
    }
}

/// Where the entry for (`start`, `gpa`) is, or would go.
pub fn position(entries: &[HvaEntry], start: u64, gpa: u64) -> usize {
    entries.partition_point(|e| (e.start, e.gpa) < (start, gpa))
}

/// The first entry ordered after (`start`, `gpa`): where a walk resumes after that entry
/// when the table may have changed meanwhile.
pub fn after(entries: &[HvaEntry], start: u64, gpa: u64) -> usize {
    entries.partition_point(|e| (e.start, e.gpa) <= (start, gpa))
}

/// Recomputes the running maxima from index `i` on, after an entry was inserted or removed
/// there. Stops as soon as a maximum past `i` is unchanged: the ones after it are, too.
pub fn fix_max_end(entries: &mut [HvaEntry], i: usize) {
    let mut before = i.checked_sub(1).and_then(|p| entries.get(p)).map_or(0, |e| e.max_end);
    for (k, e) in entries.iter_mut().enumerate().skip(i) {
        let m = before.max(e.end);
        if k > i && m == e.max_end {
            break;
        }
        e.max_end = m;
        before = m;
    }
}

/// The first entry that may overlap a range starting at `start`: entries before it all end
/// at or below `start`.
pub fn first_candidate(entries: &[HvaEntry], start: u64) -> usize {
    entries.partition_point(|e| e.max_end <= start)
}

/// Whether an entry overlaps `range`.
pub fn any_overlap(entries: &[HvaEntry], range: &Range<u64>) -> bool {
    entries
        .iter()
        .skip(first_candidate(entries, range.start))
        .take_while(|e| e.start < range.end)
        .any(|e| e.end > range.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(v: &mut Vec<HvaEntry>, start: u64, size: u64, gpa: u64) {
        let p = position(v, start, gpa);
        v.insert(p, HvaEntry::new(start, size, gpa));
        fix_max_end(v, p);
    }

    fn remove(v: &mut Vec<HvaEntry>, start: u64, gpa: u64) {
        let p = position(v, start, gpa);
        assert_eq!((v[p].start, v[p].gpa), (start, gpa));
        v.remove(p);
        fix_max_end(v, p);
    }

    fn check(v: &[HvaEntry]) {
        let mut m = 0;
        for (i, e) in v.iter().enumerate() {
            m = m.max(e.end);
            assert_eq!(e.max_end, m, "running maximum at {i}");
            if i > 0 {
                assert!((v[i - 1].start, v[i - 1].gpa) < (e.start, e.gpa), "sorted");
            }
        }
    }

    fn brute(v: &[HvaEntry], r: &Range<u64>) -> bool {
        v.iter().any(|e| e.start < r.end && r.start < e.end)
    }

    #[test]
    fn finds_exactly_the_overlapping_slots() {
        let mut v = Vec::new();
        // A long slot early, aliases of the same host memory, small slots after.
        insert(&mut v, 0x1000_0000, 0x1000_0000, 0x0);
        insert(&mut v, 0x3000_0000, 0x1000, 0x1_0000_0000);
        insert(&mut v, 0x3000_0000, 0x1000, 0x2_0000_0000);
        insert(&mut v, 0x1800_0000, 0x2000, 0x3_0000_0000);
        insert(&mut v, 0x4000_0000, 0x10_0000, 0x4_0000_0000);
        check(&v);
        for r in [0..0x1000_0000, 0x1fff_f000..0x2000_0000, 0x2000_0000..0x3000_0000, 0x2fff_ffff..0x3000_0001,
                  0x3000_1000..0x4000_0000, 0x400f_ffff..u64::MAX, 0..u64::MAX, 0x1800_1000..0x1800_2000] {
            assert_eq!(any_overlap(&v, &r), brute(&v, &r), "{r:x?}");
        }
        remove(&mut v, 0x1000_0000, 0);
        check(&v);
        assert!(!any_overlap(&v, &(0x1000_0000..0x1800_0000)), "the long slot is gone");
        assert!(any_overlap(&v, &(0x1800_1000..0x1800_2000)));
        remove(&mut v, 0x3000_0000, 0x1_0000_0000);
        check(&v);
        assert!(any_overlap(&v, &(0x3000_0000..0x3000_1000)), "the alias stays");
    }

    #[test]
    fn walks_resume_after_an_entry_even_if_it_went() {
        let mut v = Vec::new();
        for k in 0..8u64 {
            insert(&mut v, 0x10_0000 * k, 0x1000, 0x1000 * k);
        }
        assert_eq!(after(&v, 0x30_0000, 0x3000), 4);
        remove(&mut v, 0x30_0000, 0x3000);
        assert_eq!(after(&v, 0x30_0000, 0x3000), 3, "the next one, now at 3");
        check(&v);
    }

    #[test]
    fn random_tables_agree_with_a_scan() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut v: Vec<HvaEntry> = Vec::new();
        for round in 0..2000u64 {
            if v.len() > 20 && next(3) == 0 {
                let e = v[next(v.len() as u64) as usize];
                remove(&mut v, e.start, e.gpa);
            } else {
                insert(&mut v, next(64) << 12, (next(16) + 1) << 12, round << 20);
            }
            check(&v);
            let a = next(80) << 12;
            let r = a..a + ((next(8) + 1) << 12);
            assert_eq!(any_overlap(&v, &r), brute(&v, &r));
        }
    }
}
