//! ext4slower: trace common ext4 file operations slower than a threshold,
//! as BCC's ext4slower does: reads, writes, opens and fsyncs, with the
//! process, the file's name, the bytes, the offset and the latency. A table
//! of filesystems, as libbpf-tools' fsslower: run as `xfsslower` or
//! `btrfsslower` (or with `-t`), it traces that filesystem.

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use tools_common::fsslower::{op, FileOpEvent};
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
    lifetime::{self, BadInput},
    loader::Build,
    manual,
    output::{self, cstr, Format},
    plan::fsslower::{self, FILESYSTEMS, OPERATIONS},
};

/// Trace common file operations slower than a threshold.
#[derive(Parser, Debug)]
#[command(name = "ext4slower", after_help = EXAMPLES)]
struct Args {
    /// Output in CSV (BCC's ENDTIME_us,TASK,PID,TYPE,BYTES,OFFSET_b,LATENCY_us,FILE).
    #[arg(short = 'j', conflicts_with = "histogram")]
    j: bool,
    #[command(flatten)]
    pid: PidArg,
    /// Minimum I/O duration to trace, in ms (default 10; 0 traces every operation).
    #[arg(value_name = "min_ms", conflicts_with_all = ["min", "histogram"])]
    min_ms: Option<u64>,
    /// Minimum I/O duration to trace, in ms (libbpf-tools' spelling of min_ms).
    #[arg(short = 'm', long = "min", value_name = "MIN", conflicts_with = "histogram")]
    min: Option<u64>,
    /// Total duration of the trace, in seconds.
    #[arg(short = 'd', long = "duration", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    duration: Option<u64>,
    /// The filesystem: ext4, xfs or btrfs (by default, the one the tool is
    /// named after: ext4slower, xfsslower, btrfsslower).
    #[arg(short = 't', long = "type", value_name = "FS", value_parser = filesystem_names())]
    fs_type: Option<String>,
    #[command(flatten)]
    cgroup: CgroupArg,
    #[command(flatten)]
    containers: ContainersArg,
    /// Where the kernel has neither kprobes nor fentry, trace through
    /// syscall tracepoints, which slow every read, write, open and fsync of
    /// every process on the host (see OVERHEAD).
    #[arg(long = "allow-syscall-rung")]
    allow_syscall_rung: bool,
    #[command(flatten)]
    histogram: EventHistogramArgs,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

const EXAMPLES: &str = "examples:
    ./ext4slower             # trace operations slower than 10 ms (default)
    ./ext4slower 1           # trace operations slower than 1 ms
    ./ext4slower -j 1        # ... 1 ms, parsable output (csv)
    ./ext4slower 0           # trace all operations (warning: verbose)
    ./ext4slower -p 185      # trace PID 185 only
    ./ext4slower -d 10       # trace for 10 seconds only
    ./ext4slower --json 0    # JSON Lines, with the file's device and inode
    ./ext4slower --histogram # latency histograms of every operation, as ext4dist
    ./xfsslower              # the same for XFS (btrfsslower for Btrfs)";

fn filesystem_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(FILESYSTEMS.iter().map(|fs| fs.name))
}

fn main() -> ExitCode {
    // The name it runs as picks the filesystem: ext4slower, xfsslower, ...
    let name = Some(diag::invoked_name())
        .filter(|n| FILESYSTEMS.iter().any(|fs| *n == format!("{}slower", fs.name)) || n == "fsslower")
        .unwrap_or_else(|| "ext4slower".into());
    lifetime::main_with(Box::leak(name.clone().into_boxed_str()), || {
        let mut args = manual::parse::<Args>(tools_user::man_page!("ext4slower.8"));
        args.events.csv |= args.j;
        diag::init_logging(args.runtime.verbose);
        let fs_name = args.fs_type.clone().unwrap_or_else(|| name.trim_end_matches("slower").to_owned());
        let Some(fs) = FILESYSTEMS.iter().find(|fs| fs.name == fs_name) else {
            return Err(BadInput("fsslower traces one filesystem: name it with -t".into()).into());
        };
        let min_ms = args.min_ms.or(args.min).unwrap_or(10);
        let load_options = args.runtime.load_options();
        let path = EventPath::of_event_tool(Build::choose(&load_options), &args.events, &args.histogram);
        let btf = Btf::for_tool(&load_options)?;
        let cgroup = args.cgroup.cgroup.as_deref();
        let allow_syscall_rung = args.allow_syscall_rung;
        let containers = args.containers.containers;
        let options = fsslower::Options {
            fs,
            min_ms,
            pid: args.pid.pid,
            cgroup,
            containers,
            histogram_unit_ns: args.histogram.unit_ns(),
            allow_syscall_rung,
        };
        let loaded = fsslower::plan(&options, &btf, &load_options, &path)?.load(&load_options)?;
        if loaded.rung == "syscall" {
            diag::note(&format!(
                "{name}: tracing through syscall tracepoints (this kernel has neither kprobes nor fentry): every \
                 read, write, open and fsync on the host pays about a microsecond while this runs"
            ));
        }
        if args.histogram.histogram {
            let banner = format!("Tracing {} operation latency... Hit Ctrl-C to end.", fs.name);
            let (labels, duration) = (fsslower::key_labels, args.duration.map(Duration::from_secs));
            return histograms::run_event_histograms(loaded, &banner, labels, &args.histogram, duration, &args.runtime);
        }
        let format = args.events.format(&args.runtime);
        let tracing = match min_ms {
            0 => format!("Tracing {} operations", fs.name),
            ms => format!("Tracing {} operations slower than {ms} ms", fs.name),
        };
        let mut columns = columns(format);
        if containers {
            container::add_columns(&mut columns.columns, |e| e.cgroup)?;
        }
        let mut tool = EventTool::new(columns, tracing.clone());
        // BCC prints its banner above the text header only.
        tool.banner = Some(tracing);
        tool.inflight = "operations";
        tool.duration = args.duration.map(Duration::from_secs);
        events::run(tool, loaded, &path)
    })
}

/// BCC's text columns and its CSV (`-j`), and the JSON fields.
fn columns(format: Format) -> Columns<'static, FileOpEvent> {
    let columns = vec![
        Column::new(|_| Cell::Text(output::hms_now())).text("TIME", 8),
        Column::new(|e: &FileOpEvent| Cell::UInt(e.end_ns / 1000)).csv("ENDTIME_us"),
        Column::new(|e: &FileOpEvent| Cell::UInt(e.end_ns)).json("end_ns"),
        Column::new(|e: &FileOpEvent| Cell::Bytes(cstr(&e.comm))).text("COMM", 14).cut().csv("TASK").json("comm"),
        Column::new(|e: &FileOpEvent| Cell::UInt(e.pid.into())).text("PID", 6).csv("PID").json("pid"),
        Column::new(|e: &FileOpEvent| Cell::UInt(e.tid.into())).json("tid"),
        Column::new(|e: &FileOpEvent| Cell::Text(op_letter(e.op).into())).text("T", 1).csv("TYPE"),
        Column::new(|e: &FileOpEvent| Cell::Text(OPERATIONS.get(e.op as usize).unwrap_or(&"?").to_string())).json("op"),
        Column::new(|e: &FileOpEvent| Cell::Int(e.bytes)).text("BYTES", 7).csv("BYTES").json("bytes"),
        Column::new(|e: &FileOpEvent| Cell::Int(e.offset / 1024)).text("OFF_KB", 8),
        Column::new(|e: &FileOpEvent| Cell::Int(e.offset)).csv("OFFSET_b").json("offset"),
        // BCC: whole microseconds, printed as milliseconds.
        Column::new(|e: &FileOpEvent| Cell::Fixed((e.latency_ns / 1000) as f64 / 1000.0, 2)).text("LAT(ms)", 7).right(),
        Column::new(|e: &FileOpEvent| Cell::UInt(e.latency_ns / 1000)).csv("LATENCY_us"),
        Column::new(|e: &FileOpEvent| Cell::UInt(e.latency_ns)).json("latency_ns"),
        Column::new(|e: &FileOpEvent| Cell::Bytes(name(e))).text("FILENAME", 0).csv("FILE").json("file"),
        // As stat(2) gives them, so the file can be found.
        Column::new(|e: &FileOpEvent| Cell::UInt(libc::makedev(e.dev >> 20, e.dev & 0xf_ffff))).json("dev"),
        Column::new(|e: &FileOpEvent| Cell::UInt(e.ino)).json("inode"),
    ];
    Columns { columns, format, record: "op" }
}

/// The file's name: `name_len` bytes, up to a NUL (the legacy build sends
/// a fixed-size read of the name's start).
fn name(e: &FileOpEvent) -> &[u8] {
    cstr(&e.name[..(e.name_len as usize).min(e.name.len())])
}

fn op_letter(op: u32) -> &'static str {
    match op {
        op::READ => "R",
        op::WRITE => "W",
        op::OPEN => "O",
        _ => "S",
    }
}
