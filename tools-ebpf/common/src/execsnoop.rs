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
    pub _pad: u32,
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
    pub _pad2: u32,
}

crate::plain_data!(Config, InFlight, ExecEvent);

crate::time_first!(ExecEvent, ts_ns);

#[cfg(feature = "user")]
impl crate::Event for ExecEvent {
    const MIN_LEN: usize = core::mem::offset_of!(ExecEvent, args);
}
