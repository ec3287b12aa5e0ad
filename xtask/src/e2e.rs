//! End-to-end tests: each executable `tests/e2e/*.sh` runs in its own boot
//! of the emulated machine and passes when it exits 0. A script can ask for
//! extra QEMU arguments in its leading comment block (see [`qemu_header`]),
//! or for the emulated Intel machine (`# e2e-cpu: intel`, [`cpu_header`]).

use crate::esp::Boot;
use crate::initramfs::Add;
use crate::machine::{self, MachineArgs};
use crate::prereq::{self, Kernel, Need};
use crate::util;
use crate::vm::{self, Machine, Outcome};
use anyhow::{anyhow, Context, Result};
use clap::ValueEnum;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One script's result.
#[derive(Debug)]
pub struct ScriptResult {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The scripts to run, sorted by name (numeric prefixes order them).
pub fn scripts(root: &Path, filter: Option<&str>) -> Result<Vec<PathBuf>> {
    let dir = root.join("tests/e2e");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.ends_with(".sh") || filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        if util::is_executable(&path) {
            found.push(path);
        } else {
            eprintln!("[xtask] e2e: skipping {name}: not executable (chmod +x it)");
        }
    }
    found.sort();
    Ok(found)
}

/// Checks what the scripts' machines need beyond the usual: OVMF if one
/// boots through UEFI, Bochs and GRUB if one runs on the Intel machine.
pub fn check_prerequisites(args: &MachineArgs, scripts: &[PathBuf]) -> Result<()> {
    let uefi = scripts.iter().any(|s| {
        fs::read_to_string(s).is_ok_and(|text| boot_header(&text) == Ok(Some(Boot::Uefi)))
    });
    if uefi {
        prereq::check(&[Need::Ovmf])?;
    }
    if scripts
        .iter()
        .any(|s| machines_of(args, s).contains(&Machine::Intel))
    {
        prereq::check(prereq::INTEL_VM)?;
    }
    Ok(())
}

/// The machines a script runs on: the Intel one if the command line says
/// `--cpu intel`, else those its `# e2e-cpu:` names, else the AMD one (a
/// script whose header is wrong fails later, in [`run_script`]).
pub fn machines_of(args: &MachineArgs, script: &Path) -> Vec<Machine> {
    if args.machine() == Machine::Intel {
        return vec![Machine::Intel];
    }
    fs::read_to_string(script)
        .ok()
        .and_then(|text| cpu_header(&text).ok().flatten())
        .unwrap_or_else(|| vec![Machine::Amd])
}

/// Runs one script in a fresh machine; the console and the port 0xE9 output
/// are kept in `target/microv/e2e/<name>.{console,debugcon}.log` (and
/// Bochs's log in `<name>.bochs.log`). `echo`: stream the console to stdout
/// too.
pub fn run_script(
    root: &Path,
    stage: &Path,
    kernel: &Kernel,
    args: &MachineArgs,
    script: &Path,
    machine: Machine,
    echo: bool,
) -> Result<ScriptResult> {
    let file_name = script
        .file_name()
        .context("script without a name")?
        .to_string_lossy()
        .into_owned();
    let name = run_name(&file_name, machine, &machines_of(args, script));
    let logs = stage.join("e2e");
    fs::create_dir_all(&logs)?;
    let text =
        fs::read_to_string(script).with_context(|| format!("reading {}", script.display()))?;
    let header = qemu_header(&text).map_err(|why| anyhow!("{name}: {why}"))?;
    let vm_path = format!("/tests/{file_name}");
    let mut cfg = machine::config(root, args, vec![vm_path.clone()]);
    if let Some(smp) = smp_header(&text).map_err(|why| anyhow!("{name}: {why}"))? {
        cfg.smp = smp;
    }
    if let Some(boot) = boot_header(&text).map_err(|why| anyhow!("{name}: {why}"))? {
        cfg.boot = boot;
    }
    if let Some(mem) = header_value(&text, MEM_HEADER) {
        cfg.mem = mem.to_string();
    }
    cfg.esp_conf
        .extend(header_values(&text, ESP_CONF_HEADER).into_iter().map(str::to_string));
    for (esp, repo) in esp_file_headers(&text).map_err(|why| anyhow!("{name}: {why}"))? {
        cfg.esp_files.push((esp, root.join(repo)));
    }
    cpu_header(&text).map_err(|why| anyhow!("{name}: {why}"))?;
    cfg.machine = machine;
    cfg.echo = echo;
    cfg.adds = vec![Add {
        host: script.to_path_buf(),
        vm: vm_path,
    }];
    cfg.console_log = Some(logs.join(format!("{name}.console.log")));
    cfg.debugcon = logs.join(format!("{name}.debugcon.log"));
    if machine == Machine::Intel {
        if let Some(why) = intel_conflict(&text) {
            return Err(anyhow!("{name}: {why}"));
        }
        if !cfg.qemu_args.is_empty() {
            eprintln!(
                "[xtask] e2e: {name}: runs on the Intel machine (Bochs): the command line's QEMU arguments do not apply"
            );
        }
        cfg.qemu_args = Vec::new();
        println!("==== e2e: {name} (Intel machine: Bochs) ====");
    } else {
        let command_line = args.qemu_args();
        if header.iter().any(|a| vm::is_cpu_option(a))
            && command_line.iter().any(|a| vm::is_cpu_option(a))
        {
            eprintln!("[xtask] e2e: {name}: the command line's -cpu overrides the script's {QEMU_HEADER} -cpu");
        }
        // The script's arguments first, so the command line's come later and win.
        cfg.qemu_args = header.iter().chain(&command_line).cloned().collect();
        if header.is_empty() {
            println!("==== e2e: {name} ====");
        } else {
            println!("==== e2e: {name} (QEMU: {}) ====", header.join(" "));
        }
    }
    let start = Instant::now();
    let outcome = vm::run(stage, kernel, &cfg)?;
    let secs = start.elapsed().as_secs_f64();
    let mut detail = format!("{} in {secs:.1} s", outcome.describe());
    let debugcon = fs::read(&cfg.debugcon).unwrap_or_default();
    let missing = missing_debugcon_lines(&text, &debugcon);
    for want in &missing {
        detail.push_str(&format!("; the port 0xE9 log has no `{want}`"));
    }
    let passed = outcome == Outcome::Exited(0) && missing.is_empty();
    if !passed {
        detail.push_str(&format!(
            "; logs: {}/{name}.{{console,debugcon}}.log",
            logs.display()
        ));
    }
    println!(
        "==== e2e: {name}: {} ({detail}) ====",
        if passed { "PASS" } else { "FAIL" }
    );
    Ok(ScriptResult {
        name,
        passed,
        detail,
    })
}

/// The comment that names text the run's port 0xE9 log must hold once the
/// machine has stopped (the script cannot read that log itself).
pub const DEBUGCON_HEADER: &str = "e2e-debugcon-has:";

/// The `# e2e-debugcon-has: TEXT` texts that `debugcon` lacks.
pub fn missing_debugcon_lines<'a>(script: &'a str, debugcon: &[u8]) -> Vec<&'a str> {
    let log = String::from_utf8_lossy(debugcon);
    header_values(script, DEBUGCON_HEADER)
        .into_iter()
        .filter(|want| !log.contains(want))
        .collect()
}

/// The comment that gives a script extra QEMU arguments.
pub const QEMU_HEADER: &str = "e2e-qemu:";

/// The comment that gives a script its number of emulated CPUs.
pub const SMP_HEADER: &str = "e2e-smp:";

/// The comment that makes a script's machine boot another way.
pub const BOOT_HEADER: &str = "e2e-boot:";

/// The comment that picks a script's machines: `intel` (Bochs), `amd`
/// (QEMU, the default), or both (`amd intel`: the script runs on each).
pub const CPU_HEADER: &str = "e2e-cpu:";

/// The machines a script asks for with `# e2e-cpu: amd|intel [...]`, if it
/// asks.
pub fn cpu_header(script: &str) -> Result<Option<Vec<Machine>>, String> {
    let Some(value) = header_value(script, CPU_HEADER) else {
        return Ok(None);
    };
    let mut machines = Vec::new();
    for word in value.split_whitespace() {
        let machine = match word {
            Machine::INTEL => Machine::Intel,
            "amd" => Machine::Amd,
            other => {
                return Err(format!(
                    "`{CPU_HEADER}` wants `amd`, `intel` or both, not `{other}`"
                ))
            }
        };
        if !machines.contains(&machine) {
            machines.push(machine);
        }
    }
    if machines.is_empty() {
        return Err(format!("`{CPU_HEADER}` names no machine"));
    }
    Ok(Some(machines))
}

/// The name a script's results and logs go by on `machine`: its file name,
/// with `@intel` added for the Intel run of a script that runs on both.
pub fn run_name(name: &str, machine: Machine, machines: &[Machine]) -> String {
    if machine == Machine::Intel && machines.len() > 1 {
        format!("{name}@{}", Machine::INTEL)
    } else {
        name.to_string()
    }
}

/// Why a script cannot run on the Intel machine as written: headers that
/// shape QEMU's machine or its UEFI boot, which Bochs does not have.
fn intel_conflict(script: &str) -> Option<String> {
    [
        QEMU_HEADER,
        BOOT_HEADER,
        ESP_CONF_HEADER,
        ESP_FILE_HEADER,
    ]
    .into_iter()
    .find(|key| !header_values(script, key).is_empty())
    .map(|key| format!("`{key}` is for the AMD machine (QEMU); the Intel machine (Bochs) has no such setting"))
}

/// The value of the first `# KEY value` line in a script's leading comment
/// block, trimmed.
fn header_value<'a>(script: &'a str, key: &str) -> Option<&'a str> {
    header_values(script, key).into_iter().next()
}

/// The values of every `# KEY value` line in a script's leading comment
/// block, trimmed, in order.
fn header_values<'a>(script: &'a str, key: &str) -> Vec<&'a str> {
    let mut values = Vec::new();
    for line in script.lines() {
        let trimmed = line.trim();
        let Some(comment) = trimmed.strip_prefix('#').map(str::trim_start) else {
            if trimmed.is_empty() {
                continue;
            }
            break;
        };
        if let Some(value) = comment.strip_prefix(key) {
            values.push(value.trim());
        }
    }
    values
}

/// The comments that shape a `# e2e-boot: uefi` script's EFI system
/// partition and memory: extra microv.conf lines, files put on the
/// partition (`ESP_PATH=REPO_PATH`), the machine's memory.
pub const ESP_CONF_HEADER: &str = "e2e-esp-conf:";
pub const ESP_FILE_HEADER: &str = "e2e-esp-file:";
pub const MEM_HEADER: &str = "e2e-mem:";

/// The `# e2e-esp-file: ESP_PATH=REPO_PATH` lines as pairs.
pub fn esp_file_headers(script: &str) -> Result<Vec<(String, String)>, String> {
    header_values(script, ESP_FILE_HEADER)
        .into_iter()
        .map(|v| {
            v.split_once('=')
                .filter(|(esp, repo)| !esp.is_empty() && !repo.is_empty())
                .map(|(esp, repo)| (esp.trim().to_string(), repo.trim().to_string()))
                .ok_or_else(|| format!("`{ESP_FILE_HEADER}` wants ESP_PATH=REPO_PATH, not `{v}`"))
        })
        .collect()
}

/// The number of emulated CPUs a script asks for with `# e2e-smp: N` in its
/// leading comment block (1 to 8), if it asks.
pub fn smp_header(script: &str) -> Result<Option<u32>, String> {
    let Some(n) = header_value(script, SMP_HEADER) else {
        return Ok(None);
    };
    match n.parse::<u32>() {
        Ok(n) if (1..=8).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "`{SMP_HEADER}` wants a number of CPUs from 1 to 8, not `{n}`"
        )),
    }
}

/// How a script's machine boots (`# e2e-boot: uefi`), if it says.
pub fn boot_header(script: &str) -> Result<Option<Boot>, String> {
    let Some(way) = header_value(script, BOOT_HEADER) else {
        return Ok(None);
    };
    Boot::from_str(way, true)
        .map(Some)
        .map_err(|_| format!("`{BOOT_HEADER}` wants `direct` or `uefi`, not `{way}`"))
}

/// Options the harness sets itself and a script may not: a second copy
/// would be ignored or break the machine (`-cpu` is not here: a script's
/// `-cpu` replaces the harness's, see `vm::cpu_and_rest`).
const HARNESS_OPTIONS: &[&str] = &[
    "-accel",
    "-append",
    "-debugcon",
    "-initrd",
    "-kernel",
    "-m",
    "-nographic",
    "-no-reboot",
    "-serial",
    "-smp",
];

/// The extra QEMU arguments a script asks for: every comment line
/// `# e2e-qemu: ARG ARG...` in its leading comment block (the lines from the
/// top that start with `#`; blank lines do not end it, the first other line
/// does), the words split at white space, in order. No quoting: one word is
/// one argument. `-cpu MODEL` replaces the machine's default CPU. An
/// `e2e-qemu:` comment after the block, a line with no argument, quotes or
/// backslashes, an option the harness owns ([`HARNESS_OPTIONS`]) or a
/// `-cpu` without a model are errors, so a typo never silently runs the
/// script on the wrong machine.
pub fn qemu_header(script: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut in_header = true;
    for (index, line) in script.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        let comment = trimmed.strip_prefix('#').map(str::trim_start);
        if comment.is_none() && !trimmed.is_empty() {
            in_header = false;
        }
        let Some(words) = comment.and_then(|c| c.strip_prefix(QEMU_HEADER)) else {
            continue;
        };
        if !in_header {
            return Err(format!(
                "line {number}: `{QEMU_HEADER}` only counts in the comment block at the top of the script"
            ));
        }
        if words.contains(['\'', '"', '\\']) {
            return Err(format!(
                "line {number}: no quoting in `{QEMU_HEADER}`: each word is one QEMU argument"
            ));
        }
        let before = args.len();
        args.extend(words.split_whitespace().map(str::to_string));
        if args.len() == before {
            return Err(format!("line {number}: `{QEMU_HEADER}` names no argument"));
        }
    }
    let mut words = args.iter().peekable();
    while let Some(word) = words.next() {
        // QEMU takes `--opt` for `-opt`.
        let option = word
            .strip_prefix('-')
            .filter(|o| o.starts_with('-'))
            .unwrap_or(word);
        if HARNESS_OPTIONS.contains(&option) {
            return Err(format!(
                "`{QEMU_HEADER} {word}`: the harness sets {option} itself"
            ));
        }
        if vm::is_cpu_option(word) && words.next_if(|m| !m.starts_with('-')).is_none() {
            return Err(format!("`{QEMU_HEADER} {word}` needs a CPU model after it"));
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::{
        boot_header, cpu_header, run_name, esp_file_headers, header_values, intel_conflict,
        missing_debugcon_lines, qemu_header, smp_header,
    };
    use crate::esp::Boot;
    use crate::vm::Machine;

    fn ok(script: &str) -> Vec<String> {
        qemu_header(script).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(script: &str) -> String {
        qemu_header(script).expect_err("a bad header was accepted")
    }

    #[test]
    fn no_header_means_no_arguments() {
        assert!(ok("#!/bin/sh\n# a test\nset -eu\necho hi\n").is_empty());
        assert!(ok("").is_empty());
    }

    #[test]
    fn a_script_may_ask_for_its_number_of_cpus() {
        assert_eq!(
            smp_header("#!/bin/sh\n# e2e-smp: 1\nset -eu\n"),
            Ok(Some(1))
        );
        assert_eq!(smp_header("#!/bin/sh\nset -eu\n# e2e-smp: 1\n"), Ok(None));
        assert_eq!(smp_header("#!/bin/sh\n"), Ok(None));
        assert!(smp_header("# e2e-smp: 0\n").is_err());
        assert!(smp_header("# e2e-smp: two\n").is_err());
    }

    #[test]
    fn a_script_shapes_its_efi_system_partition() {
        let script = "#!/bin/sh\n# e2e-esp-conf: pool = 512M\n# e2e-esp-conf: log = debug\n\
                      # e2e-esp-file: EFI/microv/x.elf=tests/e2e/a.sh\nset -eu\n# e2e-esp-conf: late\n";
        assert_eq!(header_values(script, "e2e-esp-conf:"), ["pool = 512M", "log = debug"]);
        assert_eq!(
            esp_file_headers(script),
            Ok(vec![("EFI/microv/x.elf".to_string(), "tests/e2e/a.sh".to_string())])
        );
        assert!(esp_file_headers("# e2e-esp-file: no-equals\n").is_err());
        assert!(esp_file_headers("# e2e-esp-file: =tests/a\n").is_err());
    }

    #[test]
    fn a_script_can_ask_for_the_intel_machine() {
        assert_eq!(
            cpu_header("#!/bin/sh\n# e2e-cpu: intel\n# e2e-smp: 1\n"),
            Ok(Some(vec![Machine::Intel]))
        );
        assert_eq!(cpu_header("#!/bin/sh\n# e2e-cpu: amd\n"), Ok(Some(vec![Machine::Amd])));
        assert_eq!(
            cpu_header("#!/bin/sh\n# e2e-cpu: amd intel amd\n"),
            Ok(Some(vec![Machine::Amd, Machine::Intel]))
        );
        assert!(cpu_header("# e2e-cpu: \n").is_err());
        let both = [Machine::Amd, Machine::Intel];
        assert_eq!(run_name("61-a.sh", Machine::Intel, &both), "61-a.sh@intel");
        assert_eq!(run_name("61-a.sh", Machine::Amd, &both), "61-a.sh");
        assert_eq!(run_name("98-i.sh", Machine::Intel, &[Machine::Intel]), "98-i.sh");
        assert_eq!(cpu_header("#!/bin/sh\nset -eu\n# e2e-cpu: intel\n"), Ok(None));
        assert!(cpu_header("# e2e-cpu: Intel\n").is_err());
        assert!(cpu_header("# e2e-cpu: EPYC\n").is_err());
        // QEMU's and UEFI's settings do not apply to Bochs.
        assert_eq!(intel_conflict("# e2e-cpu: intel\n# e2e-smp: 1\n# e2e-mem: 512M\n"), None);
        for other in [
            "# e2e-qemu: -icount shift=0\n",
            "# e2e-boot: uefi\n",
            "# e2e-esp-conf: pool = 8M\n",
        ] {
            let why = intel_conflict(&format!("# e2e-cpu: intel\n{other}")).expect(other);
            assert!(why.contains("AMD machine"), "{why}");
        }
    }

    #[test]
    fn a_script_names_what_its_port_e9_log_must_hold() {
        let script = "#!/bin/sh\n# e2e-debugcon-has: e9: hello\n# e2e-debugcon-has: e9: bye\nset -eu\n";
        assert!(missing_debugcon_lines(script, b"x\ne9: hello\ne9: bye\n").is_empty());
        assert_eq!(missing_debugcon_lines(script, b"e9: hello\n"), ["e9: bye"]);
        assert_eq!(missing_debugcon_lines(script, b""), ["e9: hello", "e9: bye"]);
        assert!(missing_debugcon_lines("#!/bin/sh\n", b"").is_empty());
    }

    #[test]
    fn a_script_can_boot_through_uefi() {
        assert_eq!(boot_header("#!/bin/sh\n# e2e-boot: uefi\n"), Ok(Some(Boot::Uefi)));
        assert_eq!(boot_header("#!/bin/sh\n# e2e-boot: direct\n"), Ok(Some(Boot::Direct)));
        assert_eq!(boot_header("#!/bin/sh\nset -eu\n# e2e-boot: uefi\n"), Ok(None));
        assert!(boot_header("# e2e-boot: bios\n").is_err());
    }

    #[test]
    fn header_lines_in_the_leading_comment_block_are_collected_in_order() {
        let script = "#!/bin/sh\n\
            # Attack: reads far above RAM.\n\
            # e2e-qemu: -cpu EPYC,+svm,+npt,phys-bits=48\n\
            \n\
            #e2e-qemu:   -icount  shift=0\t-d guest_errors \n\
            set -eu\n";
        assert_eq!(
            ok(script),
            [
                "-cpu",
                "EPYC,+svm,+npt,phys-bits=48",
                "-icount",
                "shift=0",
                "-d",
                "guest_errors"
            ]
        );
    }

    #[test]
    fn a_header_after_the_comment_block_is_an_error() {
        let e = err("#!/bin/sh\nset -eu\n# e2e-qemu: -cpu EPYC\n");
        assert!(e.contains("line 3") && e.contains("at the top"), "{e}");
        // Other text that merely mentions it is fine.
        assert!(ok("#!/bin/sh\nset -eu\necho 'e2e-qemu: -cpu x'\n").is_empty());
    }

    #[test]
    fn malformed_headers_are_errors() {
        assert!(err("# e2e-qemu:\n").contains("names no argument"));
        assert!(err("# e2e-qemu:   \n").contains("names no argument"));
        assert!(err("# e2e-qemu: -append 'a b'\n").contains("no quoting"));
        assert!(err("# e2e-qemu: -cpu\n").contains("needs a CPU model"));
        assert!(err("# e2e-qemu: -cpu -icount shift=0\n").contains("needs a CPU model"));
        for owned in ["-smp 4", "-m 2G", "--kernel x", "-accel kvm", "-no-reboot"] {
            let e = err(&format!("# e2e-qemu: {owned}\n"));
            assert!(e.contains("the harness sets"), "{owned}: {e}");
        }
    }
}
