//! biolatency: summarize block device I/O latency as a histogram, as BCC's
//! biolatency does.

use std::{collections::HashMap, process::ExitCode};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use serde_json::Value;
use tools_common::biolatency::{key_mode, programs, Config};
use tools_user::{
    btf::Btf,
    cli::{HistogramArgs, RuntimeArgs},
    diag,
    driver::histograms::{self, HistogramTool},
    ebpf_object, histogram,
    lifetime::{self, BadInput},
    loader::{self, Attach, Rung},
    manual, offsets,
    tracefs::Format,
};

/// Summarize block device I/O latency as a histogram.
#[derive(Parser, Debug)]
#[command(name = "biolatency", after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    hist: HistogramArgs,
    /// Include OS queued time in I/O time.
    #[arg(short = 'Q', long = "queued")]
    queued: bool,
    /// Print a histogram per disk device.
    #[arg(short = 'D', long = "disks")]
    disks: bool,
    /// Print a histogram per set of I/O flags.
    #[arg(short = 'F', long = "flags", visible_alias = "flag")]
    flags: bool,
    /// Trace this disk only.
    #[arg(short = 'd', long = "disk", value_name = "DISK")]
    disk: Option<String>,
    /// Summarize average, total and count of the latency.
    #[arg(short = 'e', long = "extension")]
    extension: bool,
    /// JSON Lines, as --json (BCC's -j printed a Python dict).
    #[arg(short = 'j')]
    j: bool,
    /// Trace I/O started by tasks in this cgroup v2 directory (and below it) only.
    #[arg(short = 'c', long = "cgroup", value_name = "PATH", value_parser = tools_user::cli::cgroup_dir)]
    cgroup: Option<std::path::PathBuf>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

const EXAMPLES: &str = "examples:
    ./biolatency                    # summarize block I/O latency as a histogram
    ./biolatency 1 10               # print 1 second summaries, 10 times
    ./biolatency -mT 1              # 1s summaries, milliseconds, and timestamps
    ./biolatency -Q                 # include OS queued time in I/O time
    ./biolatency -D                 # show each disk device separately
    ./biolatency -F                 # show I/O flags separately
    ./biolatency -d sdc             # trace sdc only
    ./biolatency -e                 # show extension summary (average/total/count)
    ./biolatency -j                 # print JSON Lines";

fn main() -> ExitCode {
    lifetime::main_with("biolatency", || {
        let mut args = manual::parse::<Args>(tools_user::man_page!("biolatency.8"));
        args.runtime.json |= args.j;
        diag::init_logging(args.runtime.verbose);
        let disks = Disks::read()?;
        let btf = Btf::for_tool(&args.runtime)?;
        let (config, rungs) = plan(&args, &disks, btf.as_ref().ok())?;
        let flag_names = if args.flags { Some(FlagNames::from_btf(btf.as_ref().ok())?) } else { None };
        drop(btf);
        let map_sizes = histogram::map_sizes(config.key_mode != 0);
        let loaded = loader::load(ebpf_object!("biolatency"), &config, &map_sizes, rungs, &args.runtime)?;
        let key_fields = |key: u64| {
            let mut fields = Vec::new();
            if args.disks {
                fields.push(("disk", Value::from(disks.name((key >> 32) as u32))));
            }
            if let Some(names) = &flag_names {
                fields.push(("flags", Value::from(names.describe(key as u32))));
            }
            fields
        };
        let tool = HistogramTool {
            banner: "Tracing block device I/O... Hit Ctrl-C to end.",
            key_fields: (config.key_mode != 0).then_some(&key_fields as _),
            totals: args.extension,
            key_alive: None,
            hist: &args.hist,
            runtime: &args.runtime,
        };
        histograms::run(tool, loaded)
    })
}

fn plan(args: &Args, disks: &Disks, btf: Option<&Btf>) -> Result<(Config, Vec<Rung>)> {
    let mut config = Config {
        unit_ns: args.hist.unit().1,
        key_mode: if args.disks { key_mode::DISK } else { 0 } | if args.flags { key_mode::FLAGS } else { 0 },
        ..Config::default()
    };
    if let Some(name) = &args.disk {
        config.disk_dev = disks.dev(name)?;
    }
    if let Some(path) = &args.cgroup {
        config.cgroup = tools_user::cgroup::filter(path, btf)?;
    }

    let no_request_offsets = match btf.map(offsets::request) {
        Some(Ok(rq)) => {
            config.rq = rq;
            None
        }
        Some(Err(e)) => Some(format!("no struct request offsets: {e:#}")),
        None => Some(format!("no struct request offsets: no kernel BTF at {}", tools_user::btf::VMLINUX)),
    };
    // Before 5.11 (and 5.10.137) block_rq_issue/insert also passed the queue first.
    let with_queue = btf.and_then(|b| b.raw_tracepoint_args("block_rq_issue")) == Some(2);
    let raw = |plain, with_q| if with_queue { with_q } else { plain };
    // Completion attaches first: a request started before it would never complete.
    let mut raw_rung =
        Rung::new("raw_tracepoint").program(programs::RAW_COMPLETE, Attach::raw_tp("block_rq_complete")).program(
            match args.queued {
                true => raw(programs::RAW_ISSUE_QUEUED, programs::RAW_ISSUE_QUEUED_Q),
                false => raw(programs::RAW_ISSUE, programs::RAW_ISSUE_Q),
            },
            Attach::raw_tp("block_rq_issue"),
        );
    let mut tp_rung = Rung::new("tracepoint")
        .program(programs::TP_COMPLETE, Attach::tracepoint("block", "block_rq_complete"))
        .program(
            if args.queued { programs::TP_ISSUE_QUEUED } else { programs::TP_ISSUE },
            Attach::tracepoint("block", "block_rq_issue"),
        );
    let mut kp_rung = Rung::new("kprobe")
        .program(
            programs::KP_COMPLETE,
            Attach::kprobe(&["__blk_account_io_done", "blk_account_io_done", "__blk_mq_end_request"]),
        )
        .program(
            if args.queued { programs::KP_ISSUE_QUEUED } else { programs::KP_ISSUE },
            Attach::kprobe(&["blk_mq_start_request"]),
        );
    if args.queued {
        raw_rung =
            raw_rung.program(raw(programs::RAW_INSERT, programs::RAW_INSERT_Q), Attach::raw_tp("block_rq_insert"));
        tp_rung = tp_rung.program(programs::TP_INSERT, Attach::tracepoint("block", "block_rq_insert"));
        kp_rung = kp_rung
            .program(programs::KP_ACCOUNT_START, Attach::kprobe(&["__blk_account_io_start", "blk_account_io_start"]));
    }
    let io_rung =
        Rung::new("tracepoint_io").program(programs::TP_IO_DONE, Attach::tracepoint("block", "block_io_done")).program(
            if args.queued { programs::TP_IO_START } else { programs::TP_ISSUE },
            Attach::tracepoint("block", if args.queued { "block_io_start" } else { "block_rq_issue" }),
        );

    let no_tracepoint_fields = tracepoint_fields(&mut config).err().map(|e| format!("{e:#}"));
    let flags_need_request =
        args.flags.then(|| "-F needs the request's flags; plain block tracepoints do not carry them".to_owned());
    let rungs = vec![
        raw_rung.unusable_if(no_request_offsets.clone()),
        io_rung.unusable_if(no_tracepoint_fields.clone()).unusable_if(flags_need_request.clone()),
        tp_rung.unusable_if(no_tracepoint_fields).unusable_if(flags_need_request),
        kp_rung.unusable_if(no_request_offsets),
    ];
    Ok((config, rungs))
}

fn tracepoint_fields(config: &mut Config) -> Result<()> {
    let mut layouts = Vec::new();
    for event in ["block_rq_issue", "block_rq_insert", "block_rq_complete", "block_io_start", "block_io_done"] {
        let format = match Format::read("block", event) {
            Ok(format) => format,
            // block_io_* exist from 6.5: without them that rung fails to attach, saying so.
            Err(_) if event.starts_with("block_io") => continue,
            Err(err) => return Err(err),
        };
        let dev = format.field_u32("dev")?;
        let sector = match format.field("sector")? {
            (offset, 8) => offset,
            (_, size) => bail!("{event} sector is {size} bytes, expected 8"),
        };
        layouts.push((dev, sector));
    }
    if layouts.windows(2).any(|w| w[0] != w[1]) {
        bail!("the block_rq_* and block_io_* records place dev and sector differently");
    }
    (config.tp_dev, config.tp_sector) = layouts[0];
    Ok(())
}

/// Block devices from /proc/partitions, by dev (major << 20 | minor).
struct Disks(HashMap<u32, String>);

impl Disks {
    fn read() -> Result<Self> {
        let text = tools_user::procfs::read("/proc/partitions")?;
        let disks = text
            .lines()
            .skip(2)
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let (major, minor): (u32, u32) = (f.first()?.parse().ok()?, f.get(1)?.parse().ok()?);
                Some(((major << 20) | minor, f.get(3)?.to_string()))
            })
            .collect();
        Ok(Disks(disks))
    }

    fn dev(&self, name: &str) -> Result<u32> {
        let Some((&dev, _)) = self.0.iter().find(|(_, n)| *n == name) else {
            return Err(BadInput(format!("no such disk '{name}' (not in /proc/partitions)")).into());
        };
        if std::path::Path::new(&format!("/sys/class/block/{name}/partition")).exists() {
            let why =
                format!("'{name}' is a partition: block I/O is accounted to the whole disk, name the disk instead");
            return Err(BadInput(why).into());
        }
        Ok(dev)
    }

    fn name(&self, dev: u32) -> String {
        self.0.get(&dev).cloned().unwrap_or_else(|| "?".into())
    }
}

/// Names of request ops and flags from the running kernel's BTF (`req_op`,
/// `req_flag_bits`): their numbers changed across kernels.
struct FlagNames {
    op_mask: u32,
    ops: Vec<(u32, String)>,
    /// (bit, name), highest bit first: BCC prints flags in that order, then the op.
    flags: Vec<(u32, String)>,
}

impl FlagNames {
    fn from_btf(btf: Option<&Btf>) -> Result<Self> {
        let btf = btf.context("-F names request flags from kernel BTF, which this kernel does not have")?;
        // `enum req_opf` until 5.19, then `enum req_op`.
        let ops = btf
            .enum_values("req_op")
            .or_else(|| btf.enum_values("req_opf"))
            .context("kernel BTF has no enum req_op or req_opf")?;
        let bits = btf.enum_values("req_flag_bits").context("kernel BTF has no enum req_flag_bits")?;
        let first_flag_bit = bits.iter().map(|(_, v)| *v).min().unwrap_or(8);
        // BCC's flags, in the order it prints them; their bits from this kernel.
        let flags = BCC_FLAGS
            .iter()
            .filter_map(|(enum_name, name)| {
                let (_, bit) = bits.iter().find(|(n, _)| n == enum_name)?;
                Some((*bit as u32, (*name).to_owned()))
            })
            .collect();
        Ok(FlagNames {
            op_mask: (1u32 << first_flag_bit) - 1,
            ops: ops
                .iter()
                .filter(|(name, _)| name != "REQ_OP_LAST")
                .map(|(name, v)| (*v as u32, op_name(name.trim_start_matches("REQ_OP_"))))
                .collect(),
            flags,
        })
    }

    fn describe(&self, cmd_flags: u32) -> String {
        let op = cmd_flags & self.op_mask;
        let op_name = self.ops.iter().find(|(v, _)| *v == op).map_or("Unknown", |(_, n)| n.as_str());
        let mut parts: Vec<&str> =
            self.flags.iter().filter(|(bit, _)| cmd_flags & (1 << bit) != 0).map(|(_, n)| n.as_str()).collect();
        parts.push(op_name);
        parts.join("-")
    }
}

/// The flags BCC's Python biolatency names, in its printed order.
const BCC_FLAGS: [(&str, &str); 9] = [
    ("__REQ_NOWAIT", "NoWait"),
    ("__REQ_BACKGROUND", "Background"),
    ("__REQ_RAHEAD", "ReadAhead"),
    ("__REQ_IDLE", "Idle"),
    ("__REQ_NOMERGE", "NoMerge"),
    ("__REQ_PRIO", "Priority"),
    ("__REQ_FUA", "ForcedUnitAccess"),
    ("__REQ_META", "Metadata"),
    ("__REQ_SYNC", "Sync"),
];

/// BCC's op names where it has one (`WriteZeros`), camel case otherwise.
fn op_name(upper_snake: &str) -> String {
    match upper_snake {
        "WRITE_ZEROES" => "WriteZeros".into(),
        other => camel(other),
    }
}

/// `WRITE_ZEROES` → `WriteZeroes`.
fn camel(upper_snake: &str) -> String {
    upper_snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or_else(String::new, |f| f.to_uppercase().chain(c.flat_map(char::to_lowercase)).collect())
        })
        .collect()
}
