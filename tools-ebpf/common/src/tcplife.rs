//! tcplife's programs, session table, event and configuration.

use crate::offsets::{FileOffsets, SockOffsets, TaskOffsets};

/// Its programs' names (see the crate root); the `*_STATE` ones emit
/// events and have `_perf` twins.
pub mod programs {
    /// `raw_tp/inet_sock_set_state(sk, oldstate, newstate)`: all from the socket.
    pub const RAW_STATE: &str = "tcplife_raw_state";
    /// `sock:inet_sock_set_state`: addresses from the record.
    pub const TP_STATE: &str = "tcplife_tp_state";
    /// `kprobe/tcp_set_state(sk, state)`, for kernels before 4.16.
    pub const KP_STATE: &str = "tcplife_kp_state";
    /// `syscalls:sys_exit_accept` and `sys_exit_accept4`: the new
    /// descriptor leads to the accepted socket, whose owner it records.
    pub const ACCEPT_EXIT: &str = "tcplife_accept_exit";
    /// `kretprobe/inet_csk_accept`, which returns the accepted socket.
    pub const KRET_ACCEPT: &str = "tcplife_kret_accept";
    /// `fexit/inet_csk_accept(sk, arg)` (6.10+): the return value follows
    /// the two parameters.
    pub const FEXIT_ACCEPT_ARG: &str = "tcplife_fexit_accept_arg";
    /// `fexit/inet_csk_accept(sk, flags, err, kern)` (before 6.10): it
    /// follows the four.
    pub const FEXIT_ACCEPT_FLAGS: &str = "tcplife_fexit_accept_flags";
}

/// Map names (beside the shared event maps).
pub mod maps {
    /// Sessions open: socket → its start, owner and addresses; sized by user space.
    pub const SESSIONS: &str = "SESSIONS";
    /// `-L` then `-D` ports, one bit each.
    pub const PORTS: &str = "PORTS";
}

/// TCP states (include/net/tcp_states.h), the same in every kernel.
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const SYN_RECV: i32 = 3;
    pub const FIN_WAIT1: i32 = 4;
    pub const CLOSE: i32 = 7;
    pub const LAST_ACK: i32 = 9;
}

/// How a session's owner was known: the last moment the socket changed
/// hands in a process's context.
pub mod owner_from {
    /// No process ever owned it while traced (closed before any accept).
    pub const UNKNOWN: u32 = 0;
    /// The process called connect() (SYN_SENT).
    pub const CONNECT: u32 = 1;
    /// accept() returned it to the process.
    pub const ACCEPT: u32 = 2;
    /// The process closed or shut it down (FIN_WAIT1, or LAST_ACK after the peer's FIN).
    pub const CLOSE: u32 = 3;
}

/// `flags` of a [`SessionEvent`].
pub mod session_flags {
    /// `tx_bytes` and `rx_bytes` were read from the `tcp_sock` (they need BTF).
    pub const BYTES_KNOWN: u16 = 1;
}

/// What the kernel keeps per traced socket, from its birth (the last
/// transition into a state below FIN_WAIT1) to CLOSE.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Session {
    pub birth_ns: u64,
    pub owner_tgid: u32,
    /// One of [`owner_from`].
    pub owner_from: u32,
    pub comm: [u8; 16],
    /// The owner ran in the `-c` cgroup when it was recorded.
    pub owner_in_cgroup: u32,
    /// The state it was born in: a socket that closes still in SYN_RECV
    /// is not a session (see tcplife's `on_state`).
    pub birth_state: i32,
    /// The owner's cgroup v2 inode with `--containers` (else 0).
    pub owner_cgroup: u32,
    pub _pad: u32,
}

/// One session that closed, handed over at CLOSE.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct SessionEvent {
    /// CLOCK_MONOTONIC at CLOSE.
    pub ts_ns: u64,
    pub duration_ns: u64,
    /// `tcp_sock.bytes_acked` and `.bytes_received`.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// The owner's TGID; 0 when unknown.
    pub pid: u32,
    pub owner_from: u32,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    pub lport: u16,
    pub rport: u16,
    /// Bits of [`session_flags`].
    pub flags: u16,
    /// IPv4 addresses in the first 4 bytes.
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub comm: [u8; 16],
    /// The owner's cgroup v2 inode with `--containers` (else 0).
    pub cgroup: u32,
    pub _pad: u32,
}

/// Which ports a filter lets through: one bit per port, `PORT_WORDS` words
/// each for local then remote ports, so a filter costs one lookup whatever
/// its length.
pub const PORT_WORDS: u32 = 65536 / 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// `-p`: only sessions this process owned; 0 = all.
    pub target_tgid: u32,
    /// `-4` / `-6`: AF_INET or AF_INET6; 0 = both.
    pub family: u32,
    /// `-L` / `-D`: the port bitmaps (map `PORTS`) hold a filter.
    pub filter_lports: u32,
    pub filter_dports: u32,
    /// `-c`: only sessions whose owner ran in this cgroup.
    pub cgroup: crate::CgroupFilter,
    pub sock: SockOffsets,
    /// `tcp_sock` byte counters are at known offsets (BTF).
    pub has_bytes: u32,
    pub task: TaskOffsets,
    pub file: FileOffsets,
    /// `sock:inet_sock_set_state` record layout.
    pub tp_skaddr: u32,
    pub tp_oldstate: u32,
    pub tp_newstate: u32,
    pub tp_sport: u32,
    pub tp_dport: u32,
    pub tp_family: u32,
    pub tp_protocol: u32,
    pub tp_saddr: u32,
    pub tp_daddr: u32,
    pub tp_saddr_v6: u32,
    pub tp_daddr_v6: u32,
    /// `sys_exit_accept(4)`: `ret`, the new descriptor.
    pub tp_exit_ret: u32,
    /// Non-zero: each session is counted in the keyed histogram (see
    /// [`hist_key`]), its duration in units of this many nanoseconds (the
    /// exporter's 1, `--histogram`'s 1000 or 1000000), its sums in
    /// nanoseconds and bytes, and no event is sent.
    pub histogram_unit_ns: u32,
    pub _pad: u32,
}

/// Keys of the exporter's keyed histogram: the duration's histogram and
/// sum (ns), and the sums of the bytes sent and received, each by address
/// family (`key | family`).
pub mod hist_key {
    pub const DURATION: u64 = 0;
    pub const TX_BYTES: u64 = 1 << 8;
    pub const RX_BYTES: u64 = 2 << 8;
}

const _: () = assert!(core::mem::size_of::<Config>() == core::mem::offset_of!(Config, _pad) + 4, "Config has padding");

crate::plain_data!(Config, Session, SessionEvent);

crate::time_first!(SessionEvent, ts_ns);

#[cfg(feature = "user")]
impl crate::Event for SessionEvent {}
