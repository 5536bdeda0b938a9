//! The maps every tool declares, each in the shape its build needs (see
//! the crate's documentation): a tool writes
//!
//! ```ignore
//! #[config]
//! static CONFIG: Configuration<runqlat::Config> = Configuration::new();
//!
//! #[named(map_names::DROPS)]
//! #[map]
//! static DROPS: Counters<Drops> = Counters::new();
//! ```
//!
//! and its programs read `CONFIG.get()`, call `count_drop(&DROPS, ...)`,
//! `HIST.record(...)`, `emit(ctx, &EVENTS, &DROPS, ...)` in either build.
//!
//! In the legacy build every helper's memory argument must be on the
//! stack, with a size the compiler knows (Linux 4.4's verifier accepts
//! nothing else), and a map value can only be written at constant offsets
//! (4.4 has no variable offsets into map values): histograms there are one
//! map entry per slot, as BCC's were.

#[cfg(feature = "legacy")]
use aya_ebpf::maps::{Array, HashMap as KeyedMap, PerfEventByteArray};
#[cfg(not(feature = "legacy"))]
use aya_ebpf::maps::{PerCpuArray, PerCpuHashMap as KeyedMap, RingBuf};
use aya_ebpf::{maps::HashMap, EbpfContext};
use tools_common::{
    histogram::{self, HistKey, SUM_SLOT},
    Drops,
};

/// Adds `n` to a counter that other CPUs may add to at once: one `XADD`
/// (Linux 3.18), whose result is never read (fetching it needs 5.12). In
/// assembly because the BPF target offers no atomic read-modify-write.
#[inline(always)]
fn add_shared(counter: *mut u64, n: u64) {
    // SAFETY: `counter` is a live, aligned u64 of a map value.
    unsafe { core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) counter, in(reg) n, options(nostack)) };
}

/// The tool's configuration: a read-only global in the modern build, the
/// only entry of an array map in the legacy one. Declared with
/// [`crate::config`]; user space writes it before the programs load.
#[repr(transparent)]
pub struct Configuration<T> {
    #[cfg(not(feature = "legacy"))]
    value: T,
    #[cfg(feature = "legacy")]
    map: Array<T>,
}

// SAFETY: the kernel gives each program a read-only view; nothing writes it.
unsafe impl<T> Sync for Configuration<T> {}

impl<T> Configuration<T> {
    #[cfg(not(feature = "legacy"))]
    pub const fn new() -> Self {
        // SAFETY: the configurations are plain integers; user space
        // rewrites these zeros before load.
        Configuration { value: unsafe { core::mem::zeroed() } }
    }

    #[cfg(feature = "legacy")]
    pub const fn new() -> Self {
        Configuration { map: Array::with_max_entries(1, 0) }
    }

    /// The configuration, or None where the map has no entry (never, once
    /// user space filled it: a program then does nothing).
    #[cfg(not(feature = "legacy"))]
    #[inline(always)]
    pub fn get(&'static self) -> Option<&'static T> {
        // The object holds zeros here, and the compiler would fold them
        // into the code: the address goes through a volatile read, so
        // what is read through it is whatever the loader wrote.
        let at: *const T = &raw const self.value;
        // SAFETY: reads a local; the pointer is to this static.
        Some(unsafe { &*core::ptr::read_volatile(&at) })
    }

    #[cfg(feature = "legacy")]
    #[inline(always)]
    pub fn get(&'static self) -> Option<&'static T> {
        self.map.get(0)
    }
}

/// Counters of a struct of `u64`s (what was lost, sums): a per-CPU array in
/// the modern build, one entry added to atomically in the legacy one
/// (per-CPU maps are 4.6+). User space adds every CPU's up.
#[repr(transparent)]
pub struct Counters<T> {
    #[cfg(not(feature = "legacy"))]
    map: PerCpuArray<T>,
    #[cfg(feature = "legacy")]
    map: Array<T>,
}

impl<T> Counters<T> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        #[cfg(not(feature = "legacy"))]
        let map = PerCpuArray::with_max_entries(1, 0);
        #[cfg(feature = "legacy")]
        let map = Array::with_max_entries(1, 0);
        Counters { map }
    }

    /// Adds `n` to the counter `field` picks.
    #[inline(always)]
    pub fn add(&self, field: impl FnOnce(&mut T) -> &mut u64, n: u64) {
        let Some(value) = self.map.get_ptr_mut(0) else { return };
        // SAFETY: the map's only value, live while the program runs.
        let counter: *mut u64 = field(unsafe { &mut *value });
        if crate::LEGACY {
            add_shared(counter, n);
        } else {
            // SAFETY: this CPU's own value.
            unsafe { *counter += n };
        }
    }
}

/// Counts something the kernel side could not record, in the tool's
/// `DROPS` (`tools_common::map_names::DROPS`).
#[inline(always)]
pub fn count_drop(drops: &Counters<Drops>, field: impl FnOnce(&mut Drops) -> &mut u64) {
    drops.add(field, 1);
}

/// The unkeyed histogram (`HIST`): one per-CPU [`histogram::Histogram`]
/// in the modern build; in the legacy one an array of one shared counter
/// per slot (BCC's shape: 4.4 cannot index a map value by a variable).
#[repr(transparent)]
pub struct Hist {
    #[cfg(not(feature = "legacy"))]
    map: PerCpuArray<histogram::Histogram>,
    #[cfg(feature = "legacy")]
    map: Array<u64>,
}

impl Hist {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        #[cfg(not(feature = "legacy"))]
        let map = PerCpuArray::with_max_entries(1, 0);
        #[cfg(feature = "legacy")]
        let map = Array::with_max_entries(histogram::SLOTS as u32, 0);
        Hist { map }
    }

    /// Counts one value.
    #[inline(always)]
    pub fn record(&self, value: u64) {
        let slot = histogram::slot(value);
        #[cfg(not(feature = "legacy"))]
        if let Some(counts) = self.map.get_ptr_mut(0) {
            if (slot as usize) < histogram::SLOTS {
                // SAFETY: this CPU's value, bounds checked above.
                unsafe { (*counts).slots[slot as usize] += 1 };
            }
        }
        #[cfg(feature = "legacy")]
        if let Some(count) = self.map.get_ptr_mut(slot) {
            add_shared(count, 1);
        }
    }
}

/// Histograms by key (`KEYED_HIST`: -P, -L, -D, the exporter's labels),
/// one entry per (key, slot): per-CPU in the modern build, added to
/// atomically in the legacy one. A full table is counted in `drops`.
#[repr(transparent)]
pub struct KeyedHist {
    map: KeyedMap<HistKey, u64>,
}

impl KeyedHist {
    /// User space shrinks it to one entry where no key is asked for.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        KeyedHist { map: KeyedMap::with_max_entries(16384, 0) }
    }

    /// Counts one value in the histogram of `key`.
    #[inline(always)]
    pub fn record(&self, drops: &Counters<Drops>, key: u64, value: u64) {
        self.add(drops, HistKey { key, slot: histogram::slot(value), _pad: 0 }, 1);
    }

    /// Adds `n` to the sum of `key`'s values (its [`SUM_SLOT`] entry; a key
    /// with no histogram may keep any sum there, such as bytes).
    #[inline(always)]
    pub fn add_sum(&self, drops: &Counters<Drops>, key: u64, n: u64) {
        self.add(drops, HistKey { key, slot: SUM_SLOT, _pad: 0 }, n);
    }

    /// Counts `ns` in `key`'s histogram in units of `unit_ns` and adds it
    /// to the key's sum in nanoseconds: what an event tool does instead of
    /// sending an event, for the exporter (unit 1) and `--histogram`.
    #[inline(always)]
    pub fn record_with_sum(&self, drops: &Counters<Drops>, key: u64, ns: u64, unit_ns: u32) {
        if let Some(value) = ns.checked_div(unit_ns as u64) {
            self.record(drops, key, value);
        }
        self.add_sum(drops, key, ns);
    }

    #[inline(always)]
    fn add(&self, drops: &Counters<Drops>, key: HistKey, n: u64) {
        if let Some(count) = self.map.get_ptr_mut(key) {
            return self.bump(count, n);
        }
        // BPF_NOEXIST: another CPU may have created it meanwhile (then
        // retry the lookup; in the modern build our CPU's slot is zero).
        if self.map.insert(key, n, 1).is_ok() {
            return;
        }
        match self.map.get_ptr_mut(key) {
            Some(count) => self.bump(count, n),
            None => count_drop(drops, |d| &mut d.hist_full),
        }
    }

    #[inline(always)]
    fn bump(&self, count: *mut u64, n: u64) {
        if crate::LEGACY {
            add_shared(count, n);
        } else {
            // SAFETY: this CPU's value of a live entry.
            unsafe { *count += n };
        }
    }
}

/// The event path (`EVENTS`): the BPF ring buffer (user space sets its
/// size) in the modern build, a perf event array in the legacy one.
#[repr(transparent)]
pub struct Events {
    #[cfg(not(feature = "legacy"))]
    map: RingBuf,
    #[cfg(feature = "legacy")]
    map: PerfEventByteArray,
}

impl Events {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        #[cfg(not(feature = "legacy"))]
        let map = RingBuf::with_byte_size(1 << 22, 0);
        #[cfg(feature = "legacy")]
        let map = PerfEventByteArray::new(0);
        Events { map }
    }

    /// Hands `data` over; false if there was no room.
    ///
    /// On the ring buffer the reader is not woken per event (a wakeup
    /// costs ~16 µs here, mostly the IPI behind irq_work, ten times the
    /// program's own work): it drains on its own short timer, and is woken
    /// only once an eighth of the ring is waiting, long before it can fill.
    #[cfg(not(feature = "legacy"))]
    #[inline(always)]
    pub fn output<C: EbpfContext>(&self, _ctx: &C, data: &[u8]) -> bool {
        const BPF_RB_NO_WAKEUP: u64 = 1;
        const BPF_RB_FORCE_WAKEUP: u64 = 2;
        const BPF_RB_AVAIL_DATA: u64 = 0;
        const BPF_RB_RING_SIZE: u64 = 1;
        let waiting = self.map.query(BPF_RB_AVAIL_DATA);
        let size = self.map.query(BPF_RB_RING_SIZE);
        let wakeup = if waiting >= size / 8 { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
        self.map.output::<[u8]>(data, wakeup).is_ok()
    }

    /// Hands `data` over on this CPU's perf buffer; false if it was full.
    /// For 4.4, `data` is on the stack and its length a constant.
    #[cfg(feature = "legacy")]
    #[inline(always)]
    pub fn output<C: EbpfContext>(&self, ctx: &C, data: &[u8]) -> bool {
        const BPF_F_CURRENT_CPU: u64 = 0xffff_ffff;
        // The raw helper: aya-ebpf's perf output discards the result.
        // SAFETY: the map is a perf event array; data is readable for its length.
        let ret = unsafe {
            aya_ebpf::helpers::bpf_perf_event_output(
                ctx.as_ptr(),
                &self.map as *const PerfEventByteArray as *mut core::ffi::c_void,
                BPF_F_CURRENT_CPU,
                data.as_ptr() as *mut core::ffi::c_void,
                data.len() as u64,
            )
        };
        ret >= 0
    }
}

/// Hands an event to user space, counting a failure in `drops`.
#[inline(always)]
pub fn emit<C: EbpfContext>(ctx: &C, events: &Events, drops: &Counters<Drops>, data: &[u8]) {
    if !events.output(ctx, data) {
        count_drop(drops, |d| &mut d.output_failed);
    }
}

/// Hands a whole event (a value on the stack, its size a constant: what
/// 4.4 accepts) to user space.
#[inline(always)]
pub fn emit_value<C: EbpfContext, T>(ctx: &C, events: &Events, drops: &Counters<Drops>, event: &T) {
    // SAFETY: T is plain data, readable for its size.
    let bytes = unsafe { core::slice::from_raw_parts(event as *const T as *const u8, size_of::<T>()) };
    emit(ctx, events, drops, bytes);
}

/// Work in flight, by key, from its start to its end (the entry/exit
/// pattern of every latency tool): what it started with (a timestamp, or a
/// struct beginning with one) stays here until the end takes it. A full
/// table is counted as lost.
#[repr(transparent)]
pub struct Starts<K, V> {
    map: HashMap<K, V>,
}

impl<K, V: Copy> Starts<K, V> {
    pub const fn with_max_entries(entries: u32) -> Self {
        Starts { map: HashMap::with_max_entries(entries, 0) }
    }

    /// Starts `key` with `value`, replacing what it had.
    #[inline(always)]
    pub fn begin(&self, drops: &Counters<Drops>, key: &K, value: &V) {
        if self.map.insert(key, value, 0).is_err() {
            count_drop(drops, |d| &mut d.inflight_full);
        }
    }

    /// Starts `key` unless it has started already (the first start wins).
    #[inline(always)]
    pub fn begin_once(&self, drops: &Counters<Drops>, key: &K, value: &V) {
        const BPF_NOEXIST: u64 = 1;
        const EEXIST: i32 = 17;
        if let Err(err) = self.map.insert(key, value, BPF_NOEXIST) {
            if err != -EEXIST {
                count_drop(drops, |d| &mut d.inflight_full);
            }
        }
    }

    /// Starts `key` with `value`, rewriting its entry in place where it has
    /// one: no element is allocated, no bucket locked (runqlat's hot path).
    #[inline(always)]
    pub fn begin_in_place(&self, drops: &Counters<Drops>, key: &K, value: V) {
        match self.map.get_ptr_mut(key) {
            // SAFETY: the value of a live entry; a racing writer stores a start too.
            Some(entry) => unsafe { *entry = value },
            None => self.begin(drops, key, &value),
        }
    }

    /// What `key` started with, left in place to be changed (nested calls
    /// counted in it): None if it never started here.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn in_flight(&self, key: &K) -> Option<&mut V> {
        // SAFETY: the value of a live entry; each key is one thread's own.
        Some(unsafe { &mut *self.map.get_ptr_mut(key)? })
    }

    /// What `key` started with, taken out: None if it never started here.
    #[inline(always)]
    pub fn end(&self, key: &K) -> Option<V> {
        // SAFETY: copied out at once, before the entry is removed.
        let started = unsafe { *self.map.get_ptr(key)? };
        let _ = self.map.remove(key);
        Some(started)
    }

    /// What `key` started with, its entry kept and rewritten to `done` (see
    /// [`Starts::begin_in_place`]); None if it never started or is done.
    #[inline(always)]
    pub fn end_in_place(&self, key: &K, done: V, is_done: impl FnOnce(&V) -> bool) -> Option<V> {
        let entry = self.map.get_ptr_mut(key)?;
        // SAFETY: the value of a live entry.
        let started = unsafe { *entry };
        if is_done(&started) {
            return None;
        }
        unsafe { *entry = done };
        Some(started)
    }

    /// Forgets `key` (a start that will never end).
    #[inline(always)]
    pub fn forget(&self, key: &K) {
        let _ = self.map.remove(key);
    }
}

/// Room to build something too large for the 512-byte stack, one per CPU:
/// a per-CPU array in the modern build; in the legacy one an array with an
/// entry per possible CPU, indexed by the CPU (the loader sizes an array
/// declared with no entries so). Programs run to completion on one CPU,
/// so a CPU's entry is the running program's own.
#[repr(transparent)]
pub struct Scratch<T> {
    #[cfg(not(feature = "legacy"))]
    map: PerCpuArray<T>,
    #[cfg(feature = "legacy")]
    map: Array<T>,
}

impl<T> Scratch<T> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        #[cfg(not(feature = "legacy"))]
        let map = PerCpuArray::with_max_entries(1, 0);
        #[cfg(feature = "legacy")]
        let map = Array::with_max_entries(0, 0);
        Scratch { map }
    }

    /// This CPU's room.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn get(&self) -> Option<&mut T> {
        #[cfg(not(feature = "legacy"))]
        let room = self.map.get_ptr_mut(0)?;
        #[cfg(feature = "legacy")]
        // SAFETY: a plain helper with no arguments.
        let room = self.map.get_ptr_mut(unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() })?;
        // SAFETY: this CPU's entry, used by one program at a time.
        Some(unsafe { &mut *room })
    }
}

/// Declares a histogram tool's maps by the names user space reads them by
/// (`tools_common::map_names`): `DROPS` ([`Counters`] of what was lost),
/// `HIST` (the unkeyed [`Hist`]), `KEYED_HIST` (the [`KeyedHist`] of -P,
/// -L, -D, ... and the exporter's labels; user space shrinks it to one
/// entry when no key is asked for) and `TOTALS` ([`Counters`] of sums). A
/// macro only because every tool needs statics of its own: a map declared
/// in this library would be created in every tool's object.
#[macro_export]
macro_rules! histogram_maps {
    () => {
        #[$crate::named(tools_common::map_names::DROPS)]
        #[aya_ebpf::macros::map]
        static DROPS: $crate::maps::Counters<tools_common::Drops> = $crate::maps::Counters::new();

        #[$crate::named(tools_common::map_names::HIST)]
        #[aya_ebpf::macros::map]
        static HIST: $crate::maps::Hist = $crate::maps::Hist::new();

        #[$crate::named(tools_common::map_names::KEYED_HIST)]
        #[aya_ebpf::macros::map]
        static KEYED_HIST: $crate::maps::KeyedHist = $crate::maps::KeyedHist::new();

        #[$crate::named(tools_common::map_names::TOTALS)]
        #[aya_ebpf::macros::map]
        static TOTALS: $crate::maps::Counters<tools_common::histogram::Totals> = $crate::maps::Counters::new();
    };
}

/// Declares an event tool's maps by the names user space reads them by
/// (see [`histogram_maps!`]): `DROPS`, `EVENTS` (the [`Events`] path) and
/// `KEYED_HIST`, where the exporter has the tool count in the kernel
/// instead of sending events (one entry otherwise).
#[macro_export]
macro_rules! event_maps {
    () => {
        #[$crate::named(tools_common::map_names::DROPS)]
        #[aya_ebpf::macros::map]
        static DROPS: $crate::maps::Counters<tools_common::Drops> = $crate::maps::Counters::new();

        #[$crate::named(tools_common::map_names::EVENTS)]
        #[aya_ebpf::macros::map]
        static EVENTS: $crate::maps::Events = $crate::maps::Events::new();

        #[$crate::named(tools_common::map_names::KEYED_HIST)]
        #[aya_ebpf::macros::map]
        static KEYED_HIST: $crate::maps::KeyedHist = $crate::maps::KeyedHist::new();
    };
}

/// Hands over the first `len` bytes of `event`, cut to its size: an event
/// sent cut short, its last field (a name) holding `len` bytes' worth.
#[inline(always)]
pub fn emit_prefix<C: EbpfContext, T>(ctx: &C, events: &Events, drops: &Counters<Drops>, event: &T, len: usize) {
    // SAFETY: T is plain data, readable for its size; `len` is cut to it.
    let bytes = unsafe { core::slice::from_raw_parts(event as *const T as *const u8, len.min(size_of::<T>())) };
    emit(ctx, events, drops, bytes);
}
