//! tcplife: one event per TCP session that closes, with its owner, exact
//! byte counters and duration.
//!
//! A session is born at its last transition into a state below FIN_WAIT1
//! (SYN_SENT, SYN_RECV, ESTABLISHED) and reported at CLOSE. Its owner is
//! recorded whenever the socket changes state in a process's context: at
//! connect (SYN_SENT), when the process closes or shuts it down
//! (FIN_WAIT1, or LAST_ACK after the peer's FIN) and when accept() hands
//! it over; never at the other transitions, which run in softirq on top of
//! whatever task was interrupted.
//!
//! Rungs, best first: raw tracepoint `inet_sock_set_state` (4.16+; all from
//! the socket, at BTF offsets), tracepoint `sock:inet_sock_set_state` (the
//! record's addresses; byte counters only with BTF), kprobe `tcp_set_state`.
//! accept() has a ladder of its own on the first two: a kretprobe or fexit
//! on `inet_csk_accept`, else the accept syscalls' exit tracepoints.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod bpf {
    use aya_ebpf::{
        helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns},
        macros::{fexit, kprobe, kretprobe, map, raw_tracepoint, tracepoint},
        maps::{Array, HashMap},
        programs::{FExitContext, ProbeContext, RawTracePointContext, RetProbeContext, TracePointContext},
        EbpfContext,
    };
    use tools_common::tcplife::{
        hist_key, maps, owner_from, programs, session_flags, tcp_state, Config, Session, SessionEvent, PORT_WORDS,
    };
    use tools_ebpf::{
        config, event_maps,
        maps::{count_drop, emit_value, Configuration},
        named, read_field,
    };

    #[config]
    static CONFIG: Configuration<Config> = Configuration::new();

    // DROPS, EVENTS, and KEYED_HIST: the histograms and byte sums by family
    // of the exporter and --histogram (`Config::histogram_unit_ns`).
    event_maps!();

    /// Socket → its session, from birth to CLOSE (removed there). User
    /// space sizes it from the machine's TCP sockets; a full table is
    /// counted as lost.
    #[named(maps::SESSIONS)]
    #[map]
    static SESSIONS: HashMap<u64, Session> = HashMap::with_max_entries(10240, 0);

    /// `-L` then `-D` ports, one bit each.
    #[named(maps::PORTS)]
    #[map]
    static PORTS: Array<u64> = Array::with_max_entries(2 * PORT_WORDS, 0);

    type Ptr = *const u8;
    const AF_INET6: u16 = 10;
    const IPPROTO_TCP: u16 = 6;

    /// Whether the kprobes read the current task (for -c): not in the
    /// legacy build, for Linux 4.4 (`bpf_get_current_task` is 4.8); user
    /// space refuses -c there.
    const KPROBES_READ_THE_TASK: bool = !tools_ebpf::LEGACY;

    /// Records the current process as the socket's owner; `CGROUP`: and
    /// whether it runs in the -c cgroup.
    #[inline(always)]
    fn set_owner<const CGROUP: bool>(config: &Config, sk: u64, how: u32) {
        if let Some(session) = SESSIONS.get_ptr_mut(sk) {
            // SAFETY: the value of a live entry.
            unsafe {
                (*session).owner_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
                (*session).owner_from = how;
                (*session).comm = bpf_get_current_comm().unwrap_or_default();
                if CGROUP {
                    let task = bpf_get_current_task() as Ptr;
                    (*session).owner_in_cgroup = tools_ebpf::task_in_cgroup(task, &config.cgroup) as u32;
                    (*session).owner_cgroup = tools_ebpf::reported_cgroup::<true>(&config.cgroup);
                }
            }
        }
    }

    #[inline(always)]
    fn port_wanted(first_word: u32, port: u16) -> bool {
        PORTS.get(first_word + (port as u32 >> 6)).is_some_and(|word| (word >> (port & 63)) & 1 == 1)
    }

    /// A state change of TCP socket `sk` to `new`; `addresses` fills in
    /// family, ports and addresses from wherever this rung has them.
    #[inline(always)]
    fn on_state<C: EbpfContext, const CGROUP: bool>(
        ctx: &C,
        config: &Config,
        sk: Ptr,
        new: i32,
        addresses: impl FnOnce(&mut SessionEvent),
    ) {
        let key = sk as u64;
        if new < tcp_state::FIN_WAIT1 {
            let now = unsafe { bpf_ktime_get_ns() };
            match SESSIONS.get_ptr_mut(key) {
                // SAFETY: the value of a live entry.
                Some(session) => unsafe { ((*session).birth_ns, (*session).birth_state) = (now, new) },
                None => {
                    let session = Session { birth_ns: now, birth_state: new, ..Session::default() };
                    if SESSIONS.insert(key, session, 0).is_err() {
                        count_drop(&DROPS, |d| &mut d.inflight_full);
                    }
                }
            }
            if new == tcp_state::SYN_SENT {
                set_owner::<CGROUP>(config, key, owner_from::CONNECT);
            }
            return;
        }
        if new == tcp_state::FIN_WAIT1 || new == tcp_state::LAST_ACK {
            return set_owner::<CGROUP>(config, key, owner_from::CLOSE);
        }
        if new != tcp_state::CLOSE {
            return;
        }
        // Not born while traced (open before the tool started, or a LISTEN socket).
        let Some(session) = SESSIONS.get_ptr(key).map(|session| unsafe { *session }) else { return };
        let _ = SESSIONS.remove(key);
        // A server socket that closes before it is established is the
        // loser of two CPUs completing one handshake at once: the kernel
        // keeps the other one, and the connection is reported once, as on
        // the kprobe rung, which never sees that socket.
        if session.birth_state == tcp_state::SYN_RECV {
            return;
        }
        let target = config.target_tgid;
        if target != 0 && session.owner_tgid != target {
            return;
        }
        if config.cgroup.ino != 0 && session.owner_in_cgroup == 0 {
            return;
        }
        let now = unsafe { bpf_ktime_get_ns() };
        let mut ev = SessionEvent {
            ts_ns: now,
            duration_ns: now.saturating_sub(session.birth_ns),
            pid: session.owner_tgid,
            owner_from: session.owner_from,
            comm: session.comm,
            cgroup: session.owner_cgroup,
            ..SessionEvent::default()
        };
        addresses(&mut ev);
        let family = config.family;
        if family != 0 && ev.family as u32 != family {
            return;
        }
        if config.filter_lports != 0 && !port_wanted(0, ev.lport) {
            return;
        }
        if config.filter_dports != 0 && !port_wanted(PORT_WORDS, ev.rport) {
            return;
        }
        if config.has_bytes != 0 {
            // tcp_sock starts with its sock: the same pointer.
            if let (Some(tx), Some(rx)) = (
                read_field::<u64>(sk, config.sock.tcp_bytes_acked),
                read_field::<u64>(sk, config.sock.tcp_bytes_received),
            ) {
                (ev.tx_bytes, ev.rx_bytes) = (tx, rx);
                ev.flags |= session_flags::BYTES_KNOWN;
            }
        }
        if config.histogram_unit_ns != 0 {
            let family = ev.family as u64;
            let unit_ns = config.histogram_unit_ns;
            KEYED_HIST.record_with_sum(&DROPS, hist_key::DURATION | family, ev.duration_ns, unit_ns);
            KEYED_HIST.add_sum(&DROPS, hist_key::TX_BYTES | family, ev.tx_bytes);
            KEYED_HIST.add_sum(&DROPS, hist_key::RX_BYTES | family, ev.rx_bytes);
            return;
        }
        emit_value(ctx, &EVENTS, &DROPS, &ev);
    }

    /// Family, ports and addresses as the socket holds them.
    #[inline(always)]
    fn from_sock(config: &Config, sk: Ptr, ev: &mut SessionEvent) {
        ev.family = read_field(sk, config.sock.family).unwrap_or(0);
        ev.lport = u16::from_be(read_field(sk, config.sock.sport).unwrap_or(0));
        ev.rport = u16::from_be(read_field(sk, config.sock.dport).unwrap_or(0));
        if ev.family == AF_INET6 {
            ev.laddr = read_field(sk, config.sock.v6_rcv_saddr).unwrap_or_default();
            ev.raddr = read_field(sk, config.sock.v6_daddr).unwrap_or_default();
        } else {
            let l: [u8; 4] = read_field(sk, config.sock.rcv_saddr).unwrap_or_default();
            let r: [u8; 4] = read_field(sk, config.sock.daddr).unwrap_or_default();
            ev.laddr[..4].copy_from_slice(&l);
            ev.raddr[..4].copy_from_slice(&r);
        }
    }

    // ---- Raw tracepoint: inet_sock_set_state(sk, oldstate, newstate) ----

    #[named(programs::RAW_STATE)]
    #[raw_tracepoint(tracepoint = "inet_sock_set_state")]
    pub fn tcplife_raw_state(ctx: RawTracePointContext) -> i32 {
        if let Some(config) = CONFIG.get() {
            raw_state(&ctx, config);
        }
        0
    }

    #[inline(always)]
    fn raw_state(ctx: &RawTracePointContext, config: &Config) {
        let sk = ctx.arg::<Ptr>(0);
        if read_field::<u8>(sk, config.sock.protocol) != Some(IPPROTO_TCP as u8) {
            return;
        }
        on_state::<_, true>(ctx, config, sk, ctx.arg::<u64>(2) as i32, |ev| from_sock(config, sk, ev));
    }

    // ---- Tracepoint: the record carries the addresses ----

    #[named(programs::TP_STATE)]
    #[tracepoint(category = "sock", name = "inet_sock_set_state")]
    pub fn tcplife_tp_state(ctx: TracePointContext) -> u32 {
        if let Some(config) = CONFIG.get() {
            tp_state(&ctx, config);
        }
        0
    }

    #[inline(always)]
    fn tp_state(ctx: &TracePointContext, config: &Config) {
        let field = |offset: u32| unsafe { ctx.read_at::<u16>(offset as usize) }.unwrap_or(0);
        if field(config.tp_protocol) != IPPROTO_TCP {
            return;
        }
        let Ok(sk) = (unsafe { ctx.read_at::<u64>(config.tp_skaddr as usize) }) else { return };
        let Ok(new) = (unsafe { ctx.read_at::<i32>(config.tp_newstate as usize) }) else { return };
        on_state::<_, true>(ctx, config, sk as Ptr, new, |ev| {
            ev.family = field(config.tp_family);
            ev.lport = field(config.tp_sport);
            ev.rport = field(config.tp_dport);
            let (l, r) = if ev.family == AF_INET6 {
                (config.tp_saddr_v6, config.tp_daddr_v6)
            } else {
                (config.tp_saddr, config.tp_daddr)
            };
            let size = if ev.family == AF_INET6 { 16 } else { 4 };
            unsafe {
                let base = ctx.as_ptr() as Ptr;
                let _ = aya_ebpf::helpers::bpf_probe_read_kernel_buf(base.add(l as usize), &mut ev.laddr[..size]);
                let _ = aya_ebpf::helpers::bpf_probe_read_kernel_buf(base.add(r as usize), &mut ev.raddr[..size]);
            }
        });
    }

    // ---- kprobe: tcp_set_state(sk, state), before 4.16 ----

    #[named(programs::KP_STATE)]
    #[kprobe]
    pub fn tcplife_kp_state(ctx: ProbeContext) -> u32 {
        let (Some(config), Some(sk), Some(new)) = (CONFIG.get(), ctx.arg::<Ptr>(0), ctx.arg::<u64>(1)) else {
            return 0;
        };
        on_state::<_, KPROBES_READ_THE_TASK>(&ctx, config, sk, new as i32, |ev| from_sock(config, sk, ev));
        0
    }

    // ---- accept() hands a socket to a process ----

    /// `sys_exit_accept(4)`: the new descriptor → file → socket → sock.
    #[named(programs::ACCEPT_EXIT)]
    #[tracepoint]
    pub fn tcplife_accept_exit(ctx: TracePointContext) -> u32 {
        let Some(config) = CONFIG.get() else { return 0 };
        let Ok(fd) = (unsafe { ctx.read_at::<i64>(config.tp_exit_ret as usize) }) else { return 0 };
        let task = unsafe { bpf_get_current_task() } as Ptr;
        let Some(file) = tools_ebpf::file_of_fd(task, fd, &config.task, &config.file) else { return 0 };
        let socket: Ptr = read_field(file, config.file.f_private_data).unwrap_or(core::ptr::null());
        if let Some(sk) = read_field::<Ptr>(socket, config.sock.socket_sk) {
            set_owner::<true>(config, sk as u64, owner_from::ACCEPT);
        }
        0
    }

    /// fexit of `inet_csk_accept`, the accepted sock: its return value comes
    /// after the function's parameters, whose number changed in 6.10, and a
    /// tracing program reads its context at constant offsets only. One
    /// program per signature; user space loads the one the kernel's BTF has.
    #[inline(always)]
    fn accepted(sk: Ptr) {
        if let Some(config) = CONFIG.get().filter(|_| !sk.is_null()) {
            set_owner::<true>(config, sk as u64, owner_from::ACCEPT);
        }
    }

    #[named(programs::FEXIT_ACCEPT_ARG)]
    #[fexit]
    pub fn tcplife_fexit_accept_arg(ctx: FExitContext) -> i32 {
        accepted(ctx.arg(2));
        0
    }

    #[named(programs::FEXIT_ACCEPT_FLAGS)]
    #[fexit]
    pub fn tcplife_fexit_accept_flags(ctx: FExitContext) -> i32 {
        accepted(ctx.arg(4));
        0
    }

    /// `inet_csk_accept` returns the accepted sock.
    #[named(programs::KRET_ACCEPT)]
    #[kretprobe]
    pub fn tcplife_kret_accept(ctx: RetProbeContext) -> u32 {
        let sk: Ptr = ctx.ret();
        if let Some(config) = CONFIG.get().filter(|_| !sk.is_null()) {
            set_owner::<KPROBES_READ_THE_TASK>(config, sk as u64, owner_from::ACCEPT);
        }
        0
    }
}
