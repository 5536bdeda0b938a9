//! biolatency's configuration, written by user space before load.

/// Bits of [`Config::key_mode`]: `-D` and `-F` combine into one key.
pub mod key_mode {
    /// Per disk: the key's high 32 bits are the disk's dev (major << 20 | minor).
    pub const DISK: u32 = 1;
    /// Per flag set: the key's low 32 bits are the request's `cmd_flags`.
    pub const FLAGS: u32 = 2;
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

    /// `struct request` members. `rq_disk` exists before 5.17; from 5.15 the
    /// disk is also `rq->q->disk`: `has_rq_disk` says which path to take.
    pub rq_q: u32,
    pub rq_disk: u32,
    pub has_rq_disk: u32,
    pub q_disk: u32,
    pub rq_cmd_flags: u32,
    /// `struct gendisk` members.
    pub disk_major: u32,
    pub disk_first_minor: u32,

    /// Plain tracepoints: `dev` and `sector` of block_rq_issue/insert/complete records.
    pub tp_dev: u32,
    pub tp_sector: u32,
}
