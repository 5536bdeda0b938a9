//! runqlat: run-queue latency, from a task becoming runnable (woken, new, or
//! preempted while runnable) to it running on a CPU.
//!
//! Rungs, best first: raw tracepoints with task pointers (4.17+), plain
//! `sched:` tracepoints with TIDs only (4.7+), kprobes (older kernels).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod bpf {
    use aya_ebpf::{
        helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns},
        macros::{kprobe, map, raw_tracepoint, tracepoint},
        maps::HashMap,
        programs::{ProbeContext, RawTracePointContext, TracePointContext},
    };
    use tools_common::{
        histogram::OTHER_KEY,
        runqlat::{key_mode, maps, programs, Config},
    };
    use tools_ebpf::{
        config, histogram_maps,
        maps::{count_drop, Configuration, Starts},
        named, read_field,
    };

    #[config]
    static CONFIG: Configuration<Config> = Configuration::new();

    // DROPS, HIST, KEYED_HIST (-P, -L, -D, the exporter's labels) and TOTALS.
    histogram_maps!();

    /// The keys that have a histogram of their own under a series cap
    /// (`Config::series_cap`, which user space makes its size). First come:
    /// a full table sends the others to `OTHER_KEY`; user space removes
    /// the processes that exited.
    #[named(maps::SERIES)]
    #[map]
    static SERIES: HashMap<u64, u8> = HashMap::with_max_entries(1, 0);

    /// Task → when it became runnable (ns), 0 once its latency is taken.
    /// The key is the task's address on the rungs that have one (no read
    /// of the task on the hot path), its TID on plain tracepoints. Entries
    /// are rewritten in place: a lookup and a store, no bucket lock and no
    /// element allocation per event. Addresses are reused as task structs
    /// are, so with them the table stays as large as the most tasks that
    /// ever existed at once (user space sizes it from the task count);
    /// TIDs are not reused soon, so that rung deletes what it takes. A
    /// full table is counted, not ignored.
    #[named(maps::START)]
    #[map]
    static START: Starts<u64, u64> = Starts::with_max_entries(10240);

    /// Tracepoint rung only: TID → latency measured at switch-in, recorded
    /// at the task's next switch-out, when it is the current task and its
    /// process and namespace are known.
    #[map]
    static PENDING: HashMap<u32, u64> = HashMap::with_max_entries(10240, 0);

    type Task = *const u8;

    #[inline(always)]
    fn stamp(task: u64) {
        START.begin_in_place(&DROPS, &task, unsafe { bpf_ktime_get_ns() });
    }

    /// Latency of `task` if it was stamped, in nanoseconds; `forget`
    /// deletes its entry (TID keys), else it is zeroed in place.
    #[inline(always)]
    fn take_latency(task: u64, forget: bool) -> Option<u64> {
        let start = match forget {
            true => START.end(&task)?,
            false => START.end_in_place(&task, 0, |&start| start == 0)?,
        };
        let now = unsafe { bpf_ktime_get_ns() };
        now.checked_sub(start).filter(|_| start != 0)
    }

    /// Counts a latency (ns) in the unkeyed histogram, and its sum when
    /// the exporter asks for totals.
    #[inline(always)]
    fn record_unkeyed(config: &Config, ns: u64) {
        // checked: a plain division would carry a panic path the verifier rejects.
        let Some(value) = ns.checked_div(config.unit_ns) else { return };
        HIST.record(value);
        if config.totals != 0 {
            TOTALS.add(|t| &mut t.sum_ns, ns);
            TOTALS.add(|t| &mut t.count, 1);
        }
    }

    /// The key a sample counts under: its own while it has (or gets) a
    /// place in `SERIES`, else `OTHER_KEY`; any key without a cap.
    #[inline(always)]
    fn admitted(config: &Config, key: u64) -> u64 {
        if config.series_cap == 0 || SERIES.get_ptr(key).is_some() {
            return key;
        }
        const BPF_NOEXIST: u64 = 1;
        const EEXIST: i32 = 17;
        let admitted: u8 = 1;
        match SERIES.insert(key, admitted, BPF_NOEXIST) {
            Ok(()) => key,
            // Another CPU admitted it meanwhile.
            Err(err) if err == -EEXIST => key,
            Err(_) => OTHER_KEY,
        }
    }

    #[inline(always)]
    fn task_pid_ns(config: &Config, task: Task) -> Option<u32> {
        let pid: Task = read_field(task, config.task_thread_pid)?;
        let level: u32 = read_field(pid, config.pid_level)?;
        let upid = config.pid_numbers + level.min(32) * config.upid_size;
        let ns: Task = read_field(pid, upid + config.upid_ns)?;
        read_field(ns, config.pidns_inum)
    }

    /// Records a latency (ns) under the key the flags ask for; `tid`,
    /// `tgid` and `task` describe the task it was measured for.
    #[inline(always)]
    fn record_for(config: &Config, task: Task, tid: u32, tgid: u32, ns: u64) {
        let mode = config.key_mode;
        let totals = config.totals != 0;
        if mode == key_mode::NONE || totals {
            record_unkeyed(config, ns);
        }
        let key = match mode {
            key_mode::NONE => return,
            key_mode::PID => tgid as u64,
            key_mode::TID => tid as u64,
            key_mode::CGROUP => match tools_ebpf::task_cgroup_ino(task, &config.cgroup) {
                Some(ino) => ino as u64,
                None => return count_drop(&DROPS, |d| &mut d.read_failed),
            },
            _ => match task_pid_ns(config, task) {
                Some(pidns) => pidns as u64,
                None => return count_drop(&DROPS, |d| &mut d.read_failed),
            },
        };
        let Some(value) = ns.checked_div(config.unit_ns) else { return };
        let key = admitted(config, key);
        KEYED_HIST.record(&DROPS, key, value);
        if totals {
            KEYED_HIST.add_sum(&DROPS, key, ns);
        }
    }

    // ---- Rungs with a task pointer: raw tracepoints and kprobes ----

    /// A task that became runnable (woken, new, or preempted). The idle
    /// task is never woken, and switch_tasks keeps it out.
    #[inline(always)]
    fn runnable_task(config: &Config, task: Task) {
        let target = config.target_tgid;
        if target != 0 && read_field::<u32>(task, config.task.tgid) != Some(target) {
            return;
        }
        if !tools_ebpf::task_in_cgroup(task, &config.cgroup) {
            return;
        }
        stamp(task as u64);
    }

    #[inline(always)]
    fn switch_tasks(config: &Config, prev: Task, prev_runnable: bool, next: Task) {
        // The idle task is runnable whenever it is switched out, but never
        // waits in a run queue: PID 0 is not stamped.
        if prev_runnable && read_field::<u32>(prev, config.task.pid).is_some_and(|pid| pid != 0) {
            runnable_task(config, prev);
        }
        let Some(latency) = take_latency(next as u64, false) else { return };
        if config.key_mode == key_mode::NONE {
            return record_unkeyed(config, latency);
        }
        match (read_field::<u32>(next, config.task.pid), read_field::<u32>(next, config.task.tgid)) {
            (Some(tid), Some(tgid)) => record_for(config, next, tid, tgid, latency),
            _ => count_drop(&DROPS, |d| &mut d.read_failed),
        }
    }

    #[named(programs::RAW_WAKEUP)]
    #[raw_tracepoint(tracepoint = "sched_wakeup")]
    pub fn runqlat_raw_wakeup(ctx: RawTracePointContext) -> i32 {
        if let Some(config) = CONFIG.get() {
            runnable_task(config, ctx.arg::<Task>(0));
        }
        0
    }

    #[named(programs::RAW_WAKEUP_NEW)]
    #[raw_tracepoint(tracepoint = "sched_wakeup_new")]
    pub fn runqlat_raw_wakeup_new(ctx: RawTracePointContext) -> i32 {
        if let Some(config) = CONFIG.get() {
            runnable_task(config, ctx.arg::<Task>(0));
        }
        0
    }

    /// `sched_switch(preempt, prev, next)` before 5.18: the state is read from
    /// the task. A preempted task stays runnable whatever its state says.
    #[named(programs::RAW_SWITCH)]
    #[raw_tracepoint(tracepoint = "sched_switch")]
    pub fn runqlat_raw_switch(ctx: RawTracePointContext) -> i32 {
        let Some(config) = CONFIG.get() else { return 0 };
        let preempt = ctx.arg::<u64>(0) & 0xff != 0;
        let prev = ctx.arg::<Task>(1);
        let runnable = preempt || read_field::<u32>(prev, config.task.state) == Some(0);
        switch_tasks(config, prev, runnable, ctx.arg::<Task>(2));
        0
    }

    /// `sched_switch(preempt, prev, next, prev_state)` from 5.18: the state
    /// the scheduler saw, free of the race of re-reading it from the task.
    /// A separate program because reading a 4th argument fails to attach
    /// where the tracepoint has three.
    #[named(programs::RAW_SWITCH4)]
    #[raw_tracepoint(tracepoint = "sched_switch")]
    pub fn runqlat_raw_switch4(ctx: RawTracePointContext) -> i32 {
        let Some(config) = CONFIG.get() else { return 0 };
        let preempt = ctx.arg::<u64>(0) & 0xff != 0;
        let runnable = preempt || ctx.arg::<u64>(3) as u32 == 0;
        switch_tasks(config, ctx.arg::<Task>(1), runnable, ctx.arg::<Task>(2));
        0
    }

    // ---- kprobes ----
    //
    // The modern build keys tasks by address, as the raw tracepoints do.
    // The legacy build is BCC's runqlat of 2016, for Linux 4.4: without
    // `bpf_get_current_task` (4.8) the next task is known at switch only
    // by its TID (the current one), so every task is keyed by TID; the
    // filters read the woken or preempted task, whose pointer the probed
    // functions pass.

    /// A task made runnable on the legacy build's kprobes.
    #[cfg(feature = "legacy")]
    #[inline(always)]
    fn runnable_by_tid(config: &Config, task: Task) {
        let target = config.target_tgid;
        if target != 0 && read_field::<u32>(task, config.task.tgid) != Some(target) {
            return;
        }
        if !tools_ebpf::task_in_cgroup(task, &config.cgroup) {
            return;
        }
        match read_field::<u32>(task, config.task.pid) {
            Some(0) => {}
            Some(tid) => stamp(tid as u64),
            None => count_drop(&DROPS, |d| &mut d.read_failed),
        }
    }

    #[inline(always)]
    fn kp_runnable(config: &Config, task: Task) {
        #[cfg(feature = "legacy")]
        runnable_by_tid(config, task);
        #[cfg(not(feature = "legacy"))]
        runnable_task(config, task);
    }

    /// `ttwu_do_activate(rq, p, ...)` (or `ttwu_do_wakeup(rq, p, ...)` where
    /// that is missing; it takes only `p` from 6.3, hence second choice):
    /// the task is the second argument.
    #[named(programs::KP_WAKEUP)]
    #[kprobe]
    pub fn runqlat_kp_wakeup(ctx: ProbeContext) -> u32 {
        if let (Some(config), Some(task)) = (CONFIG.get(), ctx.arg::<Task>(1)) {
            kp_runnable(config, task);
        }
        0
    }

    #[named(programs::KP_WAKEUP_NEW)]
    #[kprobe]
    pub fn runqlat_kp_wakeup_new(ctx: ProbeContext) -> u32 {
        if let (Some(config), Some(task)) = (CONFIG.get(), ctx.arg::<Task>(0)) {
            kp_runnable(config, task);
        }
        0
    }

    /// `finish_task_switch(prev)` runs in the next task: current is next.
    #[named(programs::KP_SWITCH)]
    #[kprobe]
    pub fn runqlat_kp_switch(ctx: ProbeContext) -> u32 {
        let (Some(config), Some(prev)) = (CONFIG.get(), ctx.arg::<Task>(0)) else { return 0 };
        let runnable = read_field::<u32>(prev, config.task.state) == Some(0);
        #[cfg(not(feature = "legacy"))]
        {
            let next = unsafe { bpf_get_current_task() } as Task;
            switch_tasks(config, prev, runnable, next);
        }
        #[cfg(feature = "legacy")]
        {
            if runnable {
                runnable_by_tid(config, prev);
            }
            let id = bpf_get_current_pid_tgid();
            if let Some(latency) = take_latency(id & 0xffff_ffff, true) {
                record_for(config, core::ptr::null(), id as u32, (id >> 32) as u32, latency);
            }
        }
        0
    }

    // ---- Plain tracepoints: TIDs only, the current task at switch is prev ----

    #[inline(always)]
    fn tp_read_u32(ctx: &TracePointContext, offset: u32) -> Option<u32> {
        unsafe { ctx.read_at::<u32>(offset as usize).ok() }
    }

    /// Whether a recorded sample must wait for the task's process,
    /// namespace or cgroup, known only when it is current (at its next switch-out).
    #[inline(always)]
    fn needs_current_task(config: &Config) -> bool {
        config.target_tgid != 0
            || config.cgroup.ino != 0
            || matches!(config.key_mode, key_mode::PID | key_mode::PIDNS | key_mode::CGROUP)
    }

    #[inline(always)]
    fn tp_wakeup(ctx: &TracePointContext) {
        let Some(config) = CONFIG.get() else { return };
        match tp_read_u32(ctx, config.tp_wakeup_pid) {
            // No TGID or task here: with -p or -c every task is stamped
            // and filtered when its sample is recorded.
            Some(0) => {}
            Some(tid) => stamp(tid as u64),
            None => count_drop(&DROPS, |d| &mut d.read_failed),
        }
    }

    #[named(programs::TP_WAKEUP)]
    #[tracepoint(category = "sched", name = "sched_wakeup")]
    pub fn runqlat_tp_wakeup(ctx: TracePointContext) -> u32 {
        tp_wakeup(&ctx);
        0
    }

    #[named(programs::TP_WAKEUP_NEW)]
    #[tracepoint(category = "sched", name = "sched_wakeup_new")]
    pub fn runqlat_tp_wakeup_new(ctx: TracePointContext) -> u32 {
        tp_wakeup(&ctx);
        0
    }

    #[named(programs::TP_SWITCH)]
    #[tracepoint(category = "sched", name = "sched_switch")]
    pub fn runqlat_tp_switch(ctx: TracePointContext) -> u32 {
        let Some(config) = CONFIG.get() else { return 0 };
        let (Some(prev), Some(next)) =
            (tp_read_u32(&ctx, config.tp_switch_prev_pid), tp_read_u32(&ctx, config.tp_switch_next_pid))
        else {
            count_drop(&DROPS, |d| &mut d.read_failed);
            return 0;
        };
        let Ok(state) = (unsafe { ctx.read_at::<u64>(config.tp_switch_prev_state as usize) }) else {
            count_drop(&DROPS, |d| &mut d.read_failed);
            return 0;
        };
        // prev is the current task: its process and cgroup are known here.
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        let current = unsafe { bpf_get_current_task() } as Task;
        let target = config.target_tgid;
        let deferred = needs_current_task(config);
        if prev != 0 {
            let wanted = (target == 0 || target == tgid) && tools_ebpf::task_in_cgroup(current, &config.cgroup);
            if deferred {
                if let Some(latency) = PENDING.get_ptr(prev).map(|latency| unsafe { *latency }) {
                    let _ = PENDING.remove(prev);
                    if wanted {
                        record_for(config, current, prev, tgid, latency);
                    }
                }
            }
            // Runnable: state 0 (R), or only the preempted bit set (R+).
            let preempt_bit = config.tp_preempt_bit;
            if (state & !preempt_bit) == 0 && wanted {
                stamp(prev as u64);
            }
        }
        if next != 0 {
            if let Some(latency) = take_latency(next as u64, true) {
                if !deferred {
                    record_for(config, core::ptr::null(), next, 0, latency);
                } else if PENDING.insert(next, latency, 0).is_err() {
                    count_drop(&DROPS, |d| &mut d.inflight_full);
                }
            }
        }
        0
    }
}
