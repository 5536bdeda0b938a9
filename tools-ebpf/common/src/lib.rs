//! Types shared by the eBPF programs and user space. `no_std`, `repr(C)`,
//! plain old data only: both sides read the same bytes.
//!
//! Each tool's module names its programs once, in `programs` (and the maps
//! user space sizes or reads, in `maps`): the kernel side checks at compile
//! time that its functions and statics carry these names
//! (`#[tools_ebpf::named]`), and user space finds them by these names.
#![no_std]

pub mod biolatency;
pub mod execsnoop;
pub mod fsslower;
pub mod gethostlatency;
pub mod histogram;
pub mod offsets;
pub mod runqlat;
pub mod tcplife;

/// Names of the maps several tools declare (`tools_ebpf::maps` has their
/// types, which differ between the modern and the legacy build); user
/// space finds them by these names.
pub mod map_names {
    /// The unkeyed histogram: a per-CPU [`crate::histogram::Histogram`]
    /// (modern), or one count per slot (legacy).
    pub const HIST: &str = "HIST";
    /// [`crate::histogram::HistKey`] → count, per CPU (modern) or shared
    /// (legacy): histograms with a key (-P, -L, the exporter's labels).
    pub const KEYED_HIST: &str = "KEYED_HIST";
    /// [`crate::Drops`], per CPU (modern) or shared (legacy): what the
    /// kernel side could not record.
    pub const DROPS: &str = "DROPS";
    /// [`crate::histogram::Totals`], as `DROPS`, for tools that print sums.
    pub const TOTALS: &str = "TOTALS";
    /// Events: the BPF ring buffer (modern) or a perf event array (legacy).
    pub const EVENTS: &str = "EVENTS";
    /// The configuration: a read-only global (modern) or a one-entry
    /// array map (legacy).
    pub const CONFIG: &str = "CONFIG";
}

/// `-c PATH`: only tasks in a cgroup v2 directory or below it; and with
/// `report`, the cgroup events carry (`--containers`). Compared by
/// the low 32 bits of the directory's inode number, unique among live
/// cgroups in every kernel (before 5.5 the kernfs id holds only those).
/// Offsets of `task_struct.cgroups` → `css_set.dfl_cgrp` → `cgroup.kn` →
/// `kernfs_node.id` and `.parent` (`__parent` from 6.15), from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupFilter {
    /// 0: no filter.
    pub ino: u32,
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kn_id: u32,
    pub kn_parent: u32,
    /// Non-zero (`--containers`): events carry the task's cgroup, through
    /// the same walk (see `tools_ebpf::reported_cgroup`).
    pub report: u32,
    pub _pad: u32,
}

/// What the kernel side failed to record, counted where it happened so user
/// space can report it: nothing is dropped silently.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Drops {
    /// An in-flight table (start timestamps, ...) was full.
    pub inflight_full: u64,
    /// The keyed histogram was full.
    pub hist_full: u64,
    /// A kernel read of a struct member failed.
    pub read_failed: u64,
    /// An event could not be handed to user space (ring buffer or perf
    /// buffer full). Counted here because a perf buffer reports its own
    /// losses only when a later event gets through.
    pub output_failed: u64,
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.inflight_full + self.hist_full + self.read_failed + self.output_failed
    }

    pub fn add(&self, other: &Drops) -> Drops {
        Drops {
            inflight_full: self.inflight_full + other.inflight_full,
            hist_full: self.hist_full + other.hist_full,
            read_failed: self.read_failed + other.read_failed,
            output_failed: self.output_failed + other.output_failed,
        }
    }

    pub fn since(&self, earlier: &Drops) -> Drops {
        Drops {
            inflight_full: self.inflight_full - earlier.inflight_full,
            hist_full: self.hist_full - earlier.hist_full,
            read_failed: self.read_failed - earlier.read_failed,
            output_failed: self.output_failed - earlier.output_failed,
        }
    }
}

/// Declares types user space reads or writes as plain data (`aya::Pod`):
/// map keys and values, configurations, events. Only `repr(C)` structs of
/// integers whose padding is spelled out as fields may be listed.
#[macro_export]
macro_rules! plain_data {
    ($($ty:ty),* $(,)?) => {
        $(
            // SAFETY: a repr(C) struct of integers with no implicit padding.
            #[cfg(feature = "user")]
            unsafe impl aya::Pod for $ty {}
        )*
    };
}

/// An event the kernel side hands to user space through the event path.
/// `MIN_LEN` is the fewest bytes a valid one has: events may be sent cut
/// short (execsnoop sends only the arguments it captured); the bytes not
/// sent read as zero. Every event begins with when it happened, a `u64` of
/// CLOCK_MONOTONIC nanoseconds ([`time_first!`] checks it): the perf path
/// puts each batch of every CPU's events back in time order by it.
#[cfg(feature = "user")]
pub trait Event: aya::Pod {
    const MIN_LEN: usize = core::mem::size_of::<Self>();
}

/// Checks at compile time that event `$ty` begins with `$field`, its time
/// as a `u64` (see [`Event`]).
#[macro_export]
macro_rules! time_first {
    ($ty:ty, $field:ident) => {
        const _: () = assert!(core::mem::offset_of!($ty, $field) == 0, "an event begins with its time");
        const _: fn(&$ty) -> u64 = |event| event.$field;
    };
}

plain_data!(Drops, histogram::Histogram, histogram::HistKey, histogram::Totals);
