//! gethostlatency: show latency for getaddrinfo/gethostbyname[2] calls, as
//! BCC's gethostlatency does, in every C library the machine's processes
//! use, not one: glibc and musl, a container's, a copy beside a binary.
//! Libraries are found through /proc/*/maps, opened through the process's
//! root, told apart by device and inode, recognised by the resolver
//! functions they export, and probed once each. The scan repeats every
//! second, over new processes and those that exec'd (a tracepoint says
//! which), so a library that appears later is probed within about one.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::ExitCode,
    rc::Rc,
};

use anyhow::{bail, Context as _, Result};
use aya::Ebpf;
use clap::Parser;
use serde_json::Value;
use tools_common::gethostlatency::{
    cookie as attach_cookie, function, maps, programs, Call, Config, LookupEvent, EXECS_SIZE, UNKNOWN_LIBRARY,
};
use tools_user::{
    btf::Btf,
    cli::{EventArgs, PidArg, RuntimeArgs},
    columns::{Cell, Column, Columns},
    diag,
    driver::events::{self, EventTool},
    ebpf_object,
    elf::Elf,
    events::EventPath,
    lifetime::{self, BadInput},
    loader::{self, Attach, Rung, Uprobe, UprobeAt},
    output::{self, cstr, Format},
    procfs,
};

/// Show latency for getaddrinfo/gethostbyname[2] calls.
#[derive(Parser, Debug)]
#[command(name = "gethostlatency", after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    pid: PidArg,
    /// Probe this C library only (repeatable); by default every C library
    /// mapped by any process (with -p, by that process).
    #[arg(short = 'l', long = "libc", value_name = "PATH")]
    libc: Vec<PathBuf>,
    /// Trace tasks in this cgroup v2 directory (and below it) only.
    #[arg(short = 'c', long = "cgroup", value_name = "PATH", value_parser = tools_user::cli::cgroup_dir)]
    cgroup: Option<PathBuf>,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

const EXAMPLES: &str = "examples:
    ./gethostlatency           # time every host name lookup
    ./gethostlatency -p 181    # only trace PID 181
    ./gethostlatency -l /lib/x86_64-linux-gnu/libc.so.6    # only this C library
    ./gethostlatency --json    # JSON Lines: function, result, the library";

/// The functions traced, by `function::*`.
const FUNCTIONS: [&str; 3] = ["getaddrinfo", "gethostbyname", "gethostbyname2"];

fn main() -> ExitCode {
    lifetime::main_with("gethostlatency", || {
        let args = Args::parse();
        diag::init_logging(args.runtime.verbose);
        let path = EventPath::choose(&args.runtime, &args.events);
        let config = Config {
            target_tgid: args.pid.pid.unwrap_or(0),
            cgroup: match &args.cgroup {
                Some(dir) => tools_user::cgroup::filter(dir, Btf::for_tool(&args.runtime)?.ok().as_ref())?,
                None => Default::default(),
            },
            ..Config::default()
        };
        let libraries = Rc::new(RefCell::new(Libraries::default()));
        let started = std::time::Instant::now();
        let found = match args.libc.is_empty() {
            true => libraries.borrow_mut().scan(args.pid.pid),
            false => libraries.borrow_mut().named(&args.libc)?,
        };
        log::info!(
            "C libraries: {} found in {:.1} ms ({} processes read)",
            found.len(),
            started.elapsed().as_secs_f64() * 1e3,
            libraries.borrow().scanned.len()
        );
        let cookies = aya::features().bpf_cookie();
        let rungs = vec![
            probes(Rung::new("uprobe_cookie"), &found, &libraries.borrow(), true, &path)
                .unusable_if((!cookies).then(|| "this kernel has no BPF cookies (5.15+)".to_owned())),
            probes(Rung::new("uprobe"), &found, &libraries.borrow(), false, &path),
        ];
        let mut loaded =
            loader::load(ebpf_object!("gethostlatency"), &config, &path.max_entries(), rungs, &args.runtime)?;
        let with_cookies = loaded.rung == "uprobe_cookie";
        let named = !args.libc.is_empty();
        let execs_followed = !named && follow_execs(&mut loaded.ebpf);
        // What exec'd between the first scan and now was not seen: the
        // next scan reads every process again, once.
        libraries.borrow_mut().forget(None);
        for &index in &found {
            log::info!("probing {}", libraries.borrow().found[index].1.path.display());
        }
        let format = args.events.format(&args.runtime);
        let mut tool =
            EventTool::new(columns(format, libraries.clone()), "Tracing host name lookups... Hit Ctrl-C to end.");
        tool.inflight = "lookups";
        let rescan = libraries.clone();
        let pid = args.pid.pid;
        tool.every_second = Some(Box::new(move |ebpf: &mut Ebpf| {
            forget_calls_of_exited_threads(ebpf)?;
            if named {
                return Ok(());
            }
            // Libraries that appear later: a container started after the tool.
            let mut libs = rescan.borrow_mut();
            libs.forget(if execs_followed { take_execs(ebpf)? } else { None });
            let new = libs.scan(pid);
            libs.attach(ebpf, &new, with_cookies, &path)
        }));
        events::run(tool, loaded, &path)
    })
}

/// BCC's columns, and the JSON fields.
fn columns(format: Format, libraries: Rc<RefCell<Libraries>>) -> Columns<'static, LookupEvent> {
    let columns = vec![
        Column::new(|_| Cell::Text(output::hms_now())).text_csv("TIME", 9),
        Column::new(|e: &LookupEvent| Cell::UInt(e.ts_ns)).json("ts_ns"),
        Column::new(|e: &LookupEvent| Cell::UInt(e.pid.into())).text_csv("PID", 7).json("pid"),
        Column::new(|e: &LookupEvent| Cell::UInt(e.tid.into())).json("tid"),
        Column::new(|e: &LookupEvent| Cell::Bytes(cstr(&e.comm))).text_csv("COMM", 16).json("comm"),
        Column::new(|e: &LookupEvent| Cell::Text(FUNCTIONS.get(e.function as usize).unwrap_or(&"?").to_string()))
            .json("function"),
        Column::new(|e: &LookupEvent| Cell::Fixed(e.latency_ns as f64 / 1e6, 2)).text_csv("LATms", 10).right(),
        Column::new(|e: &LookupEvent| Cell::UInt(e.latency_ns)).json("latency_ns"),
        Column::new(|e: &LookupEvent| Cell::Bytes(host(e))).text_csv("HOST", 0).json("host"),
        Column::new(|e: &LookupEvent| Cell::Int(e.ret)).json("ret"),
        Column::new(|e: &LookupEvent| match meaning(e) {
            Some(name) => Cell::Text(name.into()),
            None => Cell::Json(Value::Null),
        })
        .json("error"),
        Column::new(move |e: &LookupEvent| match libraries.borrow().name_of(e) {
            Some(path) => Cell::Text(path),
            None => Cell::Unknown,
        })
        .json("libc"),
    ];
    Columns { columns, format, record: "lookup" }
}

fn host(e: &LookupEvent) -> &[u8] {
    &e.host[..(e.host_len as usize).min(e.host.len())]
}

/// What a failed lookup's result means: getaddrinfo's EAI_* (the same
/// numbers in glibc and musl); gethostbyname's NULL (its h_errno is
/// thread-local and not read).
fn meaning(e: &LookupEvent) -> Option<&'static str> {
    if e.function != function::GETADDRINFO {
        return (e.ret == 0).then_some("NULL");
    }
    Some(match e.ret {
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
struct Library {
    path: PathBuf,
    /// File offsets of FUNCTIONS (None where it lacks one).
    offsets: [Option<u64>; 3],
}

/// Every C library found, by (device, inode); the index is the cookie's.
#[derive(Default)]
struct Libraries {
    found: Vec<((u64, u64), Library)>,
    /// Processes whose maps were read: each is read again only after an
    /// exec (a container's first process execs its entrypoint, which maps
    /// the container's C library).
    scanned: HashSet<u32>,
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
                match resolver_offsets(&file.reachable()) {
                    Ok(offsets) => {
                        self.found.push((key, Library { path: file.reachable(), offsets }));
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
    fn attach(&self, ebpf: &mut Ebpf, new: &[usize], cookies: bool, path: &EventPath) -> Result<()> {
        for &index in new {
            let library = &self.found[index].1;
            let rung = probes(Rung::new("more"), &[index], self, cookies, path);
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
    fn name_of(&self, e: &LookupEvent) -> Option<String> {
        let index = match e.library {
            UNKNOWN_LIBRARY => self.library_of_pid(e.pid)?,
            index => index as usize,
        };
        self.found.get(index).map(|(_, lib)| shown_path(&lib.path))
    }

    fn library_of_pid(&self, pid: u32) -> Option<usize> {
        if let Some(&index) = self.by_pid.get(&pid) {
            return Some(index);
        }
        let files = procfs::mapped_files(pid, looks_like_libc).ok()?;
        files.iter().find_map(|f| self.found.iter().position(|(k, _)| *k == (f.dev, f.ino)))
    }
}

/// `/proc/PID/root/usr/lib/...` as the process names it: `/usr/lib/...`
/// (the root's PID is not the point), unless it is a container's.
fn shown_path(path: &Path) -> String {
    let text = path.display().to_string();
    match text.strip_prefix("/proc/").and_then(|rest| rest.split_once("/root/")) {
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
    let gone: Vec<u32> =
        calls.keys().filter_map(Result::ok).filter(|tid| !Path::new(&format!("/proc/{tid}")).exists()).collect();
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

/// A rung's uprobes for `libraries`: every function's entry and return in
/// each, with cookies (one entry program for all) or without (one per
/// function).
fn probes(mut rung: Rung, indexes: &[usize], libraries: &Libraries, cookies: bool, path: &EventPath) -> Rung {
    const ENTRIES: [&str; 3] =
        [programs::ENTRY_GETADDRINFO, programs::ENTRY_GETHOSTBYNAME, programs::ENTRY_GETHOSTBYNAME2];
    for &index in indexes {
        let library = &libraries.found[index].1;
        for (function, offset) in library.offsets.iter().enumerate() {
            let Some(offset) = *offset else { continue };
            let cookie = cookies.then(|| attach_cookie(index as u32, function as u32));
            let at = Uprobe { binary: library.path.clone(), at: UprobeAt::Offset(offset), pid: None, cookie };
            let entry = if cookies { programs::ENTRY } else { ENTRIES[function] };
            rung = rung
                .program(path.program(programs::RETURN), Attach::Uretprobe(at.clone()))
                .program(entry, Attach::Uprobe(at));
        }
    }
    rung
}
