//! runqlat's programs and configuration.

use crate::offsets::TaskOffsets;

/// Its programs' names (see the crate root).
pub mod programs {
    pub const RAW_WAKEUP: &str = "runqlat_raw_wakeup";
    pub const RAW_WAKEUP_NEW: &str = "runqlat_raw_wakeup_new";
    /// `sched_switch(preempt, prev, next)`, before 5.18.
    pub const RAW_SWITCH: &str = "runqlat_raw_switch";
    /// `sched_switch(preempt, prev, next, prev_state)`, 5.18+.
    pub const RAW_SWITCH4: &str = "runqlat_raw_switch4";
    pub const TP_WAKEUP: &str = "runqlat_tp_wakeup";
    pub const TP_WAKEUP_NEW: &str = "runqlat_tp_wakeup_new";
    pub const TP_SWITCH: &str = "runqlat_tp_switch";
    pub const KP_WAKEUP: &str = "runqlat_kp_wakeup";
    pub const KP_WAKEUP_NEW: &str = "runqlat_kp_wakeup_new";
    pub const KP_SWITCH: &str = "runqlat_kp_switch";
}

/// The maps user space sizes or reads.
pub mod maps {
    /// Task → when it became runnable; sized by user space from the task count.
    pub const START: &str = "START";
    /// The keys with a series of their own; sized by user space to the cap.
    pub const SERIES: &str = "SERIES";
}

/// How samples are grouped.
pub mod key_mode {
    pub const NONE: u32 = 0;
    /// Per process (TGID), `-P`.
    pub const PID: u32 = 1;
    /// Per thread (TID), `-L`.
    pub const TID: u32 = 2;
    /// Per PID namespace (inode number), `--pidnss`.
    pub const PIDNS: u32 = 3;
    /// Per cgroup v2 directory (inode number; the exporter's
    /// `--runqlat.per-cgroup`), through `Config::cgroup`'s offsets.
    pub const CGROUP: u32 = 4;
}

/// Read-only configuration of the runqlat programs. Struct offsets are
/// resolved at start-up from the running kernel (BTF or tracepoint format
/// files); none is a literal.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Only tasks of this process (TGID); 0 = all.
    pub target_tgid: u32,
    /// One of [`key_mode`].
    pub key_mode: u32,
    /// Nanoseconds per output unit (1000 for usecs, 1000000 for msecs).
    pub unit_ns: u64,

    /// `task_struct.pid`, `.tgid`, `.__state`.
    pub task: TaskOffsets,
    /// `task_struct.thread_pid`, for `--pidnss`.
    pub task_thread_pid: u32,
    /// `-c`: only tasks in this cgroup.
    pub cgroup: crate::CgroupFilter,
    /// `struct pid` / `struct upid` / `struct pid_namespace` members for `--pidnss`.
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_ns: u32,
    pub pidns_inum: u32,

    /// Raw `sched_switch` passes `prev_state` as its 4th argument (5.18+);
    /// otherwise the state is read from the task.
    pub switch_has_prev_state: u32,

    /// Plain-tracepoint record offsets, from the events' format files.
    pub tp_wakeup_pid: u32,
    pub tp_switch_prev_pid: u32,
    pub tp_switch_prev_state: u32,
    pub tp_switch_next_pid: u32,
    pub _pad: u32,
    /// The `prev_state` bit that marks a preempted (still runnable) task, `R+`.
    pub tp_preempt_bit: u64,

    /// What the exporter reads beside the histograms: the sum of the
    /// latencies in nanoseconds (`TOTALS`, or each key's
    /// [`SUM_SLOT`](crate::histogram::SUM_SLOT) entry) and, with a key, the
    /// unkeyed histogram of every sample too. 0 for the command-line tool.
    pub totals: u32,
    /// With a key: at most this many keys of their own (the `SERIES`
    /// table, first come, freed by user space when a process exits); the
    /// samples of any other count under [`OTHER_KEY`](crate::histogram::OTHER_KEY).
    /// 0: no cap.
    pub series_cap: u32,
}

crate::plain_data!(Config);
