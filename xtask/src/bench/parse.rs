//! Reads the benchmark's figures off the emulated machine's console: the
//! `MVBENCH …` lines `tests/bench/bench.sh` prints (a guest's own line,
//! tagged with the backend and the repeat), its `MVBENCH-STAT …` lines
//! (figures that are not a TSC difference: exit counts, pool bytes) and its
//! `MVBENCH-ERROR …` lines. Everything else on the console (the kernel, the
//! init, QEMU) is ignored.

use std::collections::BTreeMap;

/// One figure: a run of one case on one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// `microv` or `kvm`.
    pub backend: String,
    /// Which repeat (1, 2, …).
    pub rep: u32,
    pub case: String,
    /// How many times the measured loop ran (1 for the Linux boot).
    pub iterations: u64,
    /// The TSC difference across them: instructions under `-icount shift=0`.
    pub tsc: u64,
    /// The warm-up loop's TSC difference, when the guest reports one.
    pub warmup_tsc: Option<u64>,
    /// How much of `tsc` the root's CPU spent idle, in ns (the Linux boot):
    /// under `sleep=off` the TSC runs on while the CPU idles.
    pub idle_ns: Option<u64>,
    /// The exit status of what was timed, when the line says (the Linux
    /// boot's `microv run`); anything but 0 makes the figure a failure.
    pub status: Option<i64>,
}

/// A figure that is not a TSC difference: `MVBENCH-STAT backend=B rep=R
/// case=C key=value…`, every value a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub backend: String,
    pub rep: u32,
    pub case: String,
    pub values: BTreeMap<String, u64>,
}

/// What the console held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Console {
    pub samples: Vec<Sample>,
    pub stats: Vec<Stat>,
    /// `MVBENCH-ERROR` lines, and figures whose run failed, as text.
    pub errors: Vec<String>,
    /// `MVBENCH` lines that could not be read, with why.
    pub malformed: Vec<String>,
}

const TAG: &str = "MVBENCH ";
const ERROR_TAG: &str = "MVBENCH-ERROR";
const STAT_TAG: &str = "MVBENCH-STAT ";

/// Parses a whole console log.
pub fn parse(text: &str) -> Console {
    let mut console = Console::default();
    for line in text.lines() {
        // The console ends lines with CR LF, and a kernel message may sit in
        // front of ours on the same line: the tag can be anywhere.
        let line = line.trim_end_matches('\r');
        if let Some(at) = line.find(ERROR_TAG) {
            console.errors.push(line[at..].trim().to_string());
        } else if let Some(at) = line.find(STAT_TAG) {
            match stat(&line[at + STAT_TAG.len()..]) {
                Ok(s) => console.stats.push(s),
                Err(why) => console
                    .malformed
                    .push(format!("{}: {why}", line[at..].trim())),
            }
        } else if let Some(at) = line.find(TAG) {
            let fields = &line[at + TAG.len()..];
            match sample(fields) {
                Ok(s) if s.status.is_some_and(|st| st != 0) => console.errors.push(format!(
                    "backend={} rep={} case={}: the run exited with status {}",
                    s.backend,
                    s.rep,
                    s.case,
                    s.status.unwrap_or_default()
                )),
                Ok(s) => console.samples.push(s),
                Err(why) => console
                    .malformed
                    .push(format!("{}: {why}", line[at..].trim())),
            }
        }
    }
    console
}

/// The `key=value` words after the tag.
fn sample(fields: &str) -> Result<Sample, String> {
    let mut backend = None;
    let mut rep = None;
    let mut case = None;
    let mut iterations = None;
    let mut tsc = None;
    let mut warmup_tsc = None;
    let mut idle_ns = None;
    let mut status = None;
    for word in fields.split_whitespace() {
        let (key, value) = key_value(word)?;
        match key {
            "backend" => backend = Some(value.to_string()),
            "case" => case = Some(value.to_string()),
            "rep" => rep = Some(rep_number(value)?),
            "iterations" => iterations = Some(number(value)?),
            "tsc" => tsc = Some(number(value)?),
            "warmup_tsc" => warmup_tsc = Some(number(value)?),
            "idle_ns" => idle_ns = Some(number(value)?),
            "status" => status = Some(value.parse().map_err(|_| format!("status={value}"))?),
            // Other fields (warmup=, rax=) are for people reading the log.
            _ => {}
        }
    }
    let iterations = need(iterations, "iterations")?;
    if iterations == 0 {
        return Err("iterations=0".to_string());
    }
    Ok(Sample {
        backend: need(backend, "backend")?,
        rep: need(rep, "rep")?,
        case: need(case, "case")?,
        iterations,
        tsc: need(tsc, "tsc")?,
        warmup_tsc,
        idle_ns,
        status,
    })
}

/// One `key=value` word.
fn key_value(word: &str) -> Result<(&str, &str), String> {
    word.split_once('=').ok_or_else(|| format!("`{word}` is not key=value"))
}

/// A `rep=` value.
fn rep_number(value: &str) -> Result<u32, String> {
    u32::try_from(number(value)?).map_err(|_| format!("rep={value} is too big"))
}

/// The `key=value` words after the stat tag.
fn stat(fields: &str) -> Result<Stat, String> {
    let mut backend = None;
    let mut rep = None;
    let mut case = None;
    let mut values = BTreeMap::new();
    for word in fields.split_whitespace() {
        let (key, value) = key_value(word)?;
        match key {
            "backend" => backend = Some(value.to_string()),
            "case" => case = Some(value.to_string()),
            "rep" => rep = Some(rep_number(value)?),
            _ => {
                values.insert(key.to_string(), number(value)?);
            }
        }
    }
    Ok(Stat {
        backend: need(backend, "backend")?,
        rep: need(rep, "rep")?,
        case: need(case, "case")?,
        values,
    })
}

/// `value`, or the error naming the missing `key`.
fn need<T>(value: Option<T>, key: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("no {key}="))
}

/// A decimal number, or a hexadecimal one after `0x` (the guests print
/// hex: it is all their hand-written code can).
fn number(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("`{text}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
[    0.000000] Linux version 6.1.0-57-amd64\r
vm-init: loaded /usr/lib/microv/microv.ko\r
bench: MicroV (repeats 2, iterations 1000)\r
MVBENCH backend=microv rep=1 case=pio iterations=1000 tsc=0x00000000001E8480 warmup=10 warmup_tsc=0x0000000000004E20 rax=0x000000000000005A\r
[   12.3] some kernel line MVBENCH backend=microv rep=1 case=linux-boot-init iterations=1 tsc=0x0000000012345678\r
MVBENCH backend=microv rep=1 case=linux-boot-exit iterations=1 tsc=0x0000000023456789 idle_ns=5000 status=0\r
MVBENCH backend=kvm rep=1 case=linux-boot-exit iterations=1 tsc=0x10 status=1\r
MVBENCH-ERROR backend=kvm rep=1 case=linux-boot-init: the guest's init never printed\r
  | microv: run failed\r
MVBENCH backend=kvm rep=2 case=cpuid iterations=500 tsc=12345\r
MVBENCH backend=kvm rep=2 case=cpuid tsc=12345\r
";

    #[test]
    fn figures_errors_and_bad_lines_are_told_apart() {
        let c = parse(CONSOLE);
        assert_eq!(
            c.samples[0],
            Sample {
                backend: "microv".into(),
                rep: 1,
                case: "pio".into(),
                iterations: 1000,
                tsc: 2_000_000,
                warmup_tsc: Some(20_000),
                idle_ns: None,
                status: None,
            }
        );
        // A tag behind other text on the line still counts.
        assert_eq!(c.samples[1].case, "linux-boot-init");
        assert_eq!(c.samples[1].tsc, 0x1234_5678);
        assert_eq!(c.samples[2].status, Some(0));
        assert_eq!(c.samples[2].idle_ns, Some(5000));
        // Decimal numbers work too.
        assert_eq!(c.samples[3].iterations, 500);
        assert_eq!(c.samples[3].tsc, 12345);
        assert_eq!(c.samples.len(), 4);
        assert_eq!(
            c.errors,
            [
                "backend=kvm rep=1 case=linux-boot-exit: the run exited with status 1",
                "MVBENCH-ERROR backend=kvm rep=1 case=linux-boot-init: the guest's init never printed",
            ]
        );
        assert_eq!(c.malformed.len(), 1);
        assert!(
            c.malformed[0].ends_with(": no iterations="),
            "{:?}",
            c.malformed
        );
    }

    #[test]
    fn every_missing_or_bad_field_is_named() {
        let why = |fields: &str| sample(fields).expect_err(fields);
        let full = "backend=kvm rep=1 case=pio iterations=10 tsc=0x10";
        assert!(sample(full).is_ok());
        for key in ["backend", "rep", "case", "iterations", "tsc"] {
            let without: Vec<&str> = full
                .split(' ')
                .filter(|w| !w.starts_with(&format!("{key}=")))
                .collect();
            assert_eq!(why(&without.join(" ")), format!("no {key}="));
        }
        assert_eq!(why(&format!("{full} junk")), "`junk` is not key=value");
        assert_eq!(why(&format!("{full} tsc=0xZZ")), "`0xZZ` is not a number");
        assert_eq!(why(&format!("{full} iterations=0")), "iterations=0");
        assert_eq!(
            why(&format!("{full} rep=0x100000000")),
            "rep=0x100000000 is too big"
        );
        assert_eq!(why(&format!("{full} status=ok")), "status=ok");
        assert_eq!(number("0X1f"), Ok(31));
    }

    #[test]
    fn stat_lines_give_named_numbers() {
        let c = parse(
            "MVBENCH-STAT backend=microv rep=2 case=root-exits-idle exits=12 vmmcall=8 ns=0x10\r\n\
             MVBENCH-STAT backend=microv rep=1 case=memory pool_bytes=64 free_started=  \n\
             MVBENCH-STAT backend=microv case=memory pool_bytes=64\n\
             MVBENCH-STAT backend=microv rep=1 case=memory pool_bytes=lots\n",
        );
        assert!(c.samples.is_empty() && c.errors.is_empty());
        assert_eq!(c.stats.len(), 1, "{c:?}");
        let s = &c.stats[0];
        assert_eq!(
            (s.backend.as_str(), s.rep, s.case.as_str()),
            ("microv", 2, "root-exits-idle")
        );
        assert_eq!(s.values.get("exits"), Some(&12));
        assert_eq!(s.values.get("ns"), Some(&16));
        assert_eq!(s.values.len(), 3);
        assert_eq!(c.malformed.len(), 3);
        assert!(
            c.malformed[0].ends_with(": `` is not a number"),
            "{:?}",
            c.malformed
        );
        assert!(c.malformed[1].ends_with(": no rep="), "{:?}", c.malformed);
        assert!(
            c.malformed[2].ends_with(": `lots` is not a number"),
            "{:?}",
            c.malformed
        );
    }

    #[test]
    fn a_console_without_figures_gives_nothing() {
        assert_eq!(
            parse("Linux booting\nno figures here\n"),
            Console::default()
        );
    }
}
