//! `\EFI\microv\microv.conf`: what microv.efi boots after MicroV, and with
//! what. One `key = value` per line; `#` starts a comment.
//!
//! ```text
//! kernel  = \EFI\microv\vmlinuz      # Linux, through its EFI stub
//! initrd  = \EFI\microv\initrd.img   # optional
//! cmdline = root=/dev/sda2 ro quiet  # optional
//! boot    = next                     # instead of kernel=: the next boot entry
//! pool    = 64M                      # MicroV's memory (2M steps, 2M..512M)
//! log     = info                     # or debug
//! microv  = off                      # boot the OS without MicroV (default on)
//! test-fail-cpu = 1                  # tests only: CPU 1's bring-up fails
//! test-silent-cpu = 1                # tests only: CPU 1 is never started
//! ```
//!
//! A line this parser does not understand is an error, not ignored: a typo
//! must not change what boots silently.

use alloc::string::{String, ToString};
use core::fmt;

/// The configuration file, on the volume microv.efi was loaded from.
pub const PATH: &str = "\\EFI\\microv\\microv.conf";

/// Pool size when the file names none (as `microv start`'s default).
pub const DEFAULT_POOL: u64 = 64 << 20;
/// Pool sizes are whole 2 MiB chunks.
pub const POOL_STEP: u64 = 2 << 20;
/// The largest pool MicroV supports.
pub const MAX_POOL: u64 = 512 << 20;

/// What to boot once MicroV runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// A Linux kernel through its EFI stub; the stub loads the initrd
    /// (`initrd=` on its command line, a path on the same volume).
    Linux {
        kernel: String,
        initrd: Option<String>,
        cmdline: String,
    },
    /// Whatever the firmware boots after microv.efi: it returns, and the
    /// boot manager goes on to the next entry of BootOrder.
    Next,
}

impl Boot {
    /// The Linux kernel's command line: the configured one, plus `initrd=`.
    pub fn linux_cmdline(&self) -> Option<String> {
        match self {
            Boot::Linux {
                initrd, cmdline, ..
            } => {
                let mut line = cmdline.clone();
                if let Some(initrd) = initrd {
                    if !line.is_empty() {
                        line.push(' ');
                    }
                    line.push_str("initrd=");
                    line.push_str(initrd);
                }
                Some(line)
            }
            Boot::Next => None,
        }
    }
}

/// How much MicroV says on the console while it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Debug,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub boot: Boot,
    pub pool_bytes: u64,
    pub log: LogLevel,
    /// Start MicroV (`microv = on`, the default) or boot the OS without it.
    pub start: bool,
    /// `test-fail-cpu`: the CPU whose bring-up fails on purpose (the
    /// failure tests' switch, as `microv start --fail-cpu`).
    pub fail_cpu: Option<u8>,
    /// `test-silent-cpu`: the CPU microv.efi never starts, so it never
    /// answers (the failure tests' stand-in for a CPU that does not come
    /// up at all).
    pub silent_cpu: Option<u8>,
}

/// What is wrong with a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Not `key = value`.
    NotKeyValue,
    UnknownKey(String),
    /// The key appeared before, on this line.
    Repeated {
        first: usize,
    },
    /// A file path that does not start at the volume's root (`\`).
    NotAbsolute(String),
    /// `boot` takes only `next`.
    BadBoot(String),
    /// Not a size, or not a whole number of 2 MiB chunks within bounds.
    BadPool(String),
    BadLog(String),
    /// `microv` takes `on` or `off`.
    BadSwitch(String),
    /// `test-fail-cpu` or `test-silent-cpu` is not a CPU index 1..=63.
    BadFailCpu(String),
    /// `boot = next` with `kernel`, `initrd` or `cmdline`.
    NextWithKernel,
    /// `initrd` or `cmdline` without `kernel`.
    NoKernel,
    /// Neither `kernel` nor `boot = next` (line 0: the whole file).
    NothingToBoot,
}

/// A problem and the line it is on (1-based; 0 for the file as a whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub problem: Problem,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line != 0 {
            write!(f, "{PATH} line {}: ", self.line)?;
        } else {
            write!(f, "{PATH}: ")?;
        }
        match &self.problem {
            Problem::NotKeyValue => f.write_str("expected `key = value`"),
            Problem::UnknownKey(k) => write!(
                f,
                "unknown key `{k}` (known: kernel, initrd, cmdline, boot, pool, log, microv)"
            ),
            Problem::Repeated { first } => write!(f, "repeats the key of line {first}"),
            Problem::NotAbsolute(p) => write!(
                f,
                "`{p}` must be a path from the volume's root, like \\EFI\\linux\\vmlinuz"
            ),
            Problem::BadBoot(v) => write!(f, "boot = `{v}`: the only choice is `next`"),
            Problem::BadPool(v) => write!(
                f,
                "pool = `{v}`: give a size in M or G, a multiple of 2M from 2M to 512M"
            ),
            Problem::BadLog(v) => write!(f, "log = `{v}`: use info or debug"),
            Problem::BadSwitch(v) => write!(f, "microv = `{v}`: use on or off"),
            Problem::BadFailCpu(v) => write!(f, "test-fail-cpu/test-silent-cpu = `{v}`: a CPU index from 1 to 63"),
            Problem::NextWithKernel => {
                f.write_str("boot = next and kernel/initrd/cmdline exclude each other")
            }
            Problem::NoKernel => f.write_str("initrd and cmdline need a kernel line"),
            Problem::NothingToBoot => {
                f.write_str("say what to boot: a kernel line, or boot = next")
            }
        }
    }
}

/// Every key, in the order [`parse`] keeps the line each was seen on.
const KEYS: [&str; 9] = [
    "kernel",
    "initrd",
    "cmdline",
    "boot",
    "pool",
    "log",
    "microv",
    "test-fail-cpu",
    "test-silent-cpu",
];

/// Parses the file's text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let mut seen = [0usize; KEYS.len()];
    let mut kernel = None;
    let mut initrd = None;
    let mut cmdline = None;
    let mut next = false;
    let mut pool_bytes = DEFAULT_POOL;
    let mut log = LogLevel::Info;
    let mut start = true;
    let mut fail_cpu = None;
    let mut silent_cpu = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let err = |problem| ConfigError { line, problem };
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let (key, value) = content
            .split_once('=')
            .ok_or_else(|| err(Problem::NotKeyValue))?;
        let (key, value) = (key.trim(), value.trim());
        let slot = KEYS
            .iter()
            .position(|k| *k == key)
            .and_then(|i| seen.get_mut(i))
            .ok_or_else(|| err(Problem::UnknownKey(key.to_string())))?;
        if *slot != 0 {
            return Err(err(Problem::Repeated { first: *slot }));
        }
        *slot = line;
        match key {
            "kernel" => kernel = Some(path(value).map_err(err)?),
            "initrd" => initrd = Some(path(value).map_err(err)?),
            "cmdline" => cmdline = Some(value.to_string()),
            "boot" if value == "next" => next = true,
            "boot" => return Err(err(Problem::BadBoot(value.to_string()))),
            "pool" => {
                pool_bytes = pool(value).ok_or_else(|| err(Problem::BadPool(value.into())))?
            }
            "microv" => {
                start = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(err(Problem::BadSwitch(value.to_string()))),
                }
            }
            "test-fail-cpu" | "test-silent-cpu" => {
                let n = value
                    .parse::<u8>()
                    .ok()
                    .filter(|n| (1..=63).contains(n))
                    .ok_or_else(|| err(Problem::BadFailCpu(value.to_string())))?;
                if key == "test-fail-cpu" {
                    fail_cpu = Some(n);
                } else {
                    silent_cpu = Some(n);
                }
            }
            _ => {
                log = match value {
                    "info" => LogLevel::Info,
                    "debug" => LogLevel::Debug,
                    _ => return Err(err(Problem::BadLog(value.to_string()))),
                }
            }
        }
    }
    let whole = |problem| ConfigError { line: 0, problem };
    let boot = match (kernel, next) {
        (Some(_), true) => return Err(whole(Problem::NextWithKernel)),
        (None, true) if initrd.is_some() || cmdline.is_some() => {
            return Err(whole(Problem::NextWithKernel))
        }
        (None, true) => Boot::Next,
        (None, false) if initrd.is_some() || cmdline.is_some() => {
            return Err(whole(Problem::NoKernel))
        }
        (None, false) => return Err(whole(Problem::NothingToBoot)),
        (Some(kernel), false) => Boot::Linux {
            kernel,
            initrd,
            cmdline: cmdline.unwrap_or_default(),
        },
    };
    Ok(Config {
        boot,
        pool_bytes,
        log,
        start,
        fail_cpu,
        silent_cpu,
    })
}

fn path(value: &str) -> Result<String, Problem> {
    if value.starts_with('\\') && value.len() > 1 {
        Ok(value.to_string())
    } else {
        Err(Problem::NotAbsolute(value.to_string()))
    }
}

/// `64M`, `1G`, `2048K` or bytes: a whole number of 2 MiB chunks, at most
/// [`MAX_POOL`].
fn pool(value: &str) -> Option<u64> {
    let (digits, unit) = match value.char_indices().last()? {
        (at, 'K' | 'k') => (value.get(..at)?, 1u64 << 10),
        (at, 'M' | 'm') => (value.get(..at)?, 1 << 20),
        (at, 'G' | 'g') => (value.get(..at)?, 1 << 30),
        _ => (value, 1),
    };
    let bytes = digits.trim().parse::<u64>().ok()?.checked_mul(unit)?;
    (bytes != 0 && bytes % POOL_STEP == 0 && bytes <= MAX_POOL).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> (usize, Problem) {
        let e = parse(text).unwrap_err();
        (e.line, e.problem)
    }

    #[test]
    fn a_linux_entry_with_every_key() {
        let c = parse(
            "# MicroV\n\
             kernel = \\EFI\\microv\\vmlinuz\n\
             initrd=\\EFI\\microv\\initrd.img   # busybox\n\
             \n\
             cmdline = console=ttyS0 root=/dev/sda2 ro\n\
             pool = 128M\n\
             log = debug\n",
        )
        .unwrap();
        assert_eq!(c.pool_bytes, 128 << 20);
        assert_eq!(c.log, LogLevel::Debug);
        assert_eq!(
            c.boot.linux_cmdline().unwrap(),
            "console=ttyS0 root=/dev/sda2 ro initrd=\\EFI\\microv\\initrd.img"
        );
        match c.boot {
            Boot::Linux { kernel, .. } => assert_eq!(kernel, "\\EFI\\microv\\vmlinuz"),
            Boot::Next => panic!("not a Linux entry"),
        }
    }

    #[test]
    fn defaults_and_the_next_boot_entry() {
        let c = parse("boot = next\n").unwrap();
        assert_eq!(c.boot, Boot::Next);
        assert_eq!(c.boot.linux_cmdline(), None);
        assert_eq!(c.pool_bytes, DEFAULT_POOL);
        assert_eq!(c.log, LogLevel::Info);
        assert!(c.start);
        assert!(!parse("boot = next\nmicrov = off").unwrap().start);
        assert!(parse("boot = next\nmicrov = on").unwrap().start);
        assert_eq!(c.fail_cpu, None);
        assert_eq!(
            parse("boot = next\ntest-fail-cpu = 1").unwrap().fail_cpu,
            Some(1)
        );
        assert_eq!(c.silent_cpu, None);
        assert_eq!(parse("boot = next\ntest-silent-cpu = 2").unwrap().silent_cpu, Some(2));
        for bad in ["0", "64", "x", "-1", ""] {
            let e = parse(&format!("boot = next\ntest-fail-cpu = {bad}")).unwrap_err();
            assert_eq!(e.problem, Problem::BadFailCpu(bad.into()));
            let e = parse(&format!("boot = next\ntest-silent-cpu = {bad}")).unwrap_err();
            assert_eq!(e.problem, Problem::BadFailCpu(bad.into()));
        }
        let c = parse("kernel=\\vmlinuz").unwrap();
        assert_eq!(c.boot.linux_cmdline().unwrap(), "");
        let c = parse("kernel=\\vmlinuz\ninitrd=\\i").unwrap();
        assert_eq!(c.boot.linux_cmdline().unwrap(), "initrd=\\i");
    }

    #[test]
    fn pool_sizes() {
        assert_eq!(pool("2M"), Some(2 << 20));
        assert_eq!(pool("512m"), Some(512 << 20));
        assert_eq!(pool("4096K"), Some(4 << 20));
        assert_eq!(pool("2097152"), Some(2 << 20));
        for bad in [
            "",
            "M",
            "0M",
            "3M",
            "1G",
            "514M",
            "-2M",
            "2 MB",
            "99999999999999999999G",
        ] {
            assert_eq!(pool(bad), None, "{bad}");
        }
    }

    #[test]
    fn mistakes_name_their_line() {
        assert_eq!(
            problem("kernel = \\a\nkernal = \\b\n"),
            (2, Problem::UnknownKey("kernal".into()))
        );
        assert_eq!(problem("\n\njust words\n"), (3, Problem::NotKeyValue));
        assert_eq!(
            problem("kernel=\\a\nkernel=\\b"),
            (2, Problem::Repeated { first: 1 })
        );
        assert_eq!(
            problem("kernel = vmlinuz"),
            (1, Problem::NotAbsolute("vmlinuz".into()))
        );
        assert_eq!(
            problem("kernel = \\"),
            (1, Problem::NotAbsolute("\\".into()))
        );
        assert_eq!(
            problem("boot = first"),
            (1, Problem::BadBoot("first".into()))
        );
        assert_eq!(
            problem("kernel=\\a\npool = 3M"),
            (2, Problem::BadPool("3M".into()))
        );
        assert_eq!(
            problem("kernel=\\a\nlog = loud"),
            (2, Problem::BadLog("loud".into()))
        );
    }

    #[test]
    fn the_whole_file_must_say_what_to_boot() {
        assert_eq!(problem(""), (0, Problem::NothingToBoot));
        assert_eq!(problem("pool = 64M"), (0, Problem::NothingToBoot));
        assert_eq!(problem("cmdline = quiet"), (0, Problem::NoKernel));
        assert_eq!(
            problem("boot = next\nkernel = \\k"),
            (0, Problem::NextWithKernel)
        );
        assert_eq!(
            problem("boot = next\ncmdline = quiet"),
            (0, Problem::NextWithKernel)
        );
    }

    #[test]
    fn messages_say_where_and_what() {
        let e = parse("kernal = \\k").unwrap_err().to_string();
        assert!(
            e.starts_with("\\EFI\\microv\\microv.conf line 1: unknown key `kernal`"),
            "{e}"
        );
        let e = parse("").unwrap_err().to_string();
        assert_eq!(
            e,
            "\\EFI\\microv\\microv.conf: say what to boot: a kernel line, or boot = next"
        );
        for p in [
            Problem::Repeated { first: 1 },
            Problem::NotAbsolute("x".into()),
            Problem::BadBoot("x".into()),
            Problem::BadPool("x".into()),
            Problem::BadLog("x".into()),
            Problem::BadSwitch("x".into()),
            Problem::BadFailCpu("x".into()),
            Problem::NextWithKernel,
            Problem::NoKernel,
            Problem::NotKeyValue,
        ] {
            let text = ConfigError {
                line: 2,
                problem: p,
            }
            .to_string();
            assert!(text.len() > 40, "{text}");
        }
    }
}
