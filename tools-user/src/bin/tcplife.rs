//! tcplife: trace the lifespan of TCP sessions, as BCC's tcplife does: one
//! line per session that closes, with its owner's PID and COMM, its
//! addresses and ports, the bytes it moved and how long it lived. The owner
//! is the process that owned the socket on both sides, whoever closes
//! first (BCC prints whatever task ran the softirq when a server closes
//! first).

use std::{
    cell::OnceCell,
    net::{Ipv4Addr, Ipv6Addr},
    process::ExitCode,
};

use anyhow::{Context as _, Result};
use aya::maps::Array;
use clap::Parser;
use tools_common::tcplife::{maps, owner_from, programs, session_flags, Config, SessionEvent, PORT_WORDS};
use tools_user::{
    btf::Btf,
    cli::{EventArgs, PidArg, RuntimeArgs},
    columns::{Cell, Column, Columns},
    diag,
    driver::events::{self, EventTool},
    ebpf_object,
    events::EventPath,
    lifetime,
    loader::{self, Attach, Rung},
    offsets,
    output::{self, cstr, Format},
    tracefs,
};

/// Trace the lifespan of TCP sessions and summarize.
#[derive(Parser, Debug)]
#[command(name = "tcplife", after_help = EXAMPLES)]
struct Args {
    /// Include a time column on output (HH:MM:SS).
    #[arg(short = 'T', long = "time")]
    time: bool,
    /// Include a timestamp column (seconds since the first session closed).
    #[arg(short = 't', long = "timestamp")]
    timestamp: bool,
    /// Wide column output (fits IPv6 addresses).
    #[arg(short = 'w', long = "wide")]
    wide: bool,
    /// Comma separated values output (BCC's spelling of --csv).
    #[arg(short = 's')]
    s: bool,
    #[command(flatten)]
    pid: PidArg,
    /// Comma-separated list of local ports to trace.
    #[arg(short = 'L', long = "localport", value_delimiter = ',', value_parser = parse_port)]
    localport: Vec<u16>,
    /// Comma-separated list of remote ports to trace.
    #[arg(short = 'D', long = "remoteport", value_delimiter = ',', value_parser = parse_port)]
    remoteport: Vec<u16>,
    /// Trace IPv4 family only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    ipv4: bool,
    /// Trace IPv6 family only.
    #[arg(short = '6', long = "ipv6")]
    ipv6: bool,
    /// Trace sessions owned by tasks in this cgroup v2 directory (and below it) only.
    #[arg(short = 'c', long = "cgroup", value_name = "PATH", value_parser = tools_user::cli::cgroup_dir)]
    cgroup: Option<std::path::PathBuf>,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

const EXAMPLES: &str = "examples:
    ./tcplife           # trace all TCP connect()s
    ./tcplife -t        # include time column (HH:MM:SS)
    ./tcplife -w        # wider columns (fit IPv6)
    ./tcplife -stT      # csv output, with times & timestamps
    ./tcplife -p 181    # only trace PID 181
    ./tcplife -L 80     # only trace local port 80
    ./tcplife -L 80,81  # only trace local ports 80 and 81
    ./tcplife -D 80     # only trace remote port 80
    ./tcplife -4        # only trace IPv4 family
    ./tcplife -6        # only trace IPv6 family
    ./tcplife --json    # JSON Lines, exact byte counts";

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("'{s}' is not a port (1-65535)")),
    }
}

fn main() -> ExitCode {
    lifetime::main_with("tcplife", || {
        let mut args = Args::parse();
        args.events.csv |= args.s;
        diag::init_logging(args.runtime.verbose);
        let path = EventPath::choose(&args.runtime, &args.events);
        let (config, rungs) = plan(&args, &path)?;
        let mut sizes = path.max_entries();
        sizes.push((maps::SESSIONS, session_table_size()));
        let ports = (&args.localport, &args.remoteport);
        let fill = |ebpf: &mut aya::Ebpf| fill_ports(ebpf, ports.0, ports.1);
        let loaded = loader::load_with(ebpf_object!("tcplife"), &config, &sizes, rungs, &args.runtime, fill)?;
        let format = args.events.format(&args.runtime);
        let mut tool = EventTool::new(columns(&args, format), "Tracing TCP sessions... Hit Ctrl-C to end.");
        tool.inflight = "sessions";
        events::run(tool, loaded, &path)
    })
}

/// BCC's columns (`-w` widens them and adds IP; `-T`, `-t` add theirs),
/// and the JSON fields.
fn columns(a: &Args, format: Format) -> Columns<'_, SessionEvent> {
    let (comm, addr, kb) = if a.wide { (16, 39, 6) } else { (10, 15, 5) };
    let first_ts = OnceCell::new();
    let kib = |known: bool, bytes: u64| if known { Cell::UInt(bytes / 1024) } else { Cell::Unknown };
    let columns = vec![
        Column::new(|_| Cell::Text(output::hms_now())).text_csv("TIME", 8).text_if(a.time),
        Column::new(move |e: &SessionEvent| {
            let first = *first_ts.get_or_init(|| e.ts_ns);
            Cell::Fixed((e.ts_ns / 1000).saturating_sub(first / 1000) as f64 / 1e6, 6)
        })
        .text_csv("TIME(s)", 9)
        .text_if(a.timestamp),
        Column::new(|e: &SessionEvent| Cell::UInt(e.ts_ns)).json("ts_ns"),
        Column::new(|e: &SessionEvent| if e.pid == 0 { Cell::Unknown } else { Cell::UInt(e.pid.into()) })
            .text_csv("PID", 5)
            .json("pid"),
        Column::new(|e: &SessionEvent| if e.pid == 0 { Cell::Unknown } else { Cell::Bytes(cstr(&e.comm)) })
            .text_csv("COMM", comm)
            .cut()
            .json("comm"),
        Column::new(|e: &SessionEvent| Cell::UInt(ip_version(e))).text("IP", 2).text_if(a.wide),
        Column::new(|e: &SessionEvent| Cell::UInt(ip_version(e))).csv("IP").json("family"),
        Column::new(|e: &SessionEvent| Cell::Text(address(e, &e.laddr))).text_csv("LADDR", addr).json("laddr"),
        Column::new(|e: &SessionEvent| Cell::UInt(e.lport.into())).text_csv("LPORT", 5).json("lport"),
        Column::new(|e: &SessionEvent| Cell::Text(address(e, &e.raddr))).text_csv("RADDR", addr).json("raddr"),
        Column::new(|e: &SessionEvent| Cell::UInt(e.rport.into())).text_csv("RPORT", 5).json("rport"),
        Column::new(move |e: &SessionEvent| kib(bytes_known(e), e.tx_bytes)).text_csv("TX_KB", kb).right(),
        Column::new(move |e: &SessionEvent| kib(bytes_known(e), e.rx_bytes)).text_csv("RX_KB", kb).right(),
        Column::new(|e: &SessionEvent| if bytes_known(e) { Cell::UInt(e.tx_bytes) } else { Cell::Unknown })
            .json("tx_bytes"),
        Column::new(|e: &SessionEvent| if bytes_known(e) { Cell::UInt(e.rx_bytes) } else { Cell::Unknown })
            .json("rx_bytes"),
        // BCC: the span in whole microseconds, printed as milliseconds.
        Column::new(|e: &SessionEvent| Cell::Fixed((e.duration_ns / 1000) as f64 / 1000.0, 2)).text_csv("MS", 0),
        Column::new(|e: &SessionEvent| Cell::UInt(e.duration_ns)).json("duration_ns"),
        Column::new(|e: &SessionEvent| Cell::Text(owner_name(e.owner_from).into())).json("owner"),
    ];
    Columns { columns, format, record: "session" }
}

fn bytes_known(e: &SessionEvent) -> bool {
    e.flags & session_flags::BYTES_KNOWN != 0
}

fn ip_version(e: &SessionEvent) -> u64 {
    if e.family == libc::AF_INET6 as u16 {
        6
    } else {
        4
    }
}

/// As BCC's inet_ntop (an IPv4-mapped IPv6 address prints `::ffff:a.b.c.d`).
fn address(e: &SessionEvent, bytes: &[u8; 16]) -> String {
    if e.family == libc::AF_INET6 as u16 {
        Ipv6Addr::from(*bytes).to_string()
    } else {
        Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()
    }
}

fn owner_name(how: u32) -> &'static str {
    match how {
        owner_from::CONNECT => "connect",
        owner_from::ACCEPT => "accept",
        owner_from::CLOSE => "close",
        _ => "unknown",
    }
}

/// Entries of the kernel's socket → session table: every TCP socket of the
/// machine may be in it at once (it is emptied at CLOSE), so twice the
/// sockets allocated now, and never below BCC's 10240.
fn session_table_size() -> u32 {
    let sockstat = tools_user::procfs::read("/proc/net/sockstat").unwrap_or_default();
    let alloc = sockstat
        .lines()
        .find_map(|l| l.strip_prefix("TCP:"))
        .and_then(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.windows(2).find(|w| w[0] == "alloc").and_then(|w| w[1].parse::<u32>().ok())
        })
        .unwrap_or(0);
    alloc.saturating_mul(2).clamp(10240, 1 << 20)
}

/// Writes the -L and -D port bitmaps before any program attaches.
fn fill_ports(ebpf: &mut aya::Ebpf, local: &[u16], remote: &[u16]) -> Result<()> {
    if local.is_empty() && remote.is_empty() {
        return Ok(());
    }
    let mut map: Array<_, u64> = Array::try_from(ebpf.map_mut(maps::PORTS).context("no PORTS map")?)?;
    for (first_word, ports) in [(0, local), (PORT_WORDS, remote)] {
        let mut words = vec![0u64; PORT_WORDS as usize];
        for &port in ports {
            words[port as usize >> 6] |= 1 << (port & 63);
        }
        for (i, word) in words.into_iter().enumerate().filter(|(_, w)| *w != 0) {
            map.set(first_word + i as u32, word, 0)?;
        }
    }
    Ok(())
}

/// The configuration and the rungs, best first.
fn plan(args: &Args, path: &EventPath) -> Result<(Config, Vec<Rung>)> {
    let mut config = Config {
        target_tgid: args.pid.pid.unwrap_or(0),
        family: if args.ipv4 {
            libc::AF_INET as u32
        } else if args.ipv6 {
            libc::AF_INET6 as u32
        } else {
            0
        },
        filter_lports: !args.localport.is_empty() as u32,
        filter_dports: !args.remoteport.is_empty() as u32,
        ..Config::default()
    };
    let btf = Btf::for_tool(&args.runtime)?;
    if let Some(cgroup) = &args.cgroup {
        config.cgroup = tools_user::cgroup::filter(cgroup, btf.as_ref().ok())?;
    }
    // The socket's members: addresses on the raw-tracepoint and kprobe
    // rungs, byte counters on every rung.
    let no_sock = match btf.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(offsets::sock) {
        Ok(sock) => {
            config.sock = sock;
            config.has_bytes = (sock.tcp_bytes_acked != 0 && sock.tcp_bytes_received != 0) as u32;
            None
        }
        Err(err) => Some(format!("no struct sock offsets: {err:#}")),
    };
    if config.has_bytes == 0 {
        log::info!("bytes: unknown (no tcp_sock byte counters in BTF); printed as '-'");
    }
    // accept() leads to its socket through the descriptor table.
    let accept = btf.as_ref().ok().and_then(|btf| {
        let ret = tracefs::Format::read("syscalls", "sys_exit_accept4").and_then(|f| f.field("ret"));
        match (offsets::task(btf), offsets::file(btf), ret, &no_sock) {
            (Ok(task), Ok(file), Ok((ret, _)), None) => {
                (config.task, config.file, config.tp_exit_ret) = (task, file, ret);
                Some(())
            }
            _ => None,
        }
    });
    if accept.is_none() {
        log::info!("accept: owners of accepted sockets known only when they close (no BTF or no accept tracepoints)");
    }
    let no_tracepoint = tracepoint_fields(&mut config).err().map(|e| format!("{e:#}"));

    let with_accept = |rung: Rung| match accept {
        Some(()) => rung
            .program(programs::ACCEPT_EXIT, Attach::tracepoint("syscalls", "sys_exit_accept"))
            .program(programs::ACCEPT_EXIT, Attach::tracepoint("syscalls", "sys_exit_accept4")),
        None => rung,
    };
    let rungs = vec![
        with_accept(
            Rung::new("raw_tracepoint")
                .program(path.program(programs::RAW_STATE), Attach::raw_tp("inet_sock_set_state")),
        )
        .unusable_if(no_sock.clone()),
        with_accept(
            Rung::new("tracepoint")
                .program(path.program(programs::TP_STATE), Attach::tracepoint("sock", "inet_sock_set_state")),
        )
        .unusable_if(no_tracepoint),
        Rung::new("kprobe")
            .program(path.program(programs::KP_STATE), Attach::kprobe(&["tcp_set_state"]))
            .program(programs::KRET_ACCEPT, Attach::kretprobe(&["inet_csk_accept"]))
            .unusable_if(no_sock),
    ];
    Ok((config, rungs))
}

fn tracepoint_fields(config: &mut Config) -> Result<()> {
    let f = tracefs::Format::read("sock", "inet_sock_set_state")?;
    let at = |name: &str| f.field(name).map(|(offset, _)| offset);
    config.tp_skaddr = at("skaddr")?;
    config.tp_oldstate = at("oldstate")?;
    config.tp_newstate = at("newstate")?;
    config.tp_sport = at("sport")?;
    config.tp_dport = at("dport")?;
    config.tp_family = at("family")?;
    config.tp_protocol = at("protocol")?;
    config.tp_saddr = at("saddr")?;
    config.tp_daddr = at("daddr")?;
    config.tp_saddr_v6 = at("saddr_v6")?;
    config.tp_daddr_v6 = at("daddr_v6")?;
    Ok(())
}
