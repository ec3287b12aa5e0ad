//! Conversions between the neutral types and KVM's structures. Kept here so
//! no other module knows KVM's layouts.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_dtable, kvm_lapic_state, kvm_regs, kvm_segment, kvm_sregs,
    KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
};

use crate::backend::{CpuidEntry, DescriptorTable, Regs, Segment, SpecialRegs};

pub fn cpuid_from_kvm(e: &kvm_cpuid_entry2) -> CpuidEntry {
    CpuidEntry {
        function: e.function,
        index: e.index,
        indexed: e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
    }
}

pub fn cpuid_to_kvm(e: &CpuidEntry) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function: e.function,
        index: e.index,
        flags: if e.indexed {
            KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        },
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
        ..Default::default()
    }
}

pub fn regs_to_kvm(r: &Regs) -> kvm_regs {
    kvm_regs {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}

fn segment_to_kvm(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: u8::from(s.present),
        dpl: s.dpl,
        db: u8::from(s.db),
        s: u8::from(s.s),
        l: u8::from(s.l),
        g: u8::from(s.g),
        avl: 0,
        // KVM derives "unusable" from "not present" for data segments;
        // saying it explicitly keeps VMX's entry checks happy too.
        unusable: u8::from(!s.present),
        padding: 0,
    }
}

fn dtable_to_kvm(d: &DescriptorTable) -> kvm_dtable {
    kvm_dtable {
        base: d.base,
        limit: d.limit,
        padding: [0; 3],
    }
}

/// Writes `s` over `k`, keeping the fields the neutral type does not carry
/// (CR2, CR8, APIC base, the interrupt bitmap) as KVM reported them.
pub fn sregs_into_kvm(s: &SpecialRegs, k: &mut kvm_sregs) {
    k.cs = segment_to_kvm(&s.cs);
    k.ds = segment_to_kvm(&s.ds);
    k.es = segment_to_kvm(&s.es);
    k.fs = segment_to_kvm(&s.fs);
    k.gs = segment_to_kvm(&s.gs);
    k.ss = segment_to_kvm(&s.ss);
    k.tr = segment_to_kvm(&s.tr);
    k.ldt = segment_to_kvm(&s.ldt);
    k.gdt = dtable_to_kvm(&s.gdt);
    k.idt = dtable_to_kvm(&s.idt);
    k.cr0 = s.cr0;
    k.cr3 = s.cr3;
    k.cr4 = s.cr4;
    k.efer = s.efer;
}

/// Offsets of the local vector table entries for LINT0 and LINT1.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
/// Delivery modes (bits 8–10 of an LVT entry).
const DELIVERY_EXTINT: u32 = 7;
const DELIVERY_NMI: u32 = 4;

fn lapic_reg(l: &kvm_lapic_state, offset: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, byte) in b.iter_mut().enumerate() {
        // `regs` is c_char; the register is little-endian bytes.
        *byte = l.regs.get(offset + i).map_or(0, |&c| c as u8);
    }
    u32::from_le_bytes(b)
}

fn set_lapic_reg(l: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
        if let Some(c) = l.regs.get_mut(offset + i) {
            *c = byte as _;
        }
    }
}

/// Programs LINT0 as ExtINT and LINT1 as NMI (virtual-wire mode), what
/// firmware leaves behind and what Linux expects to find: we boot the
/// kernel with no firmware.
pub fn set_virtual_wire(l: &mut kvm_lapic_state) {
    let mode = |v: u32, m: u32| (v & !0x700) | (m << 8);
    let lvt0 = lapic_reg(l, APIC_LVT0);
    set_lapic_reg(l, APIC_LVT0, mode(lvt0, DELIVERY_EXTINT));
    let lvt1 = lapic_reg(l, APIC_LVT1);
    set_lapic_reg(l, APIC_LVT1, mode(lvt1, DELIVERY_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_round_trips() {
        let e = CpuidEntry {
            function: 0xb,
            index: 1,
            indexed: true,
            eax: 1,
            ebx: 2,
            ecx: 3,
            edx: 4,
        };
        let k = cpuid_to_kvm(&e);
        assert_eq!(k.flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        assert_eq!(cpuid_from_kvm(&k), e);
        let plain = CpuidEntry {
            indexed: false,
            ..e
        };
        assert_eq!(cpuid_to_kvm(&plain).flags, 0);
    }

    #[test]
    fn registers_convert() {
        let r = Regs {
            rip: 0x1000,
            rsi: 0x7000,
            rflags: 2,
            r15: 15,
            ..Default::default()
        };
        let k = regs_to_kvm(&r);
        assert_eq!((k.rip, k.rsi, k.rflags, k.r15), (0x1000, 0x7000, 2, 15));

        let code = Segment {
            selector: 0x10,
            limit: 0xfffff,
            type_: 0xb,
            present: true,
            s: true,
            l: true,
            g: true,
            ..Default::default()
        };
        let s = SpecialRegs {
            cs: code,
            cr0: 0x8000_0011,
            cr3: 0x9000,
            cr4: 0x20,
            efer: 0x500,
            gdt: DescriptorTable {
                base: 0x500,
                limit: 0x27,
            },
            ..Default::default()
        };
        let mut k = kvm_sregs {
            cr2: 0x1234,
            apic_base: 0xfee0_0900,
            ..Default::default()
        };
        sregs_into_kvm(&s, &mut k);
        assert_eq!(
            (k.cs.selector, k.cs.l, k.cs.present, k.cs.unusable),
            (0x10, 1, 1, 0)
        );
        assert_eq!(k.ds.unusable, 1, "a null segment is unusable");
        assert_eq!(
            (k.cr0, k.cr3, k.cr4, k.efer),
            (0x8000_0011, 0x9000, 0x20, 0x500)
        );
        assert_eq!((k.gdt.base, k.gdt.limit), (0x500, 0x27));
        assert_eq!((k.cr2, k.apic_base), (0x1234, 0xfee0_0900), "kept");
    }

    #[test]
    fn virtual_wire_sets_delivery_modes_only() {
        let mut l = kvm_lapic_state::default();
        set_lapic_reg(&mut l, APIC_LVT0, 0x0001_0000); // masked, fixed
        set_lapic_reg(&mut l, APIC_LVT1, 0x0001_0400); // masked, NMI already
        set_virtual_wire(&mut l);
        assert_eq!(lapic_reg(&l, APIC_LVT0), 0x0001_0700);
        assert_eq!(lapic_reg(&l, APIC_LVT1), 0x0001_0400);
    }
}
