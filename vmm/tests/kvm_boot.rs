//! The VMM on this machine's /dev/kvm: a tiny hand-assembled guest (runs
//! wherever /dev/kvm does, even on an emulating KVM), and Debian's kernel
//! with a busybox initramfs that prints a marker, computes a checksum and
//! powers off. Without /dev/kvm (or a kernel, or busybox) each test says
//! `skip: <why>` and returns.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use vmm::backend::ExitKind;
use vmm::control::ResetCause;
use vmm::{BackendKind, Console, StopReason, VmConfig};

/// Console output the test can read back.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn skip(why: &str) {
    println!("skip: {why}");
}

/// Why KVM cannot be used here, if it cannot.
fn kvm_unusable() -> Option<String> {
    if !Path::new("/dev/kvm").exists() {
        return Some("/dev/kvm is missing (load kvm_amd or kvm_intel)".into());
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Some(format!("/dev/kvm cannot be opened: {e}"));
    }
    None
}

/// Runs `config` with a 60-second limit; returns the report and output.
fn run(config: VmConfig, limit: Duration) -> (vmm::RunReport, String) {
    let out = Capture::default();
    let console = Console {
        input: None,
        output: Box::new(out.clone()),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(vmm::run(&config, console));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(report)) => (report, out.text()),
        Ok(Err(e)) => panic!(
            "run failed: {e}\nhint: {:?}\n--- console ---\n{}",
            e.hint(),
            out.text()
        ),
        Err(_) => panic!(
            "the guest did not finish within {limit:?}\n--- console ---\n{}",
            out.text()
        ),
    }
}

/// An ELF64 executable with one PT_LOAD of `code` at physical `paddr`.
fn elf(paddr: u64, code: &[u8]) -> Vec<u8> {
    let mut e = vec![0u8; 0x78];
    e[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    e[16..18].copy_from_slice(&2u16.to_le_bytes());
    e[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[24..32].copy_from_slice(&paddr.to_le_bytes());
    e[32..40].copy_from_slice(&0x40u64.to_le_bytes());
    e[52..54].copy_from_slice(&0x40u16.to_le_bytes());
    e[54..56].copy_from_slice(&0x38u16.to_le_bytes());
    e[56..58].copy_from_slice(&1u16.to_le_bytes());
    let ph = [
        1u64 | (5 << 32), // PT_LOAD, R+X
        0x78,
        paddr,
        paddr,
        code.len() as u64,
        code.len() as u64,
        0x1000,
    ];
    for (i, v) in ph.iter().enumerate() {
        e[0x40 + i * 8..0x48 + i * 8].copy_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(code);
    e
}

/// x86-64 code: `out` each byte of `text` to COM1, then write `value` to
/// `port` (the power-off or reset register), then halt.
fn print_then(text: &[u8], port: u16, value: u8) -> Vec<u8> {
    let mut c = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for b in text {
        c.extend_from_slice(&[0xb0, *b, 0xee]); // mov al, b; out dx, al
    }
    c.extend_from_slice(&[0x66, 0xba]);
    c.extend_from_slice(&port.to_le_bytes()); // mov dx, port
    c.extend_from_slice(&[0xb0, value, 0xee, 0xf4]); // mov al, value; out dx, al; hlt
    c
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("microv-vmm-it-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tiny_guest(tag: &str, code: &[u8], cpus: u8) -> (VmConfig, TempDir) {
    let dir = TempDir::new(tag);
    let kernel = dir.0.join("guest.elf");
    std::fs::write(&kernel, elf(0x100_0000, code)).unwrap();
    let config = VmConfig {
        memory: 64 << 20,
        cpus,
        backend: BackendKind::Kvm,
        ..VmConfig::new(kernel)
    };
    (config, dir)
}

#[test]
fn tiny_guest_prints_and_powers_off_on_kvm() {
    if let Some(why) = kvm_unusable() {
        return skip(&why);
    }
    // Two vCPUs: the second waits for a SIPI that never comes, and must
    // still be taken out of KVM_RUN when the first powers off.
    let code = print_then(b"hello from a 64-bit guest\n", 0x600, 0x34);
    let (config, _dir) = tiny_guest("poweroff", &code, 2);
    let (report, out) = run(config, Duration::from_secs(60));
    assert_eq!(out, "hello from a 64-bit guest\n");
    assert_eq!(report.reason, StopReason::PowerOff);
    assert_eq!(report.exits.get(ExitKind::IoOut), 27);
    println!(
        "tiny guest: {:?}, exits: {}",
        report.elapsed,
        report.exits.summary()
    );
}

#[test]
fn tiny_guest_keyboard_reset_ends_the_run() {
    if let Some(why) = kvm_unusable() {
        return skip(&why);
    }
    let (config, _dir) = tiny_guest("reset", &print_then(b"bye\n", 0x64, 0xfe), 1);
    let (report, out) = run(config, Duration::from_secs(60));
    assert_eq!(out, "bye\n");
    assert_eq!(report.reason, StopReason::Reset(ResetCause::Keyboard));
}

/// The newest Debian kernel, as xtask picks it (`/boot/vmlinuz-*-amd64`).
fn debian_kernel() -> Option<PathBuf> {
    let key = |v: &str| -> Vec<u64> {
        v.split(|c: char| !c.is_ascii_digit())
            .filter_map(|s| s.parse().ok())
            .collect()
    };
    let mut found: Vec<String> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("vmlinuz-") && n.ends_with("-amd64"))
        .collect();
    found.sort_by_key(|n| key(n));
    found.pop().map(|n| Path::new("/boot").join(n))
}

/// Appends one newc cpio entry.
fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The guest's /init: a marker, a checksum over generated data, the CPU
/// count, then power off (`-f`: straight to the kernel, there is no init
/// daemon to ask).
const INIT: &str = "#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo MICROV-GUEST: init is running
echo \"MICROV-SUM: $(/bin/busybox seq 1 50000 | /bin/busybox sha256sum)\"
echo \"MICROV-CPUS: $(/bin/busybox grep -c ^processor /proc/cpuinfo)\"
/bin/busybox poweroff -f
";

/// What the guest's checksum line must say: the same busybox on the host.
fn expected_sum(busybox: &Path) -> String {
    let out = Command::new(busybox)
        .args(["sh", "-c", "busybox seq 1 50000 | busybox sha256sum"])
        .env("PATH", busybox.parent().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn initramfs(busybox: &Path) -> Vec<u8> {
    let mut c = Vec::new();
    let dir = 0o040755;
    for (i, d) in [".", "bin", "proc", "sys", "dev", "tmp"].iter().enumerate() {
        cpio_entry(&mut c, i as u32 + 1, d, dir, &[]);
    }
    cpio_entry(&mut c, 10, "init", 0o100755, INIT.as_bytes());
    cpio_entry(
        &mut c,
        11,
        "bin/busybox",
        0o100755,
        &std::fs::read(busybox).unwrap(),
    );
    cpio_entry(&mut c, 12, "bin/sh", 0o120777, b"busybox");
    cpio_entry(&mut c, 0, "TRAILER!!!", 0, &[]);
    c
}

#[test]
fn debian_kernel_boots_to_init_and_powers_off_on_kvm() {
    if let Some(why) = kvm_unusable() {
        return skip(&why);
    }
    if vmm::backend::kvm::is_pvm() {
        return skip(
            "/dev/kvm here is kvm_pvm (KVM without hardware virtualization): it runs stock \
             kernels through KVM's instruction emulator (~1M instructions/s), which cannot \
             emulate int3, xrstor or cmpxchg16b in 64-bit mode, so Debian's kernel cannot \
             boot on it; this test needs hardware KVM (e.g. nested, in the emulated AMD machine)",
        );
    }
    let Some(kernel) = debian_kernel() else {
        return skip("no /boot/vmlinuz-*-amd64 (apt-get install linux-image-amd64)");
    };
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        return skip("no /bin/busybox (apt-get install busybox-static)");
    }
    let dir = TempDir::new("debian");
    let initrd = dir.0.join("initramfs.cpio");
    std::fs::write(&initrd, initramfs(busybox)).unwrap();
    let config = VmConfig {
        initrd: Some(initrd),
        cpus: 2,
        backend: BackendKind::Kvm,
        ..VmConfig::new(&kernel)
    };
    let (report, out) = run(config, Duration::from_secs(60));
    let line = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim_end().strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no `{prefix}` line\n--- console ---\n{out}"))
    };
    assert_eq!(line("MICROV-GUEST: "), "init is running");
    assert_eq!(line("MICROV-SUM: "), expected_sum(busybox));
    assert_eq!(line("MICROV-CPUS: "), "2");
    assert_eq!(report.reason, StopReason::PowerOff, "{out}");
    println!(
        "{}: first console output after {:?}, powered off after {:?}; exits: {}",
        kernel.display(),
        report.first_output.unwrap_or_default(),
        report.elapsed,
        report.exits.summary()
    );
}
