//! execsnoop's plan: every successful exec at `sched:sched_process_exec`,
//! and with -x the failed ones, paired across the exec syscalls'
//! tracepoints.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use tools_common::execsnoop::{programs, Config};

use super::{BtfSource, Plan};
use crate::{
    ebpf_object,
    events::EventPath,
    loader::{Attach, Rung},
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

/// The configuration, the one rung, and the map sizes.
pub fn plan(options: &Options, btf: BtfSource<'_>, path: &EventPath) -> Result<Plan<Config>> {
    let btf = btf
        .as_ref()
        .map_err(|err| anyhow::anyhow!("{err}"))
        .context("execsnoop reads the parent and the new argument area through kernel BTF")?;
    let mut config = Config {
        task: offsets::task(btf)?,
        mm_arg_start: btf.member_any("mm_struct", &["arg_start"])?.offset,
        mm_arg_end: btf.member_any("mm_struct", &["arg_end"])?.offset,
        ppid: options.ppid.unwrap_or(0),
        ..Config::default()
    };
    if let Some(uid) = options.uid {
        config.uid = uid;
        config.filter_uid = 1;
    }
    if let Some(cgroup) = options.cgroup {
        config.cgroup = crate::cgroup::filter(cgroup, Some(btf))?;
    }
    let exec = tracefs::Format::read("sched", "sched_process_exec")?;
    config.tp_exec_filename = exec.field_u32("filename")?;
    config.tp_exec_old_pid = exec.field_u32("old_pid")?;

    let mut rung = Rung::new("tracepoint").program(programs::EXEC, Attach::tracepoint("sched", "sched_process_exec"));
    if options.fails {
        match syscall_fields(&mut config) {
            Ok(()) => {
                rung = rung
                    .program(programs::ENTER_EXECVE, Attach::tracepoint("syscalls", "sys_enter_execve"))
                    .program(programs::ENTER_EXECVEAT, Attach::tracepoint("syscalls", "sys_enter_execveat"))
                    .program(programs::EXIT_EXECVE, Attach::tracepoint("syscalls", "sys_exit_execve"))
                    .program(programs::EXIT_EXECVEAT, Attach::tracepoint("syscalls", "sys_exit_execveat"))
            }
            Err(err) => rung = rung.unusable_if(Some(format!("-x needs the exec syscall tracepoints: {err:#}"))),
        }
    }
    let mut plan = Plan::new(ebpf_object!("execsnoop"), path.build, config, vec![rung]);
    plan.map_sizes = path.max_entries();
    Ok(plan)
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
