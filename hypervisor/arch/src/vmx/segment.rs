//! Guest segment registers in the VMCS (SDM Vol. 3C 25.4.1): each is four
//! fields, and its access rights are the descriptor's attribute bits in
//! another layout than the VMCB's [`Segment::attrib`], with an "unusable"
//! bit instead of a null selector's attribute 0. MicroV's captured root
//! state is in the VMCB layout, so these convert between the two.

use super::fields::guest;
use super::instruction_error::VmFail;
use super::vmcs::{Field, Natural, Vmcs};
use crate::descriptor::{attrib, Segment};

/// Access rights bit 16: the register is unusable (a null selector was
/// loaded); VM entry ignores its other fields.
pub const UNUSABLE: u32 = 1 << 16;

/// The VMX access rights of a segment with VMCB attributes `attrib`:
/// descriptor bits 47:40 in 7:0 (unchanged) and 55:52 in 15:12 (from
/// 11:8). A segment that is not present (a null selector's attribute 0)
/// is unusable.
pub const fn access_rights(attrib: u16) -> u32 {
    if attrib & attrib::PRESENT == 0 {
        return UNUSABLE;
    }
    let a = attrib as u32;
    (a & 0xff) | (a & 0xf00) << 4
}

/// The VMCB attributes of a segment with VMX access rights `rights`; an
/// unusable segment has attribute 0.
pub const fn attrib(rights: u32) -> u16 {
    if rights & UNUSABLE != 0 {
        return 0;
    }
    ((rights & 0xff) | (rights >> 4) & 0xf00) as u16
}

/// The four fields of one guest segment register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFields {
    pub selector: Field<u16>,
    pub base: Field<Natural>,
    pub limit: Field<u32>,
    pub access_rights: Field<u32>,
}

macro_rules! segment {
    ($selector:ident, $base:ident, $limit:ident, $rights:ident) => {
        SegmentFields {
            selector: guest::$selector,
            base: guest::$base,
            limit: guest::$limit,
            access_rights: guest::$rights,
        }
    };
}

pub const ES: SegmentFields = segment!(ES_SELECTOR, ES_BASE, ES_LIMIT, ES_ACCESS_RIGHTS);
pub const CS: SegmentFields = segment!(CS_SELECTOR, CS_BASE, CS_LIMIT, CS_ACCESS_RIGHTS);
pub const SS: SegmentFields = segment!(SS_SELECTOR, SS_BASE, SS_LIMIT, SS_ACCESS_RIGHTS);
pub const DS: SegmentFields = segment!(DS_SELECTOR, DS_BASE, DS_LIMIT, DS_ACCESS_RIGHTS);
pub const FS: SegmentFields = segment!(FS_SELECTOR, FS_BASE, FS_LIMIT, FS_ACCESS_RIGHTS);
pub const GS: SegmentFields = segment!(GS_SELECTOR, GS_BASE, GS_LIMIT, GS_ACCESS_RIGHTS);
pub const LDTR: SegmentFields = segment!(LDTR_SELECTOR, LDTR_BASE, LDTR_LIMIT, LDTR_ACCESS_RIGHTS);
pub const TR: SegmentFields = segment!(TR_SELECTOR, TR_BASE, TR_LIMIT, TR_ACCESS_RIGHTS);

impl SegmentFields {
    /// Writes `segment` (VMCB layout) into these fields.
    pub fn write(&self, vmcs: &mut dyn Vmcs, segment: &Segment) -> Result<(), VmFail> {
        self.selector.write(vmcs, segment.selector)?;
        self.base.write(vmcs, segment.base)?;
        self.limit.write(vmcs, segment.limit)?;
        self.access_rights
            .write(vmcs, access_rights(segment.attrib))
    }

    /// Reads these fields into the VMCB layout.
    pub fn read(&self, vmcs: &mut dyn Vmcs) -> Result<Segment, VmFail> {
        Ok(Segment {
            selector: self.selector.read(vmcs)?,
            attrib: attrib(self.access_rights.read(vmcs)?),
            limit: self.limit.read(vmcs)?,
            base: self.base.read(vmcs)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::decode_code_data;
    use crate::vmx::instruction_error::InstructionError;
    use crate::vmx::vmcs::fake::FakeVmcs;

    #[test]
    fn access_rights_move_the_high_nibble() {
        // 64-bit kernel code: type 0xb, S, P, L, G.
        let code = decode_code_data(0x10, 0x00af_9b00_0000_ffff);
        assert_eq!(code.attrib, 0xa9b);
        assert_eq!(access_rights(code.attrib), 0xa09b);
        assert_eq!(attrib(0xa09b), 0xa9b);
        // Flat data, DPL 3, D/B and G.
        assert_eq!(access_rights(0xcf3), 0xc0f3);
        assert_eq!(attrib(0xc0f3), 0xcf3);
        // A null selector's segment is unusable, and back.
        assert_eq!(access_rights(0), UNUSABLE);
        assert_eq!(access_rights(attrib::S | 3), UNUSABLE, "not present");
        assert_eq!(attrib(UNUSABLE | 0x93), 0);
    }

    #[test]
    fn segments_go_through_the_vmcs() {
        let mut vmcs = FakeVmcs::default();
        let tss = Segment {
            selector: 0x40,
            attrib: attrib::PRESENT | attrib::TYPE_TSS_BUSY,
            limit: 0x4087,
            base: 0xffff_fe00_0000_3000,
        };
        TR.write(&mut vmcs, &tss).unwrap();
        assert_eq!(vmcs.fields[&0x4822], 0x8b);
        assert_eq!(TR.read(&mut vmcs), Ok(tss));
        let null = Segment::default();
        FS.write(&mut vmcs, &null).unwrap();
        assert_eq!(vmcs.fields[&0x481c], u64::from(UNUSABLE));
        assert_eq!(FS.read(&mut vmcs), Ok(null));
        // Every register has its own four fields.
        let all = [ES, CS, SS, DS, FS, GS, LDTR, TR];
        for (i, s) in all.iter().enumerate() {
            for t in &all[..i] {
                assert_ne!(s.selector, t.selector);
                assert_ne!(s.base, t.base);
                assert_ne!(s.limit, t.limit);
                assert_ne!(s.access_rights, t.access_rights);
            }
        }
        // A failed read or write says why.
        assert_eq!(
            GS.read(&mut vmcs),
            Err(VmFail::Valid(InstructionError::UNSUPPORTED_FIELD))
        );
    }
}
