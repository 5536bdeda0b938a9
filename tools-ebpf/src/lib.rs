//! Kernel-side helpers shared by every tool: struct reads at offsets
//! resolved in user space, histogram recording with drop accounting, and
//! read-only configuration.
#![no_std]

use aya_ebpf::helpers::bpf_probe_read_kernel;
use tools_common::CgroupFilter;

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

/// Reads one field of the configuration. For the global, the volatile read
/// keeps the compiler from folding the all-zero initial value into the
/// code (user space rewrites it before load).
#[cfg(not(feature = "config-map"))]
#[macro_export]
macro_rules! config {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const CONFIG.$field) }
    };
}

/// Reads one field of the configuration map (the verifier inlines the
/// lookup of an array map: a few instructions, no helper call).
#[cfg(feature = "config-map")]
#[macro_export]
macro_rules! config {
    ($field:ident) => {
        match CONFIG.get(0) {
            Some(config) => config.$field,
            None => return Default::default(),
        }
    };
}

/// Declares `DROPS` (named as in `tools_common::map_names`) and
/// `count_drop`: what the kernel side could not record, per CPU.
#[macro_export]
macro_rules! drops_map {
    () => {
        #[aya_ebpf::macros::map]
        static DROPS: aya_ebpf::maps::PerCpuArray<tools_common::Drops> =
            aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

        /// Counts something the kernel side could not record.
        #[inline(always)]
        fn count_drop(field: impl FnOnce(&mut tools_common::Drops) -> &mut u64) {
            if let Some(drops) = DROPS.get_ptr_mut(0) {
                // SAFETY: per-CPU value.
                unsafe { *field(&mut *drops) += 1 };
            }
        }
    };
}

/// Declares the maps of an event tool, `EVENTS` (ring buffer; user space
/// sets its size) and `EVENTS_PERF` (perf event array), and `emit`, which
/// hands an event over through one of them and counts a failure in
/// `DROPS`. Programs come in two builds, `emit::<true, _>` (ring buffer) and
/// `emit::<false, _>`, so each references only the map its kernel has.
#[macro_export]
macro_rules! event_maps {
    () => {
        #[aya_ebpf::macros::map]
        static EVENTS: aya_ebpf::maps::RingBuf = aya_ebpf::maps::RingBuf::with_byte_size(1 << 22, 0);

        #[aya_ebpf::macros::map]
        static EVENTS_PERF: aya_ebpf::maps::PerfEventByteArray = aya_ebpf::maps::PerfEventByteArray::new(0);

        /// Hands an event to user space. On the ring buffer the reader is
        /// not woken per event (a wakeup costs ~16 µs here, mostly the IPI
        /// behind irq_work, 10 times the program's own work): it drains on
        /// its own short timer, and is woken only once an eighth of the
        /// ring is waiting, long before the ring can fill.
        #[inline(always)]
        fn emit<const RING: bool, C: aya_ebpf::EbpfContext>(ctx: &C, data: &[u8]) {
            const BPF_RB_NO_WAKEUP: u64 = 1;
            const BPF_RB_FORCE_WAKEUP: u64 = 2;
            const BPF_RB_AVAIL_DATA: u64 = 0;
            const BPF_RB_RING_SIZE: u64 = 1;
            // The raw helpers: aya-ebpf's perf output discards the result.
            let ret = unsafe {
                if RING {
                    let ring = &raw const EVENTS as *mut core::ffi::c_void;
                    let waiting = aya_ebpf::helpers::generated::bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA);
                    let size = aya_ebpf::helpers::generated::bpf_ringbuf_query(ring, BPF_RB_RING_SIZE);
                    let wakeup = if waiting >= size / 8 { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
                    aya_ebpf::helpers::bpf_ringbuf_output(
                        ring,
                        data.as_ptr() as *mut core::ffi::c_void,
                        data.len() as u64,
                        wakeup,
                    )
                } else {
                    aya_ebpf::helpers::bpf_perf_event_output(
                        ctx.as_ptr(),
                        &raw const EVENTS_PERF as *mut core::ffi::c_void,
                        0xffff_ffff, // BPF_F_CURRENT_CPU
                        data.as_ptr() as *mut core::ffi::c_void,
                        data.len() as u64,
                    )
                }
            };
            if ret < 0 {
                count_drop(|d| &mut d.output_failed);
            }
        }
    };
}

/// Declares the maps of a histogram tool (`HIST`, `KEYED_HIST`, named as in
/// `tools_common::map_names`) and the functions that record into them;
/// needs `drops_map!()`.
#[macro_export]
macro_rules! histogram_maps {
    (keyed_entries = $keyed_entries:expr) => {
        #[aya_ebpf::macros::map]
        static HIST: aya_ebpf::maps::PerCpuArray<tools_common::histogram::Histogram> =
            aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

        #[aya_ebpf::macros::map]
        static KEYED_HIST: aya_ebpf::maps::PerCpuHashMap<tools_common::histogram::HistKey, u64> =
            aya_ebpf::maps::PerCpuHashMap::with_max_entries($keyed_entries, 0);

        /// Counts one value in the unkeyed histogram.
        #[inline(always)]
        fn record(value: u64) {
            let slot = tools_common::histogram::slot(value) as usize;
            if let Some(hist) = HIST.get_ptr_mut(0) {
                if slot < tools_common::histogram::SLOTS {
                    // SAFETY: per-CPU value, bounds checked above.
                    unsafe { (*hist).slots[slot] += 1 };
                }
            }
        }

        /// Counts one value in the histogram of `key`.
        #[inline(always)]
        fn record_keyed(key: u64, value: u64) {
            let key = tools_common::histogram::HistKey { key, slot: tools_common::histogram::slot(value), _pad: 0 };
            match KEYED_HIST.get_ptr_mut(&key) {
                // SAFETY: per-CPU value of a live entry.
                Some(count) => unsafe { *count += 1 },
                None => {
                    // BPF_NOEXIST: another CPU may have created it meanwhile (its
                    // per-CPU slot for us is then zero, so retry the lookup).
                    if KEYED_HIST.insert(&key, &1, 1).is_err() {
                        match KEYED_HIST.get_ptr_mut(&key) {
                            Some(count) => unsafe { *count += 1 },
                            None => count_drop(|d| &mut d.hist_full),
                        }
                    }
                }
            }
        }
    };
}

/// Declares `TOTALS` (named as in `tools_common::map_names`) and `add_total`,
/// for tools that print the sum and count of what they measured.
#[macro_export]
macro_rules! totals_map {
    () => {
        #[aya_ebpf::macros::map]
        static TOTALS: aya_ebpf::maps::PerCpuArray<tools_common::histogram::Totals> =
            aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

        #[inline(always)]
        fn add_total(ns: u64) {
            if let Some(totals) = TOTALS.get_ptr_mut(0) {
                // SAFETY: per-CPU value.
                unsafe {
                    (*totals).sum_ns += ns;
                    (*totals).count += 1;
                }
            }
        }
    };
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
    let Some(css_set) = read_field::<*const u8>(task, filter.task_cgroups) else { return false };
    let Some(cgroup) = read_field::<*const u8>(css_set, filter.css_set_dfl_cgrp) else { return false };
    let mut kn = read_field::<*const u8>(cgroup, filter.cgroup_kn).unwrap_or(core::ptr::null());
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
