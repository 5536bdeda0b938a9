//! gethostlatency: the latency of each host-name lookup through libc's
//! getaddrinfo, gethostbyname and gethostbyname2, in every C library
//! user space attaches these uprobes to.
//!
//! Each thread's outermost call is kept from its entry to its return: a
//! resolver function that calls another inside the library (musl's
//! gethostbyname calls gethostbyname2) gives one lookup, not two. A call
//! that never returns is replaced by the thread's next call (longjmp), or
//! removed by user space once its thread is gone (thread exit): nothing is
//! left to fill the table. (An LRU table would evict by itself, at twice
//! the cost per call.)
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod bpf {
    #[cfg(not(feature = "legacy"))]
    use core::mem::offset_of;

    #[cfg(feature = "legacy")]
    use aya_ebpf::helpers::bpf_probe_read_user;
    #[cfg(not(feature = "legacy"))]
    use aya_ebpf::helpers::bpf_probe_read_user_str_bytes;
    use aya_ebpf::{
        helpers::{
            bpf_get_attach_cookie, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
            bpf_ktime_get_ns,
        },
        macros::{map, tracepoint, uprobe, uretprobe},
        maps::HashMap,
        programs::{ProbeContext, RetProbeContext, TracePointContext},
        EbpfContext as _,
    };
    use tools_common::gethostlatency::{
        function, hist_key, maps, programs, Call, Config, LookupEventOf, EXECS_SIZE, UNKNOWN_LIBRARY,
    };
    #[cfg(feature = "legacy")]
    use tools_common::gethostlatency::{LegacyLookupEvent, LEGACY_HOST_SIZE};
    #[cfg(not(feature = "legacy"))]
    use tools_common::gethostlatency::{LookupEvent, HOST_SIZE};
    #[cfg(feature = "legacy")]
    use tools_ebpf::maps::emit_value;
    #[cfg(not(feature = "legacy"))]
    use tools_ebpf::maps::{emit_prefix, Scratch};
    use tools_ebpf::{
        config, event_maps,
        maps::{Configuration, Starts},
        named,
    };

    #[config]
    static CONFIG: Configuration<Config> = Configuration::new();

    // DROPS, EVENTS, and KEYED_HIST: the histograms by function and result
    // of the exporter and --histogram (`Config::histogram_unit_ns`).
    event_maps!();

    /// Thread → its outermost resolver call in flight.
    #[named(maps::CALLS)]
    #[map]
    static CALLS: Starts<u32, Call> = Starts::with_max_entries(10240);

    /// Processes that execd since user space last read this table (it
    /// reads their mappings again, and empties it). When it is full, user
    /// space reads every process.
    #[named(maps::EXECS)]
    #[map]
    static EXECS: HashMap<u32, u8> = HashMap::with_max_entries(EXECS_SIZE, 0);

    #[named(programs::EXEC)]
    #[tracepoint]
    pub fn gethostlatency_exec(_ctx: TracePointContext) -> u32 {
        let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        let execd: u8 = 0;
        let _ = EXECS.insert(pid, execd, 0);
        0
    }

    /// Where an event is built: too large for the BPF stack.
    #[cfg(not(feature = "legacy"))]
    #[map]
    static SCRATCH: Scratch<LookupEvent> = Scratch::new();

    type Ptr = *const u8;

    /// Whether the entries without cookies (the oldest kernels' rung) read
    /// the current task, for -c: not in the legacy build, for Linux 4.4
    /// (`bpf_get_current_task` is 4.8); user space refuses -c there.
    const UPROBES_READ_THE_TASK: bool = !tools_ebpf::LEGACY;

    /// A resolver function's entry: its first argument is the host name.
    /// `CGROUP`: whether it applies -c.
    #[inline(always)]
    fn entry<const CGROUP: bool>(ctx: &ProbeContext, function: u32, library: u32) {
        let Some(config) = CONFIG.get() else { return };
        let id = bpf_get_current_pid_tgid();
        let target = config.target_tgid;
        if target != 0 && (id >> 32) as u32 != target {
            return;
        }
        let tid = id as u32;
        let (sp, ret_addr) = tools_ebpf::entry_frame(ctx.regs);
        if let Some(call) = CALLS.in_flight(&tid) {
            let nested = sp < call.sp || (sp == call.sp && ret_addr != call.ret_addr);
            if call.depth > 0 && nested {
                call.depth += 1;
                return;
            }
        }
        // BCC skips a NULL host (getaddrinfo(NULL, service, ...)).
        let Some(host) = ctx.arg::<Ptr>(0).filter(|h| !h.is_null()) else { return };
        if CGROUP && !tools_ebpf::task_in_cgroup(unsafe { bpf_get_current_task() } as Ptr, &config.cgroup) {
            return;
        }
        let call = Call {
            ts_ns: unsafe { bpf_ktime_get_ns() },
            sp,
            ret_addr,
            host: host as u64,
            depth: 1,
            function,
            library,
            cgroup: tools_ebpf::reported_cgroup::<CGROUP>(&config.cgroup),
        };
        CALLS.begin(&DROPS, &tid, &call);
    }

    /// With a cookie (5.15+): which library and function, from attach time.
    #[named(programs::ENTRY)]
    #[uprobe]
    pub fn gethostlatency_entry(ctx: ProbeContext) -> u32 {
        let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
        entry::<true>(&ctx, (cookie & 0xff) as u32, (cookie >> 8) as u32);
        0
    }

    #[named(programs::ENTRY_GETADDRINFO)]
    #[uprobe]
    pub fn gethostlatency_entry_getaddrinfo(ctx: ProbeContext) -> u32 {
        entry::<UPROBES_READ_THE_TASK>(&ctx, function::GETADDRINFO, UNKNOWN_LIBRARY);
        0
    }

    #[named(programs::ENTRY_GETHOSTBYNAME)]
    #[uprobe]
    pub fn gethostlatency_entry_gethostbyname(ctx: ProbeContext) -> u32 {
        entry::<UPROBES_READ_THE_TASK>(&ctx, function::GETHOSTBYNAME, UNKNOWN_LIBRARY);
        0
    }

    #[named(programs::ENTRY_GETHOSTBYNAME2)]
    #[uprobe]
    pub fn gethostlatency_entry_gethostbyname2(ctx: ProbeContext) -> u32 {
        entry::<UPROBES_READ_THE_TASK>(&ctx, function::GETHOSTBYNAME2, UNKNOWN_LIBRARY);
        0
    }

    /// A resolver function's return: the outermost one reports the lookup.
    #[named(programs::RETURN)]
    #[uretprobe]
    pub fn gethostlatency_return(ctx: RetProbeContext) -> u32 {
        if let Some(config) = CONFIG.get() {
            returned(&ctx, config);
        }
        0
    }

    #[inline(always)]
    fn returned(ctx: &RetProbeContext, config: &Config) {
        let id = bpf_get_current_pid_tgid();
        let tid = id as u32;
        let Some(nested) = CALLS.in_flight(&tid) else { return };
        if nested.depth > 1 {
            nested.depth -= 1;
            return;
        }
        let Some(call) = CALLS.end(&tid) else { return };
        let now = unsafe { bpf_ktime_get_ns() };
        let latency = now.saturating_sub(call.ts_ns);
        let ret = ctx.ret::<i64>();
        // getaddrinfo returns an int: the upper half of the register is not the result's.
        let ret = if call.function == function::GETADDRINFO { ret as i32 as i64 } else { ret };
        if config.histogram_unit_ns != 0 {
            let key = hist_key(call.function, ret);
            return KEYED_HIST.record_with_sum(&DROPS, key, latency, config.histogram_unit_ns);
        }
        let fill = |ev: &mut LookupEventOf<_>| {
            ev.ts_ns = now;
            ev.latency_ns = latency;
            ev.ret = ret;
            ev.pid = (id >> 32) as u32;
            ev.tid = tid;
            ev.function = call.function;
            ev.library = call.library;
            ev.comm = bpf_get_current_comm().unwrap_or_default();
            ev.cgroup = call.cgroup;
        };
        let host = call.host as Ptr;
        // The modern build sends the host's bytes, up to DNS's 253, from a
        // per-CPU event; the legacy build a fixed-size read of its start, as
        // BCC did, from an event on the stack (Linux 4.4); a host near the
        // end of its page is read shorter.
        #[cfg(not(feature = "legacy"))]
        {
            let Some(ev) = SCRATCH.get() else { return };
            fill(ev);
            ev.host_len = match unsafe { bpf_probe_read_user_str_bytes(host, &mut ev.host) } {
                Ok(bytes) => bytes.len() as u32,
                Err(_) => 0,
            };
            let len = offset_of!(LookupEvent, host) + (ev.host_len as usize & (HOST_SIZE - 1));
            emit_prefix(ctx, &EVENTS, &DROPS, ev, len);
        }
        #[cfg(feature = "legacy")]
        {
            let mut ev: LegacyLookupEvent = unsafe { core::mem::zeroed() };
            fill(&mut ev);
            if let Ok(bytes) = unsafe { bpf_probe_read_user::<[u8; LEGACY_HOST_SIZE]>(host as *const _) } {
                ev.host = bytes;
            } else if let Ok(bytes) = unsafe { bpf_probe_read_user::<[u8; 16]>(host as *const _) } {
                ev.host[..16].copy_from_slice(&bytes);
            }
            ev.host_len = LEGACY_HOST_SIZE as u32;
            emit_value(ctx, &EVENTS, &DROPS, &ev);
        }
    }
}
