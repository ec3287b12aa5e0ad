//! The firmware's boot entries, for `boot = next`: which `Boot####`
//! options follow the one that started microv.efi (`BootOrder`,
//! `BootCurrent`), and what a load option holds (UEFI 2.10, 3.1.3
//! `EFI_LOAD_OPTION`). microv.efi starts the next entry itself rather than
//! returning to the firmware: it must stay loaded, since its
//! ExitBootServices wrapper brings the other CPUs into MicroV when that
//! entry's OS exits boot services.

use alloc::string::String;
use alloc::vec::Vec;

/// `LOAD_OPTION_ACTIVE`: the boot manager may boot this option.
const ACTIVE: u32 = 1;

/// A `Boot####` variable's contents.
#[derive(Debug, PartialEq, Eq)]
pub struct LoadOption<'a> {
    pub active: bool,
    pub description: String,
    /// The device path list (the first path is what to load).
    pub device_path: &'a [u8],
    /// What the loaded image gets as its load options.
    pub optional_data: &'a [u8],
}

/// Parses an `EFI_LOAD_OPTION`; `None` if it is cut short.
pub fn parse(bytes: &[u8]) -> Option<LoadOption<'_>> {
    let attributes = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    let path_len = usize::from(u16::from_le_bytes(bytes.get(4..6)?.try_into().ok()?));
    let mut units = Vec::new();
    let mut at = 6;
    loop {
        let unit = u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?);
        at += 2;
        if unit == 0 {
            break;
        }
        units.push(unit);
    }
    let device_path = bytes.get(at..at.checked_add(path_len)?)?;
    let optional_data = bytes.get(at + path_len..)?;
    Some(LoadOption {
        active: attributes & ACTIVE != 0,
        description: String::from_utf16_lossy(&units),
        device_path,
        optional_data,
    })
}

/// `BootOrder`'s option numbers.
pub fn order(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c.first().copied().unwrap_or(0), c.get(1).copied().unwrap_or(0)]))
        .collect()
}

/// The options to try after `current` (the one that started microv.efi):
/// those after it in `order`; all but it if it is not listed.
pub fn after_current(order: &[u16], current: Option<u16>) -> Vec<u16> {
    match current.and_then(|c| order.iter().position(|&o| o == c)) {
        Some(i) => order.iter().skip(i + 1).copied().collect(),
        None => order.iter().copied().filter(|&o| Some(o) != current).collect(),
    }
}

/// The variable that holds option `n`: `Boot0003`.
pub fn variable(n: u16) -> String {
    alloc::format!("Boot{n:04X}")
}

/// Device path node types: media (hard drive is its subtype 1), and the
/// end of the path.
const MEDIA: u8 = 0x04;
const HARD_DRIVE: u8 = 0x01;
const END: u8 = 0x7f;
/// The node that ends a whole device path.
const END_NODE: [u8; 4] = [0x7f, 0xff, 0x04, 0x00];

/// A device path's nodes, up to its first end node; `None` if a node's
/// length runs past the bytes.
pub fn nodes(path: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let header = path.get(at..at + 4)?;
        let len = usize::from(u16::from_le_bytes([*header.get(2)?, *header.get(3)?]));
        if len < 4 {
            return None;
        }
        if header.first() == Some(&END) {
            return Some(out);
        }
        out.push(path.get(at..at + len)?);
        at += len;
    }
}

/// A short-form path (`HD(…)/File(…)`, as `efibootmgr` writes them) made
/// whole with the path of the partition that has the same hard-drive node
/// (the firmware's boot manager does this; LoadImage does not). `None` if
/// the path is not short-form or no partition matches; `partitions` are
/// the device paths of the volumes the firmware has.
pub fn expand(short: &[u8], partitions: &[&[u8]]) -> Option<Vec<u8>> {
    let short = nodes(short)?;
    let (first, rest) = short.split_first()?;
    if first.get(..2) != Some(&[MEDIA, HARD_DRIVE][..]) {
        return None;
    }
    partitions.iter().find_map(|p| {
        let full = nodes(p)?;
        let upto = full.iter().position(|n| n == first)?;
        let mut out = Vec::new();
        for node in full.iter().take(upto + 1).chain(rest) {
            out.extend_from_slice(node);
        }
        out.extend_from_slice(&END_NODE);
        Some(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(attributes: u32, description: &str, path: &[u8], data: &[u8]) -> Vec<u8> {
        let mut v = attributes.to_le_bytes().to_vec();
        v.extend_from_slice(&(path.len() as u16).to_le_bytes());
        for u in description.encode_utf16().chain([0]) {
            v.extend_from_slice(&u.to_le_bytes());
        }
        v.extend_from_slice(path);
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn a_load_option_gives_its_parts() {
        let path = [4, 4, 8, 0, 0x5c, 0, 0x7f, 0xff, 4, 0];
        let bytes = option(1, "Debian", &path, b"r\0o\0");
        let o = parse(&bytes).unwrap();
        assert!(o.active);
        assert_eq!(o.description, "Debian");
        assert_eq!(o.device_path, path);
        assert_eq!(o.optional_data, b"r\0o\0");
        let inactive = option(0, "", &path, &[]);
        let o = parse(&inactive).unwrap();
        assert!(!o.active);
        assert_eq!(o.description, "");
        assert!(o.optional_data.is_empty());
    }

    #[test]
    fn a_short_load_option_is_none() {
        let bytes = option(1, "Shell", &[1, 2, 3, 4], &[]);
        for cut in [0, 3, 5, 8, bytes.len() - 1] {
            assert_eq!(parse(&bytes[..cut]), None, "cut at {cut}");
        }
        // No NUL after the description.
        assert_eq!(parse(&[1, 0, 0, 0, 0, 0, 0x41, 0]), None);
    }

    fn node(ty: u8, sub: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ty, sub];
        v.extend_from_slice(&((4 + body.len()) as u16).to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn short_form_paths_are_completed_with_their_partition() {
        let pci = node(1, 1, &[1, 2]);
        let sata = node(3, 18, &[0, 0, 0, 0, 0, 0]);
        let hd1 = node(4, 1, &[1; 38]);
        let hd2 = node(4, 1, &[2; 38]);
        let file = node(4, 4, &[b'\\', 0, 0, 0]);
        let end = END_NODE.to_vec();
        let short = [hd2.clone(), file.clone(), end.clone()].concat();
        let part1 = [pci.clone(), sata.clone(), hd1, end.clone()].concat();
        let part2 = [pci.clone(), sata.clone(), hd2.clone(), end.clone()].concat();
        assert_eq!(
            expand(&short, &[&part1, &part2]).unwrap(),
            [pci.clone(), sata.clone(), hd2, file.clone(), end.clone()].concat()
        );
        assert_eq!(expand(&short, &[&part1]), None, "no such partition");
        let full = [pci, file, end].concat();
        assert_eq!(expand(&full, &[&part2]), None, "not short-form");
        assert_eq!(nodes(&full).unwrap().len(), 2);
        assert_eq!(nodes(&full[..5]), None, "cut short");
        assert_eq!(nodes(&[1, 1, 2, 0]), None, "a node shorter than its header");
        assert_eq!(expand(&END_NODE, &[]), None, "empty");
    }

    #[test]
    fn the_next_entries_follow_the_current_one() {
        let o = order(&[2, 0, 1, 0, 4, 0, 3]);
        assert_eq!(o, [2, 1, 4], "an odd byte at the end is no entry");
        assert_eq!(after_current(&o, Some(1)), [4]);
        assert_eq!(after_current(&o, Some(2)), [1, 4]);
        assert_eq!(after_current(&o, Some(4)), Vec::<u16>::new());
        assert_eq!(after_current(&o, Some(9)), [2, 1, 4]);
        assert_eq!(after_current(&o, None), [2, 1, 4]);
        assert_eq!(variable(0x1a), "Boot001A");
    }
}
