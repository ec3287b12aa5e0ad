//! Which GDT entry a segment selector names, for the captured state's raw
//! descriptors (as the Linux driver's `descriptor`): none for a null
//! selector, an LDT selector or one past the table's limit.

/// The index of `selector`'s 8-byte descriptor in a GDT whose limit is
/// `limit` (its size in bytes less one), if there is one to read.
pub fn gdt_index(selector: u16, limit: u16) -> Option<usize> {
    let null = selector & !7 == 0;
    let ldt = selector & 4 != 0;
    let past = u32::from(selector | 7) > u32::from(limit);
    (!null && !ldt && !past).then_some(usize::from(selector >> 3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gdt_selectors_inside_the_table_name_a_descriptor() {
        assert_eq!(gdt_index(0x38, 0x4f), Some(7));
        assert_eq!(gdt_index(0x3b, 0x3f), Some(7), "the RPL does not matter");
        assert_eq!(gdt_index(0, 0xffff), None, "null");
        assert_eq!(gdt_index(3, 0xffff), None, "null with an RPL");
        assert_eq!(gdt_index(0x0c, 0xffff), None, "LDT");
        assert_eq!(gdt_index(0x40, 0x3f), None, "past the limit");
        assert_eq!(gdt_index(0x38, 0x3e), None, "its last byte past the limit");
    }
}
