//! Types shared by the eBPF programs and user space. `no_std`, `repr(C)`,
//! plain old data only: both sides read the same bytes.
#![no_std]

pub mod histogram;
pub mod runqlat;

/// Names of the maps every histogram tool declares; user space finds them by these names.
pub mod map_names {
    /// Per-CPU array, one [`crate::histogram::Histogram`] at index 0: the unkeyed histogram.
    pub const HIST: &str = "HIST";
    /// Per-CPU hash of [`crate::histogram::HistKey`] → count: histograms with a key (-P, -L, ...).
    pub const KEYED_HIST: &str = "KEYED_HIST";
    /// Per-CPU array of [`crate::Drops`] at index 0: what the kernel side could not record.
    pub const DROPS: &str = "DROPS";
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
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.inflight_full + self.hist_full + self.read_failed
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) structs of integers with no padding.
    unsafe impl aya::Pod for super::Drops {}
    unsafe impl aya::Pod for super::histogram::Histogram {}
    unsafe impl aya::Pod for super::histogram::HistKey {}
    unsafe impl aya::Pod for super::runqlat::Config {}
}
