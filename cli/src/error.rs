//! What can go wrong, and how it is told: `microv: <what>` then `hint: <advice>`.

use std::fmt::Write as _;
use std::io;

use microv_abi::StartError;
use microv_image::FileError;

/// The operation that failed, as it is named in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Start,
    Stop,
    Status,
    Log,
    TestFault,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Status => "status",
            Op::Log => "log",
            Op::TestFault => "test-fault",
        }
    }
}

/// A failure of a `microv` command; exits with status 1.
#[derive(Debug)]
pub enum CliError {
    /// The driver (or the CLI on its behalf, from errno) reported a
    /// [`StartError`] code; `cpu` is `u32::MAX` when not CPU-specific.
    Hv {
        op: Op,
        code: u32,
        cpu: u32,
        detail: u64,
    },
    /// A system call failed with an errno that says nothing more specific.
    Os { op: Op, errno: i32 },
    /// The request makes no sense; said before the driver is asked.
    Usage { message: String, hint: String },
    /// An image file could not be read or is not valid.
    Image(FileError),
    /// Writing the output failed.
    Output(io::Error),
}

impl CliError {
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        CliError::Usage {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// A known failure not tied to a CPU.
    pub fn hv(op: Op, e: StartError) -> Self {
        CliError::Hv {
            op,
            code: e as u32,
            cpu: u32::MAX,
            detail: 0,
        }
    }

    /// Failing to open `/dev/microv` with `errno`.
    pub fn open_failed(op: Op, errno: i32) -> Self {
        match errno {
            libc::ENOENT | libc::ENODEV | libc::ENXIO => CliError::hv(op, StartError::NoDevice),
            libc::EACCES | libc::EPERM => CliError::hv(op, StartError::NotPermitted),
            _ => CliError::Os { op, errno },
        }
    }

    /// An ioctl that returned -1 with `errno` and, in its struct, `code`,
    /// `cpu` and `detail` (0, `u32::MAX`, 0 when the driver filled none).
    pub fn ioctl_failed(op: Op, errno: i32, code: u32, cpu: u32, detail: u64) -> Self {
        if code != 0 {
            return CliError::Hv {
                op,
                code,
                cpu,
                detail,
            };
        }
        match errno {
            libc::EACCES | libc::EPERM => CliError::hv(op, StartError::NotPermitted),
            libc::ENOTTY => CliError::hv(op, StartError::BadRequest),
            _ => CliError::Os { op, errno },
        }
    }

    /// The text to print on stderr: one `microv:` line and usually a
    /// `hint:` line, each ending in a newline.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let hint = match self {
            CliError::Hv {
                op,
                code,
                cpu,
                detail,
            } => {
                let _ = write!(s, "microv: {} failed", op.name());
                if *cpu != u32::MAX {
                    let _ = write!(s, " on CPU {cpu}");
                }
                let known = StartError::from_u32(*code);
                match known {
                    Some(e) => {
                        let _ = write!(s, ": {}", e.message());
                    }
                    None => {
                        let _ = write!(s, ": error code {code} (unknown to this microv)");
                    }
                }
                if *detail != 0 {
                    let _ = write!(s, " (detail {detail:#x})");
                }
                Some(
                    known
                        .map_or(StartError::BadRequest.advice(), StartError::advice)
                        .to_owned(),
                )
            }
            CliError::Os { op, errno } => {
                let _ = write!(
                    s,
                    "microv: {} failed: {}",
                    op.name(),
                    io::Error::from_raw_os_error(*errno)
                );
                None
            }
            CliError::Usage { message, hint } => {
                let _ = write!(s, "microv: {message}");
                Some(hint.clone())
            }
            CliError::Image(e) => {
                let _ = write!(s, "microv: {e}");
                Some(e.advice().to_owned())
            }
            CliError::Output(e) => {
                let _ = write!(s, "microv: cannot write the output: {e}");
                None
            }
        };
        s.push('\n');
        if let Some(h) = hint {
            let _ = writeln!(s, "hint: {h}");
        }
        s
    }
}

impl From<FileError> for CliError {
    fn from(e: FileError) -> Self {
        CliError::Image(e)
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        CliError::Output(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microv_abi::Status;

    #[test]
    fn driver_errors_read_well() {
        let e = CliError::ioctl_failed(
            Op::Start,
            libc::EIO,
            StartError::InjectedFailure as u32,
            1,
            0x2a,
        );
        assert_eq!(
            e.render(),
            "microv: start failed on CPU 1: bring-up failed on purpose (test flag --fail-cpu) (detail 0x2a)\n\
             hint: this is the start-failure test; start without --fail-cpu\n"
        );
        let e = CliError::ioctl_failed(
            Op::Start,
            libc::EBUSY,
            StartError::AlreadyRunning as u32,
            u32::MAX,
            0,
        );
        assert_eq!(
            e.render(),
            "microv: start failed: MicroV is already running\n\
             hint: run `microv stop` first, or `microv status` to see it\n"
        );
        let e = CliError::ioctl_failed(
            Op::Stop,
            libc::EIO,
            StartError::StopRefused as u32,
            u32::MAX,
            0,
        );
        assert_eq!(
            e.render(),
            "microv: stop failed: not every CPU joined the stop in time (MicroV waited about a \
             second for all of them); nothing changed, MicroV keeps running on every CPU\n\
             hint: run `microv stop` again; if it keeps being refused, look for a CPU stuck with \
             interrupts off (`dmesg`) and see `microv log`\n"
        );
        // The driver refuses to start under kernel page-table isolation.
        let e = CliError::ioctl_failed(
            Op::Start,
            libc::EIO,
            StartError::PageTableIsolation as u32,
            u32::MAX,
            0,
        );
        assert_eq!(
            e.render(),
            "microv: start failed: kernel page-table isolation (pti=on) is active; MicroV's \
             hand-back path needs the kernel mapped in every page table\n\
             hint: boot with pti=off (AMD CPUs are not affected by Meltdown and do not need it; on an Intel CPU that is, pti=off gives up the kernel's Meltdown protection)\n"
        );
        // A CPU that stayed behind while others left is not a refusal.
        let e = CliError::ioctl_failed(
            Op::Stop,
            libc::EIO,
            StartError::Unresponsive as u32,
            1,
            Status::Busy.as_u64(),
        );
        assert!(
            e.render().starts_with(
                "microv: stop failed on CPU 1: a CPU did not answer the stop request (detail 0x7)"
            ),
            "{}",
            e.render()
        );
        let e = CliError::ioctl_failed(Op::Stop, libc::EINVAL, 4242, 0, 0);
        assert_eq!(
            e.render(),
            "microv: stop failed on CPU 0: error code 4242 (unknown to this microv)\n\
             hint: the CLI and the driver are from different builds; reinstall both\n"
        );
    }

    #[test]
    fn errno_maps_to_start_errors() {
        for errno in [libc::ENOENT, libc::ENODEV, libc::ENXIO] {
            assert_eq!(
                CliError::open_failed(Op::Status, errno).render(),
                "microv: status failed: the MicroV driver is not loaded (/dev/microv is missing)\n\
                 hint: load it: `modprobe microv` or `insmod /usr/lib/microv/microv.ko`\n"
            );
        }
        for errno in [libc::EACCES, libc::EPERM] {
            let r = CliError::open_failed(Op::Start, errno).render();
            assert_eq!(r, "microv: start failed: only root may start, stop or query MicroV\nhint: run the command as root\n");
            assert_eq!(
                CliError::ioctl_failed(Op::Start, errno, 0, u32::MAX, 0).render(),
                r
            );
        }
        let r = CliError::ioctl_failed(Op::Log, libc::ENOTTY, 0, u32::MAX, 0).render();
        assert!(r.contains("malformed request"), "{r}");
        let r = CliError::ioctl_failed(Op::Stop, libc::EIO, 0, u32::MAX, 0).render();
        assert!(
            r.starts_with("microv: stop failed: Input/output error"),
            "{r}"
        );
        assert!(!r.contains("hint"));
        // The code in the struct wins over errno.
        let r =
            CliError::ioctl_failed(Op::Start, libc::EPERM, StartError::SvmDisabled as u32, 3, 0)
                .render();
        assert!(
            r.starts_with("microv: start failed on CPU 3: SVM is disabled"),
            "{r}"
        );
    }
}
