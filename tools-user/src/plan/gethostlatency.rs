//! gethostlatency's plan: uprobes on the resolver functions of every C
//! library the machine's processes use (glibc and musl, a container's, a
//! copy beside a binary), for the command-line tool (an event per lookup)
//! and the exporter (every lookup counted in the kernel's keyed
//! histogram). Libraries are found through /proc/*/maps, opened through
//! the process's root, told apart by device and inode, recognised by the
//! resolver functions they export, and probed once each; [`Resolvers`]
//! keeps looking, over new processes and those that exec'd (a tracepoint
//! says which).

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    rc::Rc,
};

use anyhow::{bail, Context as _, Result};
use aya::Ebpf;
use tools_common::gethostlatency::{
    cookie as attach_cookie, function, maps, programs, Call, Config, LookupEvent, EXECS_SIZE, UNKNOWN_LIBRARY,
};

use super::{BtfSource, Plan};
use crate::{
    ebpf_object,
    elf::Elf,
    events::EventPath,
    lifetime::BadInput,
    loader::{self, Attach, Keeper, Rung, Uprobe, UprobeAt, UprobeMulti},
    procfs,
};

/// The functions traced, by `function::*`.
pub const FUNCTIONS: [&str; 3] = ["getaddrinfo", "gethostbyname", "gethostbyname2"];

/// What the command-line tool and the exporter ask for.
#[derive(Default)]
pub struct Options<'a> {
    /// `-p`: only this process (and only its C libraries are looked for).
    pub pid: Option<u32>,
    /// `-l`: exactly these C libraries, none found later.
    pub libc: &'a [PathBuf],
    /// `-c`: only tasks in this cgroup v2 directory or below it.
    pub cgroup: Option<&'a Path>,
    /// `--containers`: events carry the task's cgroup.
    pub containers: bool,
    /// Count every lookup in the kernel, by function and result, in units
    /// of this many nanoseconds; send no events (the exporter: 1 ns;
    /// `--histogram`: its unit).
    pub histogram_unit_ns: Option<u32>,
}

/// The probes as they follow the machine's C libraries: the plan's keeper.
struct Resolvers {
    /// Every library found (shared with whatever names them in output).
    libraries: Rc<RefCell<Libraries>>,
    pid: Option<u32>,
    /// `-l`: the libraries were named, none is looked for.
    named: bool,
    /// Set once loaded: how the rung taken hooks a library; whether execs
    /// are followed.
    hooks: Hooks,
    execs_followed: bool,
}

/// The configuration, the rungs (best first), the map sizes, and the keeper
/// that probes C libraries as they appear; with the libraries found, which
/// the events name.
pub fn plan(options: &Options, btf: BtfSource<'_>, path: &EventPath) -> Result<(Plan<Config>, Rc<RefCell<Libraries>>)> {
    let config = Config {
        target_tgid: options.pid.unwrap_or(0),
        histogram_unit_ns: options.histogram_unit_ns.unwrap_or(0),
        cgroup: crate::cgroup::events_walk(options.cgroup, options.containers, btf.as_ref().ok())?,
    };
    let mut libraries = Libraries::default();
    let started = std::time::Instant::now();
    let found = match options.libc.is_empty() {
        true => libraries.scan(options.pid),
        false => libraries.named(options.libc)?,
    };
    log::info!(
        "C libraries: {} found in {:.1} ms ({} processes read)",
        found.len(),
        started.elapsed().as_secs_f64() * 1e3,
        libraries.scanned.len()
    );
    if let (Some(pid), true, true) = (options.pid, options.libc.is_empty(), found.is_empty()) {
        // Tracing nothing until Ctrl-C would look like a process that does
        // no lookups.
        return Err(BadInput(format!(
            "-p {pid}: the process maps no C library with a resolver (a statically linked program?); \
             -l /proc/{pid}/exe probes its executable, if that carries the resolver's symbols"
        ))
        .into());
    }
    let cookies = aya::features().bpf_cookie();
    let rungs = vec![
        // Detached in one go (see uprobe_multi.rs): 7 ms where the
        // uprobe_cookie rung's 6 hooks per library took 80 ms each.
        probes(Rung::new("uprobe_multi"), &found, &libraries, Hooks::Multi)
            .multi_uprobe(programs::ENTRY)
            .multi_uprobe(programs::RETURN)
            .unusable_if((!cookies).then(|| "this kernel has no BPF cookies (5.15+)".to_owned())),
        probes(Rung::new("uprobe_cookie"), &found, &libraries, Hooks::Cookies)
            .unusable_if((!cookies).then(|| "this kernel has no BPF cookies (5.15+)".to_owned())),
        probes(Rung::new("uprobe"), &found, &libraries, Hooks::PerFunction).unusable_if(super::current_task_refused(
            path.build,
            crate::cgroup::task_flag(options.cgroup, options.containers),
        )),
    ];
    let libraries = Rc::new(RefCell::new(libraries));
    let resolvers = Resolvers {
        libraries: libraries.clone(),
        pid: options.pid,
        named: !options.libc.is_empty(),
        hooks: Hooks::PerFunction,
        execs_followed: false,
    };
    let mut plan = Plan::new(ebpf_object!("gethostlatency"), path.build, config, rungs);
    plan.map_sizes = path.max_entries();
    plan.keeper = Some(Box::new(resolvers));
    Ok((plan, libraries))
}

impl Keeper for Resolvers {
    /// Follows execs where the kernel can.
    fn loaded(&mut self, ebpf: &mut Ebpf, rung: &str) {
        for (_, library) in &self.libraries.borrow().found {
            log::info!("probing {}", library.path.display());
        }
        self.hooks = match rung {
            "uprobe_multi" => Hooks::Multi,
            "uprobe_cookie" => Hooks::Cookies,
            _ => Hooks::PerFunction,
        };
        self.execs_followed = !self.named && follow_execs(ebpf);
        // What exec'd between the first scan and now was not seen: the
        // next look reads every process again, once.
        self.libraries.borrow_mut().forget(None);
    }

    /// Probes the C libraries that appeared since the last look (a
    /// container started later, a process that exec'd), and forgets the
    /// calls of threads that exited inside one.
    fn tick(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        forget_calls_of_exited_threads(ebpf)?;
        if self.named {
            return Ok(());
        }
        let mut libs = self.libraries.borrow_mut();
        libs.forget(if self.execs_followed { take_execs(ebpf)? } else { None });
        let new = libs.scan(self.pid);
        libs.attach(ebpf, &new, self.hooks)
    }
}

/// A key's (function, result) labels (see
/// [`tools_common::gethostlatency::hist_key`]): `ok`, or what
/// [`failure`] names.
pub fn labels_of(key: u64) -> (&'static str, &'static str) {
    let function = (key >> 8) as u32;
    let result = key & 0xff;
    let ret = match function {
        function::GETADDRINFO => -(result as i64),
        _ => (result == 0) as i64,
    };
    let name = FUNCTIONS.get(function as usize).copied().unwrap_or("unknown");
    (name, failure(function, ret).unwrap_or("ok"))
}

/// The labels of a key of the keyed histograms, as the exporter and
/// `--histogram` name them.
pub fn key_labels(key: u64) -> Vec<(&'static str, String)> {
    let (function, result) = labels_of(key);
    vec![("function", function.to_owned()), ("result", result.to_owned())]
}

/// What a failed lookup's result means: getaddrinfo's EAI_* (the same
/// numbers in glibc and musl); gethostbyname's NULL (its h_errno is
/// thread-local and not read). None for a lookup that succeeded.
pub fn failure(function: u32, ret: i64) -> Option<&'static str> {
    if function != function::GETADDRINFO {
        return (ret == 0).then_some("NULL");
    }
    Some(match ret {
        0 => return None,
        -1 => "EAI_BADFLAGS",
        -2 => "EAI_NONAME",
        -3 => "EAI_AGAIN",
        -4 => "EAI_FAIL",
        -5 => "EAI_NODATA",
        -6 => "EAI_FAMILY",
        -7 => "EAI_SOCKTYPE",
        -8 => "EAI_SERVICE",
        -9 => "EAI_ADDRFAMILY",
        -10 => "EAI_MEMORY",
        -11 => "EAI_SYSTEM",
        -12 => "EAI_OVERFLOW",
        _ => "EAI_?",
    })
}

/// A C library: where to reach it, and where its resolver functions are.
pub struct Library {
    pub path: PathBuf,
    /// File offsets of FUNCTIONS (None where it lacks one).
    pub offsets: [Option<u64>; 3],
}

/// Every C library found, by (device, inode); the index is the cookie's.
#[derive(Default)]
pub struct Libraries {
    pub found: Vec<((u64, u64), Library)>,
    /// Processes whose maps were read: each is read again only after an
    /// exec (a container's first process execs its entrypoint, which maps
    /// the container's C library).
    pub scanned: HashSet<u32>,
    /// Files looked at that are not C libraries, so they are not read again.
    not_libc: HashSet<(u64, u64)>,
    /// The C library each process seen maps, for kernels without cookies
    /// (the process may be gone by the time its lookup is printed).
    by_pid: HashMap<u32, usize>,
}

impl Libraries {
    /// Looks at the processes not seen before (or only `pid`); returns the
    /// indexes of libraries found for the first time.
    fn scan(&mut self, only: Option<u32>) -> Vec<usize> {
        let pids: HashSet<u32> = match only {
            Some(pid) => HashSet::from([pid]),
            None => procfs::pids().into_iter().collect(),
        };
        // Forget processes that are gone (their PIDs may come back as others).
        self.scanned.retain(|pid| pids.contains(pid));
        self.by_pid.retain(|pid, _| pids.contains(pid));
        let mut new = Vec::new();
        for pid in pids {
            if self.scanned.contains(&pid) {
                continue;
            }
            // A process that exited meanwhile has nothing to say.
            let Ok(files) = procfs::mapped_files(pid, |f| looks_like_libc(f) || is_glibc_loader(f)) else { continue };
            // Caught between its exec and the loader mapping its C library:
            // read again next time.
            if files.iter().all(|f| is_glibc_loader(&f.path)) && !files.is_empty() {
                continue;
            }
            self.scanned.insert(pid);
            for file in files.into_iter().filter(|f| looks_like_libc(&f.path)) {
                let key = (file.dev, file.ino);
                if let Some(index) = self.found.iter().position(|(k, _)| *k == key) {
                    self.by_pid.insert(pid, index);
                    continue;
                }
                if self.not_libc.contains(&key) {
                    continue;
                }
                let path = probe_path(&file);
                match resolver_offsets(&path) {
                    Ok(offsets) => {
                        self.found.push((key, Library { path, offsets }));
                        new.push(self.found.len() - 1);
                        self.by_pid.insert(pid, self.found.len() - 1);
                    }
                    Err(err) => {
                        log::info!("{} (pid {pid}): not probed: {err:#}", file.path);
                        self.not_libc.insert(key);
                    }
                }
            }
        }
        new
    }

    /// Processes to read again at the next scan: they exec'd (`None`: any
    /// may have, and every process is read again).
    fn forget(&mut self, execs: Option<Vec<u32>>) {
        match execs {
            Some(pids) => {
                for pid in pids {
                    self.scanned.remove(&pid);
                }
            }
            None => self.scanned.clear(),
        }
    }

    /// `-l`: exactly these files, each of which must be an ELF library
    /// with the resolver functions.
    fn named(&mut self, paths: &[PathBuf]) -> Result<Vec<usize>> {
        for path in paths {
            let offsets = resolver_offsets(path).map_err(|e| BadInput(format!("-l {}: {e:#}", path.display())))?;
            let meta = std::fs::metadata(path)?;
            self.found.push(((meta.dev(), meta.ino()), Library { path: path.clone(), offsets }));
        }
        Ok((0..self.found.len()).collect())
    }

    /// Attaches the uprobes of libraries found while running.
    fn attach(&self, ebpf: &mut Ebpf, new: &[usize], hooks: Hooks) -> Result<()> {
        for &index in new {
            let library = &self.found[index].1;
            let rung = probes(Rung::new("more"), &[index], self, hooks);
            let failed = rung.programs.iter().find_map(|(program, attach)| loader::attach(ebpf, program, attach).err());
            match failed {
                // It may have gone (the process exited): not the tool's end.
                Some(err) => log::warn!("probing {}: {err:#}", library.path.display()),
                None => log::info!("probing {}", library.path.display()),
            }
        }
        Ok(())
    }

    /// The library an event came through: its cookie's index, else the
    /// process's own C library (kernels without cookies).
    pub fn name_of(&self, e: &LookupEvent) -> Option<String> {
        let index = match e.library {
            UNKNOWN_LIBRARY => self.library_of_pid(e.pid)?,
            index => index as usize,
        };
        self.found.get(index).map(|(_, lib)| shown_path(&lib.path))
    }

    /// The library of an event's process (a kernel's PID): processes were
    /// listed by those PIDs only where the kernel's /proc is here.
    fn library_of_pid(&self, pid: u32) -> Option<usize> {
        procfs::kernel_pids().proc()?;
        if let Some(&index) = self.by_pid.get(&pid) {
            return Some(index);
        }
        let files = procfs::mapped_files(pid, looks_like_libc).ok()?;
        files.iter().find_map(|f| self.found.iter().position(|(k, _)| *k == (f.dev, f.ino)))
    }
}

/// Where to probe a library found in a process's maps: the process's own
/// name for it where this root has the same file there, which outlives the
/// process (a short-lived process found at start-up that exits before the
/// attach would otherwise fail the tool); else through the process's root
/// (a container's).
fn probe_path(file: &procfs::Mapped) -> PathBuf {
    match std::fs::metadata(&file.path) {
        Ok(meta) if (meta.dev(), meta.ino()) == (file.dev, file.ino) => PathBuf::from(&file.path),
        _ => file.reachable(procfs::kernel_pids().listing()),
    }
}

/// `/proc/PID/root/usr/lib/...` as the process names it: `/usr/lib/...`
/// (the root's PID is not the point), unless it is a container's.
fn shown_path(path: &Path) -> String {
    let text = path.display().to_string();
    let proc = format!("{}/", procfs::kernel_pids().listing().display());
    match text.strip_prefix(&proc).and_then(|rest| rest.split_once("/root/")) {
        Some((_, inside)) => format!("/{inside}"),
        None => text,
    }
}

/// Attaches the exec tracepoint, which tells which processes to read
/// again; without it every process is read again each second.
fn follow_execs(ebpf: &mut Ebpf) -> bool {
    match loader::attach(ebpf, programs::EXEC, &Attach::tracepoint("sched", "sched_process_exec")) {
        Ok(_) => {
            log::info!("execs followed on tracepoint sched/sched_process_exec");
            true
        }
        Err(err) => {
            log::info!("execs not followed ({err:#}): every process is read again each second");
            false
        }
    }
}

/// The processes that exec'd since the last look, taken out of the table;
/// `None` when it filled up (some were not recorded).
fn take_execs(ebpf: &mut Ebpf) -> Result<Option<Vec<u32>>> {
    let mut execs: aya::maps::HashMap<_, u32, u8> =
        aya::maps::HashMap::try_from(ebpf.map_mut(maps::EXECS).context("no EXECS map")?)?;
    let pids: Vec<u32> = execs.keys().filter_map(Result::ok).collect();
    for pid in &pids {
        let _ = execs.remove(pid);
    }
    Ok((pids.len() < EXECS_SIZE as usize).then_some(pids))
}

/// Removes the calls in flight of threads that are gone: a thread that
/// exits inside a resolver call never returns from it.
fn forget_calls_of_exited_threads(ebpf: &mut Ebpf) -> Result<()> {
    let mut calls: aya::maps::HashMap<_, u32, Call> =
        aya::maps::HashMap::try_from(ebpf.map_mut(maps::CALLS).context("no CALLS map")?)?;
    let pids = procfs::kernel_pids();
    let gone: Vec<u32> = calls.keys().filter_map(Result::ok).filter(|&tid| !pids.exists(tid.into())).collect();
    for tid in gone {
        let _ = calls.remove(&tid);
    }
    Ok(())
}

/// A mapped file worth opening: C libraries are named so (glibc's
/// `libc.so.6`, `libc-2.31.so`; musl's `libc.so`, `ld-musl-*`,
/// `libc.musl-*`); what decides is whether it exports the functions.
fn looks_like_libc(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("libc.") || name.starts_with("libc-") || name.starts_with("ld-musl")
}

/// glibc's dynamic loader, which maps the C library after the exec.
fn is_glibc_loader(path: &str) -> bool {
    path.rsplit('/').next().unwrap_or(path).starts_with("ld-linux")
}

/// The file offsets of the resolver functions in the ELF file at `path`;
/// an error when it is not an ELF library or exports none of them.
fn resolver_offsets(path: &Path) -> Result<[Option<u64>; 3]> {
    let elf = Elf::open(path)?;
    let mut offsets = [None; 3];
    for (slot, name) in offsets.iter_mut().zip(FUNCTIONS) {
        *slot = elf.function_offset(name)?;
    }
    if offsets.iter().all(Option::is_none) {
        bail!("it exports none of {}", FUNCTIONS.join(", "));
    }
    Ok(offsets)
}

/// How a rung hooks a library's resolver functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hooks {
    /// Two multi-uprobe links (6.6+), entries and returns, with cookies.
    Multi,
    /// A uprobe per entry and per return, one entry program for all,
    /// cookies saying which function (5.15+).
    Cookies,
    /// A uprobe per entry and per return, an entry program per function.
    PerFunction,
}

/// A rung's uprobes for `libraries`: every function's entry and return in
/// each, as `hooks` says.
fn probes(mut rung: Rung, indexes: &[usize], libraries: &Libraries, hooks: Hooks) -> Rung {
    const ENTRIES: [&str; 3] =
        [programs::ENTRY_GETADDRINFO, programs::ENTRY_GETHOSTBYNAME, programs::ENTRY_GETHOSTBYNAME2];
    for &index in indexes {
        let library = &libraries.found[index].1;
        let functions = library.offsets.iter().enumerate().filter_map(|(f, offset)| Some((f as u32, (*offset)?)));
        if hooks == Hooks::Multi {
            let (offsets, cookies) = functions.map(|(f, offset)| (offset, attach_cookie(index as u32, f))).unzip();
            let at = UprobeMulti { binary: library.path.clone(), offsets, cookies };
            rung = rung
                .program(programs::RETURN, Attach::UretprobeMulti(at.clone()))
                .program(programs::ENTRY, Attach::UprobeMulti(at));
            continue;
        }
        for (function, offset) in functions {
            let cookie = (hooks == Hooks::Cookies).then(|| attach_cookie(index as u32, function));
            let at = Uprobe { binary: library.path.clone(), at: UprobeAt::Offset(offset), pid: None, cookie };
            let entry = if hooks == Hooks::Cookies { programs::ENTRY } else { ENTRIES[function as usize] };
            rung = rung.program(programs::RETURN, Attach::Uretprobe(at.clone())).program(entry, Attach::Uprobe(at));
        }
    }
    rung
}

#[cfg(test)]
mod tests {
    use tools_common::gethostlatency::hist_key;

    use super::*;

    #[test]
    fn kernel_keys_name_the_function_and_its_result() {
        let named = |function, ret| labels_of(hist_key(function, ret));
        assert_eq!(named(function::GETADDRINFO, 0), ("getaddrinfo", "ok"));
        assert_eq!(named(function::GETADDRINFO, -2), ("getaddrinfo", "EAI_NONAME"));
        assert_eq!(named(function::GETADDRINFO, -3), ("getaddrinfo", "EAI_AGAIN"));
        assert_eq!(named(function::GETADDRINFO, -100), ("getaddrinfo", "EAI_?"));
        assert_eq!(named(function::GETADDRINFO, 7), ("getaddrinfo", "EAI_?"));
        assert_eq!(named(function::GETHOSTBYNAME, 0x7f00_dead_beef), ("gethostbyname", "ok"));
        assert_eq!(named(function::GETHOSTBYNAME2, 0), ("gethostbyname2", "NULL"));
    }
}
