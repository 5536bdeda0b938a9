//! gethostlatency against lookups whose answer is known: a DNS server of
//! the test's own that answers after a fixed delay, private /etc/hosts and
//! /etc/resolv.conf (in the workload's own namespaces), and C libraries
//! that BCC and libbpf-tools would miss (shared/reference/bcc-tools.md §6).

use std::{process::Command, time::Duration};

use integration_tests::*;
use serde_json::Value;

const HEADER: &str = "TIME      PID     COMM                  LATms HOST";
const READY_MACHINE: &str = "Tracing host name lookups";
/// The DNS server's delay, in milliseconds.
const DELAY: u64 = 100;

/// A `resolve` workload run by `wrapper` (`env VAR=...`, a shell), ready
/// (namespaces and DNS server up), not started.
fn resolver(wrapper: &[&str], hosts: &str, calls: &[String]) -> Workload {
    let mut args = vec!["resolve".to_owned(), DELAY.to_string(), hosts.to_owned()];
    args.extend(calls.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut w = Workload::with_wrapper(wrapper, &args);
    assert_eq!(w.line(), "ready");
    w
}

/// Runs gethostlatency with `args` around one resolver's `calls`.
fn trace(args: &[&str], ready: &str, hosts: &str, calls: &[String]) -> (Output, u32) {
    let _serial = serial();
    let mut w = resolver(&[], hosts, calls);
    let pid = w.pid();
    let args = filled_in(args, &[("PID", &pid.to_string())]);
    let out = w.traced_by(Running::start("gethostlatency", &args, ready));
    out.assert_complete("gethostlatency");
    (out, pid)
}

fn records(out: &Output, pid: u32) -> Vec<Value> {
    json_lines(&out.stdout).into_iter().filter(|r| r["pid"] == pid).collect()
}

/// Text rows of `pid`: (COMM, LATms, HOST).
fn rows(out: &Output, pid: u32) -> Vec<(String, f64, String)> {
    out.stdout
        .lines()
        .filter(|l| l.get(10..17).is_some_and(|p| p.trim() == pid.to_string()))
        .map(|l| (l[18..34].trim().to_owned(), l[35..45].trim().parse().unwrap(), l[46..].to_owned()))
        .collect()
}

#[test]
fn a_lookup_against_a_slow_dns_server() {
    let name = format!("{}.test", unique_tag("h"));
    let (out, pid) = trace(&[], HEADER, "-", &[format!("getaddrinfo:{name}")]);
    assert_eq!(out.stdout.lines().next(), Some(HEADER));
    let rows = rows(&out, pid);
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    let (comm, ms, host) = &rows[0];
    assert_eq!((comm.as_str(), host.as_str()), ("workload", name.as_str()));
    assert!(*ms >= DELAY as f64 && *ms < DELAY as f64 + 900.0, "the server answers after {DELAY} ms: {ms}");
    let line = out.stdout.lines().find(|l| l.ends_with(&name)).unwrap();
    let b = line.as_bytes();
    assert!(
        b[2] == b':' && b[5] == b':' && b[8] == b' ' && line[35..45].split('.').nth(1).map(str::len) == Some(2),
        "{line}"
    );
}

#[test]
fn failed_and_local_lookups_in_json() {
    let id = unique_tag("h");
    let (nx, local) = (format!("nx-{id}.test"), format!("local-{id}"));
    let calls = [format!("getaddrinfo:{nx}"), format!("getaddrinfo:{local}")];
    let (out, pid) = trace(&["--json"], READY_MACHINE, &local, &calls);
    let records = records(&out, pid);
    assert_eq!(records.len(), 2, "{}", out.stdout);
    let (failed, fast) = (&records[0], &records[1]);
    assert_eq!(
        (failed["host"].as_str(), failed["ret"].as_i64(), failed["error"].as_str()),
        (Some(nx.as_str()), Some(-2), Some("EAI_NONAME"))
    );
    assert_eq!(
        (failed["schema"].as_u64(), failed["tool"].as_str(), failed["type"].as_str()),
        (Some(1), Some("gethostlatency"), Some("lookup"))
    );
    assert!(failed["latency_ns"].as_u64().unwrap() >= DELAY * 1_000_000, "a failed lookup is still a lookup: {failed}");
    assert_eq!(
        (fast["host"].as_str(), fast["ret"].as_i64(), fast["error"].clone()),
        (Some(local.as_str()), Some(0), Value::Null)
    );
    // Not answered by the DNS server (which waits DELAY ms); a tighter bound
    // would time the machine, not the tool.
    assert!(fast["latency_ns"].as_u64().unwrap() < DELAY * 1_000_000, "answered from /etc/hosts: {fast}");
    for r in &records {
        assert_eq!(
            (r["function"].as_str(), r["comm"].as_str(), r["tid"].as_u64()),
            (Some("getaddrinfo"), Some("workload"), Some(pid as u64))
        );
        assert!(r["libc"].as_str().is_some_and(|l| l.ends_with("libc.so.6")), "{r}");
    }
}

/// Each function, one row per outermost call; a NULL host is skipped.
#[test]
fn each_function_and_a_null_host() {
    let id = unique_tag("h");
    let calls = [
        "getaddrinfo-null".to_owned(),
        format!("gethostbyname:a-{id}.test"),
        format!("gethostbyname2:b-{id}.test"),
        format!("getaddrinfo:c-{id}.test"),
    ];
    let (out, pid) = trace(&["--json"], READY_MACHINE, "-", &calls);
    let got: Vec<(String, String)> = records(&out, pid)
        .iter()
        .map(|r| (r["function"].as_str().unwrap().to_owned(), r["host"].as_str().unwrap().to_owned()))
        .collect();
    let want = [
        ("gethostbyname".to_owned(), format!("a-{id}.test")),
        ("gethostbyname2".to_owned(), format!("b-{id}.test")),
        ("getaddrinfo".to_owned(), format!("c-{id}.test")),
    ];
    assert_eq!(got, want, "{}", out.stdout);
}

#[test]
fn only_the_process_asked_for() {
    let _serial = serial();
    let id = unique_tag("h");
    let mut mine = resolver(&[], &format!("mine-{id}"), &[format!("getaddrinfo:mine-{id}")]);
    let mut other = resolver(&[], &format!("other-{id}"), &[format!("getaddrinfo:other-{id}")]);
    let pid = mine.pid().to_string();
    let tool = Running::start("gethostlatency", &["-p", &pid], HEADER);
    for w in [&mut mine, &mut other] {
        w.go();
        w.wait(Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_millis(300));
    let out = tool.interrupt();
    assert!(
        out.stdout.contains(&format!("mine-{id}")) && !out.stdout.contains(&format!("other-{id}")),
        "{}",
        out.stdout
    );
}

/// -p of a process that maps no C library (a statically linked program:
/// the heatmap renderer, reading a pipe that stays open) is refused, with
/// the way to probe its executable, rather than tracing nothing forever.
#[test]
fn a_process_without_a_c_library_is_refused() {
    let mut static_program = Command::new(tool_path("ebpf-tools-heatmap"))
        .args(["/dev/stdin", "-o", "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = static_program.id().to_string();
    let out = run("gethostlatency", &["-p", &pid]);
    let _ = static_program.kill();
    let _ = static_program.wait();
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("maps no C library"), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("-l /proc/{pid}/exe")), "{}", out.stderr);
}

/// A copy of the C library, loaded with LD_LIBRARY_PATH by a program that
/// starts after the tool: a file of its own (another inode), which the
/// tool finds on its next scan.
#[test]
fn a_second_libc_that_appears_later() {
    let (dir, env) = libc_copy();
    a_second_libc_reached_through(&dir, &["env", &env]);
}

/// A process seen with the machine's C library that execs a program with
/// another (a container's first process execs its entrypoint so): the
/// shell lives 2 s, through at least one scan, then execs the resolver.
#[test]
fn a_second_libc_that_appears_by_exec() {
    let (dir, env) = libc_copy();
    let script = format!("sleep 2; exec env {env} \"$0\" \"$@\"");
    a_second_libc_reached_through(&dir, &["sh", "-c", &script]);
}

fn a_second_libc_reached_through(dir: &std::path::Path, wrapper: &[&str]) {
    let _serial = serial();
    let name = format!("copy-{}", unique_tag("h"));
    let mut tool = Running::start("gethostlatency", &["--json", "--verbose"], READY_MACHINE);
    let mut w = resolver(wrapper, &name, &[format!("getaddrinfo:{name}")]);
    // By its own path where this root's file there is the one mapped, else
    // through the process's root (a guest's overlay can give the two
    // different device numbers): either way the line ends with it.
    let probed = format!("{}\n", dir.join("libc.so.6").display());
    assert!(tool.wait_for(&probed, Duration::from_secs(10)), "the copy was not probed within 10 s");
    let out = w.traced_by(tool);
    let records = records(&out, w.pid());
    assert_eq!(records.len(), 1, "{}", out.stdout);
    assert_eq!(records[0]["libc"].as_str(), Some(dir.join("libc.so.6").to_str().unwrap()));
    let _ = std::fs::remove_dir_all(dir);
}

/// A dynamically linked musl program: its resolver lives in musl's libc.so.
#[test]
fn a_musl_program() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("ebpf-tools-musl-{}", unique_tag("h")));
    let program = musl_lookup(&dir);
    let mut tool = Running::start("gethostlatency", &["--json", "--verbose"], READY_MACHINE);
    let mut lookup =
        std::process::Command::new(&program).arg("localhost").stdin(std::process::Stdio::piped()).spawn().unwrap();
    let pid = lookup.id();
    let musl = format!("{}-linux-musl/libc.so", std::env::consts::ARCH);
    assert!(tool.wait_for(&musl, Duration::from_secs(10)), "musl's libc.so was not probed");
    use std::io::Write as _;
    lookup.stdin.take().unwrap().write_all(b"g").unwrap();
    assert!(lookup.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    let out = tool.interrupt();
    let records = records(&out, pid);
    // musl's gethostbyname calls its gethostbyname2: one lookup, not two.
    let functions: Vec<&str> = records.iter().filter_map(|r| r["function"].as_str()).collect();
    assert_eq!(functions, ["getaddrinfo", "gethostbyname"], "{}", out.stdout);
    assert_eq!((records[0]["host"].as_str(), records[0]["comm"].as_str()), (Some("localhost"), Some("musl-lookup")));
    assert!(records[0]["libc"].as_str().is_some_and(|l| l.contains("musl")), "{}", records[0]);
    let _ = std::fs::remove_dir_all(dir);
}

/// Ctrl-C with three C libraries probed (the machine's, a copy, musl's):
/// where the kernel has multi-uprobe links (6.6+), the tool is gone at
/// once, since each library's hooks go in one detach; elsewhere each hook
/// waits for a grace period of its own, one after another (1.6 s here on
/// the uprobe_cookie rung), and the bound is only the hang's. Either way
/// every program is unloaded.
#[test]
fn ctrl_c_with_three_libraries_probed_returns_at_once() {
    let _serial = serial();
    let users = CLibraryUsers::start();
    let mut tool = Running::start("gethostlatency", &["--verbose"], HEADER);
    assert!(tool.wait_until(|_, err| libraries_probed(err) >= 3, Duration::from_secs(10)), "{}", tool.stderr_so_far());
    let started = std::time::Instant::now();
    let out = tool.interrupt();
    let stopped = started.elapsed();
    drop(users);
    out.assert_complete("gethostlatency");
    let rung = out.stderr.lines().find_map(|l| Some(l.split("rung ").nth(1)?.split_once(": all ")?.0)).unwrap();
    eprintln!("rung {rung}; stopped in {:.3} s", stopped.as_secs_f64());
    let bound = match rung == "uprobe_multi" {
        // Generous for an emulated guest: 0.08 to 0.10 s here.
        true => Duration::from_secs(3),
        false => Duration::from_secs(20),
    };
    assert!(stopped < bound, "stopped in {stopped:?} on rung {rung}, over {bound:?}");
    assert_unloaded(&attached_program_ids(&out.stderr));
}

/// The rung of kernels from 5.15 to 6.5: a uprobe per function, cookies
/// saying which. Before 5.15, asked for, it is refused for what it lacks.
#[test]
fn with_cookies_through_perf_event_uprobes() {
    if kernel_release() < (5, 15) {
        let out = run("gethostlatency", &["--rung", "uprobe_cookie"]);
        assert_eq!(out.code(), Some(1), "{out:?}");
        assert!(out.stderr.contains("uprobe_cookie: this kernel has no BPF cookies (5.15+)"), "{}", out.stderr);
        return;
    }
    let name = format!("{}.test", unique_tag("h"));
    let (out, pid) =
        trace(&["--json", "--rung", "uprobe_cookie"], READY_MACHINE, "-", &[format!("getaddrinfo:{name}")]);
    let records = records(&out, pid);
    assert_eq!(records.len(), 1, "{}", out.stdout);
    assert_eq!(
        (records[0]["function"].as_str(), records[0]["host"].as_str()),
        (Some("getaddrinfo"), Some(name.as_str()))
    );
}

/// `-l` probes exactly the files named: the copy, not the system's libc.
#[test]
fn only_the_libraries_named() {
    let _serial = serial();
    let (dir, env) = libc_copy();
    let copy = dir.join("libc.so.6");
    let tool = Running::start("gethostlatency", &["--json", "-l", copy.to_str().unwrap()], READY_MACHINE);
    let id = unique_tag("h");
    let mut through_copy = resolver(&["env", &env], &format!("c-{id}"), &[format!("getaddrinfo:c-{id}")]);
    let mut through_system = resolver(&[], &format!("s-{id}"), &[format!("getaddrinfo:s-{id}")]);
    for w in [&mut through_copy, &mut through_system] {
        w.go();
        w.wait(Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_millis(300));
    let out = tool.interrupt();
    assert!(out.stdout.contains(&format!("c-{id}")) && !out.stdout.contains(&format!("s-{id}")), "{}", out.stdout);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn csv_parses_with_a_real_csv_parser() {
    // The resolver refuses such a name at once; the lookup is shown all the same.
    let name = format!("{},with,\"commas\".test", unique_tag("h"));
    let (out, pid) = trace(&["--csv"], READY_MACHINE, "-", &[format!("getaddrinfo:{name}")]);
    let rows = parse_csv(&out.stdout);
    assert_eq!(rows[0], ["TIME", "PID", "COMM", "LATms", "HOST"]);
    let row = rows.iter().find(|r| r[1] == pid.to_string()).expect("the lookup");
    assert_eq!((row[2].as_str(), row[4].as_str()), ("workload", name.as_str()));
    assert!(row[3].parse::<f64>().is_ok() && row[0].len() == 8, "{row:?}");
}

#[test]
fn hostile_host_name_is_escaped_in_text_and_exact_in_json() {
    let name = format!("{}\nfake\u{1b}[31m.test", unique_tag("h"));
    let (out, pid) = trace(&[], HEADER, "-", &[format!("getaddrinfo:{name}")]);
    assert!(!out.stdout.contains('\u{1b}'), "ESC reached the output raw");
    assert_eq!(rows(&out, pid)[0].2, name.replace('\n', "\\n").replace('\u{1b}', "\\x1b"));
    let (out, pid) = trace(&["--json"], READY_MACHINE, "-", &[format!("getaddrinfo:{name}")]);
    assert_eq!(records(&out, pid)[0]["host"].as_str(), Some(name.as_str()));
}

/// The other rung (kernels without cookies), the perf array, the config map.
#[test]
fn without_cookies_on_the_perf_array_with_the_config_map() {
    let name = format!("{}.test", unique_tag("h"));
    let (out, pid) = trace(
        &["--json", "--rung", "uprobe", "--perf-array", "--config-map"],
        READY_MACHINE,
        "-",
        &[format!("getaddrinfo:{name}")],
    );
    let records = records(&out, pid);
    assert_eq!(records.len(), 1, "{}", out.stdout);
    assert!(
        records[0]["libc"].as_str().is_some_and(|l| l.ends_with("libc.so.6")),
        "from the process's maps: {}",
        records[0]
    );
}

/// `--histogram`: every lookup counted in the kernel by function and
/// result, as histogram records; the DNS server's delay is in the slow ones.
#[test]
fn histograms_by_function_and_result() {
    let id = unique_tag("h");
    let local = format!("local-{id}");
    let calls = [
        format!("getaddrinfo:nx-{id}.test"),
        format!("getaddrinfo:{local}"),
        format!("getaddrinfo:{local}"),
        format!("gethostbyname:a-{id}.test"),
    ];
    let ready = "Tracing host name lookup latency";
    let (out, _) = trace(&["--histogram", "--json", "-p", "PID"], ready, &local, &calls);
    let histograms: Vec<Value> = json_lines(&out.stdout).into_iter().filter(|r| r["type"] == "histogram").collect();
    let got: Vec<(String, String, u64, bool)> = histograms
        .iter()
        .map(|r| {
            assert_eq!((r["tool"].as_str(), r["unit"].as_str()), (Some("gethostlatency"), Some("usecs")), "{r}");
            // In microseconds: the server's answers within the bound the events test allows.
            let max = r["max"].as_u64().unwrap();
            assert!(max < (DELAY + 900) * 1000, "{r}");
            let slow = max >= DELAY * 1000;
            let key = &r["key"];
            (
                key["function"].as_str().unwrap().into(),
                key["result"].as_str().unwrap().into(),
                r["count"].as_u64().unwrap(),
                slow,
            )
        })
        .collect();
    let want =
        [("getaddrinfo", "ok", 2, false), ("getaddrinfo", "EAI_NONAME", 1, true), ("gethostbyname", "ok", 1, true)];
    assert_eq!(got, want.map(|(f, r, n, slow)| (f.to_owned(), r.to_owned(), n, slow)), "{}", out.stdout);
}
