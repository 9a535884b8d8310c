// SPDX-License-Identifier: GPL-2.0

//! Debug registers and IA32_DEBUGCTL.
//!
//! Every guest MOV to or from a debug register exits (MOV-DR exiting), so a guest never
//! writes the host's DR0-3 or DR6 behind rvmx's back: the guest's DR0-3 and DR6 are kept in
//! [`GuestDebug`], its DR7 too and in the VMCS (loaded at each entry). Only while the guest's
//! DR7 arms a breakpoint are its DR0-3 in the hardware, for that window. After each window,
//! what VM exits clobber is put back before interrupts are on: DR7 (exits leave 0x400, which
//! would silently disarm the host's hardware breakpoints and watchpoints), DR6 when the guest
//! changed it, DR0-3 when the guest's were loaded, and IA32_DEBUGCTL (exits clear it).

use crate::{
    host::x86,
    logic::arch::{dr, msr},
};

/// IA32_DEBUGCTL (absent on some emulated CPUs, e.g. Bochs).
const IA32_DEBUGCTL: u32 = msr::DEBUGCTL;

/// Whether this CPU has IA32_DEBUGCTL (checked once at load).
pub(crate) fn has_debugctl() -> bool {
    x86::rdmsr_safe(IA32_DEBUGCTL).is_some()
}

/// Reads DR`n` (0-3).
fn read_db(n: usize) -> u64 {
    x86::read_dr((n & 3) as u8)
}

/// Writes DR`n` (0-3). Interrupts off, inside a window that restores the host's.
fn write_db(n: usize, v: u64) {
    // SAFETY: callers are inside an interrupts-off window that puts the host's DR0-3 back
    // before it ends (`HostDebug::restore`).
    unsafe { x86::write_dr((n & 3) as u8, v) };
}

/// A vCPU's debug registers.
#[derive(Clone, Copy)]
pub(crate) struct GuestDebug {
    pub(crate) db: [u64; 4],
    pub(crate) dr6: u64,
    pub(crate) dr7: u64,
}

impl Default for GuestDebug {
    fn default() -> Self {
        Self { db: [0; 4], dr6: dr::DR6_RESET, dr7: dr::DR7_RESET }
    }
}

impl GuestDebug {
    /// Whether DR7 enables a breakpoint (its DR0-3 must then be in the hardware).
    pub(crate) fn armed(&self) -> bool {
        self.dr7 & dr::DR7_ENABLES != 0
    }
}

/// The host's debug state while a window runs the guest.
pub(crate) struct HostDebug {
    dr7: u64,
    dr6: u64,
    /// The host's DR0-3, when the guest's were loaded instead.
    db: Option<[u64; 4]>,
    /// The host's IA32_DEBUGCTL, when non-zero.
    debugctl: u64,
}

impl HostDebug {
    /// Saves the host's debug state and loads the guest's DR6 and, if armed, DR0-3.
    /// Interrupts must be off until [`HostDebug::restore`].
    pub(crate) fn switch_to_guest(g: &GuestDebug, has_debugctl: bool) -> Self {
        let debugctl = if has_debugctl { x86::rdmsr_safe(IA32_DEBUGCTL).unwrap_or(0) } else { 0 };
        let h = Self { dr7: x86::read_dr(7), dr6: x86::read_dr(6), db: g.armed().then(|| [0, 1, 2, 3].map(read_db)), debugctl };
        if g.dr6 != h.dr6 {
            // SAFETY: inside the window, which puts the host's DR6 back (`HostDebug::restore`).
            unsafe { x86::write_dr(6, g.dr6) };
        }
        if h.db.is_some() {
            // Disarm the host's breakpoints before their addresses become the guest's (KVM
            // writes DR7 first too): a host breakpoint must never fire on a guest-chosen
            // address. The VM exits leave DR7 at its reset value; `restore` rearms it.
            // SAFETY: inside the window, which puts the host's DR7 back (`HostDebug::restore`).
            unsafe { x86::write_dr(7, 0u64) };
            for (n, v) in g.db.iter().enumerate() {
                write_db(n, *v);
            }
        }
        h
    }

    /// Whether the guest's DR0-3 are in the hardware in this window.
    pub(crate) fn guest_db_loaded(&self) -> bool {
        self.db.is_some()
    }

    /// Keeps the guest's DR6 (a #DB in the guest sets it) and puts the host's state back.
    pub(crate) fn restore(self, g: &mut GuestDebug) {
        g.dr6 = x86::read_dr(6);
        if g.dr6 != self.dr6 {
            // SAFETY: the host's own DR6, saved in `switch_to_guest`.
            unsafe { x86::write_dr(6, self.dr6) };
        }
        if let Some(db) = self.db {
            for (n, v) in db.iter().enumerate() {
                write_db(n, *v);
            }
        }
        if self.dr7 != dr::DR7_RESET || self.db.is_some() {
            // SAFETY: the host's own DR7, saved in `switch_to_guest`.
            unsafe { x86::write_dr(7, self.dr7) };
        }
        if self.debugctl != 0 {
            // SAFETY: the value just read from this MSR on this CPU (interrupts off since).
            unsafe { crate::host::x86::wrmsr(IA32_DEBUGCTL, self.debugctl) };
        }
    }
}

/// A guest's MOV to DR0-3 inside the window: into the hardware too if the guest's are loaded.
pub(crate) fn set_db(g: &mut GuestDebug, host: &HostDebug, n: usize, v: u64) {
    if let Some(db) = g.db.get_mut(n & 3) {
        *db = v;
    }
    if host.guest_db_loaded() {
        write_db(n & 3, v);
    }
}

/// A guest's MOV to DR6 inside the window: the hardware holds the guest's DR6.
pub(crate) fn set_dr6(g: &mut GuestDebug, v: u64) {
    g.dr6 = v;
    // SAFETY: inside the window, which puts the host's DR6 back (`HostDebug::restore`).
    unsafe { x86::write_dr(6, v) };
}

/// The guest's DR6 inside the window (the hardware's, which a #DB may have changed).
pub(crate) fn dr6() -> u64 {
    x86::read_dr(6)
}
