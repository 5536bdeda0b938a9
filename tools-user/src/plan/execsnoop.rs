//! execsnoop's plan: every successful exec at `sched:sched_process_exec`,
//! and with -x the failed ones, paired across the exec syscalls'
//! tracepoints; on the legacy build, when those fail (Linux 4.4), BCC's
//! kprobes on the exec syscalls, whose parts of each exec user space puts
//! back together.

use anyhow::{bail, Result};
use std::collections::HashMap;
use std::path::Path;

use tools_common::execsnoop::{event_flags, part, programs, Config, ExecEvent, ExecPart};

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
    /// `--containers`: events carry the task's cgroup.
    pub containers: bool,
}

/// The configuration, the rungs best first, and the map sizes.
pub fn plan(options: &Options, btf: BtfSource<'_>, path: &EventPath) -> Result<Plan<Config>> {
    let mut config = Config { ppid: options.ppid.unwrap_or(0), ..Config::default() };
    if let Some(uid) = options.uid {
        config.uid = uid;
        config.filter_uid = 1;
    }
    let no_task = match btf {
        Ok(btf) => task_fields(btf, &mut config, options).err().map(|err| format!("{err:#}")),
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

/// The parent and the new argument area, through the task; and -c and --containers.
fn task_fields(btf: &crate::btf::Btf, config: &mut Config, options: &Options) -> Result<()> {
    config.task = offsets::task(btf)?;
    config.mm_arg_start = btf.member_any("mm_struct", &["arg_start"])?.offset;
    config.mm_arg_end = btf.member_any("mm_struct", &["arg_end"])?.offset;
    config.cgroup = crate::cgroup::events_walk(options.cgroup, options.containers, Some(btf))?;
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
    // The modern build never takes this rung: /proc/kallsyms (tens of
    // milliseconds to read) is read for the legacy build's only.
    if build == Build::Legacy && !loader::kallsyms_find_all(std::slice::from_ref(&execve[0])).is_empty() {
        match btf.as_ref().map_err(|err| anyhow::anyhow!("{err}")).and_then(offsets::syscall_args) {
            Ok(args) => {
                config.syscall_regs = 1;
                config.regs_args = args;
            }
            Err(err) => unusable = Some(format!("the exec syscalls' arguments: {err:#}")),
        }
    }
    let needs_task = (options.ppid.is_some() || options.cgroup.is_some() || options.containers)
        .then(|| "-P, -c and --containers read the current task, which this rung (Linux 4.4's) cannot".to_owned());
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

/// Execs put back together from the parts the legacy build's kprobes
/// send (Linux 4.4: see tools-ebpf's execsnoop), by process: the path and
/// the arguments at the syscall's entry, the result at its return.
#[derive(Default)]
pub struct Parts {
    execs: HashMap<u32, Box<ExecEvent>>,
}

impl Parts {
    /// Adds one part; the exec, once its result came (failed ones only with -x).
    pub fn take(&mut self, bytes: &[u8], fails: bool) -> Result<Option<ExecEvent>> {
        let p: ExecPart = crate::events::decode(bytes)?;
        match p.kind {
            part::FILENAME => {
                // SAFETY: ExecEvent is plain data, all zeros a valid one.
                let mut ev: Box<ExecEvent> = Box::new(unsafe { std::mem::zeroed() });
                (ev.ts_ns, ev.pid, ev.uid, ev.cpu, ev.comm) = (p.ts_ns, p.pid, p.uid, p.cpu, p.comm);
                ev.flags = event_flags::PARENT_UNKNOWN;
                let path = crate::output::cstr(&p.bytes);
                ev.filename[..path.len()].copy_from_slice(path);
                // An exec never finished (its thread gone) is replaced.
                self.execs.insert(p.pid, ev);
            }
            part::ARG => {
                if let Some(ev) = self.execs.get_mut(&p.pid) {
                    let arg = crate::output::cstr(&p.bytes);
                    let at = ev.args_len as usize;
                    if at + arg.len() < ev.args.len() {
                        ev.args[at..at + arg.len()].copy_from_slice(arg);
                        ev.args_len = (at + arg.len() + 1) as u32;
                    } else {
                        ev.flags |= event_flags::ARGS_TRUNCATED;
                    }
                }
            }
            part::MORE => {
                if let Some(ev) = self.execs.get_mut(&p.pid) {
                    ev.flags |= event_flags::ARGS_TRUNCATED;
                }
            }
            part::RET => {
                // A result without its start: an exec begun before the tool attached.
                let Some(mut ev) = self.execs.remove(&p.pid) else { return Ok(None) };
                ev.ret = p.ret;
                if p.ret == 0 {
                    // The new program's name.
                    ev.comm = p.comm;
                }
                // The parent: where the kernel saw it during the exec, else
                // (a failed exec, or none seen) as /proc says, as BCC does.
                let parent = match p.ppid {
                    0 => parent_of(p.pid),
                    ppid => Some((ppid, p.bytes[..16].try_into().unwrap_or_default())),
                };
                if let Some((ppid, pcomm)) = parent {
                    (ev.ppid, ev.pcomm) = (ppid, pcomm);
                    ev.flags &= !event_flags::PARENT_UNKNOWN;
                }
                if p.ret < 0 && !fails {
                    return Ok(None);
                }
                return Ok(Some(*ev));
            }
            other => bail!("an exec part of unknown kind {other}"),
        }
        Ok(None)
    }
}

/// A living process's parent, as /proc says: its TGID and name.
fn parent_of(pid: u32) -> Option<(u32, [u8; 16])> {
    let pids = crate::procfs::kernel_pids();
    let stat = std::fs::read(pids.process(pid)?.join("stat")).ok()?;
    // After the name in parentheses (which may hold anything): state, then ppid.
    let after_name = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    let ppid: u32 = std::str::from_utf8(after_name).ok()?.split_whitespace().nth(1)?.parse().ok()?;
    let name = pids.comm(ppid)?;
    let mut pcomm = [0u8; 16];
    pcomm[..name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]);
    Some((ppid, pcomm))
}

#[cfg(test)]
mod tests {
    use tools_common::execsnoop::PART_SIZE;

    use super::*;

    fn part(kind: u32, pid: u32, text: &[u8]) -> Vec<u8> {
        // SAFETY: plain data, all zeros a valid one.
        let mut p: ExecPart = unsafe { std::mem::zeroed() };
        (p.kind, p.pid, p.ts_ns) = (kind, pid, 7);
        p.bytes[..text.len().min(PART_SIZE)].copy_from_slice(&text[..text.len().min(PART_SIZE)]);
        // SAFETY: plain data, read as bytes.
        unsafe { std::slice::from_raw_parts(&p as *const ExecPart as *const u8, size_of::<ExecPart>()) }.to_vec()
    }

    fn ret(pid: u32, ret: i32, ppid: u32) -> Vec<u8> {
        let mut bytes = part(part::RET, pid, b"parent\0");
        let at = std::mem::offset_of!(ExecPart, ret);
        bytes[at..at + 4].copy_from_slice(&ret.to_ne_bytes());
        let at = std::mem::offset_of!(ExecPart, ppid);
        bytes[at..at + 4].copy_from_slice(&ppid.to_ne_bytes());
        bytes
    }

    fn args(ev: &ExecEvent) -> Vec<&[u8]> {
        ev.args[..ev.args_len as usize].split(|&b| b == 0).filter(|a| !a.is_empty()).collect()
    }

    #[test]
    fn an_exec_is_put_back_together_from_its_parts() {
        let mut parts = Parts::default();
        assert!(parts.take(&part(part::FILENAME, 42, b"/bin/true\0"), false).unwrap().is_none());
        assert!(parts.take(&part(part::ARG, 42, b"true\0"), false).unwrap().is_none());
        // Another process's exec, in between.
        assert!(parts.take(&part(part::FILENAME, 43, b"/bin/false\0"), false).unwrap().is_none());
        assert!(parts.take(&part(part::ARG, 42, &[b'x'; PART_SIZE]), false).unwrap().is_none());
        let ev = parts.take(&ret(42, 0, 1), false).unwrap().expect("the exec");
        assert_eq!(crate::output::cstr(&ev.filename), b"/bin/true");
        assert_eq!(args(&ev), [&b"true"[..], &[b'x'; PART_SIZE][..]]);
        assert_eq!((ev.pid, ev.ppid, ev.ret), (42, 1, 0));
        assert_eq!(crate::output::cstr(&ev.pcomm), b"parent");
        assert_eq!(ev.flags & event_flags::PARENT_UNKNOWN, 0);
    }

    #[test]
    fn a_failed_exec_only_when_asked_and_a_result_without_a_start_is_none() {
        let mut parts = Parts::default();
        parts.take(&part(part::FILENAME, 42, b"/nonexistent\0"), false).unwrap();
        assert!(parts.take(&ret(42, -2, 1), false).unwrap().is_none());
        parts.take(&part(part::FILENAME, 42, b"/nonexistent\0"), true).unwrap();
        parts.take(&part(part::MORE, 42, b""), true).unwrap();
        let ev = parts.take(&ret(42, -2, 1), true).unwrap().expect("the failed exec");
        assert_eq!(ev.ret, -2);
        assert_ne!(ev.flags & event_flags::ARGS_TRUNCATED, 0);
        assert!(parts.take(&ret(44, 0, 1), true).unwrap().is_none());
    }
}
