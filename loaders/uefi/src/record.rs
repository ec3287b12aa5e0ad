//! The report microv.efi leaves for the OS: the lines it printed, as UTF-8
//! text in a volatile UEFI variable (boot-service and runtime access, gone
//! at the next reset). Linux shows it under efivarfs as
//! `/sys/firmware/efi/efivars/MicroVBoot-a3c96db2-04ba-470a-84da-534392210347`
//! (four attribute bytes, then the text). What happened to the other CPUs
//! when the OS exited boot services is in [`CPUS_VARIABLE`] if not all of
//! them came in.

use uefi::{guid, Guid};

/// The variable's name.
pub const VARIABLE: &str = "MicroVBoot";
/// The application processors' outcome, when not every CPU came into
/// MicroV: the ExitBootServices wrapper writes it after the firmware is
/// gone, and only a non-volatile variable can be set then (UEFI makes
/// volatile ones read-only at runtime). microv.efi deletes it at each boot,
/// so it is only there after a boot whose APs did not all come in.
pub const CPUS_VARIABLE: &str = "MicroVBootCpus";
/// MicroV's vendor GUID for its UEFI variables.
pub const VENDOR: Guid = guid!("a3c96db2-04ba-470a-84da-534392210347");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guid_is_the_one_the_docs_name() {
        assert_eq!(
            alloc::format!("{}-{VENDOR}", VARIABLE),
            "MicroVBoot-a3c96db2-04ba-470a-84da-534392210347"
        );
    }
}
