//! Why an ELF file is not a usable hypervisor image, worded for the person
//! who has to fix it.

use alloc::format;
use alloc::string::String;
use core::fmt;

use crate::ImageKind;

/// A part of the ELF file that can extend past its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The 64-byte ELF file header.
    ElfHeader,
    /// The program header table.
    ProgramHeaders,
    /// The file bytes of the segment with this program-header index (the
    /// numbering `readelf -l` uses).
    Segment(usize),
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Region::ElfHeader => f.write_str("the ELF header"),
            Region::ProgramHeaders => f.write_str("the program header table"),
            Region::Segment(i) => write!(f, "segment {i}"),
        }
    }
}

/// Why [`crate::flatten`] or [`crate::seal`] refused an ELF file.
///
/// `Display` gives a one-line explanation without the file's name; prefix it
/// with the path (as [`FileError`] does). Segments are numbered by their
/// program-header index, as `readelf -l` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Part of the file lies beyond its end.
    Truncated { len: u64, region: Region, end: u64 },
    /// The file does not start with `\x7fELF`.
    NotElf,
    /// `EI_CLASS` is not ELFCLASS64.
    NotElf64 { class: u8 },
    /// `EI_DATA` is not little endian.
    NotLittleEndian { encoding: u8 },
    /// `EI_VERSION` / `e_version` is not 1.
    BadElfVersion { version: u32 },
    /// `e_machine` is not x86-64.
    WrongMachine { machine: u16 },
    /// `e_type` is not `ET_EXEC`.
    NotExecutable { e_type: u16 },
    /// `e_phentsize` is not 56.
    BadProgramHeaderSize { size: u16 },
    /// More program headers than this crate reads (or `PN_XNUM`).
    TooManyProgramHeaders { count: u16 },
    /// A `PT_INTERP` or `PT_DYNAMIC` header: the file needs a dynamic loader.
    Dynamic { index: usize },
    /// No `PT_LOAD` segment with memory.
    NoLoadableSegments,
    /// More `PT_LOAD` segments than [`microv_abi::launch::MAX_SEGMENTS`].
    TooManySegments { count: usize, max: usize },
    /// A segment's virtual address is not page-aligned.
    SegmentMisaligned { index: usize, vaddr: u64 },
    /// A segment starts before the page after the previous segment's end.
    SegmentOverlap {
        index: usize,
        vaddr: u64,
        previous: usize,
        previous_end: u64,
    },
    /// `p_filesz > p_memsz`.
    FileSizeExceedsMemSize {
        index: usize,
        filesz: u64,
        memsz: u64,
    },
    /// A segment's address range wraps around.
    AddressOverflow { index: usize },
    /// The lowest segment is not at the link address the kind needs.
    WrongBase { kind: ImageKind, found: u64 },
    /// The image spans more memory than the kind may.
    TooLarge { kind: ImageKind, size: u64 },
    /// The entry point is not inside an executable segment.
    BadEntry { entry: u64 },
    /// The first segment's file bytes cannot hold an image header.
    NoHeader { filesz: u64 },
    /// The header's magic is not the kind's.
    WrongMagic { kind: ImageKind, found: u64 },
    /// The header's launch version is not this build's.
    VersionMismatch { found: u32, expected: u32 },
    /// The header's `header_size` is not the size of `ImageHeader`.
    BadHeaderSize { found: u32, expected: u32 },
    /// `image_size` and `checksum` are both zero: the build did not seal it.
    NotSealed,
    /// The header's `image_size` is not the flattened length.
    SizeMismatch { header: u64, actual: u64 },
    /// The header's checksum does not match the image's bytes.
    ChecksumMismatch { expected: u64, found: u64 },
}

fn magic_text(magic: u64) -> String {
    let bytes = magic.to_le_bytes();
    if bytes.iter().all(|b| b.is_ascii_graphic()) {
        format!("0x{magic:016x} \"{}\"", String::from_utf8_lossy(&bytes))
    } else {
        format!("0x{magic:016x}")
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ImageError::*;
        match *self {
            Truncated { len, region, end } => {
                write!(f, "truncated (file is {len} bytes, {region} ends at {end})")
            }
            NotElf => f.write_str("not an ELF file (it does not start with \\x7fELF)"),
            NotElf64 { class } => {
                write!(f, "not a 64-bit ELF file (EI_CLASS is {class}, expected 2)")
            }
            NotLittleEndian { encoding } => {
                write!(
                    f,
                    "not a little-endian ELF file (EI_DATA is {encoding}, expected 1)"
                )
            }
            BadElfVersion { version } => write!(f, "unknown ELF version {version} (expected 1)"),
            WrongMachine { machine } => {
                write!(f, "built for ELF machine {machine}, not x86-64 (62)")
            }
            NotExecutable { e_type: 3 } => f.write_str(
                "a position-independent (ET_DYN) file; MicroV's images must be static \
                 executables linked at their fixed address (-no-pie)",
            ),
            NotExecutable { e_type } => {
                write!(
                    f,
                    "not an executable (ELF type {e_type}, expected ET_EXEC = 2)"
                )
            }
            BadProgramHeaderSize { size } => {
                write!(f, "program headers are {size} bytes each, expected 56")
            }
            TooManyProgramHeaders { count } => {
                write!(f, "too many program headers ({count})")
            }
            Dynamic { index } => write!(
                f,
                "segment {index} asks for a dynamic loader (PT_INTERP or PT_DYNAMIC); \
                 MicroV's images must be static executables"
            ),
            NoLoadableSegments => f.write_str("no loadable (PT_LOAD) segment"),
            TooManySegments { count, max } => {
                write!(f, "{count} loadable segments, at most {max} are supported")
            }
            SegmentMisaligned { index, vaddr } => {
                write!(
                    f,
                    "segment {index} starts at 0x{vaddr:x}, which is not page-aligned"
                )
            }
            SegmentOverlap {
                index,
                vaddr,
                previous,
                previous_end,
            } => write!(
                f,
                "segment {index} starts at 0x{vaddr:x}, before the page after segment \
                 {previous} (which ends at 0x{previous_end:x}); segments must be in \
                 ascending order and must not share a page"
            ),
            FileSizeExceedsMemSize {
                index,
                filesz,
                memsz,
            } => write!(
                f,
                "segment {index} has more file bytes ({filesz}) than memory bytes ({memsz})"
            ),
            AddressOverflow { index } => {
                write!(
                    f,
                    "segment {index}'s address range wraps around the address space"
                )
            }
            WrongBase { kind, found } => write!(
                f,
                "linked at 0x{found:x}, but the {} must be linked at 0x{:x}",
                kind.description(),
                kind.base()
            ),
            TooLarge { kind, size } => write!(
                f,
                "spans {size} bytes of memory, but the {} may span at most {} bytes",
                kind.description(),
                kind.max_size()
            ),
            BadEntry { entry } => {
                write!(
                    f,
                    "entry point 0x{entry:x} is not inside an executable segment"
                )
            }
            NoHeader { filesz } => write!(
                f,
                "the first segment has {filesz} file bytes, too few to hold the {}-byte \
                 image header",
                core::mem::size_of::<microv_abi::launch::ImageHeader>()
            ),
            WrongMagic { kind, found } => {
                if let Some(other) = ImageKind::from_magic(found) {
                    write!(
                        f,
                        "this is the MicroV {}, not the {}",
                        other.description(),
                        kind.description()
                    )
                } else {
                    write!(
                        f,
                        "not a MicroV {} image (magic {}, expected {})",
                        kind.description(),
                        magic_text(found),
                        magic_text(kind.magic())
                    )
                }
            }
            VersionMismatch { found, expected } => write!(
                f,
                "built for launch layout version {found}, but this MicroV uses version \
                 {expected}; the images and the tools are from different builds"
            ),
            BadHeaderSize { found, expected } => write!(
                f,
                "image header says it is {found} bytes, expected {expected}"
            ),
            NotSealed => f.write_str(
                "not sealed: the header's size and checksum are zero (the build seals \
                 images with `cargo xtask`)",
            ),
            SizeMismatch { header, actual } => write!(
                f,
                "corrupt: the header says the image is {header} bytes, but it loads as \
                 {actual} bytes"
            ),
            ChecksumMismatch { expected, found } => write!(
                f,
                "corrupt: checksum mismatch (expected 0x{expected:016x}, found 0x{found:016x})"
            ),
        }
    }
}

impl core::error::Error for ImageError {}

impl ImageError {
    /// What the user can do about it (one line, no trailing period).
    pub fn advice(&self) -> &'static str {
        match self {
            ImageError::NotSealed => "seal it with `cargo xtask`, or reinstall MicroV's images",
            ImageError::Truncated { .. }
            | ImageError::SizeMismatch { .. }
            | ImageError::ChecksumMismatch { .. } => "reinstall MicroV's images",
            ImageError::WrongMagic { .. } => {
                "pass the microkernel with --kernel and the extension with --extension"
            }
            ImageError::VersionMismatch { .. } => {
                "install the images, the driver and the CLI from the same MicroV build"
            }
            _ => "reinstall MicroV's images, or pass the right ones with --kernel/--extension",
        }
    }
}
