//! The guest's serial console on the user's terminal: input from a file
//! descriptor (stdin) into the UART's FIFO, with QEMU's escape (Ctrl-A X
//! ends the VM, Ctrl-A Ctrl-A sends Ctrl-A), and raw mode while a terminal
//! is attached.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::control::{RunControl, StopReason};
use crate::devices::serial::SerialDevice;

pub const CTRL_A: u8 = 0x01;

/// How often the input thread looks at the stop flag while waiting.
const POLL_MS: i32 = 100;

/// Turns keystrokes into guest input, watching for Ctrl-A X.
#[derive(Debug, Default)]
pub struct EscapeFilter {
    after_ctrl_a: bool,
}

impl EscapeFilter {
    /// Appends to `out` what the guest should receive; returns true when
    /// the user asked to end the VM (the rest of `input` is dropped).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if std::mem::take(&mut self.after_ctrl_a) {
                match b {
                    b'x' | b'X' => return true,
                    CTRL_A => out.push(CTRL_A),
                    other => out.extend_from_slice(&[CTRL_A, other]),
                }
            } else if b == CTRL_A {
                self.after_ctrl_a = true;
            } else {
                out.push(b);
            }
        }
        false
    }
}

/// The terminal in raw mode; restores the saved mode when dropped.
pub struct RawTerminal {
    fd: OwnedFd,
    saved: libc::termios,
}

impl RawTerminal {
    /// Puts the terminal on `fd` in raw mode; `None` when `fd` is not a
    /// terminal (a pipe, a file, /dev/null).
    pub fn enter(fd: BorrowedFd<'_>) -> io::Result<Option<RawTerminal>> {
        // SAFETY: isatty only inspects the descriptor, which `fd` keeps open.
        if unsafe { libc::isatty(fd.as_raw_fd()) } != 1 {
            return Ok(None);
        }
        let fd = fd.try_clone_to_owned()?;
        // SAFETY: termios is plain data; all-zero is a valid value that
        // tcgetattr overwrites.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open and `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `fd` is open and `raw` a valid termios.
        if unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(RawTerminal { fd, saved }))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: `fd` is open and `saved` is what tcgetattr returned.
        unsafe { libc::tcsetattr(self.fd.as_raw_fd(), libc::TCSANOW, &self.saved) };
    }
}

/// Waits up to [`POLL_MS`] for `fd` to be readable (or hung up).
fn readable(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    match unsafe { libc::poll(&mut p, 1, POLL_MS) } {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Moves what the guest has room for from `pending` into the UART.
fn push(serial: &Mutex<SerialDevice>, pending: &mut Vec<u8>) -> bool {
    let Ok(mut s) = serial.lock() else {
        return false;
    };
    match s.enqueue_input(pending) {
        Ok(n) => {
            pending.drain(..n.min(pending.len()));
            true
        }
        Err(_) => false,
    }
}

fn input_loop(input: File, serial: &Mutex<SerialDevice>, control: &RunControl) {
    let mut filter = EscapeFilter::default();
    let mut pending = Vec::new();
    let mut buf = [0u8; 64];
    let mut input = input;
    while !control.is_stopping() {
        if !pending.is_empty() {
            if !push(serial, &mut pending) {
                control.request_stop(StopReason::ConsoleFailed);
                return;
            }
            if !pending.is_empty() {
                // The guest has not drained its FIFO yet.
                thread::sleep(Duration::from_millis(2));
            }
            continue;
        }
        match readable(input.as_fd()) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => {
                control.request_stop(StopReason::ConsoleFailed);
                return;
            }
        }
        match input.read(&mut buf) {
            // End of input: the guest keeps running without a keyboard.
            Ok(0) => return,
            Ok(n) => {
                if filter.feed(buf.get(..n).unwrap_or_default(), &mut pending) {
                    control.request_stop(StopReason::Quit);
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            Err(_) => {
                control.request_stop(StopReason::ConsoleFailed);
                return;
            }
        }
    }
}

/// Starts the thread that feeds `input` to the guest's serial port. It
/// ends when the VM stops (within [`POLL_MS`]) or the input ends.
pub fn spawn_input(
    input: &dyn AsFd,
    serial: Arc<Mutex<SerialDevice>>,
    control: Arc<RunControl>,
) -> io::Result<JoinHandle<()>> {
    let file = File::from(input.as_fd().try_clone_to_owned()?);
    thread::Builder::new()
        .name("console-in".into())
        .spawn(move || input_loop(file, &serial, &control))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusDevice;
    use crate::devices::serial::tests::{CountingLine, SharedBuf};
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    fn feed(f: &mut EscapeFilter, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let quit = f.feed(input, &mut out);
        (out, quit)
    }

    #[test]
    fn escape_sequences() {
        let mut f = EscapeFilter::default();
        assert_eq!(feed(&mut f, b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(feed(&mut f, b"a\x01\x01b"), (b"a\x01b".to_vec(), false));
        assert_eq!(feed(&mut f, b"\x01c"), (b"\x01c".to_vec(), false));
        // Split across reads.
        assert_eq!(feed(&mut f, b"z\x01"), (b"z".to_vec(), false));
        assert_eq!(feed(&mut f, b"x rest"), (Vec::new(), true));
        let mut f = EscapeFilter::default();
        assert_eq!(feed(&mut f, b"\x01X"), (Vec::new(), true));
    }

    fn serial() -> Arc<Mutex<SerialDevice>> {
        Arc::new(Mutex::new(SerialDevice::new(
            Arc::new(CountingLine::default()),
            Box::new(SharedBuf::default()),
        )))
    }

    fn drain(s: &Mutex<SerialDevice>) -> Vec<u8> {
        let mut got = Vec::new();
        let mut d = [0u8; 1];
        loop {
            let mut s = s.lock().unwrap();
            s.read(5, &mut d);
            if d[0] & 1 == 0 {
                return got;
            }
            s.read(0, &mut d);
            got.push(d[0]);
        }
    }

    #[test]
    fn input_reaches_the_uart_and_ctrl_a_x_stops() {
        let (mut user, vm_side) = UnixStream::pair().unwrap();
        let s = serial();
        let control = Arc::new(RunControl::new());
        let t = spawn_input(&vm_side, s.clone(), control.clone()).unwrap();
        // More than the FIFO holds: the rest waits until the guest reads.
        let line: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
        user.write_all(&line).unwrap();
        let mut got = Vec::new();
        for _ in 0..500 {
            got.extend(drain(&s));
            if got.len() >= line.len() {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(got, line);
        user.write_all(b"\x01x").unwrap();
        t.join().unwrap();
        assert_eq!(control.reason(), Some(StopReason::Quit));
    }

    #[test]
    fn end_of_input_leaves_the_vm_running() {
        let (user, vm_side) = UnixStream::pair().unwrap();
        let control = Arc::new(RunControl::new());
        let t = spawn_input(&vm_side, serial(), control.clone()).unwrap();
        drop(user);
        t.join().unwrap();
        assert!(!control.is_stopping());
    }

    #[test]
    fn a_stopping_vm_ends_the_thread() {
        let (_user, vm_side) = UnixStream::pair().unwrap();
        let control = Arc::new(RunControl::new());
        let t = spawn_input(&vm_side, serial(), control.clone()).unwrap();
        control.request_stop(StopReason::PowerOff);
        t.join().unwrap();
    }

    #[test]
    fn a_pipe_is_not_a_terminal() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(RawTerminal::enter(a.as_fd()).unwrap().is_none());
    }
}
