//! biolatency: block I/O latency, from issue to the device (or, with -Q,
//! from insertion into the queue) to completion.
//!
//! Rungs, best first: raw tracepoints with the request pointer (4.17+; the
//! pointer is the 2nd argument before 5.11, which dropped the queue), the
//! `block_io_start`/`block_io_done` tracepoints (6.5+) and the plain
//! `block_rq_*` tracepoints (4.7+), both matched by device and sector, kprobes.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod bpf {
    use aya_ebpf::{
        helpers::{bpf_get_current_task, bpf_ktime_get_ns},
        macros::{kprobe, map, raw_tracepoint, tracepoint},
        maps::{HashMap, PerCpuArray},
        programs::{ProbeContext, RawTracePointContext, TracePointContext},
    };
    use tools_common::{
        biolatency::{key_mode, programs, Config},
        histogram::Totals,
    };
    use tools_ebpf::{
        add_keyed_sum, add_total, check_name, config, count_drop, declare_config, histogram_maps, read_field, record,
        record_keyed,
    };

    declare_config!(Config);

    histogram_maps!(DROPS, HIST, KEYED_HIST);

    /// Sum and count for -e.
    #[map]
    static TOTALS: PerCpuArray<Totals> = PerCpuArray::with_max_entries(1, 0);

    /// Request (pointer) → when it started. Entries live from start to
    /// completion; a full table is counted, not ignored.
    #[map]
    static START: HashMap<u64, u64> = HashMap::with_max_entries(10240, 0);

    /// Plain-tracepoint rung: (dev, sector) → when it started.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct DevSector {
        dev: u64,
        sector: u64,
    }

    #[map]
    static START_BY_SECTOR: HashMap<DevSector, u64> = HashMap::with_max_entries(10240, 0);

    type Ptr = *const u8;
    const BPF_NOEXIST: u64 = 1;

    #[inline(always)]
    fn rq_dev(rq: Ptr) -> u32 {
        let disk: Ptr = if config!(rq.has_rq_disk) != 0 {
            read_field(rq, config!(rq.disk))
        } else {
            read_field::<Ptr>(rq, config!(rq.q)).and_then(|q| read_field(q, config!(rq.q_disk)))
        }
        .unwrap_or(core::ptr::null());
        let major = read_field::<u32>(disk, config!(rq.disk_major)).unwrap_or(0);
        let minor = read_field::<u32>(disk, config!(rq.disk_first_minor)).unwrap_or(0);
        (major << 20) | minor
    }

    /// Whether the -d disk and -c cgroup filters (when set) let this I/O in;
    /// `dev` is only asked for under -d.
    #[inline(always)]
    fn wanted(dev: impl FnOnce() -> u32) -> bool {
        let only = config!(disk_dev);
        (only == 0 || only == dev())
            && tools_ebpf::task_in_cgroup(unsafe { bpf_get_current_task() } as Ptr, &config!(cgroup))
    }

    /// Starts the clock for a request. `first_wins` (-Q's issue) keeps an
    /// earlier start (BPF_NOEXIST): a request inserted into a scheduler
    /// keeps its insertion time, one issued directly gets its issue time.
    #[inline(always)]
    fn start(rq: Ptr, first_wins: bool) {
        if !wanted(|| rq_dev(rq)) {
            return;
        }
        let now = unsafe { bpf_ktime_get_ns() };
        let flags = if first_wins { BPF_NOEXIST } else { 0 };
        if let Err(err) = START.insert(&(rq as u64), &now, flags) {
            // -EEXIST is the -Q case working as meant.
            if err != -17 {
                count_drop(&DROPS, |d| &mut d.inflight_full);
            }
        }
    }

    /// Records a latency under the key the flags ask for; `dev` and
    /// `cmd_flags` are read only for the keys that use them.
    #[inline(always)]
    fn record_latency(started: u64, dev: impl FnOnce() -> u32, cmd_flags: impl FnOnce() -> u32) {
        let now = unsafe { bpf_ktime_get_ns() };
        if now < started {
            return;
        }
        let ns = now - started;
        let Some(value) = ns.checked_div(config!(unit_ns)) else { return };
        add_total(&TOTALS, ns);
        let mode = config!(key_mode);
        if mode == 0 {
            return record(&HIST, value);
        }
        let mut key = 0u64;
        if mode & key_mode::DISK != 0 {
            key |= (dev() as u64) << 32;
        }
        if mode & key_mode::FLAGS != 0 {
            key |= (cmd_flags() & config!(flags_mask)) as u64;
        }
        record_keyed(&KEYED_HIST, &DROPS, key, value);
        if config!(totals) != 0 {
            add_keyed_sum(&KEYED_HIST, &DROPS, key, ns);
        }
    }

    #[inline(always)]
    fn complete(rq: Ptr) {
        let key = rq as u64;
        let Some(started) = (unsafe { START.get(&key) }).copied() else { return };
        let _ = START.remove(&key);
        record_latency(started, || rq_dev(rq), || read_field::<u32>(rq, config!(rq.cmd_flags)).unwrap_or(0));
    }

    // ---- Raw tracepoints: the request pointer ----

    #[raw_tracepoint(tracepoint = "block_rq_issue")]
    pub fn biolatency_raw_issue(ctx: RawTracePointContext) -> i32 {
        start(ctx.arg::<Ptr>(0), false);
        0
    }
    check_name!(biolatency_raw_issue = programs::RAW_ISSUE);

    /// Before 5.11: `block_rq_issue(q, rq)`. A separate program because
    /// reading a 2nd argument fails to attach where there is one.
    #[raw_tracepoint(tracepoint = "block_rq_issue")]
    pub fn biolatency_raw_issue_q(ctx: RawTracePointContext) -> i32 {
        start(ctx.arg::<Ptr>(1), false);
        0
    }
    check_name!(biolatency_raw_issue_q = programs::RAW_ISSUE_Q);

    /// -Q: issue after insertion keeps the insertion time.
    #[raw_tracepoint(tracepoint = "block_rq_issue")]
    pub fn biolatency_raw_issue_queued(ctx: RawTracePointContext) -> i32 {
        start(ctx.arg::<Ptr>(0), true);
        0
    }
    check_name!(biolatency_raw_issue_queued = programs::RAW_ISSUE_QUEUED);

    #[raw_tracepoint(tracepoint = "block_rq_issue")]
    pub fn biolatency_raw_issue_queued_q(ctx: RawTracePointContext) -> i32 {
        start(ctx.arg::<Ptr>(1), true);
        0
    }
    check_name!(biolatency_raw_issue_queued_q = programs::RAW_ISSUE_QUEUED_Q);

    #[raw_tracepoint(tracepoint = "block_rq_insert")]
    pub fn biolatency_raw_insert(ctx: RawTracePointContext) -> i32 {
        start(ctx.arg::<Ptr>(0), false);
        0
    }
    check_name!(biolatency_raw_insert = programs::RAW_INSERT);

    #[raw_tracepoint(tracepoint = "block_rq_insert")]
    pub fn biolatency_raw_insert_q(ctx: RawTracePointContext) -> i32 {
        start(ctx.arg::<Ptr>(1), false);
        0
    }
    check_name!(biolatency_raw_insert_q = programs::RAW_INSERT_Q);

    /// `block_rq_complete(rq, error, nr_bytes)` in every version.
    #[raw_tracepoint(tracepoint = "block_rq_complete")]
    pub fn biolatency_raw_complete(ctx: RawTracePointContext) -> i32 {
        complete(ctx.arg::<Ptr>(0));
        0
    }
    check_name!(biolatency_raw_complete = programs::RAW_COMPLETE);

    // ---- kprobes: blk_mq_start_request(rq), accounting start, completion ----

    #[kprobe]
    pub fn biolatency_kp_issue(ctx: ProbeContext) -> u32 {
        if let Some(rq) = ctx.arg::<Ptr>(0) {
            start(rq, false);
        }
        0
    }
    check_name!(biolatency_kp_issue = programs::KP_ISSUE);

    #[kprobe]
    pub fn biolatency_kp_issue_queued(ctx: ProbeContext) -> u32 {
        if let Some(rq) = ctx.arg::<Ptr>(0) {
            start(rq, true);
        }
        0
    }
    check_name!(biolatency_kp_issue_queued = programs::KP_ISSUE_QUEUED);

    /// -Q: accounting start, the first moment the request exists.
    #[kprobe]
    pub fn biolatency_kp_account_start(ctx: ProbeContext) -> u32 {
        if let Some(rq) = ctx.arg::<Ptr>(0) {
            start(rq, false);
        }
        0
    }
    check_name!(biolatency_kp_account_start = programs::KP_ACCOUNT_START);

    #[kprobe]
    pub fn biolatency_kp_complete(ctx: ProbeContext) -> u32 {
        if let Some(rq) = ctx.arg::<Ptr>(0) {
            complete(rq);
        }
        0
    }
    check_name!(biolatency_kp_complete = programs::KP_COMPLETE);

    // ---- Plain tracepoints: no request, so (dev, sector) ----

    #[inline(always)]
    fn tp_dev_sector(ctx: &TracePointContext) -> Option<DevSector> {
        let dev = unsafe { ctx.read_at::<u32>(config!(tp_dev) as usize) }.ok()?;
        let sector = unsafe { ctx.read_at::<u64>(config!(tp_sector) as usize) }.ok()?;
        Some(DevSector { dev: dev as u64, sector })
    }

    #[inline(always)]
    fn tp_start(ctx: &TracePointContext, first_wins: bool) {
        let Some(key) = tp_dev_sector(ctx) else { return count_drop(&DROPS, |d| &mut d.read_failed) };
        if !wanted(|| key.dev as u32) {
            return;
        }
        let now = unsafe { bpf_ktime_get_ns() };
        if let Err(err) = START_BY_SECTOR.insert(&key, &now, if first_wins { BPF_NOEXIST } else { 0 }) {
            if err != -17 {
                count_drop(&DROPS, |d| &mut d.inflight_full);
            }
        }
    }

    #[tracepoint(category = "block", name = "block_rq_issue")]
    pub fn biolatency_tp_issue(ctx: TracePointContext) -> u32 {
        tp_start(&ctx, false);
        0
    }
    check_name!(biolatency_tp_issue = programs::TP_ISSUE);

    #[tracepoint(category = "block", name = "block_rq_issue")]
    pub fn biolatency_tp_issue_queued(ctx: TracePointContext) -> u32 {
        tp_start(&ctx, true);
        0
    }
    check_name!(biolatency_tp_issue_queued = programs::TP_ISSUE_QUEUED);

    #[tracepoint(category = "block", name = "block_rq_insert")]
    pub fn biolatency_tp_insert(ctx: TracePointContext) -> u32 {
        tp_start(&ctx, false);
        0
    }
    check_name!(biolatency_tp_insert = programs::TP_INSERT);

    #[inline(always)]
    fn tp_complete(ctx: &TracePointContext) {
        let Some(key) = tp_dev_sector(ctx) else { return count_drop(&DROPS, |d| &mut d.read_failed) };
        if let Some(started) = unsafe { START_BY_SECTOR.get(&key) }.copied() {
            let _ = START_BY_SECTOR.remove(&key);
            record_latency(started, || key.dev as u32, || 0);
        }
    }

    #[tracepoint(category = "block", name = "block_rq_complete")]
    pub fn biolatency_tp_complete(ctx: TracePointContext) -> u32 {
        tp_complete(&ctx);
        0
    }
    check_name!(biolatency_tp_complete = programs::TP_COMPLETE);

    /// 6.5+: accounting start (-Q), the request's first moment.
    #[tracepoint(category = "block", name = "block_io_start")]
    pub fn biolatency_tp_io_start(ctx: TracePointContext) -> u32 {
        tp_start(&ctx, false);
        0
    }
    check_name!(biolatency_tp_io_start = programs::TP_IO_START);

    /// 6.5+: accounting done, once per request (block_rq_complete may fire
    /// once per partial completion).
    #[tracepoint(category = "block", name = "block_io_done")]
    pub fn biolatency_tp_io_done(ctx: TracePointContext) -> u32 {
        tp_complete(&ctx);
        0
    }
    check_name!(biolatency_tp_io_done = programs::TP_IO_DONE);
}
