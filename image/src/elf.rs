//! Just enough ELF64 reading for static executables, every access bounds
//! checked: the file header and the loadable segments.

use alloc::vec::Vec;
use crate::error::{ImageError, Region};
use microv_abi::launch::{MAX_SEGMENTS, PAGE_SIZE};

pub(crate) const EHDR_SIZE: usize = 64;
pub(crate) const PHDR_SIZE: usize = 56;
pub(crate) const EM_X86_64: u16 = 62;
pub(crate) const ET_EXEC: u16 = 2;
pub(crate) const PT_LOAD: u32 = 1;
pub(crate) const PT_DYNAMIC: u32 = 2;
pub(crate) const PT_INTERP: u32 = 3;
/// `e_phnum` value meaning "the real count is elsewhere".
const PN_XNUM: u16 = 0xffff;

/// A `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Load {
    /// Program-header index.
    pub index: usize,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

impl Load {
    /// First address after the segment's memory.
    pub fn end(&self) -> u64 {
        // Checked in `parse`.
        self.vaddr.saturating_add(self.memsz)
    }
}

/// What `parse` keeps of a valid file.
#[derive(Debug)]
pub(crate) struct Elf {
    pub entry: u64,
    /// Ascending, page-aligned, non-overlapping, with file ranges in bounds.
    pub loads: Vec<Load>,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

pub(crate) fn align_up(v: u64) -> Option<u64> {
    Some(v.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1))
}

/// Reads and checks the ELF structure (not what the segments contain).
pub(crate) fn parse(elf: &[u8]) -> Result<Elf, ImageError> {
    let len = elf.len() as u64;
    let truncated = |region, end| ImageError::Truncated { len, region, end };

    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        // A short prefix of an ELF file is truncated, anything else is not ELF.
        return Err(if b"\x7fELF".starts_with(elf) {
            truncated(Region::ElfHeader, EHDR_SIZE as u64)
        } else {
            ImageError::NotElf
        });
    }
    let hdr = elf
        .get(..EHDR_SIZE)
        .ok_or(truncated(Region::ElfHeader, EHDR_SIZE as u64))?;
    let short = || truncated(Region::ElfHeader, EHDR_SIZE as u64);
    let byte = |i: usize| hdr.get(i).copied().ok_or_else(short);

    let class = byte(4)?;
    if class != 2 {
        return Err(ImageError::NotElf64 { class });
    }
    let encoding = byte(5)?;
    if encoding != 1 {
        return Err(ImageError::NotLittleEndian { encoding });
    }
    let ident_version = byte(6)?;
    if ident_version != 1 {
        return Err(ImageError::BadElfVersion {
            version: u32::from(ident_version),
        });
    }
    let e_type = u16_at(hdr, 16).ok_or_else(short)?;
    let machine = u16_at(hdr, 18).ok_or_else(short)?;
    let version = u32_at(hdr, 20).ok_or_else(short)?;
    let entry = u64_at(hdr, 24).ok_or_else(short)?;
    let phoff = u64_at(hdr, 32).ok_or_else(short)?;
    let phentsize = u16_at(hdr, 54).ok_or_else(short)?;
    let phnum = u16_at(hdr, 56).ok_or_else(short)?;

    if machine != EM_X86_64 {
        return Err(ImageError::WrongMachine { machine });
    }
    if version != 1 {
        return Err(ImageError::BadElfVersion { version });
    }
    if e_type != ET_EXEC {
        return Err(ImageError::NotExecutable { e_type });
    }
    if phnum == 0 {
        return Err(ImageError::NoLoadableSegments);
    }
    if phnum == PN_XNUM {
        return Err(ImageError::TooManyProgramHeaders { count: phnum });
    }
    if usize::from(phentsize) != PHDR_SIZE {
        return Err(ImageError::BadProgramHeaderSize { size: phentsize });
    }
    let table_size = u64::from(phnum) * PHDR_SIZE as u64;
    let table_end = phoff
        .checked_add(table_size)
        .ok_or(truncated(Region::ProgramHeaders, u64::MAX))?;
    let table = usize::try_from(phoff)
        .ok()
        .zip(usize::try_from(table_end).ok())
        .and_then(|(s, e)| elf.get(s..e))
        .ok_or(truncated(Region::ProgramHeaders, table_end))?;

    let mut loads: Vec<Load> = Vec::new();
    for (index, ph) in table.chunks_exact(PHDR_SIZE).enumerate() {
        let field =
            |off: usize| u64_at(ph, off).ok_or(truncated(Region::ProgramHeaders, table_end));
        let p_type = u32_at(ph, 0).ok_or(truncated(Region::ProgramHeaders, table_end))?;
        let flags = u32_at(ph, 4).ok_or(truncated(Region::ProgramHeaders, table_end))?;
        match p_type {
            PT_DYNAMIC | PT_INTERP => return Err(ImageError::Dynamic { index }),
            PT_LOAD => {}
            _ => continue,
        }
        let load = Load {
            index,
            flags,
            offset: field(8)?,
            vaddr: field(16)?,
            filesz: field(32)?,
            memsz: field(40)?,
        };
        if load.memsz == 0 {
            // Occupies no memory: nothing to load (some linkers emit these).
            continue;
        }
        if load.filesz > load.memsz {
            return Err(ImageError::FileSizeExceedsMemSize {
                index,
                filesz: load.filesz,
                memsz: load.memsz,
            });
        }
        let file_end = load.offset.checked_add(load.filesz);
        match file_end {
            Some(end) if end <= len => {}
            _ => {
                return Err(truncated(
                    Region::Segment(index),
                    file_end.unwrap_or(u64::MAX),
                ))
            }
        }
        if !load.vaddr.is_multiple_of(PAGE_SIZE) {
            return Err(ImageError::SegmentMisaligned {
                index,
                vaddr: load.vaddr,
            });
        }
        // The segment's pages must not wrap around.
        if load
            .vaddr
            .checked_add(load.memsz)
            .and_then(align_up)
            .is_none()
        {
            return Err(ImageError::AddressOverflow { index });
        }
        if let Some(prev) = loads.last() {
            // `end` cannot overflow (checked above for `prev`).
            let prev_pages_end = align_up(prev.end()).unwrap_or(u64::MAX);
            if load.vaddr < prev_pages_end {
                return Err(ImageError::SegmentOverlap {
                    index,
                    vaddr: load.vaddr,
                    previous: prev.index,
                    previous_end: prev.end(),
                });
            }
        }
        loads.push(load);
        if loads.len() > MAX_SEGMENTS {
            let count = table
                .chunks_exact(PHDR_SIZE)
                .filter(|ph| {
                    u32_at(ph, 0) == Some(PT_LOAD) && u64_at(ph, 40).is_some_and(|m| m != 0)
                })
                .count();
            return Err(ImageError::TooManySegments {
                count,
                max: MAX_SEGMENTS,
            });
        }
    }
    if loads.is_empty() {
        return Err(ImageError::NoLoadableSegments);
    }
    Ok(Elf { entry, loads })
}
