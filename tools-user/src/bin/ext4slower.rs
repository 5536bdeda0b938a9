//! ext4slower: trace common ext4 file operations slower than a threshold,
//! as BCC's ext4slower does: reads, writes, opens and fsyncs, with the
//! process, the file's name, the bytes, the offset and the latency. A table
//! of filesystems, as libbpf-tools' fsslower: run as `xfsslower` or
//! `btrfsslower` (or with `-t`), it traces that filesystem.

use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use tools_common::fsslower::{op, programs, Config, FileOpEvent};
use tools_user::{
    btf::Btf,
    cli::{EventArgs, PidArg, RuntimeArgs},
    columns::{Cell, Column, Columns},
    diag,
    driver::events::{self, EventTool},
    ebpf_object,
    events::EventPath,
    lifetime::{self, BadInput},
    loader::{self, Attach, Rung},
    offsets,
    output::{self, cstr, Format},
    tracefs,
};

/// Trace common file operations slower than a threshold.
#[derive(Parser, Debug)]
#[command(name = "ext4slower", after_help = EXAMPLES)]
struct Args {
    /// Output in CSV (BCC's ENDTIME_us,TASK,PID,TYPE,BYTES,OFFSET_b,LATENCY_us,FILE).
    #[arg(short = 'j')]
    j: bool,
    #[command(flatten)]
    pid: PidArg,
    /// Minimum I/O duration to trace, in ms (default 10; 0 traces every operation).
    #[arg(value_name = "min_ms", conflicts_with = "min")]
    min_ms: Option<u64>,
    /// Minimum I/O duration to trace, in ms (libbpf-tools' spelling of min_ms).
    #[arg(short = 'm', long = "min", value_name = "MIN")]
    min: Option<u64>,
    /// Total duration of the trace, in seconds.
    #[arg(short = 'd', long = "duration", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    duration: Option<u64>,
    /// The filesystem: ext4, xfs or btrfs (by default, the one the tool is
    /// named after: ext4slower, xfsslower, btrfsslower).
    #[arg(short = 't', long = "type", value_name = "FS", value_parser = filesystem_names())]
    fs_type: Option<String>,
    /// Trace tasks in this cgroup v2 directory (and below it) only.
    #[arg(short = 'c', long = "cgroup", value_name = "PATH", value_parser = tools_user::cli::cgroup_dir)]
    cgroup: Option<std::path::PathBuf>,
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
    ./xfsslower              # the same for XFS (btrfsslower for Btrfs)";

/// A filesystem the tool can trace: its super block magic (the syscall
/// rung's test) and its file operations (the function rungs' hooks).
struct Fs {
    name: &'static str,
    magic: u32,
    read: &'static str,
    write: &'static str,
    open: &'static str,
    sync: &'static str,
}

const FILESYSTEMS: &[Fs] = &[
    Fs {
        name: "ext4",
        magic: 0xef53,
        read: "ext4_file_read_iter",
        write: "ext4_file_write_iter",
        open: "ext4_file_open",
        sync: "ext4_sync_file",
    },
    Fs {
        name: "xfs",
        magic: 0x5846_5342,
        read: "xfs_file_read_iter",
        write: "xfs_file_write_iter",
        open: "xfs_file_open",
        sync: "xfs_file_fsync",
    },
    Fs {
        name: "btrfs",
        magic: 0x9123_683e,
        read: "btrfs_file_read_iter",
        write: "btrfs_file_write_iter",
        open: "btrfs_file_open",
        sync: "btrfs_sync_file",
    },
];

fn filesystem_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(FILESYSTEMS.iter().map(|fs| fs.name))
}

/// The syscalls of the syscall rung, by the program that takes their entry.
const SYSCALLS: &[(&str, &[&str])] = &[
    (programs::SYS_READ, &["read", "readv"]),
    (programs::SYS_PREAD, &["pread64", "preadv", "preadv2"]),
    (programs::SYS_WRITE, &["write", "writev"]),
    (programs::SYS_PWRITE, &["pwrite64", "pwritev", "pwritev2"]),
    (programs::SYS_SYNC, &["fsync", "fdatasync"]),
    (programs::SYS_OPEN, &["open", "openat", "openat2", "creat"]),
];

fn main() -> ExitCode {
    // The name it runs as picks the filesystem: ext4slower, xfsslower, ...
    let name = std::env::args_os()
        .next()
        .and_then(|a| Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| FILESYSTEMS.iter().any(|fs| *n == format!("{}slower", fs.name)) || n == "fsslower")
        .unwrap_or_else(|| "ext4slower".into());
    lifetime::main_with(Box::leak(name.clone().into_boxed_str()), || {
        let mut args = Args::parse();
        args.events.csv |= args.j;
        diag::init_logging(args.runtime.verbose);
        let fs_name = args.fs_type.clone().unwrap_or_else(|| name.trim_end_matches("slower").to_owned());
        let Some(fs) = FILESYSTEMS.iter().find(|fs| fs.name == fs_name) else {
            return Err(BadInput("fsslower traces one filesystem: name it with -t".into()).into());
        };
        let min_ms = args.min_ms.or(args.min).unwrap_or(10);
        let path = EventPath::choose(&args.runtime, &args.events);
        let (config, rungs) = plan(&args, fs, min_ms, &path)?;
        let loaded = loader::load(ebpf_object!("fsslower"), &config, &path.max_entries(), rungs, &args.runtime)?;
        let format = args.events.format(&args.runtime);
        let tracing = match min_ms {
            0 => format!("Tracing {} operations", fs.name),
            ms => format!("Tracing {} operations slower than {ms} ms", fs.name),
        };
        let mut tool = EventTool::new(columns(format), tracing.clone());
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
        Column::new(|e: &FileOpEvent| Cell::Text(op_name(e.op).into())).json("op"),
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

fn name(e: &FileOpEvent) -> &[u8] {
    &e.name[..(e.name_len as usize).min(e.name.len())]
}

fn op_letter(op: u32) -> &'static str {
    match op {
        op::READ => "R",
        op::WRITE => "W",
        op::OPEN => "O",
        _ => "S",
    }
}

fn op_name(op: u32) -> &'static str {
    match op {
        op::READ => "read",
        op::WRITE => "write",
        op::OPEN => "open",
        _ => "fsync",
    }
}

/// The configuration and the rungs, best first.
fn plan(args: &Args, fs: &Fs, min_ms: u64, path: &EventPath) -> Result<(Config, Vec<Rung>)> {
    let btf = Btf::for_tool(&args.runtime)?
        .map_err(anyhow::Error::msg)
        .context("the file behind an operation is read through kernel BTF offsets")?;
    let mut config = Config {
        min_ns: min_ms.saturating_mul(1_000_000),
        target_tgid: args.pid.pid.unwrap_or(0),
        magic: fs.magic,
        task: offsets::task(&btf)?,
        file: offsets::file(&btf)?,
        kiocb_filp: btf.member_any("kiocb", &["ki_filp"])?.offset,
        kiocb_pos: btf.member_any("kiocb", &["ki_pos"])?.offset,
        ..Config::default()
    };
    if let Some(cgroup) = &args.cgroup {
        config.cgroup = tools_user::cgroup::filter(cgroup, Some(&btf))?;
    }
    let functions = [(fs.read, op::READ), (fs.write, op::WRITE), (fs.open, op::OPEN), (fs.sync, op::SYNC)];
    let program = |op: u32, of: [&'static str; 4]| of[op as usize];

    // fentry names its function by its id in the kernel's own BTF: a
    // filesystem built as a module has its functions in the module's BTF,
    // which aya 0.14 cannot attach to.
    let no_fentry = match btf.function_id(fs.read) {
        _ if args.runtime.btf.is_some() || args.runtime.hide_kernel_btf => {
            Some("fentry needs the kernel's own BTF".to_owned())
        }
        None => Some(format!(
            "{} is not in the kernel's BTF ({} is a module: aya 0.14 attaches fentry to vmlinux functions only)",
            fs.read, fs.name
        )),
        Some(id) => loader::fentry_allowed(id).err(),
    };
    let mut fentry = Rung::new("fentry");
    for (function, op) in functions {
        let entry = [programs::FENTRY_READ, programs::FENTRY_WRITE, programs::FENTRY_OPEN, programs::FENTRY_SYNC];
        let exit = [programs::FEXIT_READ, programs::FEXIT_WRITE, programs::FEXIT_OPEN, programs::FEXIT_SYNC];
        fentry = fentry
            .program(path.program(program(op, exit)), Attach::fexit(function))
            .program(program(op, entry), Attach::fentry(function));
    }
    let mut kprobe = Rung::new("kprobe");
    for (function, op) in functions {
        let entry = [programs::KP_READ, programs::KP_WRITE, programs::KP_OPEN, programs::KP_SYNC];
        let exit = [programs::KRET_READ, programs::KRET_WRITE, programs::KRET_OPEN, programs::KRET_SYNC];
        kprobe = kprobe
            .program(path.program(program(op, exit)), Attach::kretprobe(&[function]))
            .program(program(op, entry), Attach::kprobe(&[function]));
    }
    let syscalls = syscall_rung(&mut config, path);
    Ok((config, vec![fentry.unusable_if(no_fentry), kprobe, syscalls]))
}

/// The syscall tracepoints that exist on this kernel: every exit first (an
/// operation started before its exit is watched would stay in the table),
/// then the entries.
fn syscall_rung(config: &mut Config, path: &EventPath) -> Rung {
    let mut rung = Rung::new("syscall");
    let mut layout = || -> Result<()> {
        let field = |syscall: &str, name: &str| {
            tracefs::Format::read("syscalls", syscall).and_then(|f| f.field(name)).map(|(offset, _)| offset)
        };
        config.tp_fd = field("sys_enter_read", "fd")?;
        config.tp_pos = field("sys_enter_pread64", "pos")?;
        config.tp_ret = field("sys_exit_read", "ret")?;
        // Every syscall of a program must put its fields where it reads them.
        let (fd, pos, ret) = (config.tp_fd, config.tp_pos, config.tp_ret);
        for (program, syscalls) in SYSCALLS {
            for syscall in syscalls.iter().filter(|s| exists(s)) {
                if *program != programs::SYS_OPEN && field(&format!("sys_enter_{syscall}"), "fd")? != fd {
                    bail!("sys_enter_{syscall} has its fd elsewhere");
                }
                let offset_name =
                    if syscall.starts_with("preadv") || syscall.starts_with("pwritev") { "pos_l" } else { "pos" };
                if [programs::SYS_PREAD, programs::SYS_PWRITE].contains(program)
                    && field(&format!("sys_enter_{syscall}"), offset_name)? != pos
                {
                    bail!("sys_enter_{syscall} has its offset elsewhere");
                }
                if field(&format!("sys_exit_{syscall}"), "ret")? != ret {
                    bail!("sys_exit_{syscall} has its ret elsewhere");
                }
            }
        }
        Ok(())
    };
    if let Err(err) = layout() {
        return rung.unusable_if(Some(format!("syscall records: {err:#}")));
    }
    let present: Vec<(&str, &str)> = SYSCALLS
        .iter()
        .flat_map(|(program, syscalls)| syscalls.iter().map(move |s| (*program, *s)))
        .filter(|(_, syscall)| exists(syscall))
        .collect();
    for (_, syscall) in &present {
        rung = rung
            .program(path.program(programs::SYS_EXIT), Attach::tracepoint("syscalls", &format!("sys_exit_{syscall}")));
    }
    for (program, syscall) in &present {
        rung = rung.program(*program, Attach::tracepoint("syscalls", &format!("sys_enter_{syscall}")));
    }
    rung
}

/// Whether this kernel has the syscall's tracepoints (openat2 came in 5.6,
/// preadv2 in 4.6).
fn exists(syscall: &str) -> bool {
    tracefs::root().is_ok_and(|root| root.join(format!("events/syscalls/sys_enter_{syscall}")).is_dir())
}
