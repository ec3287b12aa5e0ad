//! The ACPI tables the guest needs: power-off (FADT + DSDT `_S5_`), SMP
//! (MADT) and the serial port's interrupt (a COM1 device in the DSDT, so
//! the kernel routes IRQ 4 through the IOAPIC).
//!
//! The platform is *hardware-reduced* ACPI: no PM1 blocks, no SCI, no
//! legacy PIC or PIT for the guest's timer (Linux then uses the LAPIC timer
//! and the backend's clock). Sleep and reset go through the FADT's sleep
//! control and reset registers, served by [`crate::devices::power`].

use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{ACPI_END, ACPI_START, IOAPIC_ADDR, LAPIC_ADDR};
use super::BootError;
use crate::devices::power::{
    RESET_PORT, RESET_VALUE, S5_SLEEP_TYPE, SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT,
};
use crate::devices::serial::{COM1_IRQ, COM1_PORT};

const OEM_ID: [u8; 6] = *b"MICROV";
const OEM_REVISION: u32 = 1;

/// IAPC_BOOT_ARCH: no VGA, no CMOS RTC (so the guest probes neither).
const BOOT_ARCH_NO_VGA: u16 = 1 << 2;
const BOOT_ARCH_NO_CMOS_RTC: u16 = 1 << 5;

fn bytes(table: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

fn io_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

fn dsdt() -> Vec<u8> {
    let s5 = aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLEEP_TYPE, &0u8, &0u8, &0u8]),
    );
    let com1_last = COM1_PORT + 7;
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
    let uid = aml::Name::new("_UID".into(), &aml::ZERO);
    let io = aml::IO::new(COM1_PORT, com1_last, 1, 8);
    let irq = aml::Interrupt::new(true, true, false, false, COM1_IRQ);
    let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&io, &irq]));
    let com1 = aml::Device::new("\\_SB_.COM1".into(), vec![&hid, &uid, &crs]);
    let mut body = Vec::new();
    s5.to_aml_bytes(&mut body);
    com1.to_aml_bytes(&mut body);
    let mut sdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, *b"MICROVDS", OEM_REVISION);
    sdt.append_slice(&body);
    sdt.as_slice().to_vec()
}

fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, *b"MICROVFA", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::Headless)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    f.iapc_boot_arch = (BOOT_ARCH_NO_VGA | BOOT_ARCH_NO_CMOS_RTC).into();
    f.reset_reg = io_register(RESET_PORT);
    f.reset_value = RESET_VALUE;
    f.sleep_control_reg = io_register(SLEEP_CONTROL_PORT);
    f.sleep_status_reg = io_register(SLEEP_STATUS_PORT);
    bytes(&f.finalize())
}

fn madt(cpus: u8) -> Vec<u8> {
    let mut m = MADT::new(
        OEM_ID,
        *b"MICROVAP",
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR as u32),
    );
    for id in 0..cpus {
        m.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    // The IOAPIC's ID follows the CPUs' so no two APICs share one.
    m.add_structure(IoApic::new(cpus, IOAPIC_ADDR as u32, 0));
    bytes(&m)
}

/// Each table and where it goes; the RSDP first, at [`ACPI_START`].
pub fn build(cpus: u8) -> Result<Vec<(u64, Vec<u8>)>, BootError> {
    let align = |a: u64| a.next_multiple_of(16);
    let xsdt_addr = align(ACPI_START + Rsdp::len() as u64);
    // The XSDT lists two tables; its size is known before their addresses.
    let xsdt_len = 36 + 2 * 8;
    let dsdt_addr = align(xsdt_addr + xsdt_len);
    let dsdt = dsdt();
    let fadt_addr = align(dsdt_addr + dsdt.len() as u64);
    let fadt = fadt(dsdt_addr);
    let madt_addr = align(fadt_addr + fadt.len() as u64);
    let madt = madt(cpus);
    let end = madt_addr + madt.len() as u64;
    if end > ACPI_END {
        return Err(BootError::AcpiTooLarge);
    }
    let mut xsdt = XSDT::new(OEM_ID, *b"MICROVXS", OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt = bytes(&xsdt);
    debug_assert_eq!(xsdt.len() as u64, xsdt_len);
    let rsdp = bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    Ok(vec![
        (ACPI_START, rsdp),
        (xsdt_addr, xsdt),
        (dsdt_addr, dsdt),
        (fadt_addr, fadt),
        (madt_addr, madt),
    ])
}

/// Writes the tables for a `cpus`-vCPU guest; returns the RSDP's address.
pub fn write(mem: &GuestMemoryMmap, cpus: u8) -> Result<u64, BootError> {
    for (addr, table) in build(cpus)? {
        mem.write_slice(&table, GuestAddress(addr))
            .map_err(|_| BootError::Write("the ACPI tables"))?;
    }
    Ok(ACPI_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn tables_are_valid_and_linked() {
        let tables = build(2).unwrap();
        let find = |sig: &[u8]| tables.iter().find(|(_, t)| t.starts_with(sig)).unwrap();
        let (rsdp_addr, rsdp) = find(b"RSD PTR ");
        assert_eq!(*rsdp_addr, ACPI_START);
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(sum(rsdp), 0);
        let (xsdt_addr, xsdt) = find(b"XSDT");
        assert_eq!(u64_at(rsdp, 24), *xsdt_addr);
        for (addr, t) in &tables[1..] {
            assert_eq!(sum(t), 0, "{}", String::from_utf8_lossy(&t[..4]));
            assert_eq!(u32_at(t, 4) as usize, t.len());
            assert_eq!(addr % 16, 0);
        }
        let (fadt_addr, fadt) = find(b"FACP");
        let (madt_addr, madt) = find(b"APIC");
        assert_eq!(
            (u64_at(xsdt, 36), u64_at(xsdt, 44)),
            (*fadt_addr, *madt_addr)
        );
        let (dsdt_addr, dsdt) = find(b"DSDT");
        assert_eq!(u64_at(fadt, 140), *dsdt_addr, "X_DSDT");
        // Hardware-reduced, with reset register support.
        let flags = u32_at(fadt, 112);
        assert_ne!(flags & (1 << 20), 0);
        assert_ne!(flags & (1 << 10), 0);
        // Reset register: system I/O, byte, our port; then the value.
        assert_eq!(fadt[116], 1);
        assert_eq!(u64_at(fadt, 120), u64::from(RESET_PORT));
        assert_eq!(fadt[128], RESET_VALUE);
        // Sleep control and status registers.
        assert_eq!(u64_at(fadt, 244 + 4), u64::from(SLEEP_CONTROL_PORT));
        assert_eq!(u64_at(fadt, 256 + 4), u64::from(SLEEP_STATUS_PORT));
        // _S5_ and COM1 are in the DSDT.
        let find_bytes = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        assert!(find_bytes(dsdt, b"_S5_"));
        assert!(find_bytes(dsdt, b"COM1"));
        // MADT: LAPIC address, two CPUs, one IOAPIC.
        assert_eq!(u32_at(madt, 36), LAPIC_ADDR as u32);
        let mut entries = Vec::new();
        let mut o = 44;
        while o < madt.len() {
            entries.push((madt[o], madt[o + 2], madt[o + 3]));
            o += usize::from(madt[o + 1]);
        }
        assert_eq!(entries, [(0, 0, 0), (0, 1, 1), (1, 2, 0)]);
        let last = tables
            .iter()
            .map(|(a, t)| a + t.len() as u64)
            .max()
            .unwrap();
        assert!(last <= ACPI_END);
    }

    #[test]
    fn many_cpus_still_fit() {
        assert!(build(255).is_ok());
    }

    #[test]
    fn tables_land_in_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        assert_eq!(write(&mem, 1).unwrap(), ACPI_START);
        let mut sig = [0u8; 8];
        mem.read_slice(&mut sig, GuestAddress(ACPI_START)).unwrap();
        assert_eq!(&sig, b"RSD PTR ");
    }
}
