//! execsnoop's plan: every successful exec at `sched:sched_process_exec`,
//! and with -x the failed ones, paired across the exec syscalls'
//! tracepoints; on the legacy build, when those fail (Linux 4.4), BCC's
//! kprobes on the exec syscalls, whose parts of each exec user space puts
//! back together.

use std::path::Path;

use anyhow::{bail, Result};
use tools_common::execsnoop::{programs, Config};

use super::{BtfSource, Plan};
use crate::{
    ebpf_object,
    events::EventPath,
    loader::{self, Attach, Build, Rung},
    offsets, tracefs,
};

/// What to trace.
#[derive(Default)]
pub struct Options<'a> {
    /// `-x`: failed execs too.
    pub fails: bool,
    /// `-u`: only this user.
    pub uid: Option<u32>,
    /// `-P`: only children of this process.
    pub ppid: Option<u32>,
    /// `-c`: only tasks in this cgroup v2 directory or below it.
    pub cgroup: Option<&'a Path>,
}

/// The configuration, the rungs best first, and the map sizes.
pub fn plan(options: &Options, btf: BtfSource<'_>, path: &EventPath) -> Result<Plan<Config>> {
    let mut config = Config { ppid: options.ppid.unwrap_or(0), ..Config::default() };
    if let Some(uid) = options.uid {
        config.uid = uid;
        config.filter_uid = 1;
    }
    let no_task = match btf {
        Ok(btf) => task_fields(btf, &mut config, options.cgroup).err().map(|err| format!("{err:#}")),
        Err(err) => Some(format!("execsnoop reads the parent and the new argument area through kernel BTF: {err}")),
    };
    let no_record = exec_record(&mut config).err().map(|err| format!("{err:#}"));
    let mut tracepoint = Rung::new("tracepoint")
        .program(programs::EXEC, Attach::tracepoint("sched", "sched_process_exec"))
        .unusable_if(no_task)
        .unusable_if(no_record);
    if options.fails {
        match syscall_fields(&mut config) {
            Ok(()) => {
                tracepoint = tracepoint
                    .program(programs::ENTER_EXECVE, Attach::tracepoint("syscalls", "sys_enter_execve"))
                    .program(programs::ENTER_EXECVEAT, Attach::tracepoint("syscalls", "sys_enter_execveat"))
                    .program(programs::EXIT_EXECVE, Attach::tracepoint("syscalls", "sys_exit_execve"))
                    .program(programs::EXIT_EXECVEAT, Attach::tracepoint("syscalls", "sys_exit_execveat"))
            }
            Err(err) => {
                let why = format!("-x needs the exec syscall tracepoints: {err:#}");
                tracepoint = tracepoint.unusable_if(Some(why));
            }
        }
    }
    let rungs = vec![tracepoint, kprobe_rung(options, btf, path.build, &mut config)];
    let mut plan = Plan::new(ebpf_object!("execsnoop"), path.build, config, rungs);
    plan.map_sizes = path.max_entries();
    Ok(plan)
}

/// The parent and the new argument area, through the task; and -c.
fn task_fields(btf: &crate::btf::Btf, config: &mut Config, cgroup: Option<&Path>) -> Result<()> {
    config.task = offsets::task(btf)?;
    config.mm_arg_start = btf.member_any("mm_struct", &["arg_start"])?.offset;
    config.mm_arg_end = btf.member_any("mm_struct", &["arg_end"])?.offset;
    if let Some(cgroup) = cgroup {
        config.cgroup = crate::cgroup::filter(cgroup, Some(btf))?;
    }
    Ok(())
}

fn exec_record(config: &mut Config) -> Result<()> {
    let exec = tracefs::Format::read("sched", "sched_process_exec")?;
    config.tp_exec_filename = exec.field_u32("filename")?;
    config.tp_exec_old_pid = exec.field_u32("old_pid")?;
    Ok(())
}

/// The legacy build's rung for Linux 4.4: kprobes on the exec syscalls.
/// Their arguments are the probe's own, or, behind the syscall wrappers
/// of x86-64 (4.17+) and arm64 (4.19+), a `struct pt_regs`'s members.
fn kprobe_rung(options: &Options, btf: BtfSource<'_>, build: Build, config: &mut Config) -> Rung {
    let functions =
        |syscall: &str| [format!("{}sys_{syscall}", offsets::SYSCALL_WRAPPER_PREFIX), format!("sys_{syscall}")];
    let execve = functions("execve");
    let execveat = functions("execveat");
    let mut unusable = None;
    if !loader::kallsyms_find_all(std::slice::from_ref(&execve[0])).is_empty() {
        match btf.as_ref().map_err(|err| anyhow::anyhow!("{err}")).and_then(offsets::syscall_args) {
            Ok(args) => {
                config.syscall_regs = 1;
                config.regs_args = args;
            }
            Err(err) => unusable = Some(format!("the exec syscalls' arguments: {err:#}")),
        }
    }
    let needs_task = (options.ppid.is_some() || options.cgroup.is_some())
        .then(|| "-P and -c read the current task, which this rung (Linux 4.4's) cannot".to_owned());
    let modern =
        (build == Build::Modern).then(|| "the legacy build's (Linux 4.4's), where the tracepoints fail".to_owned());
    // Offsets of the exec's task (its parent's TGID and name); the rung
    // works without them, its events then naming no parent.
    if let Ok(task) = btf.as_ref().map_err(|err| anyhow::anyhow!("{err}")).and_then(offsets::task) {
        config.task = task;
    }
    Rung::new("kprobe")
        .program(programs::KP_EXEC_TASK, Attach::kprobe(&["exec_mm_release", "mm_release"]))
        .program(programs::KRET_EXEC, Attach::Kretprobe(execve.to_vec()))
        .program(programs::KRET_EXEC, Attach::Kretprobe(execveat.to_vec()))
        .program(programs::KP_EXECVE, Attach::Kprobe(execve.to_vec()))
        .program(programs::KP_EXECVEAT, Attach::Kprobe(execveat.to_vec()))
        .unusable_if(modern)
        .unusable_if(needs_task)
        .unusable_if(unusable)
}

fn syscall_fields(config: &mut Config) -> Result<()> {
    let format = |name| tracefs::Format::read("syscalls", name);
    let enter = format("sys_enter_execve")?;
    config.tp_execve_filename = enter.field("filename")?.0;
    config.tp_execve_argv = enter.field("argv")?.0;
    let enter_at = format("sys_enter_execveat")?;
    config.tp_execveat_filename = enter_at.field("filename")?.0;
    config.tp_execveat_argv = enter_at.field("argv")?.0;
    let exit = format("sys_exit_execve")?;
    config.tp_exit_ret = exit.field("ret")?.0;
    if format("sys_exit_execveat")?.field("ret")?.0 != config.tp_exit_ret {
        bail!("sys_exit_execve and sys_exit_execveat records differ");
    }
    Ok(())
}
