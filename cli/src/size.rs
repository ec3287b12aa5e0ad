//! Byte sizes as people type them (`64M`, `1G`, `512MiB`, `2097152`) and
//! the pool-size rules checked before the driver is asked.

use microv_abi::launch::{CHUNK_SIZE, MAX_CHUNKS};

use crate::error::CliError;

const MIB: u64 = 1 << 20;

/// Parses a size: a decimal number with an optional binary suffix `K`, `M`,
/// `G` or `T` (any case, optionally followed by `iB` or `B`; all mean powers
/// of 1024). No suffix means bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (number, suffix) = t.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "'{text}' is not a size (examples: 64M, 1G, 134217728)"
        ));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is too large"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "'{text}' has an unknown unit '{suffix}' (use K, M, G or T, e.g. 64M)"
            ))
        }
    };
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Formats a byte count in MiB: `64 MiB`, `57.5 MiB`.
pub fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

/// Largest pool the driver accepts.
pub const MAX_POOL_SIZE: u64 = MAX_CHUNKS as u64 * CHUNK_SIZE;

/// Checks a pool size against the chunk rules.
pub fn check_pool_size(size: u64) -> Result<(), CliError> {
    if size == 0 {
        return Err(CliError::usage(
            "the pool size must be at least 2 MiB",
            format!(
                "the default is {}",
                mib(microv_abi::launch::DEFAULT_POOL_SIZE)
            ),
        ));
    }
    if size > MAX_POOL_SIZE {
        return Err(CliError::usage(
            format!(
                "the pool size must be at most {} (got {})",
                mib(MAX_POOL_SIZE),
                mib(size)
            ),
            format!("use --pool-size {}M or less", MAX_POOL_SIZE / MIB),
        ));
    }
    if !size.is_multiple_of(CHUNK_SIZE) {
        let up = size.next_multiple_of(CHUNK_SIZE);
        return Err(CliError::usage(
            format!(
                "the pool size must be a multiple of 2 MiB (got {})",
                mib(size)
            ),
            format!("try --pool-size {}M", up / MIB),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2048K"), Ok(2 << 20));
        assert_eq!(parse_size("2097152"), Ok(2 << 20));
        assert_eq!(parse_size("2097152B"), Ok(2 << 20));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size(" 8M "), Ok(8 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "M", "-1M", "1.5G", "64X", "64 M", "0x100", "64MiBs"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(parse_size("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("17179869184G")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("64X").unwrap_err().contains("unknown unit 'X'"));
    }

    #[test]
    fn mib_formats() {
        assert_eq!(mib(64 << 20), "64 MiB");
        assert_eq!(mib(0), "0 MiB");
        assert_eq!(mib((57 << 20) + (1 << 19)), "57.5 MiB");
    }

    #[test]
    fn pool_sizes_are_checked() {
        assert!(check_pool_size(2 << 20).is_ok());
        assert!(check_pool_size(64 << 20).is_ok());
        assert!(check_pool_size(MAX_POOL_SIZE).is_ok());
        let e = check_pool_size(65 << 20).unwrap_err().render();
        assert_eq!(
            e,
            "microv: the pool size must be a multiple of 2 MiB (got 65 MiB)\nhint: try --pool-size 66M\n"
        );
        let e = check_pool_size(1 << 30).unwrap_err().render();
        assert!(
            e.starts_with("microv: the pool size must be at most 512 MiB (got 1024 MiB)\n"),
            "{e}"
        );
        assert!(check_pool_size(0).is_err());
        assert!(check_pool_size(MAX_POOL_SIZE + CHUNK_SIZE).is_err());
        assert!(check_pool_size(4096).is_err());
    }
}
