//! `microv status` as text for people and as JSON for programs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use microv_abi::hypercall::{abi_major, capability};
use microv_abi::ioctl::{
    cpu_state, hv_state, vm_state, CpuStatus, HvStatus, VmExitCounts, VmInfo, VmList, VM_LIST_MAX,
};
use microv_abi::launch::{FaultRecord, StartMode, CHUNK_SIZE, MAX_CPUS};
use microv_abi::{ExitKind, StartError, EXIT_KINDS_MAX};
use serde::Serialize;

use crate::size::mib;

/// `state` as a word.
pub fn state_name(state: u32) -> String {
    match state {
        hv_state::STOPPED => "stopped".into(),
        hv_state::RUNNING => "running".into(),
        hv_state::FAILED => "failed".into(),
        n => format!("unknown({n})"),
    }
}

fn cpu_state_name(state: u32) -> String {
    match state {
        cpu_state::NATIVE => "native".into(),
        cpu_state::RUNNING => "running".into(),
        cpu_state::FAILED => "failed".into(),
        n => format!("unknown({n})"),
    }
}

fn vm_state_name(state: u32) -> String {
    match state {
        vm_state::LIVE => "live".into(),
        vm_state::ZOMBIE => "zombie".into(),
        vm_state::ORPHANED => "orphaned".into(),
        n => format!("unknown({n})"),
    }
}

/// A process's command name from the driver: the bytes before the first
/// NUL, with anything but printable ASCII shown as `?` (a process names
/// itself; its name must not steer the terminal).
pub fn comm_text(comm: &[u8]) -> String {
    comm.iter()
        .take_while(|&&b| b != 0)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// The VMs a list holds.
fn vms(list: &VmList) -> &[VmInfo] {
    let n = (list.count as usize).min(VM_LIST_MAX);
    list.vms.get(..n).unwrap_or(&[])
}

/// A VM's RUN exits by reason, in the ABI's order.
fn vm_exits(e: &VmExitCounts) -> [(&'static str, u64); 6] {
    [
        ("io", e.io),
        ("mmio", e.mmio),
        ("hlt", e.hlt),
        ("interrupted", e.interrupted),
        ("shutdown", e.shutdown),
        ("other", e.other),
    ]
}

/// `kind n, kind n, …` for the non-zero counts, or `-` if there are none.
fn kinds_text<K: std::fmt::Display>(counts: impl Iterator<Item = (K, u64)>) -> String {
    let kinds: Vec<String> = counts
        .filter(|(_, n)| *n != 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if kinds.is_empty() {
        "-".to_owned()
    } else {
        kinds.join(", ")
    }
}

fn vm_exits_total(e: &VmExitCounts) -> u64 {
    vm_exits(e)
        .iter()
        .fold(0u64, |a, &(_, n)| a.saturating_add(n))
}

/// The `vms` line: how many, and how many of them are listed.
fn vm_count_text(list: &VmList) -> String {
    let listed = vms(list).len();
    if (list.total as usize) > listed {
        format!("{} ({listed} listed)", list.total)
    } else {
        list.total.to_string()
    }
}

/// Whether the status shows the VMs at all: while MicroV runs, or while
/// the driver still holds some.
fn show_vms<'a>(st: &HvStatus, list: Option<&'a VmList>) -> Option<&'a VmList> {
    list.filter(|l| st.state == hv_state::RUNNING || l.total > 0)
}

fn start_mode_name(mode: u32) -> Option<String> {
    match mode {
        0 => None,
        m if m == StartMode::LateLaunch as u32 => Some("late_launch".into()),
        m if m == StartMode::EarlyBoot as u32 => Some("early_boot".into()),
        n => Some(format!("unknown({n})")),
    }
}

const CAPABILITIES: &[(u64, &str)] = &[
    (capability::LATE_LAUNCH, "late_launch"),
    (capability::EARLY_BOOT, "early_boot"),
    (capability::AMD_SVM, "amd_svm"),
    (capability::INTEL_VMX, "intel_vmx"),
    (capability::TEST_HOOKS, "test_hooks"),
];

fn capability_names(caps: u64) -> Vec<String> {
    (0..64)
        .map(|bit| 1u64 << bit)
        .filter(|b| caps & b != 0)
        .map(|b| match CAPABILITIES.iter().find(|(v, _)| *v == b) {
            Some((_, name)) => (*name).to_owned(),
            None => format!("bit{}", b.trailing_zeros()),
        })
        .collect()
}

fn abi_version_text(v: u64) -> String {
    format!("{}.{}", abi_major(v), v as u32)
}

fn hv_version_text(v: u64) -> String {
    let (major, minor, patch) = microv_abi::hypercall::decode_version(v);
    format!("{major}.{minor}.{patch}")
}

/// `StartError` variant names in snake_case (`extension_fault`).
fn error_name(e: StartError) -> String {
    let mut out = String::new();
    for (i, c) in format!("{e:?}").chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn exit_kind_name(index: usize) -> String {
    u32::try_from(index)
        .ok()
        .and_then(ExitKind::from_u32)
        .map_or_else(|| format!("kind{index}"), |k| k.name().to_owned())
}

/// Mnemonic of an x86 exception vector.
pub fn vector_name(vector: u32) -> Option<&'static str> {
    Some(match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        28 => "#HV",
        29 => "#VC",
        30 => "#SX",
        _ => return None,
    })
}

/// Formats nanoseconds as `2d 03h 04m 05s`, `1h 02m 03s`, `3m 05s` or `12.3s`.
pub fn uptime_text(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m {s:02}s")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{:.1}s", ns as f64 / 1e9)
    }
}

/// The CPUs the status reports.
fn cpus(st: &HvStatus) -> &[CpuStatus] {
    let n = (st.cpu_count as usize).min(MAX_CPUS);
    st.cpus.get(..n).unwrap_or(&[])
}

fn cpu_exits(cpu: &CpuStatus) -> impl Iterator<Item = (String, u64)> + '_ {
    cpu.exits
        .iter()
        .enumerate()
        .map(|(i, &n)| (exit_kind_name(i), n))
}

/// The error code `last_error_code`, else the fault's.
fn last_error(st: &HvStatus) -> Option<(u32, Option<u32>)> {
    let cpu = |c: u32| (c != u32::MAX).then_some(c);
    if st.last_error_code != 0 {
        Some((st.last_error_code, cpu(st.last_error_cpu)))
    } else if st.last_fault.code != 0 {
        Some((st.last_fault.code, cpu(st.last_error_cpu)))
    } else {
        None
    }
}

fn code_message(code: u32) -> String {
    StartError::from_u32(code).map_or_else(
        || format!("error code {code} (unknown to this microv)"),
        |e| e.message().to_owned(),
    )
}

fn fault_present(f: &FaultRecord) -> bool {
    f.code != 0
}

/// The human-readable status; `list` is the driver's VM list (`None`:
/// the driver cannot list VMs, and the VM section is left out).
pub fn status_text(st: &HvStatus, list: Option<&VmList>) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(s, "{k:<14} {v}");
    };
    line("state", state_name(st.state));
    line(
        "started",
        match start_mode_name(st.start_mode).as_deref() {
            None => "-".into(),
            Some("late_launch") => "late launch (beneath the running OS)".into(),
            Some("early_boot") => "early boot (before the OS, by the UEFI loader)".into(),
            Some(other) => other.into(),
        },
    );
    if st.state == hv_state::RUNNING {
        line("uptime", uptime_text(st.uptime_ns));
    }
    if st.hv_version != 0 {
        line("version", hv_version_text(st.hv_version));
    }
    // 0 means "not asked": MicroV was not running.
    line(
        "abi version",
        if st.abi_version == 0 {
            "-".to_string()
        } else {
            abi_version_text(st.abi_version)
        },
    );
    let caps = capability_names(st.capabilities);
    line(
        "capabilities",
        if caps.is_empty() {
            "none".into()
        } else {
            format!("{} ({:#x})", caps.join(", "), st.capabilities)
        },
    );
    line(
        "memory",
        if st.pool_bytes == 0 {
            "none".into()
        } else {
            format!(
                "{} pool, {} free ({} chunks of {})",
                mib(st.pool_bytes),
                mib(st.pool_free_bytes),
                st.chunk_count,
                mib(CHUNK_SIZE)
            )
        },
    );
    line("cpus", st.cpu_count.to_string());
    let list = show_vms(st, list);
    if let Some(l) = list {
        line("vms", vm_count_text(l));
    }

    let cpus = cpus(st);
    if !cpus.is_empty() {
        let _ = writeln!(s, "\n{:>4}  {:<8} {:>10}  by kind", "cpu", "state", "exits");
        for c in cpus {
            let total: u64 = c.exits.iter().fold(0u64, |a, &n| a.saturating_add(n));
            let kinds = kinds_text(cpu_exits(c));
            let _ = writeln!(
                s,
                "{:>4}  {:<8} {:>10}  {}",
                c.os_cpu,
                cpu_state_name(c.state),
                total,
                kinds
            );
        }
    }

    let listed = list.map_or(&[][..], vms);
    if !listed.is_empty() {
        let _ = writeln!(
            s,
            "\n{:>4}  {:>7}  {:<15}  {:<8} {:>5} {:>10} {:>10}  by kind",
            "vm", "pid", "command", "state", "vcpus", "memory", "exits"
        );
        for vm in listed {
            let kinds = kinds_text(vm_exits(&vm.exits).iter().copied());
            let _ = writeln!(
                s,
                "{:>4}  {:>7}  {:<15}  {:<8} {:>5} {:>10} {:>10}  {}",
                vm.vm_id,
                vm.pid,
                comm_text(&vm.comm),
                vm_state_name(vm.state),
                vm.vcpu_count,
                mib(vm.memory_bytes),
                vm_exits_total(&vm.exits),
                kinds
            );
        }
    }

    let mut hint = None;
    if let Some((code, cpu)) = last_error(st) {
        let at = cpu.map_or_else(String::new, |c| format!("on CPU {c}: "));
        let _ = writeln!(
            s,
            "\n{:<14} {at}{} (code {code})",
            "last error",
            code_message(code)
        );
        hint = StartError::from_u32(code).map(StartError::advice);
    }
    let f = &st.last_fault;
    if fault_present(f) {
        let what = if f.vector == u32::MAX {
            format!("not an exception (code {}), detail {:#x}", f.code, f.detail)
        } else {
            let name = vector_name(f.vector).unwrap_or("vector");
            format!(
                "{name} (vector {}), error code {:#x}",
                f.vector, f.error_code
            )
        };
        let level = match f.cpl {
            0 => " (microkernel)",
            3 => " (extension)",
            _ => "",
        };
        let _ = writeln!(
            s,
            "{:<14} {what}, rip {:#x}, cr2 {:#x}, cpl {}{level}",
            "fault", f.rip, f.cr2, f.cpl
        );
    }
    if let Some(h) = hint {
        let _ = writeln!(s, "{:<14} {h}", "hint");
    }
    s
}

#[derive(Serialize)]
struct JsonStatus {
    state: String,
    start_mode: Option<String>,
    version: Option<String>,
    abi_version: String,
    abi_version_raw: u64,
    capabilities: Vec<String>,
    capabilities_raw: u64,
    uptime_ns: u64,
    pool: JsonPool,
    cpu_count: u32,
    cpus: Vec<JsonCpu>,
    vm_count: Option<u32>,
    vms: Option<Vec<JsonVm>>,
    last_error: Option<JsonError>,
    fault: Option<JsonFault>,
}

#[derive(Serialize)]
struct JsonPool {
    bytes: u64,
    free_bytes: u64,
    chunks: u32,
    chunk_bytes: u64,
    first_pa: u64,
}

#[derive(Serialize)]
struct JsonCpu {
    os_cpu: u32,
    state: String,
    exits_total: u64,
    exits: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct JsonVm {
    id: u64,
    pid: u32,
    command: String,
    state: String,
    vcpus: u32,
    memory_bytes: u64,
    exits_total: u64,
    exits: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct JsonError {
    code: u32,
    name: Option<String>,
    message: String,
    advice: Option<&'static str>,
    cpu: Option<u32>,
}

#[derive(Serialize)]
struct JsonFault {
    code: u32,
    name: Option<String>,
    message: String,
    vector: Option<u32>,
    vector_name: Option<&'static str>,
    error_code: u64,
    rip: u64,
    cr2: u64,
    cpl: u64,
    detail: u64,
}

/// The status as one JSON object (field names documented in `microv status
/// --help`); `list` as for [`status_text`] (`None`: `vm_count` and `vms`
/// are null).
pub fn status_json(st: &HvStatus, list: Option<&VmList>) -> String {
    let known = |code: u32| StartError::from_u32(code);
    let json = JsonStatus {
        state: state_name(st.state),
        start_mode: start_mode_name(st.start_mode),
        version: (st.hv_version != 0).then(|| hv_version_text(st.hv_version)),
        abi_version: abi_version_text(st.abi_version),
        abi_version_raw: st.abi_version,
        capabilities: capability_names(st.capabilities),
        capabilities_raw: st.capabilities,
        uptime_ns: st.uptime_ns,
        pool: JsonPool {
            bytes: st.pool_bytes,
            free_bytes: st.pool_free_bytes,
            chunks: st.chunk_count,
            chunk_bytes: CHUNK_SIZE,
            first_pa: st.pool_first_pa,
        },
        cpu_count: st.cpu_count,
        cpus: cpus(st)
            .iter()
            .map(|c| JsonCpu {
                os_cpu: c.os_cpu,
                state: cpu_state_name(c.state),
                exits_total: c.exits.iter().fold(0u64, |a, &n| a.saturating_add(n)),
                exits: cpu_exits(c)
                    .enumerate()
                    .filter(|(i, (_, n))| *i < ExitKind::ALL.len() || *n != 0)
                    .map(|(_, kv)| kv)
                    .collect(),
            })
            .collect(),
        vm_count: list.map(|l| l.total),
        vms: list.map(|l| {
            vms(l)
                .iter()
                .map(|vm| JsonVm {
                    id: vm.vm_id,
                    pid: vm.pid,
                    command: comm_text(&vm.comm),
                    state: vm_state_name(vm.state),
                    vcpus: vm.vcpu_count,
                    memory_bytes: vm.memory_bytes,
                    exits_total: vm_exits_total(&vm.exits),
                    exits: vm_exits(&vm.exits)
                        .iter()
                        .map(|&(k, n)| (k.to_owned(), n))
                        .collect(),
                })
                .collect()
        }),
        last_error: last_error(st).map(|(code, cpu)| JsonError {
            code,
            name: known(code).map(error_name),
            message: code_message(code),
            advice: known(code).map(StartError::advice),
            cpu,
        }),
        fault: fault_present(&st.last_fault).then(|| {
            let f = &st.last_fault;
            JsonFault {
                code: f.code,
                name: known(f.code).map(error_name),
                message: code_message(f.code),
                vector: (f.vector != u32::MAX).then_some(f.vector),
                vector_name: vector_name(f.vector),
                error_code: f.error_code,
                rip: f.rip,
                cr2: f.cr2,
                cpl: f.cpl,
                detail: f.detail,
            }
        }),
    };
    // Serializing these plain structs cannot fail.
    serde_json::to_string_pretty(&json).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

const _: () = assert!(ExitKind::ALL.len() <= EXIT_KINDS_MAX);

#[cfg(test)]
pub mod tests {
    use super::*;
    use microv_abi::hypercall::ABI_VERSION;
    use microv_abi::launch::FaultRecord;

    /// A running MicroV on two CPUs (OS CPUs 0 and 2).
    pub fn running() -> HvStatus {
        let mut st = HvStatus::zeroed();
        st.state = hv_state::RUNNING;
        st.start_mode = StartMode::LateLaunch as u32;
        st.abi_version = ABI_VERSION;
        st.capabilities = capability::LATE_LAUNCH | capability::AMD_SVM;
        st.cpu_count = 2;
        st.chunk_count = 32;
        st.pool_bytes = 64 << 20;
        st.pool_free_bytes = (57 << 20) + (1 << 19);
        st.pool_first_pa = 0x1_2340_0000;
        st.uptime_ns = 3_723_000_000_000; // 1h 02m 03s
        st.last_error_cpu = u32::MAX;
        st.cpus[0].os_cpu = 0;
        st.cpus[0].state = cpu_state::RUNNING;
        st.cpus[0].exits[ExitKind::Cpuid as usize] = 1200;
        st.cpus[0].exits[ExitKind::MsrRead as usize] = 300;
        st.cpus[0].exits[ExitKind::Xsetbv as usize] = 3;
        st.cpus[1].os_cpu = 2;
        st.cpus[1].state = cpu_state::RUNNING;
        st.cpus[1].exits[ExitKind::Cpuid as usize] = 800;
        st.cpus[1].exits[ExitKind::Hypercall as usize] = 77;
        st
    }

    /// Stopped on its own after the extension page-faulted on OS CPU 2.
    pub fn failed() -> HvStatus {
        let mut st = running();
        st.state = hv_state::FAILED;
        st.uptime_ns = 0;
        st.last_error_code = StartError::ExtensionFault as u32;
        st.last_error_cpu = 2;
        st.cpus[1].state = cpu_state::FAILED;
        st.last_fault = FaultRecord {
            code: StartError::ExtensionFault as u32,
            vector: 14,
            error_code: 4,
            rip: 0x4000_1234,
            cr2: 0,
            cpl: 3,
            detail: 0,
        };
        st
    }

    #[test]
    fn running_status_reads_well() {
        let text = status_text(&running(), None);
        let expected = "\
state          running
started        late launch (beneath the running OS)
uptime         1h 02m 03s
abi version    1.0
capabilities   late_launch, amd_svm (0x101)
memory         64 MiB pool, 57.5 MiB free (32 chunks of 2 MiB)
cpus           2

 cpu  state         exits  by kind
   0  running        1503  cpuid 1200, rdmsr 300, xsetbv 3
   2  running         877  cpuid 800, vmmcall 77
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn failed_status_shows_the_fault() {
        let text = status_text(&failed(), None);
        assert!(text.starts_with("state          failed\n"), "{text}");
        assert!(!text.contains("uptime"));
        assert!(text.contains(
            "\nlast error     on CPU 2: the extension (host ring 3) faulted; MicroV stopped (code 10)\n\
             fault          #PF (vector 14), error code 0x4, rip 0x40001234, cr2 0x0, cpl 3 (extension)\n\
             hint           this is a MicroV bug: report the fault record from `microv status` and `microv log`\n"
        ), "\n{text}");
        assert!(text.contains("   2  failed          877"), "\n{text}");

        let mut st = failed();
        st.last_fault.vector = u32::MAX;
        st.last_fault.detail = 0x99;
        st.last_fault.cpl = 0;
        st.last_fault.code = 4242;
        st.last_error_code = 0;
        st.last_error_cpu = u32::MAX;
        let text = status_text(&st, None);
        assert!(
            text.contains("last error     error code 4242 (unknown to this microv) (code 4242)"),
            "{text}"
        );
        assert!(text.contains("fault          not an exception (code 4242), detail 0x99, rip 0x40001234, cr2 0x0, cpl 0 (microkernel)"), "{text}");
        assert!(!text.contains("hint"));
    }

    #[test]
    fn stopped_status_is_short() {
        let mut st = HvStatus::zeroed();
        st.abi_version = ABI_VERSION;
        st.last_error_cpu = u32::MAX;
        assert_eq!(
            status_text(&st, None),
            "state          stopped\nstarted        -\nabi version    1.0\ncapabilities   none\n\
             memory         none\ncpus           0\n"
        );
        let v: serde_json::Value = serde_json::from_str(&status_json(&st, None)).unwrap();
        assert_eq!(v["state"], "stopped");
        assert!(v["start_mode"].is_null());
        assert_eq!(v["cpus"], serde_json::json!([]));
        assert!(v["last_error"].is_null() && v["fault"].is_null());
        // The driver leaves the version at 0 when MicroV is not running.
        st.abi_version = 0;
        assert!(status_text(&st, None).contains("\nabi version    -\n"));
    }

    #[test]
    fn json_status_has_the_documented_fields() {
        let v: serde_json::Value = serde_json::from_str(&status_json(&running(), None)).unwrap();
        assert_eq!(v["state"], "running");
        assert_eq!(v["start_mode"], "late_launch");
        assert_eq!(v["abi_version"], "1.0");
        assert_eq!(v["abi_version_raw"], ABI_VERSION);
        assert_eq!(
            v["capabilities"],
            serde_json::json!(["late_launch", "amd_svm"])
        );
        assert_eq!(v["capabilities_raw"], 0x101);
        assert_eq!(v["uptime_ns"], 3_723_000_000_000u64);
        assert_eq!(
            v["pool"],
            serde_json::json!({"bytes": 64 << 20, "free_bytes": (57 << 20) + (1 << 19),
                "chunks": 32, "chunk_bytes": 2 << 20, "first_pa": 0x1_2340_0000u64})
        );
        assert_eq!(v["cpu_count"], 2);
        let cpus = v["cpus"].as_array().unwrap();
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[1]["os_cpu"], 2);
        assert_eq!(cpus[1]["state"], "running");
        assert_eq!(cpus[1]["exits_total"], 877);
        assert_eq!(cpus[1]["exits"]["vmmcall"], 77);
        assert_eq!(cpus[1]["exits"]["npf"], 0);
        let kinds = cpus[0]["exits"].as_object().unwrap();
        assert_eq!(kinds.len(), ExitKind::ALL.len(), "every kind, zero or not");
        assert!(v["last_error"].is_null() && v["fault"].is_null());

        let v: serde_json::Value = serde_json::from_str(&status_json(&failed(), None)).unwrap();
        assert_eq!(v["state"], "failed");
        assert_eq!(v["last_error"]["code"], 10);
        assert_eq!(v["last_error"]["name"], "extension_fault");
        assert_eq!(v["last_error"]["cpu"], 2);
        assert!(v["last_error"]["advice"]
            .as_str()
            .unwrap()
            .contains("MicroV bug"));
        assert_eq!(v["fault"]["vector"], 14);
        assert_eq!(v["fault"]["vector_name"], "#PF");
        assert_eq!(v["fault"]["rip"], 0x4000_1234);
        assert_eq!(v["fault"]["cpl"], 3);
        assert_eq!(v["cpus"][1]["state"], "failed");
    }

    #[test]
    fn odd_values_do_not_break_rendering() {
        let mut st = running();
        st.state = 7;
        st.start_mode = 9;
        st.capabilities |= 1 << 20 | capability::TEST_HOOKS;
        st.cpu_count = 1000; // more than MAX_CPUS
        st.cpus[0].exits[EXIT_KINDS_MAX - 1] = 5;
        st.cpus[0].exits[1] = u64::MAX;
        let text = status_text(&st, None);
        assert!(text.contains("state          unknown(7)"));
        assert!(text.contains("bit20, test_hooks"));
        assert!(text.contains("kind15 5"));
        assert_eq!(
            text.lines().filter(|l| l.contains("native")).count(),
            MAX_CPUS - 2
        );
        let v: serde_json::Value = serde_json::from_str(&status_json(&st, None)).unwrap();
        assert_eq!(v["cpus"].as_array().unwrap().len(), MAX_CPUS);
        assert_eq!(v["cpus"][0]["exits"]["kind15"], 5);
        assert_eq!(v["cpus"][0]["exits_total"], u64::MAX);
    }

    /// Two VMs: a live one that ran, and a zombie with an odd name.
    pub fn two_vms() -> VmList {
        let mut l = VmList::zeroed();
        l.count = 2;
        l.total = 2;
        let a = &mut l.vms[0];
        a.vm_id = 0;
        a.pid = 4242;
        a.comm[..11].copy_from_slice(b"mv-vm-smoke");
        a.vcpu_count = 1;
        a.state = vm_state::LIVE;
        a.memory_bytes = (1 << 20) + (64 << 10);
        a.exits.io = 4;
        a.exits.mmio = 1;
        a.exits.hlt = 1;
        a.exits.interrupted = 20;
        let b = &mut l.vms[1];
        b.vm_id = 3;
        b.pid = 77;
        b.comm[..7].copy_from_slice(b"ev\x1b[2Jl");
        b.vcpu_count = 2;
        b.state = vm_state::ZOMBIE;
        b.memory_bytes = 256 << 20;
        l
    }

    #[test]
    fn vms_are_listed_after_the_cpus() {
        let text = status_text(&running(), Some(&two_vms()));
        let expected = "\
state          running
started        late launch (beneath the running OS)
uptime         1h 02m 03s
abi version    1.0
capabilities   late_launch, amd_svm (0x101)
memory         64 MiB pool, 57.5 MiB free (32 chunks of 2 MiB)
cpus           2
vms            2

 cpu  state         exits  by kind
   0  running        1503  cpuid 1200, rdmsr 300, xsetbv 3
   2  running         877  cpuid 800, vmmcall 77

  vm      pid  command          state    vcpus     memory      exits  by kind
   0     4242  mv-vm-smoke      live         1    1.1 MiB         26  io 4, mmio 1, hlt 1, interrupted 20
   3       77  ev?[2Jl          zombie       2    256 MiB          0  -
";
        assert_eq!(text, expected, "\n{text}");

        // None running: the count only; a driver without the list: nothing.
        let mut none = VmList::zeroed();
        let text = status_text(&running(), Some(&none));
        assert!(text.contains("\nvms            0\n"), "{text}");
        assert!(!text.contains("  vm  "), "{text}");
        assert!(!status_text(&running(), None).contains("vms"));
        // Stopped: shown only while the driver still holds VMs.
        let stopped = HvStatus::zeroed();
        assert!(!status_text(&stopped, Some(&none)).contains("vms"));
        none.total = 1;
        none.count = 1;
        none.vms[0].state = vm_state::ORPHANED;
        none.vms[0].comm[0] = b'x';
        let text = status_text(&stopped, Some(&none));
        assert!(text.contains("\nvms            1\n"), "{text}");
        assert!(text.contains("  x                orphaned "), "{text}");
    }

    #[test]
    fn vms_in_json_and_odd_lists() {
        let v: serde_json::Value =
            serde_json::from_str(&status_json(&running(), Some(&two_vms()))).unwrap();
        assert_eq!(v["vm_count"], 2);
        let vms = v["vms"].as_array().unwrap();
        assert_eq!(vms.len(), 2);
        assert_eq!(
            vms[0],
            serde_json::json!({"id": 0, "pid": 4242, "command": "mv-vm-smoke",
                "state": "live", "vcpus": 1, "memory_bytes": (1 << 20) + (64 << 10),
                "exits_total": 26, "exits": {"io": 4, "mmio": 1, "hlt": 1,
                "interrupted": 20, "shutdown": 0, "other": 0}})
        );
        assert_eq!(vms[1]["state"], "zombie");
        assert_eq!(vms[1]["command"], "ev?[2Jl");
        // Without the list: null, not an empty list.
        let v: serde_json::Value = serde_json::from_str(&status_json(&running(), None)).unwrap();
        assert!(v["vm_count"].is_null() && v["vms"].is_null());

        // More VMs than fit, a count beyond the array, odd states and
        // saturating totals.
        let mut l = two_vms();
        l.count = 1000;
        l.total = 70;
        l.vms[0].state = 9;
        l.vms[0].exits.other = u64::MAX;
        l.vms[1].comm = [b'a'; 16];
        let text = status_text(&running(), Some(&l));
        assert!(text.contains("\nvms            70 (64 listed)\n"), "{text}");
        assert!(text.contains(" unknown(9) "), "{text}");
        assert!(text.contains(&format!(" {}  ", u64::MAX)), "{text}");
        assert!(text.contains(&"a".repeat(16)), "no NUL: all 16 bytes");
        let v: serde_json::Value =
            serde_json::from_str(&status_json(&running(), Some(&l))).unwrap();
        assert_eq!(v["vms"].as_array().unwrap().len(), VM_LIST_MAX);
        assert_eq!(v["vm_count"], 70);
    }

    #[test]
    fn command_names_are_made_safe() {
        assert_eq!(comm_text(b"sh\0junk"), "sh");
        assert_eq!(comm_text(b"a b\tc\xff"), "a b?c?");
        assert_eq!(comm_text(b""), "");
    }

    #[test]
    fn uptime_formats() {
        assert_eq!(uptime_text(0), "0.0s");
        assert_eq!(uptime_text(12_345_000_000), "12.3s");
        assert_eq!(uptime_text(185_000_000_000), "3m 05s");
        assert_eq!(uptime_text(3_723_000_000_000), "1h 02m 03s");
        assert_eq!(uptime_text(183_845_000_000_000), "2d 03h 04m 05s");
    }

    #[test]
    fn error_names_are_snake_case() {
        assert_eq!(error_name(StartError::ExtensionFault), "extension_fault");
        assert_eq!(error_name(StartError::NoDevice), "no_device");
        assert_eq!(error_name(StartError::SvmUnsupported), "svm_unsupported");
        assert_eq!(
            error_name(StartError::PageTableIsolation),
            "page_table_isolation"
        );
    }
}
