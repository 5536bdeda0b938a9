//! The oldest Linux kernel whose BPF loader and verifier can accept a set of
//! programs of a compiled BPF object (one "rung" of a tool: the programs it
//! attaches together), from static facts, with the reason.
//!
//! The object is read the way aya 0.14 loads it, with aya's own aya-obj:
//! parsed, its map references relocated (to made-up fds, so each `ld_imm64`
//! says which map it loads), its bpf-to-bpf callees linked into each program
//! and aya's helper rewrite applied (`bpf_probe_read_kernel`/`_user` become
//! `bpf_probe_read` on kernels that lack them). Then each program's
//! instructions are read for what each kernel release added: its program
//! type, helpers, maps, bpf-to-bpf calls, loops, global data, size, stack,
//! and instructions of newer CPU versions. [`versions::TABLE`] holds every
//! version and its source.
//!
//! Two facts are about the whole object, not the programs: aya creates every
//! map of an object when it loads it, and relocates every function of it
//! (so a `.rodata` reference anywhere fails the load on a kernel without
//! global data, where aya does not create that map).
//!
//! This is static: it says what a kernel must have, not that the verifier
//! will prove the programs safe there.

pub mod versions;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt,
};

use aya_obj::{generated::bpf_insn, maps::Map, EbpfSectionKind, Features, Object, ProgramSection};
use object::read::{Object as _, ObjectSection as _};
pub use versions::KernelVersion;
use versions::{lookup, Feature, Insn};

/// One thing a kernel must have, and the first release that has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub version: KernelVersion,
    /// E.g. "helper bpf_get_current_task (35)", "bpf-to-bpf call",
    /// "global data (.rodata)", "map START (percpu_hash)", "program type
    /// kprobe", "object map EVENTS (ringbuf), created at load".
    pub what: String,
    /// The programs of the set that need it; empty for what the object
    /// needs as a whole.
    pub programs: Vec<String>,
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.version, self.what)?;
        if !self.programs.is_empty() {
            write!(f, " [{}]", self.programs.join(", "))?;
        }
        Ok(())
    }
}

/// The oldest kernel for a set of programs.
#[derive(Debug, Clone)]
pub struct Floor {
    /// The newest version any requirement needs.
    pub version: KernelVersion,
    /// The requirements at that version.
    pub why: Vec<Requirement>,
    /// Every requirement, newest first.
    pub all: Vec<Requirement>,
    /// Instructions of the largest program, after linking its callees.
    pub instructions: usize,
    /// Bytes of stack of the deepest program: its deepest `r10` offset, or
    /// with bpf-to-bpf calls the deepest call chain's frames, each rounded
    /// up to 32 bytes as the verifier adds them.
    pub stack: usize,
}

impl fmt::Display for Floor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (", self.version)?;
        for (n, r) in self.why.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            f.write_str(&r.what)?;
        }
        write!(f, "; {} instructions, {} bytes of stack)", self.instructions, self.stack)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the BPF object as aya does: {0}")]
    Load(String),
    #[error("no program named `{name}` in the object (it has: {known})")]
    UnknownProgram { name: String, known: String },
    #[error("no programs asked about")]
    NoPrograms,
    #[error("link type `{0}` is not in the version table")]
    UnknownLinkType(String),
    #[error("program `{program}` is in section `{section}`, not a tracing program type the version table covers")]
    UnsupportedProgramType { program: String, section: String },
    #[error("program `{program}` calls helper id {id}, which the version table does not have")]
    UnknownHelper { program: String, id: i32 },
    #[error("map `{map}` has map type {map_type}, which the version table does not have")]
    UnknownMapType { map: String, map_type: u32 },
    #[error("program `{program}` uses {bytes} bytes of stack: no kernel's verifier allows more than 512")]
    StackTooDeep { program: String, bytes: usize },
}

/// An error and its causes, on one line (aya-obj's errors keep the cause
/// out of their own message).
fn load_error(error: &dyn std::error::Error) -> Error {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    Error::Load(text)
}

/// The verifier's limit on one program's stack, on every kernel.
const MAX_STACK: usize = 512;
/// `BPF_MAXINSNS`: the most instructions a program could have before 5.2.
const MAX_OLD_INSNS: usize = 4096;
/// The fd the first map gets; any value aya-obj copies into `imm` works.
const FIRST_FD: i32 = 100;

// Instruction encoding (uapi linux/bpf.h, linux/bpf_common.h).
const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;
const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW: two instruction slots
const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
const OP_JA: u8 = 0x00;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
const OP_ADD: u8 = 0x00;
const OP_SUB: u8 = 0x10;
const OP_DIV: u8 = 0x30;
const OP_MOD: u8 = 0x90;
const OP_MOV: u8 = 0xb0;
const OP_END: u8 = 0xd0;
const SRC_REG: u8 = 0x08; // BPF_X
const MODE_ATOMIC: u8 = 0xc0;
const MODE_MEMSX: u8 = 0x80;
const ATOMIC_ADD: i32 = 0x00; // BPF_ADD without BPF_FETCH: the old BPF_XADD
const LOAD_ACQ: i32 = 0x100;
const STORE_REL: i32 = 0x110;
const PSEUDO_MAP_FD: u8 = 1;
const PSEUDO_MAP_VALUE: u8 = 2;
const PSEUDO_FUNC: u8 = 4;
const PSEUDO_CALL: u8 = 1;
const PSEUDO_KFUNC_CALL: u8 = 2;
const FP: usize = 10;

/// A map, by the fd its `ld_imm64`s were relocated to.
#[derive(Debug)]
struct MapInfo {
    name: String,
    map_type: u32,
    /// `.rodata*`, `.data*` or `.bss*`: global data, which aya creates only
    /// where the kernel has global data.
    data: bool,
}

/// A program, linked as aya links it.
#[derive(Debug)]
struct Linked {
    section: ProgramSection,
    section_name: String,
    instructions: Vec<bpf_insn>,
    /// Helper calls aya rewrote: instruction index → the helper id the
    /// compiler wrote.
    rewritten: HashMap<usize, i32>,
}

/// A parsed and linked BPF object.
#[derive(Debug)]
pub struct Analysis {
    programs: BTreeMap<String, Linked>,
    maps: BTreeMap<i32, MapInfo>,
    /// Global data section → the functions that load its address.
    data_users: BTreeMap<String, BTreeSet<String>>,
}

impl Analysis {
    /// Parses `elf` and links its programs the way aya's loader does.
    pub fn parse(elf: &[u8]) -> Result<Self, Error> {
        let mut obj = Object::parse(elf).map_err(|e| load_error(&e))?;
        let file = object::read::File::parse(elf).map_err(|e| load_error(&e))?;

        // Every map gets an fd, in name order, as aya's loader gives each
        // created map one; relocate_maps writes it into the ld_imm64s.
        let maps = obj.maps.clone();
        let by_name: BTreeMap<&String, &Map> = maps.iter().collect();
        let fds: Vec<(&str, i32, &Map)> =
            by_name.iter().zip(FIRST_FD..).map(|((name, map), fd)| (name.as_str(), fd, *map)).collect();
        let infos = fds
            .iter()
            .map(|&(name, fd, map)| {
                let data = matches!(
                    map.section_kind(),
                    EbpfSectionKind::Rodata | EbpfSectionKind::Data | EbpfSectionKind::Bss
                );
                (fd, MapInfo { name: name.to_owned(), map_type: map.map_type(), data })
            })
            .collect::<BTreeMap<_, _>>();
        // As aya: every section a function was parsed from.
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
        obj.relocate_maps(fds.iter().copied(), &text_sections).map_err(|e| load_error(&e))?;

        // Who uses global data, per function and before linking, so each
        // function is named for its own instructions.
        let mut data_users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for function in obj.functions.values() {
            for (_, ins) in slots(&function.instructions) {
                if let Some(map) = loaded_map(ins).and_then(|fd| infos.get(&fd)) {
                    if map.data {
                        data_users.entry(map.name.clone()).or_default().insert(function.name.clone());
                    }
                }
            }
        }

        obj.relocate_calls(&text_sections).map_err(|e| load_error(&e))?;
        let linked: Vec<(String, Vec<bpf_insn>)> = obj
            .programs
            .iter()
            .map(|(name, program)| (name.clone(), obj.functions[&program.function_key()].instructions.clone()))
            .collect();
        // aya's rewrite on a kernel without bpf_probe_read_kernel (5.5):
        // `Features::default()` is a kernel with none of the probed features.
        obj.sanitize_functions(&Features::default());

        let mut programs = BTreeMap::new();
        for (name, before) in linked {
            let program = &obj.programs[&name];
            let instructions = obj.functions[&program.function_key()].instructions.clone();
            let rewritten = before
                .iter()
                .zip(&instructions)
                .enumerate()
                .filter(|(_, (b, a))| b.code == CALL && b.imm != a.imm)
                .map(|(n, (b, _))| (n, b.imm))
                .collect();
            let section_name = file
                .section_by_index(object::SectionIndex(program.section_index))
                .and_then(|s| s.name().map(str::to_owned))
                .map_err(|e| load_error(&e))?;
            programs.insert(name, Linked { section: program.section.clone(), section_name, instructions, rewritten });
        }
        Ok(Self { programs, maps: infos, data_users })
    }

    /// The object's programs, by the names aya knows them by.
    pub fn program_names(&self) -> Vec<String> {
        self.programs.keys().cloned().collect()
    }

    /// The oldest kernel that can load `programs` of this object together.
    pub fn floor(&self, programs: &[&str]) -> Result<Floor, Error> {
        self.floor_linked(programs, &[])
    }

    /// As [`Analysis::floor`], with `links`: (program, link type) for the
    /// programs the loader attaches with a link of a later kernel than
    /// their program type (`uprobe_multi`).
    pub fn floor_linked(&self, programs: &[&str], links: &[(&str, &'static str)]) -> Result<Floor, Error> {
        if programs.is_empty() {
            return Err(Error::NoPrograms);
        }
        // what → (version, programs needing it)
        let mut needs: BTreeMap<String, (KernelVersion, BTreeSet<String>)> = BTreeMap::new();
        for &(program, link) in links {
            let row = lookup(Feature::LinkType(link)).ok_or_else(|| Error::UnknownLinkType(link.to_owned()))?;
            let need = needs.entry(format!("link type {link}")).or_insert_with(|| (row.version, BTreeSet::new()));
            need.1.insert(program.to_owned());
        }
        let (mut instructions, mut stack) = (0, 0);
        for &name in programs {
            let linked = self.programs.get(name).ok_or_else(|| Error::UnknownProgram {
                name: name.to_owned(),
                known: self.program_names().join(", "),
            })?;
            let facts = self.facts(name, linked)?;
            if facts.stack > MAX_STACK {
                return Err(Error::StackTooDeep { program: name.to_owned(), bytes: facts.stack });
            }
            instructions = instructions.max(linked.instructions.len());
            stack = stack.max(facts.stack);
            for (version, what) in facts.needs {
                needs.entry(what).or_insert_with(|| (version, BTreeSet::new())).1.insert(name.to_owned());
            }
        }

        // The object's own needs: every map aya creates with it...
        for map in self.maps.values().filter(|m| !m.data) {
            let (version, type_name) = self.map_type(map)?;
            needs.insert(format!("object map {} ({type_name}), created at load", map.name), (version, BTreeSet::new()));
        }
        // ...and every global data reference it relocates, attached or not.
        let global_data = lookup(Feature::Insn(Insn::GlobalData)).expect("in the table");
        for (section, users) in &self.data_users {
            if !needs.contains_key(&format!("global data ({section})")) {
                let users = users.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
                needs.insert(
                    format!("object global data ({section}) of {users}, relocated at load"),
                    (global_data.version, BTreeSet::new()),
                );
            }
        }

        let mut all: Vec<Requirement> = needs
            .into_iter()
            .map(|(what, (version, programs))| Requirement { version, what, programs: programs.into_iter().collect() })
            .collect();
        all.sort_by(|a, b| b.version.cmp(&a.version).then_with(|| a.what.cmp(&b.what)));
        let version = all[0].version;
        let why = all.iter().filter(|r| r.version == version).cloned().collect();
        Ok(Floor { version, why, all, instructions, stack })
    }

    fn map_type(&self, map: &MapInfo) -> Result<(KernelVersion, &'static str), Error> {
        lookup(Feature::MapType(map.map_type))
            .map(|row| (row.version, row.name))
            .ok_or_else(|| Error::UnknownMapType { map: map.name.clone(), map_type: map.map_type })
    }

    /// What one linked program needs.
    fn facts(&self, name: &str, linked: &Linked) -> Result<Facts, Error> {
        let mut needs = Vec::new();
        let insn = |feature: Insn| lookup(Feature::Insn(feature)).expect("every Insn is in the table");
        let mut need = |feature: Insn, what: String| needs.push((insn(feature).version, what));

        let unsupported =
            || Error::UnsupportedProgramType { program: name.to_owned(), section: linked.section_name.clone() };
        let kind = program_type(&linked.section).ok_or_else(unsupported)?;
        let row = lookup(Feature::ProgramType(kind)).ok_or_else(unsupported)?;
        let program_type = (row.version, format!("program type {kind}"));

        let count = linked.instructions.len();
        if count > MAX_OLD_INSNS {
            need(Insn::MoreThan4096, format!("more than {MAX_OLD_INSNS} instructions ({count})"));
        }
        let mut other = vec![program_type];
        if let Some((from, to)) = back_edge(&linked.instructions) {
            need(Insn::Loop, format!("bounded loop (jump from instruction {from} back to {to})"));
        }
        for (n, ins) in slots(&linked.instructions) {
            let class = ins.code & 0x07;
            if let Some(fd) = loaded_map(ins) {
                let map = self.maps.get(&fd).expect("relocate_maps only writes fds it was given");
                if map.data {
                    need(Insn::GlobalData, format!("global data ({})", map.name));
                } else {
                    let (version, type_name) = self.map_type(map)?;
                    other.push((version, format!("map {} ({type_name})", map.name)));
                }
            } else if ins.code == LD_IMM64 && ins.src_reg() == PSEUDO_FUNC {
                need(Insn::FunctionReference, "function reference (callback)".to_owned());
            }
            if ins.code == CALL {
                match ins.src_reg() {
                    0 => {
                        let id = ins.imm;
                        let row = lookup(Feature::Helper(id))
                            .ok_or_else(|| Error::UnknownHelper { program: name.to_owned(), id })?;
                        let mut what = format!("helper bpf_{} ({id})", row.name);
                        if let Some(&was) = linked.rewritten.get(&n) {
                            let was_name = lookup(Feature::Helper(was)).map_or("?", |r| r.name);
                            what.push_str(&format!(", aya's stand-in for bpf_{was_name} ({was})"));
                        }
                        other.push((row.version, what));
                    }
                    PSEUDO_CALL => need(Insn::BpfToBpfCall, "bpf-to-bpf call".to_owned()),
                    PSEUDO_KFUNC_CALL => need(Insn::KfuncCall, "kfunc call".to_owned()),
                    _ => {}
                }
            }
            if class == CLASS_JMP32 {
                need(Insn::Jmp32, "JMP32 instructions".to_owned());
            }
            // JLT, JLE, JSLT, JSLE: the v2 CPU's jumps.
            if class == CLASS_JMP && matches!(ins.code & 0xf0, 0xa0 | 0xb0 | 0xc0 | 0xd0) {
                need(Insn::JumpLessThan, "JLT/JLE/JSLT/JSLE jumps".to_owned());
            }
            if class == CLASS_STX && ins.code & 0xe0 == MODE_ATOMIC {
                match ins.imm {
                    ATOMIC_ADD => {}
                    LOAD_ACQ | STORE_REL => {
                        need(Insn::LoadAcquireStoreRelease, "load-acquire/store-release".to_owned());
                    }
                    op => need(Insn::AtomicFetch, format!("atomic operation {op:#x} (fetch/xchg/cmpxchg/and/or/xor)")),
                }
            }
            if is_cpu_v4(ins) {
                need(Insn::CpuV4, "cpu v4 instructions".to_owned());
            }
        }
        needs.extend(other);
        Ok(Facts { needs, stack: stack_depth(&linked.instructions) })
    }
}

struct Facts {
    needs: Vec<(KernelVersion, String)>,
    stack: usize,
}

/// The tracing program types the table has, by aya's section names.
fn program_type(section: &ProgramSection) -> Option<&'static str> {
    use ProgramSection as S;
    Some(match section {
        S::KProbe => "kprobe",
        S::KRetProbe => "kretprobe",
        S::UProbe { sleepable: false } => "uprobe",
        S::UProbe { sleepable: true } => "uprobe.s",
        S::URetProbe { sleepable: false } => "uretprobe",
        S::URetProbe { sleepable: true } => "uretprobe.s",
        S::TracePoint => "tracepoint",
        S::RawTracePoint => "raw_tracepoint",
        S::PerfEvent => "perf_event",
        S::BtfTracePoint => "tp_btf",
        S::FEntry { sleepable: false } => "fentry",
        S::FEntry { sleepable: true } => "fentry.s",
        S::FExit { sleepable: false } => "fexit",
        S::FExit { sleepable: true } => "fexit.s",
        S::Lsm { sleepable: false } => "lsm",
        S::Lsm { sleepable: true } => "lsm.s",
        S::Iter { sleepable: false } => "iter",
        _ => return None,
    })
}

/// The first jump that closes a cycle of the control flow, as the verifier
/// looks for them: a depth-first walk from the first instruction (into
/// callees too, as check_cfg does) that reaches an instruction still on its
/// path. Before 5.3 check_cfg rejects it ("back-edge from insn X to Y"). A
/// jump to an earlier address is not always one: compilers place blocks
/// after the code that continues them.
fn back_edge(instructions: &[bpf_insn]) -> Option<(usize, usize)> {
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let at = |n: usize, offset: i32| usize::try_from(n as i64 + i64::from(offset) + 1).ok();
    let successors = |n: usize| -> [Option<usize>; 2] {
        let ins = &instructions[n];
        let class = ins.code & 0x07;
        let op = ins.code & 0xf0;
        if ins.code == LD_IMM64 {
            // A callback's address is an edge into it, as for a call.
            let callback = (ins.src_reg() == PSEUDO_FUNC).then(|| at(n, ins.imm)).flatten();
            return [Some(n + 2), callback];
        }
        if class != CLASS_JMP && class != CLASS_JMP32 {
            return [Some(n + 1), None];
        }
        match op {
            OP_EXIT => [None, None],
            OP_CALL if ins.src_reg() == PSEUDO_CALL => [Some(n + 1), at(n, ins.imm)],
            OP_CALL => [Some(n + 1), None],
            // `gotol` (JMP32 | JA) keeps its offset in imm.
            OP_JA if class == CLASS_JMP32 => [at(n, ins.imm), None],
            OP_JA => [at(n, i32::from(ins.off)), None],
            _ => [Some(n + 1), at(n, i32::from(ins.off))],
        }
    };
    let mut state = vec![0u8; instructions.len()];
    let mut path: Vec<(usize, usize)> = Vec::new(); // (instruction, next successor to walk)
    if !instructions.is_empty() {
        state[0] = ON_PATH;
        path.push((0, 0));
    }
    while let Some((n, next)) = path.last_mut() {
        let n = *n;
        let Some(edge) = successors(n).get(*next).copied() else {
            state[n] = DONE;
            path.pop();
            continue;
        };
        *next += 1;
        match edge.filter(|&t| t < instructions.len()) {
            Some(t) if state[t] == ON_PATH => return Some((n, t)),
            Some(t) if state[t] == 0 => {
                state[t] = ON_PATH;
                path.push((t, 0));
            }
            _ => {}
        }
    }
    None
}

/// The instructions with their indexes, without the second slot of each
/// `ld_imm64`.
fn slots(instructions: &[bpf_insn]) -> impl Iterator<Item = (usize, &bpf_insn)> {
    let mut skip = false;
    instructions.iter().enumerate().filter(move |(_, ins)| {
        let second = skip;
        skip = !second && ins.code == LD_IMM64;
        !second
    })
}

/// The fd a relocated `ld_imm64` loads a map (or its value) from.
fn loaded_map(ins: &bpf_insn) -> Option<i32> {
    (ins.code == LD_IMM64 && matches!(ins.src_reg(), PSEUDO_MAP_FD | PSEUDO_MAP_VALUE)).then_some(ins.imm)
}

/// Instructions that only CPU v4 (Linux 6.6) has.
fn is_cpu_v4(ins: &bpf_insn) -> bool {
    let class = ins.code & 0x07;
    let op = ins.code & 0xf0;
    match class {
        // Sign-extending loads.
        CLASS_LDX => ins.code & 0xe0 == MODE_MEMSX,
        // movsx (and arena's address-space cast), sdiv/smod, bswap.
        CLASS_ALU | CLASS_ALU64 => {
            (op == OP_MOV && ins.off != 0)
                || ((op == OP_DIV || op == OP_MOD) && ins.off == 1)
                || (class == CLASS_ALU64 && op == OP_END)
        }
        // gotol.
        CLASS_JMP32 => op == OP_JA,
        _ => false,
    }
}

/// The program's stack use: its deepest `r10` offset if it is one frame;
/// with bpf-to-bpf calls (or callbacks), the deepest chain of frames, each
/// rounded up to 32 bytes as the verifier's check_max_stack_depth adds them.
fn stack_depth(instructions: &[bpf_insn]) -> usize {
    let target = |n: usize, ins: &bpf_insn| (n as i64 + i64::from(ins.imm) + 1).max(0) as usize;
    let is_subcall = |ins: &bpf_insn| {
        (ins.code == CALL && ins.src_reg() == PSEUDO_CALL) || (ins.code == LD_IMM64 && ins.src_reg() == PSEUDO_FUNC)
    };
    let mut starts = BTreeSet::from([0]);
    for (n, ins) in slots(instructions) {
        if is_subcall(ins) {
            starts.insert(target(n, ins).min(instructions.len()));
        }
    }
    let starts: Vec<usize> = starts.into_iter().filter(|&s| s < instructions.len()).collect();
    if starts.len() <= 1 {
        return frame_depth(instructions);
    }
    let frame_of = |n: usize| starts.partition_point(|&s| s <= n) - 1;
    let frames: Vec<(usize, Vec<usize>)> = starts
        .iter()
        .enumerate()
        .map(|(k, &start)| {
            let end = starts.get(k + 1).copied().unwrap_or(instructions.len());
            let callees = slots(&instructions[start..end])
                .filter(|(_, ins)| is_subcall(ins))
                .map(|(n, ins)| frame_of(target(start + n, ins).min(instructions.len() - 1)))
                .collect();
            (frame_depth(&instructions[start..end]), callees)
        })
        .collect();
    fn chain(k: usize, frames: &[(usize, Vec<usize>)], visiting: &mut Vec<bool>) -> usize {
        if visiting[k] {
            return 0; // recursion: the verifier rejects it; don't loop here
        }
        visiting[k] = true;
        let (depth, callees) = &frames[k];
        let deepest = callees.iter().map(|&c| chain(c, frames, visiting)).max().unwrap_or(0);
        visiting[k] = false;
        (*depth).max(1).next_multiple_of(32) + deepest
    }
    chain(0, &frames, &mut vec![false; frames.len()])
}

/// The deepest byte below `r10` one frame touches: loads and stores through
/// `r10` or a register set to `r10 + constant`, and such pointers passed to
/// helpers (a helper writes at and above them). Registers are followed in
/// instruction order, which is how compilers emit these.
fn frame_depth(instructions: &[bpf_insn]) -> usize {
    let mut fp: [Option<i64>; 11] = [None; 11];
    fp[FP] = Some(0);
    let mut deepest = 0i64;
    let mut touch = |offset: i64| deepest = deepest.max(-offset);
    for (_, ins) in slots(instructions) {
        let (dst, src) = (usize::from(ins.dst_reg()).min(FP), usize::from(ins.src_reg()).min(FP));
        let class = ins.code & 0x07;
        let off = i64::from(ins.off);
        let imm = i64::from(ins.imm);
        let mut written = None;
        match class {
            CLASS_LDX => {
                if let Some(k) = fp[src] {
                    touch(k + off);
                }
                written = Some(dst);
            }
            CLASS_ST | CLASS_STX => {
                if let Some(k) = fp[dst] {
                    touch(k + off);
                }
                if class == CLASS_STX && ins.code & 0xe0 == MODE_ATOMIC && ins.imm != ATOMIC_ADD {
                    // Fetching atomics write the source register (cmpxchg r0).
                    fp[0] = None;
                    written = Some(src);
                }
            }
            CLASS_ALU64 if ins.code == CLASS_ALU64 | OP_MOV | SRC_REG && ins.off == 0 => {
                fp[dst] = fp[src]; // r10 itself is put back below
            }
            CLASS_ALU64 if ins.code == CLASS_ALU64 | OP_ADD => fp[dst] = fp[dst].map(|k| k + imm),
            CLASS_ALU64 if ins.code == CLASS_ALU64 | OP_SUB => fp[dst] = fp[dst].map(|k| k - imm),
            CLASS_ALU | CLASS_ALU64 | CLASS_LD => written = Some(dst),
            CLASS_JMP if ins.code == CALL => {
                for k in fp[1..=5].iter().flatten() {
                    touch(*k);
                }
                fp[..=5].fill(None);
            }
            _ => {}
        }
        if let Some(reg) = written.filter(|&r| r != FP) {
            fp[reg] = None;
        }
        fp[FP] = Some(0);
    }
    deepest.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tracing_section_has_a_row() {
        use ProgramSection as S;
        for sleepable in [false, true] {
            for section in [
                S::KProbe,
                S::KRetProbe,
                S::UProbe { sleepable },
                S::URetProbe { sleepable },
                S::TracePoint,
                S::RawTracePoint,
                S::PerfEvent,
                S::BtfTracePoint,
                S::FEntry { sleepable },
                S::FExit { sleepable },
                S::Lsm { sleepable },
                S::Iter { sleepable: false },
            ] {
                let kind = program_type(&section).unwrap();
                assert!(lookup(Feature::ProgramType(kind)).is_some(), "{kind}");
            }
        }
        assert_eq!(program_type(&S::Iter { sleepable: true }), None);
    }

    #[test]
    fn every_instruction_feature_has_a_row() {
        use Insn as I;
        for insn in [
            I::BpfToBpfCall,
            I::Loop,
            I::GlobalData,
            I::MoreThan4096,
            I::Jmp32,
            I::JumpLessThan,
            I::AtomicFetch,
            I::LoadAcquireStoreRelease,
            I::CpuV4,
            I::FunctionReference,
            I::KfuncCall,
        ] {
            assert!(lookup(Feature::Insn(insn)).is_some(), "{insn:?}");
        }
    }
}
