//! ext4slower's (and xfsslower's, btrfsslower's: a table of filesystems)
//! programs, event and configuration.

use crate::offsets::{FileOffsets, TaskOffsets};

/// Its programs' names (see the crate root); those that end an operation
/// emit events and have `_perf` twins.
pub mod programs {
    /// fentry/fexit on the filesystem's read_iter, write_iter, open, fsync
    /// (one program per function: fentry is loaded for one function).
    pub const FENTRY_READ: &str = "fsslower_fentry_read";
    pub const FENTRY_WRITE: &str = "fsslower_fentry_write";
    pub const FENTRY_OPEN: &str = "fsslower_fentry_open";
    pub const FENTRY_SYNC: &str = "fsslower_fentry_sync";
    pub const FEXIT_READ: &str = "fsslower_fexit_read";
    pub const FEXIT_WRITE: &str = "fsslower_fexit_write";
    pub const FEXIT_OPEN: &str = "fsslower_fexit_open";
    pub const FEXIT_SYNC: &str = "fsslower_fexit_sync";
    /// kprobe/kretprobe on the same functions.
    pub const KP_READ: &str = "fsslower_kp_read";
    pub const KP_WRITE: &str = "fsslower_kp_write";
    pub const KP_OPEN: &str = "fsslower_kp_open";
    pub const KP_SYNC: &str = "fsslower_kp_sync";
    pub const KRET_READ: &str = "fsslower_kret_read";
    pub const KRET_WRITE: &str = "fsslower_kret_write";
    pub const KRET_OPEN: &str = "fsslower_kret_open";
    pub const KRET_SYNC: &str = "fsslower_kret_sync";
    /// Syscall tracepoints: `read`, `readv` (the file position) ...
    pub const SYS_READ: &str = "fsslower_sys_read";
    /// ... `pread64`, `preadv`, `preadv2` (an offset argument) ...
    pub const SYS_PREAD: &str = "fsslower_sys_pread";
    pub const SYS_WRITE: &str = "fsslower_sys_write";
    pub const SYS_PWRITE: &str = "fsslower_sys_pwrite";
    /// `fsync`, `fdatasync`.
    pub const SYS_SYNC: &str = "fsslower_sys_sync";
    /// `open`, `openat`, `openat2`, `creat`: the file is known at exit.
    pub const SYS_OPEN: &str = "fsslower_sys_open";
    /// Every `sys_exit_*` of the above.
    pub const SYS_EXIT: &str = "fsslower_sys_exit";
}

/// Operations, as BCC's T column prints them: R W O S.
pub mod op {
    pub const READ: u32 = 0;
    pub const WRITE: u32 = 1;
    pub const OPEN: u32 = 2;
    pub const SYNC: u32 = 3;
}

/// Bytes of a file name kept (NAME_MAX + 1); a power of two.
pub const NAME_SIZE: usize = 256;

/// The legacy build's: the name as BCC read it, at most DNAME_INLINE_LEN
/// (32) bytes, with one fixed-size read (Linux 4.4 has no string read) into
/// an event on the stack (its only place for a helper's memory).
pub const LEGACY_NAME_SIZE: usize = 32;

/// An operation in flight, from its entry to its return.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Start {
    pub ts_ns: u64,
    /// The `struct file` (known at entry but for an open syscall).
    pub file: u64,
    /// Where it starts in the file, in bytes.
    pub offset: i64,
    pub op: u32,
    /// The caller's cgroup v2 inode with `--containers` (else 0).
    pub cgroup: u32,
}

/// One operation slower than the threshold. Only the first
/// `offset_of!(FileOpEvent, name) + name_len` bytes are sent (the legacy
/// build sends a whole [`LegacyFileOpEvent`], whose name ends at its first
/// NUL).
pub type FileOpEvent = FileOpEventOf<NAME_SIZE>;

/// The legacy build's event: the same fields, a shorter name.
pub type LegacyFileOpEvent = FileOpEventOf<LEGACY_NAME_SIZE>;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileOpEventOf<const NAME: usize> {
    /// CLOCK_MONOTONIC at its return.
    pub end_ns: u64,
    pub latency_ns: u64,
    pub offset: i64,
    /// The return value: bytes read or written, or a negative errno.
    pub bytes: i64,
    pub ino: u64,
    pub pid: u32,
    pub tid: u32,
    /// The super block's `s_dev` (MAJOR << 20 | MINOR).
    pub dev: u32,
    pub op: u32,
    pub comm: [u8; 16],
    /// Bytes of `name` that hold the file name (without the NUL).
    pub name_len: u32,
    /// The caller's cgroup v2 inode with `--containers` (else 0).
    pub cgroup: u32,
    pub name: [u8; NAME],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Only operations slower than this (strictly).
    pub min_ns: u64,
    /// `-p`: only this process; 0 = all.
    pub target_tgid: u32,
    /// The filesystem's super block magic (`s_magic`), which the syscall
    /// rung tells its files by.
    pub magic: u32,
    pub cgroup: crate::CgroupFilter,
    pub task: TaskOffsets,
    pub file: FileOffsets,
    /// `kiocb.ki_filp` and `.ki_pos`.
    pub kiocb_filp: u32,
    pub kiocb_pos: u32,
    /// Syscall records: the descriptor, the offset argument (`pos`,
    /// `pos_l`) and, at exit, `ret`.
    pub tp_fd: u32,
    pub tp_pos: u32,
    pub tp_ret: u32,
    /// Non-zero: every operation is counted in the keyed histogram under
    /// its `op`, in units of this many nanoseconds (the exporter's 1,
    /// `--histogram`'s 1000 or 1000000), its sum in nanoseconds, and no
    /// event is sent.
    pub histogram_unit_ns: u32,
    /// The tool's own process, left out: its output may go to a file on the
    /// very filesystem traced (`ext4slower > log`), as BCC leaves out its own.
    pub own_tgid: u32,
    pub _pad: u32,
}

crate::plain_data!(Config, Start, FileOpEvent);

crate::time_first!(FileOpEvent, end_ns);

#[cfg(feature = "user")]
impl crate::Event for FileOpEvent {
    const MIN_LEN: usize = core::mem::offset_of!(FileOpEvent, name);
}
