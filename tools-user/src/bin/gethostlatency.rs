//! gethostlatency: show latency for getaddrinfo/gethostbyname[2] calls, as
//! BCC's gethostlatency does, in every C library the machine's processes
//! use, not one: glibc and musl, a container's, a copy beside a binary.
//! Libraries are found through /proc/*/maps, opened through the process's
//! root, told apart by device and inode, recognised by the resolver
//! functions they export, and probed once each (see plan::gethostlatency).
//! The scan repeats every second, over new processes and those that exec'd
//! (a tracepoint says which), so a library that appears later is probed
//! within about one.

use std::{cell::RefCell, path::PathBuf, process::ExitCode, rc::Rc};

use clap::Parser;
use serde_json::Value;
use tools_common::gethostlatency::LookupEvent;
use tools_user::{
    btf::Btf,
    cli::{CgroupArg, ContainersArg, EventArgs, EventHistogramArgs, PidArg, RuntimeArgs},
    columns::{Cell, Column, Columns},
    container, diag,
    driver::{
        events::{self, EventTool},
        histograms,
    },
    events::EventPath,
    lifetime,
    loader::Build,
    manual,
    output::{self, cstr, Format},
    plan::gethostlatency::{self, failure, Libraries, FUNCTIONS},
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
    #[command(flatten)]
    cgroup: CgroupArg,
    #[command(flatten)]
    containers: ContainersArg,
    #[command(flatten)]
    histogram: EventHistogramArgs,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

const EXAMPLES: &str = "examples:
    ./gethostlatency           # time every host name lookup
    ./gethostlatency -p 181    # only trace PID 181
    ./gethostlatency -l /lib/x86_64-linux-gnu/libc.so.6    # only this C library
    ./gethostlatency --json    # JSON Lines: function, result, the library
    ./gethostlatency --histogram   # latency histograms by function and result";

fn main() -> ExitCode {
    lifetime::main_with("gethostlatency", || {
        let args = manual::parse::<Args>(tools_user::man_page!("gethostlatency.8"));
        diag::init_logging(args.runtime.verbose);
        let load_options = args.runtime.load_options();
        let path = EventPath::of_event_tool(Build::choose(&load_options), &args.events, &args.histogram);
        let options = gethostlatency::Options {
            pid: args.pid.pid,
            libc: &args.libc,
            cgroup: args.cgroup.cgroup.as_deref(),
            containers: args.containers.containers,
            histogram_unit_ns: args.histogram.unit_ns(),
        };
        // Only -c and --containers read a struct; a --btf file is checked all the same (used or refused).
        let reads_task = args.cgroup.cgroup.is_some() || args.containers.containers;
        let btf = match (reads_task, &load_options.btf) {
            (false, None) => Err("not needed".into()),
            _ => Btf::for_tool(&load_options)?,
        };
        // The plan's keeper probes the libraries that appear later (a
        // container started after the tool), about once a second.
        let (plan, libraries) = gethostlatency::plan(&options, &btf, &path)?;
        let loaded = plan.load(&load_options)?;
        if args.histogram.histogram {
            let (banner, labels) =
                ("Tracing host name lookup latency... Hit Ctrl-C to end.", gethostlatency::key_labels);
            return histograms::run_event_histograms(loaded, banner, labels, &args.histogram, None, &args.runtime);
        }
        let format = args.events.format(&args.runtime);
        let mut columns = columns(format, libraries);
        if args.containers.containers {
            container::add_columns(&mut columns.columns, |e| e.cgroup)?;
        }
        let mut tool = EventTool::new(columns, "Tracing host name lookups... Hit Ctrl-C to end.");
        tool.inflight = "lookups";
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
        Column::new(|e: &LookupEvent| match failure(e.function, e.ret) {
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

/// The host: `host_len` bytes, up to a NUL (the legacy build sends a
/// fixed-size read of the host's start).
fn host(e: &LookupEvent) -> &[u8] {
    cstr(&e.host[..(e.host_len as usize).min(e.host.len())])
}
