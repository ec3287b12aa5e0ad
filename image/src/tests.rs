use super::testing::{header, sample_builder, sample_image, ElfBuilder, SAMPLE_ENTRY_OFFSET};
use super::*;
use microv_abi::launch::{MAX_SEGMENTS, PAGE_SIZE};
use zerocopy::IntoBytes;

const RX: u32 = 5;
const R: u32 = 4;
const RW: u32 = 6;

fn sealed(b: &ElfBuilder, kind: ImageKind) -> Result<Vec<u8>, ImageError> {
    let mut elf = b.build();
    seal(&mut elf, kind)?;
    Ok(elf)
}

/// Builds, seals and flattens; the error of whichever step failed.
fn check(b: &ElfBuilder, kind: ImageKind) -> Result<FlatImage, ImageError> {
    flatten(&sealed(b, kind)?, kind)
}

fn header_text(kind: ImageKind, len: usize) -> Vec<u8> {
    let mut t = header(kind).as_bytes().to_vec();
    t.resize(len, 0x90);
    t
}

#[test]
fn sample_flattens_as_expected() {
    for kind in ImageKind::ALL {
        let elf = sample_image(kind);
        let flat = flatten(&elf, kind).unwrap();
        assert_eq!(flat.base, kind.base());
        assert_eq!(flat.entry, kind.base() + SAMPLE_ENTRY_OFFSET);
        assert_eq!(flat.bytes.len(), 0x7000);
        assert_eq!(flat.bytes.len() as u64 % PAGE_SIZE, 0);
        let segs: Vec<(u64, u64, u64)> = flat
            .segments
            .iter()
            .map(|s| (s.offset, s.size, s.flags))
            .collect();
        assert_eq!(
            segs,
            vec![(0, 0x2000, 5), (0x2000, 0x1000, 4), (0x4000, 0x3000, 6)]
        );
        // Text: header, then int3 up to 0x60, then zero-fill.
        assert_eq!(&flat.bytes[..8], &kind.magic().to_le_bytes());
        assert!(flat.bytes[0x20..0x60].iter().all(|&b| b == 0xcc));
        assert!(flat.bytes[0x60..0x2000].iter().all(|&b| b == 0));
        assert_eq!(&flat.bytes[0x2000..0x2015], b"MicroV read-only data");
        // The unmapped gap page and bss are zero, data copied.
        assert!(flat.bytes[0x3000..0x4000].iter().all(|&b| b == 0));
        assert_eq!(
            flat.bytes[0x4000..0x4028],
            (0u8..40).collect::<Vec<_>>()[..]
        );
        assert!(flat.bytes[0x4028..].iter().all(|&b| b == 0));
        let h = flat.header();
        assert_eq!(h.image_size, 0x7000);
        assert_eq!(h.checksum, checksum(&flat));
        assert_eq!(h.launch_version, LAUNCH_VERSION);
    }
}

#[test]
fn checksum_is_fnv_with_the_field_zeroed() {
    let flat = flatten(&sample_image(ImageKind::Kernel), ImageKind::Kernel).unwrap();
    let mut zeroed = flat.bytes.clone();
    zeroed[IMAGE_CHECKSUM_OFFSET..IMAGE_CHECKSUM_OFFSET + 8].fill(0);
    assert_eq!(checksum(&flat), fnv1a64(&zeroed));
    let mut other = flat.clone();
    other.bytes[IMAGE_CHECKSUM_OFFSET] ^= 0xff;
    assert_eq!(
        checksum(&other),
        checksum(&flat),
        "the checksum field itself is not covered"
    );
    other.bytes[0x4000] ^= 1;
    assert_ne!(checksum(&other), checksum(&flat));
}

#[test]
fn seal_round_trips_and_is_idempotent() {
    for kind in ImageKind::ALL {
        let mut elf = sample_builder(kind).build();
        assert_eq!(flatten(&elf, kind), Err(ImageError::NotSealed));
        let sum = seal(&mut elf, kind).unwrap();
        let once = elf.clone();
        assert_eq!(flatten(&elf, kind).unwrap().header().checksum, sum);
        assert_eq!(seal(&mut elf, kind).unwrap(), sum);
        assert_eq!(elf, once);
        // Only the two header fields changed.
        let unsealed = sample_builder(kind).build();
        let changed: Vec<usize> = (0..elf.len()).filter(|&i| elf[i] != unsealed[i]).collect();
        assert!(!changed.is_empty() && changed.len() <= 16, "{changed:?}");
    }
}

#[test]
fn seal_refuses_what_flatten_refuses() {
    let mut elf = sample_builder(ImageKind::Kernel).build();
    assert!(matches!(
        seal(&mut elf, ImageKind::Extension),
        Err(ImageError::WrongBase {
            kind: ImageKind::Extension,
            ..
        })
    ));
    let mut short = elf[..100].to_vec();
    assert!(matches!(
        seal(&mut short, ImageKind::Kernel),
        Err(ImageError::Truncated { .. })
    ));
}

#[test]
fn elf_identification_is_checked() {
    let good = sample_image(ImageKind::Kernel);
    let k = ImageKind::Kernel;
    let mut f = good.clone();
    f[0] = b'M';
    assert_eq!(flatten(&f, k), Err(ImageError::NotElf));
    assert_eq!(flatten(b"#!/bin/sh\necho hi\n", k), Err(ImageError::NotElf));

    let mut b = sample_builder(k);
    b.class = 1;
    assert_eq!(check(&b, k), Err(ImageError::NotElf64 { class: 1 }));
    let mut b = sample_builder(k);
    b.encoding = 2;
    assert_eq!(
        check(&b, k),
        Err(ImageError::NotLittleEndian { encoding: 2 })
    );
    let mut f = good.clone();
    f[6] = 0;
    assert_eq!(
        flatten(&f, k),
        Err(ImageError::BadElfVersion { version: 0 })
    );
    let mut b = sample_builder(k);
    b.version = 2;
    assert_eq!(check(&b, k), Err(ImageError::BadElfVersion { version: 2 }));
    let mut b = sample_builder(k);
    b.machine = 183; // aarch64
    assert_eq!(check(&b, k), Err(ImageError::WrongMachine { machine: 183 }));
    let mut b = sample_builder(k);
    b.e_type = 3;
    let e = check(&b, k).unwrap_err();
    assert_eq!(e, ImageError::NotExecutable { e_type: 3 });
    assert!(e.to_string().contains("-no-pie"), "{e}");
    let mut b = sample_builder(k);
    b.e_type = 1;
    assert_eq!(check(&b, k), Err(ImageError::NotExecutable { e_type: 1 }));
}

#[test]
fn program_header_table_is_checked() {
    let k = ImageKind::Kernel;
    let mut b = sample_builder(k);
    b.phentsize = 32;
    assert_eq!(
        check(&b, k),
        Err(ImageError::BadProgramHeaderSize { size: 32 })
    );
    let mut b = sample_builder(k);
    b.phnum_override = Some(0);
    assert_eq!(check(&b, k), Err(ImageError::NoLoadableSegments));
    let mut b = sample_builder(k);
    b.phnum_override = Some(0xffff);
    assert_eq!(
        check(&b, k),
        Err(ImageError::TooManyProgramHeaders { count: 0xffff })
    );
    let mut b = sample_builder(k);
    b.phoff_override = Some(u64::MAX - 8);
    assert!(matches!(
        check(&b, k),
        Err(ImageError::Truncated {
            region: Region::ProgramHeaders,
            ..
        })
    ));
    let mut b = sample_builder(k);
    b.phnum_override = Some(200);
    assert!(matches!(
        check(&b, k),
        Err(ImageError::Truncated { region: Region::ProgramHeaders, end, .. }) if end == 64 + 200 * 56
    ));
    // A dynamic loader cannot be honoured.
    let b = sample_builder(k).other(3);
    assert_eq!(check(&b, k), Err(ImageError::Dynamic { index: 4 }));
    let b = sample_builder(k).other(2);
    assert_eq!(check(&b, k), Err(ImageError::Dynamic { index: 4 }));
    // Only non-load headers.
    let b = ElfBuilder::new(k.base()).other(0x6474_e551);
    assert_eq!(check(&b, k), Err(ImageError::NoLoadableSegments));
}

#[test]
fn segments_must_be_aligned_ascending_and_disjoint() {
    let k = ImageKind::Kernel;
    let base = k.base();
    let text = || header_text(k, 0x40);

    let b = ElfBuilder::new(base)
        .load(base, RX, text(), 0x1000)
        .load(base + 0x1800, RW, vec![], 8);
    assert_eq!(
        check(&b, k),
        Err(ImageError::SegmentMisaligned {
            index: 1,
            vaddr: base + 0x1800
        })
    );

    // Sharing the first segment's last page.
    let b = ElfBuilder::new(base)
        .load(base, RX, text(), 0x1800)
        .load(base + 0x1000, RW, vec![], 8);
    assert_eq!(
        check(&b, k),
        Err(ImageError::SegmentOverlap {
            index: 1,
            vaddr: base + 0x1000,
            previous: 0,
            previous_end: base + 0x1800
        })
    );
    // Descending.
    let b = ElfBuilder::new(base)
        .load(base + 0x2000, RW, vec![], 8)
        .load(base, RX, text(), 0x1000);
    assert!(matches!(
        check(&b, k),
        Err(ImageError::SegmentOverlap { index: 1, .. })
    ));
    // Adjacent pages are fine.
    let b =
        ElfBuilder::new(base)
            .load(base, RX, text(), 0x1000)
            .load(base + 0x1000, RW, vec![1], 8);
    assert_eq!(check(&b, k).unwrap().bytes.len(), 0x2000);

    let mut b = sample_builder(k);
    b.segments[3].filesz_override = Some(0x100);
    b.segments[3].memsz = 0x80;
    assert_eq!(
        check(&b, k),
        Err(ImageError::FileSizeExceedsMemSize {
            index: 3,
            filesz: 0x100,
            memsz: 0x80
        })
    );

    let mut b = sample_builder(k);
    b.segments[3].offset_override = Some(1 << 40);
    let elf = b.build();
    let e = flatten(&elf, k).unwrap_err();
    assert_eq!(
        e,
        ImageError::Truncated {
            len: elf.len() as u64,
            region: Region::Segment(3),
            end: (1 << 40) + 40
        }
    );
    assert_eq!(
        e.to_string(),
        format!(
            "truncated (file is {} bytes, segment 3 ends at {})",
            elf.len(),
            (1u64 << 40) + 40
        )
    );
    let mut b = sample_builder(k);
    b.segments[3].offset_override = Some(u64::MAX - 4);
    assert!(matches!(
        check(&b, k),
        Err(ImageError::Truncated {
            region: Region::Segment(3),
            ..
        })
    ));

    let b =
        ElfBuilder::new(base)
            .load(base, RX, text(), 0x1000)
            .load(u64::MAX - 0xfff, RW, vec![], 8);
    assert_eq!(check(&b, k), Err(ImageError::AddressOverflow { index: 1 }));
    let b = ElfBuilder::new(base).load(base, RX, text(), u64::MAX - 0x800);
    assert!(matches!(
        check(&b, k),
        Err(ImageError::AddressOverflow { index: 0 })
    ));

    // Empty loadable segments occupy nothing and are skipped.
    let b = sample_builder(k).load(base + 0x10_0000, RW, vec![], 0);
    assert_eq!(check(&b, k).unwrap().segments.len(), 3);
}

#[test]
fn at_most_max_segments() {
    let k = ImageKind::Extension;
    let base = k.base();
    let mut b = ElfBuilder::new(base).load(base, RX, header_text(k, 0x40), 0x1000);
    for i in 1..MAX_SEGMENTS as u64 {
        b = b.load(base + i * 0x1000, RW, vec![i as u8], 0x10);
    }
    let flat = check(&b, k).unwrap();
    assert_eq!(flat.segments.len(), MAX_SEGMENTS);
    let b = b
        .load(base + 0x10_0000, RW, vec![], 0x10)
        .load(base + 0x20_0000, R, vec![], 1);
    assert_eq!(
        check(&b, k),
        Err(ImageError::TooManySegments {
            count: MAX_SEGMENTS + 2,
            max: MAX_SEGMENTS
        })
    );
}

#[test]
fn base_size_and_entry_are_checked() {
    for kind in ImageKind::ALL {
        let other = if kind == ImageKind::Kernel {
            ImageKind::Extension
        } else {
            ImageKind::Kernel
        };
        // The other kind's link address.
        let mut b = sample_builder(kind);
        for s in &mut b.segments {
            if s.p_type == 1 {
                s.vaddr = s.vaddr - kind.base() + other.base();
            }
        }
        let e = check(&b, kind).unwrap_err();
        assert_eq!(
            e,
            ImageError::WrongBase {
                kind,
                found: other.base()
            }
        );
        assert!(
            e.to_string().contains(&format!("0x{:x}", kind.base())),
            "{e}"
        );

        // Header below the base.
        let b = ElfBuilder::new(kind.base()).load(
            kind.base() - 0x1000,
            RX,
            header_text(kind, 0x40),
            0x2000,
        );
        assert!(matches!(check(&b, kind), Err(ImageError::WrongBase { .. })));

        // Exactly the maximum is fine, a page more is not.
        let mut b = sample_builder(kind);
        b.segments[3].memsz = kind.max_size() - 0x4000;
        assert_eq!(check(&b, kind).unwrap().bytes.len() as u64, kind.max_size());
        b.segments[3].memsz += 1;
        assert_eq!(
            check(&b, kind),
            Err(ImageError::TooLarge {
                kind,
                size: kind.max_size() + PAGE_SIZE
            })
        );

        for entry in [
            kind.base() + 0x2000,    // read-only segment
            kind.base() + 0x4010,    // data segment
            kind.base() + 0x3000,    // gap
            kind.base() + 0x1800,    // past text's memory, in its page
            kind.base() + 0x10_0000, // outside
            0,
        ] {
            let mut b = sample_builder(kind);
            b.entry = entry;
            assert_eq!(check(&b, kind), Err(ImageError::BadEntry { entry }));
        }
        let mut b = sample_builder(kind);
        b.entry = kind.base() + 0x17ff; // last byte of text memory
        assert!(check(&b, kind).is_ok());
    }
}

#[test]
fn header_is_checked() {
    let k = ImageKind::Kernel;
    let base = k.base();

    let b = ElfBuilder::new(base).load(base, RX, vec![0x90; 31], 0x1000);
    assert_eq!(check(&b, k), Err(ImageError::NoHeader { filesz: 31 }));
    let mut b = sample_builder(k);
    b.segments[0].filesz_override = Some(16);
    assert_eq!(check(&b, k), Err(ImageError::NoHeader { filesz: 16 }));

    // The other kind's image.
    let e = flatten(&sample_image(ImageKind::Extension), ImageKind::Kernel).unwrap_err();
    assert!(matches!(e, ImageError::WrongBase { .. }));
    let mut b = sample_builder(k);
    b.segments[0].data[..8].copy_from_slice(&ImageKind::Extension.magic().to_le_bytes());
    let e = check(&b, k).unwrap_err();
    assert_eq!(
        e,
        ImageError::WrongMagic {
            kind: k,
            found: ImageKind::Extension.magic()
        }
    );
    assert_eq!(
        e.to_string(),
        "this is the MicroV extension, not the microkernel"
    );

    let mut b = sample_builder(k);
    b.segments[0].data[..8].copy_from_slice(b"GARBAGE!");
    let e = check(&b, k).unwrap_err();
    assert!(e.to_string().contains("\"MVKERNEL\""), "{e}");
    assert!(e.to_string().contains("\"GARBAGE!\""), "{e}");

    let mut b = sample_builder(k);
    b.segments[0].data[8..12].copy_from_slice(&(LAUNCH_VERSION + 1).to_le_bytes());
    assert_eq!(
        check(&b, k),
        Err(ImageError::VersionMismatch {
            found: LAUNCH_VERSION + 1,
            expected: LAUNCH_VERSION
        })
    );

    let mut b = sample_builder(k);
    b.segments[0].data[12..16].copy_from_slice(&64u32.to_le_bytes());
    assert_eq!(
        check(&b, k),
        Err(ImageError::BadHeaderSize {
            found: 64,
            expected: 32
        })
    );
}

#[test]
fn seal_is_checked() {
    let k = ImageKind::Kernel;
    let good = sample_image(k);
    // The header sits at the first segment's file offset.
    let hdr = good
        .windows(8)
        .position(|w| w == k.magic().to_le_bytes())
        .unwrap();

    let mut f = good.clone();
    f[hdr + IMAGE_SIZE_OFFSET..hdr + IMAGE_SIZE_OFFSET + 8]
        .copy_from_slice(&0x8000u64.to_le_bytes());
    assert_eq!(
        flatten(&f, k),
        Err(ImageError::SizeMismatch {
            header: 0x8000,
            actual: 0x7000
        })
    );

    let mut f = good.clone();
    f[hdr + IMAGE_CHECKSUM_OFFSET] ^= 1;
    let e = flatten(&f, k).unwrap_err();
    assert!(matches!(e, ImageError::ChecksumMismatch { .. }));
    assert!(
        e.to_string()
            .starts_with("corrupt: checksum mismatch (expected 0x"),
        "{e}"
    );
    assert_eq!(e.advice(), "reinstall MicroV's images");

    // Image size alone set: still "not sealed" only when both are zero.
    let mut f = good.clone();
    f[hdr + IMAGE_CHECKSUM_OFFSET..hdr + IMAGE_CHECKSUM_OFFSET + 8].fill(0);
    assert!(matches!(
        flatten(&f, k),
        Err(ImageError::ChecksumMismatch { expected: 0, .. })
    ));
    f[hdr + IMAGE_SIZE_OFFSET..hdr + IMAGE_SIZE_OFFSET + 8].fill(0);
    let e = flatten(&f, k).unwrap_err();
    assert_eq!(e, ImageError::NotSealed);
    assert!(e.advice().contains("cargo xtask"));
}

#[test]
fn every_truncation_is_an_error() {
    for kind in ImageKind::ALL {
        let good = sample_image(kind);
        assert!(good.len() < 1024, "keep the sample small: {}", good.len());
        for len in 0..good.len() {
            match flatten(&good[..len], kind) {
                Err(ImageError::Truncated { len: l, end, .. }) => {
                    assert_eq!(l, len as u64);
                    assert!(end > l);
                }
                other => panic!("truncated to {len}: {other:?}"),
            }
        }
    }
}

/// Any single-byte change either is refused or leaves the loaded image
/// byte-for-byte the same; changes to loaded bytes are always refused.
#[test]
fn single_byte_corruption_is_detected() {
    for kind in ImageKind::ALL {
        let good = sample_image(kind);
        let flat = flatten(&good, kind).unwrap();
        let elf = elf::parse(&good).unwrap();
        let loaded = |i: usize| {
            elf.loads
                .iter()
                .any(|l| (i as u64) >= l.offset && (i as u64) < l.offset + l.filesz)
        };
        let mut refused = 0;
        for i in 0..good.len() {
            for mask in [0x01u8, 0x10, 0x80, 0xff] {
                let mut f = good.clone();
                f[i] ^= mask;
                match flatten(&f, kind) {
                    Err(e) => {
                        assert!(!e.to_string().is_empty());
                        refused += 1;
                    }
                    Ok(g) => {
                        assert!(
                            !loaded(i),
                            "changing loaded byte {i} ^ {mask:#x} went unnoticed"
                        );
                        assert_eq!(g.bytes, flat.bytes, "byte {i} ^ {mask:#x}");
                    }
                }
            }
        }
        assert!(refused > good.len(), "{refused}");
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_damage_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let interesting = [0u8, 1, 2, 3, 0x7f, 0x80, 0xff, 0x10, 0x40];
    for kind in ImageKind::ALL {
        let good = sample_image(kind);
        for _ in 0..1500 {
            let mut f = good.clone();
            for _ in 0..=rng.below(6) {
                let i = rng.below(f.len());
                f[i] = if rng.below(2) == 0 {
                    interesting[rng.below(interesting.len())]
                } else {
                    rng.next() as u8
                };
            }
            if rng.below(4) == 0 {
                f.truncate(rng.below(f.len() + 1));
            }
            let _ = flatten(&f, kind);
            let _ = seal(&mut f, kind);
            let _ = flatten(&f, kind);
        }
        // Pure noise, with and without a valid ELF identification.
        for _ in 0..2000 {
            let mut f: Vec<u8> = (0..rng.below(600)).map(|_| rng.next() as u8).collect();
            if f.len() >= 7 && rng.below(2) == 0 {
                f[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
            }
            assert!(flatten(&f, kind).is_err());
            let _ = seal(&mut f, kind);
        }
    }
}

#[test]
fn files_are_named_in_errors() {
    let dir = std::env::temp_dir().join(format!("microv-image-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("nope.elf");
    let e = load_file(&missing, ImageKind::Kernel).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: no such file", missing.display())
    );
    assert!(e.advice().contains("--image-dir"));

    let path = dir.join(ImageKind::Kernel.file_name());
    std::fs::write(&path, sample_builder(ImageKind::Kernel).build()).unwrap();
    let e = load_file(&path, ImageKind::Kernel).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}: not sealed", path.display())),
        "{e}"
    );
    let sum = seal_file(&path, ImageKind::Kernel).unwrap();
    let flat = load_file(&path, ImageKind::Kernel).unwrap();
    assert_eq!(flat.header().checksum, sum);

    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let e = load_file(&path, ImageKind::Kernel).unwrap_err();
    assert!(
        e.to_string()
            .contains("microv-kernel.elf: corrupt: checksum mismatch"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kinds() {
    assert_eq!(ImageKind::Kernel.base(), POOL_VA);
    assert_eq!(ImageKind::Extension.base(), EXTENSION_BASE);
    assert_eq!(ImageKind::Kernel.max_size(), KERNEL_MAX_SIZE);
    assert_eq!(ImageKind::Extension.max_size(), EXTENSION_MAX_SIZE);
    assert_eq!(
        ImageKind::from_magic(KERNEL_IMAGE_MAGIC),
        Some(ImageKind::Kernel)
    );
    assert_eq!(
        ImageKind::from_magic(EXTENSION_IMAGE_MAGIC),
        Some(ImageKind::Extension)
    );
    assert_eq!(ImageKind::from_magic(0), None);
}
