//! Keeps `docs/hypercall-abi.md` and `docs/syscalls.md` true to this crate:
//! every hypercall (name, RAX value, caller, implemented or reserved), status
//! code, capability bit, test-fault kind, syscall, syscall status, upcall and
//! address-layout constant must appear in the documents, spelled the way they
//! say they spell them. Adding something to the ABI without documenting it
//! fails here.

use crate::hypercall::{self, capability, test_fault, Caller, Decoded, Hypercall, Status};
use crate::launch;
use crate::syscall::{self, vs_layout, SysStatus, Syscall, Upcall};

const HYPERCALL_DOC: &str = include_str!("../../docs/hypercall-abi.md");
const SYSCALL_DOC: &str = include_str!("../../docs/syscalls.md");

/// The trimmed cells of every Markdown table row in `doc`.
fn rows(doc: &str) -> Vec<Vec<&str>> {
    doc.lines()
        .map(str::trim)
        .filter(|l| l.len() >= 2 && l.starts_with('|') && l.ends_with('|'))
        .map(|l| l[1..l.len() - 1].split('|').map(str::trim).collect())
        .collect()
}

/// The canonical spelling of a hypercall's RAX value: `0x764D000000010000`.
fn rax(call: Hypercall) -> String {
    format!("0x{:016X}", hypercall::encode(call))
}

/// Hex digits of `v` in groups of four, as the code writes them.
fn grouped(v: u64, min_digits: usize) -> String {
    let digits = format!("{v:0min_digits$x}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 4 == 0 {
            out.push('_');
        }
        out.push(c);
    }
    format!("0x{out}")
}

/// An address or 64-bit value as the documents write it: `0x0000_2000_0000_0000`.
fn addr(v: u64) -> String {
    grouped(v, 16)
}

/// A size or stride as the documents write it: `0x2000`, `0x10_0000`.
fn short(v: u64) -> String {
    grouped(v, 1)
}

fn code(name: &str) -> String {
    format!("`{name}`")
}

/// The one table row whose first cell is `first`.
fn row_starting<'a>(table: &[Vec<&'a str>], first: &str) -> Vec<Vec<&'a str>> {
    table
        .iter()
        .filter(|r| r.first() == Some(&first))
        .cloned()
        .collect()
}

/// Asserts that a table row starts with the cells `number` and `` `name` ``.
fn assert_numbered_row(doc: &str, what: &str, number: u64, name: &str) {
    let table = rows(doc);
    let wanted = code(name);
    assert!(
        table
            .iter()
            .any(|r| r.len() >= 2 && r[0] == number.to_string() && r[1] == wanted),
        "{what} {name} = {number} has no table row `| {number} | {wanted} | … |`"
    );
}

#[test]
fn formatting_helpers() {
    assert_eq!(rax(Hypercall::HandleOpen), "0x764D000000010000");
    assert_eq!(addr(vs_layout::WINDOW), "0x0000_2000_0000_0000");
    assert_eq!(short(0x2000), "0x2000");
    assert_eq!(short(0x10_0000), "0x10_0000");
}

#[test]
fn every_hypercall_has_one_row_with_its_value_name_caller_and_status() {
    let table = rows(HYPERCALL_DOC);
    for &call in Hypercall::ALL {
        let value = rax(call);
        let found = row_starting(&table, &code(&value));
        assert_eq!(
            found.len(),
            1,
            "{}: docs/hypercall-abi.md needs exactly one table row starting with `{value}`",
            call.name()
        );
        let r = &found[0];
        assert!(
            r.len() >= 7,
            "{}: the row needs 7 columns: {r:?}",
            call.name()
        );
        assert_eq!(r[1], code(call.name()), "{value}: wrong name in {r:?}");
        let caller = match call.caller() {
            Caller::Anyone => "anyone",
            Caller::RootKernel => "root kernel",
        };
        assert_eq!(r[2], caller, "{}: wrong caller in {r:?}", call.name());
        let status = r[r.len() - 1];
        if call.implemented() {
            assert!(
                status.starts_with("implemented"),
                "{} is implemented; its row says {status:?}",
                call.name()
            );
        } else {
            assert!(
                status.starts_with("reserved") && status.contains("`NotImplemented`"),
                "{} is reserved; its row must say `reserved — returns `NotImplemented`…`, not {status:?}",
                call.name()
            );
        }
    }
}

#[test]
fn every_hypercall_value_in_the_doc_is_a_real_call_spelled_canonically() {
    let lower = HYPERCALL_DOC.to_ascii_lowercase();
    let mut seen = 0;
    for (at, _) in lower.match_indices("0x764d") {
        let digits: String = lower[at + 2..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        if digits.len() == 4 {
            continue; // the signature itself
        }
        let text = &HYPERCALL_DOC[at..at + 2 + digits.len()];
        assert_eq!(
            digits.len(),
            16,
            "{text}: a hypercall value has 16 hex digits"
        );
        let value = u64::from_str_radix(&digits, 16).expect("hex digits");
        let Decoded::Call(call) = hypercall::decode(value) else {
            panic!("{text} in docs/hypercall-abi.md is not a hypercall this crate defines");
        };
        assert_eq!(text, rax(call), "spell {} as {}", call.name(), rax(call));
        seen += 1;
    }
    assert!(seen >= Hypercall::ALL.len());
}

#[test]
fn every_status_is_in_the_status_table() {
    for &s in Status::ALL {
        assert_numbered_row(HYPERCALL_DOC, "status", s.as_u64(), &format!("{s:?}"));
    }
}

#[test]
fn version_signature_capabilities_and_test_fault_kinds_are_documented() {
    assert!(HYPERCALL_DOC.contains(&addr(hypercall::ABI_VERSION)));
    assert!(HYPERCALL_DOC.contains(&format!(
        "major {}, minor {}",
        hypercall::abi_major(hypercall::ABI_VERSION),
        hypercall::ABI_VERSION as u32
    )));
    assert!(HYPERCALL_DOC.contains(&format!("`0x{:04X}`", hypercall::SIGNATURE)));
    let table = rows(HYPERCALL_DOC);
    for (name, value) in [
        ("LATE_LAUNCH", capability::LATE_LAUNCH),
        ("EARLY_BOOT", capability::EARLY_BOOT),
        ("AMD_SVM", capability::AMD_SVM),
        ("INTEL_VMX", capability::INTEL_VMX),
        ("TEST_HOOKS", capability::TEST_HOOKS),
    ] {
        let bit = value.trailing_zeros().to_string();
        assert!(
            table.iter().any(|r| r.len() >= 3
                && r[0] == bit
                && r[1] == code(&addr(value))
                && r[2] == code(name)),
            "capability {name}: no row `| {bit} | `{}` | `{name}` | … |`",
            addr(value)
        );
    }
    for (name, value) in [
        ("EXTENSION_PAGE_FAULT", test_fault::EXTENSION_PAGE_FAULT),
        (
            "EXTENSION_INVALID_OPCODE",
            test_fault::EXTENSION_INVALID_OPCODE,
        ),
    ] {
        assert_numbered_row(HYPERCALL_DOC, "test-fault kind", value, name);
    }
}

#[test]
fn every_syscall_status_and_upcall_is_in_syscalls_md() {
    for &s in Syscall::ALL {
        let name = format!("{s:?}");
        assert_numbered_row(SYSCALL_DOC, "syscall", s as u64, &name);
        let heading = format!("### {} `{name}`", s as u64);
        assert!(
            SYSCALL_DOC.lines().any(|l| l.trim() == heading),
            "docs/syscalls.md needs a section `{heading}`"
        );
    }
    for &s in SysStatus::ALL {
        assert_numbered_row(SYSCALL_DOC, "syscall status", s as u64, &format!("{s:?}"));
    }
    for &u in Upcall::ALL {
        assert_numbered_row(SYSCALL_DOC, "upcall", u as u64, &format!("{u:?}"));
    }
}

#[test]
fn the_extension_address_layout_is_in_syscalls_md() {
    for (name, value) in [
        ("EXTENSION_BOOT_INFO", syscall::EXTENSION_BOOT_INFO),
        ("EXTENSION_BASE", launch::EXTENSION_BASE),
        ("EXTENSION_HEAP", launch::EXTENSION_HEAP),
        ("vs_layout::WINDOW", vs_layout::WINDOW),
        ("EXTENSION_STACKS", launch::EXTENSION_STACKS),
        ("POOL_VA", launch::POOL_VA),
    ] {
        assert!(
            SYSCALL_DOC.contains(&code(&addr(value))),
            "docs/syscalls.md must give {name} as `{}`",
            addr(value)
        );
    }
    for (name, value) in [
        ("vs_layout::STRIDE", vs_layout::STRIDE),
        ("EXTENSION_STACK_STRIDE", launch::EXTENSION_STACK_STRIDE),
        ("EXTENSION_STACK_SIZE", launch::EXTENSION_STACK_SIZE),
        (
            "register page offset",
            vs_layout::gprs(0) - vs_layout::vmcb(0),
        ),
    ] {
        assert!(
            SYSCALL_DOC.contains(&code(&short(value))),
            "docs/syscalls.md must give {name} as `{}`",
            short(value)
        );
    }
    assert!(SYSCALL_DOC.contains(&format!("{} states", vs_layout::MAX_VS)));
    assert!(SYSCALL_DOC.contains(&format!("{} KiB stack", launch::EXTENSION_STACK_SIZE >> 10)));
}
