//! Loading with a ladder of attach paths.
//!
//! A tool describes its rungs, best first (raw tracepoint, plain
//! tracepoint, kprobe, ...). The loader creates the maps once, then tries
//! each rung by loading and attaching its programs: the kernel's answer is
//! the probe, never its version string. The first rung whose programs all
//! attach is kept; a rung that fails halfway is detached and unloaded
//! whole before the next is tried (two rungs at once would count
//! everything twice). Every failure is remembered, so a kernel with no
//! usable rung gets an error naming each path tried and why it failed.

use std::{
    fmt::Write as _,
    fs, io,
    os::fd::AsFd as _,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, OnceLock,
    },
    time::Instant,
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{Array, MapType},
    programs::{
        fentry::FEntryLinkId,
        fexit::FExitLinkId,
        kprobe::KProbeLinkId,
        perf_event::PerfEventLinkId,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        raw_trace_point::RawTracePointLinkId,
        tp_btf::BtfTracePointLinkId,
        trace_point::TracePointLinkId,
        uprobe::UProbeLinkId,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
        BtfTracePoint, FEntry, FExit, KProbe, PerfEvent, Program, ProgramError, RawTracePoint, TracePoint, UProbe,
    },
    Ebpf, EbpfLoader, Pod,
};
use tools_common::map_names;

pub use crate::uprobe_multi::UprobeMulti;
use crate::{loss::SkippedRuns, tracefs, uprobe_multi};

/// How the user asked for the kernel to be used: what the command line's
/// `--btf` and the hidden test switches say (see `cli::RuntimeArgs`).
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Only this rung of the ladder (tests); `RUNG/PATH` also takes only
    /// that path of the rung's optional parts.
    pub rung: Option<String>,
    /// The legacy build even where the modern one loads (tests).
    pub legacy: bool,
    /// Struct offsets from this BTF file instead of the kernel's.
    pub btf: Option<PathBuf>,
    /// Behave as on a kernel without BTF (tests).
    pub hide_kernel_btf: bool,
    /// Print the oldest kernel each rung of each build loads on, and load
    /// nothing (`cargo xtask kernel-floor`).
    pub kernel_floor: bool,
}

/// Which of a tool's two builds of its programs a kernel takes (see
/// tools-ebpf's lib.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// Read-only global configuration, ring buffer, per-CPU maps: 5.8+.
    Modern,
    /// Configuration map, perf event array, plain maps: 4.4+.
    Legacy,
}

impl Build {
    /// The modern build where the kernel creates ring buffers and global
    /// data (both probed), unless the legacy one is asked for.
    pub fn choose(options: &LoadOptions) -> Build {
        let ring = ring_buffer_supported();
        let global_data = aya::features().bpf_global_data();
        let (build, why) = match (options.legacy, ring && global_data) {
            (true, true) => (Build::Legacy, "forced".to_owned()),
            (_, false) => {
                let lacks: Vec<&str> = [(!ring, "a ring buffer (5.8)"), (!global_data, "global data (5.2)")]
                    .into_iter()
                    .filter_map(|(lacking, what)| lacking.then_some(what))
                    .collect();
                (Build::Legacy, format!("the kernel has no {}", lacks.join(" nor ")))
            }
            (false, true) => (Build::Modern, "probed".to_owned()),
        };
        log::info!("build: {} ({why})", build.name());
        build
    }

    pub fn name(self) -> &'static str {
        match self {
            Build::Modern => "modern: global configuration, ring buffer, per-CPU maps",
            Build::Legacy => "legacy: configuration map, perf event array, plain maps",
        }
    }

    /// This build's object.
    pub fn object(self, objects: &Objects) -> &'static [u8] {
        match self {
            Build::Modern => objects.modern,
            Build::Legacy => objects.legacy,
        }
    }
}

/// Whether this kernel creates BPF ring buffers (5.8+), probed.
pub fn ring_buffer_supported() -> bool {
    aya::sys::is_map_supported(MapType::RingBuf).unwrap_or(false)
}

/// Where one program attaches: owned data, exactly what the kernel needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attach {
    /// `raw_tp/NAME` (4.17+).
    RawTracepoint(String),
    /// `tracepoint/CATEGORY/NAME` (4.7+).
    Tracepoint {
        category: String,
        name: String,
    },
    /// The first of these kernel functions that /proc/kallsyms lists and
    /// that lets a kprobe attach (looked up only when the rung is tried).
    Kprobe(Vec<String>),
    /// As `Kprobe`, at the functions' return.
    Kretprobe(Vec<String>),
    Uprobe(Uprobe),
    /// As `Uprobe`, at the function's return.
    Uretprobe(Uprobe),
    /// Every offset of one file through one multi-uprobe link (6.6+),
    /// which detaches at once; the program is loaded for it
    /// ([`Rung::multi_uprobe`]).
    UprobeMulti(UprobeMulti),
    /// As `UprobeMulti`, at the functions' returns.
    UretprobeMulti(UprobeMulti),
    /// A kernel function's entry through its BTF (5.5+).
    Fentry(String),
    Fexit(String),
    /// `tp_btf/NAME`: a raw tracepoint whose arguments the verifier knows
    /// from the kernel's BTF (5.5+).
    TpBtf(String),
    /// The CPU clock sampled on one CPU (`profile`'s hook; 4.9+).
    CpuClock(CpuClock),
}

/// Samples of the CPU clock: `frequency_hz` times a second on CPU `cpu`,
/// whatever runs there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuClock {
    pub cpu: u32,
    pub frequency_hz: u64,
}

/// A point in a user-space binary or library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uprobe {
    /// The file, as this process can open it (`/proc/PID/root/...` reaches
    /// into a container's mount namespace).
    pub binary: PathBuf,
    pub at: UprobeAt,
    /// Only this process; None for every process that maps the file.
    pub pid: Option<u32>,
    /// A value the program reads with `bpf_get_attach_cookie` (5.15+).
    pub cookie: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UprobeAt {
    /// A symbol of the file's symbol tables.
    Symbol(String),
    /// A file offset, already resolved (see `elf.rs`).
    Offset(u64),
}

impl Attach {
    pub fn raw_tp(name: &str) -> Attach {
        Attach::RawTracepoint(name.into())
    }

    pub fn tracepoint(category: &str, name: &str) -> Attach {
        Attach::Tracepoint { category: category.into(), name: name.into() }
    }

    /// Candidates, tried in order (kernels rename and inline functions).
    pub fn kprobe(functions: &[&str]) -> Attach {
        Attach::Kprobe(functions.iter().map(|f| f.to_string()).collect())
    }

    pub fn kretprobe(functions: &[&str]) -> Attach {
        Attach::Kretprobe(functions.iter().map(|f| f.to_string()).collect())
    }

    pub fn fentry(function: &str) -> Attach {
        Attach::Fentry(function.into())
    }

    pub fn fexit(function: &str) -> Attach {
        Attach::Fexit(function.into())
    }

    pub fn tp_btf(name: &str) -> Attach {
        Attach::TpBtf(name.into())
    }

    /// The inverse of `Display` (a uprobe's pid and cookie left out): how
    /// `--verbose` names a hook, as `bench-floor` takes them.
    pub fn parse(hook: &str) -> Option<Attach> {
        let hook = hook.split(" (").next()?;
        let (kind, rest) = hook.split_once('/')?;
        let candidates = || rest.split('|').map(str::to_owned).collect();
        let uprobe = || {
            let (binary, at) = rest.rsplit_once(':')?;
            let at = match at.strip_prefix("0x") {
                Some(hex) => UprobeAt::Offset(u64::from_str_radix(hex, 16).ok()?),
                None => UprobeAt::Symbol(at.to_owned()),
            };
            Some(Uprobe { binary: binary.into(), at, pid: None, cookie: None })
        };
        let multi = || {
            let (binary, at) = rest.rsplit_once(':')?;
            let offsets = at.split(',').map(|o| u64::from_str_radix(o.strip_prefix("0x")?, 16).ok());
            Some(UprobeMulti { binary: binary.into(), offsets: offsets.collect::<Option<_>>()?, cookies: Vec::new() })
        };
        Some(match kind {
            "raw_tp" => Attach::raw_tp(rest),
            "tracepoint" => {
                let (category, name) = rest.split_once('/')?;
                Attach::tracepoint(category, name)
            }
            "kprobe" => Attach::Kprobe(candidates()),
            "kretprobe" => Attach::Kretprobe(candidates()),
            "fentry" => Attach::fentry(rest),
            "fexit" => Attach::fexit(rest),
            "tp_btf" => Attach::tp_btf(rest),
            "cpu_clock" => {
                let (hz, cpu) = rest.split_once("hz/cpu")?;
                Attach::CpuClock(CpuClock { cpu: cpu.parse().ok()?, frequency_hz: hz.parse().ok()? })
            }
            "uprobe" => Attach::Uprobe(uprobe()?),
            "uretprobe" => Attach::Uretprobe(uprobe()?),
            "uprobe_multi" => Attach::UprobeMulti(multi()?),
            "uretprobe_multi" => Attach::UretprobeMulti(multi()?),
            _ => return None,
        })
    }
}

impl std::fmt::Display for Attach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let uprobe = |f: &mut std::fmt::Formatter<'_>, kind: &str, u: &Uprobe| {
            write!(f, "{kind}/{}:", u.binary.display())?;
            match &u.at {
                UprobeAt::Symbol(s) => write!(f, "{s}")?,
                UprobeAt::Offset(o) => write!(f, "{o:#x}")?,
            }
            if let Some(pid) = u.pid {
                write!(f, " (pid {pid})")?;
            }
            match u.cookie {
                Some(cookie) => write!(f, " (cookie {cookie:#x})"),
                None => Ok(()),
            }
        };
        let multi = |f: &mut std::fmt::Formatter<'_>, kind: &str, u: &UprobeMulti| {
            let hex = |values: &[u64]| values.iter().map(|v| format!("{v:#x}")).collect::<Vec<_>>().join(",");
            write!(f, "{kind}/{}:{}", u.binary.display(), hex(&u.offsets))?;
            match u.cookies.is_empty() {
                true => Ok(()),
                false => write!(f, " (cookies {})", hex(&u.cookies)),
            }
        };
        match self {
            Attach::RawTracepoint(tp) => write!(f, "raw_tp/{tp}"),
            Attach::Tracepoint { category, name } => write!(f, "tracepoint/{category}/{name}"),
            Attach::Kprobe(funcs) => write!(f, "kprobe/{}", funcs.join("|")),
            Attach::Kretprobe(funcs) => write!(f, "kretprobe/{}", funcs.join("|")),
            Attach::Uprobe(u) => uprobe(f, "uprobe", u),
            Attach::Uretprobe(u) => uprobe(f, "uretprobe", u),
            Attach::UprobeMulti(u) => multi(f, "uprobe_multi", u),
            Attach::UretprobeMulti(u) => multi(f, "uretprobe_multi", u),
            Attach::Fentry(func) => write!(f, "fentry/{func}"),
            Attach::Fexit(func) => write!(f, "fexit/{func}"),
            Attach::TpBtf(tp) => write!(f, "tp_btf/{tp}"),
            Attach::CpuClock(c) => write!(f, "cpu_clock/{}hz/cpu{}", c.frequency_hz, c.cpu),
        }
    }
}

/// One step of the ladder: programs that together implement the tool.
#[derive(Clone, Debug)]
pub struct Rung {
    pub name: &'static str,
    /// (program name in the object, where it attaches)
    pub programs: Vec<(String, Attach)>,
    /// Why this rung cannot work before trying (an offset missing from BTF, a
    /// flag it cannot serve, no candidate kernel function); None to try it.
    pub unusable: Option<String>,
    /// Parts the rung can do without, each tried once its programs attached.
    pub optional: Vec<Optional>,
    /// Uprobe programs loaded for multi-uprobe links before any attaches
    /// (even with nothing to attach yet: a keeper attaches them later).
    pub multi_uprobe: Vec<String>,
}

/// A part of a rung the tool can do without, with a ladder of its own: the
/// first alternative that attaches is kept; when none does, the rung stands
/// without the part (`--verbose` says why). So a part never raises a rung's
/// floor, and its alternatives are not in the floor table. tcplife's
/// accept(): a kretprobe, else fexit, else the accept syscalls' tracepoints.
#[derive(Clone, Debug)]
pub struct Optional {
    /// What the part does, as `--verbose` names it.
    pub what: &'static str,
    /// Its alternatives, best first, each tried as a rung is.
    pub ladder: Vec<Rung>,
}

impl Rung {
    pub fn new(name: &'static str) -> Self {
        Rung { name, programs: Vec::new(), unusable: None, optional: Vec::new(), multi_uprobe: Vec::new() }
    }

    /// Adds a part the rung can do without, and its ladder. Its paths
    /// share no program with the rung: a path that fails is unloaded whole.
    pub fn optional(mut self, what: &'static str, ladder: Vec<Rung>) -> Self {
        let shared =
            ladder.iter().flat_map(|path| &path.programs).find(|(p, _)| self.programs.iter().any(|(q, _)| q == p));
        assert!(shared.is_none(), "rung {}: {what} shares {shared:?} with it", self.name);
        self.optional.push(Optional { what, ladder });
        self
    }

    /// Adds a program and where it attaches. Programs attach in this order.
    pub fn program(mut self, name: impl Into<String>, attach: Attach) -> Self {
        self.programs.push((name.into(), attach));
        self
    }

    /// Loads uprobe program `name` for multi-uprobe links
    /// ([`Attach::UprobeMulti`]), which the rung needs the kernel to have.
    pub fn multi_uprobe(mut self, name: impl Into<String>) -> Self {
        self.multi_uprobe.push(name.into());
        self
    }

    /// Every program the rung loads, each once, in the order it attaches
    /// them (those loaded for multi-uprobe links but not attached yet last).
    fn program_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for name in self.programs.iter().map(|(name, _)| name).chain(&self.multi_uprobe) {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        names
    }

    /// The programs of `programs` attached through links of a later kernel
    /// than their program type, with the link's type (see tools-floor).
    fn links<'a>(&self, programs: &[&'a str]) -> Vec<(&'a str, &'static str)> {
        let multi = programs.iter().filter(|p| self.multi_uprobe.iter().any(|m| m == *p));
        multi.map(|p| (*p, "uprobe_multi")).collect()
    }

    /// Marks the rung unusable for `reason` unless it already is.
    pub fn unusable_if(mut self, reason: Option<String>) -> Self {
        self.unusable = self.unusable.or(reason);
        self
    }
}

/// A tool's two builds of the same programs (see [`Build`]).
#[derive(Clone, Copy)]
pub struct Objects {
    pub modern: &'static [u8],
    pub legacy: &'static [u8],
}

/// A loaded tool: its object (maps, attached programs), the build and the
/// rung taken. Dropping it detaches every program and closes every map.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub build: Build,
    pub rung: &'static str,
    /// (program, hook) of the rung taken and of its optional parts' paths
    /// taken, as `--verbose` names them.
    pub hooks: Vec<(String, String)>,
    /// What the tool keeps doing while it runs.
    pub keeper: Option<Box<dyn Keeper>>,
    /// Runs of the rung's programs the kernel skipped: lost events.
    pub skipped: SkippedRuns,
    /// Each optional part of the rung, and the alternative taken (None:
    /// the rung runs without it).
    pub parts: Vec<(&'static str, Option<&'static str>)>,
}

impl Loaded {
    /// Lets the keeper do its round (about once a second on the command
    /// line, at each scrape in the exporter).
    pub fn tick(&mut self) -> Result<()> {
        match &mut self.keeper {
            Some(keeper) => keeper.tick(&mut self.ebpf),
            None => Ok(()),
        }
    }
}

/// What a tool keeps doing once its programs are loaded, beside reading
/// them: gethostlatency follows the C libraries that appear.
pub trait Keeper {
    /// Once, right after the rung `rung` attached.
    fn loaded(&mut self, ebpf: &mut Ebpf, rung: &str);
    /// Each round.
    fn tick(&mut self, ebpf: &mut Ebpf) -> Result<()>;
}

/// Lifts RLIMIT_MEMLOCK: kernels before 5.11 charge BPF maps to it. Where
/// the hard limit cannot be lifted, the soft limit is raised to it.
fn raise_memlock() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscalls with valid structs.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) == 0 {
            return;
        }
        let mut current: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut current) == 0 && current.rlim_cur < current.rlim_max {
            current.rlim_cur = current.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &current);
        }
    }
    log::info!("RLIMIT_MEMLOCK stays limited: {}", io::Error::last_os_error());
}

/// Whether this process may load and attach tracing programs: root, or
/// CAP_BPF with CAP_PERFMON (5.8+), or CAP_SYS_ADMIN. Asked before anything
/// is loaded, so the answer is one clear line, not a map-creation error.
fn check_privilege() -> Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    // struct __user_cap_header_struct { version, pid } and two data blocks
    // of { effective, permitted, inheritable }.
    let mut header = [0x2008_0522u32, 0];
    let mut data = [[0u32; 3]; 2];
    // SAFETY: capget fills the buffers it is given (version 3: two blocks).
    let ret = unsafe { libc::syscall(libc::SYS_capget, header.as_mut_ptr(), data.as_mut_ptr()) };
    if ret != 0 {
        // Cannot tell: let the kernel answer when the maps are created.
        return Ok(());
    }
    let has = |cap: u32| data[(cap / 32) as usize][0] & (1 << (cap % 32)) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!("this needs root, or the capabilities CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8): run it with sudo")
}

/// Tests hide the kernel's BTF (`--hide-kernel-btf`): fentry then has none.
static KERNEL_BTF_HIDDEN: AtomicBool = AtomicBool::new(false);

/// Fills maps before any program attaches.
pub type Fill<'a> = Box<dyn FnOnce(&mut Ebpf) -> Result<()> + 'a>;

/// What to load: a tool's objects, its configuration, the sizes of the maps
/// user space sets, its rungs best first, and what fills its maps before
/// any program attaches (a filter's table, which must be in place before
/// the first event).
pub struct Load<'a, C> {
    pub objects: Objects,
    pub build: Build,
    pub config: &'a C,
    pub max_entries: &'a [(&'static str, u32)],
    pub rungs: Vec<Rung>,
    pub fill: Option<Fill<'a>>,
}

/// Loads the build's object with `config` as its `CONFIG` (the read-only
/// global, or the configuration map), then takes the first rung (or only
/// `options.rung`, when forced) that loads and attaches.
pub fn load<C: Pod>(what: Load<'_, C>, options: &LoadOptions) -> Result<Loaded> {
    let Load { objects, build, config, max_entries, rungs, fill } = what;
    if options.kernel_floor {
        print_kernel_floors(&objects, &rungs)?;
        return Err(crate::lifetime::Finished.into());
    }
    check_privilege()?;
    raise_memlock();
    KERNEL_BTF_HIDDEN.store(options.hide_kernel_btf, Ordering::Relaxed);
    let started = Instant::now();
    let object = build.object(&objects);
    let per_cpu = match build {
        Build::Modern => Vec::new(),
        Build::Legacy => per_cpu_arrays(object)?,
    };
    let mut loader = loader_without_kernel_btf();
    for &(map, n) in max_entries {
        log::debug!("map {map}: {n} entries");
        loader.map_max_entries(map, n);
    }
    for map in &per_cpu {
        loader.map_max_entries(map, possible_cpus()?);
    }
    let mut ebpf = match build {
        Build::Modern => {
            loader.override_global(map_names::CONFIG, config, true);
            loader.load(object).context("creating the eBPF maps")?
        }
        Build::Legacy => {
            let mut ebpf = loader.load(object).context("creating the eBPF maps")?;
            let config_map = ebpf.map_mut(map_names::CONFIG).context("no CONFIG map")?;
            let mut map: Array<_, C> = Array::try_from(config_map)?;
            map.set(0, config, 0).context("writing the configuration map")?;
            ebpf
        }
    };
    log::info!("object loaded, maps created in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    if let Some(fill) = fill {
        fill(&mut ebpf)?;
    }

    // `--rung RUNG`, or `RUNG/PATH`: that rung, and for its optional parts
    // only that path (a test of a path the kernel would not choose first).
    let (forced, forced_path) = match options.rung.as_deref().map(|r| r.split_once('/').unwrap_or((r, ""))) {
        Some((rung, path)) => (Some(rung), (!path.is_empty()).then_some(path)),
        None => (None, None),
    };
    if let Some(forced) = forced {
        if !rungs.iter().any(|r| r.name == forced) {
            let names: Vec<_> = rungs.iter().map(|r| r.name).collect();
            let why = format!("unknown rung {forced:?}; this tool has {}", names.join(", "));
            return Err(crate::lifetime::BadInput(why).into());
        }
    }

    let mut tried = String::new();
    for rung in rungs {
        if forced.is_some_and(|forced| forced != rung.name) {
            continue;
        }
        if let Some(reason) = &rung.unusable {
            log::info!("rung {}: not usable: {reason}", rung.name);
            let _ = write!(tried, "\n  {}: {reason}", rung.name);
            continue;
        }
        match try_rung(&mut ebpf, object, &rung) {
            Ok(()) => {
                log::info!("rung {}: all {} programs attached", rung.name, rung.programs.len());
                if log::log_enabled!(log::Level::Info) {
                    match floor(object, &rung) {
                        Ok(floor) => log::info!("rung {}: this build of it loads on Linux {floor}", rung.name),
                        Err(err) => log::info!("rung {}: its oldest kernel is unknown: {err:#}", rung.name),
                    }
                }
                let mut programs = rung.programs.clone();
                let mut parts = Vec::new();
                for part in &rung.optional {
                    let taken = attach_optional(&mut ebpf, rung.name, part, forced_path);
                    if let (Some(path), None) = (forced_path, taken) {
                        drop_links(&program_ids(&ebpf));
                        bail!(
                            "rung {}: {}: path {path} (asked for) did not attach (--verbose says why)",
                            rung.name,
                            part.what
                        );
                    }
                    programs.extend(taken.iter().flat_map(|alternative| alternative.programs.iter().cloned()));
                    parts.push((part.what, taken.map(|alternative| alternative.name)));
                }
                let hooks = programs.iter().map(|(p, a)| (p.clone(), a.to_string())).collect();
                let skipped = SkippedRuns::of(&ebpf, programs.iter().map(|(program, _)| program.as_str()));
                // The last line of a load (the benchmark reads up to it).
                log::info!("rung {}: loaded in {:.1} ms", rung.name, started.elapsed().as_secs_f64() * 1e3);
                return Ok(Loaded { ebpf, build, rung: rung.name, hooks, keeper: None, skipped, parts });
            }
            Err(err) => {
                log::info!("rung {}: failed: {err:#}", rung.name);
                let _ = write!(tried, "\n  {}: {}", rung.name, first_line(&err));
            }
        }
    }
    Err(anyhow!("no kernel path to trace with works here ({} build); tried:{tried}", build_word(build)))
}

/// The oldest kernel a rung's programs of this object load on (see
/// tools-floor): `4.4 (program type kprobe; ...)`.
fn floor(object: &[u8], rung: &Rung) -> Result<tools_floor::Floor> {
    let programs = rung.program_names();
    Ok(tools_floor::Analysis::parse(object)?.floor_linked(&programs, &rung.links(&programs))?)
}

/// For `cargo xtask kernel-floor`: one JSON line per build and rung, with
/// the oldest kernel it loads on and why.
fn print_kernel_floors(objects: &Objects, rungs: &[Rung]) -> Result<()> {
    let tool = crate::diag::tool_name();
    let mut out = std::io::stdout().lock();
    for build in [Build::Modern, Build::Legacy] {
        let analysis = tools_floor::Analysis::parse(build.object(objects))?;
        let in_object = analysis.program_names();
        for rung in rungs {
            let programs = rung.program_names();
            // A rung of the other build only (execsnoop's kprobes are the legacy one's).
            if !programs.iter().all(|p| in_object.iter().any(|name| name == p)) {
                continue;
            }
            let floor = analysis.floor_linked(&programs, &rung.links(&programs))?;
            let why: Vec<String> = floor.why.iter().map(|r| r.what.clone()).collect();
            let line = serde_json::json!({
                "tool": tool,
                "build": build_word(build),
                "rung": rung.name,
                "floor": floor.version.to_string(),
                "programs": programs,
                "why": why,
                "instructions": floor.instructions,
                "stack": floor.stack,
            });
            use std::io::Write as _;
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

fn build_word(build: Build) -> &'static str {
    match build {
        Build::Modern => "modern",
        Build::Legacy => "legacy",
    }
}

/// The legacy build's per-CPU room (`tools_ebpf::maps::Scratch`): the
/// array maps declared with no entries, which get one per possible CPU.
fn per_cpu_arrays(object: &[u8]) -> Result<Vec<String>> {
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let parsed = aya_obj::Object::parse(object).context("reading the eBPF object")?;
    Ok(parsed
        .maps
        .iter()
        .filter(|(_, map)| map.map_type() == BPF_MAP_TYPE_ARRAY && map.max_entries() == 0)
        .map(|(name, _)| name.clone())
        .collect())
}

/// CPUs the kernel may ever number (`bpf_get_smp_processor_id`'s range).
fn possible_cpus() -> Result<u32> {
    let cpus = aya::util::nr_cpus().map_err(|(path, err)| anyhow!("reading {path}: {err}"))?;
    Ok(cpus as u32)
}

/// An `EbpfLoader` that does not parse the kernel's BTF.
///
/// aya 0.14's `EbpfLoader::new()` always reads and parses
/// /sys/kernel/btf/vmlinux (about 15 ms and 17 MB of peak memory here) for
/// CO-RE relocations, and rustc emits none: our offsets come from our own
/// reader (btf.rs). The loader offers no constructor without that parse, so
/// for the duration of `new()` the soft RLIMIT_NOFILE is lowered to the
/// lowest free descriptor: its open() fails with EMFILE, aya treats that as
/// "no BTF", and the limit is restored. The limit is the process's, so this
/// is done only while the process has one thread (the tools load before
/// their runtime starts): no other code can open a file meanwhile. With
/// more threads the kernel's BTF is parsed.
pub fn loader_without_kernel_btf() -> EbpfLoader<'static> {
    if !single_threaded() {
        log::info!("more than one thread: aya parses the kernel's BTF");
        return EbpfLoader::new();
    }
    let mut saved = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on valid structs and descriptors.
    let lowered = unsafe {
        let lowest_free = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 0);
        if lowest_free >= 0 {
            libc::close(lowest_free);
        }
        lowest_free >= 0
            && libc::getrlimit(libc::RLIMIT_NOFILE, &mut saved) == 0
            && libc::setrlimit(
                libc::RLIMIT_NOFILE,
                &libc::rlimit { rlim_cur: lowest_free as libc::rlim_t, rlim_max: saved.rlim_max },
            ) == 0
    };
    let loader = EbpfLoader::new();
    if lowered {
        // SAFETY: restores the limits read above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) };
    } else {
        log::info!("could not keep aya from parsing the kernel BTF: {}", io::Error::last_os_error());
    }
    loader
}

/// Whether this process runs one thread (/proc/self/status says).
fn single_threaded() -> bool {
    crate::procfs::read("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find_map(|l| l.strip_prefix("Threads:").map(|n| n.trim() == "1")))
        .unwrap_or(false)
}

fn first_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    text.lines().next().unwrap_or_default().to_owned()
}

/// Loads a rung's programs for multi-uprobe links, then attaches it
/// ([`attach_rung`]), `object` being `ebpf`'s; on any failure, unloads
/// them too and puts aya's back, for the rungs below.
pub fn try_rung(ebpf: &mut Ebpf, object: &[u8], rung: &Rung) -> Result<()> {
    if rung.multi_uprobe.is_empty() {
        return attach_rung(ebpf, rung);
    }
    let replaced = uprobe_multi::load(ebpf, object, &rung.multi_uprobe)?;
    let result = attach_rung(ebpf, rung);
    if result.is_err() {
        // The rungs below load the same programs as aya made them.
        for name in &rung.multi_uprobe {
            if let Some(Err(err)) = ebpf.program_mut(name).map(unload) {
                log::warn!("unloading {name}: {err}");
            }
        }
        uprobe_multi::restore(ebpf, replaced);
    }
    result
}

/// Loads and attaches every program of a rung; on any failure, detaches
/// and unloads every program this rung loaded, whatever its type, so the
/// next rung starts clean.
pub fn attach_rung(ebpf: &mut Ebpf, rung: &Rung) -> Result<()> {
    let mut done: Vec<&str> = Vec::new();
    for (program, target) in &rung.programs {
        match attach(ebpf, program, target) {
            Ok(id) => {
                log::info!("  {program} (id {id}) -> {target}");
                done.push(program);
            }
            Err(err) => {
                for loaded in done.into_iter().chain([program.as_str()]) {
                    if let Some(p) = ebpf.program_mut(loaded) {
                        if let Err(unload_err) = unload(p) {
                            log::warn!("unloading {loaded}: {unload_err}");
                        }
                    }
                }
                return Err(err.context(format!("{program} -> {target}")));
            }
        }
    }
    Ok(())
}

/// Attaches the first alternative of `part` that works, after rung `rung`
/// (only `only`, when a test asks for it).
fn attach_optional<'p>(ebpf: &mut Ebpf, rung: &str, part: &'p Optional, only: Option<&str>) -> Option<&'p Rung> {
    for alternative in &part.ladder {
        let (what, name) = (part.what, alternative.name);
        if only.is_some_and(|only| only != name) {
            log::info!("rung {rung}: {what}: {name} not asked for");
            continue;
        }
        if let Some(reason) = &alternative.unusable {
            log::info!("rung {rung}: {what}: {name} not usable: {reason}");
            continue;
        }
        match attach_rung(ebpf, alternative) {
            Ok(()) => {
                log::info!("rung {rung}: {what} through {name}");
                return Some(alternative);
            }
            Err(err) => log::info!("rung {rung}: {what}: {name} failed: {err:#}"),
        }
    }
    log::info!("rung {rung}: without {}: none of its paths works here", part.what);
    None
}

/// Detaches every link of a program and unloads it (a program not loaded
/// is left as it is).
fn unload(program: &mut Program) -> Result<(), ProgramError> {
    if program.fd().is_err() {
        return Ok(());
    }
    if let Ok(info) = program.info() {
        links().retain(|(id, _)| *id != info.id());
    }
    match program {
        Program::RawTracePoint(p) => p.unload(),
        Program::TracePoint(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        Program::UProbe(p) => p.unload(),
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        Program::BtfTracePoint(p) => p.unload(),
        Program::PerfEvent(p) => p.unload(),
        // The tools build tracing programs only: any other type is a bug
        // in a tool's object, reported rather than left loaded silently.
        _ => Err(ProgramError::UnexpectedProgramType),
    }
}

/// Loads program `name` (unless it already is) and attaches it; returns
/// its id. A program may be attached to several hooks this way (a uprobe
/// program to every C library, the floor's empty programs to any hook).
pub fn attach(ebpf: &mut Ebpf, name: &str, attach: &Attach) -> Result<u32> {
    let program = ebpf.program_mut(name).with_context(|| format!("eBPF object has no program {name}"))?;
    let loaded = program.fd().is_ok();
    let link = match attach {
        Attach::RawTracepoint(tp) => {
            let p: &mut RawTracePoint = program.try_into()?;
            if !loaded {
                p.load()?;
            }
            LinkId::RawTracePoint(p.attach(tp)?)
        }
        Attach::Tracepoint { category, name } => {
            tracefs::root()?;
            let p: &mut TracePoint = program.try_into()?;
            if !loaded {
                p.load()?;
            }
            LinkId::TracePoint(p.attach(category, name)?)
        }
        Attach::Kprobe(funcs) | Attach::Kretprobe(funcs) => {
            let p: &mut KProbe = program.try_into()?;
            if !loaded {
                p.load()?;
            }
            LinkId::KProbe(attach_kprobe(p, funcs)?)
        }
        Attach::Uprobe(u) | Attach::Uretprobe(u) => {
            let p: &mut UProbe = program.try_into()?;
            if !loaded {
                p.load()?;
            }
            let location = match &u.at {
                UprobeAt::Symbol(symbol) => UProbeAttachLocation::Symbol(symbol),
                UprobeAt::Offset(offset) => UProbeAttachLocation::AbsoluteOffset(*offset),
            };
            let scope = match u.pid.and_then(std::num::NonZeroU32::new) {
                Some(pid) => UProbeScope::OneProcess(pid),
                None => UProbeScope::AllProcesses,
            };
            LinkId::UProbe(p.attach(UProbeAttachPoint { location, cookie: u.cookie }, &u.binary, scope)?)
        }
        Attach::UprobeMulti(u) | Attach::UretprobeMulti(u) => {
            let p: &mut UProbe = program.try_into()?;
            let fd =
                p.fd().map_err(|_| anyhow!("{name} was not loaded for multi-uprobe links (Rung::multi_uprobe)"))?;
            let ret = matches!(attach, Attach::UretprobeMulti(_));
            let link = uprobe_multi::attach(fd.as_fd(), u, ret).context("creating a multi-uprobe link")?;
            LinkId::Multi(link)
        }
        Attach::Fentry(function) => {
            let p: &mut FEntry = program.try_into()?;
            if !loaded {
                p.load(function, fentry_btf()?)?;
            }
            LinkId::FEntry(p.attach()?)
        }
        Attach::Fexit(function) => {
            let p: &mut FExit = program.try_into()?;
            if !loaded {
                p.load(function, fentry_btf()?)?;
            }
            LinkId::FExit(p.attach()?)
        }
        Attach::TpBtf(tracepoint) => {
            let p: &mut BtfTracePoint = program.try_into()?;
            if !loaded {
                p.load(tracepoint, fentry_btf()?)?;
            }
            LinkId::BtfTracePoint(p.attach()?)
        }
        Attach::CpuClock(clock) => {
            let p: &mut PerfEvent = program.try_into()?;
            if !loaded {
                p.load()?;
            }
            let config = PerfEventConfig::Software(SoftwareEvent::CpuClock);
            let scope = PerfEventScope::AllProcessesOneCpu { cpu: clock.cpu };
            LinkId::PerfEvent(p.attach(config, scope, SamplePolicy::Frequency(clock.frequency_hz), false)?)
        }
    };
    let id = program.info().map(|info| info.id()).unwrap_or(0);
    links().push((id, link));
    Ok(id)
}

/// A link's id, of the program type that made it.
enum LinkId {
    RawTracePoint(RawTracePointLinkId),
    TracePoint(TracePointLinkId),
    KProbe(KProbeLinkId),
    UProbe(UProbeLinkId),
    FEntry(FEntryLinkId),
    FExit(FExitLinkId),
    BtfTracePoint(BtfTracePointLinkId),
    PerfEvent(PerfEventLinkId),
    /// A link made here, not by aya ([`uprobe_multi`]): its descriptor.
    Multi(std::os::fd::OwnedFd),
}

/// The links [`attach`] made, by their program's id. aya keeps a
/// program's links inside it and detaches them one after another when the
/// program goes; taken out by these ids, they can go all at once
/// ([`detach_all`]).
fn links() -> std::sync::MutexGuard<'static, Vec<(u32, LinkId)>> {
    static LINKS: Mutex<Vec<(u32, LinkId)>> = Mutex::new(Vec::new());
    LINKS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Link `link` of `program`, taken out of it (None if it is not there):
/// dropping it detaches it.
fn take_link(program: &mut Program, link: LinkId) -> Option<Box<dyn Send>> {
    fn boxed<T: Send + 'static>(link: Result<T, ProgramError>) -> Option<Box<dyn Send>> {
        Some(Box::new(link.ok()?))
    }
    match (program, link) {
        (Program::RawTracePoint(p), LinkId::RawTracePoint(id)) => boxed(p.take_link(id)),
        (Program::TracePoint(p), LinkId::TracePoint(id)) => boxed(p.take_link(id)),
        (Program::KProbe(p), LinkId::KProbe(id)) => boxed(p.take_link(id)),
        (Program::UProbe(p), LinkId::UProbe(id)) => boxed(p.take_link(id)),
        (Program::FEntry(p), LinkId::FEntry(id)) => boxed(p.take_link(id)),
        (Program::FExit(p), LinkId::FExit(id)) => boxed(p.take_link(id)),
        (Program::BtfTracePoint(p), LinkId::BtfTracePoint(id)) => boxed(p.take_link(id)),
        (Program::PerfEvent(p), LinkId::PerfEvent(id)) => boxed(p.take_link(id)),
        (_, LinkId::Multi(fd)) => Some(Box::new(fd)),
        _ => None,
    }
}

/// The ids of `ebpf`'s loaded programs.
pub fn program_ids(ebpf: &Ebpf) -> Vec<u32> {
    ebpf.programs().filter_map(|(_, program)| Some(program.info().ok()?.id())).collect()
}

/// Drops the links kept for programs `ids`, whose object goes without
/// [`detach_all`]: aya's own links go with their programs, but a
/// multi-uprobe link made here would keep its program attached.
pub fn drop_links(ids: &[u32]) {
    links().retain(|(id, _)| !ids.contains(id));
}

/// Detaches every program of `objects`, all at once. Each detach waits
/// for the kernel to be done with the program (grace periods of RCU,
/// tasks RCU and SRCU: tens to hundreds of milliseconds each on a 6.x
/// kernel); one after another, as dropping an object does, a tool with
/// dozens of hooks took seconds to stop. Grace periods waited for at the
/// same time are shared, so every link is dropped on a thread of its own.
/// The programs themselves go when their objects are dropped.
pub fn detach_all<'a>(objects: impl IntoIterator<Item = &'a mut Ebpf>) {
    let mut taken = Vec::new();
    {
        let mut links = links();
        for (_, program) in objects.into_iter().flat_map(Ebpf::programs_mut) {
            let Ok(id) = program.info().map(|info| info.id()) else { continue };
            let (of_program, others) = links.drain(..).partition(|(program_id, _)| *program_id == id);
            *links = others;
            taken.extend(of_program.into_iter().filter_map(|(_, link)| take_link(program, link)));
        }
    }
    std::thread::scope(|scope| {
        for link in taken {
            // Where no thread can be made (a task limit), the link goes
            // with the refused closure, here, one after another as before.
            let _ = std::thread::Builder::new().spawn_scoped(scope, move || drop(link));
        }
    });
}

/// The first candidate the kernel lets us probe: a symbol can be listed
/// yet refuse a kprobe (blacklisted, notrace, mid-function).
fn attach_kprobe(p: &mut KProbe, funcs: &[String]) -> Result<KProbeLinkId> {
    // Without kprobes (CONFIG_KPROBES=n) no candidate can attach: say so
    // before reading the kernel's symbols. aya makes them through the
    // kprobe PMU (4.17+) or, before, tracefs' kprobe_events.
    let pmu = std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    let events = tracefs::root().is_ok_and(|root| root.join("kprobe_events").exists());
    if !pmu && !events {
        bail!("this kernel has no kprobes (no /sys/bus/event_source/devices/kprobe, no kprobe_events in tracefs)");
    }
    let mut refused = Vec::new();
    for func in kallsyms_find_all(funcs) {
        match p.attach(&func, 0) {
            Ok(link) => {
                log::info!("  kprobe on {func}");
                return Ok(link);
            }
            Err(err) => refused.push(format!("{func}: {:#}", anyhow::Error::from(err))),
        }
    }
    if refused.is_empty() {
        bail!("no {} in /proc/kallsyms", funcs.join(" or "));
    }
    bail!("no kprobe attaches: {}", refused.join("; "))
}

/// The running kernel's BTF as aya reads it, for fentry, fexit and tp_btf:
/// they name their function by its id in the kernel's own BTF, so a `--btf FILE`
/// (which gives the other rungs their offsets) cannot serve; a kernel
/// without BTF has no fentry anyway. Parsed only when such a rung is
/// tried, and once (about 15 ms and 17 MB here: the other rungs never pay).
fn fentry_btf() -> Result<&'static aya::Btf> {
    static BTF: OnceLock<Result<aya::Btf, String>> = OnceLock::new();
    if KERNEL_BTF_HIDDEN.load(Ordering::Relaxed) {
        bail!("fentry needs the kernel's BTF, hidden (EBPF_TOOLS_HIDE_KERNEL_BTF)");
    }
    BTF.get_or_init(|| {
        let started = Instant::now();
        let btf = aya::Btf::from_sys_fs().map_err(|err| format!("fentry needs the kernel's BTF: {err}"));
        log::info!("kernel BTF parsed for fentry in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
        btf
    })
    .as_ref()
    .map_err(|err| anyhow!("{err}"))
}

/// Whether the kernel lets a program of fentry's type load, asked with an
/// empty program aimed at the function of BTF id `function_id` (from our
/// own BTF reader): a refusal (EPERM on this kind of host) is known before
/// aya parses the kernel's BTF for the real load.
pub fn fentry_allowed(function_id: u32) -> Result<(), String> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FENTRY: u32 = 24;
    // r0 = 0; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut attr = [0u8; 144];
    let mut put = |at: usize, bytes: &[u8]| attr[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &BPF_PROG_TYPE_TRACING.to_ne_bytes());
    put(4, &2u32.to_ne_bytes());
    put(8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(16, &(license.as_ptr() as u64).to_ne_bytes());
    put(68, &BPF_TRACE_FENTRY.to_ne_bytes());
    put(108, &function_id.to_ne_bytes());
    // SAFETY: a bpf_attr of the size passed, pointing at live buffers.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) };
    if fd < 0 {
        return Err(format!("the kernel refuses fentry programs: {}", io::Error::last_os_error()));
    }
    // SAFETY: the descriptor just returned.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// The kernel's symbols for `functions`, in that order, as named in
/// /proc/kallsyms (which may carry a compiler suffix: `finish_task_switch.isra.0`).
/// Read line by line: the file is megabytes long.
pub fn kallsyms_find_all(functions: &[String]) -> Vec<String> {
    use std::io::BufRead as _;
    let Ok(file) = fs::File::open("/proc/kallsyms") else { return Vec::new() };
    symbols_for(functions, io::BufReader::new(file).lines().map_while(Result::ok))
}

/// The symbols of `lines` (kallsyms' format) that are `functions`' entry
/// points: each function's exact name first, then its compiler-suffixed
/// copies (`.isra.0`, `.constprop.0`: the whole function, renamed). A
/// `.cold` symbol is the function's rarely run tail split off by the
/// compiler (7.x lists `tcp_set_state.cold` before `tcp_set_state`): a
/// probe there sees nothing, so it is never a candidate.
fn symbols_for(functions: &[String], lines: impl Iterator<Item = String>) -> Vec<String> {
    let mut exact: Vec<Option<String>> = vec![None; functions.len()];
    let mut suffixed: Vec<Vec<String>> = vec![Vec::new(); functions.len()];
    for line in lines {
        let Some(name) = line.split_whitespace().nth(2) else { continue };
        for (i, want) in functions.iter().enumerate() {
            if name == want {
                exact[i] = Some(name.to_owned());
            } else if let Some(suffix) = name.strip_prefix(want.as_str()).filter(|s| s.starts_with('.')) {
                let fragment = suffix.split('.').any(|part| part == "cold");
                if !fragment && !suffixed[i].iter().any(|f| f == name) {
                    suffixed[i].push(name.to_owned());
                }
            }
        }
    }
    let mut all: Vec<String> = Vec::new();
    for name in exact.into_iter().zip(suffixed).flat_map(|(exact, suffixed)| exact.into_iter().chain(suffixed)) {
        if !all.contains(&name) {
            all.push(name);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_symbols_exact_first_never_a_cold_fragment() {
        let kallsyms = [
            "ffffffff8128eef0 t tcp_set_state.cold",
            "ffffffff81fe89d0 T tcp_set_state",
            "ffffffff81fe9000 T tcp_set_state_extra",
            "ffffffff81100000 t finish_task_switch.isra.0",
            "ffffffff81100400 t finish_task_switch.isra.0.cold",
        ];
        let lines = || kallsyms.iter().map(|l| l.to_string());
        let want = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(symbols_for(&want(&["tcp_set_state"]), lines()), ["tcp_set_state"]);
        assert_eq!(symbols_for(&want(&["finish_task_switch"]), lines()), ["finish_task_switch.isra.0"]);
        assert_eq!(
            symbols_for(&want(&["nosuch", "finish_task_switch", "tcp_set_state"]), lines()),
            ["finish_task_switch.isra.0", "tcp_set_state"]
        );
    }

    #[test]
    fn hooks_print_and_parse_back() {
        for hook in [
            "raw_tp/sched_switch",
            "tracepoint/sched/sched_switch",
            "kprobe/ttwu_do_activate|ttwu_do_wakeup",
            "kretprobe/ext4_file_read_iter",
            "fentry/ext4_sync_file",
            "fexit/ext4_sync_file",
            "tp_btf/sched_switch",
            "cpu_clock/99hz/cpu1",
            "uprobe//usr/lib/x86_64-linux-gnu/libc.so.6:getaddrinfo",
            "uretprobe//lib/ld-musl-x86_64.so.1:0x5a3c0",
        ] {
            let attach = Attach::parse(hook).unwrap_or_else(|| panic!("{hook}"));
            assert_eq!(attach.to_string(), hook);
        }
        assert_eq!(Attach::parse("nosuch/x"), None);
    }
}
