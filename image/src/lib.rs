//! MicroV's hypervisor images: from a linked ELF file to the flat memory
//! image a loader copies into the pool.
//!
//! The microkernel and the extension are static (non-PIE) ELF64 x86-64
//! executables linked at fixed addresses ([`POOL_VA`] and [`EXTENSION_BASE`]).
//! Their first bytes are an [`ImageHeader`]. At build time [`seal`] writes the
//! image's flattened size and its FNV-1a checksum into that header; at start
//! [`flatten`] checks everything a loader relies on and produces the bytes
//! and segment list the driver copies and maps, refusing a corrupt file with
//! an error that says what is wrong.
//!
//! Nothing here panics on any input: every read of the file is bounds
//! checked.
// The no-panic lints are denied in Cargo.toml; unit tests may panic.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
#![forbid(unsafe_code)]
// The file functions need std; the checks themselves need only `alloc`, so
// microv.efi (no_std) checks images exactly as the CLI does.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

mod elf;
mod error;
#[cfg(feature = "std")]
mod file;
pub mod testing;

use alloc::vec;
use alloc::vec::Vec;

use microv_abi::launch::{
    fnv1a64, ImageHeader, Segment, EXTENSION_BASE, EXTENSION_IMAGE_MAGIC, EXTENSION_MAX_SIZE,
    IMAGE_CHECKSUM_OFFSET, KERNEL_IMAGE_MAGIC, KERNEL_MAX_SIZE, LAUNCH_VERSION, POOL_VA, SEGMENT_R,
    SEGMENT_W, SEGMENT_X,
};
use zerocopy::FromBytes;

pub use error::{ImageError, Region};
#[cfg(feature = "std")]
pub use file::{load_file, seal_file, FileError, FileErrorKind};

/// Size of [`ImageHeader`].
pub const HEADER_SIZE: usize = core::mem::size_of::<ImageHeader>();
/// Offset of [`ImageHeader::image_size`] in the image.
pub const IMAGE_SIZE_OFFSET: usize = core::mem::offset_of!(ImageHeader, image_size);

/// Which hypervisor image a file should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageKind {
    /// The microkernel (host ring 0), linked at [`POOL_VA`].
    Kernel,
    /// The extension (host ring 3), linked at [`EXTENSION_BASE`].
    Extension,
}

impl ImageKind {
    /// Both kinds.
    pub const ALL: [ImageKind; 2] = [ImageKind::Kernel, ImageKind::Extension];

    /// The link address of the image's first byte.
    pub const fn base(self) -> u64 {
        match self {
            ImageKind::Kernel => POOL_VA,
            ImageKind::Extension => EXTENSION_BASE,
        }
    }

    /// The magic its header must carry.
    pub const fn magic(self) -> u64 {
        match self {
            ImageKind::Kernel => KERNEL_IMAGE_MAGIC,
            ImageKind::Extension => EXTENSION_IMAGE_MAGIC,
        }
    }

    /// Most bytes of memory the image may span (bss included).
    pub const fn max_size(self) -> u64 {
        match self {
            ImageKind::Kernel => KERNEL_MAX_SIZE,
            ImageKind::Extension => EXTENSION_MAX_SIZE,
        }
    }

    /// The installed file's name (`microv-kernel.elf`, `microv-extension.elf`).
    pub const fn file_name(self) -> &'static str {
        match self {
            ImageKind::Kernel => "microv-kernel.elf",
            ImageKind::Extension => "microv-extension.elf",
        }
    }

    /// What to call it in messages.
    pub const fn description(self) -> &'static str {
        match self {
            ImageKind::Kernel => "microkernel",
            ImageKind::Extension => "extension",
        }
    }

    /// The kind whose magic this is.
    pub fn from_magic(magic: u64) -> Option<ImageKind> {
        ImageKind::ALL.into_iter().find(|k| k.magic() == magic)
    }
}

/// A hypervisor image as it lies in memory from its link address.
#[derive(Clone, PartialEq, Eq)]
pub struct FlatImage {
    /// Link address of `bytes[0]`.
    pub base: u64,
    /// Entry point (virtual address inside an executable segment).
    pub entry: u64,
    /// The image's memory from `base`: a whole number of pages, bss and the
    /// gaps between segments zero-filled.
    pub bytes: Vec<u8>,
    /// The loaded segments: offset from `base`, page-aligned size, and ELF
    /// `p_flags` access bits (R 4, W 2, X 1). At most
    /// [`microv_abi::launch::MAX_SEGMENTS`], in ascending order.
    pub segments: Vec<Segment>,
}

impl core::fmt::Debug for FlatImage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The bytes can be megabytes: show their length and checksum.
        f.debug_struct("FlatImage")
            .field("base", &format_args!("{:#x}", self.base))
            .field("entry", &format_args!("{:#x}", self.entry))
            .field("len", &self.bytes.len())
            .field("checksum", &format_args!("{:#018x}", checksum(self)))
            .field("segments", &self.segments)
            .finish()
    }
}

impl FlatImage {
    /// The image header at the start of `bytes` (zeroed if too short, which
    /// `flatten` never returns).
    pub fn header(&self) -> ImageHeader {
        ImageHeader::read_from_prefix(&self.bytes)
            .map(|(h, _)| h)
            .unwrap_or_else(|_| ImageHeader::zeroed())
    }
}

/// FNV-1a 64 of the flat image with the 8 checksum bytes treated as zero:
/// the value [`seal`] stores in the header's `checksum`.
pub fn checksum(flat: &FlatImage) -> u64 {
    checksum_bytes(&flat.bytes)
}

fn checksum_bytes(bytes: &[u8]) -> u64 {
    let mut copy = bytes.to_vec();
    if let Some(field) = copy.get_mut(IMAGE_CHECKSUM_OFFSET..IMAGE_CHECKSUM_OFFSET + 8) {
        field.fill(0);
    }
    fnv1a64(&copy)
}

/// Everything but the seal checked; the flat image as the file holds it.
struct Layout {
    flat: FlatImage,
    /// File offset of the image header.
    header_offset: usize,
}

fn layout(elf: &[u8], kind: ImageKind) -> Result<Layout, ImageError> {
    let parsed = elf::parse(elf)?;
    let (Some(first), Some(last)) = (parsed.loads.first(), parsed.loads.last()) else {
        return Err(ImageError::NoLoadableSegments);
    };
    let base = kind.base();
    if first.vaddr != base {
        return Err(ImageError::WrongBase {
            kind,
            found: first.vaddr,
        });
    }
    // `parse` checked that no segment's page range wraps.
    let span = elf::align_up(last.end()).map(|end| end - base);
    let span = match span {
        Some(s) if s <= kind.max_size() => s,
        _ => {
            return Err(ImageError::TooLarge {
                kind,
                size: span.unwrap_or(u64::MAX),
            })
        }
    };
    let entry = parsed.entry;
    let entry_ok = parsed
        .loads
        .iter()
        .any(|l| u64::from(l.flags) & SEGMENT_X != 0 && entry >= l.vaddr && entry < l.end());
    if !entry_ok {
        return Err(ImageError::BadEntry { entry });
    }

    // The header: the first bytes of the first segment.
    if first.filesz < HEADER_SIZE as u64 {
        return Err(ImageError::NoHeader {
            filesz: first.filesz,
        });
    }
    let header_offset =
        usize::try_from(first.offset).map_err(|_| ImageError::NoHeader { filesz: 0 })?;
    let header = elf
        .get(header_offset..)
        .and_then(|b| ImageHeader::read_from_prefix(b).ok())
        .map(|(h, _)| h)
        .ok_or(ImageError::NoHeader {
            filesz: first.filesz,
        })?;
    if header.magic != kind.magic() {
        return Err(ImageError::WrongMagic {
            kind,
            found: header.magic,
        });
    }
    if header.launch_version != LAUNCH_VERSION {
        return Err(ImageError::VersionMismatch {
            found: header.launch_version,
            expected: LAUNCH_VERSION,
        });
    }
    if header.header_size as usize != HEADER_SIZE {
        return Err(ImageError::BadHeaderSize {
            found: header.header_size,
            expected: HEADER_SIZE as u32,
        });
    }

    // Build the memory image. `span` is at most the kind's maximum size.
    let span = usize::try_from(span).map_err(|_| ImageError::TooLarge { kind, size: span })?;
    let mut bytes = vec![0u8; span];
    let mut segments = Vec::with_capacity(parsed.loads.len());
    for l in &parsed.loads {
        let truncated = ImageError::Truncated {
            len: elf.len() as u64,
            region: Region::Segment(l.index),
            end: l.offset.saturating_add(l.filesz),
        };
        let src = usize::try_from(l.offset)
            .ok()
            .zip(usize::try_from(l.filesz).ok())
            .and_then(|(o, n)| elf.get(o..o.checked_add(n)?))
            .ok_or(truncated)?;
        let at = usize::try_from(l.vaddr - base).map_err(|_| ImageError::TooLarge {
            kind,
            size: span as u64,
        })?;
        let dst = at
            .checked_add(src.len())
            .and_then(|end| bytes.get_mut(at..end))
            .ok_or(ImageError::TooLarge {
                kind,
                size: span as u64,
            })?;
        dst.copy_from_slice(src);
        segments.push(Segment {
            offset: l.vaddr - base,
            size: elf::align_up(l.memsz).unwrap_or(u64::MAX),
            flags: u64::from(l.flags) & (SEGMENT_R | SEGMENT_W | SEGMENT_X),
        });
    }
    Ok(Layout {
        flat: FlatImage {
            base,
            entry,
            bytes,
            segments,
        },
        header_offset,
    })
}

/// Checks `elf` thoroughly and returns its flat memory image.
///
/// Checks: ELF magic, 64-bit, little endian, x86-64, `ET_EXEC`, no dynamic
/// loader, program headers and segment file ranges inside the file,
/// `p_filesz <= p_memsz`, loadable segments page-aligned, ascending and not
/// sharing pages, at most `MAX_SEGMENTS` of them, the lowest at the kind's
/// base, the whole span within the kind's maximum size, the entry point in an
/// executable segment, and the header's magic, launch version, header size,
/// image size and checksum.
pub fn flatten(elf: &[u8], kind: ImageKind) -> Result<FlatImage, ImageError> {
    let Layout { flat, .. } = layout(elf, kind)?;
    let header = flat.header();
    if header.image_size == 0 && header.checksum == 0 {
        return Err(ImageError::NotSealed);
    }
    let actual = flat.bytes.len() as u64;
    if header.image_size != actual {
        return Err(ImageError::SizeMismatch {
            header: header.image_size,
            actual,
        });
    }
    let found = checksum(&flat);
    if header.checksum != found {
        return Err(ImageError::ChecksumMismatch {
            expected: header.checksum,
            found,
        });
    }
    Ok(flat)
}

/// Seals an image at build time: writes its flattened size and checksum
/// into the header inside the ELF file's bytes, so that [`flatten`]
/// accepts it. Returns the checksum.
///
/// Fails like [`flatten`] on anything but the seal itself.
pub fn seal(elf: &mut [u8], kind: ImageKind) -> Result<u64, ImageError> {
    let Layout {
        mut flat,
        header_offset,
    } = layout(elf, kind)?;
    let size = flat.bytes.len() as u64;
    write_u64(&mut flat.bytes, IMAGE_SIZE_OFFSET, size)?;
    let sum = checksum(&flat);
    write_u64(elf, header_offset + IMAGE_SIZE_OFFSET, size)?;
    write_u64(elf, header_offset + IMAGE_CHECKSUM_OFFSET, sum)?;
    // What the loaders will check, checked now.
    flatten(elf, kind)?;
    Ok(sum)
}

fn write_u64(bytes: &mut [u8], at: usize, value: u64) -> Result<(), ImageError> {
    let len = bytes.len() as u64;
    let field = at
        .checked_add(8)
        .and_then(|end| bytes.get_mut(at..end))
        .ok_or(ImageError::NoHeader { filesz: len })?;
    field.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests;
