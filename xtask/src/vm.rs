//! Boots Debian's kernel with a generated initramfs in QEMU's emulated AMD
//! CPU (TCG emulates SVM with nested paging) or in Bochs's emulated Intel
//! CPU (VMX, `bochs.rs`), streams the console, and returns how the command
//! in the machine ended.

use crate::bochs;
use crate::init::{self, InitConfig};
use crate::initramfs::{self, Add};
use crate::esp::{self, Boot};
use crate::prereq::Kernel;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long the machine gets to power off after the command finished.
const POWEROFF_GRACE: Duration = Duration::from_secs(20);

/// How long a machine whose kernel panicked may go on printing before it is
/// killed (QEMU stops at once with `-no-reboot`, Bochs when Linux's reboot
/// ends in a triple fault; this is the backstop).
const PANIC_GRACE: Duration = Duration::from_secs(10);

/// Which emulated machine runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Machine {
    /// QEMU's TCG with an AMD CPU (SVM with nested paging).
    #[default]
    Amd,
    /// Bochs with an Intel CPU (VMX with EPT): `--cpu intel`.
    Intel,
}

impl Machine {
    /// The `--cpu` word (and `# e2e-cpu:` value) that selects the Intel
    /// machine; any other `--cpu` value is a QEMU CPU model.
    pub const INTEL: &'static str = "intel";

    /// Linux's KVM module for this machine's CPU.
    pub fn kvm_module(self) -> &'static str {
        match self {
            Machine::Amd => "kvm_amd",
            Machine::Intel => "kvm_intel",
        }
    }
}

#[derive(Clone, Debug)]
pub struct VmConfig {
    pub machine: Machine,
    pub smp: u32,
    pub mem: String,
    pub adds: Vec<Add>,
    /// None: no limit (interactive shells).
    pub timeout: Option<Duration>,
    pub command: Vec<String>,
    pub insmod: bool,
    /// Extra kernel command-line words.
    pub append: Vec<String>,
    /// Extra QEMU arguments, passed through unchanged.
    pub qemu_args: Vec<String>,
    /// Where the port 0xE9 output ends up after the run.
    pub debugcon: PathBuf,
    /// Also write the console to this file.
    pub console_log: Option<PathBuf>,
    /// Stream the console to stdout (off for a run beside another one).
    pub echo: bool,
    /// Keep the run's temporary directory (initramfs, logs) for debugging.
    pub keep: bool,
    /// How the machine starts Linux.
    pub boot: Boot,
    /// Extra microv.conf lines (`--boot uefi`).
    pub esp_conf: Vec<String>,
    /// Files put on the EFI system partition over the defaults:
    /// (path on the partition, host file).
    pub esp_files: Vec<(String, PathBuf)>,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command finished with this exit status.
    Exited(i32),
    TimedOut(Duration),
    /// The kernel panicked; the first panic line.
    KernelPanic(String),
    /// QEMU exited before the command finished (triple fault, QEMU error…).
    DiedWithoutMarker(String),
}

impl Outcome {
    /// The exit code `cargo xtask vm` should end with.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(status) => *status,
            Outcome::TimedOut(_) => 124,
            Outcome::KernelPanic(_) | Outcome::DiedWithoutMarker(_) => 125,
        }
    }

    /// One line saying what happened, for the user.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Exited(s) => format!("the command exited with status {s}"),
            Outcome::TimedOut(t) => {
                format!(
                    "timed out after {} s; the machine was killed (raise it with --timeout)",
                    t.as_secs()
                )
            }
            Outcome::KernelPanic(line) => format!("the guest kernel panicked: {line}"),
            Outcome::DiedWithoutMarker(why) => {
                format!("the machine stopped before the command finished ({why}); see the console output above")
            }
        }
    }
}

/// Runs `cfg.command` in a fresh machine with the artifacts in `stage`.
pub fn run(stage: &Path, kernel: &Kernel, cfg: &VmConfig) -> Result<Outcome> {
    // Each run gets its own directory so parallel runs never collide.
    let runs = stage.join("runs");
    fs::create_dir_all(&runs)?;
    remove_stale_runs(&runs);
    let work = tempfile::Builder::new()
        .prefix("vm-")
        .tempdir_in(&runs)
        .with_context(|| format!("creating a run directory in {}", runs.display()))?;
    let nonce = work
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if cfg.machine == Machine::Intel {
        bochs_fits(cfg)?;
    }
    let init = init::script(&InitConfig {
        command: &cfg.command,
        insmod: cfg.insmod,
        nonce: &nonce,
    });
    let cpio = initramfs::build(
        work.path(),
        stage,
        kernel,
        cfg.machine.kvm_module(),
        &cfg.adds,
        &init,
    )?;
    let debugcon = work.path().join("debugcon.log");
    let prepared = Prepared {
        work: work.path(),
        stage,
        kernel,
        cpio: &cpio,
        debugcon: &debugcon,
        nonce: &nonce,
    };
    let outcome = match cfg.machine {
        Machine::Amd => run_qemu(&prepared, cfg)?,
        Machine::Intel => run_bochs(&prepared, cfg)?,
    };

    save_debugcon(&debugcon, &cfg.debugcon)?;
    if cfg.keep {
        let kept = work.keep();
        eprintln!("[xtask] kept the run directory: {}", kept.display());
    }
    Ok(outcome)
}

/// What a run has made ready for its machine.
struct Prepared<'a> {
    /// The run's own directory.
    work: &'a Path,
    stage: &'a Path,
    kernel: &'a Kernel,
    /// The initramfs.
    cpio: &'a Path,
    /// Where the machine's port 0xE9 output goes (in `work`).
    debugcon: &'a Path,
    /// The run's marker nonce.
    nonce: &'a str,
}

/// The AMD machine: QEMU loads Linux, or OVMF runs microv.efi, which does.
fn run_qemu(run: &Prepared, cfg: &VmConfig) -> Result<Outcome> {
    let Prepared {
        work,
        stage,
        kernel,
        cpio,
        debugcon,
        nonce,
    } = *run;
    // How Linux comes up: QEMU loads it, or the firmware runs microv.efi
    // from an EFI system partition, which boots it.
    let boot_args: Vec<OsString> = match cfg.boot {
        Boot::Direct => vec![
            "-kernel".into(),
            kernel.image.clone().into(),
            "-initrd".into(),
            cpio.into(),
            "-append".into(),
            cmdline(cfg).into(),
        ],
        Boot::Uefi => esp::prepare(
            work,
            stage,
            &kernel.image,
            cpio,
            &cmdline(cfg),
            &cfg.esp_conf,
            &cfg.esp_files,
        )?
        .into_iter()
        .map(OsString::from)
        .collect(),
    };
    let mut qemu = qemu_command(&boot_args, debugcon, cfg);
    eprintln!(
        "[xtask] booting {} in QEMU (cpu {}, smp {}, mem {})",
        kernel.image.display(),
        cpu_and_rest(&cfg.qemu_args).0,
        cfg.smp,
        cfg.mem
    );
    let interactive = cfg.command.is_empty();
    // Without a command the user types into the console; otherwise QEMU must
    // not touch the terminal (it would switch it to raw mode).
    qemu.stdin(if interactive {
        Stdio::inherit()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = qemu
        .spawn()
        .context("could not start qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    forward(child.stdout.take(), tx.clone(), false);
    forward(child.stderr.take(), tx, true);
    supervise(
        Running {
            child,
            console: rx,
            emulator: "qemu",
        },
        cfg,
        nonce,
    )
}

/// Fails for what the Intel machine does not have.
fn bochs_fits(cfg: &VmConfig) -> Result<()> {
    if cfg.command.is_empty() {
        bail!("the Intel machine has no interactive console: give it a COMMAND after --");
    }
    if cfg.boot != Boot::Direct {
        bail!("the Intel machine boots Linux from GRUB only (no --boot uefi)");
    }
    if !cfg.qemu_args.is_empty() {
        bail!(
            "the Intel machine is Bochs, not QEMU: it takes no QEMU arguments ({})",
            cfg.qemu_args.join(" ")
        );
    }
    Ok(())
}

/// The Intel machine: Bochs boots a GRUB CD made for this run.
fn run_bochs(run: &Prepared, cfg: &VmConfig) -> Result<Outcome> {
    let cmdline = format!("{} {}", cmdline(cfg), bochs::EXTRA_CMDLINE);
    let files = bochs::prepare(
        run.work,
        &run.kernel.image,
        run.cpio,
        &cmdline,
        cfg.smp,
        &cfg.mem,
    )?;
    eprintln!(
        "[xtask] booting {} in Bochs (cpu {}, smp {}, mem {}; GRUB from {})",
        run.kernel.image.display(),
        bochs::CPU_MODEL,
        cfg.smp,
        cfg.mem,
        files.iso.display()
    );
    let outcome = supervise(bochs::start(&files)?, cfg, run.nonce);
    let raw = fs::read(&files.stdout).unwrap_or_default();
    fs::write(run.debugcon, bochs::debugcon_from_stdout(&raw))?;
    let log = bochs::log_path(&cfg.debugcon);
    if fs::copy(&files.log, &log).is_ok() {
        eprintln!("[xtask] Bochs's log: {}", log.display());
    }
    outcome
}

/// Run directories are removed when a run ends, except after Ctrl-C or with
/// `--keep`: clear those out once they are a day old.
fn remove_stale_runs(runs: &Path) {
    let day = Duration::from_secs(24 * 3600);
    let Ok(entries) = fs::read_dir(runs) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if old.is_some_and(|age| age > day) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Linux's command line: the harness's words and the run's.
fn cmdline(cfg: &VmConfig) -> String {
    let mut append = vec!["console=ttyS0", "panic=-1", "quiet"];
    append.extend(cfg.append.iter().map(String::as_str));
    append.join(" ")
}

fn qemu_command(boot_args: &[OsString], debugcon: &Path, cfg: &VmConfig) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    // One TCG thread for all vCPUs: with QEMU 7.2's multi-threaded TCG a
    // KVM guest inside the machine (kvm-smoke) soft-locks now and then, with
    // or without MicroV loaded. Single-threaded TCG still interleaves the
    // vCPUs, so MicroV's cross-CPU paths still run concurrently.
    let (cpu, extra) = cpu_and_rest(&cfg.qemu_args);
    cmd.args(["-accel", "tcg,thread=single", "-cpu", &cpu])
        .args(["-smp", &cfg.smp.to_string(), "-m", &cfg.mem])
        .args(["-nographic", "-no-reboot"])
        // No network card: nothing uses one, and its boot ROM costs time.
        .args(["-nic", "none"])
        .args(boot_args)
        // The hypervisor's debug output: bytes written to port 0xE9.
        .arg("-debugcon")
        .arg(format!("file:{}", debugcon.display()))
        .args(extra);
    cmd
}

/// The emulated CPU unless the extra arguments name another one.
pub const DEFAULT_CPU: &str = "EPYC,+svm,+npt";

/// Splits the extra QEMU arguments into the `-cpu` model to use and the
/// rest: the last `-cpu X` (or `--cpu X`) among them replaces
/// [`DEFAULT_CPU`] instead of adding a second `-cpu`, and every `-cpu` pair
/// is taken out of the rest. A trailing `-cpu` without a value stays in the
/// rest, for QEMU to refuse.
pub fn cpu_and_rest(extra: &[String]) -> (String, Vec<String>) {
    let mut cpu = DEFAULT_CPU.to_string();
    let mut rest = Vec::new();
    let mut args = extra.iter();
    while let Some(arg) = args.next() {
        if is_cpu_option(arg) {
            if let Some(model) = args.next() {
                cpu.clone_from(model);
                continue;
            }
        }
        rest.push(arg.clone());
    }
    (cpu, rest)
}

/// `-cpu` or `--cpu` (QEMU takes either).
pub fn is_cpu_option(arg: &str) -> bool {
    arg == "-cpu" || arg == "--cpu"
}

/// A machine that has started: its emulator, and its console chunk by
/// chunk (the channel closes when the emulator has exited).
pub struct Running {
    pub child: Child,
    pub console: mpsc::Receiver<Vec<u8>>,
    /// The emulator's name, for messages.
    pub emulator: &'static str,
}

/// Streams the console until the marker appears, the machine dies, or the
/// timeout expires.
fn supervise(running: Running, cfg: &VmConfig, nonce: &str) -> Result<Outcome> {
    let Running {
        mut child,
        console: rx,
        emulator,
    } = running;
    let mut log = match &cfg.console_log {
        Some(p) => Some(fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => None,
    };
    let start = Instant::now();
    let mut line = Vec::new();
    let mut escape_carry = Vec::new();
    let mut status = None;
    let mut panic = None;
    let mut marker_at = None;
    let mut panic_at = None;
    loop {
        // After the marker only the power-off grace period counts, after a
        // panic only its grace period.
        let deadline = match (marker_at, panic_at, cfg.timeout) {
            (Some(t), _, _) => Some(t + POWEROFF_GRACE),
            (None, Some(t), _) => Some(t + PANIC_GRACE),
            (None, None, Some(limit)) => Some(start + limit),
            (None, None, None) => None,
        };
        let chunk = match deadline {
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match chunk {
            Ok(bytes) => {
                let bytes = strip_terminal_resets(&mut escape_carry, bytes);
                if cfg.echo {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&bytes)?;
                    out.flush()?;
                }
                if let Some(log) = log.as_mut() {
                    log.write_all(&bytes)?;
                }
                for &b in &bytes {
                    if b != b'\n' {
                        line.push(b);
                        continue;
                    }
                    let text = String::from_utf8_lossy(&line);
                    if status.is_none() {
                        status = init::parse_marker(&text, nonce);
                        if status.is_some() {
                            marker_at = Some(Instant::now());
                        }
                    }
                    if panic.is_none() && text.contains("Kernel panic") {
                        panic = Some(text.trim().to_string());
                        panic_at = Some(Instant::now());
                    }
                    line.clear();
                }
            }
            // Both pipes closed: QEMU has exited.
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                kill(&mut child);
                if let Some(s) = status {
                    eprintln!("[xtask] warning: the machine did not power off; killed it");
                    return Ok(Outcome::Exited(s));
                }
                if let Some(p) = panic {
                    return Ok(Outcome::KernelPanic(p));
                }
                return Ok(Outcome::TimedOut(cfg.timeout.unwrap_or_default()));
            }
        }
    }
    let exit = child
        .wait()
        .with_context(|| format!("waiting for {emulator}"))?;
    Ok(match (status, panic) {
        (Some(s), _) => Outcome::Exited(s),
        (None, Some(p)) => Outcome::KernelPanic(p),
        (None, None) => Outcome::DiedWithoutMarker(format!("{emulator} exited: {exit}")),
    })
}

/// Sends everything read from `pipe` to `tx`. The console goes chunk by
/// chunk, so partial lines (prompts) show up live; QEMU's stderr goes line by
/// line, without the warnings about CPUID bits of the EPYC model that TCG
/// cannot emulate (a dozen lines per boot, always the same).
fn forward(pipe: Option<impl Read + Send + 'static>, tx: mpsc::Sender<Vec<u8>>, is_stderr: bool) {
    let Some(mut pipe) = pipe else { return };
    std::thread::spawn(move || {
        if is_stderr {
            for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
                let noise = String::from_utf8_lossy(&line)
                    .contains("TCG doesn't support requested feature");
                if !noise && tx.send([line, b"\n".to_vec()].concat()).is_err() {
                    break;
                }
            }
            return;
        }
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
}

/// Escapes the firmware prints that would wipe the user's scrollback (reset,
/// clear screen) and leave line wrapping off.
const TERMINAL_RESETS: [&[u8]; 3] = [b"\x1bc", b"\x1b[?7l", b"\x1b[2J"];

/// Removes [`TERMINAL_RESETS`] from the console stream. A chunk may end in
/// the middle of one, so such a tail is kept in `carry` for the next chunk.
fn strip_terminal_resets(carry: &mut Vec<u8>, chunk: Vec<u8>) -> Vec<u8> {
    let mut bytes = std::mem::take(carry);
    bytes.extend(chunk);
    for seq in TERMINAL_RESETS {
        while let Some(at) = bytes.windows(seq.len()).position(|w| w == seq) {
            bytes.drain(at..at + seq.len());
        }
    }
    let partial = (1..=bytes.len().min(4)).rev().find(|&n| {
        TERMINAL_RESETS
            .iter()
            .any(|seq| n < seq.len() && bytes.ends_with(&seq[..n]))
    });
    if let Some(n) = partial {
        *carry = bytes.split_off(bytes.len() - n);
    }
    bytes
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Moves the run's port 0xE9 output to its permanent place (rename, so a
/// parallel run's reader never sees half a file) and points the user at it.
fn save_debugcon(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    let tmp = to.with_extension(format!("tmp{}", std::process::id()));
    // QEMU creates the file when it starts; a machine that never started has none.
    if from.exists() {
        fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
    } else {
        fs::write(&tmp, b"")?;
    }
    fs::rename(&tmp, to).with_context(|| format!("writing {}", to.display()))?;
    if fs::metadata(to).map(|m| m.len() > 0).unwrap_or(false) {
        eprintln!(
            "[xtask] hypervisor debug output (port 0xE9): {}",
            to.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{cpu_and_rest, strip_terminal_resets, DEFAULT_CPU};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn the_last_cpu_option_replaces_the_default() {
        assert_eq!(
            cpu_and_rest(&strings(&["-icount", "shift=0"])),
            (DEFAULT_CPU.to_string(), strings(&["-icount", "shift=0"]))
        );
        assert_eq!(
            cpu_and_rest(&strings(&[
                "-cpu",
                "EPYC,+svm,+npt,phys-bits=48",
                "-icount",
                "shift=0"
            ])),
            (
                "EPYC,+svm,+npt,phys-bits=48".to_string(),
                strings(&["-icount", "shift=0"])
            )
        );
        // Script first, then the command line: the later one wins, and no
        // -cpu is left over.
        assert_eq!(
            cpu_and_rest(&strings(&["-cpu", "A", "-m", "2G", "--cpu", "B"])),
            ("B".to_string(), strings(&["-m", "2G"]))
        );
        // Without a value it is QEMU's to refuse.
        assert_eq!(
            cpu_and_rest(&strings(&["-cpu"])),
            (DEFAULT_CPU.to_string(), strings(&["-cpu"]))
        );
    }

    #[test]
    fn resets_are_stripped_across_chunks() {
        let mut carry = Vec::new();
        let a = strip_terminal_resets(&mut carry, b"x\x1b".to_vec());
        let b = strip_terminal_resets(&mut carry, b"c\x1b[?7".to_vec());
        let c = strip_terminal_resets(&mut carry, b"l\x1b[0mBIOS\x1b".to_vec());
        let d = strip_terminal_resets(&mut carry, b"[1m".to_vec());
        assert_eq!([a, b, c, d].concat(), b"x\x1b[0mBIOS\x1b[1m");
    }
}
