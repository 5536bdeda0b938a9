//! Kernel-side helpers shared by every tool: struct reads at offsets
//! resolved in user space, drop accounting, event output, histogram
//! recording and read-only configuration.
//!
//! Helpers are plain functions that take the maps they use: each tool
//! declares its own maps (so an object holds only the maps its programs
//! need), and once inlined the map references are constants, as the
//! verifier wants. Only what the language cannot express as a function is a
//! macro: the configuration (a global or a map, chosen at build time) and
//! the generation of a program's ring-buffer and perf-array twins.
#![no_std]

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    maps::{PerCpuArray, PerCpuHashMap, PerfEventByteArray, RingBuf},
    EbpfContext,
};
use tools_common::{
    histogram::{self, HistKey, Histogram, Totals},
    offsets::{FileOffsets, TaskOffsets},
    CgroupFilter, Drops,
};

/// Reads a `T` at `offset` bytes into a kernel struct. Offsets come from the
/// running kernel's BTF via the tool's configuration, never from literals.
#[inline(always)]
pub fn read_field<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copes with any address.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T).ok() }
}

/// The `struct file` behind descriptor `fd` of `task`: `task->files->fdt`,
/// bounds-checked against the table's `max_fds`, then `fd[fd]`.
#[inline(always)]
pub fn file_of_fd(task: *const u8, fd: i64, t: &TaskOffsets, f: &FileOffsets) -> Option<*const u8> {
    let files: *const u8 = read_field(task, t.files)?;
    let fdt: *const u8 = read_field(files, f.files_fdt)?;
    let max_fds: u32 = read_field(fdt, f.fdt_max_fds)?;
    if fd < 0 || fd >= max_fds as i64 {
        return None;
    }
    let fds: *const u8 = read_field(fdt, f.fdt_fd)?;
    let file: *const u8 = read_field(fds, (fd as u32).wrapping_mul(8))?;
    (!file.is_null()).then_some(file)
}

/// Counts something the kernel side could not record, in the tool's
/// per-CPU `DROPS` (`tools_common::map_names::DROPS`).
#[inline(always)]
pub fn count_drop(drops: &PerCpuArray<Drops>, field: impl FnOnce(&mut Drops) -> &mut u64) {
    if let Some(counters) = drops.get_ptr_mut(0) {
        // SAFETY: this CPU's value.
        unsafe { *field(&mut *counters) += 1 };
    }
}

/// Hands an event to user space through the ring buffer (`RING`, 5.8+) or
/// the perf event array, and counts a failure in `drops`. Each emitting
/// program is built twice (see [`event_programs!`]) so each build references
/// only the map its kernel has.
///
/// On the ring buffer the reader is not woken per event (a wakeup costs
/// ~16 µs here, mostly the IPI behind irq_work, ten times the program's own
/// work): it drains on its own short timer, and is woken only once an eighth
/// of the ring is waiting, long before the ring can fill.
#[inline(always)]
pub fn emit<const RING: bool, C: EbpfContext>(
    ctx: &C,
    ring: &RingBuf,
    perf: &PerfEventByteArray,
    drops: &PerCpuArray<Drops>,
    data: &[u8],
) {
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    const BPF_RB_AVAIL_DATA: u64 = 0;
    const BPF_RB_RING_SIZE: u64 = 1;
    let failed = if RING {
        let waiting = ring.query(BPF_RB_AVAIL_DATA);
        let size = ring.query(BPF_RB_RING_SIZE);
        let wakeup = if waiting >= size / 8 { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
        ring.output::<[u8]>(data, wakeup).is_err()
    } else {
        // The raw helper: aya-ebpf's perf output discards the result.
        // SAFETY: the map is a perf event array; data is readable for its length.
        let ret = unsafe {
            aya_ebpf::helpers::bpf_perf_event_output(
                ctx.as_ptr(),
                perf as *const PerfEventByteArray as *mut core::ffi::c_void,
                0xffff_ffff, // BPF_F_CURRENT_CPU
                data.as_ptr() as *mut core::ffi::c_void,
                data.len() as u64,
            )
        };
        ret < 0
    };
    if failed {
        count_drop(drops, |d| &mut d.output_failed);
    }
}

/// Counts one value in the unkeyed histogram (`HIST`).
#[inline(always)]
pub fn record(hist: &PerCpuArray<Histogram>, value: u64) {
    let slot = histogram::slot(value) as usize;
    if let Some(counts) = hist.get_ptr_mut(0) {
        if slot < histogram::SLOTS {
            // SAFETY: this CPU's value, bounds checked above.
            unsafe { (*counts).slots[slot] += 1 };
        }
    }
}

/// Counts one value in the histogram of `key` (`KEYED_HIST`); a full table
/// is counted in `drops`.
#[inline(always)]
pub fn record_keyed(keyed: &PerCpuHashMap<HistKey, u64>, drops: &PerCpuArray<Drops>, key: u64, value: u64) {
    add_keyed(keyed, drops, HistKey { key, slot: histogram::slot(value), _pad: 0 }, 1);
}

/// Adds `ns` to the sum of `key`'s values (its `SUM_SLOT` entry; a key
/// with no histogram may keep any sum there, such as bytes).
#[inline(always)]
pub fn add_keyed_sum(keyed: &PerCpuHashMap<HistKey, u64>, drops: &PerCpuArray<Drops>, key: u64, ns: u64) {
    add_keyed(keyed, drops, HistKey { key, slot: histogram::SUM_SLOT, _pad: 0 }, ns);
}

/// Counts `ns` in `key`'s histogram and adds it to the key's sum: what an
/// event tool does instead of sending an event, for the exporter.
#[inline(always)]
pub fn record_keyed_with_sum(keyed: &PerCpuHashMap<HistKey, u64>, drops: &PerCpuArray<Drops>, key: u64, ns: u64) {
    record_keyed(keyed, drops, key, ns);
    add_keyed_sum(keyed, drops, key, ns);
}

#[inline(always)]
fn add_keyed(keyed: &PerCpuHashMap<HistKey, u64>, drops: &PerCpuArray<Drops>, key: HistKey, n: u64) {
    match keyed.get_ptr_mut(&key) {
        // SAFETY: this CPU's value of a live entry.
        Some(count) => unsafe { *count += n },
        None => {
            // BPF_NOEXIST: another CPU may have created it meanwhile (its
            // per-CPU slot for us is then zero, so retry the lookup).
            if keyed.insert(&key, &n, 1).is_err() {
                match keyed.get_ptr_mut(&key) {
                    Some(count) => unsafe { *count += n },
                    None => count_drop(drops, |d| &mut d.hist_full),
                }
            }
        }
    }
}

/// Adds one measurement to the sum and count (`TOTALS`, BCC's `-e`).
#[inline(always)]
pub fn add_total(totals: &PerCpuArray<Totals>, ns: u64) {
    if let Some(t) = totals.get_ptr_mut(0) {
        // SAFETY: this CPU's value.
        unsafe {
            (*t).sum_ns += ns;
            (*t).count += 1;
        }
    }
}

/// Whether `task` is in the `-c` cgroup or below it: its cgroup v2
/// directory's kernfs node or one of its ancestors (up to 16 levels up)
/// has the target's inode number. Unrolled by hand: kernels before 5.3
/// reject loops.
#[inline(always)]
#[allow(unused_assignments)] // the last level's step up is never read
pub fn task_in_cgroup(task: *const u8, filter: &CgroupFilter) -> bool {
    if filter.ino == 0 {
        return true;
    }
    let mut kn = task_cgroup_node(task, filter).unwrap_or(core::ptr::null());
    macro_rules! level {
        () => {
            if kn.is_null() {
                return false;
            }
            if read_field::<u32>(kn, filter.kn_id) == Some(filter.ino) {
                return true;
            }
            kn = read_field::<*const u8>(kn, filter.kn_parent).unwrap_or(core::ptr::null());
        };
    }
    macro_rules! four_levels {
        () => {
            level!();
            level!();
            level!();
            level!();
        };
    }
    four_levels!();
    four_levels!();
    four_levels!();
    four_levels!();
    false
}

/// The kernfs node of `task`'s cgroup v2 directory (through `walk`'s
/// offsets; its `ino` is not read).
#[inline(always)]
fn task_cgroup_node(task: *const u8, walk: &CgroupFilter) -> Option<*const u8> {
    let css_set = read_field::<*const u8>(task, walk.task_cgroups)?;
    let cgroup = read_field::<*const u8>(css_set, walk.css_set_dfl_cgrp)?;
    read_field::<*const u8>(cgroup, walk.cgroup_kn).filter(|kn| !kn.is_null())
}

/// The inode number of `task`'s cgroup v2 directory (as stat(2) gives it
/// in /sys/fs/cgroup), through `walk`'s offsets.
#[inline(always)]
pub fn task_cgroup_ino(task: *const u8, walk: &CgroupFilter) -> Option<u32> {
    read_field::<u32>(task_cgroup_node(task, walk)?, walk.kn_id)
}

/// Whether a program's function is named `name` (its shared constant):
/// checked at compile time by [`check_name!`].
pub const fn is_named(ident: &str, name: &str) -> bool {
    let (a, b) = (ident.as_bytes(), name.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether `perf` is `ring` + `_perf`, the loader's naming of twins.
pub const fn is_perf_twin(ring: &str, perf: &str) -> bool {
    let (a, b, suffix) = (ring.as_bytes(), perf.as_bytes(), b"_perf");
    if b.len() != a.len() + suffix.len() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let want = if i < a.len() { a[i] } else { suffix[i - a.len()] };
        if b[i] != want {
            return false;
        }
        i += 1;
    }
    true
}

/// Checks at compile time that a program function (or a map) has the name
/// user space knows it by (a constant of `tools_common::<tool>::programs`,
/// or of `tools_common::map_names`).
#[macro_export]
macro_rules! check_name {
    ($function:ident = $name:expr) => {
        const _: () = assert!($crate::is_named(stringify!($function), $name), "program name differs from its constant");
    };
}

/// Defines a program that emits events, twice from one body: `$ring` for
/// the ring buffer and `$perf` (`$ring` + `_perf`) for the perf event array,
/// calling `$body::<true>(&ctx)` and `$body::<false>(&ctx)`. `$kind(...)` is
/// the aya-ebpf attribute (`tracepoint(category = .., name = ..)`, `kprobe`,
/// `uretprobe`, ...); `$name` is the shared name constant.
#[macro_export]
macro_rules! event_programs {
    ($(#[$meta:meta])* $kind:ident($($arg:tt)*) $ring:ident / $perf:ident($ctx:ty) = $name:expr => $body:ident) => {
        $(#[$meta])*
        #[aya_ebpf::macros::$kind($($arg)*)]
        pub fn $ring(ctx: $ctx) -> u32 {
            $body::<true>(&ctx);
            0
        }

        $(#[$meta])*
        #[aya_ebpf::macros::$kind($($arg)*)]
        pub fn $perf(ctx: $ctx) -> u32 {
            $body::<false>(&ctx);
            0
        }

        $crate::check_name!($ring = $name);
        const _: () = assert!($crate::is_perf_twin(stringify!($ring), stringify!($perf)), "perf twin misnamed");
    };
}

/// Declares a histogram tool's maps, named by the tool (and checked
/// against `tools_common::map_names`, where user space finds them): the
/// drop counters, the unkeyed histogram, and the keyed one (-P, -L, -D, ...),
/// which user space shrinks to one entry when no key is asked for. A macro
/// only because every tool needs its own statics: a map declared in this
/// library would be created by every tool, used or not.
#[macro_export]
macro_rules! histogram_maps {
    ($drops:ident, $hist:ident, $keyed:ident) => {
        #[aya_ebpf::macros::map]
        static $drops: aya_ebpf::maps::PerCpuArray<tools_common::Drops> =
            aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

        #[aya_ebpf::macros::map]
        static $hist: aya_ebpf::maps::PerCpuArray<tools_common::histogram::Histogram> =
            aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

        $crate::keyed_histogram_map!($keyed);

        $crate::check_name!($drops = tools_common::map_names::DROPS);
        $crate::check_name!($hist = tools_common::map_names::HIST);
    };
}

/// Declares the keyed histogram table (see [`histogram_maps!`]); event
/// tools declare it too, for the exporter, which has them count in the
/// kernel instead of sending events (their config's `histograms`).
#[macro_export]
macro_rules! keyed_histogram_map {
    ($keyed:ident) => {
        #[aya_ebpf::macros::map]
        static $keyed: aya_ebpf::maps::PerCpuHashMap<tools_common::histogram::HistKey, u64> =
            aya_ebpf::maps::PerCpuHashMap::with_max_entries(16384, 0);

        $crate::check_name!($keyed = tools_common::map_names::KEYED_HIST);
    };
}

/// Declares an event tool's maps, named by the tool (and checked against
/// `tools_common::map_names`): the drop counters, the ring buffer (user
/// space sets its size) and the perf event array; each build of an
/// emitting program references one of the two (see [`emit`]).
#[macro_export]
macro_rules! event_maps {
    ($drops:ident, $ring:ident, $perf:ident) => {
        #[aya_ebpf::macros::map]
        static $drops: aya_ebpf::maps::PerCpuArray<tools_common::Drops> =
            aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

        #[aya_ebpf::macros::map]
        static $ring: aya_ebpf::maps::RingBuf = aya_ebpf::maps::RingBuf::with_byte_size(1 << 22, 0);

        #[aya_ebpf::macros::map]
        static $perf: aya_ebpf::maps::PerfEventByteArray = aya_ebpf::maps::PerfEventByteArray::new(0);

        $crate::check_name!($drops = tools_common::map_names::DROPS);
        $crate::check_name!($ring = tools_common::map_names::EVENTS);
        $crate::check_name!($perf = tools_common::map_names::EVENTS_PERF);
    };
}

/// Declares the tool's configuration: a read-only global `CONFIG` (5.2+),
/// or, built with the `config-map` feature for older kernels, a one-entry
/// array map `CONFIG` that user space fills before attaching.
#[cfg(not(feature = "config-map"))]
#[macro_export]
macro_rules! declare_config {
    ($ty:ty) => {
        #[unsafe(no_mangle)]
        static CONFIG: $ty = unsafe { core::mem::zeroed() };
    };
}

#[cfg(feature = "config-map")]
#[macro_export]
macro_rules! declare_config {
    ($ty:ty) => {
        #[aya_ebpf::macros::map]
        static CONFIG: aya_ebpf::maps::Array<$ty> = aya_ebpf::maps::Array::with_max_entries(1, 0);
    };
}

/// Reads one field of the configuration (`config!(task.tgid)` reaches into
/// a shared offsets struct). For the global, the volatile read keeps the
/// compiler from folding the all-zero initial value into the code (user
/// space rewrites it before load).
#[cfg(not(feature = "config-map"))]
#[macro_export]
macro_rules! config {
    ($($field:ident).+) => {
        unsafe { core::ptr::read_volatile(&raw const CONFIG.$($field).+) }
    };
}

/// Reads one field of the configuration map (the verifier inlines the
/// lookup of an array map: a few instructions, no helper call).
#[cfg(feature = "config-map")]
#[macro_export]
macro_rules! config {
    ($($field:ident).+) => {
        match CONFIG.get(0) {
            Some(config) => config.$($field).+,
            None => return Default::default(),
        }
    };
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
