//! Loading with a ladder of attach paths.
//!
//! A tool describes its rungs, best first (raw tracepoint, plain
//! tracepoint, kprobe, ...). The loader creates the maps once, then tries
//! each rung by loading and attaching its programs: the kernel's answer is
//! the probe, never its version string. The first rung whose programs all
//! attach is kept; every failure is remembered, so a kernel with no usable
//! rung gets an error naming each path tried and why it failed.

use std::{fmt::Write as _, fs, io, time::Instant};

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::Array,
    programs::{KProbe, ProgramError, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader, Pod,
};

use crate::{cli::RuntimeArgs, tracefs};

/// How one program attaches.
#[derive(Clone, Debug)]
pub enum Attach {
    RawTracepoint(&'static str),
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// The first of these kernel functions that /proc/kallsyms lists
    /// (looked up only when the rung is tried).
    Kprobe(&'static [&'static str]),
}

impl std::fmt::Display for Attach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attach::RawTracepoint(tp) => write!(f, "raw_tp/{tp}"),
            Attach::Tracepoint { category, name } => write!(f, "tracepoint/{category}/{name}"),
            Attach::Kprobe(funcs) => write!(f, "kprobe/{}", funcs.join("|")),
        }
    }
}

impl Attach {
    /// The inverse of `Display` for tracepoints: `raw_tp/NAME` or
    /// `tracepoint/CATEGORY/NAME`, as `--verbose` names them.
    pub fn parse_tracepoint(hook: &'static str) -> Option<Attach> {
        if let Some(name) = hook.strip_prefix("raw_tp/") {
            return Some(Attach::RawTracepoint(name));
        }
        let (category, name) = hook.strip_prefix("tracepoint/")?.split_once('/')?;
        Some(Attach::Tracepoint { category, name })
    }
}

/// One step of the ladder: programs that together implement the tool.
pub struct Rung {
    pub name: &'static str,
    /// (program name in the object, where it attaches)
    pub programs: Vec<(&'static str, Attach)>,
    /// Why this rung cannot work before trying (an offset missing from BTF, a
    /// flag it cannot serve, no candidate kernel function); None to try it.
    pub unusable: Option<String>,
}

impl Rung {
    pub fn new(name: &'static str, programs: Vec<(&'static str, Attach)>) -> Self {
        Rung { name, programs, unusable: None }
    }

    /// Marks the rung unusable for `reason` unless it already is.
    pub fn unusable_if(mut self, reason: Option<String>) -> Self {
        self.unusable = self.unusable.or(reason);
        self
    }
}

/// A tool's two builds of the same programs: configuration in a read-only
/// global (5.2+), or in a one-entry array map `CONFIG` for older kernels.
pub struct Objects {
    pub config_global: &'static [u8],
    pub config_map: &'static [u8],
}

/// A loaded tool: its object (maps, attached programs) and the rung taken.
/// Dropping it detaches every program and closes every map.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub rung: &'static str,
}

/// Sets up diagnostics (`--verbose` → info-level log on stderr).
pub fn init_logging(runtime: &RuntimeArgs) {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.target().starts_with("tools_user")
        }
        fn log(&self, r: &log::Record<'_>) {
            if self.enabled(r.metadata()) {
                crate::lifetime::note(&format!("{}: {}", tool_name(), r.args()));
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(if runtime.verbose { log::LevelFilter::Info } else { log::LevelFilter::Warn });
}

/// The name the tool was run as.
pub fn tool_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "tool".into())
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

/// Loads the tool with `config` as its `CONFIG` (a read-only global where
/// the kernel has global data, else the config map), then takes the first
/// rung (or only `runtime.rung`, when forced) that loads and attaches.
pub fn load<C: Pod>(
    objects: Objects,
    config: &C,
    max_entries: &[(&'static str, u32)],
    rungs: Vec<Rung>,
    runtime: &RuntimeArgs,
) -> Result<Loaded> {
    raise_memlock();
    let started = Instant::now();
    let mut loader = loader_without_kernel_btf();
    // A kernel without ring buffers cannot create one: the event tools then
    // use their perf-array programs, which never reference it.
    loader.allow_unsupported_maps();
    for &(map, n) in max_entries {
        loader.map_max_entries(map, n);
    }
    let global_data = aya::features().bpf_global_data();
    let mut ebpf = if global_data && !runtime.config_map {
        loader.override_global("CONFIG", config, true);
        let ebpf = loader.load(objects.config_global).context("creating the eBPF maps")?;
        log::info!("configuration: read-only global");
        ebpf
    } else {
        let mut ebpf = loader.load(objects.config_map).context("creating the eBPF maps")?;
        let mut map: Array<_, C> = Array::try_from(ebpf.map_mut("CONFIG").context("no CONFIG map")?)?;
        map.set(0, config, 0).context("writing the configuration map")?;
        let why = if global_data { "forced" } else { "the kernel has no global data" };
        log::info!("configuration: array map ({why})");
        ebpf
    };
    log::info!("object loaded, maps created in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);

    if let Some(forced) = &runtime.rung {
        if !rungs.iter().any(|r| r.name == forced) {
            let names: Vec<_> = rungs.iter().map(|r| r.name).collect();
            return Err(anyhow!("unknown rung {forced:?}; this tool has {}", names.join(", ")));
        }
    }

    let mut tried = String::new();
    for rung in rungs {
        if runtime.rung.as_deref().is_some_and(|forced| forced != rung.name) {
            continue;
        }
        if let Some(reason) = &rung.unusable {
            log::info!("rung {}: not usable: {reason}", rung.name);
            let _ = write!(tried, "\n  {}: {reason}", rung.name);
            continue;
        }
        match attach_rung(&mut ebpf, &rung) {
            Ok(()) => {
                log::info!("rung {}: all {} programs attached", rung.name, rung.programs.len());
                return Ok(Loaded { ebpf, rung: rung.name });
            }
            Err(err) => {
                log::info!("rung {}: failed: {err:#}", rung.name);
                let _ = write!(tried, "\n  {}: {}", rung.name, first_line(&err));
            }
        }
    }
    Err(anyhow!("no kernel path to trace with works here; tried:{tried}"))
}

/// An `EbpfLoader` that does not parse the kernel's BTF.
///
/// aya 0.14's `EbpfLoader::new()` always reads and parses
/// /sys/kernel/btf/vmlinux (about 15 ms and 17 MB of peak memory here) for
/// CO-RE relocations, and rustc emits none: our offsets come from our own
/// reader (btf.rs). The loader offers no constructor without that parse, so
/// for the duration of `new()` the soft RLIMIT_NOFILE is lowered to the
/// lowest free descriptor: its open() fails with EMFILE, aya treats that as
/// "no BTF", and the limit is restored. Nothing else opens files meanwhile:
/// the tools load before their runtime (or any other thread) starts.
pub fn loader_without_kernel_btf() -> EbpfLoader<'static> {
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

fn first_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    text.lines().next().unwrap_or_default().to_owned()
}

/// Loads and attaches every program of a rung; on any failure, unloads what
/// this rung loaded (detaching its links) so the next rung starts clean.
fn attach_rung(ebpf: &mut Ebpf, rung: &Rung) -> Result<()> {
    let mut done = Vec::new();
    for (program, target) in &rung.programs {
        match attach(ebpf, program, target) {
            Ok(id) => {
                log::info!("  {program} (id {id}) -> {target}");
                done.push(*program);
            }
            Err(err) => {
                for loaded in done.into_iter().chain([*program]) {
                    if let Some(p) = ebpf.program_mut(loaded) {
                        let _ = unload(p);
                    }
                }
                return Err(err.context(format!("{program} -> {target}")));
            }
        }
    }
    Ok(())
}

fn unload(program: &mut aya::programs::Program) -> Result<(), ProgramError> {
    use aya::programs::Program;
    match program {
        Program::RawTracePoint(p) => p.unload(),
        Program::TracePoint(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        _ => Ok(()),
    }
}

/// Loads program `name` (unless it already is) and attaches it; returns
/// its id. A program may be attached to several hooks this way.
pub fn attach(ebpf: &mut Ebpf, name: &str, attach: &Attach) -> Result<u32> {
    let program = ebpf.program_mut(name).with_context(|| format!("eBPF object has no program {name}"))?;
    let loaded = program.fd().is_ok();
    match attach {
        Attach::RawTracepoint(tp) => {
            let p: &mut RawTracePoint = program.try_into()?;
            if !loaded {
                p.load()?;
            }
            p.attach(tp)?;
        }
        Attach::Tracepoint { category, name } => {
            tracefs::root()?;
            let p: &mut TracePoint = program.try_into()?;
            if !loaded {
                p.load()?;
            }
            p.attach(category, name)?;
        }
        Attach::Kprobe(funcs) => {
            let p: &mut KProbe = program.try_into()?;
            if !loaded {
                p.load()?;
            }
            // The first candidate the kernel lets us probe: a symbol can be
            // listed yet refuse a kprobe (blacklisted, notrace, mid-function).
            let mut refused = Vec::new();
            let mut attached = false;
            for func in kallsyms_find_all(funcs) {
                match p.attach(&func, 0) {
                    Ok(_) => {
                        log::info!("  kprobe on {func}");
                        attached = true;
                        break;
                    }
                    Err(err) => refused.push(format!("{func}: {err}")),
                }
            }
            if !attached {
                if refused.is_empty() {
                    anyhow::bail!("no {} in /proc/kallsyms", funcs.join(" or "));
                }
                anyhow::bail!("no kprobe attaches: {}", refused.join("; "));
            }
        }
    }
    Ok(program.info().map(|info| info.id()).unwrap_or(0))
}

/// The kernel's symbols for `functions`, in that order, as named in
/// /proc/kallsyms (which may carry a compiler suffix: `finish_task_switch.isra.0`).
pub fn kallsyms_find_all(functions: &[&str]) -> Vec<String> {
    let Ok(syms) = fs::read_to_string("/proc/kallsyms") else { return Vec::new() };
    let mut found = Vec::new();
    for &want in functions {
        for line in syms.lines() {
            let Some(name) = line.split_whitespace().nth(2) else { continue };
            let matches = name == want || (name.starts_with(want) && name[want.len()..].starts_with('.'));
            if matches && !found.iter().any(|f| f == name) {
                found.push(name.to_owned());
            }
        }
    }
    found
}
