//! execsnoop's programs, event and configuration.

use crate::offsets::TaskOffsets;

/// Its programs' names (see the crate root); `EXEC`, `EXIT_EXECVE` and
/// `EXIT_EXECVEAT` emit events and have `_perf` twins.
pub mod programs {
    pub const EXEC: &str = "execsnoop_exec";
    pub const ENTER_EXECVE: &str = "execsnoop_enter_execve";
    pub const ENTER_EXECVEAT: &str = "execsnoop_enter_execveat";
    pub const EXIT_EXECVE: &str = "execsnoop_exit_execve";
    pub const EXIT_EXECVEAT: &str = "execsnoop_exit_execveat";
    /// The legacy build's kprobe rung (Linux 4.4): the exec syscalls'
    /// entry, each argument read there, and their return.
    pub const KP_EXECVE: &str = "execsnoop_kp_execve";
    pub const KP_EXECVEAT: &str = "execsnoop_kp_execveat";
    pub const KRET_EXEC: &str = "execsnoop_kret_exec";
    /// `exec_mm_release(task, mm)` (`mm_release` before 5.5): the exec's
    /// task, whose parent the rung cannot otherwise read.
    pub const KP_EXEC_TASK: &str = "execsnoop_kp_exec_task";
}

/// The maps user space sizes or reads.
pub mod maps {
    /// The legacy kprobe rung's execs in flight: process → its parent.
    pub const PARENTS: &str = "PARENTS";
}

/// An exec's parent, as the legacy kprobe rung learns it during the exec.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Parent {
    /// 0 until known.
    pub tgid: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}

/// Bytes kept of the file name as passed to exec.
pub const FILENAME_SIZE: usize = 256;
/// Bytes kept of the argument strings (NUL-separated): a power of two, so
/// the kernel side can bound reads with a mask. The event is built in a
/// per-CPU map value, which the kernel caps at 32 KB: 16 KB of arguments
/// is the most that fits beside the rest, rounded to a power of two.
pub const ARGS_SIZE: usize = 16384;
/// Arguments read one by one from a failed exec's argv (successful execs
/// read the new process's whole argument area at once), each at most half
/// of `ARGS_SIZE`: the loop is unrolled, and every read must stay inside.
pub const FAILED_MAX_ARGS: usize = 32;

/// `flags` bits of an [`ExecEvent`].
pub mod event_flags {
    /// The arguments did not fit: more follow than were captured.
    pub const ARGS_TRUNCATED: u32 = 1;
    /// `args` was read from the new process's argument area (a successful
    /// exec): for a script it is the argv the kernel rewrote,
    /// [interpreter, (its argument), path, argv[1..]].
    pub const FROM_MM: u32 = 2;
    /// The argument area could not be read: the event carries no arguments.
    pub const ARGS_UNREADABLE: u32 = 4;
    /// The parent is not known (`ppid`, `pcomm`): the legacy build's kprobe
    /// rung, for Linux 4.4, cannot read the current task.
    pub const PARENT_UNKNOWN: u32 = 8;
}

/// Bytes of one argument the legacy build's kprobe rung sends (BCC's
/// 128): one fixed-size read, into an event on the stack.
pub const PART_SIZE: usize = 128;

/// Arguments the legacy build's kprobe rung reads at most (BCC's
/// default 20), the file name not counted.
pub const PART_MAX_ARGS: u32 = 20;

/// The parts of one exec on the legacy build's kprobe rung, as BCC's
/// execsnoop of 2016 sent them (Linux 4.4 has no string read and sends
/// only events on the stack): user space puts them back together.
pub mod part {
    /// The path passed to exec, at the syscall's entry.
    pub const FILENAME: u32 = 0;
    /// argv[index], at the entry.
    pub const ARG: u32 = 1;
    /// More arguments followed than were read.
    pub const MORE: u32 = 2;
    /// The syscall's return: `ret`, the new program's `comm`, and the
    /// parent where it was seen (`ppid`, and its `comm` in `bytes`).
    pub const RET: u32 = 3;
}

/// One part of an exec (see [`part`]); `bytes` holds a string cut at
/// [`PART_SIZE`] (it ends at its first NUL, if it has one).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecPart {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub cpu: u32,
    /// One of [`part`].
    pub kind: u32,
    pub index: u32,
    pub ret: i32,
    /// The string could not be read.
    pub unreadable: u32,
    /// The parent's TGID (a RET part's; 0: not known).
    pub ppid: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
    pub bytes: [u8; PART_SIZE],
}

/// One exec, as the kernel hands it over. Only the first
/// `offset_of!(ExecEvent, args) + args_len` bytes are sent.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) at the exec.
    pub ts_ns: u64,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub cpu: u32,
    /// 0, or -errno for a failed exec.
    pub ret: i32,
    pub flags: u32,
    /// Bytes of `args` that hold data.
    pub args_len: u32,
    /// The exec'ing task's cgroup v2 inode with `--containers` (else 0).
    pub cgroup: u32,
    pub comm: [u8; 16],
    pub pcomm: [u8; 16],
    /// The path as passed to exec (NUL-terminated).
    pub filename: [u8; FILENAME_SIZE],
    /// argv[0], argv[1], ... each NUL-terminated.
    pub args: [u8; ARGS_SIZE],
}

/// What a failed exec needs from its entry: the caller's pointers.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct InFlight {
    pub filename: u64,
    pub argv: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// `-u`: only this UID, when `filter_uid` is set (so that -u 0 works).
    pub uid: u32,
    pub filter_uid: u32,
    /// `-P`: only children of this process; 0 = all.
    pub ppid: u32,
    pub _pad: u32,
    pub cgroup: crate::CgroupFilter,

    /// `task_struct.real_parent`, `.tgid`, `.comm`, `.mm`.
    pub task: TaskOffsets,
    /// `mm_struct.arg_start`, `.arg_end`.
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,

    /// `sched_process_exec` record: `filename` (__data_loc) and `old_pid`.
    pub tp_exec_filename: u32,
    pub tp_exec_old_pid: u32,
    /// `sys_enter_execve`: `filename`, `argv`; `sys_enter_execveat`: the same
    /// two; `sys_exit_*`: `ret`.
    pub tp_execve_filename: u32,
    pub tp_execve_argv: u32,
    pub tp_execveat_filename: u32,
    pub tp_execveat_argv: u32,
    pub tp_exit_ret: u32,
    /// The legacy kprobe rung: the exec syscalls take a `struct pt_regs *`
    /// whose members hold their arguments (x86-64 4.17+, arm64 4.19+), at
    /// these offsets (BTF); 0: the arguments are the probe's own.
    pub syscall_regs: u32,
    pub regs_args: [u32; 3],
    pub _pad2: u32,
}

crate::plain_data!(Config, InFlight, ExecEvent, ExecPart, Parent);

crate::time_first!(ExecEvent, ts_ns);
crate::time_first!(ExecPart, ts_ns);

#[cfg(feature = "user")]
impl crate::Event for ExecEvent {
    const MIN_LEN: usize = core::mem::offset_of!(ExecEvent, args);
}

#[cfg(feature = "user")]
impl crate::Event for ExecPart {}
