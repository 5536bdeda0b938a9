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

use anyhow::Result;
use clap::Parser;
use tools_common::tcplife::{owner_from, session_flags, SessionEvent};
use tools_user::{
    btf::Btf,
    cli::{CgroupArg, ContainersArg, EventArgs, EventHistogramArgs, PidArg, RuntimeArgs},
    columns::{Cell, Column, Columns},
    container, diag,
    driver::{
        events::{self, EventTool},
        histograms,
    },
    events::EventPath,
    lifetime,
    loader::Build,
    manual,
    output::{self, cstr, Format},
    plan::tcplife,
};

/// Trace the lifespan of TCP sessions and summarize.
#[derive(Parser, Debug)]
#[command(name = "tcplife", after_help = EXAMPLES)]
struct Args {
    /// Include a time column on output (HH:MM:SS).
    #[arg(short = 'T', long = "time", conflicts_with = "histogram")]
    time: bool,
    /// Include a timestamp column (seconds since the first session closed).
    #[arg(short = 't', long = "timestamp", conflicts_with = "histogram")]
    timestamp: bool,
    /// Wide column output (fits IPv6 addresses).
    #[arg(short = 'w', long = "wide", conflicts_with = "histogram")]
    wide: bool,
    /// Comma separated values output (BCC's spelling of --csv).
    #[arg(short = 's', conflicts_with = "histogram")]
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
    #[command(flatten)]
    cgroup: CgroupArg,
    #[command(flatten)]
    containers: ContainersArg,
    #[command(flatten)]
    histogram: EventHistogramArgs,
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
    ./tcplife --json    # JSON Lines, exact byte counts
    ./tcplife --histogram --milliseconds   # session durations by family";

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("'{s}' is not a port (1-65535)")),
    }
}

fn main() -> ExitCode {
    lifetime::main_with("tcplife", || {
        let mut args = manual::parse::<Args>(tools_user::man_page!("tcplife.8"));
        args.events.csv |= args.s;
        diag::init_logging(args.runtime.verbose);
        let load_options = args.runtime.load_options();
        let path = EventPath::of_event_tool(Build::choose(&load_options), &args.events, &args.histogram);
        let btf = Btf::for_tool(&load_options)?;
        let options = tcplife::Options {
            pid: args.pid.pid,
            family: match (args.ipv4, args.ipv6) {
                (true, _) => libc::AF_INET as u32,
                (_, true) => libc::AF_INET6 as u32,
                _ => 0,
            },
            local_ports: args.localport.clone(),
            remote_ports: args.remoteport.clone(),
            cgroup: args.cgroup.cgroup.as_deref(),
            containers: args.containers.containers,
            histogram_unit_ns: args.histogram.unit_ns(),
        };
        let loaded = tcplife::plan(&options, &btf, &path)?.load(&load_options)?;
        if loaded.parts.contains(&(tcplife::ACCEPT, Some(tcplife::SYSCALL_ACCEPT))) {
            diag::note(&format!("tcplife: {}", tcplife::ACCEPT_SYSCALL_TAX));
        }
        if args.histogram.histogram {
            // The keys of byte sums hold no histogram: only durations show.
            let (banner, labels) = ("Tracing TCP session durations... Hit Ctrl-C to end.", tcplife::key_labels);
            return histograms::run_event_histograms(loaded, banner, labels, &args.histogram, None, &args.runtime);
        }
        let format = args.events.format(&args.runtime);
        let mut columns = columns(&args, format);
        if args.containers.containers {
            container::add_columns(&mut columns.columns, |e| e.cgroup)?;
        }
        let mut tool = EventTool::new(columns, "Tracing TCP sessions... Hit Ctrl-C to end.");
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
