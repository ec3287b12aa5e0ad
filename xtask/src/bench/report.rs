//! Turns the figures read off the console into the benchmark's report: a
//! table of MicroV against KVM per case (the terminal and `report.md` show
//! the same one) and `report.json` with every raw count.

use super::parse::{Console, Sample};
use serde_json::{json, Value};

/// The backends, as bench.sh tags them, and their names in the report.
pub const MICROV: &str = "microv";
pub const KVM: &str = "kvm";

/// The cases `tests/bench/bench.sh` runs, in the report's order.
pub const CASES: &[&str] = &[
    "hypercall",
    "cpuid",
    "pio",
    "mmio",
    "linux-boot-init",
    "linux-boot-exit",
];

/// How the figures were taken, for the report's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    /// The emulated machine's QEMU options that matter for the counts.
    pub qemu: String,
    /// The Debian kernel of the machine and of the Linux guest.
    pub kernel: String,
    pub repeats: u32,
    /// The exit cases' loop count.
    pub iterations: u32,
}

/// One case on one backend: its repeats, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// (iterations, TSC difference) per repeat.
    pub runs: Vec<(u64, u64)>,
    /// The root CPU's idle time within each repeat's TSC difference, in ns,
    /// when the run measured it (the Linux boot).
    pub idle_ns: Vec<Option<u64>>,
}

impl Figures {
    /// Instructions per iteration of each repeat.
    pub fn per_iteration(&self) -> Vec<f64> {
        self.runs
            .iter()
            .map(|&(iterations, tsc)| tsc as f64 / iterations as f64)
            .collect()
    }

    /// The mean over the repeats, if there is any.
    pub fn mean(&self) -> Option<f64> {
        let v = self.per_iteration();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// (max − min) / mean of the repeats, in percent: 0 means identical
    /// counts. None with fewer than two repeats.
    pub fn spread_percent(&self) -> Option<f64> {
        let v = self.per_iteration();
        if v.len() < 2 {
            return None;
        }
        let max = v.iter().copied().fold(f64::MIN, f64::max);
        let min = v.iter().copied().fold(f64::MAX, f64::min);
        let mean = self.mean()?;
        Some(if mean > 0.0 {
            (max - min) / mean * 100.0
        } else {
            0.0
        })
    }

    /// The mean idle time of the repeats, if every repeat measured it.
    pub fn idle_mean(&self) -> Option<f64> {
        let idle: Option<Vec<u64>> = self.idle_ns.iter().copied().collect();
        idle.filter(|v| !v.is_empty())
            .map(|v| v.iter().sum::<u64>() as f64 / v.len() as f64)
    }

    /// Whether every repeat counted exactly the same.
    pub fn identical(&self) -> bool {
        self.runs.windows(2).all(|w| w[0] == w[1])
    }
}

/// One line of the table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub case: String,
    pub microv: Figures,
    pub kvm: Figures,
}

impl Row {
    /// MicroV's mean over KVM's.
    pub fn ratio(&self) -> Option<f64> {
        match (self.microv.mean(), self.kvm.mean()) {
            (Some(m), Some(k)) if k > 0.0 => Some(m / k),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub setup: Setup,
    pub rows: Vec<Row>,
    /// The console's error lines and unreadable figures.
    pub errors: Vec<String>,
}

/// Groups the samples by case (the cases in [`CASES`] first, in that order,
/// then any other in the order they came) and backend.
pub fn build(setup: Setup, console: &Console) -> Report {
    let mut rows: Vec<Row> = CASES
        .iter()
        .map(|c| Row {
            case: (*c).to_string(),
            ..Row::default()
        })
        .collect();
    let mut errors = console.errors.clone();
    errors.extend(console.malformed.iter().map(|m| format!("unreadable: {m}")));
    let mut samples: Vec<&Sample> = console.samples.iter().collect();
    // Repeats in order even if the console interleaved them.
    samples.sort_by_key(|s| s.rep);
    for s in samples {
        if s.backend != MICROV && s.backend != KVM {
            errors.push(format!(
                "case={} rep={}: unknown backend `{}`",
                s.case, s.rep, s.backend
            ));
            continue;
        }
        let at = match rows.iter().position(|r| r.case == s.case) {
            Some(at) => at,
            None => {
                rows.push(Row {
                    case: s.case.clone(),
                    ..Row::default()
                });
                rows.len() - 1
            }
        };
        let Some(row) = rows.get_mut(at) else {
            continue;
        };
        let figures = if s.backend == MICROV {
            &mut row.microv
        } else {
            &mut row.kvm
        };
        figures.runs.push((s.iterations, s.tsc));
        figures.idle_ns.push(s.idle_ns);
    }
    Report {
        setup,
        rows,
        errors,
    }
}

impl Report {
    /// "case on backend" for every expected case without a figure: the
    /// benchmark is complete when this is empty.
    pub fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for row in self
            .rows
            .iter()
            .filter(|r| CASES.contains(&r.case.as_str()))
        {
            for (name, figures) in [("MicroV", &row.microv), ("KVM", &row.kvm)] {
                if figures.runs.is_empty() {
                    missing.push(format!("{} on {name}", row.case));
                }
            }
        }
        missing
    }

    /// The table, in Markdown with padded columns so it reads on a terminal.
    pub fn table(&self) -> String {
        let mut lines = vec![strings(&[
            "case",
            "MicroV instr/iteration",
            "KVM instr/iteration",
            "MicroV/KVM",
            "spread MicroV",
            "spread KVM",
        ])];
        for row in &self.rows {
            lines.push(vec![
                row.case.clone(),
                row.microv.mean().map_or("missing".into(), count),
                row.kvm.mean().map_or("missing".into(), count),
                ratio(row.ratio()),
                spread(&row.microv),
                spread(&row.kvm),
            ]);
        }
        render(&lines)
    }

    /// For the cases that measured the root's idle time (the Linux boot):
    /// the TSC difference split into idle time and executed instructions,
    /// means over the repeats. None if no case did.
    pub fn idle_table(&self) -> Option<String> {
        let mut lines = vec![strings(&[
            "case",
            "MicroV total",
            "MicroV idle",
            "MicroV executed",
            "KVM total",
            "KVM idle",
            "KVM executed",
            "MicroV/KVM executed",
        ])];
        for row in &self.rows {
            let (m, k) = (&row.microv, &row.kvm);
            if m.idle_mean().is_none() && k.idle_mean().is_none() {
                continue;
            }
            // Only iterations = 1 figures carry idle time: total − idle.
            let executed = |f: &Figures| Some(f.mean()? - f.idle_mean()?);
            let cell = |v: Option<f64>| v.map_or("—".into(), count);
            lines.push(vec![
                row.case.clone(),
                cell(m.mean()),
                cell(m.idle_mean()),
                cell(executed(m)),
                cell(k.mean()),
                cell(k.idle_mean()),
                cell(executed(k)),
                ratio(match (executed(m), executed(k)) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                }),
            ]);
        }
        (lines.len() > 1).then(|| render(&lines))
    }

    /// `report.md`.
    pub fn markdown(&self) -> String {
        let s = &self.setup;
        let mut out = format!(
            "# MicroV benchmark report\n\n\
             Generated by `cargo xtask bench` (method: `docs/benchmarks.md`).\n\n\
             - Machine: `qemu-system-x86_64 {}`, Debian kernel {}.\n\
             - Each case ran {} time(s) on each backend in the same boot; the exit cases \
             loop {} times after 10 warm-up iterations.\n\
             - Figures are instructions (the TSC under `-icount shift=0`): software path \
             length, with VMRUN and #VMEXIT one instruction each, not the hardware's \
             world-switch cost. Exit cases: per iteration, including the guest's 3–5 \
             loop instructions. Linux boot: in total, from `microv run` starting to the \
             guest init's first line (`linux-boot-init`) and to the VMM's exit after the \
             guest powered off (`linux-boot-exit`).\n\
             - Spread: (max − min) / mean over the repeats; `identical` means every \
             repeat counted exactly the same.\n\n",
            s.qemu, s.kernel, s.repeats, s.iterations
        );
        out.push_str(&self.table());
        if let Some(idle) = self.idle_table() {
            out.push_str(
                "\nThe Linux boot split (ns of emulated time = instructions; while the \
                 root's CPU idles, `sleep=off` skips the TSC ahead to the next timer; idle \
                 from /proc/uptime in 10 ms steps):\n\n",
            );
            out.push_str(&idle);
        }
        let missing = self.missing();
        if !missing.is_empty() {
            out.push_str(&format!("\nMissing: {}.\n", missing.join(", ")));
        }
        if !self.errors.is_empty() {
            out.push_str("\nErrors:\n\n");
            for e in &self.errors {
                out.push_str(&format!("- `{e}`\n"));
            }
        }
        out
    }

    /// `report.json`: the setup, every raw count, the means and ratios.
    pub fn json(&self) -> Value {
        let figures = |f: &Figures| {
            json!({
                "iterations": f.runs.iter().map(|r| r.0).collect::<Vec<_>>(),
                "tsc": f.runs.iter().map(|r| r.1).collect::<Vec<_>>(),
                "per_iteration": f.per_iteration(),
                "mean_per_iteration": f.mean(),
                "spread_percent": f.spread_percent(),
                "identical": f.runs.len() > 1 && f.identical(),
                "idle_ns": f.idle_ns,
                "mean_idle_ns": f.idle_mean(),
            })
        };
        json!({
            "setup": {
                "qemu": self.setup.qemu,
                "kernel": self.setup.kernel,
                "repeats": self.setup.repeats,
                "iterations": self.setup.iterations,
                "unit": "instructions (TSC under -icount shift=0)",
            },
            "cases": self.rows.iter().map(|r| json!({
                "case": r.case,
                "microv": figures(&r.microv),
                "kvm": figures(&r.kvm),
                "ratio_microv_over_kvm": r.ratio(),
            })).collect::<Vec<_>>(),
            "missing": self.missing(),
            "errors": self.errors,
        })
    }
}

/// A count, rounded, with thousands separated by commas.
fn count(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{r:.2}"))
}

fn strings(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_string()).collect()
}

/// A Markdown table with padded columns: the first line is the header; the
/// first column (names) is left-aligned, the others (numbers) right.
fn render(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for line in lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(col, (cell, &w))| {
                let pad = " ".repeat(w - cell.chars().count());
                if col == 0 {
                    format!("{cell}{pad}")
                } else {
                    format!("{pad}{cell}")
                }
            })
            .collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
        if i == 0 {
            // Markdown's alignment row.
            let rules: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(col, &w)| {
                    if col == 0 {
                        "-".repeat(w + 2)
                    } else {
                        format!("{}:", "-".repeat(w + 1))
                    }
                })
                .collect();
            out.push_str(&format!("|{}|\n", rules.join("|")));
        }
    }
    out
}

fn spread(f: &Figures) -> String {
    if f.runs.len() > 1 && f.identical() {
        return "identical".into();
    }
    f.spread_percent()
        .map_or("—".into(), |p| format!("{p:.2}%"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::parse::parse;

    fn setup() -> Setup {
        Setup {
            qemu: "-icount shift=0,sleep=off".into(),
            kernel: "6.1.0-57-amd64".into(),
            repeats: 2,
            iterations: 1000,
        }
    }

    fn line(backend: &str, rep: u32, case: &str, iterations: u64, tsc: u64) -> String {
        format!("MVBENCH backend={backend} rep={rep} case={case} iterations={iterations} tsc={tsc:#x}\n")
    }

    /// Every case on both backends, twice; KVM's pio differs between repeats.
    fn full() -> String {
        let mut text = String::new();
        for rep in [2, 1] {
            for (i, case) in CASES.iter().enumerate() {
                let n = if case.starts_with("linux") { 1 } else { 1000 };
                let base = (i as u64 + 1) * 1_000_000;
                text += &line(MICROV, rep, case, n, base);
                let kvm = if *case == "pio" && rep == 2 {
                    4_100_000
                } else {
                    2 * base
                };
                text += &line(KVM, rep, case, n, kvm);
            }
        }
        text
    }

    #[test]
    fn a_full_run_gives_means_ratios_and_spreads() {
        let r = build(setup(), &parse(&full()));
        assert!(r.missing().is_empty());
        assert!(r.errors.is_empty());
        let pio = &r.rows[2];
        assert_eq!(pio.case, "pio");
        assert_eq!(pio.microv.mean(), Some(3000.0));
        assert!(pio.microv.identical());
        assert_eq!(pio.microv.spread_percent(), Some(0.0));
        assert_eq!(pio.kvm.runs, [(1000, 3_000_000 * 2), (1000, 4_100_000)]);
        assert_eq!(pio.kvm.mean(), Some(5050.0));
        let spread = pio.kvm.spread_percent().unwrap_or_default();
        assert!((spread - 1900.0 / 5050.0 * 100.0).abs() < 1e-9);
        assert!(!pio.kvm.identical());
        assert_eq!(r.rows[0].ratio(), Some(0.5));

        let table = r.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + CASES.len());
        assert!(lines[0].starts_with("| case "), "{table}");
        assert!(lines[1].starts_with("|------"), "{table}");
        assert!(lines[1].ends_with("-:|"), "{table}");
        assert!(
            lines[4].contains(" 3,000 |") && lines[4].contains(" 5,050 |"),
            "{table}"
        );
        assert!(
            lines[4].contains(" identical |") && lines[4].contains("37.62%"),
            "{table}"
        );
        assert!(
            lines[7].contains("6,000,000") && lines[7].contains("12,000,000"),
            "{table}"
        );
        // Every line is as wide as the header.
        assert!(lines
            .iter()
            .all(|l| l.chars().count() == lines[0].chars().count()));

        let md = r.markdown();
        assert!(md.contains("qemu-system-x86_64 -icount shift=0,sleep=off"));
        assert!(md.contains(&table));
        assert!(!md.contains("Missing") && !md.contains("Errors"));

        let j = r.json();
        assert_eq!(j["setup"]["repeats"], 2);
        assert_eq!(j["cases"][2]["kvm"]["tsc"], json!([6_000_000, 4_100_000]));
        assert_eq!(j["cases"][2]["microv"]["identical"], true);
        assert_eq!(j["cases"][0]["ratio_microv_over_kvm"], 0.5);
        assert_eq!(j["missing"], json!([]));
    }

    #[test]
    fn missing_cases_errors_and_strangers_are_reported() {
        let text = line(MICROV, 1, "pio", 10, 100)
            + &line(KVM, 1, "timer", 1, 7)
            + &line("xen", 1, "vmexit", 1, 7)
            + "MVBENCH-ERROR backend=kvm rep=1 case=pio: no figure\n"
            + "MVBENCH backend=kvm\n";
        let r = build(setup(), &parse(&text));
        let missing = r.missing();
        assert!(missing.contains(&"pio on KVM".to_string()));
        assert!(!missing.contains(&"pio on MicroV".to_string()));
        assert_eq!(missing.len(), 2 * CASES.len() - 1);
        // A case bench.sh does not know yet still shows, after the known ones.
        assert_eq!(r.rows.last().map(|row| row.case.as_str()), Some("timer"));
        assert_eq!(
            r.errors,
            [
                "MVBENCH-ERROR backend=kvm rep=1 case=pio: no figure",
                "unreadable: MVBENCH backend=kvm: no iterations=",
                "case=vmexit rep=1: unknown backend `xen`",
            ]
        );
        let pio = &r.rows[2];
        assert_eq!(pio.ratio(), None);
        // One repeat: no spread, and not "identical".
        assert_eq!(pio.microv.spread_percent(), None);
        assert_eq!(spread(&pio.microv), "—");
        assert_eq!(spread(&pio.kvm), "—");
        let table = r.table();
        assert!(table.contains(" missing | "), "{table}");
        let md = r.markdown();
        assert!(md.contains("Missing: hypercall on MicroV,"), "{md}");
        assert!(md.contains("Errors:\n\n- `MVBENCH-ERROR"), "{md}");
        let j = r.json();
        assert_eq!(j["cases"][2]["microv"]["identical"], false);
        assert_eq!(j["cases"][2]["kvm"]["mean_per_iteration"], Value::Null);
    }

    #[test]
    fn the_boot_is_split_into_idle_and_executed() {
        let idle = |backend: &str, case: &str, tsc: u64, idle: u64| {
            format!("MVBENCH backend={backend} rep=1 case={case} iterations=1 tsc={tsc} idle_ns={idle}\n")
        };
        let text = idle(MICROV, "linux-boot-exit", 10_000, 4_000)
            + &idle(KVM, "linux-boot-exit", 6_000, 1_000)
            + &idle(MICROV, "linux-boot-init", 9_000, 3_000)
            + &line(KVM, 1, "linux-boot-init", 1, 5_000)
            + &line(KVM, 1, "pio", 1, 5_000);
        let r = build(setup(), &parse(&text));
        let table = r.idle_table().unwrap_or_default();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].contains("| MicroV executed |"), "{table}");
        // init: KVM measured no idle, so it has no executed figure.
        assert!(lines[2].starts_with("| linux-boot-init "), "{table}");
        assert!(
            lines[2].contains(" 6,000 |") && lines[2].ends_with(" — |"),
            "{table}"
        );
        assert!(lines[3].starts_with("| linux-boot-exit "), "{table}");
        assert!(
            lines[3].contains(" 6,000 |") && lines[3].contains(" 5,000 |"),
            "{table}"
        );
        assert!(lines[3].ends_with(" 1.20 |"), "{table}");
        assert!(r.markdown().contains("The Linux boot split"));
        assert_eq!(r.json()["cases"][5]["kvm"]["mean_idle_ns"], 1000.0);
        // Without idle figures there is no such table.
        let plain = build(setup(), &parse(&full()));
        assert_eq!(plain.idle_table(), None);
        assert!(!plain.markdown().contains("The Linux boot split"));
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.4), "999");
        assert_eq!(count(1000.0), "1,000");
        assert_eq!(count(1_234_567.6), "1,234,568");
        assert_eq!(count(-5.0), "0");
        // A zero mean (an empty loop) has no meaningful spread but is not NaN.
        let zero = Figures {
            runs: vec![(1, 0), (1, 0)],
            idle_ns: vec![Some(0), None],
        };
        assert_eq!(zero.idle_mean(), None);
        assert_eq!(zero.spread_percent(), Some(0.0));
        let zeros = Figures {
            runs: vec![(1, 0), (2, 0)],
            idle_ns: Vec::new(),
        };
        assert_eq!(zeros.idle_mean(), None);
        assert_eq!(zeros.spread_percent(), Some(0.0));
        assert!(!zeros.identical());
    }
}
