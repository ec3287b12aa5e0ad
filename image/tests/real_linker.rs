//! Seals and flattens images linked by the system's GNU `as`/`ld`, as the
//! build links the real ones. Skipped (with a note) where binutils are absent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;

use microv_image::{flatten, seal, ImageKind};

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn link(dir: &Path, kind: ImageKind) -> Vec<u8> {
    let asm = format!(
        ".section .header,\"a\"\n.quad {magic:#x}\n.long {version}\n.long 32\n.quad 0\n.quad 0\n\
         .text\n.globl _start\n_start: hlt\njmp _start\n\
         .section .rodata\n.asciz \"hello\"\n\
         .data\n.quad 5\n.bss\n.space 10000\n",
        magic = kind.magic(),
        version = microv_abi::launch::LAUNCH_VERSION,
    );
    let script = format!(
        "ENTRY(_start)\nPHDRS {{ text PT_LOAD; rodata PT_LOAD; data PT_LOAD; }}\nSECTIONS {{\n\
         . = {base:#x};\n.header : {{ KEEP(*(.header)) }} :text\n.text : {{ *(.text*) }} :text\n\
         . = ALIGN(4096);\n.rodata : {{ *(.rodata*) }} :rodata\n\
         . = ALIGN(4096);\n.data : {{ *(.data*) }} :data\n.bss : {{ *(.bss*) }} :data\n\
         /DISCARD/ : {{ *(.note*) *(.comment) }}\n}}\n",
        base = kind.base()
    );
    let name = kind.description();
    let (s, o, ld, elf) = (
        dir.join(format!("{name}.s")),
        dir.join(format!("{name}.o")),
        dir.join(format!("{name}.ld")),
        dir.join(format!("{name}.elf")),
    );
    std::fs::write(&s, asm).unwrap();
    std::fs::write(&ld, script).unwrap();
    assert!(Command::new("as")
        .arg(&s)
        .arg("-o")
        .arg(&o)
        .status()
        .unwrap()
        .success());
    let st = Command::new("ld")
        .args(["-static", "--no-dynamic-linker", "-z", "noexecstack", "-T"])
        .arg(&ld)
        .arg(&o)
        .arg("-o")
        .arg(&elf)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(&elf).unwrap()
}

#[test]
fn images_linked_by_gnu_ld() {
    if !have("as") || !have("ld") {
        eprintln!("skipped: GNU as/ld not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("microv-image-ld-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for kind in ImageKind::ALL {
        let mut elf = link(&dir, kind);
        assert!(flatten(&elf, kind).is_err(), "unsealed images are refused");
        let sum = seal(&mut elf, kind).unwrap();
        let flat = flatten(&elf, kind).unwrap();
        assert_eq!(flat.header().checksum, sum);
        assert_eq!(flat.base, kind.base());
        assert_eq!(flat.entry, kind.base() + 32);
        let segs: Vec<(u64, u64, u64)> = flat
            .segments
            .iter()
            .map(|s| (s.offset, s.size, s.flags))
            .collect();
        assert_eq!(
            segs,
            vec![(0, 0x1000, 5), (0x1000, 0x1000, 4), (0x2000, 0x3000, 6)]
        );
        assert_eq!(flat.bytes.len(), 0x5000);
        assert_eq!(&flat.bytes[0x1000..0x1006], b"hello\0");
        assert_eq!(flat.bytes[0x2000], 5);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
