//! The ACPI tables microv.efi reads and changes: the CPUs the MADT lists,
//! and a copy of the MADT with a Multiprocessor Wakeup structure (ACPI 6.4,
//! 5.2.12.19), which tells the OS to start its application processors
//! through a mailbox instead of INIT–SIPI–SIPI (`docs/early-boot.md` says
//! why). Tables are byte slices here; the application finds them through
//! the firmware's configuration table and swaps the MADT's pointer in the
//! XSDT (and RSDT) once every CPU is in MicroV.

use alloc::vec::Vec;

/// The signature of the MADT ("Multiple APIC Description Table").
pub const MADT: [u8; 4] = *b"APIC";
/// Length of a system description table's header.
const HEADER: usize = 36;
/// Offset of a table's checksum byte in its header.
const CHECKSUM: usize = 9;
/// Offset of a table's length in its header.
const LENGTH: usize = 4;
/// The MADT's first structure (after the local APIC address and flags).
const MADT_ENTRIES: usize = HEADER + 8;

/// MADT structure types.
mod entry {
    pub const LOCAL_APIC: u8 = 0;
    pub const LOCAL_X2APIC: u8 = 9;
    pub const MP_WAKEUP: u8 = 0x10;
}
/// Local APIC flags: usable now, or can be brought online later.
const ENABLED: u32 = 1 << 0;
const ONLINE_CAPABLE: u32 = 1 << 1;
/// Length of the Multiprocessor Wakeup structure.
const MP_WAKEUP_LEN: u8 = 16;

/// The mailbox's fields (ACPI 6.4, table 5.44): the OS writes the APIC ID
/// and the wakeup vector, then the command; the woken CPU reads them and
/// acknowledges by clearing the command.
pub mod mailbox {
    /// Offset of the 16-bit command.
    pub const COMMAND: usize = 0;
    /// Offset of the 32-bit APIC ID.
    pub const APIC_ID: usize = 4;
    /// Offset of the 64-bit wakeup vector.
    pub const WAKEUP_VECTOR: usize = 8;
    /// The command to start a CPU at the wakeup vector.
    pub const WAKEUP: u16 = 1;
}

/// Why a table cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// Shorter than its header or its own length says.
    Truncated,
    /// Not the table expected here.
    Signature,
    /// A structure whose length runs past the table (at this offset).
    BadEntry(usize),
    /// The MADT already has a wakeup mailbox (another loader's).
    HasMailbox,
}

/// The root pointer's table addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rsdp {
    pub rsdt: u32,
    /// The XSDT, from ACPI 2.0 on.
    pub xsdt: Option<u64>,
}

/// Reads the root system description pointer.
pub fn rsdp(bytes: &[u8]) -> Result<Rsdp, AcpiError> {
    if bytes.get(..8) != Some(b"RSD PTR ") {
        return Err(AcpiError::Signature);
    }
    let revision = *bytes.get(15).ok_or(AcpiError::Truncated)?;
    let rsdt = u32_at(bytes, 16)?;
    let xsdt = if revision >= 2 {
        Some(u64_at(bytes, 24)?).filter(|&a| a != 0)
    } else {
        None
    };
    Ok(Rsdp { rsdt, xsdt })
}

/// A table's length from its header.
pub fn length(header: &[u8]) -> Result<usize, AcpiError> {
    let len = u32_at(header, LENGTH)? as usize;
    if len < HEADER {
        return Err(AcpiError::Truncated);
    }
    Ok(len)
}

/// The table addresses an XSDT (`width` 8) or RSDT (`width` 4) lists.
pub fn entries(sdt: &[u8], width: usize) -> Result<Vec<u64>, AcpiError> {
    let body = body(sdt)?;
    Ok(body
        .chunks_exact(width)
        .map(|c| c.iter().rev().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
        .collect())
}

/// Replaces the pointer `old` with `new` in an XSDT or RSDT and fixes its
/// checksum; false if `old` is not listed (or `new` does not fit).
pub fn replace_entry(sdt: &mut [u8], width: usize, old: u64, new: u64) -> Result<bool, AcpiError> {
    if width < 8 && new >> (8 * width) != 0 {
        return Ok(false);
    }
    let len = length(sdt)?;
    let body = sdt.get_mut(HEADER..len).ok_or(AcpiError::Truncated)?;
    let mut found = false;
    for chunk in body.chunks_exact_mut(width) {
        let value = chunk
            .iter()
            .rev()
            .fold(0u64, |a, &b| (a << 8) | u64::from(b));
        if value == old {
            for (i, byte) in chunk.iter_mut().enumerate() {
                *byte = (new >> (8 * i)) as u8;
            }
            found = true;
        }
    }
    if found {
        set_checksum(sdt)?;
    }
    Ok(found)
}

/// A processor the MADT lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    pub apic_id: u32,
    pub enabled: bool,
}

/// The processors the MADT lists (local APIC and local x2APIC structures).
pub fn cpus(madt: &[u8]) -> Result<Vec<Cpu>, AcpiError> {
    let mut cpus = Vec::new();
    for found in structures(madt)? {
        let (ty, at) = found?;
        let cpu = match ty {
            entry::LOCAL_APIC => Cpu {
                apic_id: u32::from(*madt.get(at + 3).ok_or(AcpiError::BadEntry(at))?),
                enabled: u32_at(madt, at + 4)? & ENABLED != 0,
            },
            entry::LOCAL_X2APIC => Cpu {
                apic_id: u32_at(madt, at + 4)?,
                enabled: u32_at(madt, at + 8)? & ENABLED != 0,
            },
            entry::MP_WAKEUP => return Err(AcpiError::HasMailbox),
            _ => continue,
        };
        cpus.push(cpu);
    }
    Ok(cpus)
}

/// A copy of the MADT with a Multiprocessor Wakeup structure naming the
/// mailbox at `mailbox` (4 KiB-aligned, reserved from the OS).
pub fn with_wakeup(madt: &[u8], mailbox: u64) -> Result<Vec<u8>, AcpiError> {
    cpus(madt)?;
    let len = length(madt)?;
    let mut out = madt.get(..len).ok_or(AcpiError::Truncated)?.to_vec();
    out.extend_from_slice(&[entry::MP_WAKEUP, MP_WAKEUP_LEN, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&mailbox.to_le_bytes());
    let new_len = u32::try_from(out.len()).map_err(|_| AcpiError::Truncated)?;
    out.get_mut(LENGTH..LENGTH + 4)
        .ok_or(AcpiError::Truncated)?
        .copy_from_slice(&new_len.to_le_bytes());
    set_checksum(&mut out)?;
    Ok(out)
}

/// Marks the processor `apic_id` neither enabled nor online-capable (the
/// OS will not start it) and fixes the checksum; false if not listed.
pub fn disable(madt: &mut [u8], apic_id: u32) -> Result<bool, AcpiError> {
    // Checked whole first, so nothing is changed in a broken table.
    for found in structures(madt)? {
        found?;
    }
    let mut found = false;
    let mut next = MADT_ENTRIES;
    let len = length(madt)?;
    while next < len {
        let at = next;
        let (Some(&ty), Some(&size)) = (madt.get(at), madt.get(at + 1)) else {
            break;
        };
        next = at + usize::from(size).max(2);
        let flags_at = match ty {
            entry::LOCAL_APIC if madt.get(at + 3).map(|&b| u32::from(b)) == Some(apic_id) => at + 4,
            entry::LOCAL_X2APIC if u32_at(madt, at + 4)? == apic_id => at + 8,
            _ => continue,
        };
        let flags = u32_at(madt, flags_at)? & !(ENABLED | ONLINE_CAPABLE);
        madt.get_mut(flags_at..flags_at + 4)
            .ok_or(AcpiError::BadEntry(at))?
            .copy_from_slice(&flags.to_le_bytes());
        found = true;
    }
    set_checksum(madt)?;
    Ok(found)
}

/// Makes the table's bytes sum to zero.
pub fn set_checksum(table: &mut [u8]) -> Result<(), AcpiError> {
    let len = length(table)?;
    let bytes = table.get_mut(..len).ok_or(AcpiError::Truncated)?;
    let slot = bytes.get_mut(CHECKSUM).ok_or(AcpiError::Truncated)?;
    *slot = 0;
    let sum = bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    if let Some(slot) = bytes.get_mut(CHECKSUM) {
        *slot = 0u8.wrapping_sub(sum);
    }
    Ok(())
}

/// The type and offset of each MADT structure, checked to lie inside
/// (an iterator: [`disable`] runs after boot services, when nothing can be
/// allocated).
fn structures(madt: &[u8]) -> Result<Structures<'_>, AcpiError> {
    if madt.get(..4) != Some(&MADT[..]) {
        return Err(AcpiError::Signature);
    }
    let len = length(madt)?;
    if madt.len() < len || len < MADT_ENTRIES {
        return Err(AcpiError::Truncated);
    }
    Ok(Structures { madt, len, at: MADT_ENTRIES })
}

struct Structures<'a> {
    madt: &'a [u8],
    len: usize,
    at: usize,
}

impl Iterator for Structures<'_> {
    type Item = Result<(u8, usize), AcpiError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.len {
            return None;
        }
        let at = self.at;
        let (Some(&ty), Some(&size)) = (self.madt.get(at), self.madt.get(at + 1)) else {
            self.at = self.len;
            return Some(Err(AcpiError::BadEntry(at)));
        };
        let size = usize::from(size);
        if size < 2 || at + size > self.len {
            self.at = self.len;
            return Some(Err(AcpiError::BadEntry(at)));
        }
        self.at += size;
        Some(Ok((ty, at)))
    }
}

/// A table's entries after its header.
fn body(sdt: &[u8]) -> Result<&[u8], AcpiError> {
    let len = length(sdt)?;
    sdt.get(HEADER..len).ok_or(AcpiError::Truncated)
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, AcpiError> {
    let b = bytes.get(at..at + 4).ok_or(AcpiError::Truncated)?;
    Ok(u32::from_le_bytes(
        b.try_into().map_err(|_| AcpiError::Truncated)?,
    ))
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64, AcpiError> {
    Ok(u64::from(u32_at(bytes, at)?) | (u64::from(u32_at(bytes, at + 4)?) << 32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(sig);
        t.extend_from_slice(&((HEADER + body.len()) as u32).to_le_bytes());
        t.extend_from_slice(&[1, 0]);
        t.extend_from_slice(b"MICROV");
        t.extend_from_slice(&[0; 20]);
        t.extend_from_slice(body);
        set_checksum(&mut t).unwrap();
        t
    }

    fn sum(t: &[u8]) -> u8 {
        t.iter().fold(0u8, |a, &b| a.wrapping_add(b))
    }

    /// A MADT with a local APIC (ID 0, enabled), an I/O APIC, a local APIC
    /// (ID 1, enabled), a local x2APIC (ID 0x100, disabled).
    fn madt() -> Vec<u8> {
        let mut body = vec![0x00, 0x00, 0xe0, 0xfe, 1, 0, 0, 0];
        body.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]);
        body.extend_from_slice(&[1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]);
        body.extend_from_slice(&[0, 8, 1, 1, 3, 0, 0, 0]);
        body.extend_from_slice(&[9, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0]);
        table(&MADT, &body)
    }

    #[test]
    fn the_madt_lists_local_apics_and_x2apics() {
        assert_eq!(
            cpus(&madt()).unwrap(),
            [
                Cpu {
                    apic_id: 0,
                    enabled: true
                },
                Cpu {
                    apic_id: 1,
                    enabled: true
                },
                Cpu {
                    apic_id: 0x100,
                    enabled: false
                },
            ]
        );
    }

    #[test]
    fn the_wakeup_structure_is_appended_with_a_valid_checksum() {
        let old = madt();
        let new = with_wakeup(&old, 0x9_f000).unwrap();
        assert_eq!(new.len(), old.len() + 16);
        assert_eq!(length(&new).unwrap(), new.len());
        assert_eq!(sum(&new), 0);
        let tail = &new[old.len()..];
        assert_eq!(&tail[..8], &[0x10, 16, 0, 0, 0, 0, 0, 0]);
        assert_eq!(u64_at(tail, 8).unwrap(), 0x9_f000);
        // The CPUs are unchanged; a second mailbox is refused.
        assert_eq!(cpus(&old).unwrap().len(), 3);
        assert_eq!(cpus(&new), Err(AcpiError::HasMailbox));
        assert_eq!(with_wakeup(&new, 0x1000), Err(AcpiError::HasMailbox));
    }

    #[test]
    fn a_cpu_is_disabled_by_its_apic_id() {
        let mut t = with_wakeup(&madt(), 0x1000).unwrap();
        assert!(disable(&mut t, 1).unwrap());
        assert_eq!(sum(&t), 0);
        assert_eq!(
            t[MADT_ENTRIES + 8 + 12 + 4],
            0,
            "local APIC 1: flags cleared"
        );
        assert!(!disable(&mut t, 7).unwrap());
        let mut x = madt();
        x[MADT_ENTRIES + 28 + 8] = 3;
        set_checksum(&mut x).unwrap();
        assert!(disable(&mut x, 0x100).unwrap());
        assert_eq!(u32_at(&x, MADT_ENTRIES + 28 + 8).unwrap(), 0);
        assert_eq!(
            cpus(&x).unwrap()[2],
            Cpu {
                apic_id: 0x100,
                enabled: false
            }
        );
    }

    #[test]
    fn broken_madts_are_refused() {
        let mut bad = madt();
        bad[MADT_ENTRIES + 1] = 200;
        set_checksum(&mut bad).unwrap();
        assert_eq!(cpus(&bad), Err(AcpiError::BadEntry(MADT_ENTRIES)));
        bad[MADT_ENTRIES + 1] = 0;
        assert_eq!(cpus(&bad), Err(AcpiError::BadEntry(MADT_ENTRIES)));
        assert_eq!(cpus(&table(b"FACP", &[0; 8])), Err(AcpiError::Signature));
        let short = madt();
        assert_eq!(cpus(&short[..40]), Err(AcpiError::Truncated));
        assert_eq!(cpus(&table(&MADT, &[0; 4])), Err(AcpiError::Truncated));
        let mut tiny = madt();
        tiny[LENGTH] = 10;
        assert_eq!(length(&tiny), Err(AcpiError::Truncated));
        assert_eq!(with_wakeup(&tiny, 0), Err(AcpiError::Truncated));
        let mut cut = madt();
        cut.truncate(cut.len() - 1);
        assert_eq!(cpus(&cut), Err(AcpiError::Truncated));
        let mut odd = madt();
        odd.push(0); // one byte past the stated length: a structure header cut short
        let len = odd.len() as u32;
        odd[LENGTH..LENGTH + 4].copy_from_slice(&len.to_le_bytes());
        assert_eq!(cpus(&odd), Err(AcpiError::BadEntry(len as usize - 1)));
    }

    #[test]
    fn the_root_pointer_gives_the_rsdt_and_the_xsdt() {
        let mut r = b"RSD PTR ".to_vec();
        r.extend_from_slice(&[0; 7]);
        r.push(2);
        r.extend_from_slice(&0x7fe_0000u32.to_le_bytes());
        r.extend_from_slice(&36u32.to_le_bytes());
        r.extend_from_slice(&0x1_7fe1_0000u64.to_le_bytes());
        assert_eq!(
            rsdp(&r).unwrap(),
            Rsdp {
                rsdt: 0x7fe_0000,
                xsdt: Some(0x1_7fe1_0000)
            }
        );
        r[15] = 0;
        assert_eq!(rsdp(&r).unwrap().xsdt, None);
        assert_eq!(rsdp(&r[..10]), Err(AcpiError::Truncated));
        assert_eq!(
            rsdp(b"RSD PTX 01234567890123456789"),
            Err(AcpiError::Signature)
        );
        r[15] = 2;
        assert_eq!(rsdp(&r[..26]), Err(AcpiError::Truncated));
    }

    #[test]
    fn table_pointers_are_listed_and_replaced() {
        let mut body = Vec::new();
        for a in [0x1000u64, 0x2_0000_2000, 0x3000] {
            body.extend_from_slice(&a.to_le_bytes());
        }
        let mut xsdt = table(b"XSDT", &body);
        assert_eq!(entries(&xsdt, 8).unwrap(), [0x1000, 0x2_0000_2000, 0x3000]);
        assert!(replace_entry(&mut xsdt, 8, 0x2_0000_2000, 0x9000).unwrap());
        assert_eq!(entries(&xsdt, 8).unwrap(), [0x1000, 0x9000, 0x3000]);
        assert_eq!(sum(&xsdt), 0);
        assert!(!replace_entry(&mut xsdt, 8, 0x7777, 0x9000).unwrap());

        let mut rsdt = table(b"RSDT", &[0x00, 0x10, 0, 0, 0x00, 0x30, 0, 0]);
        assert_eq!(entries(&rsdt, 4).unwrap(), [0x1000, 0x3000]);
        assert!(
            !replace_entry(&mut rsdt, 4, 0x1000, 1 << 32).unwrap(),
            "too wide for the RSDT"
        );
        assert!(replace_entry(&mut rsdt, 4, 0x3000, 0x5000).unwrap());
        assert_eq!(entries(&rsdt, 4).unwrap(), [0x1000, 0x5000]);
        assert_eq!(sum(&rsdt), 0);
        assert_eq!(entries(&rsdt[..20], 4), Err(AcpiError::Truncated));
        assert_eq!(
            replace_entry(&mut rsdt[..20], 4, 0, 0),
            Err(AcpiError::Truncated)
        );
    }
}
