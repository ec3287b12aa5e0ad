//! Everything the guest finds in memory before its first instruction, and
//! the bootstrap vCPU's registers: the 64-bit boot protocol from kernel
//! image to `RIP`.

pub mod acpi;
pub mod cpu_state;
pub mod cpuid;
pub mod kernel;
pub mod layout;
pub mod zero_page;

use std::io;
use std::path::PathBuf;

use vm_memory::GuestMemoryMmap;

use crate::backend::{Regs, SpecialRegs};
use crate::config::VmConfig;

/// Why the guest could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("kernel {0} not found")]
    KernelNotFound(PathBuf),
    #[error("{0} is not a kernel image (neither a bzImage nor an x86-64 ELF vmlinux)")]
    NotAKernel(PathBuf),
    #[error("{0} is not a 64-bit kernel (its bzImage header has no 64-bit entry point)")]
    Not64Bit(PathBuf),
    #[error("cannot load kernel {path}: {reason}")]
    KernelLoad { path: PathBuf, reason: String },
    #[error("initrd {0} not found")]
    InitrdNotFound(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the command line is {len} bytes; this kernel takes at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("invalid command line: {0}")]
    Cmdline(String),
    #[error("the kernel and initrd need about {} MiB of guest memory", needed.div_ceil(1 << 20))]
    MemoryTooSmall { needed: u64 },
    #[error("cannot write {0} into guest memory")]
    Write(&'static str),
    #[error("the ACPI tables do not fit below 1 MiB")]
    AcpiTooLarge,
}

impl BootError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            BootError::KernelNotFound(_) => {
                "check the path; Debian's kernels are /boot/vmlinuz-<version>".into()
            }
            BootError::NotAKernel(_) | BootError::KernelLoad { .. } => {
                "--kernel takes a bzImage (e.g. /boot/vmlinuz-<version>) or an uncompressed x86-64 ELF vmlinux".into()
            }
            BootError::Not64Bit(_) => "use a 64-bit x86 Linux kernel".into(),
            BootError::InitrdNotFound(_) => "check the --initrd path".into(),
            BootError::CmdlineTooLong { max, .. } => {
                format!("shorten --cmdline to at most {max} bytes")
            }
            BootError::Cmdline(_) => "use printable ASCII in --cmdline".into(),
            BootError::MemoryTooSmall { needed } => format!(
                "give the guest more memory: --mem {}M or more",
                needed.div_ceil(1 << 20).next_multiple_of(16) + 16
            ),
            BootError::Read { .. } | BootError::Write(_) | BootError::AcpiTooLarge => return None,
        })
    }
}

/// The guest, loaded.
#[derive(Clone, Debug)]
pub struct Boot {
    pub kernel: kernel::LoadedKernel,
    pub regs: Regs,
    pub sregs: SpecialRegs,
}

/// Loads kernel, command line and initrd, and writes the zero page, the
/// boot GDT and page tables, and the ACPI tables.
pub fn load(mem: &GuestMemoryMmap, config: &VmConfig) -> Result<Boot, BootError> {
    let k = kernel::load_kernel(mem, &config.kernel)?;
    let cmdline_len = kernel::load_command_line(mem, &k, &config.cmdline)?;
    let low_end = layout::low_ram_end(config.memory);
    let initrd = match &config.initrd {
        Some(path) => Some(kernel::load_initrd(mem, &k, path, low_end)?),
        None => None,
    };
    if k.reserved_end > low_end {
        return Err(BootError::MemoryTooSmall {
            needed: k.reserved_end,
        });
    }
    let rsdp = acpi::write(mem, config.cpus)?;
    zero_page::write(
        mem,
        &k,
        &zero_page::ZeroPage {
            cmdline_len,
            initrd,
            e820: layout::e820_map(config.memory),
            rsdp,
        },
    )?;
    cpu_state::write_tables(mem)?;
    let (regs, sregs) = cpu_state::boot_registers(k.entry);
    Ok(Boot {
        kernel: k,
        regs,
        sregs,
    })
}

#[cfg(test)]
mod tests {
    use super::kernel::tests::{fake_bzimage, TempFile};
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    fn guest(mem: u64) -> GuestMemoryMmap {
        let regions: Vec<_> = layout::ram_regions(mem)
            .into_iter()
            .map(|(a, s)| (a, s as usize))
            .collect();
        GuestMemoryMmap::from_ranges(&regions).unwrap()
    }

    #[test]
    fn a_bzimage_guest_is_ready_to_enter() {
        let k = TempFile::new("boot-bz", &fake_bzimage(1, b"\xf4"));
        let rd = TempFile::new("boot-rd", b"070701");
        let mut c = VmConfig::new(&k.0);
        c.memory = 64 << 20;
        c.initrd = Some(rd.0.clone());
        c.cpus = 2;
        let mem = guest(c.memory);
        let b = load(&mem, &c).unwrap();
        assert_eq!(b.regs.rip, 0x10_0200);
        assert_eq!(b.regs.rsi, layout::ZERO_PAGE_ADDR);
        let zp = layout::ZERO_PAGE_ADDR;
        let ramdisk: u32 = mem.read_obj(GuestAddress(zp + 0x218)).unwrap();
        let ramdisk_size: u32 = mem.read_obj(GuestAddress(zp + 0x21c)).unwrap();
        assert_eq!((ramdisk, ramdisk_size), ((64 << 20) - 0x1000, 6));
        let cmdline_ptr: u32 = mem.read_obj(GuestAddress(zp + 0x228)).unwrap();
        assert_eq!(cmdline_ptr as u64, layout::CMDLINE_ADDR);
        let entries: u8 = mem.read_obj(GuestAddress(zp + 0x1e8)).unwrap();
        assert_eq!(entries, 3);
        let rsdp: u64 = mem.read_obj(GuestAddress(zp + 0x70)).unwrap();
        assert_eq!(rsdp, layout::ACPI_START);
    }

    #[test]
    fn too_little_memory_for_the_kernel_is_said() {
        let k = TempFile::new("boot-small", &fake_bzimage(1, b"\xf4"));
        let mut c = VmConfig::new(&k.0);
        c.memory = 32 << 20; // the kernel decompresses up to 48 MiB
        let e = load(&guest(c.memory), &c).unwrap_err();
        assert!(
            matches!(e, BootError::MemoryTooSmall { needed: 0x300_0000 }),
            "{e}"
        );
        assert_eq!(
            e.hint().unwrap(),
            "give the guest more memory: --mem 64M or more"
        );
    }

    #[test]
    fn every_error_reads_well() {
        let p = || PathBuf::from("/k");
        let errors = [
            BootError::KernelNotFound(p()),
            BootError::NotAKernel(p()),
            BootError::Not64Bit(p()),
            BootError::KernelLoad {
                path: p(),
                reason: "x".into(),
            },
            BootError::InitrdNotFound(p()),
            BootError::CmdlineTooLong {
                len: 3000,
                max: 2047,
            },
            BootError::Cmdline("x".into()),
        ];
        for e in errors {
            assert!(!e.to_string().is_empty());
            assert!(e.hint().is_some(), "{e}");
        }
        assert!(BootError::AcpiTooLarge.hint().is_none());
    }
}
