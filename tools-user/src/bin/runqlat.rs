//! runqlat: summarize scheduler run-queue latency as a histogram, as BCC's
//! runqlat does: time from a task becoming runnable (woken, new, or
//! preempted) to it running on a CPU.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser;
use tools_common::runqlat::{key_mode, programs, Config};
use tools_user::{
    btf::Btf,
    cli::{HistogramArgs, PidArg, RuntimeArgs},
    diag,
    driver::histograms::{self, HistogramTool},
    ebpf_object, histogram, lifetime,
    loader::{self, Attach, Rung},
    manual, offsets,
    tracefs::Format,
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
    #[arg(long = "pidnss")]
    pidnss: bool,
    #[command(flatten)]
    pid: PidArg,
    /// Trace tasks in this cgroup v2 directory (and below it) only.
    #[arg(short = 'c', long = "cgroup", value_name = "PATH", value_parser = tools_user::cli::cgroup_dir)]
    cgroup: Option<std::path::PathBuf>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

const EXAMPLES: &str = "examples:
    ./runqlat            # summarize run queue latency as a histogram
    ./runqlat 1 10       # print 1 second summaries, 10 times
    ./runqlat -mT 1      # 1s summaries, milliseconds, and timestamps
    ./runqlat -P         # show each PID separately
    ./runqlat -p 185     # trace PID 185 only";

fn main() -> ExitCode {
    lifetime::main_with("runqlat", || {
        let args = manual::parse::<Args>(tools_user::man_page!("runqlat.8"));
        diag::init_logging(args.runtime.verbose);
        let (config, rungs) = plan(&args)?;
        let mut map_sizes = histogram::map_sizes(config.key_mode != key_mode::NONE);
        map_sizes.push(("START", start_table_size()));
        let loaded = loader::load(ebpf_object!("runqlat"), &config, &map_sizes, rungs, &args.runtime)?;
        let section = match config.key_mode {
            key_mode::PID => "pid",
            key_mode::TID => "tid",
            key_mode::PIDNS => "pidns",
            _ => "",
        };
        let key_fields = |key: u64| vec![(section, key.into())];
        let tool = HistogramTool {
            banner: "Tracing run queue latency... Hit Ctrl-C to end.",
            key_fields: (config.key_mode != key_mode::NONE).then_some(&key_fields as _),
            totals: false,
            // -P and -L key by PID or TID: /proc/N exists while it does.
            key_alive: matches!(config.key_mode, key_mode::PID | key_mode::TID).then_some(&process_exists as _),
            hist: &args.hist,
            runtime: &args.runtime,
        };
        histograms::run(tool, loaded)
    })
}

/// Entries of the kernel's task → runnable-since table. Keyed by task
/// address, it holds every task struct that has been runnable, so it is
/// sized from the tasks that exist now (with room for twice as many) and
/// never below BCC's 10240.
fn start_table_size() -> u32 {
    let tasks = tools_user::procfs::read("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().nth(3)?.split_once('/')?.1.parse::<u32>().ok())
        .unwrap_or(0);
    tasks.saturating_mul(2).clamp(10240, 1 << 20)
}

fn process_exists(id: u64) -> bool {
    std::path::Path::new(&format!("/proc/{id}")).exists()
}

/// The configuration and the rungs, best first.
fn plan(args: &Args) -> Result<(Config, Vec<Rung>)> {
    let mut config = Config {
        target_tgid: args.pid.pid.unwrap_or(0),
        key_mode: match (args.pids, args.tids, args.pidnss) {
            (true, _, _) => key_mode::PID,
            (_, true, _) => key_mode::TID,
            (_, _, true) => key_mode::PIDNS,
            _ => key_mode::NONE,
        },
        unit_ns: args.hist.unit().1,
        ..Config::default()
    };

    // Task struct offsets, for every rung that reads a task.
    let btf = Btf::for_tool(&args.runtime)?;
    let no_task_offsets = match &btf {
        Ok(btf) => task_offsets(btf, &mut config, args.pidnss).err().map(|err| format!("{err:#}")),
        Err(err) => Some(format!("{err:#}")),
    }
    .map(|err| format!("no task_struct offsets: {err}"));
    let switch4 = btf.as_ref().ok().and_then(|b| b.raw_tracepoint_args("sched_switch")) == Some(4);
    config.switch_has_prev_state = switch4 as u32;

    let no_tracepoint_fields = tracepoint_fields(&mut config).err().map(|err| format!("{err:#}"));
    if let Some(path) = &args.cgroup {
        config.cgroup = tools_user::cgroup::filter(path, btf.as_ref().ok())?;
    }
    let pidnss_needs_task = (args.pidnss && no_task_offsets.is_some())
        .then(|| "--pidnss reads the task's PID namespace, which needs task_struct offsets".to_owned());

    let switch = if switch4 { programs::RAW_SWITCH4 } else { programs::RAW_SWITCH };
    let rungs = vec![
        Rung::new("raw_tracepoint")
            .program(programs::RAW_WAKEUP, Attach::raw_tp("sched_wakeup"))
            .program(programs::RAW_WAKEUP_NEW, Attach::raw_tp("sched_wakeup_new"))
            .program(switch, Attach::raw_tp("sched_switch"))
            .unusable_if(no_task_offsets.clone()),
        Rung::new("tracepoint")
            .program(programs::TP_WAKEUP, Attach::tracepoint("sched", "sched_wakeup"))
            .program(programs::TP_WAKEUP_NEW, Attach::tracepoint("sched", "sched_wakeup_new"))
            .program(programs::TP_SWITCH, Attach::tracepoint("sched", "sched_switch"))
            .unusable_if(no_tracepoint_fields)
            .unusable_if(pidnss_needs_task),
        Rung::new("kprobe")
            .program(programs::KP_WAKEUP, Attach::kprobe(&["ttwu_do_activate", "ttwu_do_wakeup"]))
            .program(programs::KP_WAKEUP_NEW, Attach::kprobe(&["wake_up_new_task"]))
            .program(programs::KP_SWITCH, Attach::kprobe(&["finish_task_switch"]))
            .unusable_if(no_task_offsets),
    ];
    Ok((config, rungs))
}

fn task_offsets(btf: &Btf, config: &mut Config, pidnss: bool) -> Result<()> {
    config.task = offsets::task(btf)?;
    if !pidnss {
        return Ok(());
    }
    config.task_thread_pid = btf.member_any("task_struct", &["thread_pid"])?.offset;
    config.pid_level = btf.member_any("pid", &["level"])?.offset;
    config.pid_numbers = btf.member_any("pid", &["numbers"])?.offset;
    config.upid_size = btf.struct_size("upid")?;
    config.upid_ns = btf.member_any("upid", &["ns"])?.offset;
    config.pidns_inum = btf.member_any("pid_namespace", &["ns.inum"])?.offset;
    Ok(())
}

fn tracepoint_fields(config: &mut Config) -> Result<()> {
    let wakeup = Format::read("sched", "sched_wakeup")?;
    config.tp_wakeup_pid = wakeup.field_u32("pid")?;
    if Format::read("sched", "sched_wakeup_new")?.field_u32("pid")? != config.tp_wakeup_pid {
        anyhow::bail!("sched_wakeup and sched_wakeup_new records differ");
    }
    let switch = Format::read("sched", "sched_switch")?;
    config.tp_switch_prev_pid = switch.field_u32("prev_pid")?;
    config.tp_switch_next_pid = switch.field_u32("next_pid")?;
    config.tp_switch_prev_state = match switch.field("prev_state")? {
        (offset, 8) => offset,
        (_, size) => anyhow::bail!("sched_switch prev_state is {size} bytes, expected 8"),
    };
    let highest_state = switch.highest_printed_flag().context("sched_switch format names no task states")?;
    config.tp_preempt_bit = highest_state << 1;
    Ok(())
}
