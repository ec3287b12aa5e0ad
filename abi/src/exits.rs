//! Kinds of VM exit MicroV counts per physical CPU (`pp.exit_count`, `microv status`).

macro_rules! exit_kinds {
    ($( $variant:ident = $value:literal : $name:literal ),* $(,)?) => {
        /// A class of VM exit.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum ExitKind {
            $( #[doc = $name] $variant = $value, )*
        }
        impl ExitKind {
            /// All kinds, in numbering order (the index into count arrays).
            pub const ALL: &'static [ExitKind] = &[$( ExitKind::$variant, )*];
            /// Short name used in `microv status`.
            pub const fn name(self) -> &'static str {
                match self { $( ExitKind::$variant => $name, )* }
            }
            /// Reads a kind from its number.
            pub const fn from_u32(v: u32) -> Option<ExitKind> {
                match v { $( $value => Some(ExitKind::$variant), )* _ => None }
            }
        }
    };
}

exit_kinds! {
    Cpuid = 0 : "cpuid",
    MsrRead = 1 : "rdmsr",
    MsrWrite = 2 : "wrmsr",
    Hypercall = 3 : "vmmcall",
    NestedPageFault = 4 : "npf",
    SvmInstruction = 5 : "svm_insn",
    Init = 6 : "init",
    Shutdown = 7 : "shutdown",
    Xsetbv = 8 : "xsetbv",
    Other = 9 : "other",
    Io = 10 : "io",
    ApicWrite = 11 : "apic",
}

/// Length of per-CPU exit-count arrays (room to grow without an ABI break).
pub const EXIT_KINDS_MAX: usize = 16;
const _: () = assert!(ExitKind::ALL.len() <= EXIT_KINDS_MAX);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_numbered_by_position() {
        for (i, &k) in ExitKind::ALL.iter().enumerate() {
            assert_eq!(k as usize, i);
            assert_eq!(ExitKind::from_u32(i as u32), Some(k));
        }
        assert_eq!(ExitKind::from_u32(EXIT_KINDS_MAX as u32), None);
    }

    #[test]
    fn names_are_short_unique_identifiers() {
        for (i, a) in ExitKind::ALL.iter().enumerate() {
            assert!(
                a.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{a:?}"
            );
            assert!(ExitKind::ALL
                .iter()
                .skip(i + 1)
                .all(|b| b.name() != a.name()));
        }
        assert_eq!(ExitKind::Hypercall.name(), "vmmcall");
    }
}
