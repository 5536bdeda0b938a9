//! execsnoop against execs whose answer is known: the oracles of
//! shared/reference/bcc-tools.md §10, and exact loss accounting.

use std::{process::Command, time::Duration};

use integration_tests::*;

const READY: &str = "RET ARGS";
const READY_JSON: &str = "Tracing exec()s";

/// A line of the default layout: COMM (16), PID, PPID, RET, ARGS.
#[derive(Debug)]
struct Line {
    comm: String,
    pid: u32,
    /// None for `?`: unknown (a failed exec on the kprobe rung).
    ppid: Option<u32>,
    ret: i32,
    args: String,
}

fn parse(line: &str) -> Line {
    let comm = line[..16].trim_end().to_owned();
    let rest = &line[17..];
    let mut it = rest.split_whitespace();
    let pid = it.next().unwrap().parse().unwrap();
    let ppid = match it.next().unwrap() {
        "?" => None,
        n => Some(n.parse().unwrap()),
    };
    let ret_text = it.next().unwrap();
    let ret = ret_text.parse().unwrap();
    let after_ret = rest.find(&format!(" {ret_text} ")).map(|i| i + ret_text.len() + 2).unwrap();
    Line { comm, pid, ppid, ret, args: rest[after_ret..].to_owned() }
}

/// Runs execsnoop with `args` while `workload` runs, and returns its lines containing `tag`.
fn trace(args: &[&str], tag: &str, workload: impl FnOnce()) -> (Output, Vec<String>) {
    let tool = Running::start("execsnoop", args, READY);
    workload();
    std::thread::sleep(Duration::from_millis(200));
    let out = tool.interrupt();
    out.assert_complete("execsnoop");
    let lines = out.stdout.lines().filter(|l| l.contains(tag)).map(str::to_owned).collect();
    (out, lines)
}

fn my_comm() -> String {
    // The calling thread's: a test runs in a thread named after it.
    read("/proc/thread-self/comm").trim_end().to_owned()
}

fn basic(extra: &[&str]) {
    let _serial = serial();
    let tag = unique_tag("u");
    let mut child_pid = 0;
    let (_, lines) = trace(extra, &tag, || {
        let mut child = Command::new("/bin/true").arg(&tag).spawn().unwrap();
        child_pid = child.id();
        child.wait().unwrap();
    });
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = parse(&lines[0]);
    assert_eq!((l.comm.as_str(), l.pid, l.ppid, l.ret), ("true", child_pid, Some(std::process::id()), 0), "{l:?}");
    assert_eq!(l.args, format!("/bin/true {tag}"));
}

#[test]
fn basic_exec() {
    basic(&[]);
}

#[test]
fn basic_exec_on_forced_perf_array() {
    basic(&["--perf-array"]);
}

/// Execs that alternate between two CPUs while the reader is stopped
/// print in the order they happened, on either transport: a perf batch
/// holds each CPU's buffer, and is put back in time order.
#[test]
fn execs_on_two_cpus_print_in_the_order_they_happened() {
    use std::os::unix::process::CommandExt as _;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus >= 2, "the test needs two CPUs, this machine has {cpus}");
    for transport in [&[][..], &["--perf-array"]] {
        let _serial = serial();
        let tag = unique_tag("u");
        let tool = Running::start("execsnoop", transport, READY);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(tool.pid(), libc::SIGSTOP) };
        let order: Vec<String> = (0..8).map(|i| format!("{tag}-{i}")).collect();
        for (i, arg) in order.iter().enumerate() {
            let mut command = Command::new("/bin/true");
            command.arg(arg);
            // SAFETY: sched_setaffinity is async-signal-safe.
            unsafe {
                command.pre_exec(move || match pin_to_cpu(1 - i % 2) {
                    true => Ok(()),
                    false => Err(std::io::Error::last_os_error()),
                })
            };
            command.status().unwrap();
        }
        unsafe { libc::kill(tool.pid(), libc::SIGCONT) };
        std::thread::sleep(Duration::from_millis(500));
        let out = tool.interrupt();
        out.assert_complete("execsnoop");
        let printed: Vec<String> =
            out.stdout.lines().filter(|l| l.contains(&tag)).map(|l| parse(l).args.replace("/bin/true ", "")).collect();
        assert_eq!(printed, order, "{transport:?}");
    }
}

#[test]
fn basic_exec_with_forced_config_map() {
    basic(&["--config-map"]);
}

#[test]
fn failed_exec_only_with_x() {
    let _serial = serial();
    let tag = unique_tag("u");
    let path = format!("/nonexistent/{tag}");
    let spawn = || assert!(Command::new(&path).spawn().is_err());
    let (_, lines) = trace(&[], &tag, spawn);
    assert!(lines.is_empty(), "{lines:?}");
    let (_, lines) = trace(&["-x"], &tag, spawn);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = parse(&lines[0]);
    assert_eq!((l.ret, l.args.as_str()), (-2, path.as_str()));
    assert_eq!(l.comm, my_comm(), "a failed exec keeps the caller's comm");
}

#[test]
fn argument_limits() {
    let _serial = serial();
    let tag = unique_tag("u");
    let args = |n: usize| -> Vec<String> { (1..=n).map(|i| format!("a{i}")).chain([tag.clone()]).collect() };
    let long = "x".repeat(200);
    let (_, lines) = trace(&[], &tag, || {
        Command::new("/bin/true").args(args(18)).status().unwrap(); // 19 arguments with the tag
        Command::new("/bin/true").args(args(24)).status().unwrap(); // 25
        Command::new("/bin/true").args([&long, &tag]).status().unwrap();
    });
    let lines: Vec<Line> = lines.iter().map(|l| parse(l)).collect();
    assert_eq!(lines.len(), 2, "the 25-argument line is cut before its tag: {lines:?}");
    assert_eq!(lines[0].args, format!("/bin/true {}", args(18).join(" ")), "19 arguments: all, no ...");
    assert_eq!(lines[1].args, format!("/bin/true {}... {tag}", &long[..127]), "127 bytes of a long argument, marked");
    // 25 arguments: a1..a19 then "...".
    let (out, _) = trace(&[], &tag, || {
        Command::new("/bin/true").args(args(24)).arg("end").status().unwrap();
    });
    let expected = format!("/bin/true {} ...", (1..=19).map(|i| format!("a{i}")).collect::<Vec<_>>().join(" "));
    assert!(out.stdout.lines().any(|l| l.ends_with(&expected)), "{}", out.stdout);
    let (_, lines) = trace(&["--max-args", "3"], &tag, || {
        Command::new("/bin/true").args([&tag, "a2", "a3", "a4", "a5"]).status().unwrap();
    });
    assert_eq!(parse(&lines[0]).args, format!("/bin/true {tag} a2 ..."));
}

#[test]
fn quoting_and_escaping() {
    let _serial = serial();
    let tag = unique_tag("u");
    let run = || {
        Command::new("/bin/true").args([tag.as_str(), "with space", "q\"uote", "a\nb", "\x1b[31m"]).status().unwrap();
    };
    let (out, lines) = trace(&[], &tag, run);
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    assert_eq!(parse(&lines[0]).args, format!("/bin/true {tag} with space q\"uote a\\nb \\x1b[31m"));
    assert!(!out.stdout.contains('\x1b'), "ESC reached the output raw");
    let (_, lines) = trace(&["-q"], &tag, run);
    assert_eq!(
        parse(&lines[0]).args,
        format!("\"/bin/true\" \"{tag}\" \"with space\" \"q\\\"uote\" \"a\\nb\" \"\\x1b[31m\"")
    );
}

#[test]
fn filters() {
    let _serial = serial();
    let tag = unique_tag("u");
    let both = || {
        Command::new("/bin/true").arg(&tag).status().unwrap();
        Command::new("setpriv").args(["--reuid=65534", "/bin/true", &tag]).status().unwrap();
    };
    let (_, lines) = trace(&["-U", "-u", "65534"], &tag, both);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("65534 "), "only the exec as UID 65534: {lines:?}");
    let (_, lines) = trace(&["-u", "0", "-n", "^true$"], &tag, both);
    assert_eq!(lines.len(), 1, "-u 0 keeps root's exec only: {lines:?}");
    // -P: children of this process only; the sh's own child is not one.
    let me = std::process::id().to_string();
    let (_, lines) = trace(&["-P", &me], &tag, || {
        Command::new("sh").args(["-c", &format!("/bin/true {tag}-grandchild; :"), &tag]).status().unwrap();
    });
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(parse(&lines[0]).comm, "sh");
    // -n on the comm, -l on the arguments.
    let (_, lines) = trace(&["-n", "tru"], &tag, both);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (out, lines) = trace(&["-l", &tag], &tag, || {
        Command::new("/bin/true").arg("other").status().unwrap();
        Command::new("/bin/true").arg(&tag).status().unwrap();
    });
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(!out.stdout.contains("/bin/true other"), "{}", out.stdout);
}

fn one_exec_by(workload: &str, tag: &str) -> (u32, Line) {
    let mut w = Workload::new(&[workload, "/bin/true", tag]);
    let pid = w.pid();
    let (_, lines) = trace(&["-x"], tag, || {
        w.go();
        w.wait(Duration::from_secs(10));
    });
    assert_eq!(lines.len(), 1, "{workload}: {lines:?}");
    (pid, parse(&lines[0]))
}

#[test]
fn exec_from_a_thread_that_is_not_the_leader() {
    let _serial = serial();
    let tag = unique_tag("u");
    let (pid, line) = one_exec_by("thread-exec", &tag);
    assert_eq!((line.pid, line.ret, line.args.as_str()), (pid, 0, format!("/bin/true {tag}").as_str()));
}

#[test]
fn execveat_and_fexecve() {
    let _serial = serial();
    let tag = unique_tag("u");
    let (pid, line) = one_exec_by("execveat", &tag);
    assert_eq!((line.pid, line.args.as_str()), (pid, format!("/bin/true {tag}").as_str()));
    let (pid, line) = one_exec_by("fexecve", &tag);
    assert_eq!(line.pid, pid);
    assert!(line.args.ends_with(&format!(" {tag}")), "{line:?}");
    match line.ret {
        // fexecve passes /dev/fd/N (or /proc/self/fd/N) as the path.
        0 => assert!(line.args.contains("/fd/"), "{line:?}"),
        // The kernel refused the exec (5.10 in the test VM): seen all the same.
        ret => assert_eq!(ret, -2, "{line:?}"),
    }
}

#[test]
fn time_columns() {
    let _serial = serial();
    let tag = unique_tag("u");
    let (out, lines) = trace(&["-T", "-t"], &tag, || {
        for _ in 0..3 {
            Command::new("/bin/true").arg(&tag).status().unwrap();
        }
    });
    assert!(out.stdout.starts_with("TIME     TIME(s) COMM             PID     PPID    RET ARGS\n"), "{}", out.stdout);
    let mut last = 0.0;
    for line in &lines {
        let b = line.as_bytes();
        assert!(b[2] == b':' && b[5] == b':' && b[8] == b' ', "{line}");
        let secs: f64 = line[9..17].trim().parse().unwrap();
        assert_eq!(line[9..17].trim().split('.').nth(1).map(str::len), Some(3), "{line}");
        assert!(secs >= last);
        last = secs;
    }
    assert_eq!(lines.len(), 3);
}

#[test]
fn json_lines_are_lossless() {
    let _serial = serial();
    let tag = unique_tag("u");
    let tool = Running::start("execsnoop", &["--json", "-x"], READY_JSON);
    let mut child = Command::new("/bin/true").args([tag.as_str(), "a\nb", "\x1b"]).spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    // A non-UTF-8 argument.
    Command::new("/bin/true").arg(&tag).arg(std::ffi::OsStr::from_bytes(b"\xff\xfe")).status().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = tool.interrupt();
    let records: Vec<_> = json_lines(&out.stdout).into_iter().filter(|r| r["args"][1] == tag.as_str()).collect();
    assert_eq!(records.len(), 2, "{}", out.stdout);
    let r = &records[0];
    assert_eq!(
        (r["schema"].as_u64(), r["tool"].as_str(), r["type"].as_str()),
        (Some(1), Some("execsnoop"), Some("exec"))
    );
    assert_eq!((r["pid"].as_u64(), r["ppid"].as_u64()), (Some(pid as u64), Some(std::process::id() as u64)));
    assert_eq!((r["ret"].as_i64(), r["comm"].as_str(), r["uid"].as_u64()), (Some(0), Some("true"), Some(0)));
    assert_eq!(r["args"], serde_json::json!(["/bin/true", tag, "a\nb", "\x1b"]));
    assert!(r["ts_ns"].as_u64().unwrap() > 0 && r["time"].as_str().unwrap().len() > 20);
    assert_eq!(records[1]["args_hex"][2], "fffe");
}

use std::os::unix::ffi::OsStrExt as _;

/// JSON keeps arguments whole up to the kernel side's 16 KB: a 12 KB
/// argument comes back exact; one past the limit is flagged.
#[test]
fn json_keeps_long_arguments_whole() {
    let _serial = serial();
    let tag = unique_tag("u");
    let long = "y".repeat(12_000);
    let too_long = "z".repeat(20_000);
    let tool = Running::start("execsnoop", &["--json"], READY_JSON);
    Command::new("/bin/true").args([tag.as_str(), &long]).status().unwrap();
    Command::new("/bin/true").args([tag.as_str(), &too_long]).status().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = tool.interrupt();
    let records: Vec<_> = json_lines(&out.stdout).into_iter().filter(|r| r["args"][1] == tag.as_str()).collect();
    assert_eq!(records.len(), 2, "{}", out.stdout);
    assert_eq!(
        (records[0]["args"][2].as_str(), records[0]["args_truncated"].as_bool()),
        (Some(long.as_str()), Some(false))
    );
    assert_eq!(records[1]["args_truncated"].as_bool(), Some(true), "20 KB is past the limit");
}

/// `--csv` is RFC 4180: a real parser gets every field back exactly, and
/// ordinary fields are not quoted.
#[test]
fn csv_parses_with_a_real_csv_parser() {
    let _serial = serial();
    let tag = unique_tag("u");
    let tool = Running::start("execsnoop", &["--csv", "-U"], READY_JSON);
    let mut child = Command::new("/bin/true").args([tag.as_str(), "a,b", "say \"hi\"", "two\nlines"]).spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = tool.interrupt();
    out.assert_complete("execsnoop");
    let rows = parse_csv(&out.stdout);
    assert_eq!(rows[0], ["UID", "COMM", "PID", "PPID", "RET", "ARGS"]);
    let mine: Vec<&Vec<String>> = rows.iter().filter(|r| r.last().is_some_and(|a| a.contains(&tag))).collect();
    assert_eq!(mine.len(), 1, "{}", out.stdout);
    let expected = [
        "0".to_owned(),
        "true".into(),
        pid.to_string(),
        std::process::id().to_string(),
        "0".into(),
        format!("/bin/true {tag} a,b say \"hi\" two\nlines"),
    ];
    assert_eq!(mine[0][..], expected[..]);
    let raw = format!("\n0,true,{pid},{},0,\"/bin/true {tag} a,b say \"\"hi\"\" two\nlines\"\n", std::process::id());
    assert!(out.stdout.contains(&raw), "only the field that needs it is quoted:\n{}", out.stdout);
}

/// `n` execs from each of two threads at full speed: every one is printed
/// or counted as lost.
fn accounting(extra: &[&str], stall_reader: bool) -> Lost {
    let _serial = serial();
    let tag = unique_tag("u");
    // Fewer under emulation (the kernel matrix sets it): the point is the sum.
    let n: u64 = std::env::var("EBPF_TOOLS_TEST_EXECS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    // One process whose two threads exec at full speed; -P keeps the count to
    // its children (filtered in the kernel, before anything can be lost), so
    // other execs on the machine cannot enter the sum.
    let mut storm = Workload::new(&["exec-storm", &n.to_string(), "/bin/true", &tag]);
    let parent = storm.pid().to_string();
    let mut args = vec!["--max-args", "3", "-P", &parent];
    args.extend(extra);
    let tool = Running::start("execsnoop", &args, READY);
    if stall_reader {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(tool.pid(), libc::SIGSTOP) };
    }
    storm.go();
    storm.wait(Duration::from_secs(120));
    if stall_reader {
        unsafe { libc::kill(tool.pid(), libc::SIGCONT) };
    }
    // The execs that happened (a fork the machine refused makes none).
    let made: u64 = storm.line().strip_prefix("made ").unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let out = tool.interrupt();
    // Every row is one of the storm's children (-P, applied in the kernel).
    // One without the tag is an exec printed without its arguments: counted
    // as printed, and shown.
    let rows: Vec<&str> = out.stdout.lines().skip_while(|l| !l.ends_with(READY)).skip(1).collect();
    let untagged: Vec<&&str> = rows.iter().filter(|l| !l.contains(&tag)).collect();
    let printed = rows.len() as u64;
    let lost = Lost::from_stderr("execsnoop", &out.stderr);
    eprintln!(
        "{extra:?}: {printed} printed + {lost:?} of {made} made ({} meant); without arguments: {untagged:?}",
        2 * n
    );
    lost.assert_accounts_for(printed, made, &out.stderr);
    assert_eq!(out.code(), Some(if lost.total > 0 { 3 } else { 0 }));
    lost
}

#[test]
fn accounting_on_the_ring_buffer() {
    let lost = accounting(&[], false);
    assert_eq!(lost.counted_by_programs(), 0, "2 busy workers must not overrun the default buffers: {lost:?}");
}

#[test]
fn accounting_on_the_perf_array() {
    let lost = accounting(&["--perf-array"], false);
    assert_eq!(lost.counted_by_programs(), 0, "{lost:?}");
}

/// A stalled reader with one page per CPU: most events cannot be handed
/// over, and every one of them must be counted (kernel side, since a perf
/// buffer reports its losses only when a later event gets through).
#[test]
fn loss_is_counted_exactly_when_the_reader_stalls() {
    for transport in [&["--buffer-pages", "1"][..], &["--perf-array", "--buffer-pages", "1"]] {
        let lost = accounting(transport, true);
        assert!(lost.counted_by_programs() > 0, "{transport:?}: nothing was lost: the test did not stall the reader");
    }
}

/// A script's argv is rewritten by the kernel (interpreter first): ARGS
/// still shows the path as run and the script's own arguments, as BCC does.
#[test]
fn scripts_show_their_own_arguments() {
    let _serial = serial();
    let tag = unique_tag("u");
    let dir = std::env::temp_dir();
    let plain = dir.join(format!("{tag}-plain.sh"));
    let env = dir.join(format!("{tag}-env.sh"));
    for (path, shebang) in [(&plain, "#!/bin/sh"), (&env, "#!/usr/bin/env sh")] {
        std::fs::write(path, format!("{shebang}\nexit 0\n")).unwrap();
        Command::new("chmod").arg("+x").arg(path).status().unwrap();
    }
    let (_, lines) = trace(&[], &tag, || {
        Command::new(&plain).args(["a1", "b2"]).status().unwrap();
        Command::new(&env).args(["c3"]).status().unwrap();
    });
    let args: Vec<String> = lines.iter().map(|l| parse(l).args).filter(|a| a.starts_with('/')).collect();
    assert!(args.contains(&format!("{} a1 b2", plain.display())), "{lines:?}");
    assert!(args.contains(&format!("{} c3", env.display())), "{lines:?}");
    let _ = std::fs::remove_file(plain);
    let _ = std::fs::remove_file(env);
}
