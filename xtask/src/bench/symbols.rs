//! Address → symbol for `cargo xtask bench --profile`: the parsers of the
//! symbol sources (`nm` of the hypervisor images and the VMM, the machine's
//! /proc/kallsyms and the VMM's /proc/PID/maps as bench.sh wrote them), the
//! hotblocks plugin's output, and the attribution of each block's
//! instructions to a component and a function. No I/O here: `profile` runs
//! the tools and reads the files.

use std::collections::HashMap;
use std::fmt;

/// Who ran an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Microkernel,
    Extension,
    /// The driver, `microv.ko` (kallsyms module `[microv]`): the ioctl
    /// path and the world-switch trampoline.
    Driver,
    RootKernel,
    /// The VMM (`/usr/bin/microv`) and any other root process.
    User,
    Guest,
    Unknown,
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Component::Microkernel => "microkernel",
            Component::Extension => "extension",
            Component::Driver => "driver (microv.ko)",
            Component::RootKernel => "root kernel",
            Component::User => "user (VMM)",
            Component::Guest => "guest",
            Component::Unknown => "unknown",
        })
    }
}

/// One function: its start and, when the source gives it, its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub addr: u64,
    pub size: Option<u64>,
    pub name: String,
}

/// An address range owned by one component, with its symbols (possibly
/// none: then every address in it is the component's "(no symbol)").
#[derive(Clone, Debug)]
pub struct Region {
    pub component: Component,
    pub lo: u64,
    pub hi: u64,
    /// Sorted by address.
    symbols: Vec<Symbol>,
}

/// The name given to an address a region holds but no symbol covers.
pub const NO_SYMBOL: &str = "(no symbol)";

/// Addresses that fit no region are split at this line: above it kernel
/// space (the root kernel's, e.g. other modules), below it user space.
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

impl Region {
    /// A region over [lo, hi) with these symbols (any order).
    pub fn new(component: Component, lo: u64, hi: u64, mut symbols: Vec<Symbol>) -> Region {
        symbols.sort_by_key(|s| s.addr);
        Region {
            component,
            lo,
            hi,
            symbols,
        }
    }

    /// A region spanning its symbols: from the first one's address to the
    /// end of the last one (its size, else `slack` bytes). None without
    /// symbols.
    pub fn spanning(component: Component, symbols: Vec<Symbol>, slack: u64) -> Option<Region> {
        let lo = symbols.iter().map(|s| s.addr).min()?;
        let hi = symbols
            .iter()
            .map(|s| s.addr.saturating_add(s.size.unwrap_or(slack).max(1)))
            .max()?;
        Some(Region::new(component, lo, hi, symbols))
    }

    /// Every symbol moved by `bias` (a PIE's load address).
    pub fn biased(symbols: Vec<Symbol>, bias: u64) -> Vec<Symbol> {
        symbols
            .into_iter()
            .map(|s| Symbol {
                addr: s.addr.wrapping_add(bias),
                ..s
            })
            .collect()
    }

    fn contains(&self, addr: u64) -> bool {
        addr >= self.lo && addr < self.hi
    }

    /// The function holding `addr`: the last symbol at or below it, unless
    /// its known size ends before `addr`.
    fn name(&self, addr: u64) -> &str {
        let i = self.symbols.partition_point(|s| s.addr <= addr);
        let Some(s) = i.checked_sub(1).map(|i| &self.symbols[i]) else {
            return NO_SYMBOL;
        };
        match s.size {
            Some(size) if size > 0 && addr >= s.addr.saturating_add(size) => NO_SYMBOL,
            _ => &s.name,
        }
    }
}

/// All the regions, the first that holds an address wins.
#[derive(Clone, Debug, Default)]
pub struct Symbolizer {
    regions: Vec<Region>,
}

impl Symbolizer {
    pub fn push(&mut self, region: Region) {
        self.regions.push(region);
    }

    /// Component and function of an address.
    pub fn lookup(&self, addr: u64) -> (Component, &str) {
        if let Some(r) = self.regions.iter().find(|r| r.contains(addr)) {
            return (r.component, r.name(addr));
        }
        let component = if addr >= KERNEL_HALF {
            Component::RootKernel
        } else if addr < 1 << 47 {
            Component::User
        } else {
            Component::Unknown
        };
        (component, NO_SYMBOL)
    }
}

/// Text symbols from `nm -n -S -C --defined-only` output: `ADDR [SIZE]
/// TYPE NAME`, NAME possibly with spaces (demangled). Only code (types t,
/// T, w, W).
pub fn parse_nm(text: &str) -> Vec<Symbol> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.splitn(2, ' ');
        let (Some(addr), Some(rest)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        // With a size: `SIZE TYPE NAME`; without: `TYPE NAME`.
        let (size, rest) = match rest.split_once(' ') {
            Some((first, tail)) if first.len() > 1 => match u64::from_str_radix(first, 16) {
                Ok(size) => (Some(size), tail),
                Err(_) => continue,
            },
            _ => (None, rest),
        };
        let Some((kind, name)) = rest.split_once(' ') else {
            continue;
        };
        if matches!(kind, "t" | "T" | "w" | "W") && !name.is_empty() {
            out.push(Symbol {
                addr,
                size,
                name: name.to_string(),
            });
        }
    }
    out
}

/// What bench.sh --symbols wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MachineSymbols {
    /// The root kernel's text symbols (modules' excluded).
    pub kernel: Vec<Symbol>,
    /// The driver's (`[microv]`).
    pub driver: Vec<Symbol>,
    /// Load address of /usr/bin/microv (the mapping at file offset 0).
    pub vmm_bias: Option<u64>,
    /// The VMM's executable mapping.
    pub vmm_text: Option<(u64, u64)>,
    /// The `end` line arrived (the dump is whole).
    pub complete: bool,
}

/// Parses bench.sh's symbols file: `kallsyms ADDR TYPE NAME [MODULE]`,
/// `maps START-END PERMS OFFSET DEV INODE PATH`, `end`. Carriage returns
/// (a serial port's) are ignored. Other modules than microv are left out
/// (their addresses count as the root kernel's).
pub fn parse_machine(text: &str) -> MachineSymbols {
    let mut out = MachineSymbols::default();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let mut words = line.split_whitespace();
        match words.next() {
            Some("kallsyms") => {
                let (Some(addr), Some(kind), Some(name)) =
                    (words.next(), words.next(), words.next())
                else {
                    continue;
                };
                let Ok(addr) = u64::from_str_radix(addr, 16) else {
                    continue;
                };
                if !matches!(kind, "t" | "T" | "w" | "W") {
                    continue;
                }
                let symbol = Symbol {
                    addr,
                    size: None,
                    name: name.to_string(),
                };
                match words.next() {
                    None => out.kernel.push(symbol),
                    Some("[microv]") => out.driver.push(symbol),
                    Some(_) => {}
                }
            }
            Some("maps") => {
                let (Some(range), Some(perms), Some(offset)) =
                    (words.next(), words.next(), words.next())
                else {
                    continue;
                };
                let Some((start, end)) = range.split_once('-') else {
                    continue;
                };
                let (Ok(start), Ok(end), Ok(offset)) = (
                    u64::from_str_radix(start, 16),
                    u64::from_str_radix(end, 16),
                    u64::from_str_radix(offset, 16),
                ) else {
                    continue;
                };
                if offset == 0 {
                    out.vmm_bias.get_or_insert(start);
                }
                if perms.contains('x') {
                    out.vmm_text.get_or_insert((start, end));
                }
            }
            Some("end") => out.complete = true,
            _ => {}
        }
    }
    out
}

/// One line of the hotblocks plugin's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub vaddr: u64,
    pub executed: u64,
}

/// The plugin's output file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Blocks {
    /// Instructions counted, all blocks (not only those listed).
    pub total: u64,
    pub blocks: Vec<Block>,
    /// The `# window` line's words after `window` (`closed marks 3 on 2
    /// off 3`, `none`, ...).
    pub window: String,
}

/// Parses `# total N`, `# window ...` and `0xVADDR EXECUTED ...` lines.
pub fn parse_blocks(text: &str) -> Blocks {
    let mut out = Blocks::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# total ") {
            out.total = rest.trim().parse().unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("# window ") {
            out.window = rest.trim().to_string();
        } else if let Some(rest) = line.strip_prefix("0x") {
            let mut words = rest.split_whitespace();
            let (Some(vaddr), Some(executed)) = (words.next(), words.next()) else {
                continue;
            };
            if let (Ok(vaddr), Ok(executed)) = (u64::from_str_radix(vaddr, 16), executed.parse()) {
                out.blocks.push(Block { vaddr, executed });
            }
        }
    }
    out
}

/// Instructions by function and by component.
#[derive(Debug, PartialEq, Eq)]
pub struct Profile {
    /// Every instruction counted (the blocks' file's total).
    pub total: u64,
    /// (component, function, instructions), most first; ties by name.
    pub functions: Vec<(Component, String, u64)>,
    /// (component, instructions), most first; the part of `total` not in
    /// the listed blocks is under [`Component::Unknown`] as "(blocks not
    /// listed)".
    pub components: Vec<(Component, u64)>,
}

/// The name under which the instructions of blocks the plugin did not
/// list (beyond its `top`) are counted.
pub const UNLISTED: &str = "(blocks not listed)";

/// Attributes each block's instructions to the function at its start
/// address (a block never spans a call, so this is its function but for a
/// fall-through into the next symbol).
pub fn attribute(blocks: &Blocks, symbols: &Symbolizer) -> Profile {
    let mut functions: HashMap<(Component, String), u64> = HashMap::new();
    let mut listed = 0u64;
    for b in &blocks.blocks {
        let (component, name) = symbols.lookup(b.vaddr);
        *functions.entry((component, name.to_string())).or_default() += b.executed;
        listed += b.executed;
    }
    let total = blocks.total.max(listed);
    if total > listed {
        functions.insert((Component::Unknown, UNLISTED.to_string()), total - listed);
    }
    let mut components: HashMap<Component, u64> = HashMap::new();
    for ((c, _), n) in &functions {
        *components.entry(*c).or_default() += n;
    }
    let mut functions: Vec<(Component, String, u64)> =
        functions.into_iter().map(|((c, f), n)| (c, f, n)).collect();
    functions.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.1.cmp(&b.1)));
    let mut components: Vec<(Component, u64)> = components.into_iter().collect();
    components.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Profile {
        total,
        functions,
        components,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(addr: u64, size: Option<u64>, name: &str) -> Symbol {
        Symbol {
            addr,
            size,
            name: name.into(),
        }
    }

    fn symbolizer() -> Symbolizer {
        let mut s = Symbolizer::default();
        s.push(
            Region::spanning(
                Component::Microkernel,
                vec![
                    sym(0xffff_8000_0000_0100, Some(0x100), "mk_b"),
                    sym(0xffff_8000_0000_0000, Some(0x20), "mk_a"),
                ],
                0,
            )
            .unwrap(),
        );
        s.push(
            Region::spanning(
                Component::Extension,
                vec![
                    sym(0x4000_0000, None, "ext_entry"),
                    sym(0x4000_0400, None, "ext_exit"),
                ],
                0x100,
            )
            .unwrap(),
        );
        s.push(Region::new(
            Component::Guest,
            0x100_0000,
            0x100_1000,
            Vec::new(),
        ));
        s.push(Region::new(
            Component::RootKernel,
            0xffff_ffff_8100_0000,
            0xffff_ffff_8200_0000,
            vec![
                sym(0xffff_ffff_8100_0000, None, "_text"),
                sym(0xffff_ffff_8100_0500, None, "do_ioctl"),
            ],
        ));
        s
    }

    #[test]
    fn lookup_by_region_and_symbol() {
        let s = symbolizer();
        assert_eq!(
            s.lookup(0xffff_8000_0000_0000),
            (Component::Microkernel, "mk_a")
        );
        assert_eq!(
            s.lookup(0xffff_8000_0000_001f),
            (Component::Microkernel, "mk_a")
        );
        // Past mk_a's size, before mk_b: in the image, no function.
        assert_eq!(
            s.lookup(0xffff_8000_0000_0080),
            (Component::Microkernel, NO_SYMBOL)
        );
        assert_eq!(
            s.lookup(0xffff_8000_0000_01ff),
            (Component::Microkernel, "mk_b")
        );
        // Past the image's end: kernel half, no region.
        assert_eq!(
            s.lookup(0xffff_8000_0000_0200),
            (Component::RootKernel, NO_SYMBOL)
        );
        // No sizes: the last symbol below, up to the slack after the last.
        assert_eq!(s.lookup(0x4000_03ff), (Component::Extension, "ext_entry"));
        assert_eq!(s.lookup(0x4000_04ff), (Component::Extension, "ext_exit"));
        assert_eq!(s.lookup(0x4000_0500), (Component::User, NO_SYMBOL));
        assert_eq!(s.lookup(0x100_0040), (Component::Guest, NO_SYMBOL));
        assert_eq!(
            s.lookup(0xffff_ffff_8100_0600),
            (Component::RootKernel, "do_ioctl")
        );
        assert_eq!(s.lookup(0x7fff_0000_0000), (Component::User, NO_SYMBOL));
        assert_eq!(
            s.lookup(0x8000_0000_0000_0000),
            (Component::Unknown, NO_SYMBOL)
        );
    }

    #[test]
    fn first_region_wins() {
        let mut s = Symbolizer::default();
        s.push(Region::new(
            Component::Driver,
            0x10,
            0x20,
            vec![sym(0x10, None, "tramp")],
        ));
        s.push(Region::new(
            Component::RootKernel,
            0,
            0x100,
            vec![sym(0, None, "k")],
        ));
        assert_eq!(s.lookup(0x18), (Component::Driver, "tramp"));
        assert_eq!(s.lookup(0x28), (Component::RootKernel, "k"));
        // Below the first symbol of a region.
        let r = Region::new(Component::User, 0, 0x100, vec![sym(0x50, None, "f")]);
        assert_eq!(r.name(0x10), NO_SYMBOL);
    }

    #[test]
    fn spanning_needs_symbols() {
        assert!(Region::spanning(Component::Guest, Vec::new(), 1).is_none());
    }

    #[test]
    fn biased_moves_symbols() {
        let moved = Region::biased(vec![sym(0x1000, Some(8), "main")], 0x5555_0000_0000);
        assert_eq!(moved, vec![sym(0x5555_0000_1000, Some(8), "main")]);
    }

    #[test]
    fn nm_output() {
        let text = "\
ffff800000000000 0000000000000020 T MICROV_KERNEL_HEADER
ffff800000000020 T microv_kernel_entry
ffff800000000100 0000000000000010 r SOME_TABLE
0000000000127f40 000000000000003b t <iced_x86::Decoder as core::fmt::Debug>::fmt
0000000000001000 W weak_one
                 U undefined
garbage line
";
        assert_eq!(
            parse_nm(text),
            vec![
                sym(0xffff_8000_0000_0000, Some(0x20), "MICROV_KERNEL_HEADER"),
                sym(0xffff_8000_0000_0020, None, "microv_kernel_entry"),
                sym(
                    0x12_7f40,
                    Some(0x3b),
                    "<iced_x86::Decoder as core::fmt::Debug>::fmt"
                ),
                sym(0x1000, None, "weak_one"),
            ]
        );
    }

    #[test]
    fn machine_symbols() {
        let text = "\
kallsyms ffffffffa9000000 T _text\r
kallsyms ffffffffa9001000 t do_syscall_64\r
kallsyms ffffffffa9002000 D some_data\r
kallsyms ffffffffc0a00000 t microv_ioctl\t[microv]\r
kallsyms ffffffffc0b00000 t kvm_thing\t[kvm]\r
maps 7f0000000000-7f0000100000 r--p 00000000 00:02 123 /usr/bin/microv\r
maps 7f0000100000-7f0000400000 r-xp 00100000 00:02 123 /usr/bin/microv\r
maps 7f0000400000-7f0000500000 rw-p 00400000 00:02 123 /usr/bin/microv\r
end\r
";
        let m = parse_machine(text);
        assert_eq!(
            m.kernel,
            vec![
                sym(0xffff_ffff_a900_0000, None, "_text"),
                sym(0xffff_ffff_a900_1000, None, "do_syscall_64"),
            ]
        );
        assert_eq!(
            m.driver,
            vec![sym(0xffff_ffff_c0a0_0000, None, "microv_ioctl")]
        );
        assert_eq!(m.vmm_bias, Some(0x7f00_0000_0000));
        assert_eq!(m.vmm_text, Some((0x7f00_0010_0000, 0x7f00_0040_0000)));
        assert!(m.complete);
        assert!(!parse_machine("kallsyms 1 T x\n").complete);
    }

    #[test]
    fn blocks_file() {
        let text = "\
# hotblocks: instructions executed per translation block
# total 1000
# blocks 7
# window closed marks 3 on 2 off 3
# vaddr executed runs insns percent
0xffff800000000010 600 100 6 60.0000
0x0000000040000000 300 30 10 30.0000
bogus
";
        let b = parse_blocks(text);
        assert_eq!(b.total, 1000);
        assert_eq!(b.window, "closed marks 3 on 2 off 3");
        assert_eq!(
            b.blocks,
            vec![
                Block {
                    vaddr: 0xffff_8000_0000_0010,
                    executed: 600
                },
                Block {
                    vaddr: 0x4000_0000,
                    executed: 300
                },
            ]
        );
    }

    #[test]
    fn attribution() {
        let blocks = Blocks {
            total: 1000,
            window: "none".into(),
            blocks: vec![
                Block {
                    vaddr: 0xffff_8000_0000_0000,
                    executed: 300,
                },
                Block {
                    vaddr: 0xffff_8000_0000_0010,
                    executed: 200,
                },
                Block {
                    vaddr: 0x4000_0010,
                    executed: 250,
                },
                Block {
                    vaddr: 0x100_0000,
                    executed: 50,
                },
            ],
        };
        let p = attribute(&blocks, &symbolizer());
        assert_eq!(p.total, 1000);
        assert_eq!(
            p.functions,
            vec![
                (Component::Microkernel, "mk_a".to_string(), 500),
                (Component::Extension, "ext_entry".to_string(), 250),
                (Component::Unknown, UNLISTED.to_string(), 200),
                (Component::Guest, NO_SYMBOL.to_string(), 50),
            ]
        );
        assert_eq!(
            p.components,
            vec![
                (Component::Microkernel, 500),
                (Component::Extension, 250),
                (Component::Unknown, 200),
                (Component::Guest, 50),
            ]
        );
        // Everything listed: no "not listed" line.
        let all = Blocks { total: 0, ..blocks };
        let p = attribute(&all, &symbolizer());
        assert_eq!(p.total, 800);
        assert!(p.functions.iter().all(|f| f.1 != UNLISTED));
    }
}
