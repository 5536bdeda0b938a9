//! runqlat's plan: run-queue latency from the scheduler's wakeup and switch
//! hooks, on raw tracepoints, plain tracepoints or kprobes.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use tools_common::{
    map_names,
    runqlat::{key_mode, maps, programs, Config},
};

use super::{no_btf_reason, BtfSource, Plan};
use crate::{
    btf::Btf,
    ebpf_object,
    loader::{Attach, Build, Rung},
    offsets,
    tracefs::Format,
};

/// What to measure and how to group it.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Only this process (`-p`).
    pub pid: Option<u32>,
    /// One of [`key_mode`].
    pub key_mode: u32,
    /// Nanoseconds per histogram unit (1 for nanoseconds).
    pub unit_ns: u64,
    /// Only tasks in this cgroup v2 directory (`-c`).
    pub cgroup: Option<PathBuf>,
    /// Sums beside the histograms, and with a key the unkeyed histogram too
    /// (what the exporter exposes).
    pub totals: bool,
    /// With a key: at most this many keys of their own (0: no cap).
    pub series_cap: u32,
    /// With a key: entries of the keyed table (the object's 16384 when None).
    pub keyed_entries: Option<u32>,
}

/// The configuration, the rungs best first, and the map sizes.
pub fn plan(options: &Options, btf: BtfSource<'_>, build: Build) -> Result<Plan<Config>> {
    let mut config = Config {
        target_tgid: options.pid.unwrap_or(0),
        key_mode: options.key_mode,
        unit_ns: options.unit_ns,
        totals: options.totals as u32,
        series_cap: options.series_cap,
        ..Config::default()
    };
    let pidnss = options.key_mode == key_mode::PIDNS;

    // Task struct offsets, for every rung that reads a task.
    let no_task_offsets = no_btf_reason("task_struct", btf, |btf| task_offsets(btf, &mut config, pidnss));
    let switch4 = btf.as_ref().ok().and_then(|b| b.raw_tracepoint_args("sched_switch")) == Some(4);
    config.switch_has_prev_state = switch4 as u32;

    let no_tracepoint_fields = tracepoint_fields(&mut config).err().map(|err| format!("{err:#}"));
    if let Some(path) = &options.cgroup {
        config.cgroup = crate::cgroup::filter(path, btf.as_ref().ok())?;
    } else if options.key_mode == key_mode::CGROUP {
        // The walk's offsets without a filter (ino 0): the key is read, nothing is left out.
        let btf = btf.as_ref().map_err(|err| anyhow::anyhow!("{err}"));
        config.cgroup = btf
            .and_then(offsets::cgroup_walk)
            .context("a series per cgroup reads the task's cgroup, which needs kernel BTF")?;
    }
    let pidnss_needs_task = (pidnss && no_task_offsets.is_some())
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
            .unusable_if(no_task_offsets)
            .unusable_if(legacy_kprobes_refuse(options, build)),
    ];
    let mut plan = Plan::new(ebpf_object!("runqlat"), build, config, rungs);
    plan.map_sizes = map_sizes(&config, options.keyed_entries);
    Ok(plan)
}

/// The legacy build's kprobes (Linux 4.4) know the next task only by its
/// TID: a key read from the task itself cannot be had there.
fn legacy_kprobes_refuse(options: &Options, build: Build) -> Option<String> {
    let key = match options.key_mode {
        key_mode::PIDNS => "--pidnss",
        key_mode::CGROUP => "a key per cgroup (--containers, --runqlat.max-cgroups)",
        _ => return None,
    };
    super::current_task_refused(build, Some(key))
}

/// Map sizes for the loader: the keyed table only when keyed (at
/// `keyed_entries`, or the object's size), the series table at its cap, the
/// in-flight table from the task count.
fn map_sizes(config: &Config, keyed_entries: Option<u32>) -> Vec<(&'static str, u32)> {
    let mut sizes = crate::histogram::map_sizes(config.key_mode != key_mode::NONE);
    if let Some(entries) = keyed_entries.filter(|_| config.key_mode != key_mode::NONE) {
        sizes.push((map_names::KEYED_HIST, entries));
    }
    sizes.push((maps::SERIES, config.series_cap.max(1)));
    sizes.push((maps::START, start_table_size()));
    sizes
}

/// Entries of the kernel's task → runnable-since table. Keyed by task
/// address, it holds every task struct that has been runnable, so it is
/// sized from the tasks that exist now (with room for twice as many) and
/// never below BCC's 10240.
fn start_table_size() -> u32 {
    let tasks = crate::procfs::read("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().nth(3)?.split_once('/')?.1.parse::<u32>().ok())
        .unwrap_or(0);
    tasks.saturating_mul(2).clamp(10240, 1 << 20)
}

/// Whether process (or thread) `id` still exists: /proc/N exists while it does.
pub fn process_exists(id: u64) -> bool {
    crate::procfs::kernel_pids().exists(id)
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
