//! gethostlatency's programs, in-flight calls, event and configuration.

/// Its programs' names (see the crate root); `RETURN` emits events and
/// has a `_perf` twin.
pub mod programs {
    /// Kernels with BPF cookies (5.15+): one entry program for every
    /// function of every library; the cookie says which.
    pub const ENTRY: &str = "gethostlatency_entry";
    /// Older kernels: one entry program per function; the library is found
    /// from the process's mappings in user space.
    pub const ENTRY_GETADDRINFO: &str = "gethostlatency_entry_getaddrinfo";
    pub const ENTRY_GETHOSTBYNAME: &str = "gethostlatency_entry_gethostbyname";
    pub const ENTRY_GETHOSTBYNAME2: &str = "gethostlatency_entry_gethostbyname2";
    /// Every function's return (what it was is known from its entry).
    pub const RETURN: &str = "gethostlatency_return";
    /// Every exec, on sched/sched_process_exec: the process may now map
    /// another C library.
    pub const EXEC: &str = "gethostlatency_exec";
}

/// Map names (beside the shared event maps).
pub mod maps {
    /// Thread → its outermost resolver call in flight ([`super::Call`]).
    pub const CALLS: &str = "CALLS";
    /// Processes that exec'd since user space last looked.
    pub const EXECS: &str = "EXECS";
}

/// Execs remembered between two looks of user space (each second); when
/// the table is full user space reads every process again.
pub const EXECS_SIZE: u32 = 4096;

/// The functions traced, as BCC traces them.
pub mod function {
    pub const GETADDRINFO: u32 = 0;
    pub const GETHOSTBYNAME: u32 = 1;
    pub const GETHOSTBYNAME2: u32 = 2;
}

/// A cookie: the library's index in user space's table, and the function.
pub const fn cookie(library: u32, function: u32) -> u64 {
    ((library as u64) << 8) | function as u64
}

/// `library` of an event whose library the kernel side cannot know.
pub const UNKNOWN_LIBRARY: u32 = u32::MAX;

/// Bytes of a host name kept: DNS's 253, its NUL, rounded to a power of two.
pub const HOST_SIZE: usize = 256;

/// The legacy build's: the host as BCC read it in 2016, at most 80 bytes,
/// with one fixed-size read (Linux 4.4 has no string read) into an event on
/// the stack (its only place for a helper's memory).
pub const LEGACY_HOST_SIZE: usize = 80;

/// A thread's outermost resolver call, from its entry to its return.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Call {
    pub ts_ns: u64,
    /// The stack pointer at entry, and the return address it points to: a
    /// call made deeper in the stack while this one runs is nested in it,
    /// and so is a tail call (the same stack pointer, but the return address
    /// is the uretprobe's by then); a call at or above it otherwise means
    /// this one never returned (longjmp, thread exit) and is replaced.
    pub sp: u64,
    pub ret_addr: u64,
    /// The host name argument, read at the return (the caller's string, which
    /// the call does not change): the table keeps 48 bytes per call, not 300.
    pub host: u64,
    /// Calls nested in it that have not returned yet, plus one.
    pub depth: u32,
    pub function: u32,
    pub library: u32,
    /// The caller's cgroup v2 inode with `--containers` (else 0).
    pub cgroup: u32,
}

/// One lookup that returned. Only the first
/// `offset_of!(LookupEvent, host) + host_len` bytes are sent (the legacy
/// build sends a whole [`LegacyLookupEvent`], whose host ends at its first
/// NUL).
pub type LookupEvent = LookupEventOf<HOST_SIZE>;

/// The legacy build's event: the same fields, a shorter host.
pub type LegacyLookupEvent = LookupEventOf<LEGACY_HOST_SIZE>;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct LookupEventOf<const HOST: usize> {
    /// CLOCK_MONOTONIC at the return.
    pub ts_ns: u64,
    pub latency_ns: u64,
    /// The return value: getaddrinfo's 0 or EAI_*; gethostbyname's pointer.
    pub ret: i64,
    pub pid: u32,
    pub tid: u32,
    pub function: u32,
    pub library: u32,
    pub comm: [u8; 16],
    pub host_len: u32,
    /// The caller's cgroup v2 inode with `--containers` (else 0).
    pub cgroup: u32,
    pub host: [u8; HOST],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// `-p`: only this process; 0 = all.
    pub target_tgid: u32,
    /// Non-zero: each lookup is counted in the keyed histogram under
    /// [`hist_key`], in units of this many nanoseconds (the exporter's 1,
    /// `--histogram`'s 1000 or 1000000), its sum in nanoseconds, and no
    /// event is sent.
    pub histogram_unit_ns: u32,
    pub cgroup: crate::CgroupFilter,
}

/// Keys of the exporter's keyed histogram: `function << 8 | result`, where
/// result 0 is a success, and a failure is getaddrinfo's EAI_* negated
/// (255 beyond 254) or gethostbyname's NULL (1).
#[inline(always)]
pub fn hist_key(function: u32, ret: i64) -> u64 {
    let result = match function {
        function::GETADDRINFO => match ret {
            0 => 0,
            -254..=-1 => -ret as u64,
            _ => 255,
        },
        _ => (ret == 0) as u64,
    };
    (function as u64) << 8 | result
}

crate::plain_data!(Config, Call, LookupEvent);

crate::time_first!(LookupEvent, ts_ns);

#[cfg(feature = "user")]
impl crate::Event for LookupEvent {
    const MIN_LEN: usize = core::mem::offset_of!(LookupEvent, host);
}
