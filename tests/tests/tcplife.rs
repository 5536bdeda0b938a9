//! tcplife against TCP sessions whose answer is known: a client and a
//! server process of their own names, in a network namespace of their own
//! (shared/reference/bcc-tools.md §5 and §10).

use std::time::Duration;

use integration_tests::*;
use serde_json::Value;

/// The default header, BCC's byte for byte.
const HEADER: &str = "PID   COMM       LADDR           LPORT RADDR           RPORT TX_KB RX_KB MS";
const READY_JSON: &str = "Tracing TCP sessions";
/// The client sends N bytes, the server M.
const N: u64 = 1_024_000;
const M: u64 = 512_000;

/// The processes of one `tcp-session` workload.
#[derive(Debug, Clone, Copy)]
struct Session {
    server: u32,
    client: u32,
    port: u16,
}

fn start_session(args: &[&str]) -> (Workload, Session) {
    let mut w = Workload::new(&[&["tcp-session"], args].concat());
    let line = w.line();
    let f: Vec<&str> = line.split_whitespace().collect();
    let session = Session { server: f[1].parse().unwrap(), client: f[3].parse().unwrap(), port: f[5].parse().unwrap() };
    (w, session)
}

/// Runs tcplife with `tool_args` around one session; returns what it
/// printed and who took part.
fn trace(tool_args: &[&str], ready: &str, session_args: &[&str]) -> (Output, Session) {
    let _serial = serial();
    let (mut w, session) = start_session(session_args);
    let out = w.traced_by(Running::start("tcplife", tool_args, ready));
    out.assert_complete("tcplife");
    (out, session)
}

fn sizes(closer: &str) -> Vec<String> {
    ["4", &N.to_string(), &M.to_string(), closer, "tl-client", "tl-server"].map(String::from).to_vec()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// JSON records of sessions on `port` (either end).
fn records(out: &Output, port: u16) -> Vec<Value> {
    json_lines(&out.stdout).into_iter().filter(|r| r["lport"] == port || r["rport"] == port).collect()
}

/// Text rows of the default layout on `port`: PID COMM LADDR LPORT RADDR RPORT TX_KB RX_KB MS.
fn rows(out: &Output, port: u16) -> Vec<Vec<String>> {
    out.stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|f| f.len() == 9 && (f[3] == port.to_string() || f[5] == port.to_string()))
        .collect()
}

fn by_pid(records: &[Value], pid: u32) -> &Value {
    records.iter().find(|r| r["pid"] == pid).unwrap_or_else(|| panic!("no record of pid {pid}: {records:?}"))
}

/// Both ends of one session, each with its own process, exact counters
/// (data plus the SYN and FIN sequence space acknowledged, as the kernel
/// counts them) and the duration of the exchange.
fn assert_both_ends(out: &Output, s: Session, closer: &str) {
    let records = records(out, s.port);
    assert_eq!(records.len(), 2, "{}", out.stdout);
    let client = by_pid(&records, s.client);
    let server = by_pid(&records, s.server);
    assert_eq!((client["comm"].as_str(), client["rport"].as_u64()), (Some("tl-client"), Some(s.port as u64)));
    assert_eq!((server["comm"].as_str(), server["lport"].as_u64()), (Some("tl-server"), Some(s.port as u64)));
    assert_eq!((client["family"].as_u64(), client["laddr"].as_str()), (Some(4), Some("127.0.0.1")));
    // The client's SYN and FIN are acknowledged on top of its data, the
    // server's FIN on top of its own; each end receives the peer's data and FIN.
    assert_eq!((client["tx_bytes"].as_u64(), client["rx_bytes"].as_u64()), (Some(N + 2), Some(M + 1)), "{client}");
    assert_eq!((server["tx_bytes"].as_u64(), server["rx_bytes"].as_u64()), (Some(M + 1), Some(N + 1)), "{server}");
    for end in [client, server] {
        assert!(end["duration_ns"].as_u64().unwrap() >= 300_000_000, "the closer waits 300 ms: {end}");
        assert_eq!(end["owner"], "close", "each end's owner closed it ({closer} first): {end}");
    }
}

#[test]
fn client_closes_first() {
    let (out, s) = trace(&["--json"], READY_JSON, &args(&sizes("client")));
    assert_both_ends(&out, s, "client");
}

/// The case BCC and libbpf-tools get wrong: the server's line carries
/// whatever task ran the softirq. Here it is the server's.
#[test]
fn server_closes_first() {
    let (out, s) = trace(&["--json"], READY_JSON, &args(&sizes("server")));
    assert_both_ends(&out, s, "server");
}

/// A server socket that no process closes (the client resets the
/// connection, so it closes in softirq) is owned by the process accept()
/// handed it to: through fexit or a kretprobe where the kernel allows them,
/// else through the accept syscalls' tracepoints, whose cost is said.
#[test]
fn a_reset_session_is_owned_by_its_accepter() {
    let (out, s) = trace(&["--json", "--verbose"], READY_JSON, &args(&sizes("reset")));
    let records = records(&out, s.port);
    assert_eq!(records.len(), 2, "{}", out.stdout);
    let server = by_pid(&records, s.server);
    assert_eq!((server["comm"].as_str(), server["owner"].as_str()), (Some("tl-server"), Some("accept")), "{server}");
    // The client's reset goes straight to CLOSE: its owner is from connect.
    assert_eq!(by_pid(&records, s.client)["owner"], "connect");
    // The kprobe rung's kretprobe is part of it; the others say which path.
    let Some(taken) = out.stderr.lines().find(|l| l.contains(": accept through ")) else {
        assert!(out.stderr.contains("rung kprobe: all"), "{}", out.stderr);
        return;
    };
    let taxed = out.stderr.contains("every system call on the host takes the slow path");
    assert_eq!(taken.ends_with("syscall tracepoints"), taxed, "{}", out.stderr);
    if std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        assert!(!taxed, "syscall tracepoints where kprobes work: {}", out.stderr);
    }
}

#[test]
fn default_text_layout() {
    let (out, s) = trace(&[], HEADER, &args(&sizes("client")));
    assert_eq!(out.stdout.lines().next(), Some(HEADER));
    let rows = rows(&out, s.port);
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    let client = rows.iter().find(|r| r[0] == s.client.to_string()).expect("client row");
    let server = rows.iter().find(|r| r[0] == s.server.to_string()).expect("server row");
    // Whole KiB, as BCC's %d of bytes / 1024.
    assert_eq!((client[1].as_str(), client[6].as_str(), client[7].as_str()), ("tl-client", "1000", "500"));
    assert_eq!((server[1].as_str(), server[6].as_str(), server[7].as_str()), ("tl-server", "500", "1000"));
    let ms: f64 = client[8].parse().unwrap();
    assert!(ms >= 300.0 && client[8].split('.').nth(1).map(str::len) == Some(2), "{client:?}");
    // Column positions: COMM at 6, LADDR at 17, as BCC's %-5d %-10.10s %-15s.
    let line = out.stdout.lines().find(|l| l.starts_with(&s.client.to_string())).unwrap();
    assert_eq!((&line[6..15], &line[17..26]), ("tl-client", "127.0.0.1"), "{line}");
}

#[test]
fn ipv6_and_ipv4_mapped_sockets() {
    let mut v6 = sizes("client");
    v6[0] = "6".into();
    let (out, s) = trace(&["--json"], READY_JSON, &args(&v6));
    let records = records(&out, s.port);
    assert_eq!(records.len(), 2, "{}", out.stdout);
    assert!(records.iter().all(|r| r["family"] == 6 && r["laddr"] == "::1" && r["raddr"] == "::1"), "{records:?}");
    v6[0] = "mapped".into();
    let (out, s) = trace(&["-w"], "RPORT", &args(&v6));
    let line = out.stdout.lines().find(|l| l.starts_with(&s.client.to_string())).expect("client line");
    // As BCC prints them: family 6, the address ::ffff:127.0.0.1.
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((f[2], f[3], f[5]), ("6", "::ffff:127.0.0.1", "::ffff:127.0.0.1"), "{line}");
}

#[test]
fn refused_connect_is_a_session_of_its_own() {
    let mut refused = sizes("refused");
    refused[1] = "0".into();
    let (out, s) = trace(&["--json"], READY_JSON, &args(&refused));
    let records = records(&out, s.port);
    assert_eq!(records.len(), 1, "{}", out.stdout);
    let r = &records[0];
    assert_eq!((r["pid"].as_u64(), r["comm"].as_str()), (Some(s.client as u64), Some("tl-client")));
    assert_eq!(
        (r["tx_bytes"].as_u64(), r["rx_bytes"].as_u64(), r["owner"].as_str()),
        (Some(0), Some(0), Some("connect"))
    );
    assert!(r["duration_ns"].as_u64().unwrap() < 1_000_000_000, "{r}");
}

#[test]
fn a_session_open_before_the_tool_started_is_not_printed() {
    let mut pre = sizes("client");
    pre.push("pre".into());
    let (out, s) = trace(&["--json"], READY_JSON, &args(&pre));
    assert!(records(&out, s.port).is_empty(), "{}", out.stdout);
}

#[test]
fn filters() {
    let one = |extra: &[&str], family: &str| -> (Vec<Value>, Session) {
        let mut v = sizes("server");
        v[0] = family.into();
        let _serial = serial();
        let (mut w, s) = start_session(&args(&v));
        let (server, client, port) = (s.server.to_string(), s.client.to_string(), s.port.to_string());
        let tool_args: Vec<&str> = ["--json"].iter().chain(extra).copied().collect();
        let tool_args = filled_in(&tool_args, &[("SERVER", &server), ("CLIENT", &client), ("PORT", &port)]);
        let out = w.traced_by(Running::start("tcplife", &tool_args, READY_JSON));
        (records(&out, s.port), s)
    };
    let (r, s) = one(&["-p", "SERVER"], "4");
    assert!(r.len() == 1 && r[0]["pid"] == s.server, "-p on the server: {r:?}");
    let (r, s) = one(&["-p", "CLIENT"], "4");
    assert!(r.len() == 1 && r[0]["pid"] == s.client, "-p on the client: {r:?}");
    let (r, s) = one(&["-L", "PORT"], "4");
    assert!(r.len() == 1 && r[0]["pid"] == s.server, "-L: the server's end: {r:?}");
    let (r, s) = one(&["-D", "1,PORT,65535"], "4");
    assert!(r.len() == 1 && r[0]["pid"] == s.client, "-D: the client's end: {r:?}");
    let (r, _) = one(&["-6"], "4");
    assert!(r.is_empty(), "-6 on IPv4: {r:?}");
    let (r, _) = one(&["-4"], "6");
    assert!(r.is_empty(), "-4 on IPv6: {r:?}");
    let (r, _) = one(&["-6"], "6");
    assert_eq!(r.len(), 2, "-6 on IPv6: {r:?}");
}

#[test]
fn wide_and_time_columns() {
    let (out, s) = trace(&["-w", "-T", "-t"], "RPORT", &args(&sizes("client")));
    let header = "TIME     TIME(s)   PID   COMM             IP LADDR                                   LPORT \
                  RADDR                                   RPORT  TX_KB  RX_KB MS";
    assert_eq!(out.stdout.lines().next(), Some(header));
    let line = out.stdout.lines().find(|l| l.contains(&format!(" {} ", s.client))).expect("client line");
    let b = line.as_bytes();
    assert!(b[2] == b':' && b[5] == b':' && b[8] == b' ', "{line}");
    assert_eq!(line[9..18].trim().split('.').nth(1).map(str::len), Some(6), "{line}");
    assert_eq!(&line[25..34], "tl-client", "COMM is 16 wide: {line}");
    assert_eq!(&line[42..44], "4 ", "{line}");
}

#[test]
fn csv_parses_with_a_real_csv_parser() {
    let mut long = sizes("client");
    long[4] = "tl-long-client1".into();
    for flag in ["-s", "--csv"] {
        let (out, s) = trace(&[flag, "-T", "-t"], "RPORT", &args(&long));
        let rows = parse_csv(&out.stdout);
        assert_eq!(
            rows[0],
            ["TIME", "TIME(s)", "PID", "COMM", "IP", "LADDR", "LPORT", "RADDR", "RPORT", "TX_KB", "RX_KB", "MS"]
        );
        let client = rows.iter().find(|r| r[2] == s.client.to_string()).expect("client row");
        assert_eq!(
            &client[3..],
            [
                "tl-long-client1",
                "4",
                "127.0.0.1",
                &client[6],
                "127.0.0.1",
                &s.port.to_string(),
                "1000",
                "500",
                &client[11]
            ]
        );
        assert!(client[11].parse::<f64>().unwrap() >= 300.0);
    }
}

#[test]
fn hostile_comm_is_escaped_in_text_and_exact_in_json() {
    let mut hostile = sizes("client");
    hostile[4] = "tl\nc\u{1b}x".into();
    let (out, s) = trace(&[], HEADER, &args(&hostile));
    assert!(!out.stdout.contains('\u{1b}'), "ESC reached the output raw");
    let line = out.stdout.lines().find(|l| l.starts_with(&s.client.to_string())).expect("client line");
    assert_eq!(&line[6..16], "tl\\nc\\x1bx", "{line}");
    let (out, s) = trace(&["--json"], READY_JSON, &args(&hostile));
    assert_eq!(by_pid(&records(&out, s.port), s.client)["comm"], "tl\nc\u{1b}x");
}

/// Each rung that can run here; without BTF the counters are unknown,
/// never 0.
#[test]
fn every_rung_this_kernel_has() {
    for rung in ["raw_tracepoint", "tracepoint"] {
        let (out, s) = trace(&["--json", "--rung", rung], READY_JSON, &args(&sizes("server")));
        assert_both_ends(&out, s, "server");
    }
    let file = std::env::temp_dir().join(format!("tcplife-test-{}.btf", std::process::id()));
    std::fs::copy("/sys/kernel/btf/vmlinux", &file).unwrap();
    let (out, s) = trace(
        &["--json", "--hide-kernel-btf", "--btf", file.to_str().unwrap(), "--rung", "raw_tracepoint"],
        READY_JSON,
        &args(&sizes("server")),
    );
    assert_both_ends(&out, s, "server");
    let _ = std::fs::remove_file(&file);

    let _serial = serial();
    let (mut w, s) = start_session(&args(&sizes("server")));
    let no_btf = ["EBPF_TOOLS_BTF", "EBPF_TOOLS_RUNG"];
    let out = w.traced_by(Running::start_without("tcplife", &["--hide-kernel-btf", "--verbose"], HEADER, &no_btf));
    assert!(out.stderr.contains("raw_tracepoint: not usable: no struct sock offsets"), "{}", out.stderr);
    assert!(out.stderr.contains("bytes: unknown"), "{}", out.stderr);
    let rows = rows(&out, s.port);
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    assert!(rows.iter().all(|r| r[6] == "-" && r[7] == "-"), "bytes unknown, never 0: {rows:?}");
    // Without BTF the accepted socket's owner is still known: it closed it.
    assert!(rows.iter().any(|r| r[0] == s.server.to_string() && r[1] == "tl-server"), "{rows:?}");
}

#[test]
fn kprobe_rung_fails_clearly_where_the_kernel_has_no_kprobes() {
    // The guests of `cargo xtask vm-test` force the kprobe rung for every test.
    if std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        let (out, s) = trace(&["--json", "--rung", "kprobe"], READY_JSON, &args(&sizes("server")));
        assert_both_ends(&out, s, "server");
    } else {
        let out = run("tcplife", &["--rung", "kprobe"]);
        assert_eq!(out.code(), Some(1), "{out:?}");
        assert!(out.stderr.contains("tried:") && out.stderr.contains("kprobe:"), "{}", out.stderr);
    }
}

/// Many short connections: every session is printed, or counted as lost
/// when the reader stalls.
fn storm(extra: &[&str], stall: bool) -> Lost {
    let _serial = serial();
    let count: u64 = std::env::var("EBPF_TOOLS_TEST_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let mut w = Workload::new(&["tcp-storm", &count.to_string()]);
    let port: u16 = w.line().trim_start_matches("port ").parse().unwrap();
    let port_arg = port.to_string();
    // Both ends of each connection: -L on the server's, -D on the client's.
    let mut args = vec!["--json", "-L", &port_arg];
    args.extend(extra);
    let mut client_args = vec!["--json", "-D", &port_arg];
    client_args.extend(extra);
    let tools = [Running::start("tcplife", &args, READY_JSON), Running::start("tcplife", &client_args, READY_JSON)];
    if stall {
        for t in &tools {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(t.pid(), libc::SIGSTOP) };
        }
    }
    w.go();
    w.wait(Duration::from_secs(120));
    // A session is reported when its last packet has been processed, which
    // an emulated guest may do well after the workload has exited: each
    // tool runs until it has accounted for every session (the limit only
    // bounds a hang), and Ctrl-C then shows whether it counted exactly.
    let outputs = tools.map(|mut tool| {
        if stall {
            unsafe { libc::kill(tool.pid(), libc::SIGCONT) };
        }
        tool.wait_until(|stdout, _| accounted(stdout, port) >= count, Duration::from_secs(60));
        tool.interrupt()
    });
    let mut total_lost = Lost::default();
    for out in &outputs {
        let printed = records(out, port).len() as u64;
        let lost = Lost::from_stderr("tcplife", &out.stderr);
        eprintln!("{extra:?}: {printed} printed + {lost:?} of {count}");
        let context = format!("{}\n{}\n{}", out.stderr, out.stdout, unpaired(&outputs, port));
        lost.assert_accounts_for(printed, count, &context);
        // The JSON records say the same, by reason.
        let in_records = |reason: &str| json_lines(&out.stdout).iter().filter_map(|r| r[reason].as_u64()).sum::<u64>();
        assert_eq!((in_records("count"), in_records("recursion_miss")), (lost.total, lost.skipped));
        assert_eq!(out.code(), Some(if lost.total > 0 { 3 } else { 0 }));
        total_lost.total += lost.total;
        total_lost.skipped += lost.skipped;
    }
    total_lost
}

/// Sessions on `port` a --json run has printed or counted as lost so far.
fn accounted(stdout: &str, port: u16) -> u64 {
    let records = stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok());
    records
        .map(|r| match r["type"].as_str() {
            Some("lost") => r["count"].as_u64().unwrap_or(0),
            Some("session") if r["lport"] == port || r["rport"] == port => 1,
            _ => 0,
        })
        .sum()
}

/// The client ports one end printed and the other did not: which sessions
/// went missing, and on which end.
fn unpaired(outputs: &[Output; 2], port: u16) -> String {
    let client_ports = |out: &Output, field: &str| -> std::collections::BTreeSet<u64> {
        records(out, port).iter().filter_map(|r| r[field].as_u64()).collect()
    };
    let (server, client) = (client_ports(&outputs[0], "rport"), client_ports(&outputs[1], "lport"));
    format!(
        "client ports only the client's end printed: {:?}; only the server's: {:?}",
        client.difference(&server).collect::<Vec<_>>(),
        server.difference(&client).collect::<Vec<_>>()
    )
}

#[test]
fn a_storm_of_connections_is_accounted_for() {
    let lost = storm(&[], false);
    assert_eq!(lost.counted_by_programs(), 0, "the default buffers hold a storm of short connections: {lost:?}");
}

#[test]
fn loss_is_counted_exactly_when_the_reader_stalls() {
    let lost = storm(&["--buffer-pages", "1"], true);
    assert!(lost.counted_by_programs() > 0, "nothing was lost: the test did not stall the reader");
}

/// `--histogram`: every session counted in the kernel as it closes, by
/// family; `-D` keeps the client's end only.
#[test]
fn histograms_of_session_durations_by_family() {
    let _serial = serial();
    let (mut w, s) = start_session(&args(&sizes("client")));
    let port = s.port.to_string();
    let tool_args = ["--histogram", "--milliseconds", "--json", "-D", &port];
    let out = w.traced_by(Running::start("tcplife", &tool_args, "Tracing TCP session durations"));
    out.assert_complete("tcplife");
    let histograms: Vec<Value> = json_lines(&out.stdout).into_iter().filter(|r| r["type"] == "histogram").collect();
    assert_eq!(histograms.len(), 1, "{}", out.stdout);
    let h = &histograms[0];
    assert_eq!(
        (h["key"]["family"].as_str(), h["count"].as_u64(), h["unit"].as_str()),
        (Some("ipv4"), Some(1), Some("msecs")),
        "{h}"
    );
    // Milliseconds: the session lived less than the test's minute, not 10^6 times longer.
    assert!(h["max"].as_u64().unwrap() < 60_000, "{h}");
}
