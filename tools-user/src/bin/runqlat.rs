//! runqlat: summarize scheduler run-queue latency as a histogram, as BCC's
//! runqlat does: time from a task becoming runnable (woken, new, or
//! preempted) to it running on a CPU.

use std::process::ExitCode;

use clap::Parser;
use tools_common::runqlat::key_mode;
use tools_user::{
    btf::Btf,
    cli::{CgroupArg, HistogramArgs, PidArg, RuntimeArgs},
    container, diag,
    driver::histograms::{self, HistogramTool},
    lifetime::{self, BadInput},
    loader::Build,
    manual,
    plan::runqlat,
};

/// Summarize run queue (scheduler) latency as a histogram.
#[derive(Parser, Debug)]
#[command(name = "runqlat", after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    hist: HistogramArgs,
    /// Print a histogram per process ID.
    #[arg(short = 'P', long = "pids", conflicts_with_all = ["tids", "pidnss"])]
    pids: bool,
    /// Print a histogram per thread ID.
    #[arg(short = 'L', long = "tids", conflicts_with = "pidnss")]
    tids: bool,
    /// Print a histogram per PID namespace.
    #[arg(long = "pidnss", conflicts_with = "containers")]
    pidnss: bool,
    /// Print a histogram per container (Docker, Podman, containerd, CRI-O,
    /// Kubernetes pods, machines, LXC), and one for the host's processes.
    #[arg(long = "containers", conflicts_with_all = ["pids", "tids"])]
    containers: bool,
    /// Entries of the kernel's per-key table (with -P, -L, --pidnss or --containers;
    /// default 16384): a key takes one per latency slot it has seen, and
    /// what does not fit is counted as lost.
    #[arg(long = "table-entries", value_name = "N", value_parser = clap::value_parser!(u32).range(1024..=1_048_576))]
    table_entries: Option<u32>,
    #[command(flatten)]
    pid: PidArg,
    #[command(flatten)]
    cgroup: CgroupArg,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

const EXAMPLES: &str = "examples:
    ./runqlat            # summarize run queue latency as a histogram
    ./runqlat 1 10       # print 1 second summaries, 10 times
    ./runqlat -mT 1      # 1s summaries, milliseconds, and timestamps
    ./runqlat -P         # show each PID separately
    ./runqlat --containers  # show each container separately
    ./runqlat -p 185     # trace PID 185 only";

fn main() -> ExitCode {
    lifetime::main_with("runqlat", || {
        let args = manual::parse::<Args>(tools_user::man_page!("runqlat.8"));
        diag::init_logging(args.runtime.verbose);
        let options = runqlat::Options {
            pid: args.pid.pid,
            key_mode: match (args.pids, args.tids, args.pidnss, args.containers) {
                (true, ..) => key_mode::PID,
                (_, true, ..) => key_mode::TID,
                (_, _, true, _) => key_mode::PIDNS,
                (.., true) => key_mode::CGROUP,
                _ => key_mode::NONE,
            },
            unit_ns: args.hist.unit().1,
            cgroup: args.cgroup.cgroup.clone(),
            keyed_entries: args.table_entries,
            ..Default::default()
        };
        if options.key_mode == key_mode::NONE && args.table_entries.is_some() {
            return Err(BadInput(
                "--table-entries sizes the table of -P, -L, --pidnss or --containers; none was given".into(),
            )
            .into());
        }
        // Named before anything is attached: a host without cgroup v2 is refused at once.
        let containers = args.containers.then(container::Groups::new).transpose()?;
        let load_options = args.runtime.load_options();
        let btf = Btf::for_tool(&load_options)?;
        let plan = runqlat::plan(&options, &btf, Build::choose(&load_options))?;
        drop(btf);
        let key_mode = plan.config.key_mode;
        let loaded = plan.load(&load_options)?;
        let section = match key_mode {
            key_mode::PID => "pid",
            key_mode::TID => "tid",
            key_mode::PIDNS => "pidns",
            _ => "",
        };
        let key_fields = |key: u64| vec![(section, key.into())];
        let tool = HistogramTool {
            banner: "Tracing run queue latency... Hit Ctrl-C to end.",
            key_fields: (key_mode != key_mode::NONE).then_some(&key_fields as _),
            totals: false,
            // -P and -L key by PID or TID: /proc/N exists while it does.
            key_alive: match key_mode {
                key_mode::PID | key_mode::TID => Some(&runqlat::process_exists as _),
                _ => None,
            },
            containers,
            table_flag: Some("--table-entries"),
            duration: None,
            hist: &args.hist,
            runtime: &args.runtime,
        };
        histograms::run(tool, loaded)
    })
}
