//! The in-kernel histogram: log-linear slots fine enough for percentiles
//! within 1 % and nested in powers of two, so BCC's log2 table is derived
//! from it exactly in user space. One map update per event, nothing per
//! event in user space.

/// Sub-slots per power of two: 2^7 = 128, so a slot's width is at most
/// 1/128 (0.78 %) of its lower bound.
pub const SUB_BITS: u32 = 7;
const SUB_COUNT: u64 = 1 << SUB_BITS;

/// Slots in a histogram: values 0..128 exactly, then 128 sub-slots for each
/// power of two up to 2^38 (about 76 hours in microseconds). Larger values
/// are clamped into the last slot. 4096 × 8 bytes is exactly the 32 KiB
/// limit on a per-CPU map value.
pub const SLOTS: usize = 4096;

/// Slot of a value.
#[inline(always)]
pub fn slot(value: u64) -> u32 {
    if value < SUB_COUNT {
        return value as u32;
    }
    let msb = 63 - value.leading_zeros() as u64; // >= SUB_BITS
    let sub = (value >> (msb - SUB_BITS as u64)) & (SUB_COUNT - 1);
    let slot = (msb - SUB_BITS as u64 + 1) * SUB_COUNT + sub;
    if slot >= SLOTS as u64 {
        (SLOTS - 1) as u32
    } else {
        slot as u32
    }
}

/// The slot of a keyed histogram entry that holds the key's sum of values,
/// in nanoseconds, instead of a count: never a real slot. Kept where a
/// tool is asked for sums (the exporter's `_sum`).
pub const SUM_SLOT: u32 = SLOTS as u32;

/// The key of the samples of every process beyond a per-process series
/// cap: counted together, so the keyed histograms still add up to all.
pub const OTHER_KEY: u64 = u64::MAX;

/// Inclusive bounds of the values that fall in `slot`.
pub fn slot_bounds(slot: u32) -> (u64, u64) {
    let slot = slot as u64;
    if slot < SUB_COUNT {
        return (slot, slot);
    }
    let shift = slot / SUB_COUNT - 1; // msb - SUB_BITS
    let low = (SUB_COUNT + slot % SUB_COUNT) << shift;
    (low, low + (1u64 << shift) - 1)
}

/// One histogram: a count per slot.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Histogram {
    pub slots: [u64; SLOTS],
}

/// Key of a keyed histogram entry: which histogram (pid, tid, pidns, disk
/// and flags, ...) and which slot. `_pad` is always zero: hash keys are bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HistKey {
    pub key: u64,
    pub slot: u32,
    pub _pad: u32,
}

/// Sum and count of every value recorded (BCC's `-e` line), in nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub sum_ns: u64,
    pub count: u64,
}
