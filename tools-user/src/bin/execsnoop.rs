//! execsnoop: trace exec() calls, as BCC's execsnoop does, with every exec
//! seen (execveat, fexecve and non-leader threads too) and arguments that
//! cannot be missing or forge a line.

use std::{io::Write as _, mem::offset_of, process::ExitCode, time::Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use regex_lite::Regex;
use serde_json::json;
use tools_common::execsnoop::{event_flags, Config, ExecEvent};
use tools_user::{
    btf::Btf,
    cli::{EventArgs, RuntimeArgs},
    ebpf_object,
    events::{EventStream, Transport},
    lifetime::{self, note, Shutdown, EXIT_LOST},
    loader::{self, tool_name, Attach, Rung},
    output::{self, Out},
    tracefs::Format,
};

/// Trace exec() syscalls.
#[derive(Parser, Debug)]
#[command(name = "execsnoop", after_help = EXAMPLES)]
struct Args {
    /// Include a time column on output (HH:MM:SS).
    #[arg(short = 'T', long = "time")]
    time: bool,
    /// Include a timestamp column (seconds since start).
    #[arg(short = 't', long = "timestamp")]
    timestamp: bool,
    /// Include failed exec()s.
    #[arg(short = 'x', long = "fails")]
    fails: bool,
    /// Trace this UID only (a number or a user name).
    #[arg(short = 'u', long = "uid", value_name = "USER")]
    uid: Option<String>,
    /// Add quotemarks (") around arguments.
    #[arg(short = 'q', long = "quote")]
    quote: bool,
    /// Only print commands matching this name (regex), any argument.
    #[arg(short = 'n', long = "name")]
    name: Option<String>,
    /// Only print commands where the arguments contain this line (regex).
    #[arg(short = 'l', long = "line")]
    line: Option<String>,
    /// Print UID column.
    #[arg(short = 'U', long = "print-uid")]
    print_uid: bool,
    /// Print CPU column.
    #[arg(short = 'C', long = "print-cpu")]
    print_cpu: bool,
    /// Print parent process name column.
    #[arg(short = 'M', long = "print-pcomm")]
    print_pcomm: bool,
    /// Trace children of this parent PID only.
    #[arg(short = 'P', long = "ppid")]
    ppid: Option<u32>,
    /// Maximum number of arguments printed (the file name counts as one).
    #[arg(long = "max-args", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    max_args: u32,
    /// Trace tasks in this cgroup v2 directory (and below it) only.
    #[arg(short = 'c', long = "cgroup", value_name = "PATH")]
    cgroup: Option<std::path::PathBuf>,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

const EXAMPLES: &str = "examples:
    ./execsnoop           # trace all exec() syscalls
    ./execsnoop -x        # include failed exec()s
    ./execsnoop -T        # include time (HH:MM:SS)
    ./execsnoop -U        # include UID
    ./execsnoop -u 1000   # only trace UID 1000
    ./execsnoop -u user   # get user UID and trace only them
    ./execsnoop -t        # include timestamps
    ./execsnoop -q        # add \"quotemarks\" around arguments
    ./execsnoop -n main   # only print command lines containing \"main\"
    ./execsnoop -l tpkg   # only print command where arguments contains \"tpkg\"
    ./execsnoop -P 181    # only trace new processes whose parent PID is 181
    ./execsnoop --json    # JSON Lines, arguments lossless";

/// BCC's per-argument limit in text output (its 128-byte reads, NUL included).
const ARG_BYTES: usize = 127;

fn main() -> ExitCode {
    lifetime::main_with(|| {
        let args = Args::parse();
        loader::init_logging(&args.runtime);
        let name = args.name.as_deref().map(Regex::new).transpose().context("-n")?;
        let line = args.line.as_deref().map(Regex::new).transpose().context("-l")?;
        let transport = Transport::choose(&args.runtime);
        let (config, rungs) = plan(&args, transport)?;
        let pages = args.events.buffer_pages as usize;
        let mut loaded =
            loader::load(ebpf_object!("execsnoop"), &config, &transport.max_entries(pages), rungs, &args.runtime)?;
        let rt = lifetime::runtime()?;
        let _in_runtime = rt.enter();
        let mut stream = EventStream::open(&mut loaded.ebpf, transport, pages)?;
        let printer = Printer { args: &args, name, line, started: Instant::now() };
        let lost = rt.block_on(run(&printer, &mut stream))?;
        drop(stream);
        drop(loaded);
        if lost > 0 {
            note(&format!("{}: lost {lost} events in total", tool_name()));
            return Ok(ExitCode::from(EXIT_LOST));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Prints events until a signal; returns how many were lost.
async fn run(printer: &Printer<'_>, stream: &mut EventStream) -> Result<u64> {
    let mut shutdown = Shutdown::new()?;
    let mut out = Out::stdout();
    if printer.args.runtime.json {
        note("Tracing exec()s... Hit Ctrl-C to end.");
    } else {
        writeln!(out.text(), "{}", printer.header()).map_err(output::closed_or)?;
        out.flush()?;
    }
    let mut lost = 0u64;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut failed = None;
    loop {
        let mut handle = |bytes: &[u8]| {
            if failed.is_none() {
                failed = printer.event(&mut out, bytes).err();
            }
        };
        let exiting = tokio::select! {
            batch = stream.next_batch(&mut handle) => { batch?; false }
            _ = tick.tick() => false,
            _ = shutdown.requested() => true,
        };
        if exiting {
            stream.drain_now(&mut handle);
        }
        if let Some(err) = failed.take() {
            return Err(err);
        }
        out.flush()?;
        let drops = stream.new_drops()?;
        // Events not handed over, and failed execs whose entry did not fit.
        let new = drops.output_failed + drops.inflight_full;
        if new > 0 {
            lost += new;
            note(&format!(
                "{}: lost {new} events ({} with the event buffer full: raise --buffer-pages; {} failed execs untracked, in-flight table full)",
                tool_name(),
                drops.output_failed,
                drops.inflight_full
            ));
            if printer.args.runtime.json {
                let mut record = output::json_record("execsnoop", "lost");
                record.insert("count".into(), json!(new));
                out.json(&record.into()).map_err(output::closed_or)?;
                out.flush()?;
            }
        }
        if exiting {
            return Ok(lost);
        }
    }
}

struct Printer<'a> {
    args: &'a Args,
    name: Option<Regex>,
    line: Option<Regex>,
    started: Instant,
}

impl Printer<'_> {
    fn header(&self) -> String {
        let a = self.args;
        let mut h = String::new();
        if a.time {
            h += &format!("{:<9}", "TIME");
        }
        if a.timestamp {
            h += &format!("{:<8}", "TIME(s)");
        }
        if a.print_uid {
            h += &format!("{:<6}", "UID");
        }
        h += &format!("{:<16} {:<7} ", "COMM", "PID");
        if a.print_pcomm {
            h += &format!("{:<16} ", "PCOMM");
        }
        h += &format!("{:<7} ", "PPID");
        if a.print_cpu {
            h += &format!("{:<4} ", "CPU");
        }
        h + &format!("{:>3} {}", "RET", "ARGS")
    }

    fn event(&self, out: &mut Out, bytes: &[u8]) -> Result<()> {
        let header = offset_of!(ExecEvent, args);
        if bytes.len() < header {
            bail!("short event ({} bytes)", bytes.len());
        }
        // SAFETY: ExecEvent is plain data; only its first `bytes.len()` bytes are read.
        let mut ev: ExecEvent = unsafe { std::mem::zeroed() };
        let n = bytes.len().min(size_of::<ExecEvent>());
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), &mut ev as *mut ExecEvent as *mut u8, n) };
        let args_len = (ev.args_len as usize).min(n - header);
        let argv: Vec<&[u8]> = split_strings(&ev.args[..args_len]);
        let filename = cstr(&ev.filename);
        // ARGS as BCC prints them: the path as passed, then argv[1..]. A
        // script's argv, read after exec, starts with what the kernel put
        // before the script's own arguments.
        let skip = if ev.flags & event_flags::FROM_MM != 0 { script_prefix(&argv, filename) } else { 0 };
        let mut shown: Vec<&[u8]> = vec![filename];
        shown.extend(argv.iter().skip(skip + 1));
        let comm = cstr(&ev.comm);
        if let Some(re) = &self.name {
            if !re.is_match(&String::from_utf8_lossy(comm)) {
                return Ok(());
            }
        }
        if let Some(re) = &self.line {
            if !re.is_match(&String::from_utf8_lossy(&shown.join(&b' '))) {
                return Ok(());
            }
        }
        let truncated = ev.flags & event_flags::ARGS_TRUNCATED != 0;
        if self.args.runtime.json {
            return self.json(out, &ev, &shown, argv.first().copied(), truncated);
        }
        let a = self.args;
        let mut row = String::new();
        if a.time {
            row += &format!("{:<9}", output::hms_now());
        }
        if a.timestamp {
            row += &format!("{:<8.3}", self.started.elapsed().as_secs_f64());
        }
        if a.print_uid {
            row += &format!("{:<6}", ev.uid);
        }
        row += &format!("{:<16} {:<7} ", output::escape(comm), ev.pid);
        if a.print_pcomm {
            row += &format!("{:<16} ", output::escape(cstr(&ev.pcomm)));
        }
        row += &format!("{:<7} ", ev.ppid);
        if a.print_cpu {
            row += &format!("{:<4} ", ev.cpu);
        }
        let max = a.max_args as usize;
        let mut words: Vec<String> =
            shown.iter().take(max).map(|arg| self.word(&arg[..arg.len().min(ARG_BYTES)])).collect();
        if shown.len() > max || truncated {
            words.push("...".into());
        }
        row += &format!("{:>3} {}", ev.ret, words.join(" "));
        writeln!(out.text(), "{row}").map_err(output::closed_or)
    }

    /// One argument for a text line: escaped, quoted with -q.
    fn word(&self, arg: &[u8]) -> String {
        let escaped = output::escape(arg);
        if self.args.quote {
            format!("\"{}\"", escaped.replace('"', "\\\""))
        } else {
            escaped
        }
    }

    fn json(
        &self,
        out: &mut Out,
        ev: &ExecEvent,
        shown: &[&[u8]],
        argv0: Option<&[u8]>,
        truncated: bool,
    ) -> Result<()> {
        let mut r = output::json_record("execsnoop", "exec");
        r.insert("ts_ns".into(), json!(ev.ts_ns));
        r.insert("pid".into(), json!(ev.pid));
        r.insert("ppid".into(), json!(ev.ppid));
        r.insert("uid".into(), json!(ev.uid));
        r.insert("cpu".into(), json!(ev.cpu));
        r.insert("comm".into(), json!(String::from_utf8_lossy(cstr(&ev.comm))));
        r.insert("pcomm".into(), json!(String::from_utf8_lossy(cstr(&ev.pcomm))));
        r.insert("ret".into(), json!(ev.ret));
        r.insert("args".into(), shown.iter().map(|a| String::from_utf8_lossy(a)).collect());
        r.insert("argv0".into(), json!(argv0.map(String::from_utf8_lossy)));
        r.insert("args_truncated".into(), json!(truncated));
        // Lossless: where an argument is not UTF-8, `args` has U+FFFD in its
        // place and `args_hex` gives every argument's exact bytes.
        if shown.iter().any(|a| std::str::from_utf8(a).is_err()) {
            r.insert("args_hex".into(), shown.iter().map(|a| hex(a)).collect());
        }
        out.json(&r.into()).map_err(output::closed_or)
    }
}

/// For a script (`#!` or binfmt_misc), the kernel rewrites argv to
/// [interpreter, (its argument), path as passed, argv[1..]]: the index of
/// that path, whose arguments follow; 0 for a plain program.
fn script_prefix(argv: &[&[u8]], filename: &[u8]) -> usize {
    if argv.first().is_some_and(|a0| *a0 != filename) {
        for i in [1, 2] {
            if argv.get(i).is_some_and(|a| *a == filename) {
                return i;
            }
        }
    }
    0
}

fn cstr(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())]
}

/// NUL-separated strings; a last one cut short by the buffer still counts.
fn split_strings(bytes: &[u8]) -> Vec<&[u8]> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes.split(|&b| b == 0).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn plan(args: &Args, transport: Transport) -> Result<(Config, Vec<Rung>)> {
    let btf = Btf::for_tool(&args.runtime)
        .context("execsnoop reads the parent and the new argument area through kernel BTF")?;
    let mut config = Config {
        task_real_parent: btf.member_any("task_struct", &["real_parent"])?.offset,
        task_tgid: btf.member_any("task_struct", &["tgid"])?.offset,
        task_comm: btf.member_any("task_struct", &["comm"])?.offset,
        task_mm: btf.member_any("task_struct", &["mm"])?.offset,
        mm_arg_start: btf.member_any("mm_struct", &["arg_start"])?.offset,
        mm_arg_end: btf.member_any("mm_struct", &["arg_end"])?.offset,
        ppid: args.ppid.unwrap_or(0),
        ..Config::default()
    };
    if let Some(user) = &args.uid {
        config.uid = resolve_uid(user)?;
        config.filter_uid = 1;
    }
    if let Some(path) = &args.cgroup {
        config.cgroup = tools_user::cgroup::filter(path, Some(&btf))?;
    }
    let exec = Format::read("sched", "sched_process_exec")?;
    config.tp_exec_filename = exec.field_u32("filename")?;
    config.tp_exec_old_pid = exec.field_u32("old_pid")?;

    let mut programs = vec![(
        transport.program("execsnoop_exec"),
        Attach::Tracepoint { category: "sched", name: "sched_process_exec" },
    )];
    let mut unusable = None;
    if args.fails {
        match syscall_fields(&mut config) {
            Ok(()) => programs.extend([
                ("execsnoop_enter_execve", Attach::Tracepoint { category: "syscalls", name: "sys_enter_execve" }),
                ("execsnoop_enter_execveat", Attach::Tracepoint { category: "syscalls", name: "sys_enter_execveat" }),
                (
                    transport.program("execsnoop_exit_execve"),
                    Attach::Tracepoint { category: "syscalls", name: "sys_exit_execve" },
                ),
                (
                    transport.program("execsnoop_exit_execveat"),
                    Attach::Tracepoint { category: "syscalls", name: "sys_exit_execveat" },
                ),
            ]),
            Err(err) => unusable = Some(format!("-x needs the exec syscall tracepoints: {err:#}")),
        }
    }
    Ok((config, vec![Rung::new("tracepoint", programs).unusable_if(unusable)]))
}

fn syscall_fields(config: &mut Config) -> Result<()> {
    let enter = Format::read("syscalls", "sys_enter_execve")?;
    config.tp_execve_filename = enter.field("filename")?.0;
    config.tp_execve_argv = enter.field("argv")?.0;
    let enter_at = Format::read("syscalls", "sys_enter_execveat")?;
    config.tp_execveat_filename = enter_at.field("filename")?.0;
    config.tp_execveat_argv = enter_at.field("argv")?.0;
    let exit = Format::read("syscalls", "sys_exit_execve")?;
    config.tp_exit_ret = exit.field("ret")?.0;
    if Format::read("syscalls", "sys_exit_execveat")?.field("ret")?.0 != config.tp_exit_ret {
        bail!("sys_exit_execve and sys_exit_execveat records differ");
    }
    Ok(())
}

/// A UID, or a user name looked up in the passwd database.
fn resolve_uid(user: &str) -> Result<u32> {
    if let Ok(uid) = user.parse() {
        return Ok(uid);
    }
    let c_user = std::ffi::CString::new(user)?;
    // SAFETY: getpwnam returns NULL or a pointer to a static record, read at once.
    let pw = unsafe { libc::getpwnam(c_user.as_ptr()) };
    if pw.is_null() {
        bail!("no such user '{user}'");
    }
    Ok(unsafe { (*pw).pw_uid })
}
