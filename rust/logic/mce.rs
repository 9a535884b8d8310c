// SPDX-License-Identifier: GPL-2.0

//! The guest's machine-check architecture, as KVM offers it: IA32_MCG_CAP/STATUS/CTL, the
//! banks' CTL/STATUS/ADDR/MISC and CTL2 MSRs, `KVM_X86_SETUP_MCE` and `KVM_X86_SET_MCE`.
//!
//! No machine check of the host ever reaches a guest; userspace injects them (QEMU does on a
//! SIGBUS for poisoned guest memory) and restores the MSRs. QEMU also writes every bank at
//! reset, so a KVM client cannot start without them. Pure logic, tested on the host.

/// Banks a vCPU may have (`KVM_CAP_MCE`).
pub const MAX_BANKS: usize = 32;

/// IA32_MCG_CAP bits.
pub mod cap {
    /// IA32_MCG_CTL is present.
    pub const CTL_P: u64 = 1 << 8;
    /// Corrected machine-check interrupts (IA32_MCi_CTL2).
    pub const CMCI_P: u64 = 1 << 10;
    /// Software error recovery.
    pub const SER_P: u64 = 1 << 24;
    /// The bank count.
    pub const COUNT: u64 = 0xff;
    /// Extended state registers count (17:16... 23:16), accepted as KVM does.
    pub const EXT_CNT: u64 = 0xff_0000;
}

/// What `KVM_X86_GET_MCE_CAP_SUPPORTED` reports: KVM's with VMX, but local machine checks
/// (MCG_LMCE_P, which needs IA32_MCG_EXT_CTL and FEATURE_CONTROL's LMCE bit).
pub const SUPPORTED_CAP: u64 = cap::CTL_P | cap::SER_P | cap::CMCI_P;

/// MSR numbers.
pub mod msr {
    /// Pentium machine-check address (reads 0).
    pub const P5_MC_ADDR: u32 = 0x0;
    /// Pentium machine-check type (reads 0).
    pub const P5_MC_TYPE: u32 = 0x1;
    /// IA32_MCG_CAP (read-only).
    pub const MCG_CAP: u32 = 0x179;
    /// IA32_MCG_STATUS.
    pub const MCG_STATUS: u32 = 0x17a;
    /// IA32_MCG_CTL.
    pub const MCG_CTL: u32 = 0x17b;
    /// IA32_MC0_CTL2; bank i at +i.
    pub const MC0_CTL2: u32 = 0x280;
    /// IA32_MC0_CTL; bank i's CTL, STATUS, ADDR, MISC at +4i .. +4i+3.
    pub const MC0_CTL: u32 = 0x400;
}

/// IA32_MCG_STATUS.MCIP: a machine check is in progress.
pub const MCG_STATUS_MCIP: u64 = 1 << 2;

/// IA32_MCi_STATUS bits.
pub mod status {
    /// Valid.
    pub const VAL: u64 = 1 << 63;
    /// An earlier error was overwritten.
    pub const OVER: u64 = 1 << 62;
    /// Uncorrected.
    pub const UC: u64 = 1 << 61;
    /// Processor context corrupt.
    pub const PCC: u64 = 1 << 57;
    /// Signaled as a machine check.
    pub const S: u64 = 1 << 56;
    /// Action required.
    pub const AR: u64 = 1 << 55;
}

/// IA32_MCi_CTL2: CMCI enabled for the bank.
pub const CTL2_CMCI_EN: u64 = 1 << 30;
/// IA32_MCi_CTL2 bits a guest may set: CMCI enable and the threshold.
const CTL2_VALID: u64 = CTL2_CMCI_EN | 0x7fff;

/// `struct kvm_x86_mce`: an error for `KVM_X86_SET_MCE` to put in a bank.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct X86Mce {
    /// IA32_MCi_STATUS.
    pub status: u64,
    /// IA32_MCi_ADDR.
    pub addr: u64,
    /// IA32_MCi_MISC.
    pub misc: u64,
    /// IA32_MCG_STATUS to set with an uncorrected error.
    pub mcg_status: u64,
    /// The bank.
    pub bank: u8,
    /// Padding.
    pub pad1: [u8; 7],
    /// Padding.
    pub pad2: [u64; 3],
}
// SAFETY: `repr(C)` with `u64`s, a `u8` and its explicit pads (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for X86Mce {}

/// What `KVM_X86_SET_MCE` asks of the vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    /// Recorded in the bank (a corrected error), or dropped because reporting is disabled.
    Recorded,
    /// Recorded, and signalled with a CMCI through the local APIC's LVT CMCI (an uncorrected
    /// no-action error in a bank with CMCI enabled).
    Cmci,
    /// Deliver a #MC exception.
    MachineCheck,
    /// A machine check while one is in progress, or with CR4.MCE clear: shutdown.
    TripleFault,
}

/// One vCPU's machine-check registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mce {
    /// IA32_MCG_CAP.
    pub cap: u64,
    /// IA32_MCG_STATUS.
    pub status: u64,
    /// IA32_MCG_CTL.
    pub ctl: u64,
    /// CTL, STATUS, ADDR, MISC of each bank.
    pub banks: [u64; 4 * MAX_BANKS],
    /// IA32_MCi_CTL2 of each bank.
    pub ctl2: [u64; MAX_BANKS],
}

impl Default for Mce {
    /// KVM's state at vCPU creation: every bank present, no MCG_CTL, all registers 0.
    fn default() -> Self {
        Self { cap: MAX_BANKS as u64, status: 0, ctl: 0, banks: [0; 4 * MAX_BANKS], ctl2: [0; MAX_BANKS] }
    }
}

/// Ends of the MCi_CTL2 and MCi_CTL.. MSR ranges for [`MAX_BANKS`] banks.
const CTL2_END: u32 = msr::MC0_CTL2 + MAX_BANKS as u32;
const CTL_END: u32 = msr::MC0_CTL + 4 * MAX_BANKS as u32;

impl Mce {
    fn bank_count(&self) -> usize {
        (self.cap & cap::COUNT) as usize
    }

    /// Slot of MCi_CTL2 `index` in `ctl2`, for banks this vCPU has.
    fn ctl2_slot(&self, index: u32) -> Option<usize> {
        let k = index.checked_sub(msr::MC0_CTL2)? as usize;
        (k < self.bank_count()).then_some(k)
    }

    /// Slot of MCi_CTL/STATUS/ADDR/MISC `index` in `banks`, for banks this vCPU has.
    fn bank_slot(&self, index: u32) -> Option<usize> {
        let k = index.checked_sub(msr::MC0_CTL)? as usize;
        (k / 4 < self.bank_count()).then_some(k)
    }

    /// Whether `index` is one of the machine-check MSRs (existing for this vCPU or not).
    pub fn owns(index: u32) -> bool {
        matches!(index, msr::P5_MC_ADDR | msr::P5_MC_TYPE | msr::MCG_CAP | msr::MCG_STATUS | msr::MCG_CTL)
            || (msr::MC0_CTL2..CTL2_END).contains(&index)
            || (msr::MC0_CTL..CTL_END).contains(&index)
    }

    /// `KVM_X86_SETUP_MCE`: 1 to 32 banks and only supported capability bits (`EINVAL`
    /// otherwise). MCG_CTL and each bank's CTL start all ones.
    pub fn setup(&mut self, mcg_cap: u64) -> Result<(), ()> {
        let banks = (mcg_cap & cap::COUNT) as usize;
        if banks == 0 || banks > MAX_BANKS || mcg_cap & !(SUPPORTED_CAP | cap::COUNT | cap::EXT_CNT) != 0 {
            return Err(());
        }
        self.cap = mcg_cap;
        if mcg_cap & cap::CTL_P != 0 {
            self.ctl = !0;
        }
        for ctl in self.banks.iter_mut().step_by(4).take(banks) {
            *ctl = !0;
        }
        if mcg_cap & cap::CMCI_P != 0 {
            self.ctl2.iter_mut().take(banks).for_each(|c| *c = 0);
        }
        Ok(())
    }

    /// RDMSR of a machine-check MSR; `None` if absent (#GP). `host`: userspace's read.
    pub fn read(&self, index: u32, host: bool) -> Option<u64> {
        Some(match index {
            msr::P5_MC_ADDR | msr::P5_MC_TYPE => 0,
            msr::MCG_CAP => self.cap,
            msr::MCG_CTL if self.cap & cap::CTL_P != 0 || host => self.ctl,
            msr::MCG_STATUS => self.status,
            i if self.ctl2_slot(i).is_some() => {
                if self.cap & cap::CMCI_P == 0 && !host {
                    return None;
                }
                *self.ctl2.get(self.ctl2_slot(i)?)?
            }
            i => *self.banks.get(self.bank_slot(i)?)?,
        })
    }

    /// WRMSR of a machine-check MSR; `Err(())` is #GP (or a refused `KVM_SET_MSRS` entry).
    pub fn write(&mut self, index: u32, v: u64, host: bool) -> Result<(), ()> {
        match index {
            msr::MCG_STATUS => self.status = v,
            msr::MCG_CTL => {
                if (self.cap & cap::CTL_P == 0 && (v != 0 || !host)) || (v != 0 && v != !0) {
                    return Err(());
                }
                self.ctl = v;
            }
            i if self.ctl2_slot(i).is_some() => {
                if (self.cap & cap::CMCI_P == 0 && (v != 0 || !host)) || v & !CTL2_VALID != 0 {
                    return Err(());
                }
                *self.ctl2_slot(i).and_then(|k| self.ctl2.get_mut(k)).ok_or(())? = v;
            }
            i if self.bank_slot(i).is_some() => {
                let reg = i % 4; // MC0_CTL is 4-aligned
                // CTL: 0 or all ones (bits 10 and 0 may be clear, as some guests do).
                if reg == 0 && v != 0 && v | 1 << 10 | 1 != !0 {
                    return Err(());
                }
                // STATUS: the guest may only clear it (Intel).
                if reg == 1 && v != 0 && !host {
                    return Err(());
                }
                *self.bank_slot(i).and_then(|k| self.banks.get_mut(k)).ok_or(())? = v;
            }
            _ => return Err(()),
        }
        Ok(())
    }

    /// `KVM_X86_SET_MCE`: records `e` in its bank with KVM's rules. `Err(())` (`EINVAL`) for
    /// a bank the vCPU lacks or a status without VAL. `cr4_mce`: the guest's CR4.MCE.
    pub fn inject(&mut self, e: &X86Mce, cr4_mce: bool) -> Result<Injected, ()> {
        let bank = e.bank as usize;
        if bank >= self.bank_count() || e.status & status::VAL == 0 {
            return Err(());
        }
        // CTL, STATUS, ADDR, MISC of the bank.
        let [ctl, held, addr, misc] = self.banks.as_chunks_mut::<4>().0.get_mut(bank).ok_or(())?;
        let uc = e.status & status::UC != 0;
        let ucna = e.mcg_status == 0 && e.status & (status::PCC | status::S | status::AR) == 0 && uc;
        if ucna {
            // Uncorrected, no action required: recorded, signalled if the bank asks for CMCIs.
            (*held, *addr, *misc) = (e.status, e.addr, e.misc);
            self.status = e.mcg_status;
            let cmci = self.cap & cap::CMCI_P != 0 && self.ctl2.get(bank).is_some_and(|c| c & CTL2_CMCI_EN != 0);
            return Ok(if cmci { Injected::Cmci } else { Injected::Recorded });
        }
        let mut st = e.status;
        if uc {
            // Reporting disabled globally or for the bank: dropped.
            if (self.cap & cap::CTL_P != 0 && self.ctl != !0) || *ctl != !0 {
                return Ok(Injected::Recorded);
            }
            if self.status & MCG_STATUS_MCIP != 0 || !cr4_mce {
                return Ok(Injected::TripleFault);
            }
            if *held & status::VAL != 0 {
                st |= status::OVER;
            }
            (*held, *addr, *misc) = (st, e.addr, e.misc);
            self.status = e.mcg_status;
            return Ok(Injected::MachineCheck);
        }
        // Corrected: kept unless an uncorrected error is already there.
        if *held & status::VAL == 0 || *held & status::UC == 0 {
            if *held & status::VAL != 0 {
                st |= status::OVER;
            }
            (*held, *addr, *misc) = (st, e.addr, e.misc);
        } else {
            *held |= status::OVER;
        }
        Ok(Injected::Recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_state_and_setup() {
        let mut m = Mce::default();
        assert_eq!(m.read(msr::MCG_CAP, false), Some(32));
        assert_eq!(m.read(msr::MCG_CTL, false), None, "no MCG_CTL_P yet");
        assert_eq!(m.read(msr::MCG_CTL, true), Some(0));
        assert_eq!(m.write(msr::MCG_CTL, !0, true), Err(()), "QEMU must call SETUP_MCE first");
        assert_eq!(m.setup(0), Err(()));
        assert_eq!(m.setup(33), Err(()));
        assert_eq!(m.setup(1 << 27 | 10), Err(()), "LMCE not offered");
        assert_eq!(m.setup(SUPPORTED_CAP | 10), Ok(()));
        assert_eq!(m.read(msr::MCG_CTL, false), Some(!0));
        assert_eq!(m.read(msr::MC0_CTL + 4 * 9, false), Some(!0));
        assert_eq!(m.read(msr::MC0_CTL + 4 * 10, true), None, "bank 10 absent");
        assert!(Mce::owns(msr::MC0_CTL + 4 * 31 + 3) && !Mce::owns(msr::MC0_CTL + 4 * 32));
    }

    #[test]
    fn msr_writes() {
        let mut m = Mce::default();
        m.setup(cap::CTL_P | 10).unwrap();
        assert_eq!(m.write(msr::MCG_CTL, 0, false), Ok(()));
        assert_eq!(m.write(msr::MCG_CTL, 5, true), Err(()));
        assert_eq!(m.write(msr::MC0_CTL, !0 & !(1 << 10), false), Ok(()));
        assert_eq!(m.write(msr::MC0_CTL, 0xff, false), Err(()));
        assert_eq!(m.write(msr::MC0_CTL + 1, 0, false), Ok(()), "the guest may clear a status");
        assert_eq!(m.write(msr::MC0_CTL + 1, status::VAL, false), Err(()));
        assert_eq!(m.write(msr::MC0_CTL + 1, status::VAL, true), Ok(()), "userspace restores it");
        assert_eq!(m.write(msr::MC0_CTL2, 0, true), Ok(()));
        assert_eq!(m.write(msr::MC0_CTL2, 1 << 30, true), Err(()), "no CMCI");
        assert_eq!(m.write(msr::MCG_CAP, 1, true), Err(()), "read-only");
        // With CMCI: the guest may set CMCI_EN and the threshold, nothing else.
        m.setup(cap::CMCI_P | 10).unwrap();
        assert_eq!(m.write(msr::MC0_CTL2 + 7, CTL2_CMCI_EN | 5, false), Ok(()));
        assert_eq!(m.read(msr::MC0_CTL2 + 7, false), Some(CTL2_CMCI_EN | 5));
        assert_eq!(m.write(msr::MC0_CTL2 + 7, 1 << 29, false), Err(()), "reserved bit");
        assert_eq!(m.write(msr::MC0_CTL2 + 10, 0, true), Err(()), "bank 10 absent");
    }

    #[test]
    fn ucna_signals_a_cmci_where_the_bank_enables_it() {
        // kvm_vcpu_x86_set_ucna.
        let ucna = X86Mce { status: status::VAL | status::UC | 0x10090, addr: 0xdead_beef, misc: 0x8c, bank: 7, ..Default::default() };
        let mut m = Mce::default();
        m.setup(cap::CMCI_P | 10).unwrap();
        assert_eq!(m.inject(&ucna, true), Ok(Injected::Recorded), "CMCI not enabled in the bank");
        m.write(msr::MC0_CTL2 + 7, CTL2_CMCI_EN, false).unwrap();
        assert_eq!(m.inject(&ucna, true), Ok(Injected::Cmci));
        assert_eq!(m.read(msr::MC0_CTL + 4 * 7 + 2, false), Some(0xdead_beef));
        assert_eq!(m.inject(&X86Mce { mcg_status: 1, ..ucna }, true), Ok(Injected::MachineCheck), "not a UCNA");
        let mut m = Mce::default();
        m.setup(10).unwrap();
        m.ctl2[7] = CTL2_CMCI_EN;
        assert_eq!(m.inject(&ucna, true), Ok(Injected::Recorded), "no MCG_CMCI_P");
    }

    #[test]
    fn injection() {
        let mut m = Mce::default();
        m.setup(SUPPORTED_CAP | 2).unwrap();
        let uc = X86Mce { status: status::VAL | status::UC | status::S, addr: 0x1000, mcg_status: 5, bank: 1, ..Default::default() };
        assert_eq!(m.inject(&X86Mce { bank: 2, ..uc }, true), Err(()));
        assert_eq!(m.inject(&X86Mce { status: status::UC, ..uc }, true), Err(()));
        assert_eq!(m.inject(&uc, false), Ok(Injected::TripleFault), "CR4.MCE clear");
        assert_eq!(m.inject(&uc, true), Ok(Injected::MachineCheck));
        assert_eq!((m.read(msr::MC0_CTL + 5, true), m.read(msr::MC0_CTL + 6, true)), (Some(uc.status), Some(0x1000)));
        assert_eq!(m.read(msr::MCG_STATUS, true), Some(5));
        assert_eq!(m.inject(&uc, true), Ok(Injected::TripleFault), "MCIP set");
        // A corrected error next to an uncorrected one only sets OVER.
        m.status = 0;
        let ce = X86Mce { status: status::VAL, bank: 1, ..Default::default() };
        assert_eq!(m.inject(&ce, true), Ok(Injected::Recorded));
        assert_eq!(m.read(msr::MC0_CTL + 5, true), Some(uc.status | status::OVER));
        // Reporting disabled for bank 0: an uncorrected error is dropped.
        m.write(msr::MC0_CTL, 0, true).unwrap();
        assert_eq!(m.inject(&X86Mce { bank: 0, ..uc }, true), Ok(Injected::Recorded));
        assert_eq!(m.read(msr::MC0_CTL + 1, true), Some(0));
    }
}
