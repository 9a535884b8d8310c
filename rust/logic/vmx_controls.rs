// SPDX-License-Identifier: GPL-2.0

//! VM-execution, VM-exit and VM-entry control bits (SDM vol. 3C, 25.6-25.8), named once.
//! Which of them rvmx sets, and why, is vmx/guest_state.rs. Pure.

/// Pin-based VM-execution controls.
pub mod pin {
    /// External interrupts exit.
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    /// NMIs exit.
    pub const NMI_EXITING: u32 = 1 << 3;
    /// Virtual NMIs: the guest's NMI blocking is tracked, NMI windows exist.
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    /// The VMX-preemption timer counts down in the guest and exits at zero.
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
}

/// Primary processor-based VM-execution controls.
#[allow(missing_docs)]
pub mod proc {
    /// Exit as soon as the guest can take an interrupt.
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    /// The guest's TSC is the host's plus the TSC offset.
    pub const TSC_OFFSETTING: u32 = 1 << 3;
    pub const HLT_EXITING: u32 = 1 << 7;
    pub const MWAIT_EXITING: u32 = 1 << 10;
    pub const RDPMC_EXITING: u32 = 1 << 11;
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    /// CR8 reads and writes use the TPR in the virtual-APIC page; a write exits only when it
    /// lowers the TPR below the TPR threshold.
    pub const USE_TPR_SHADOW: u32 = 1 << 21;
    /// Exit as soon as the guest can take an NMI.
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    /// Every IN/OUT exits (no I/O bitmaps).
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    /// RDMSR/WRMSR exit as the MSR bitmaps say.
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const MONITOR_EXITING: u32 = 1 << 29;
    /// The secondary controls are in force.
    pub const SECONDARY_CONTROLS: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls.
#[allow(missing_docs)]
pub mod proc2 {
    pub const ENABLE_EPT: u32 = 1 << 1;
    /// RDTSCP and RDPID work (else #UD).
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    pub const ENABLE_VPID: u32 = 1 << 5;
    pub const WBINVD_EXITING: u32 = 1 << 6;
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const RDRAND_EXITING: u32 = 1 << 11;
    /// INVPCID works (else #UD).
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    /// ENCLS exits as the ENCLS-exiting bitmap says.
    pub const ENCLS_EXITING: u32 = 1 << 15;
    pub const RDSEED_EXITING: u32 = 1 << 16;
    pub const ENABLE_PML: u32 = 1 << 17;
}

/// VM-exit controls.
#[allow(missing_docs)]
pub mod exit {
    /// DR7 and IA32_DEBUGCTL are saved in the guest-state area.
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The host is in 64-bit mode after the exit.
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const SAVE_PAT: u32 = 1 << 18;
    pub const LOAD_PAT: u32 = 1 << 19;
    pub const SAVE_EFER: u32 = 1 << 20;
    pub const LOAD_EFER: u32 = 1 << 21;
    /// The timer's value is saved at exit (it counts on across entries, not from its start).
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;
}

/// VM-entry controls.
#[allow(missing_docs)]
pub mod entry {
    /// DR7 and IA32_DEBUGCTL are loaded from the guest-state area.
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The guest is in IA-32e mode (EFER.LMA).
    pub const IA32E_MODE: u32 = 1 << 9;
    pub const LOAD_PAT: u32 = 1 << 14;
    pub const LOAD_EFER: u32 = 1 << 15;
}
