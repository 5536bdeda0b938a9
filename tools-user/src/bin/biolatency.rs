//! biolatency: summarize block device I/O latency as a histogram, as BCC's
//! biolatency does.

use std::process::ExitCode;

use clap::Parser;
use serde_json::Value;
use tools_user::{
    btf::Btf,
    cli::{CgroupArg, HistogramArgs, RuntimeArgs},
    container, diag,
    driver::histograms::{self, HistogramTool},
    lifetime,
    loader::Build,
    manual,
    plan::biolatency::{self, Disks, FlagNames},
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
    /// Print a histogram per container that started the I/O (issued it,
    /// or with -Q queued it), and one for the host's processes; I/O the
    /// kernel issues on its own (writeback, flushes) is the host's.
    #[arg(long = "containers", conflicts_with_all = ["disks", "flags"])]
    containers: bool,
    /// Trace this disk only.
    #[arg(short = 'd', long = "disk", value_name = "DISK")]
    disk: Option<String>,
    /// Summarize average, total and count of the latency.
    #[arg(short = 'e', long = "extension")]
    extension: bool,
    /// JSON Lines, as --json (BCC's -j printed a Python dict).
    #[arg(short = 'j')]
    j: bool,
    #[command(flatten)]
    cgroup: CgroupArg,
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
    ./biolatency --containers       # show each container separately
    ./biolatency -d sdc             # trace sdc only
    ./biolatency -e                 # show extension summary (average/total/count)
    ./biolatency -j                 # print JSON Lines";

fn main() -> ExitCode {
    lifetime::main_with("biolatency", || {
        let mut args = manual::parse::<Args>(tools_user::man_page!("biolatency.8"));
        args.runtime.json |= args.j;
        diag::init_logging(args.runtime.verbose);
        let disks = Disks::read()?;
        // Named before anything is attached: a host without cgroup v2 is refused at once.
        let containers = args.containers.then(container::Groups::new).transpose()?;
        let options = biolatency::Options {
            queued: args.queued,
            per_disk: args.disks,
            per_flags: args.flags,
            disk_dev: args.disk.as_deref().map(|name| disks.dev(name)).transpose()?,
            cgroup: args.cgroup.cgroup.clone(),
            per_cgroup: args.containers,
            unit_ns: args.hist.unit().1,
            ..Default::default()
        };
        let load_options = args.runtime.load_options();
        let btf = Btf::for_tool(&load_options)?;
        let plan = biolatency::plan(&options, &btf, Build::choose(&load_options))?;
        let flag_names = if args.flags { Some(FlagNames::from_btf(btf.as_ref().ok())?) } else { None };
        drop(btf);
        let key_mode = plan.config.key_mode;
        let loaded = plan.load(&load_options)?;
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
            key_fields: (key_mode != 0).then_some(&key_fields as _),
            totals: args.extension,
            key_alive: None,
            containers,
            table_flag: None,
            duration: None,
            hist: &args.hist,
            runtime: &args.runtime,
        };
        histograms::run(tool, loaded)
    })
}
