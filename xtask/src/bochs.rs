//! The emulated Intel machine (`--cpu intel`): Bochs 2.7 with a Haswell CPU,
//! which emulates VMX with EPT, VPID and unrestricted guest (QEMU's TCG has
//! no VMX). Bochs cannot load a kernel itself, so the harness makes a GRUB
//! rescue CD that boots the same kernel, initramfs and command line as the
//! AMD machine. Bochs runs headless (its VNC display, which never waits for
//! a viewer), its serial port writes a file the harness tails as the
//! console, and port 0xE9 goes to its stdout, which becomes the debugcon
//! log. Bochs's own exit code says nothing (a power-off exits 1, as a fatal
//! error does): the run is judged by the console, as a QEMU run is.

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::prereq;
use crate::vm::Running;

/// The CPU model: Haswell has VMX with EPT, VPID, unrestricted guest and
/// EPT A/D bits. (Bochs's Tiger Lake and Ice Lake models do not boot
/// Debian's kernel: XSAVE layout errors.)
pub const CPU_MODEL: &str = "corei7_haswell_4770";

/// The firmware (packages bochsbios and vgabios).
pub const BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
pub const VGA_BIOS: &str = "/usr/share/bochs/VGABIOS-lgpl-latest";

/// GRUB's BIOS platform (package grub-pc-bin): the CD holds only it, so
/// grub-mkrescue needs no EFI image (and no mtools).
pub const GRUB_PC: &str = "/usr/lib/grub/i386-pc";

/// Instructions per emulated second. With `clock: sync=none` time follows
/// instructions, not the host's clock, and the TSC runs at this rate:
/// 100 MHz keeps Linux's timer ticks from eating the emulated CPU (Bochs's
/// default, 4 MHz, is a tick every 4,000 instructions at 1000 Hz).
pub const IPS: u64 = 100_000_000;

/// Linux's command-line words the Intel machine adds. `clearcpuid=aperfmperf`:
/// without it Linux reads APERF/MPERF, which Bochs does not have, and Bochs
/// logs every read. `pti=off`: Linux turns page-table isolation on for an
/// Intel CPU (Meltdown), and MicroV refuses to start under it (an AMD CPU
/// needs none, so the AMD machine runs without it anyway).
pub const EXTRA_CMDLINE: &str = "clearcpuid=aperfmperf pti=off";

/// The menu entry's title (GRUB prints ``Booting `microv'`` on the console).
const ENTRY: &str = "microv";

/// Where things are in the run directory.
pub struct Files {
    pub iso: PathBuf,
    pub bochsrc: PathBuf,
    pub rc: PathBuf,
    /// COM1's output: the console.
    pub serial: PathBuf,
    /// Bochs's stdout: port 0xE9 and a few lines of its debugger.
    pub stdout: PathBuf,
    /// Bochs's log (its devices, and what the CPU refused).
    pub log: PathBuf,
}

impl Files {
    pub fn new(work: &Path) -> Files {
        Files {
            iso: work.join("boot.iso"),
            bochsrc: work.join("bochsrc"),
            rc: work.join("bochs.rc"),
            serial: work.join("serial.log"),
            stdout: work.join("bochs.stdout"),
            log: work.join("bochs.log"),
        }
    }
}

/// The machine's memory in MiB from QEMU's syntax (`512M`, `1G`, `2048`;
/// no suffix is MiB, as in QEMU).
pub fn mem_mib(mem: &str) -> Result<u64, String> {
    let mem = mem.trim();
    let (digits, scale) = match mem.char_indices().last() {
        Some((at, 'M' | 'm')) => (&mem[..at], 1),
        Some((at, 'G' | 'g')) => (&mem[..at], 1024),
        _ => (mem, 1),
    };
    match digits.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n * scale),
        _ => Err(format!(
            "the Intel machine's memory must be a whole number of MiB or GiB (512M, 1G), not `{mem}`"
        )),
    }
}

/// GRUB's configuration: its menu on the serial port (so GRUB's errors and
/// its `Booting` line reach the console), no terminal escapes, no wait, and
/// one entry that boots the kernel with `cmdline` and the initramfs.
pub fn grub_cfg(cmdline: &str) -> String {
    format!(
        "serial --unit=0 --speed=115200\n\
         terminfo serial dumb\n\
         terminal_input serial\n\
         terminal_output serial\n\
         set timeout=0\n\
         menuentry '{ENTRY}' {{\n\
         \x20   linux /boot/vmlinuz {cmdline}\n\
         \x20   initrd /boot/initrd.img\n\
         }}\n"
    )
}

/// The machine: a Haswell CPU per `smp`, `mem_mib` of RAM, the rescue CD,
/// COM1 to `files.serial`, port 0xE9 to stdout. Headless: the VNC display
/// never waits for a viewer (and takes the next free port if 5900 is
/// taken, so runs can go in parallel). No sound (Bochs aborts in its mixer
/// thread on a machine without a sound card). A triple fault ends the run
/// (instead of a reset), and so does any Bochs panic. (A reset ends in one
/// too: after it Bochs's BIOS writes IA32_FEATURE_CONTROL, which Linux
/// locked, and faults with no IDT.)
pub fn bochsrc(smp: u32, mem_mib: u64, files: &Files) -> String {
    format!(
        "# Written by cargo xtask vm --cpu intel\n\
         cpu: model={CPU_MODEL}, count={smp}, ips={IPS}, reset_on_triple_fault=0\n\
         memory: guest={mem_mib}, host={mem_mib}\n\
         clock: sync=none, time0=local\n\
         romimage: file={BIOS}\n\
         vgaromimage: file={VGA_BIOS}\n\
         display_library: rfb, options=\"timeout=0, hideIPS\"\n\
         ata0-master: type=cdrom, path={iso}, status=inserted\n\
         boot: cdrom\n\
         com1: enabled=1, mode=file, dev={serial}\n\
         port_e9_hack: enabled=1\n\
         sound: driver=dummy\n\
         speaker: enabled=0\n\
         log: {log}\n\
         panic: action=fatal\n",
        iso = files.iso.display(),
        serial = files.serial.display(),
        log = files.log.display(),
    )
}

/// Makes the rescue CD (GRUB, `grub_cfg(cmdline)`, the kernel and the
/// initramfs) and writes the Bochs configuration, in `work`.
pub fn prepare(
    work: &Path,
    kernel: &Path,
    cpio: &Path,
    cmdline: &str,
    smp: u32,
    mem: &str,
) -> Result<Files> {
    let mem = mem_mib(mem).map_err(anyhow::Error::msg)?;
    let files = Files::new(work);
    let tree = work.join("iso");
    let grub = tree.join("boot/grub");
    fs::create_dir_all(&grub).with_context(|| format!("creating {}", grub.display()))?;
    for (from, to) in [(kernel, "boot/vmlinuz"), (cpio, "boot/initrd.img")] {
        let to = tree.join(to);
        // A link where possible: the initramfs is tens of megabytes.
        if fs::hard_link(from, &to).is_err() {
            fs::copy(from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    fs::write(grub.join("grub.cfg"), grub_cfg(cmdline))?;
    let mkrescue = prereq::tool("grub-mkrescue", "grub-common grub-pc-bin xorriso")?;
    let out = Command::new(&mkrescue)
        .args(["-d", GRUB_PC, "-o"])
        .arg(&files.iso)
        .arg(&tree)
        .output()
        .context("running grub-mkrescue")?;
    if !out.status.success() {
        bail!(
            "grub-mkrescue failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fs::remove_dir_all(&tree)?;
    fs::write(&files.bochsrc, bochsrc(smp, mem, &files))?;
    // Bochs's built-in debugger stops at a prompt before the first
    // instruction: this answers it, and any later prompt reads end of file
    // and exits.
    fs::write(&files.rc, "continue\n")?;
    Ok(files)
}

/// Starts Bochs: the console is `files.serial`, tailed; Bochs's stderr
/// (how it ended, without its info lines) joins the console at the end.
pub fn start(files: &Files) -> Result<Running> {
    let stdout = fs::File::create(&files.stdout)
        .with_context(|| format!("creating {}", files.stdout.display()))?;
    let mut child = Command::new("bochs-bin")
        .arg("-q")
        .arg("-f")
        .arg(&files.bochsrc)
        .arg("-rc")
        .arg(&files.rc)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start bochs-bin (apt-get install bochs bochs-x bochsbios vgabios)")?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    // Bochs's stderr closes when it exits: then the tail reads what is left
    // of the console, and adds Bochs's messages after it (the serial file
    // lags by up to a second, so they would land in the middle).
    let exited = Arc::new(AtomicBool::new(false));
    let messages = Arc::new(Mutex::new(Vec::new()));
    if let Some(stderr) = child.stderr.take() {
        let (exited, messages) = (exited.clone(), messages.clone());
        thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
                if !is_info_line(&line) {
                    if let Ok(mut m) = messages.lock() {
                        m.extend(line);
                        m.push(b'\n');
                    }
                }
            }
            exited.store(true, Ordering::SeqCst);
        });
    } else {
        exited.store(true, Ordering::SeqCst);
    }
    let serial = files.serial.clone();
    thread::spawn(move || {
        tail(&serial, &tx, &exited);
        let messages = messages.lock().map(|m| m.clone()).unwrap_or_default();
        if !messages.is_empty() {
            let _ = tx.send(messages);
        }
    });
    Ok(Running {
        child,
        console: rx,
        emulator: "bochs",
    })
}

/// How often the serial file is read (Bochs flushes it about once a
/// second).
const TAIL_POLL: Duration = Duration::from_millis(200);

/// Sends what is added to `path` until `exited`, then the rest.
fn tail(path: &Path, tx: &mpsc::Sender<Vec<u8>>, exited: &AtomicBool) {
    let mut file = None;
    let mut pos = 0u64;
    loop {
        let last = exited.load(Ordering::SeqCst);
        if file.is_none() {
            file = fs::File::open(path).ok();
        }
        if let Some(f) = file.as_mut() {
            let mut bytes = Vec::new();
            if f.seek(SeekFrom::Start(pos)).is_ok() && f.read_to_end(&mut bytes).is_ok() {
                pos += bytes.len() as u64;
                if !bytes.is_empty() && tx.send(bytes).is_err() {
                    return;
                }
            }
        }
        if last {
            return;
        }
        thread::sleep(TAIL_POLL);
    }
}

/// Bochs's log lines at info level (`00000000000i[PLUGIN] ...`): before it
/// opens its log file it prints a few dozen of them on stderr.
fn is_info_line(line: &[u8]) -> bool {
    let digits = line.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && line.get(digits..digits + 2) == Some(b"i[")
}

/// Port 0xE9's bytes from Bochs's stdout: without the banner and the
/// debugger's lines before the first instruction (up to the lines that show
/// it, `(N) [0x0000fffffff0] ...`, one per CPU) and its line after the last
/// (`(N).[t] [0x...] ...` on a line of its own at the end).
pub fn debugcon_from_stdout(raw: &[u8]) -> Vec<u8> {
    const FIRST: &[u8] = b") [0x0000fffffff0]";
    let shows_reset = |line: &[u8]| line.windows(FIRST.len()).any(|w| w == FIRST);
    let mut start = 0;
    let mut seen = false;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if shows_reset(line) {
            seen = true;
        } else if seen {
            break;
        }
        start += line.len();
    }
    let mut bytes = if seen {
        raw[start..].to_vec()
    } else {
        raw.to_vec()
    };
    // The debugger's last lines (it may show the last instruction twice):
    // `(N).[` after a line break, or at the start.
    loop {
        let line_start = bytes
            .strip_suffix(b"\n")
            .unwrap_or(&bytes)
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |nl| nl + 1);
        let last = &bytes[line_start..];
        let digits = last
            .strip_prefix(b"(")
            .map_or(0, |l| l.iter().take_while(|b| b.is_ascii_digit()).count());
        if bytes.is_empty() || digits == 0 || last.get(1 + digits..4 + digits) != Some(b").[") {
            return bytes;
        }
        bytes.truncate(line_start);
    }
}

/// Where Bochs's own log is kept, next to the debugcon log:
/// `X.debugcon.log` → `X.bochs.log`, `debugcon.log` → `bochs.log`.
pub fn log_path(debugcon: &Path) -> PathBuf {
    let name = debugcon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix("debugcon.log")
        .or_else(|| name.strip_suffix(".log"))
        .unwrap_or(&name);
    let sep = if stem.is_empty() || stem.ends_with('.') {
        ""
    } else {
        "."
    };
    debugcon.with_file_name(format!("{stem}{sep}bochs.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_in_qemus_syntax() {
        assert_eq!(mem_mib("1G"), Ok(1024));
        assert_eq!(mem_mib("512M"), Ok(512));
        assert_eq!(mem_mib("768"), Ok(768));
        assert_eq!(mem_mib("2g"), Ok(2048));
        for bad in ["", "G", "1.5G", "0M", "1T", "-1G"] {
            assert!(mem_mib(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grub_boots_the_kernel_on_the_serial_console() {
        let cfg = grub_cfg("console=ttyS0 panic=-1 quiet clearcpuid=aperfmperf pti=off");
        assert!(cfg.starts_with("serial --unit=0 --speed=115200\n"), "{cfg}");
        assert!(
            cfg.contains("terminfo serial dumb\nterminal_input serial\nterminal_output serial\n")
        );
        assert!(cfg.contains("set timeout=0\n"));
        assert!(cfg.contains(
            "menuentry 'microv' {\n    linux /boot/vmlinuz console=ttyS0 panic=-1 quiet clearcpuid=aperfmperf pti=off\n    initrd /boot/initrd.img\n}\n"
        ));
    }

    #[test]
    fn the_machine_is_a_headless_haswell() {
        let files = Files::new(Path::new("/w"));
        let rc = bochsrc(2, 1024, &files);
        for line in [
            "cpu: model=corei7_haswell_4770, count=2, ips=100000000, reset_on_triple_fault=0\n",
            "memory: guest=1024, host=1024\n",
            "clock: sync=none, time0=local\n",
            "display_library: rfb, options=\"timeout=0, hideIPS\"\n",
            "ata0-master: type=cdrom, path=/w/boot.iso, status=inserted\n",
            "boot: cdrom\n",
            "com1: enabled=1, mode=file, dev=/w/serial.log\n",
            "port_e9_hack: enabled=1\n",
            "sound: driver=dummy\n",
            "speaker: enabled=0\n",
            "log: /w/bochs.log\n",
            "panic: action=fatal\n",
        ] {
            assert!(rc.contains(line), "missing {line:?} in\n{rc}");
        }
    }

    #[test]
    fn port_e9_output_without_the_debuggers_lines() {
        let raw = b"=====\n  Bochs x86 Emulator 2.7\n=====\nNext at t=0\n\
            (0) [0x0000fffffff0] f000:fff0 (unk. ctxt): jmpf 0xf000:e05b          ; ea5be000f0\n\
            microv: kernel up\nmicrov: cpu 0\n\
            (0).[7019929784] [0x00000c7f020f] 0010:ffffffff99ff020f (unk. ctxt): out dx, ax ; 66ef\n";
        assert_eq!(
            debugcon_from_stdout(raw),
            b"microv: kernel up\nmicrov: cpu 0\n"
        );
        // Nothing written to port 0xE9, two CPUs.
        let raw = b"Next at t=0\n(0) [0x0000fffffff0] f000:fff0: jmpf\n\
            (1) [0x0000fffffff0] f000:fff0: jmpf\n(0).[5] [0x1] out\n";
        assert_eq!(debugcon_from_stdout(raw), b"");
        let raw = b"(0) [0x0000fffffff0] x\n(1) [0x0000fffffff0] x\ne9\n(1).[5] [0x1] out\n";
        assert_eq!(debugcon_from_stdout(raw), b"e9\n");
        // A line that merely starts with a parenthesis stays.
        let raw = b"(0) [0x0000fffffff0] x\n(note) hi\n";
        assert_eq!(debugcon_from_stdout(raw), b"(note) hi\n");
        // The debugger's line twice at the end.
        let raw = b"(0) [0x0000fffffff0] x\npart\n(0).[9] [0x2] hlt\n(0).[9] [0x2] hlt\n";
        assert_eq!(debugcon_from_stdout(raw), b"part\n");
    }

    #[test]
    fn info_lines_are_recognised() {
        assert!(is_info_line(
            b"00000000000i[PLUGIN] loaded plugin libbx_serial.so"
        ));
        assert!(!is_info_line(b"00000000000p[CPU0 ] >>PANIC<< something"));
        assert!(!is_info_line(
            b"Bochs is exiting with the following message:"
        ));
        assert!(!is_info_line(b"i[x"));
    }

    #[test]
    fn the_bochs_log_sits_next_to_the_debugcon_log() {
        assert_eq!(
            log_path(Path::new("/t/e2e/98-intel.sh.debugcon.log")),
            Path::new("/t/e2e/98-intel.sh.bochs.log")
        );
        assert_eq!(
            log_path(Path::new("/t/debugcon.log")),
            Path::new("/t/bochs.log")
        );
        assert_eq!(
            log_path(Path::new("/t/e9.log")),
            Path::new("/t/e9.bochs.log")
        );
        assert_eq!(log_path(Path::new("/t/e9")), Path::new("/t/e9.bochs.log"));
    }
}
