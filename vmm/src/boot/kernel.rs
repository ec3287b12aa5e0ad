//! Puts the kernel, its command line and the initrd into guest memory with
//! `linux-loader`, and says where the 64-bit entry point is.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{CMDLINE_ADDR, CMDLINE_MAX, HIMEM_START};
use super::BootError;

/// The boot protocol's "kernel can be entered in 64-bit mode" flag.
const XLF_KERNEL_64: u16 = 1;
/// A bzImage's 64-bit entry point is this far into its protected-mode code.
const BZIMAGE_64BIT_ENTRY: u64 = 0x200;
/// x86's COMMAND_LINE_SIZE, for ELF kernels (no header says otherwise).
const ELF_CMDLINE_SIZE: usize = 2048;
/// Where the kernel decompresses itself when the header does not say.
const DEFAULT_LOAD_ADDRESS: u64 = 0x100_0000;
/// Linux's default initrd limit for headers that predate the field.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

/// What kind of kernel image a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// A bzImage (`/boot/vmlinuz-*`): the setup header at 0x1f1, "HdrS".
    BzImage,
    /// An uncompressed ELF64 x86-64 `vmlinux`.
    Elf,
}

/// Tells the format from the first 0x210 bytes (or fewer) of a file.
pub fn detect(head: &[u8]) -> Option<KernelFormat> {
    let elf64_x86_64 = head.get(..4) == Some(b"\x7fELF")
        && head.get(4) == Some(&2) // ELFCLASS64
        && head.get(5) == Some(&1) // little-endian
        && head.get(18..20) == Some(&[0x3e, 0]); // EM_X86_64
    if elf64_x86_64 {
        return Some(KernelFormat::Elf);
    }
    (head.get(0x202..0x206) == Some(b"HdrS")).then_some(KernelFormat::BzImage)
}

/// The loaded kernel.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    pub format: KernelFormat,
    /// Where the bootstrap vCPU starts, in 64-bit mode.
    pub entry: u64,
    /// The bzImage's setup header (with `code32_start` updated), for the
    /// zero page; `None` for ELF.
    pub header: Option<setup_header>,
    /// First byte above everything the kernel uses while it boots
    /// (its image, or where it decompresses to, whichever ends higher).
    pub reserved_end: u64,
}

fn open(path: &Path, missing: fn(&Path) -> BootError) -> Result<File, BootError> {
    File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => missing(path),
        _ => BootError::Read {
            path: path.to_owned(),
            source: e,
        },
    })
}

/// Loads the kernel at `path`.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let read_err = |source| BootError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = open(path, |p| BootError::KernelNotFound(p.to_owned()))?;
    if file.metadata().map_err(read_err)?.is_dir() {
        return Err(BootError::NotAKernel(path.to_owned()));
    }
    let mut head = Vec::with_capacity(0x210);
    file.by_ref()
        .take(0x210)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let format = detect(&head).ok_or_else(|| BootError::NotAKernel(path.to_owned()))?;
    let load_err = |e: linux_loader::loader::Error| BootError::KernelLoad {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    match format {
        KernelFormat::BzImage => {
            let r = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
                .map_err(load_err)?;
            let header = r
                .setup_header
                .ok_or_else(|| BootError::NotAKernel(path.to_owned()))?;
            if header.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(BootError::Not64Bit(path.to_owned()));
            }
            let load = r.kernel_load.0;
            let pref = match header.pref_address {
                0 => DEFAULT_LOAD_ADDRESS,
                a => a,
            };
            let decompressed_end = pref.saturating_add(u64::from(header.init_size));
            Ok(LoadedKernel {
                format,
                entry: load + BZIMAGE_64BIT_ENTRY,
                header: Some(header),
                reserved_end: r.kernel_end.max(decompressed_end),
            })
        }
        KernelFormat::Elf => {
            let r = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
                .map_err(load_err)?;
            Ok(LoadedKernel {
                format,
                entry: r.kernel_load.0,
                header: None,
                reserved_end: r.kernel_end,
            })
        }
    }
}

/// Most bytes of command line (without the NUL) the kernel accepts.
pub fn cmdline_limit(kernel: &LoadedKernel) -> usize {
    let from_header = kernel
        .header
        .map_or(ELF_CMDLINE_SIZE, |h| match h.cmdline_size {
            // Protocol < 2.06 headers say 0: the old 255-byte limit.
            0 => 255,
            n => n as usize,
        });
    from_header.min(CMDLINE_MAX - 1)
}

/// Writes `text` as the command line; returns its length.
pub fn load_command_line(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    text: &str,
) -> Result<usize, BootError> {
    let max = cmdline_limit(kernel);
    if text.len() > max {
        return Err(BootError::CmdlineTooLong {
            len: text.len(),
            max,
        });
    }
    let bad = |e: linux_loader::cmdline::Error| BootError::Cmdline(e.to_string());
    let mut cmdline = Cmdline::new(max + 1).map_err(bad)?;
    // insert_str checks the characters (try_from would not).
    cmdline.insert_str(text).map_err(bad)?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    Ok(text.len())
}

/// Where an initrd of `size` bytes goes: as high as the kernel allows
/// below `low_ram_end`, page-aligned, above the kernel.
pub fn initrd_address(
    kernel: &LoadedKernel,
    size: u64,
    low_ram_end: u64,
) -> Result<u64, BootError> {
    let max = kernel
        .header
        .map_or(DEFAULT_INITRD_ADDR_MAX, |h| match h.initrd_addr_max {
            0 => DEFAULT_INITRD_ADDR_MAX,
            m => u64::from(m),
        });
    let top = low_ram_end.min(max.saturating_add(1));
    let too_small = || BootError::MemoryTooSmall {
        needed: kernel
            .reserved_end
            .saturating_add(size)
            .next_multiple_of(1 << 20),
    };
    let addr = top.checked_sub(size).ok_or_else(too_small)? & !0xfff;
    if addr < kernel.reserved_end {
        return Err(too_small());
    }
    Ok(addr)
}

/// Loads the initrd at `path`; returns its address and size.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    path: &Path,
    low_ram_end: u64,
) -> Result<(u64, u64), BootError> {
    let read_err = |source| BootError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = open(path, |p| BootError::InitrdNotFound(p.to_owned()))?;
    let size = file.metadata().map_err(read_err)?.len();
    let addr = initrd_address(kernel, size, low_ram_end)?;
    let len = usize::try_from(size).map_err(|_| BootError::MemoryTooSmall { needed: size })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
        .map_err(|e| BootError::Read {
            path: path.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
    Ok((addr, size))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A minimal bzImage: one setup sector plus the boot sector, a header
    /// with `xloadflags`, and `payload` as the protected-mode code.
    pub fn fake_bzimage(xloadflags: u16, payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 2 * 512];
        img[0x1f1] = 1; // setup_sects
        img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // version 2.15
        img[0x211] = 1; // loadflags: LOADED_HIGH
        img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        img[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
        img[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        img[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes()); // cmdline_size
        img[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes()); // pref_address
        img[0x260..0x264].copy_from_slice(&0x200_0000u32.to_le_bytes()); // init_size
        img.extend_from_slice(payload);
        img
    }

    /// A minimal ELF64 x86-64 executable with one PT_LOAD of `code` at `paddr`.
    pub fn fake_elf(paddr: u64, code: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 0x78];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[6] = 1;
        e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        e[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
        e[20..24].copy_from_slice(&1u32.to_le_bytes());
        e[24..32].copy_from_slice(&paddr.to_le_bytes()); // entry
        e[32..40].copy_from_slice(&0x40u64.to_le_bytes()); // phoff
        e[52..54].copy_from_slice(&0x40u16.to_le_bytes()); // ehsize
        e[54..56].copy_from_slice(&0x38u16.to_le_bytes()); // phentsize
        e[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
        let ph = 0x40;
        e[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        e[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        e[ph + 8..ph + 16].copy_from_slice(&0x78u64.to_le_bytes()); // offset
        e[ph + 16..ph + 24].copy_from_slice(&paddr.to_le_bytes()); // vaddr
        e[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes()); // paddr
        e[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        e[ph + 40..ph + 48].copy_from_slice(&(code.len() as u64).to_le_bytes());
        e[ph + 48..ph + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        e.extend_from_slice(code);
        e
    }

    pub struct TempFile(pub std::path::PathBuf);
    impl TempFile {
        pub fn new(tag: &str, bytes: &[u8]) -> Self {
            let p = std::env::temp_dir().join(format!(
                "microv-vmm-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::write(&p, bytes).unwrap();
            TempFile(p)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn mem(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    #[test]
    fn formats_are_detected() {
        assert_eq!(detect(&fake_bzimage(1, b"")), Some(KernelFormat::BzImage));
        assert_eq!(
            detect(&fake_elf(0x100_0000, b"\xf4")),
            Some(KernelFormat::Elf)
        );
        let mut elf32 = fake_elf(0x100_0000, b"");
        elf32[4] = 1;
        assert_eq!(detect(&elf32), None);
        assert_eq!(detect(b"#!/bin/sh\n"), None);
        assert_eq!(detect(b""), None);
    }

    #[test]
    fn bzimage_loads_with_its_64bit_entry() {
        let m = mem(64 << 20);
        let f = TempFile::new("bz", &fake_bzimage(1, b"\x90\x90\xf4"));
        let k = load_kernel(&m, &f.0).unwrap();
        assert_eq!(k.format, KernelFormat::BzImage);
        assert_eq!(k.entry, 0x10_0200);
        assert_eq!(k.reserved_end, 0x300_0000, "pref_address + init_size");
        let mut code = [0u8; 3];
        vm_memory::Bytes::read_slice(&m, &mut code, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(&code, b"\x90\x90\xf4");
        assert_eq!(cmdline_limit(&k), 2047);
    }

    #[test]
    fn elf_loads_at_its_entry() {
        let m = mem(64 << 20);
        let f = TempFile::new("elf", &fake_elf(0x100_0000, b"\xf4"));
        let k = load_kernel(&m, &f.0).unwrap();
        assert_eq!(
            (k.format, k.entry, k.header.is_none()),
            (KernelFormat::Elf, 0x100_0000, true)
        );
        assert_eq!(cmdline_limit(&k), 2048);
    }

    #[test]
    fn bad_kernels_say_why() {
        let m = mem(64 << 20);
        let missing = Path::new("/nonexistent/vmlinuz");
        assert!(matches!(
            load_kernel(&m, missing),
            Err(BootError::KernelNotFound(_))
        ));
        let text = TempFile::new("txt", b"not a kernel at all");
        assert!(matches!(
            load_kernel(&m, &text.0),
            Err(BootError::NotAKernel(_))
        ));
        assert!(matches!(
            load_kernel(&m, &std::env::temp_dir()),
            Err(BootError::NotAKernel(_))
        ));
        let bz32 = TempFile::new("bz32", &fake_bzimage(0, b"\xf4"));
        assert!(matches!(
            load_kernel(&m, &bz32.0),
            Err(BootError::Not64Bit(_))
        ));
        // An ELF whose segment lies outside guest RAM.
        let far = TempFile::new("far", &fake_elf(0x1_0000_0000, b"\xf4"));
        assert!(matches!(
            load_kernel(&m, &far.0),
            Err(BootError::KernelLoad { .. })
        ));
    }

    #[test]
    fn command_line_is_bounded() {
        let m = mem(64 << 20);
        let f = TempFile::new("bzc", &fake_bzimage(1, b"\xf4"));
        let k = load_kernel(&m, &f.0).unwrap();
        assert_eq!(load_command_line(&m, &k, "console=ttyS0").unwrap(), 13);
        let mut buf = [0u8; 14];
        vm_memory::Bytes::read_slice(&m, &mut buf, GuestAddress(CMDLINE_ADDR)).unwrap();
        assert_eq!(&buf, b"console=ttyS0\0");
        let long = "x".repeat(2048);
        assert!(matches!(
            load_command_line(&m, &k, &long),
            Err(BootError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        ));
        assert!(matches!(
            load_command_line(&m, &k, "bad\u{1}char"),
            Err(BootError::Cmdline(_))
        ));
    }

    #[test]
    fn initrd_goes_high_above_the_kernel() {
        let m = mem(64 << 20);
        let f = TempFile::new("bzi", &fake_bzimage(1, b"\xf4"));
        let k = load_kernel(&m, &f.0).unwrap();
        let rd = TempFile::new("rd", &[7u8; 5000]);
        let (addr, size) = load_initrd(&m, &k, &rd.0, 64 << 20).unwrap();
        assert_eq!((addr, size), ((64 << 20) - 0x2000, 5000));
        let mut b = [0u8; 1];
        vm_memory::Bytes::read_slice(&m, &mut b, GuestAddress(addr + 4999)).unwrap();
        assert_eq!(b, [7]);
        // Too little room above the kernel's decompression area.
        assert!(matches!(
            initrd_address(&k, 40 << 20, 64 << 20),
            Err(BootError::MemoryTooSmall { .. })
        ));
        assert!(matches!(
            initrd_address(&k, 1 << 40, 64 << 20),
            Err(BootError::MemoryTooSmall { .. })
        ));
        // The header's limit wins over RAM.
        let mut low = k;
        if let Some(h) = low.header.as_mut() {
            h.initrd_addr_max = 0x2fff_ffff;
        }
        assert_eq!(
            initrd_address(&low, 0x1000, 2 << 30).unwrap(),
            0x3000_0000 - 0x1000
        );
        assert!(matches!(
            load_initrd(&m, &k, Path::new("/nonexistent/initrd"), 64 << 20),
            Err(BootError::InitrdNotFound(_))
        ));
    }
}
