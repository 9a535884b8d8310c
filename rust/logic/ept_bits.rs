// SPDX-License-Identifier: GPL-2.0

//! EPT entry and pointer encodings (SDM vol. 3, 29.3.2). Pure logic, host-tested; the tables
//! themselves live in vmx/ept.rs.

/// Entry bit 0: reads allowed.
pub const READ: u64 = 1 << 0;
/// Entry bit 1: writes allowed.
pub const WRITE: u64 = 1 << 1;
/// Entry bit 2: instruction fetches allowed.
pub const EXECUTE: u64 = 1 << 2;
/// Leaf bits 5:3: memory type write-back.
pub const MEMTYPE_WB: u64 = 6 << 3;
/// Leaf bit 6: ignore the guest's PAT. Guest RAM is host RAM the host maps write-back: a
/// guest must not alias it UC or WC (KVM sets it for RAM without non-coherent DMA).
pub const IGNORE_PAT: u64 = 1 << 6;
/// Physical-address bits 51:12 of an entry.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Bit 7 of a level-2 or level-3 entry: it maps a 2-MiB or 1-GiB page (reserved in PML4Es).
pub const LARGE_PAGE: u64 = 1 << 7;

/// EPT pointer for the 4-level table rooted at physical address `root`: write-back paging
/// structures, walk length 4.
pub const fn eptp(root: u64) -> u64 {
    (root & ADDR_MASK) | (3 << 3) | 6
}

/// A non-leaf entry pointing at the table at physical address `table`.
pub const fn table_entry(table: u64) -> u64 {
    (table & ADDR_MASK) | READ | WRITE | EXECUTE
}

/// A 4 KiB leaf mapping host page `hpa`, write-back whatever the guest's PAT says;
/// `writable` false makes guest writes fault (read-only slots: the write becomes an MMIO exit).
pub const fn leaf_entry(hpa: u64, writable: bool) -> u64 {
    (hpa & ADDR_MASK) | READ | EXECUTE | MEMTYPE_WB | IGNORE_PAT | if writable { WRITE } else { 0 }
}

/// Whether an entry maps anything (any of R/W/X set).
pub const fn present(entry: u64) -> bool {
    entry & (READ | WRITE | EXECUTE) != 0
}

/// Index into the table at `level` (4 = PML4 .. 1 = PT) for guest-physical address `gpa`.
pub const fn index(gpa: u64, level: u32) -> usize {
    // Each level translates 9 bits, from bit 12 at level 1.
    let shift = match level { 1 => 12, 2 => 21, 3 => 30, _ => 39 };
    ((gpa >> shift) & 0x1ff) as usize
}

/// Why `entry`, found at `level` (4 = PML4 .. 1 = PT) of a walk, is an EPT misconfiguration
/// (SDM vol. 3, 29.3.3.1), or `None` if it is not. Execute-only entries count as
/// misconfigured: rvmx does not enable them. Reserved physical-address bits are not checked.
pub const fn misconfiguration(entry: u64, level: u32) -> Option<&'static str> {
    if !present(entry) {
        return None;
    }
    if entry & WRITE != 0 && entry & READ == 0 {
        return Some("writable but not readable");
    }
    if entry & READ == 0 {
        return Some("execute-only");
    }
    let large = entry & LARGE_PAGE != 0;
    if level == 4 && entry & (0x1f << 3) != 0 {
        return Some("reserved bits 7:3 set in a PML4 entry");
    }
    if level == 1 || (large && level <= 3) {
        match (entry >> 3) & 7 {
            2 | 3 | 7 => return Some("reserved memory type"),
            _ => {}
        }
    } else if entry & (0xf << 3) != 0 {
        return Some("reserved bits 6:3 set in a non-leaf entry");
    }
    None
}

/// EPT-violation exit qualification bits (SDM 28.2.1, table 28-7).
pub mod violation {
    /// The access was a data read.
    pub const READ: u64 = 1 << 0;
    /// The access was a data write.
    pub const WRITE: u64 = 1 << 1;
    /// The access was an instruction fetch.
    pub const FETCH: u64 = 1 << 2;
    /// The guest-physical address was readable (bits 5:3 give the entry's permissions).
    pub const WAS_READABLE: u64 = 1 << 3;
    /// The guest linear address field holds the linear address of the access.
    pub const LINEAR_VALID: u64 = 1 << 7;
    /// With [`LINEAR_VALID`]: the access was to that linear address's translation (not to a
    /// paging-structure entry on the way).
    pub const LINEAR_TRANSLATED: u64 = 1 << 8;

    /// Whether the exit gives the linear address whose translation the access used.
    pub const fn translated_linear(qualification: u64) -> bool {
        qualification & (LINEAR_VALID | LINEAR_TRANSLATED) == LINEAR_VALID | LINEAR_TRANSLATED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(eptp(0x1234_5000), 0x1234_501e);
        assert_eq!(table_entry(0xabc000), 0xabc007);
        assert_eq!(leaf_entry(0x5000, true), 0x5077);
        assert_eq!(leaf_entry(0x5000, false), 0x5075);
        assert!(!present(0) && present(READ));
        assert!(violation::translated_linear(0x181) && violation::translated_linear(0x182));
        assert!(!violation::translated_linear(0x81) && !violation::translated_linear(0x101));
    }

    #[test]
    fn misconfigurations() {
        for level in 1..=4 {
            assert_eq!(misconfiguration(0, level), None);
            assert_eq!(misconfiguration(table_entry(0x5000), level), None, "table at {level}");
            assert!(misconfiguration(WRITE, level).is_some());
            assert!(misconfiguration(EXECUTE, level).is_some());
        }
        assert_eq!(misconfiguration(leaf_entry(0x5000, true), 1), None);
        assert_eq!(misconfiguration(leaf_entry(0x5000, false), 1), None);
        assert!(misconfiguration(READ | 2 << 3, 1).is_some(), "memory type 2");
        assert!(misconfiguration(READ | 7 << 3, 1).is_some(), "memory type 7");
        assert!(misconfiguration(READ | 1 << 7 | 3 << 3, 2).is_some(), "2M page, memory type 3");
        assert!(misconfiguration(READ | 1 << 7, 4).is_some(), "large bit in a PML4 entry");
        assert!(misconfiguration(READ | 6 << 3, 3).is_some(), "memory type in a non-leaf");
    }

    #[test]
    fn indices() {
        let gpa = (1u64 << 39) * 3 + (1 << 30) * 5 + (1 << 21) * 7 + (1 << 12) * 9 + 0x123;
        assert_eq!([index(gpa, 4), index(gpa, 3), index(gpa, 2), index(gpa, 1)], [3, 5, 7, 9]);
    }
}
