//! execsnoop: trace exec() calls, as BCC's execsnoop does, with every exec
//! seen (execveat, fexecve and non-leader threads too) and arguments that
//! cannot be missing or forge a line.

use std::{process::ExitCode, time::Instant};

use clap::Parser;
use regex_lite::Regex;
use serde_json::Value;
use tools_common::execsnoop::{event_flags, ExecEvent};
use tools_user::{
    btf::Btf,
    cli::{user_id, CgroupArg, ContainersArg, EventArgs, RuntimeArgs},
    columns::{Cell, Column, Columns},
    container, diag,
    driver::events::{self, EventTool, Filter},
    events::EventPath,
    lifetime,
    loader::Build,
    manual,
    output::{self, cstr, Format},
    plan::execsnoop,
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
    #[arg(short = 'u', long = "uid", value_name = "USER", value_parser = user_id)]
    uid: Option<u32>,
    /// Add quotemarks (") around arguments.
    #[arg(short = 'q', long = "quote")]
    quote: bool,
    /// Only print commands matching this name (regex), any argument.
    #[arg(short = 'n', long = "name", value_parser = regex)]
    name: Option<Regex>,
    /// Only print commands where the arguments contain this line (regex).
    #[arg(short = 'l', long = "line", value_parser = regex)]
    line: Option<Regex>,
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
    #[command(flatten)]
    cgroup: CgroupArg,
    #[command(flatten)]
    containers: ContainersArg,
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
    lifetime::main_with("execsnoop", || {
        let args = manual::parse::<Args>(tools_user::man_page!("execsnoop.8"));
        diag::init_logging(args.runtime.verbose);
        let load_options = args.runtime.load_options();
        let path = EventPath::new(Build::choose(&load_options), &args.events);
        let options = execsnoop::Options {
            fails: args.fails,
            uid: args.uid,
            ppid: args.ppid,
            cgroup: args.cgroup.cgroup.as_deref(),
            containers: args.containers.containers,
        };
        let loaded = execsnoop::plan(&options, &Btf::for_tool(&load_options)?, &path)?.load(&load_options)?;
        let format = args.events.format(&args.runtime);
        let mut columns = columns(&args, format);
        if args.containers.containers {
            container::add_columns(&mut columns.columns, |e| e.cgroup)?;
        }
        let mut tool = EventTool::new(columns, "Tracing exec()s... Hit Ctrl-C to end.");
        tool.filter = filter(args.name.clone(), args.line.clone());
        tool.inflight = "failed execs";
        if loaded.rung == "kprobe" {
            let mut parts = execsnoop::Parts::default();
            let fails = args.fails;
            tool.assemble = Some(Box::new(move |bytes: &[u8]| parts.take(bytes, fails)));
        }
        events::run(tool, loaded, &path)
    })
}

/// BCC's columns (`-T`, `-t`, `-U`, `-M` and `-C` add theirs), and the
/// JSON fields.
fn columns(a: &Args, format: Format) -> Columns<'_, ExecEvent> {
    let started = Instant::now();
    let columns = vec![
        Column::new(|_| Cell::Text(output::hms_now())).text("TIME", 9).gap("").csv("TIME").text_if(a.time),
        Column::new(move |_| Cell::Fixed(started.elapsed().as_secs_f64(), 3))
            .text("TIME(s)", 8)
            .gap("")
            .csv("TIME(s)")
            .text_if(a.timestamp),
        Column::new(|e: &ExecEvent| Cell::UInt(e.ts_ns)).json("ts_ns"),
        Column::new(|e: &ExecEvent| Cell::UInt(e.uid.into()))
            .text("UID", 6)
            .gap("")
            .csv("UID")
            .text_if(a.print_uid)
            .json("uid"),
        Column::new(|e: &ExecEvent| Cell::Bytes(cstr(&e.comm))).text_csv("COMM", 16).json("comm"),
        Column::new(|e: &ExecEvent| Cell::UInt(e.pid.into())).text_csv("PID", 7).json("pid"),
        Column::new(|e: &ExecEvent| parent(e, Cell::Bytes(cstr(&e.pcomm))))
            .text_csv("PCOMM", 16)
            .unknown_as("?")
            .text_if(a.print_pcomm)
            .json("pcomm"),
        Column::new(|e: &ExecEvent| parent(e, Cell::UInt(e.ppid.into())))
            .text_csv("PPID", 7)
            .unknown_as("?")
            .json("ppid"),
        Column::new(|e: &ExecEvent| Cell::UInt(e.cpu.into())).text_csv("CPU", 4).text_if(a.print_cpu).json("cpu"),
        Column::new(|e: &ExecEvent| Cell::Int(e.ret.into())).text_csv("RET", 3).right().json("ret"),
        Column::new(|e: &ExecEvent| Cell::Text(args_text(a, e))).text("ARGS", 0),
        Column::new(|e: &ExecEvent| Cell::Text(output::csv_text(&Exec::of(e).shown.join(&b' ')))).csv("ARGS"),
        // JSON: every argument uncut, and when one is not UTF-8 (shown with
        // U+FFFD in `args`), `args_hex` with every argument's exact bytes.
        Column::new(|e: &ExecEvent| Cell::Json(Exec::of(e).shown.iter().map(|a| String::from_utf8_lossy(a)).collect()))
            .json("args"),
        Column::new(|e: &ExecEvent| {
            Cell::Json(Exec::of(e).argv.first().map_or(Value::Null, |a0| String::from_utf8_lossy(a0).into()))
        })
        .json("argv0"),
        Column::new(|e: &ExecEvent| Cell::Bool(e.flags & event_flags::ARGS_TRUNCATED != 0)).json("args_truncated"),
        // Rare (the kernel could not read the new program's argument area):
        // said only when it happened, so `args` holding the path alone is
        // not taken for an exec without arguments.
        Column::new(|e: &ExecEvent| match e.flags & event_flags::ARGS_UNREADABLE {
            0 => Cell::Absent,
            _ => Cell::Bool(true),
        })
        .json("args_unreadable"),
        Column::new(|e: &ExecEvent| {
            let shown = Exec::of(e).shown;
            if shown.iter().all(|a| std::str::from_utf8(a).is_ok()) {
                return Cell::Absent;
            }
            Cell::Json(shown.iter().map(|a| output::hex(a)).collect())
        })
        .json("args_hex"),
    ];
    Columns { columns, format, record: "exec" }
}

/// What the event says of the parent, where it knows it.
fn parent<'e>(e: &ExecEvent, cell: Cell<'e>) -> Cell<'e> {
    match e.flags & event_flags::PARENT_UNKNOWN {
        0 => cell,
        _ => Cell::Unknown,
    }
}

/// `-n` on COMM and `-l` on the arguments, as BCC applies them.
fn filter<'a>(name: Option<Regex>, line: Option<Regex>) -> Option<Filter<'a, ExecEvent>> {
    if name.is_none() && line.is_none() {
        return None;
    }
    Some(Box::new(move |e: &ExecEvent| {
        name.as_ref().is_none_or(|re| re.is_match(&String::from_utf8_lossy(cstr(&e.comm))))
            && line.as_ref().is_none_or(|re| re.is_match(&String::from_utf8_lossy(&Exec::of(e).shown.join(&b' '))))
    }))
}

/// ARGS as BCC prints it: each argument escaped (quoted with -q) and cut at
/// 127 bytes, at most --max-args of them, then ` ...` if more were passed.
/// A cut argument ends in `...` of its own, so it cannot be read as one
/// argument more.
fn args_text(a: &Args, e: &ExecEvent) -> String {
    let shown = Exec::of(e).shown;
    let max = a.max_args as usize;
    let mut words: Vec<String> = shown
        .iter()
        .take(max)
        .map(|arg| {
            let cut = arg.len() > ARG_BYTES;
            let mut escaped = output::escape(&arg[..arg.len().min(ARG_BYTES)]);
            if a.quote {
                escaped = format!("\"{}\"", escaped.replace('"', "\\\""));
            }
            if cut {
                escaped.push_str("...");
            }
            escaped
        })
        .collect();
    if shown.len() > max || e.flags & event_flags::ARGS_TRUNCATED != 0 {
        words.push("...".into());
    }
    words.join(" ")
}

/// An exec's arguments: as the kernel side captured them (`argv`), and as
/// BCC shows them (`shown`: the path as passed to exec, then argv[1..]).
struct Exec<'e> {
    argv: Vec<&'e [u8]>,
    shown: Vec<&'e [u8]>,
}

impl<'e> Exec<'e> {
    fn of(e: &'e ExecEvent) -> Self {
        let args_len = (e.args_len as usize).min(e.args.len());
        let argv = split_strings(&e.args[..args_len]);
        let filename = cstr(&e.filename);
        // A script's argv, read after exec, starts with what the kernel put
        // before the script's own arguments.
        let skip = if e.flags & event_flags::FROM_MM != 0 { script_prefix(&argv, filename) } else { 0 };
        let mut shown = vec![filename];
        shown.extend(argv.iter().skip(skip + 1));
        Exec { argv, shown }
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

/// NUL-separated strings; a last one cut short by the buffer still counts.
fn split_strings(bytes: &[u8]) -> Vec<&[u8]> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes.split(|&b| b == 0).collect()
}

fn regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| e.to_string())
}
