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
        programs::{ProbeContext, RawTracePointContext, TracePointContext},
    };
    use tools_common::biolatency::{key_mode, programs, Config};
    use tools_ebpf::{
        config, histogram_maps,
        maps::{count_drop, Configuration, Starts},
        named, read_field,
    };

    #[config]
    static CONFIG: Configuration<Config> = Configuration::new();

    // DROPS, HIST, KEYED_HIST (-P, -L, -D, the exporter's labels) and TOTALS.
    histogram_maps!();

    /// When a request started and, with `--containers`, the cgroup of the
    /// task that started it (0 otherwise).
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Started {
        ns: u64,
        cgroup: u64,
    }

    /// Request (pointer) → when it started. Entries live from start to
    /// completion; a full table is counted, not ignored.
    #[map]
    static START: Starts<u64, Started> = Starts::with_max_entries(10240);

    /// Plain-tracepoint rung: (dev, sector) → when it started.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct DevSector {
        dev: u64,
        sector: u64,
    }

    #[map]
    static START_BY_SECTOR: Starts<DevSector, Started> = Starts::with_max_entries(10240);

    type Ptr = *const u8;

    #[inline(always)]
    fn rq_dev(config: &Config, rq: Ptr) -> u32 {
        let o = &config.rq;
        let disk: Ptr = if o.has_rq_disk != 0 {
            read_field(rq, o.disk)
        } else {
            read_field::<Ptr>(rq, o.q).and_then(|q| read_field(q, o.q_disk))
        }
        .unwrap_or(core::ptr::null());
        let major = read_field::<u32>(disk, o.disk_major).unwrap_or(0);
        let minor = read_field::<u32>(disk, o.disk_first_minor).unwrap_or(0);
        (major << 20) | minor
    }

    /// Whether the -d disk and -c cgroup filters (when set) let this I/O in;
    /// `dev` is only asked for under -d. The cgroup is the current task's,
    /// which Linux 4.4 cannot read (`bpf_get_current_task` is 4.8): the
    /// legacy build's kprobes leave it out (`CGROUP` false), and user space
    /// refuses -c there.
    #[inline(always)]
    fn wanted<const CGROUP: bool>(config: &Config, dev: impl FnOnce() -> u32) -> bool {
        let only = config.disk_dev;
        (only == 0 || only == dev())
            && (!CGROUP || tools_ebpf::task_in_cgroup(unsafe { bpf_get_current_task() } as Ptr, &config.cgroup))
    }

    /// Whether the kprobes filter by cgroup: not in the legacy build.
    const KPROBES_READ_THE_TASK: bool = !tools_ebpf::LEGACY;

    /// Starts the clock for a request. `first_wins` (-Q's issue) keeps an
    /// earlier start (BPF_NOEXIST): a request inserted into a scheduler
    /// keeps its insertion time, one issued directly gets its issue time.
    #[inline(always)]
    fn start<const CGROUP: bool>(rq: Ptr, first_wins: bool) {
        let Some(config) = CONFIG.get() else { return };
        if !wanted::<CGROUP>(config, || rq_dev(config, rq)) {
            return;
        }
        let now = started::<CGROUP>(config);
        match first_wins {
            true => START.begin_once(&DROPS, &(rq as u64), &now),
            false => START.begin(&DROPS, &(rq as u64), &now),
        }
    }

    /// Now, and the starting task's cgroup where it is asked for and can be read.
    #[inline(always)]
    fn started<const CGROUP: bool>(config: &Config) -> Started {
        let cgroup = tools_ebpf::reported_cgroup::<CGROUP>(&config.cgroup) as u64;
        Started { ns: unsafe { bpf_ktime_get_ns() }, cgroup }
    }

    /// Records a latency under the key the flags ask for; `dev` and
    /// `cmd_flags` are read only for the keys that use them.
    #[inline(always)]
    fn record_latency(config: &Config, started: Started, dev: impl FnOnce() -> u32, cmd_flags: impl FnOnce() -> u32) {
        let now = unsafe { bpf_ktime_get_ns() };
        if now < started.ns {
            return;
        }
        let ns = now - started.ns;
        let Some(value) = ns.checked_div(config.unit_ns) else { return };
        TOTALS.add(|t| &mut t.sum_ns, ns);
        TOTALS.add(|t| &mut t.count, 1);
        let mode = config.key_mode;
        if mode == 0 {
            return HIST.record(value);
        }
        let mut key = 0u64;
        if mode & key_mode::DISK != 0 {
            key |= (dev() as u64) << 32;
        }
        if mode & key_mode::FLAGS != 0 {
            key |= (cmd_flags() & config.flags_mask) as u64;
        }
        if mode & key_mode::CGROUP != 0 {
            key |= started.cgroup;
        }
        KEYED_HIST.record(&DROPS, key, value);
        if config.totals != 0 {
            KEYED_HIST.add_sum(&DROPS, key, ns);
        }
    }

    #[inline(always)]
    fn complete(rq: Ptr) {
        let Some(config) = CONFIG.get() else { return };
        let Some(started) = START.end(&(rq as u64)) else { return };
        record_latency(
            config,
            started,
            || rq_dev(config, rq),
            || read_field::<u32>(rq, config.rq.cmd_flags).unwrap_or(0),
        );
    }

    // ---- Raw tracepoints: the request pointer ----

    #[named(programs::RAW_ISSUE)]
    #[raw_tracepoint(tracepoint = "block_rq_issue")]
    pub fn biolatency_raw_issue(ctx: RawTracePointContext) -> i32 {
        start::<true>(ctx.arg::<Ptr>(0), false);
        0
    }

    /// Before 5.11: `block_rq_issue(q, rq)`. A separate program because
    /// reading a 2nd argument fails to attach where there is one.
    #[named(programs::RAW_ISSUE_Q)]
    #[raw_tracepoint(tracepoint = "block_rq_issue")]
    pub fn biolatency_raw_issue_q(ctx: RawTracePointContext) -> i32 {
        start::<true>(ctx.arg::<Ptr>(1), false);
        0
    }

    /// -Q: issue after insertion keeps the insertion time.
    #[named(programs::RAW_ISSUE_QUEUED)]
    #[raw_tracepoint(tracepoint = "block_rq_issue")]
    pub fn biolatency_raw_issue_queued(ctx: RawTracePointContext) -> i32 {
        start::<true>(ctx.arg::<Ptr>(0), true);
        0
    }

    #[named(programs::RAW_ISSUE_QUEUED_Q)]
    #[raw_tracepoint(tracepoint = "block_rq_issue")]
    pub fn biolatency_raw_issue_queued_q(ctx: RawTracePointContext) -> i32 {
        start::<true>(ctx.arg::<Ptr>(1), true);
        0
    }

    #[named(programs::RAW_INSERT)]
    #[raw_tracepoint(tracepoint = "block_rq_insert")]
    pub fn biolatency_raw_insert(ctx: RawTracePointContext) -> i32 {
        start::<true>(ctx.arg::<Ptr>(0), false);
        0
    }

    #[named(programs::RAW_INSERT_Q)]
    #[raw_tracepoint(tracepoint = "block_rq_insert")]
    pub fn biolatency_raw_insert_q(ctx: RawTracePointContext) -> i32 {
        start::<true>(ctx.arg::<Ptr>(1), false);
        0
    }

    /// `block_rq_complete(rq, error, nr_bytes)` in every version.
    #[named(programs::RAW_COMPLETE)]
    #[raw_tracepoint(tracepoint = "block_rq_complete")]
    pub fn biolatency_raw_complete(ctx: RawTracePointContext) -> i32 {
        complete(ctx.arg::<Ptr>(0));
        0
    }

    // ---- kprobes: blk_mq_start_request(rq), accounting start, completion ----

    #[named(programs::KP_ISSUE)]
    #[kprobe]
    pub fn biolatency_kp_issue(ctx: ProbeContext) -> u32 {
        if let Some(rq) = ctx.arg::<Ptr>(0) {
            start::<KPROBES_READ_THE_TASK>(rq, false);
        }
        0
    }

    #[named(programs::KP_ISSUE_QUEUED)]
    #[kprobe]
    pub fn biolatency_kp_issue_queued(ctx: ProbeContext) -> u32 {
        if let Some(rq) = ctx.arg::<Ptr>(0) {
            start::<KPROBES_READ_THE_TASK>(rq, true);
        }
        0
    }

    /// -Q: accounting start, the first moment the request exists.
    #[named(programs::KP_ACCOUNT_START)]
    #[kprobe]
    pub fn biolatency_kp_account_start(ctx: ProbeContext) -> u32 {
        if let Some(rq) = ctx.arg::<Ptr>(0) {
            start::<KPROBES_READ_THE_TASK>(rq, false);
        }
        0
    }

    #[named(programs::KP_COMPLETE)]
    #[kprobe]
    pub fn biolatency_kp_complete(ctx: ProbeContext) -> u32 {
        if let Some(rq) = ctx.arg::<Ptr>(0) {
            complete(rq);
        }
        0
    }

    // ---- Plain tracepoints: no request, so (dev, sector) ----

    #[inline(always)]
    fn tp_dev_sector(config: &Config, ctx: &TracePointContext) -> Option<DevSector> {
        let dev = unsafe { ctx.read_at::<u32>(config.tp_dev as usize) }.ok()?;
        let sector = unsafe { ctx.read_at::<u64>(config.tp_sector as usize) }.ok()?;
        Some(DevSector { dev: dev as u64, sector })
    }

    #[inline(always)]
    fn tp_start(ctx: &TracePointContext, first_wins: bool) {
        let Some(config) = CONFIG.get() else { return };
        let Some(key) = tp_dev_sector(config, ctx) else { return count_drop(&DROPS, |d| &mut d.read_failed) };
        if !wanted::<true>(config, || key.dev as u32) {
            return;
        }
        let now = started::<true>(config);
        match first_wins {
            true => START_BY_SECTOR.begin_once(&DROPS, &key, &now),
            false => START_BY_SECTOR.begin(&DROPS, &key, &now),
        }
    }

    #[named(programs::TP_ISSUE)]
    #[tracepoint(category = "block", name = "block_rq_issue")]
    pub fn biolatency_tp_issue(ctx: TracePointContext) -> u32 {
        tp_start(&ctx, false);
        0
    }

    #[named(programs::TP_ISSUE_QUEUED)]
    #[tracepoint(category = "block", name = "block_rq_issue")]
    pub fn biolatency_tp_issue_queued(ctx: TracePointContext) -> u32 {
        tp_start(&ctx, true);
        0
    }

    #[named(programs::TP_INSERT)]
    #[tracepoint(category = "block", name = "block_rq_insert")]
    pub fn biolatency_tp_insert(ctx: TracePointContext) -> u32 {
        tp_start(&ctx, false);
        0
    }

    #[inline(always)]
    fn tp_complete(ctx: &TracePointContext) {
        let Some(config) = CONFIG.get() else { return };
        let Some(key) = tp_dev_sector(config, ctx) else { return count_drop(&DROPS, |d| &mut d.read_failed) };
        if let Some(started) = START_BY_SECTOR.end(&key) {
            record_latency(config, started, || key.dev as u32, || 0);
        }
    }

    #[named(programs::TP_COMPLETE)]
    #[tracepoint(category = "block", name = "block_rq_complete")]
    pub fn biolatency_tp_complete(ctx: TracePointContext) -> u32 {
        tp_complete(&ctx);
        0
    }

    /// 6.5+: accounting start (-Q), the request's first moment.
    #[named(programs::TP_IO_START)]
    #[tracepoint(category = "block", name = "block_io_start")]
    pub fn biolatency_tp_io_start(ctx: TracePointContext) -> u32 {
        tp_start(&ctx, false);
        0
    }

    /// 6.5+: accounting done, once per request (block_rq_complete may fire
    /// once per partial completion).
    #[named(programs::TP_IO_DONE)]
    #[tracepoint(category = "block", name = "block_io_done")]
    pub fn biolatency_tp_io_done(ctx: TracePointContext) -> u32 {
        tp_complete(&ctx);
        0
    }
}
