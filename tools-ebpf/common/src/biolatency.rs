//! biolatency's programs and configuration.

/// Its programs' names (see the crate root). `_q` programs take the request as the 2nd argument, as
/// `block_rq_issue(q, rq)` and `block_rq_insert(q, rq)` passed it before 5.11.
pub mod programs {
    pub const RAW_ISSUE: &str = "biolatency_raw_issue";
    pub const RAW_ISSUE_Q: &str = "biolatency_raw_issue_q";
    pub const RAW_ISSUE_QUEUED: &str = "biolatency_raw_issue_queued";
    pub const RAW_ISSUE_QUEUED_Q: &str = "biolatency_raw_issue_queued_q";
    pub const RAW_INSERT: &str = "biolatency_raw_insert";
    pub const RAW_INSERT_Q: &str = "biolatency_raw_insert_q";
    pub const RAW_COMPLETE: &str = "biolatency_raw_complete";
    pub const KP_ISSUE: &str = "biolatency_kp_issue";
    pub const KP_ISSUE_QUEUED: &str = "biolatency_kp_issue_queued";
    pub const KP_ACCOUNT_START: &str = "biolatency_kp_account_start";
    pub const KP_COMPLETE: &str = "biolatency_kp_complete";
    pub const TP_ISSUE: &str = "biolatency_tp_issue";
    pub const TP_ISSUE_QUEUED: &str = "biolatency_tp_issue_queued";
    pub const TP_INSERT: &str = "biolatency_tp_insert";
    pub const TP_COMPLETE: &str = "biolatency_tp_complete";
    pub const TP_IO_START: &str = "biolatency_tp_io_start";
    pub const TP_IO_DONE: &str = "biolatency_tp_io_done";
}

/// Bits of [`Config::key_mode`]: `-D` and `-F` combine into one key.
pub mod key_mode {
    /// Per disk: the key's high 32 bits are the disk's dev (major << 20 | minor).
    pub const DISK: u32 = 1;
    /// Per flag set: the key's low 32 bits are the request's `cmd_flags`.
    pub const FLAGS: u32 = 2;
    /// Per cgroup (`--containers`, not with `FLAGS`): the key's low 32 bits
    /// are the cgroup of the task that started the request (see
    /// `CgroupFilter::report`).
    pub const CGROUP: u32 = 4;
}

/// `struct request` and its disk. `rq_disk` exists before 5.17; from 5.15
/// the disk is also `rq->q->disk`: `has_rq_disk` says which path to take.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestOffsets {
    pub q: u32,
    pub disk: u32,
    pub has_rq_disk: u32,
    pub q_disk: u32,
    pub cmd_flags: u32,
    /// `struct gendisk` members.
    pub disk_major: u32,
    pub disk_first_minor: u32,
}

/// Read-only configuration of the biolatency programs. Struct and
/// tracepoint offsets are resolved at start-up from the running kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Nanoseconds per output unit.
    pub unit_ns: u64,
    /// Bits of [`key_mode`]; 0 for one histogram.
    pub key_mode: u32,
    /// `-d`: only this disk (major << 20 | minor); 0 = all.
    pub disk_dev: u32,
    /// `-c`: only I/O started while a task of this cgroup runs.
    pub cgroup: crate::CgroupFilter,

    pub rq: RequestOffsets,

    /// Plain tracepoints: `dev` and `sector` of block_rq_issue/insert/complete records.
    pub tp_dev: u32,
    pub tp_sector: u32,
    /// With [`key_mode::FLAGS`]: the bits of `cmd_flags` kept in the key
    /// (all for `-F`; the operation's for the exporter).
    pub flags_mask: u32,
    /// Keyed: also the sum of each key's latencies in nanoseconds (its
    /// [`SUM_SLOT`](crate::histogram::SUM_SLOT) entry), for the exporter.
    pub totals: u32,
    pub _pad: u32,
}

crate::plain_data!(Config);
