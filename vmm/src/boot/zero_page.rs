//! The zero page (`struct boot_params`): the setup header, where the
//! command line and initrd are, the e820 map and the ACPI RSDP.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::kernel::LoadedKernel;
use super::layout::{E820Entry, CMDLINE_ADDR, ZERO_PAGE_ADDR};
use super::BootError;

const BOOT_FLAG: u16 = 0xaa55;
const HDRS_MAGIC: u32 = 0x5372_6448;
/// "Loader type: other".
const LOADER_TYPE_OTHER: u8 = 0xff;
/// What an ELF kernel would have said in its header.
const ELF_KERNEL_ALIGNMENT: u32 = 0x100_0000;

/// What goes into the zero page besides the kernel's own header.
#[derive(Clone, Debug, Default)]
pub struct ZeroPage {
    pub cmdline_len: usize,
    pub initrd: Option<(u64, u64)>,
    pub e820: Vec<E820Entry>,
    pub rsdp: u64,
}

/// Builds `boot_params` for `kernel`.
pub fn build(kernel: &LoadedKernel, z: &ZeroPage) -> Result<boot_params, BootError> {
    let mut p = boot_params::default();
    match kernel.header {
        Some(h) => p.hdr = h,
        None => {
            p.hdr.boot_flag = BOOT_FLAG;
            p.hdr.header = HDRS_MAGIC;
            p.hdr.kernel_alignment = ELF_KERNEL_ALIGNMENT;
        }
    }
    p.hdr.type_of_loader = LOADER_TYPE_OTHER;
    p.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    p.hdr.cmdline_size = u32::try_from(z.cmdline_len).map_err(|_| BootError::CmdlineTooLong {
        len: z.cmdline_len,
        max: u32::MAX as usize,
    })?;
    if let Some((addr, size)) = z.initrd {
        // initrd_address keeps it below 4 GiB (initrd_addr_max is 32-bit).
        p.hdr.ramdisk_image =
            u32::try_from(addr).map_err(|_| BootError::MemoryTooSmall { needed: addr })?;
        p.hdr.ramdisk_size =
            u32::try_from(size).map_err(|_| BootError::MemoryTooSmall { needed: size })?;
    }
    if z.e820.len() > p.e820_table.len() {
        return Err(BootError::Write("the e820 map (too many entries)"));
    }
    for (slot, e) in p.e820_table.iter_mut().zip(&z.e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    p.e820_entries = z.e820.len() as u8;
    p.acpi_rsdp_addr = z.rsdp;
    Ok(p)
}

/// Writes the zero page for `kernel`.
pub fn write(mem: &GuestMemoryMmap, kernel: &LoadedKernel, z: &ZeroPage) -> Result<(), BootError> {
    let params = build(kernel, z)?;
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE_ADDR)),
        mem,
    )
    .map_err(|_| BootError::Write("the zero page"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::kernel::KernelFormat;
    use crate::boot::layout::e820_map;
    use vm_memory::Bytes;

    fn elf() -> LoadedKernel {
        LoadedKernel {
            format: KernelFormat::Elf,
            entry: 0x100_0000,
            header: None,
            reserved_end: 0x200_0000,
        }
    }

    #[test]
    fn fields_are_filled() {
        let z = ZeroPage {
            cmdline_len: 30,
            initrd: Some((0x0f00_0000, 0x12345)),
            e820: e820_map(256 << 20),
            rsdp: 0xe0000,
        };
        let p = build(&elf(), &z).unwrap();
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, 0x5372_6448);
        assert_eq!(p.hdr.type_of_loader, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, 0x2_0000);
        assert_eq!({ p.hdr.cmdline_size }, 30);
        assert_eq!(
            ({ p.hdr.ramdisk_image }, { p.hdr.ramdisk_size }),
            (0x0f00_0000, 0x12345)
        );
        assert_eq!(p.e820_entries, 3);
        assert_eq!({ p.e820_table[2].addr }, 0x10_0000);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
    }

    #[test]
    fn bzimage_header_is_kept() {
        let h = linux_loader::loader::bootparam::setup_header {
            version: 0x20f,
            code32_start: 0x10_0000,
            ..Default::default()
        };
        let k = LoadedKernel {
            header: Some(h),
            format: KernelFormat::BzImage,
            ..elf()
        };
        let p = build(&k, &ZeroPage::default()).unwrap();
        assert_eq!(
            ({ p.hdr.version }, { p.hdr.code32_start }),
            (0x20f, 0x10_0000)
        );
        assert_eq!(p.hdr.type_of_loader, 0xff);
        assert_eq!(({ p.hdr.ramdisk_image }, p.e820_entries), (0, 0));
    }

    #[test]
    fn lands_at_the_zero_page() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write(&mem, &elf(), &ZeroPage::default()).unwrap();
        let magic: u32 = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR + 0x202)).unwrap();
        assert_eq!(magic, 0x5372_6448);
        let too_many = ZeroPage {
            e820: vec![e820_map(1 << 30)[0]; 200],
            ..Default::default()
        };
        assert!(build(&elf(), &too_many).is_err());
    }
}
