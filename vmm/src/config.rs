//! What to boot and with what, checked before anything is allocated.

use std::path::PathBuf;

use crate::backend::BackendKind;
use crate::boot::layout::MIN_MEMORY;

/// The command line when the user gives none: the serial console, reboot
/// through the keyboard controller (which ends the VM), and a panic that
/// reboots (so a dying guest ends the run instead of hanging).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";
pub const DEFAULT_MEMORY: u64 = 256 << 20;
/// Most vCPUs a guest gets (one VMM thread each).
pub const MAX_CPUS: u8 = 64;

/// A VM to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Guest RAM in bytes.
    pub memory: u64,
    pub cpus: u8,
    /// The whole kernel command line (the VMM adds nothing its devices do
    /// not need; today they need nothing).
    pub cmdline: String,
    pub backend: BackendKind,
}

impl VmConfig {
    /// A config with the defaults.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            kernel: kernel.into(),
            initrd: None,
            memory: DEFAULT_MEMORY,
            cpus: 1,
            cmdline: DEFAULT_CMDLINE.into(),
            backend: BackendKind::MicroV,
        }
    }

    /// Checks the numbers; `host_memory` is the machine's RAM in bytes.
    pub fn check(&self, host_memory: u64) -> Result<(), ConfigError> {
        let mem = self.memory;
        if mem < MIN_MEMORY {
            return Err(ConfigError::MemoryTooSmall { asked: mem });
        }
        if !mem.is_multiple_of(4096) {
            return Err(ConfigError::MemoryNotPages { asked: mem });
        }
        if mem > host_memory {
            return Err(ConfigError::MemoryTooLarge {
                asked: mem,
                host: host_memory,
            });
        }
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(ConfigError::Cpus { asked: self.cpus });
        }
        Ok(())
    }
}

const MIB: u64 = 1 << 20;

/// A request that cannot work, found before anything was allocated.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--mem {} MiB is too small for a Linux guest", asked / MIB)]
    MemoryTooSmall { asked: u64 },
    #[error("--mem {asked} bytes is not a whole number of 4 KiB pages")]
    MemoryNotPages { asked: u64 },
    #[error("--mem {} MiB is more than this machine has ({} MiB)", asked / MIB, host / MIB)]
    MemoryTooLarge { asked: u64, host: u64 },
    #[error("--cpus {asked} is out of range (1 to {MAX_CPUS})")]
    Cpus { asked: u8 },
}

impl ConfigError {
    pub fn hint(&self) -> String {
        match self {
            ConfigError::MemoryTooSmall { .. } => {
                format!(
                    "give the guest at least {} MiB (--mem {}M)",
                    MIN_MEMORY / MIB,
                    MIN_MEMORY / MIB
                )
            }
            ConfigError::MemoryNotPages { .. } => "use a size in M or G, e.g. --mem 256M".into(),
            ConfigError::MemoryTooLarge { host, .. } => format!(
                "use --mem {}M or less (the default is {}M)",
                host / 2 / MIB,
                DEFAULT_MEMORY / MIB
            ),
            ConfigError::Cpus { .. } => format!("use --cpus 1 to --cpus {MAX_CPUS}"),
        }
    }
}

/// The machine's RAM (MemTotal), or `u64::MAX` when /proc/meminfo cannot
/// say (then the mapping itself is the limit).
pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_mem_total(&s))
        .unwrap_or(u64::MAX)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = VmConfig::new("/boot/vmlinuz");
        assert_eq!(c.memory, 256 << 20);
        assert_eq!(c.cpus, 1);
        assert_eq!(c.cmdline, "console=ttyS0 reboot=k panic=1");
        assert_eq!(c.backend, BackendKind::MicroV);
        assert_eq!(c.check(1 << 30), Ok(()));
    }

    #[test]
    fn numbers_are_checked_with_hints() {
        let host = 1u64 << 30;
        let with = |memory, cpus| VmConfig {
            memory,
            cpus,
            ..VmConfig::new("k")
        };
        let e = with(2 << 30, 1).check(host).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--mem 2048 MiB is more than this machine has (1024 MiB)"
        );
        assert_eq!(e.hint(), "use --mem 512M or less (the default is 256M)");
        let e = with(8 << 20, 1).check(host).unwrap_err();
        assert!(e.hint().contains("--mem 32M"), "{}", e.hint());
        let e = with((64 << 20) + 1, 1).check(host).unwrap_err();
        assert!(matches!(e, ConfigError::MemoryNotPages { .. }));
        assert!(!e.hint().is_empty());
        for cpus in [0, 65] {
            let e = with(64 << 20, cpus).check(host).unwrap_err();
            assert_eq!(e, ConfigError::Cpus { asked: cpus });
            assert_eq!(e.hint(), "use --cpus 1 to --cpus 64");
        }
        assert_eq!(with(host, 64).check(host), Ok(()));
    }

    #[test]
    fn meminfo_parses() {
        assert_eq!(
            parse_mem_total("MemTotal:       24683652 kB\nMemFree: 1 kB\n"),
            Some(24683652 * 1024)
        );
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots\n"), None);
        assert!(host_memory() > 0);
    }
}
