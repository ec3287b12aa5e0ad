//! Turns the figures read off the console into the benchmark's report: a
//! table of MicroV against KVM per case (the terminal and `report.md` show
//! the same one) and `report.json` with every raw count.

use super::parse::{Console, Sample, Stat};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The backends, as bench.sh tags them, and their names in the report.
pub const MICROV: &str = "microv";
pub const KVM: &str = "kvm";
/// The root with no hypervisor (MicroV stopped, KVM not loaded).
pub const NATIVE: &str = "native";

/// The cases `tests/bench/bench.sh` runs, in the report's order.
pub const CASES: &[&str] = &[
    "hypercall",
    "cpuid",
    "pio",
    "mmio",
    "timer",
    "halt-wake",
    "linux-boot-init",
    "linux-boot-exit",
    "vm-create-destroy",
];

/// The workload: in the Linux guest on MicroV and on KVM, and in the root
/// natively (`workload`); in the root beneath MicroV with no VM
/// (`root-workload`, MicroV only: its native figure is `workload`'s). Their
/// own table ([`Report::workload_table`]).
pub const WORKLOAD: &str = "workload";
pub const ROOT_WORKLOAD: &str = "root-workload";

/// The `MVBENCH-STAT` cases (MicroV only), in [`Report::microv_table`].
pub const STAT_CASES: &[&str] = &["root-exits-idle", "root-exits-busy", "memory"];

/// The files xtask stages into target/microv/ whose sizes the report gives:
/// (file, what it is).
pub const IMAGES: &[(&str, &str)] = &[
    ("microv-kernel.elf", "microkernel"),
    ("microv-extension.elf", "extension"),
    ("microv.ko", "driver"),
    ("microv", "VMM and CLI"),
];

/// One image's size: the file's, and its allocated sections' (text, data,
/// bss: what is loaded; the files carry symbols and debug information).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub file: String,
    pub what: String,
    pub file_bytes: u64,
    pub alloc_bytes: Option<u64>,
}

/// The sizes of [`IMAGES`] in `dir` (those that exist).
pub fn images(dir: &Path) -> Vec<Image> {
    IMAGES
        .iter()
        .filter_map(|(file, what)| {
            let data = std::fs::read(dir.join(file)).ok()?;
            Some(Image {
                file: (*file).to_string(),
                what: (*what).to_string(),
                file_bytes: data.len() as u64,
                alloc_bytes: alloc_bytes(&data),
            })
        })
        .collect()
}

/// The sum of the sizes of an ELF64 little-endian file's SHF_ALLOC
/// sections (as `size` adds text, data and bss); None if it is not one.
pub fn alloc_bytes(elf: &[u8]) -> Option<u64> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = usize::try_from(u64_at(0x28)?).ok()?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    if shentsize < 0x40 {
        return None;
    }
    let mut total = 0u64;
    for i in 0..shnum {
        let sh = shoff.checked_add(i.checked_mul(shentsize)?)?;
        const SHF_ALLOC: u64 = 2;
        if u64_at(sh + 0x08)? & SHF_ALLOC != 0 {
            total = total.checked_add(u64_at(sh + 0x20)?)?;
        }
    }
    Some(total)
}

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
    /// The root with no hypervisor (the workload).
    pub native: Figures,
}

impl Row {
    /// MicroV's mean over KVM's.
    pub fn ratio(&self) -> Option<f64> {
        match (self.microv.mean(), self.kvm.mean()) {
            (Some(m), Some(k)) if k > 0.0 => Some(m / k),
            _ => None,
        }
    }

    /// MicroV's mean over `native`'s.
    pub fn ratio_native(&self, native: &Figures) -> Option<f64> {
        match (self.microv.mean(), native.mean()) {
            (Some(m), Some(n)) if n > 0.0 => Some(m / n),
            _ => None,
        }
    }
}

/// One `MVBENCH-STAT` case: its values per repeat, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub case: String,
    pub reps: Vec<BTreeMap<String, u64>>,
}

impl Stats {
    /// The mean over the repeats of `f` of each repeat's values (None
    /// where `f` is); None if no repeat has it.
    pub fn mean(&self, f: impl Fn(&BTreeMap<String, u64>) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.reps.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// The mean of one value.
    pub fn value(&self, key: &str) -> Option<f64> {
        self.mean(|r| r.get(key).map(|&v| v as f64))
    }

    /// The mean of a − b.
    pub fn diff(&self, a: &str, b: &str) -> Option<f64> {
        self.mean(|r| Some(*r.get(a)? as f64 - *r.get(b)? as f64))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub setup: Setup,
    pub rows: Vec<Row>,
    /// The `MVBENCH-STAT` cases ([`STAT_CASES`] first).
    pub stats: Vec<Stats>,
    /// The image sizes (read on the host; empty until the caller sets them).
    pub images: Vec<Image>,
    /// The console's error lines and unreadable figures.
    pub errors: Vec<String>,
}

/// Groups the samples by case (the cases in [`CASES`] first, in that order,
/// then any other in the order they came) and backend.
pub fn build(setup: Setup, console: &Console) -> Report {
    let mut rows: Vec<Row> = CASES
        .iter()
        .chain(&[WORKLOAD, ROOT_WORKLOAD])
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
        if s.backend != MICROV && s.backend != KVM && s.backend != NATIVE {
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
        let figures = match s.backend.as_str() {
            MICROV => &mut row.microv,
            KVM => &mut row.kvm,
            _ => &mut row.native,
        };
        figures.runs.push((s.iterations, s.tsc));
        figures.idle_ns.push(s.idle_ns);
    }
    let mut stats: Vec<Stats> = STAT_CASES
        .iter()
        .map(|c| Stats {
            case: (*c).to_string(),
            ..Stats::default()
        })
        .collect();
    let mut sorted: Vec<&Stat> = console.stats.iter().collect();
    sorted.sort_by_key(|s| s.rep);
    for s in sorted {
        if s.backend != MICROV {
            errors.push(format!(
                "case={} rep={}: unknown backend `{}` for a stat",
                s.case, s.rep, s.backend
            ));
            continue;
        }
        match stats.iter_mut().find(|x| x.case == s.case) {
            Some(x) => x.reps.push(s.values.clone()),
            None => stats.push(Stats {
                case: s.case.clone(),
                reps: vec![s.values.clone()],
            }),
        }
    }
    Report {
        setup,
        rows,
        stats,
        images: Vec::new(),
        errors,
    }
}

/// Whether a row belongs in the main table (not the workload's).
fn main_row(row: &Row) -> bool {
    row.case != WORKLOAD && row.case != ROOT_WORKLOAD
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
        for row in &self.rows {
            let expected: &[(&str, &Figures)] = match row.case.as_str() {
                WORKLOAD => &[
                    ("MicroV", &row.microv),
                    ("KVM", &row.kvm),
                    ("native", &row.native),
                ],
                ROOT_WORKLOAD => &[("MicroV", &row.microv)],
                _ => &[],
            };
            for (name, figures) in expected {
                if figures.runs.is_empty() {
                    missing.push(format!("{} on {name}", row.case));
                }
            }
        }
        for st in self
            .stats
            .iter()
            .filter(|s| STAT_CASES.contains(&s.case.as_str()))
        {
            if st.reps.is_empty() {
                missing.push(format!("{} on MicroV", st.case));
            }
        }
        missing
    }

    fn row(&self, case: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.case == case)
    }

    fn stat(&self, case: &str) -> Option<&Stats> {
        self.stats.iter().find(|s| s.case == case)
    }

    /// The workload's table: in the guest on each backend and natively in
    /// the root; in the root beneath MicroV against native. None without
    /// any workload figure.
    pub fn workload_table(&self) -> Option<String> {
        let empty = Figures::default();
        let native = self.row(WORKLOAD).map_or(&empty, |r| &r.native);
        let mut lines = vec![strings(&[
            "case",
            "MicroV instr",
            "KVM instr",
            "native instr",
            "MicroV/KVM",
            "MicroV/native",
            "spread MicroV",
            "spread KVM",
            "spread native",
        ])];
        for (case, label) in [
            (WORKLOAD, "workload (in the guest)"),
            (ROOT_WORKLOAD, "root-workload (no VM)"),
        ] {
            let Some(row) = self.row(case) else { continue };
            let cell = |f: &Figures| f.mean().map_or("—".into(), count);
            let kvm = case == WORKLOAD;
            lines.push(vec![
                label.to_string(),
                cell(&row.microv),
                if kvm { cell(&row.kvm) } else { "—".into() },
                cell(native),
                if kvm {
                    ratio(row.ratio())
                } else {
                    "—".into()
                },
                ratio(row.ratio_native(native)),
                spread(&row.microv),
                if kvm { spread(&row.kvm) } else { "—".into() },
                spread(native),
            ]);
        }
        let any = self.rows.iter().filter(|r| !main_row(r)).any(|r| {
            !r.microv.runs.is_empty() || !r.kvm.runs.is_empty() || !r.native.runs.is_empty()
        });
        any.then(|| render(&lines))
    }

    /// MicroV's own figures: the root's exits per second, the pool, the
    /// images. None if there is none.
    pub fn microv_table(&self) -> Option<String> {
        let mut lines = vec![strings(&["figure", "value", "how"])];
        for (case, label) in [
            ("root-exits-idle", "root exits/s, idle (sleep)"),
            ("root-exits-busy", "root exits/s, mv-sysbench"),
        ] {
            let Some(st) = self.stat(case).filter(|s| !s.reps.is_empty()) else {
                continue;
            };
            let rate = st.mean(|r| {
                let ns = *r.get("ns")? as f64;
                let exits = *r.get("exits")? as f64 - *r.get("vmmcall")? as f64;
                (ns > 0.0).then(|| exits / ns * 1e9)
            });
            let mut how = format!(
                "{} exits measured, {} around `sleep 0` (the measurement's own): {} in {:.2} s of MicroV's uptime",
                st.value("measured_exits").map_or("?".into(), count),
                st.value("probe_exits").map_or("?".into(), count),
                st.diff("exits", "vmmcall").map_or("?".into(), count),
                st.value("ns").unwrap_or_default() / 1e9,
            );
            if let Some(sys) = st.value("syscalls") {
                how += &format!(", {} syscalls", count(sys));
            }
            lines.push(vec![
                label.into(),
                rate.map_or("—".into(), |r| format!("{r:.1}")),
                how,
            ]);
        }
        if let Some(st) = self.stat("memory").filter(|s| !s.reps.is_empty()) {
            // Per repeat, not a mean: MicroV keeps some pages of the first VM
            // after it is destroyed and reuses them for later VMs, so the
            // first repeat (right after `microv start`) and the later ones
            // differ. The value is the first repeat's; the others follow.
            type Values = BTreeMap<String, u64>;
            fn diff(r: &Values, a: &str, b: &str) -> Option<f64> {
                Some(*r.get(a)? as f64 - *r.get(b)? as f64)
            }
            fn vm1(r: &Values) -> Option<f64> {
                diff(r, "free_before_1vcpu", "free_vm_1vcpu")
            }
            fn vm2(r: &Values) -> Option<f64> {
                diff(r, "free_before_2vcpus", "free_vm_2vcpus")
            }
            fn itself(r: &Values) -> Option<f64> {
                diff(r, "pool_bytes", "free_started")
            }
            fn per_vcpu(r: &Values) -> Option<f64> {
                Some(vm2(r)? - vm1(r)?)
            }
            fn kept(r: &Values) -> Option<f64> {
                diff(r, "free_started", "free_after")
            }
            type Of = fn(&Values) -> Option<f64>;
            let rows: [(&str, Of, &str); 5] = [
                (
                    "pool used by MicroV itself",
                    itself,
                    "pool − free pool after `microv start` on 1 CPU",
                ),
                (
                    "pool per VM (256 MiB, 1 vCPU)",
                    vm1,
                    "free pool just before the VM less while it is held",
                ),
                (
                    "pool per VM (256 MiB, 2 vCPUs)",
                    vm2,
                    "the same, in a MicroV started afresh",
                ),
                (
                    "pool per further vCPU",
                    per_vcpu,
                    "the 2-vCPU VM's less the 1-vCPU VM's (net changes of the free pool)",
                ),
                (
                    "pool kept for the next VM",
                    kept,
                    "free pool after `microv start` less after the 2-vCPU VM is gone (permission maps, vCPU pages)",
                ),
            ];
            for (label, of, how) in rows {
                let per_rep: Vec<Option<f64>> = st.reps.iter().map(of).collect();
                let later: Vec<String> = per_rep.iter().skip(1).map(|v| signed_bytes(*v)).collect();
                let how = if later.is_empty() {
                    format!("{how} (repeat 1)")
                } else {
                    format!("{how}; repeat 1, later repeats: {}", later.join(", "))
                };
                lines.push(vec![
                    label.into(),
                    signed_bytes(per_rep.first().copied().flatten()),
                    how,
                ]);
            }
            if let Some(pool) = st.value("pool_bytes") {
                lines.push(vec![
                    "pool size".into(),
                    signed_bytes(Some(pool)),
                    "`microv start`'s default".into(),
                ]);
            }
        }
        for im in &self.images {
            lines.push(vec![
                format!("image: {} ({})", im.what, im.file),
                im.alloc_bytes
                    .map_or("—".into(), |b| format!("{} B", count(b as f64))),
                format!(
                    "text + data + bss (SHF_ALLOC sections); the file is {} B",
                    count(im.file_bytes as f64)
                ),
            ]);
        }
        (lines.len() > 1).then(|| render(&lines))
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
        for row in self.rows.iter().filter(|r| main_row(r)) {
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
        for row in self.rows.iter().filter(|r| main_row(r)) {
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
             loop instructions; `timer` and `halt-wake`: the mean latency from the \
             TSC deadline to the guest's interrupt handler (spinning, halted). Linux \
             boot: in total, from `microv run` starting to the guest init's first line \
             (`linux-boot-init`) and to the VMM's exit after the guest powered off \
             (`linux-boot-exit`).\n\
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
        if let Some(w) = self.workload_table() {
            out.push_str(
                "\nThe workload (`busybox seq 1 200000 | busybox gzip -c | busybox sha256sum`), \
                 instructions in total: in the Linux guest on each backend (the guest's TSC), \
                 and in the root (the root's TSC) with MicroV stopped (native) and beneath \
                 MicroV with no VM (`root-workload`):\n\n",
            );
            out.push_str(&w);
        }
        if let Some(m) = self.microv_table() {
            out.push_str(
                "\nMicroV alone: the root's exits per second (seconds of emulated time: 1 ns \
                 per instruction under `-icount shift=0`; no VM running), the pool from \
                 `microv status --json`, the images as staged in target/microv/:\n\n",
            );
            out.push_str(&m);
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
                "native": figures(&r.native),
                "ratio_microv_over_kvm": r.ratio(),
            })).collect::<Vec<_>>(),
            "stats": self.stats.iter().map(|s| json!({
                "case": s.case,
                "microv": s.reps,
            })).collect::<Vec<_>>(),
            "images": self.images.iter().map(|i| json!({
                "file": i.file,
                "what": i.what,
                "file_bytes": i.file_bytes,
                "alloc_bytes": i.alloc_bytes,
            })).collect::<Vec<_>>(),
            "missing": self.missing(),
            "errors": self.errors,
        })
    }
}

/// A count, rounded, with thousands separated by commas.
pub fn count(value: f64) -> String {
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

/// Bytes with thousands separated, negative ones with a minus sign.
fn signed_bytes(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(b) if b < 0.0 => format!("−{} B", count(-b)),
        Some(b) => format!("{} B", count(b)),
    }
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
        let r = build(setup(), &parse(&(full() + &workload_and_stats())));
        assert!(r.missing().is_empty(), "{:?}", r.missing());
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
            lines[9].contains("8,000,000") && lines[9].contains("16,000,000"),
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
            + &line(KVM, 1, "nmi", 1, 7)
            + &line("xen", 1, "vmexit", 1, 7)
            + "MVBENCH-ERROR backend=kvm rep=1 case=pio: no figure\n"
            + "MVBENCH backend=kvm\n";
        let r = build(setup(), &parse(&text));
        let missing = r.missing();
        assert!(missing.contains(&"pio on KVM".to_string()));
        assert!(!missing.contains(&"pio on MicroV".to_string()));
        // ... and the workload's four figures, MicroV's three stats.
        assert_eq!(missing.len(), 2 * CASES.len() - 1 + 4 + STAT_CASES.len());
        // A case bench.sh does not know yet still shows, after the known ones.
        assert_eq!(r.rows.last().map(|row| row.case.as_str()), Some("nmi"));
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
        assert_eq!(r.json()["cases"][7]["kvm"]["mean_idle_ns"], 1000.0);
        // Without idle figures there is no such table.
        let plain = build(setup(), &parse(&full()));
        assert_eq!(plain.idle_table(), None);
        assert!(!plain.markdown().contains("The Linux boot split"));
    }

    fn workload_and_stats() -> String {
        let mut text = String::new();
        for rep in [1, 2] {
            text += &line(MICROV, rep, WORKLOAD, 1, 1_010_000);
            text += &line(KVM, rep, WORKLOAD, 1, 1_000_000);
            text += &line(NATIVE, rep, WORKLOAD, 1, 1_000_000 + rep as u64 * 2);
            text += &line(MICROV, rep, ROOT_WORKLOAD, 1, 1_001_001);
            text += &format!(
                "MVBENCH-STAT backend=microv rep={rep} case=root-exits-idle exits=79 vmmcall=7 ns=2000000000 measured_exits=137 probe_exits=58\n\
                 MVBENCH-STAT backend=microv rep={rep} case=root-exits-busy exits=115 vmmcall=7 ns=400000000 measured_exits=173 probe_exits=58 syscalls=280000\n\
                 MVBENCH-STAT backend=microv rep={rep} case=memory pool_bytes=67108864 free_started=66592768 \
                 free_before_1vcpu=66592768 free_vm_1vcpu=66543616 free_before_2vcpus=66539520 \
                 free_vm_2vcpus=66486272 free_after=66539520\n"
            );
        }
        text
    }

    #[test]
    fn the_workload_has_its_own_table_with_native_beside() {
        let r = build(setup(), &parse(&(full() + &workload_and_stats())));
        assert!(r.missing().is_empty(), "{:?}", r.missing());
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        // Not in the main table.
        assert!(!r.table().contains("workload"));
        let w = r.workload_table().unwrap_or_default();
        let lines: Vec<&str> = w.lines().collect();
        assert_eq!(lines.len(), 4, "{w}");
        assert!(
            lines[0].contains("| native instr |") && lines[0].contains("| MicroV/native |"),
            "{w}"
        );
        assert!(lines[2].starts_with("| workload (in the guest) "), "{w}");
        // 1,010,000 / 1,000,000 = 1.01 on both; native's mean 1,000,003.
        assert!(
            lines[2].contains(" 1,010,000 | ") && lines[2].contains(" 1,000,003 | "),
            "{w}"
        );
        assert_eq!(lines[2].matches(" 1.01 |").count(), 2, "{w}");
        assert!(
            lines[2].contains(" identical | ") && lines[2].ends_with(" 0.00% |"),
            "{w}"
        );
        // The root beneath MicroV against the same native figure, no KVM.
        assert!(lines[3].starts_with("| root-workload (no VM) "), "{w}");
        assert!(
            lines[3].contains(" 1,001,001 |") && lines[3].contains(" — |"),
            "{w}"
        );
        assert!(lines[3].contains(" 1.00 |"), "{w}");
        let j = r.json();
        let cases = j["cases"].as_array().cloned().unwrap_or_default();
        let wl = cases
            .iter()
            .find(|c| c["case"] == WORKLOAD)
            .cloned()
            .unwrap_or_default();
        assert_eq!(wl["native"]["tsc"], json!([1_000_002, 1_000_004]));
        let md = r.markdown();
        assert!(md.contains(&w) && md.contains("busybox gzip"), "{md}");
    }

    #[test]
    fn microv_alone_gives_exit_rates_pool_and_images() {
        let mut r = build(setup(), &parse(&(full() + &workload_and_stats())));
        r.images = vec![Image {
            file: "microv.ko".into(),
            what: "driver".into(),
            file_bytes: 991_192,
            alloc_bytes: Some(37_013),
        }];
        let m = r.microv_table().unwrap_or_default();
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines.len(), 2 + 2 + 6 + 1, "{m}");
        // (79 - 7) exits over 2 s; (115 - 7) over 0.4 s.
        assert!(
            lines[2].contains("idle") && lines[2].contains(" 36.0 |"),
            "{m}"
        );
        assert!(
            lines[2].contains("137 exits measured, 58 around `sleep 0`") && lines[2].contains("72 in 2.00 s"),
            "{m}"
        );
        assert!(
            lines[3].contains(" 270.0 |") && lines[3].contains("280,000 syscalls"),
            "{m}"
        );
        assert!(
            lines[4].contains(" 516,096 B |")
                && lines[4].contains("repeat 1, later repeats: 516,096 B"),
            "{m}"
        );
        assert!(lines[5].contains(" 49,152 B |"), "{m}");
        assert!(lines[6].contains(" 53,248 B |"), "{m}");
        assert!(lines[7].contains(" 4,096 B |"), "{m}");
        assert!(lines[8].contains(" 53,248 B |"), "{m}");
        assert!(
            lines[9].contains("pool size") && lines[9].contains(" 67,108,864 B |"),
            "{m}"
        );
        assert!(
            lines[10].contains("image: driver (microv.ko)") && lines[10].contains(" 37,013 B |"),
            "{m}"
        );
        assert!(lines[10].contains("the file is 991,192 B"), "{m}");
        assert_eq!(signed_bytes(Some(-8192.0)), "−8,192 B");
        let j = r.json();
        assert_eq!(j["stats"][2]["case"], "memory");
        assert_eq!(j["stats"][2]["microv"][1]["free_after"], 66_539_520u64);
        assert_eq!(j["images"][0]["alloc_bytes"], 37_013);
        assert!(r.markdown().contains("MicroV alone"));
        // Stats missing: named; a stat from another backend: an error.
        let r = build(
            setup(),
            &parse("MVBENCH-STAT backend=kvm rep=1 case=memory pool_bytes=1\n"),
        );
        let missing = r.missing();
        for case in STAT_CASES {
            assert!(
                missing.contains(&format!("{case} on MicroV")),
                "{missing:?}"
            );
        }
        assert!(missing.contains(&"workload on native".to_string()));
        assert!(missing.contains(&"root-workload on MicroV".to_string()));
        assert!(!missing.contains(&"root-workload on KVM".to_string()));
        assert_eq!(
            r.errors,
            ["case=memory rep=1: unknown backend `kvm` for a stat"]
        );
        assert_eq!(r.microv_table(), None);
        assert_eq!(r.workload_table(), None);
    }

    #[test]
    fn elf_allocated_sections_are_summed() {
        // A minimal ELF64 header and three section headers: alloc 0x100,
        // not alloc 0x1000, alloc 0x20.
        let mut elf = vec![0u8; 0x40 + 3 * 0x40];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x28..0x30].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&0x40u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        for (i, (flags, size)) in [(2u64, 0x100u64), (0, 0x1000), (6, 0x20)]
            .iter()
            .enumerate()
        {
            let sh = 0x40 + i * 0x40;
            elf[sh + 8..sh + 16].copy_from_slice(&flags.to_le_bytes());
            elf[sh + 0x20..sh + 0x28].copy_from_slice(&size.to_le_bytes());
        }
        assert_eq!(alloc_bytes(&elf), Some(0x120));
        assert_eq!(alloc_bytes(&elf[..0x50]), None);
        assert_eq!(alloc_bytes(b"#!/bin/sh\n"), None);
        // The real images, when they are built.
        let dir = crate::util::workspace_root().join("target/microv");
        for im in images(&dir) {
            assert!(
                im.alloc_bytes.is_some_and(|b| b > 0 && b < im.file_bytes),
                "{im:?}"
            );
        }
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
