//! Each fact raises the floor: tiny BPF ELF objects, assembled here from
//! hand-written instructions the way bpf-linker lays them out (a section per
//! program, callees in `.text`, legacy `bpf_map_def`s in `maps` as
//! aya-ebpf 0.2 writes them, relocations against map, function and section
//! symbols), analysed by the crate.

use std::collections::HashMap;

use object::{
    write::{Object as Elf, Relocation, SectionId, Symbol, SymbolSection},
    Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};
use tools_floor::{Analysis, Error, KernelVersion};

// Map types (enum bpf_map_type).
const HASH: u32 = 1;
const ARRAY: u32 = 2;
const PERF_EVENT_ARRAY: u32 = 4;
const PERCPU_HASH: u32 = 5;
const RINGBUF: u32 = 27;
// Helper ids (___BPF_FUNC_MAPPER).
const MAP_LOOKUP_ELEM: i32 = 1;
const PROBE_READ: i32 = 4;
const KTIME_GET_NS: i32 = 5;
const GET_CURRENT_TASK: i32 = 35;
const PERF_EVENT_OUTPUT: i32 = 25;
const PROBE_READ_STR: i32 = 45;
const RINGBUF_OUTPUT: i32 = 130;
const PROBE_READ_USER: i32 = 112;
const PROBE_READ_KERNEL: i32 = 113;
const PROBE_READ_USER_STR: i32 = 114;
// ELF relocation types of BPF.
const R_BPF_64_64: u32 = 1;
const R_BPF_64_32: u32 = 10;

/// One instruction slot, with the symbol its relocation names, if any.
struct I {
    bytes: [u8; 8],
    reloc: Option<(&'static str, u32)>,
}

fn raw(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> I {
    let mut bytes = [0; 8];
    bytes[0] = code;
    bytes[1] = (src << 4) | dst;
    bytes[2..4].copy_from_slice(&off.to_le_bytes());
    bytes[4..].copy_from_slice(&imm.to_le_bytes());
    I { bytes, reloc: None }
}

fn mov_imm(dst: u8, imm: i32) -> I {
    raw(0xb7, dst, 0, 0, imm)
}
fn mov_reg(dst: u8, src: u8) -> I {
    raw(0xbf, dst, src, 0, 0)
}
fn add_imm(dst: u8, imm: i32) -> I {
    raw(0x07, dst, 0, 0, imm)
}
/// `*(u64 *)(dst + off) = src`
fn stx_dw(dst: u8, off: i16, src: u8) -> I {
    raw(0x7b, dst, src, off, 0)
}
fn call(helper: i32) -> I {
    raw(0x85, 0, 0, 0, helper)
}
/// A call to a function, relocated against its symbol as clang emits it.
fn call_fn(name: &'static str) -> I {
    I { reloc: Some((name, R_BPF_64_32)), ..raw(0x85, 0, 1, 0, -1) }
}
fn exit() -> I {
    raw(0x95, 0, 0, 0, 0)
}
fn ja(off: i16) -> I {
    raw(0x05, 0, 0, off, 0)
}
/// `if dst == imm goto +off`
fn jeq_imm(dst: u8, imm: i32, off: i16) -> I {
    raw(0x15, dst, 0, off, imm)
}
/// `ld_imm64 dst, symbol + imm`: a map, or an offset into a data section.
fn ld_imm64(dst: u8, symbol: &'static str, imm: i32) -> [I; 2] {
    [I { reloc: Some((symbol, R_BPF_64_64)), ..raw(0x18, dst, 0, 0, imm) }, raw(0, 0, 0, 0, 0)]
}
fn ld_map(dst: u8, map: &'static str) -> [I; 2] {
    ld_imm64(dst, map, 0)
}
/// `r0 = 0; exit`
fn ret() -> [I; 2] {
    [mov_imm(0, 0), exit()]
}

/// Assembles a relocatable BPF ELF object.
struct Builder {
    elf: Elf<'static>,
    text: Option<SectionId>,
    sections: HashMap<String, SectionId>,
    relocs: Vec<(SectionId, u64, &'static str, u32)>,
}

impl Builder {
    fn new() -> Self {
        let mut elf = Elf::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
        let license = elf.add_section(Vec::new(), b"license".to_vec(), SectionKind::Data);
        elf.append_section_data(license, b"GPL\0", 1);
        Self { elf, text: None, sections: HashMap::new(), relocs: Vec::new() }
    }

    fn symbol(&mut self, name: &str, kind: SymbolKind, section: SectionId, value: u64, size: u64) {
        self.elf.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value,
            size,
            kind,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Section(section),
            flags: SymbolFlags::None,
        });
    }

    fn code(&mut self, section: SectionId, name: &str, code: impl IntoIterator<Item = I>) {
        let code: Vec<I> = code.into_iter().collect();
        let bytes: Vec<u8> = code.iter().flat_map(|i| i.bytes).collect();
        let offset = self.elf.append_section_data(section, &bytes, 8);
        self.symbol(name, SymbolKind::Text, section, offset, bytes.len() as u64);
        for (n, i) in code.iter().enumerate() {
            if let Some((symbol, r_type)) = i.reloc {
                self.relocs.push((section, offset + 8 * n as u64, symbol, r_type));
            }
        }
    }

    /// A program in its own section, e.g. `kprobe` or `raw_tp`.
    fn program(mut self, section: &str, name: &str, code: impl IntoIterator<Item = I>) -> Self {
        let id = self.elf.add_section(Vec::new(), section.as_bytes().to_vec(), SectionKind::Text);
        self.code(id, name, code);
        self
    }

    /// A function in `.text`, which programs call.
    fn function(mut self, name: &str, code: impl IntoIterator<Item = I>) -> Self {
        let text =
            *self.text.get_or_insert_with(|| self.elf.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text));
        self.code(text, name, code);
        self
    }

    /// A map as aya-ebpf 0.2 defines it: a `bpf_map_def` of seven u32
    /// (type, key size, value size, max entries, flags, id, pinning) in `maps`.
    fn map(mut self, name: &str, map_type: u32, key: u32, value: u32, max_entries: u32) -> Self {
        let maps = match self.sections.get("maps") {
            Some(&id) => id,
            None => {
                let id = self.elf.add_section(Vec::new(), b"maps".to_vec(), SectionKind::Data);
                self.sections.insert("maps".to_owned(), id);
                id
            }
        };
        let def: Vec<u8> = [map_type, key, value, max_entries, 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let offset = self.elf.append_section_data(maps, &def, 4);
        self.symbol(name, SymbolKind::Data, maps, offset, def.len() as u64);
        self
    }

    /// A global data section; instructions name it by its section name.
    fn data(mut self, section: &str, bytes: &[u8]) -> Self {
        let kind = if section.starts_with(".rodata") { SectionKind::ReadOnlyData } else { SectionKind::Data };
        let id = self.elf.add_section(Vec::new(), section.as_bytes().to_vec(), kind);
        self.elf.append_section_data(id, bytes, 8);
        self.sections.insert(section.to_owned(), id);
        self
    }

    fn build(mut self) -> Vec<u8> {
        for (section, offset, name, r_type) in std::mem::take(&mut self.relocs) {
            let symbol = match self.sections.get(name) {
                Some(&data) => self.elf.section_symbol(data),
                None => self.elf.symbol_id(name.as_bytes()).unwrap_or_else(|| panic!("no symbol {name}")),
            };
            self.elf
                .add_relocation(
                    section,
                    Relocation { offset, symbol, addend: 0, flags: RelocationFlags::Elf { r_type } },
                )
                .unwrap();
        }
        self.elf.write().unwrap()
    }

    fn analyse(self) -> Analysis {
        Analysis::parse(&self.build()).unwrap()
    }
}

fn v(major: u32, minor: u32) -> KernelVersion {
    KernelVersion(major, minor)
}

/// The floor of one program, and what it says why.
fn floor(analysis: &Analysis, program: &str) -> (KernelVersion, Vec<String>) {
    let floor = analysis.floor(&[program]).unwrap();
    println!("{program}: {floor}");
    for r in &floor.all {
        println!("  {r}");
    }
    (floor.version, floor.why.iter().map(|r| r.what.clone()).collect())
}

/// `r1 = map; r2 = r10 - 8; *(r2) = 0; call bpf_map_lookup_elem`
fn lookup(map: &'static str) -> Vec<I> {
    let mut code: Vec<I> = ld_map(1, map).into();
    code.extend([mov_reg(2, 10), add_imm(2, -8), mov_imm(3, 0), stx_dw(2, 0, 3), call(MAP_LOOKUP_ELEM)]);
    code
}

#[test]
fn plain_kprobe_with_ktime_and_a_hash_map_is_4_1() {
    let mut code = vec![call(KTIME_GET_NS)];
    code.extend(lookup("START"));
    code.extend(ret());
    let a = Builder::new().map("START", HASH, 8, 8, 1024).program("kprobe", "on_entry", code).analyse();
    assert_eq!(a.program_names(), ["on_entry"]);
    let (version, why) = floor(&a, "on_entry");
    assert_eq!(version, v(4, 1));
    assert_eq!(why, ["helper bpf_ktime_get_ns (5)", "program type kprobe"]);
    let floor = a.floor(&["on_entry"]).unwrap();
    let all: Vec<_> = floor.all.iter().map(|r| (r.version, r.what.as_str())).collect();
    assert_eq!(
        all,
        [
            (v(4, 1), "helper bpf_ktime_get_ns (5)"),
            (v(4, 1), "program type kprobe"),
            (v(3, 19), "helper bpf_map_lookup_elem (1)"),
            (v(3, 19), "map START (hash)"),
            (v(3, 19), "object map START (hash), created at load"),
        ]
    );
    assert_eq!(floor.all[0].programs, ["on_entry"]);
    assert!(floor.all[4].programs.is_empty(), "the object's own");
    assert_eq!(floor.instructions, 10);
    assert_eq!(floor.stack, 8);
}

#[test]
fn helper_get_current_task_is_4_8() {
    let a = Builder::new().program("kprobe", "p", [call(GET_CURRENT_TASK), mov_imm(0, 0), exit()]).analyse();
    assert_eq!(floor(&a, "p"), (v(4, 8), vec!["helper bpf_get_current_task (35)".to_owned()]));
}

#[test]
fn perf_event_output_is_4_4() {
    let mut code: Vec<I> = vec![mov_reg(6, 1)];
    code.extend(ld_map(2, "EVENTS"));
    code.extend([
        mov_reg(1, 6),
        mov_imm(3, 0),
        stx_dw(10, -16, 3),
        mov_reg(4, 10),
        add_imm(4, -16),
        mov_imm(5, 8),
        call(PERF_EVENT_OUTPUT),
    ]);
    code.extend(ret());
    let a = Builder::new().map("EVENTS", PERF_EVENT_ARRAY, 4, 4, 0).program("kprobe", "p", code).analyse();
    assert_eq!(floor(&a, "p"), (v(4, 4), vec!["helper bpf_perf_event_output (25)".to_owned()]));
    assert_eq!(a.floor(&["p"]).unwrap().stack, 16);
}

#[test]
fn per_cpu_map_is_4_6() {
    let mut code = lookup("COUNTS");
    code.extend(ret());
    let a = Builder::new().map("COUNTS", PERCPU_HASH, 8, 8, 64).program("kprobe", "p", code).analyse();
    let (version, why) = floor(&a, "p");
    assert_eq!(version, v(4, 6));
    assert_eq!(why, ["map COUNTS (percpu_hash)", "object map COUNTS (percpu_hash), created at load"]);
}

#[test]
fn ring_buffer_map_is_5_8() {
    let mut code: Vec<I> = ld_map(1, "EVENTS").into();
    code.extend([mov_reg(2, 10), add_imm(2, -8), mov_imm(3, 8), mov_imm(4, 0), call(RINGBUF_OUTPUT)]);
    code.extend(ret());
    let a = Builder::new().map("EVENTS", RINGBUF, 0, 0, 4096).program("tracepoint", "p", code).analyse();
    let (version, why) = floor(&a, "p");
    assert_eq!(version, v(5, 8));
    assert_eq!(
        why,
        ["helper bpf_ringbuf_output (130)", "map EVENTS (ringbuf)", "object map EVENTS (ringbuf), created at load"]
    );
}

#[test]
fn unused_ring_buffer_of_the_object_is_5_8() {
    let mut code = lookup("START");
    code.extend(ret());
    let a = Builder::new()
        .map("START", HASH, 8, 8, 64)
        .map("EVENTS", RINGBUF, 0, 0, 4096)
        .program("kprobe", "p", code)
        .analyse();
    assert_eq!(floor(&a, "p"), (v(5, 8), vec!["object map EVENTS (ringbuf), created at load".to_owned()]));
}

#[test]
fn raw_tracepoint_is_4_17() {
    let a = Builder::new().program("raw_tp", "p", ret()).analyse();
    assert_eq!(floor(&a, "p"), (v(4, 17), vec!["program type raw_tracepoint".to_owned()]));
}

#[test]
fn program_types_of_the_tracing_sections() {
    for (section, version) in [
        ("kretprobe", v(4, 1)),
        ("uprobe", v(4, 3)),
        ("uretprobe", v(4, 3)),
        ("uprobe.s", v(6, 0)),
        ("tracepoint", v(4, 7)),
        ("perf_event", v(4, 9)),
        ("raw_tracepoint", v(4, 17)),
        ("tp_btf", v(5, 5)),
        ("fentry", v(5, 5)),
        ("fexit.s", v(5, 10)),
    ] {
        let a = Builder::new().program(section, "p", ret()).analyse();
        assert_eq!(a.floor(&["p"]).unwrap().version, version, "{section}");
    }
}

#[test]
fn a_loop_is_5_3() {
    // r1 = 10; loop: r1 += -1; if r1 == 0 goto out; goto loop; out: exit
    let code = [mov_imm(1, 10), add_imm(1, -1), jeq_imm(1, 0, 1), ja(-3), mov_imm(0, 0), exit()];
    let a = Builder::new().program("kprobe", "p", code).analyse();
    assert_eq!(floor(&a, "p"), (v(5, 3), vec!["bounded loop (jump from instruction 3 back to 1)".to_owned()]));
}

#[test]
fn a_jump_to_an_earlier_block_is_no_loop() {
    // goto 3; 1: r0 = 0; exit; 3: goto 1 -- backwards, but no cycle: the
    // verifier before 5.3 only rejects a jump to an instruction on the path
    // that reached it.
    let code = [ja(2), mov_imm(0, 0), exit(), ja(-3)];
    let a = Builder::new().program("kprobe", "p", code).analyse();
    assert_eq!(floor(&a, "p").0, v(4, 1));
}

#[test]
fn a_loop_in_a_callee_is_a_loop() {
    let callee = [mov_imm(1, 3), add_imm(1, -1), jeq_imm(1, 0, 1), ja(-3), mov_imm(0, 0), exit()];
    let a = Builder::new().program("kprobe", "p", [call_fn("f"), exit()]).function("f", callee).analyse();
    let (version, why) = floor(&a, "p");
    assert_eq!(version, v(5, 3));
    assert_eq!(why, ["bounded loop (jump from instruction 5 back to 3)"]);
}

#[test]
fn a_bpf_to_bpf_call_is_4_16_and_links_the_callee() {
    let mut callee = vec![mov_reg(1, 10), add_imm(1, -40), mov_imm(2, 40), mov_imm(3, 0), call(PROBE_READ)];
    callee.extend(ret());
    let code = [call_fn("helper_fn"), exit()];
    let a = Builder::new().program("kprobe", "p", code).function("helper_fn", callee).analyse();
    let (version, why) = floor(&a, "p");
    assert_eq!(version, v(4, 16));
    assert_eq!(why, ["bpf-to-bpf call"]);
    let floor = a.floor(&["p"]).unwrap();
    assert!(floor.all.iter().any(|r| r.what == "helper bpf_probe_read (4)"), "the callee's helper counts");
    assert_eq!(floor.instructions, 2 + 7, "the callee is appended");
    // Two frames, each rounded up to 32 bytes: 32 (caller) + 64 (40 bytes).
    assert_eq!(floor.stack, 96);
}

#[test]
fn a_rodata_load_is_5_2() {
    let mut code: Vec<I> = ld_imm64(1, ".rodata", 8).into();
    code.extend([raw(0x79, 0, 1, 0, 0), exit()]); // r0 = *(u64 *)(r1 + 0)
    let a = Builder::new().data(".rodata", &[0; 16]).program("kprobe", "p", code).analyse();
    assert_eq!(floor(&a, "p"), (v(5, 2), vec!["global data (.rodata)".to_owned()]));
    // The data map is not one aya creates on kernels without global data.
    assert!(!a.floor(&["p"]).unwrap().all.iter().any(|r| r.what.starts_with("object map")));
}

#[test]
fn rodata_of_another_program_is_5_2_for_all() {
    let mut code: Vec<I> = ld_imm64(1, ".rodata", 0).into();
    code.extend([raw(0x79, 0, 1, 0, 0), exit()]);
    let a = Builder::new()
        .data(".rodata", &[0; 8])
        .program("kprobe", "clean", ret())
        .program("kprobe", "uses_rodata", code)
        .analyse();
    assert_eq!(
        floor(&a, "clean"),
        (v(5, 2), vec!["object global data (.rodata) of uses_rodata, relocated at load".to_owned()])
    );
    // Unused data sections are neither created nor relocated.
    let a = Builder::new().data(".rodata", &[0; 8]).program("kprobe", "p", ret()).analyse();
    assert_eq!(a.floor(&["p"]).unwrap().version, v(4, 1));
}

#[test]
fn probe_read_kernel_and_user_are_rewritten_as_aya_does() {
    let code = [
        call(PROBE_READ_KERNEL),
        call(PROBE_READ_USER),
        call(PROBE_READ_USER_STR),
        call(PROBE_READ_STR),
        mov_imm(0, 0),
        exit(),
    ];
    let a = Builder::new().program("kprobe", "p", code).analyse();
    let floor = a.floor(&["p"]).unwrap();
    let all: Vec<_> = floor.all.iter().map(|r| (r.version, r.what.as_str())).collect();
    assert_eq!(
        all,
        [
            (v(4, 11), "helper bpf_probe_read_str (45)"),
            (v(4, 11), "helper bpf_probe_read_str (45), aya's stand-in for bpf_probe_read_user_str (114)"),
            (v(4, 1), "helper bpf_probe_read (4), aya's stand-in for bpf_probe_read_kernel (113)"),
            (v(4, 1), "helper bpf_probe_read (4), aya's stand-in for bpf_probe_read_user (112)"),
            (v(4, 1), "program type kprobe"),
        ]
    );
}

#[test]
fn jmp32_and_atomics_from_the_cpu_setting() {
    // if w1 == 0 goto +0 (JMP32); lock *(u64 *)(r10 - 8) += r1 (plain XADD)
    let code =
        [mov_imm(1, 0), raw(0x16, 1, 0, 0, 0), stx_dw(10, -8, 1), raw(0xdb, 10, 1, -8, 0), mov_imm(0, 0), exit()];
    let a = Builder::new().program("kprobe", "p", code).analyse();
    assert_eq!(floor(&a, "p"), (v(5, 1), vec!["JMP32 instructions".to_owned()]));
    // r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)
    let code = [mov_imm(1, 0), stx_dw(10, -8, 1), raw(0xdb, 10, 1, -8, 0x01), mov_imm(0, 0), exit()];
    let a = Builder::new().program("kprobe", "p", code).analyse();
    assert_eq!(floor(&a, "p"), (v(5, 12), vec!["atomic operation 0x1 (fetch/xchg/cmpxchg/and/or/xor)".to_owned()]));
}

#[test]
fn the_v2_jumps_are_4_14() {
    // if r1 < 1 goto +0 (JLT, 0xa5); the v1 CPU has only the greater-than jumps.
    let code = [mov_imm(1, 0), raw(0xa5, 1, 0, 0, 1), mov_imm(0, 0), exit()];
    let a = Builder::new().program("kprobe", "p", code).analyse();
    assert_eq!(floor(&a, "p"), (v(4, 14), vec!["JLT/JLE/JSLT/JSLE jumps".to_owned()]));
    // if r1 s< r2 goto +0 (JSLT with a register, 0xcd), as aya-ebpf's bound checks write it.
    let code = [mov_imm(1, 0), mov_imm(2, 0), raw(0xcd, 1, 2, 0, 0), mov_imm(0, 0), exit()];
    let a = Builder::new().program("kprobe", "p", code).analyse();
    assert_eq!(floor(&a, "p").0, v(4, 14));
    // if r1 > 1 goto +0 (JGT, 0x25): v1, no more than the program type.
    let code = [mov_imm(1, 0), raw(0x25, 1, 0, 0, 1), mov_imm(0, 0), exit()];
    let a = Builder::new().program("kprobe", "p", code).analyse();
    assert_eq!(floor(&a, "p").0, v(4, 1));
}

#[test]
fn more_than_4096_instructions_is_5_2() {
    let code = (0..4096).map(|_| mov_imm(0, 0)).chain([exit()]);
    let a = Builder::new().program("kprobe", "p", code).analyse();
    assert_eq!(floor(&a, "p"), (v(5, 2), vec!["more than 4096 instructions (4097)".to_owned()]));
    assert_eq!(a.floor(&["p"]).unwrap().instructions, 4097);
}

#[test]
fn errors() {
    let deep = [mov_imm(1, 0), stx_dw(10, -520, 1), mov_imm(0, 0), exit()];
    let a = Builder::new()
        .program("kprobe", "deep", deep)
        .program("xdp", "packets", ret())
        .program("kprobe", "unknown_helper", [call(999), exit()])
        .analyse();
    let err = |programs: &[&str]| a.floor(programs).unwrap_err();
    assert!(matches!(err(&["deep"]), Error::StackTooDeep { bytes: 520, .. }), "{}", err(&["deep"]));
    assert!(matches!(err(&["nope"]), Error::UnknownProgram { .. }));
    assert!(matches!(err(&[]), Error::NoPrograms));
    assert!(matches!(err(&["unknown_helper"]), Error::UnknownHelper { id: 999, .. }));
    let e = err(&["packets"]);
    assert!(matches!(e, Error::UnsupportedProgramType { .. }), "{e}");
    assert!(e.to_string().contains("section `xdp`"), "{e}");
}

#[test]
fn a_rung_takes_the_newest_of_its_programs() {
    let a = Builder::new()
        .map("SLOTS", ARRAY, 4, 8, 1)
        .program("kprobe", "old", ret())
        .program("raw_tp", "new", ret())
        .analyse();
    let floor = a.floor(&["old", "new"]).unwrap();
    assert_eq!(floor.version, v(4, 17));
    assert_eq!(floor.why[0].programs, ["new"]);
    assert_eq!(a.floor(&["old"]).unwrap().version, v(4, 1));
}

/// The project's own objects, when they have been built (they are too big
/// to keep here): `TOOLS_FLOOR_OBJECTS=target/x86_64-unknown-linux-musl/
/// release/build/tools-user-*/out cargo test -p tools-floor -- --ignored`.
#[test]
#[ignore = "needs tools-user's eBPF objects: set TOOLS_FLOOR_OBJECTS to the directory they were built in"]
fn the_projects_objects() {
    let dir = std::env::var("TOOLS_FLOOR_OBJECTS").expect("TOOLS_FLOOR_OBJECTS");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let a = Analysis::parse(&std::fs::read(&path).unwrap()).unwrap();
        seen += 1;
        println!("{}:", path.display());
        for program in a.program_names() {
            match a.floor(&[&program]) {
                Ok(floor) => {
                    println!("  {program}: {floor}");
                    for r in &floor.all {
                        println!("      {r}");
                    }
                }
                Err(e) => println!("  {program}: {e}"),
            }
        }
    }
    assert!(seen > 0);
}
