//! The user's end of the guest's serial console: what the user types on stdin goes to COM1's
//! receive FIFO (the UART raises IRQ4 when the guest asked for it). When stdin is a terminal it
//! is switched to character mode without local echo (the guest echoes) and restored at the
//! end, also when a signal such as Ctrl-C ends `rvmx run`.

use std::{io::Write, sync::OnceLock, time::Duration};

use crate::vmm::machine::Machine;

/// The terminal's settings before `rvmx run` changed them, for the signal handler.
static SAVED: OnceLock<libc::termios> = OnceLock::new();

/// Restores stdin's terminal settings when dropped.
pub struct Terminal(bool);

extern "C" fn restore_and_die(sig: libc::c_int) {
    if let Some(t) = SAVED.get() {
        // SAFETY: tcsetattr, signal and raise are async-signal-safe; `t` is a valid termios.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
    }
    // SAFETY: back to the default action, then the signal again: the process ends as it would have.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

impl Terminal {
    /// Character mode without echo if stdin is a terminal; nothing otherwise.
    pub fn raw() -> Self {
        // SAFETY: a zeroed termios is valid storage for tcgetattr to fill.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: isatty and tcgetattr only read fd 0's state into `t`.
        if unsafe { libc::isatty(0) } != 1 || unsafe { libc::tcgetattr(0, &mut t) } < 0 {
            return Terminal(false);
        }
        let _ = SAVED.set(t);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            // SAFETY: the handler only calls async-signal-safe functions.
            unsafe { libc::signal(sig, restore_and_die as *const () as libc::sighandler_t) };
        }
        t.c_lflag &= !(libc::ICANON | libc::ECHO);
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        // SAFETY: `t` is the terminal's own settings with two flags changed.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        Terminal(true)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let (true, Some(t)) = (self.0, SAVED.get()) {
            // SAFETY: restores the settings read in `raw`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

/// Feeds stdin to the guest's COM1 until end of input or until the VM stops.
pub fn pump<W: Write>(m: &Machine<W>) {
    let mut buf = [0u8; 256];
    while !m.stopping() {
        let mut pfd = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; a 100 ms timeout lets the loop see the VM stop.
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        // SAFETY: reads at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            m.set_input_open(false); // end of input (or an error): the guest gets no more
            return;
        }
        let mut rest = &buf[..n as usize];
        while !rest.is_empty() && !m.stopping() {
            let mut isa = m.isa();
            let took = isa.serial_input(rest);
            m.update_irqs(&mut isa);
            drop(isa);
            m.kick(0, None); // the userspace 8259 is wired to CPU 0
            rest = &rest[took..];
            if took == 0 {
                std::thread::sleep(Duration::from_millis(5)); // the FIFO is full: let the guest read
            }
        }
    }
}
