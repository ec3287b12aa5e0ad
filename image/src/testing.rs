//! Synthetic hypervisor images for tests (this crate's, the CLI's, the
//! build's): a tiny ELF64 writer and ready-made valid images.
// The writer indexes only into buffers it sized for what it writes.
#![allow(clippy::indexing_slicing)]

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use microv_abi::launch::{ImageHeader, LAUNCH_VERSION, SEGMENT_R, SEGMENT_W, SEGMENT_X};
use zerocopy::IntoBytes;

use crate::{elf, seal, ImageKind, HEADER_SIZE};

/// One program header to write.
#[derive(Clone, Debug)]
pub struct SegmentSpec {
    /// `p_type` (1 = `PT_LOAD`).
    pub p_type: u32,
    /// `p_flags`.
    pub flags: u32,
    pub vaddr: u64,
    /// The file bytes (`p_filesz` is their length unless overridden).
    pub data: Vec<u8>,
    pub memsz: u64,
    /// Overrides the `p_filesz` written.
    pub filesz_override: Option<u64>,
    /// Overrides the `p_offset` written.
    pub offset_override: Option<u64>,
}

/// Writes a minimal ELF64 file: the file header, the program headers right
/// after it, then each segment's data (16-byte aligned). Every field can be
/// set to something wrong on purpose.
#[derive(Clone, Debug)]
pub struct ElfBuilder {
    pub class: u8,
    pub encoding: u8,
    pub e_type: u16,
    pub machine: u16,
    pub version: u32,
    pub entry: u64,
    pub phentsize: u16,
    /// Overrides `e_phnum`.
    pub phnum_override: Option<u16>,
    /// Overrides `e_phoff`.
    pub phoff_override: Option<u64>,
    pub segments: Vec<SegmentSpec>,
}

impl ElfBuilder {
    /// A static x86-64 executable with the given entry point and no segments.
    pub fn new(entry: u64) -> Self {
        ElfBuilder {
            class: 2,
            encoding: 1,
            e_type: elf::ET_EXEC,
            machine: elf::EM_X86_64,
            version: 1,
            entry,
            phentsize: elf::PHDR_SIZE as u16,
            phnum_override: None,
            phoff_override: None,
            segments: Vec::new(),
        }
    }

    /// Adds a `PT_LOAD` segment.
    pub fn load(mut self, vaddr: u64, flags: u32, data: Vec<u8>, memsz: u64) -> Self {
        self.segments.push(SegmentSpec {
            p_type: elf::PT_LOAD,
            flags,
            vaddr,
            data,
            memsz,
            filesz_override: None,
            offset_override: None,
        });
        self
    }

    /// Adds a program header of another type (no data).
    pub fn other(mut self, p_type: u32) -> Self {
        self.segments.push(SegmentSpec {
            p_type,
            flags: 4,
            vaddr: 0,
            data: Vec::new(),
            memsz: 0,
            filesz_override: None,
            offset_override: None,
        });
        self
    }

    /// The file's bytes.
    pub fn build(&self) -> Vec<u8> {
        let phnum = self.segments.len();
        let phoff = elf::EHDR_SIZE as u64;
        let mut data_at = elf::EHDR_SIZE + phnum * elf::PHDR_SIZE;
        let mut offsets = Vec::with_capacity(phnum);
        for s in &self.segments {
            data_at = data_at.next_multiple_of(16);
            offsets.push(data_at);
            data_at += s.data.len();
        }
        let mut out = vec![0u8; data_at];

        let mut h = Vec::with_capacity(elf::EHDR_SIZE);
        h.extend_from_slice(b"\x7fELF");
        h.extend_from_slice(&[self.class, self.encoding, 1, 0]);
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&self.e_type.to_le_bytes());
        h.extend_from_slice(&self.machine.to_le_bytes());
        h.extend_from_slice(&self.version.to_le_bytes());
        h.extend_from_slice(&self.entry.to_le_bytes());
        h.extend_from_slice(&self.phoff_override.unwrap_or(phoff).to_le_bytes());
        h.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        h.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        h.extend_from_slice(&(elf::EHDR_SIZE as u16).to_le_bytes());
        h.extend_from_slice(&self.phentsize.to_le_bytes());
        h.extend_from_slice(&self.phnum_override.unwrap_or(phnum as u16).to_le_bytes());
        h.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
        out[..elf::EHDR_SIZE].copy_from_slice(&h);

        for (i, (s, &off)) in self.segments.iter().zip(&offsets).enumerate() {
            let mut p = Vec::with_capacity(elf::PHDR_SIZE);
            p.extend_from_slice(&s.p_type.to_le_bytes());
            p.extend_from_slice(&s.flags.to_le_bytes());
            p.extend_from_slice(&s.offset_override.unwrap_or(off as u64).to_le_bytes());
            p.extend_from_slice(&s.vaddr.to_le_bytes());
            p.extend_from_slice(&s.vaddr.to_le_bytes()); // p_paddr
            p.extend_from_slice(
                &s.filesz_override
                    .unwrap_or(s.data.len() as u64)
                    .to_le_bytes(),
            );
            p.extend_from_slice(&s.memsz.to_le_bytes());
            p.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
            let at = elf::EHDR_SIZE + i * elf::PHDR_SIZE;
            out[at..at + elf::PHDR_SIZE].copy_from_slice(&p);
            out[off..off + s.data.len()].copy_from_slice(&s.data);
        }
        out
    }
}

/// An unsealed image header for `kind`.
pub fn header(kind: ImageKind) -> ImageHeader {
    ImageHeader {
        magic: kind.magic(),
        launch_version: LAUNCH_VERSION,
        header_size: HEADER_SIZE as u32,
        checksum: 0,
        image_size: 0,
    }
}

/// Offset of the entry point from the base in [`sample_builder`]'s images.
pub const SAMPLE_ENTRY_OFFSET: u64 = 0x40;

/// The builder for a small valid (unsealed) image of `kind`: a read/execute
/// text segment (header, then `int3`s, entry at [`SAMPLE_ENTRY_OFFSET`]), a
/// read-only page, and a read/write data segment with bss, one page apart.
pub fn sample_builder(kind: ImageKind) -> ElfBuilder {
    let base = kind.base();
    let mut text = header(kind).as_bytes().to_vec();
    text.resize(0x60, 0xcc);
    let rodata = b"MicroV read-only data".to_vec();
    let data: Vec<u8> = (0u8..40).collect();
    let r = SEGMENT_R as u32;
    let w = SEGMENT_W as u32;
    let x = SEGMENT_X as u32;
    ElfBuilder::new(base + SAMPLE_ENTRY_OFFSET)
        .load(base, r | x, text, 0x1800)
        .load(base + 0x2000, r, rodata, 0x100)
        .other(0x6474_e551) // PT_GNU_STACK
        .load(base + 0x4000, r | w, data, 0x3000)
}

/// A small valid sealed image of `kind` (see [`sample_builder`]).
pub fn sample_image(kind: ImageKind) -> Vec<u8> {
    let mut elf = sample_builder(kind).build();
    // The sample is valid by construction; a failure here is a bug in this
    // module that every test using it reports.
    if let Err(e) = seal(&mut elf, kind) {
        return format!("sample_image bug: {e}").into_bytes();
    }
    elf
}
