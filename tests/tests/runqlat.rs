//! runqlat against workloads whose answer is known.

use std::time::{Duration, Instant};

use integration_tests::*;

const READY: &str = "Tracing run queue latency... Hit Ctrl-C to end.";

/// The fewest wakeups two spinners sharing a CPU make in two seconds: a few
/// hundred on real hardware, fewer in an emulated guest whose clock runs
/// ahead of the work it gets done (the matrix lowers it there). In one
/// second, half as many.
fn min_samples() -> u64 {
    std::env::var("EBPF_TOOLS_TEST_MIN_WAKEUPS").ok().and_then(|v| v.parse().ok()).unwrap_or(100)
}

fn assert_contention_table(table: &Table) {
    let total = table.total();
    assert!((min_samples()..=2000).contains(&total), "expected a few hundred samples, got {total}: {table:?}");
    let slow = table.at_or_above(1024);
    assert!(slow * 100 >= total * 80, "only {slow} of {total} samples at or above 1024 usecs: {table:?}");
    table.assert_summary_consistent();
}

fn contention_on(rung: Option<&str>, config_map: bool) {
    let _serial = serial();
    let (spinner, _other) = contention();
    let pid = spinner.pid().to_string();
    let mut args = vec!["-p", &pid, "2", "1"];
    if let Some(rung) = rung {
        args.extend(["--rung", rung]);
    }
    if config_map {
        args.push("--config-map");
    }
    let out = Running::start("runqlat", &args, READY).wait(Duration::from_secs(10));
    out.assert_complete("runqlat");
    let tables = parse_tables(&out.stdout);
    assert_eq!(tables.len(), 1, "{}", out.stdout);
    assert_eq!(tables[0].1.unit, "usecs");
    assert_contention_table(&tables[0].1);
}

#[test]
fn contention_on_the_best_rung() {
    contention_on(None, false);
}

#[test]
fn contention_on_forced_raw_tracepoint() {
    contention_on(Some("raw_tracepoint"), false);
}

#[test]
fn contention_on_forced_tracepoint() {
    contention_on(Some("tracepoint"), false);
}

/// Kernels before 5.2 have no global data: configuration goes in a map.
#[test]
fn contention_with_forced_config_map_on_each_rung() {
    contention_on(Some("raw_tracepoint"), true);
    contention_on(Some("tracepoint"), true);
}

/// A cgroup v2 directory holding one spinner; removed when dropped.
struct Cgroup(std::path::PathBuf);

impl Cgroup {
    fn with(pid: u32) -> Cgroup {
        let dir = cgroup2_root().join(format!("runqlat-test-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("move the spinner into the test cgroup");
        Cgroup(dir)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn cgroup_filter_counts_only_its_tasks_on_each_rung() {
    let _serial = serial();
    let (spinner, other) = contention();
    let cgroup = Cgroup::with(spinner.pid());
    let path = cgroup.0.to_str().unwrap();
    for rung in ["raw_tracepoint", "tracepoint"] {
        // Only the spinner is in the cgroup: -P shows it and nothing else.
        let out = Running::start("runqlat", &["-P", "-c", path, "--rung", rung, "2", "1"], READY)
            .wait(Duration::from_secs(10));
        let tables = parse_tables(&out.stdout);
        let sections: Vec<_> = tables.iter().filter_map(|(s, _)| s.clone()).collect();
        assert_eq!(sections, vec![format!("pid = {}", spinner.pid())], "{rung}: {}", out.stdout);
        assert_contention_table(&tables[0].1);
        assert!(!out.stdout.contains(&format!("pid = {}", other.pid())));
    }
    drop((spinner, other));
}

#[test]
fn kprobe_rung_fails_clearly_where_the_kernel_has_no_kprobes() {
    // This host has no kprobes: forcing that rung must fail, naming it.
    // (The guests of `cargo xtask vm-test` run it for real.)
    if std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        let _serial = serial();
        let (spinner, _other) = contention();
        let pid = spinner.pid().to_string();
        let out =
            Running::start("runqlat", &["-p", &pid, "--rung", "kprobe", "2", "1"], READY).wait(Duration::from_secs(10));
        assert_contention_table(&parse_tables(&out.stdout)[0].1);
    } else {
        let out = run("runqlat", &["--rung", "kprobe", "1", "1"]);
        assert_eq!(out.code(), Some(1), "{out:?}");
        assert!(out.stderr.contains("tried:") && out.stderr.contains("kprobe:"), "{}", out.stderr);
    }
}

#[test]
fn idle_wakeups_are_fast() {
    let _serial = serial();
    let mut sleeper = Workload::new(&["sleep", "0", "200", "10"]);
    let pid = sleeper.pid().to_string();
    let tool = Running::start("runqlat", &["-p", &pid], READY);
    sleeper.go();
    sleeper.wait(Duration::from_secs(30));
    let out = tool.interrupt();
    out.assert_complete("runqlat");
    let tables = parse_tables(&out.stdout);
    let table = &tables[0].1;
    let total = table.total();
    assert!((190..=230).contains(&total), "expected about 200 samples (one per wakeup), got {total}: {table:?}");
    let fast = total - table.at_or_above(1024);
    assert!(fast * 100 >= total * 80, "only {fast} of {total} wakeups ran within 1024 usecs: {table:?}");
    table.assert_summary_consistent();
}

#[test]
fn per_process_and_per_thread_sections() {
    let _serial = serial();
    let (spinner, _other) = contention();
    let pid = spinner.pid();
    for (flag, section) in [("-P", "pid"), ("-L", "tid")] {
        let out = Running::start("runqlat", &[flag, "1", "1"], READY).wait(Duration::from_secs(10));
        let tables = parse_tables(&out.stdout);
        let header = format!("{section} = {pid}");
        let (_, table) = tables
            .iter()
            .find(|(s, _)| s.as_deref() == Some(header.as_str()))
            .unwrap_or_else(|| panic!("no section {header:?} in:\n{}", out.stdout));
        assert!(table.at_or_above(1024) > min_samples() / 2, "{table:?}");
        assert!(
            !tables.iter().any(|(s, _)| s.as_deref() == Some(&format!("{section} = 0"))),
            "the idle task has a section"
        );
        // BCC prints a blank line before each section header.
        assert!(out.stdout.contains(&format!("\n\n{header}\n     usecs")), "{}", out.stdout);
    }
}

/// -P over 1200 new processes: a 1024-entry table cannot hold a key for
/// each, and the samples that do not fit are counted as lost (naming the
/// flag); `--table-entries` makes room for them all. The processes exit
/// without an exec: with one each, this test took 115 s of a guest under
/// emulation.
#[test]
fn the_per_key_table_is_sized_by_table_entries() {
    let _serial = serial();
    let table_full = |entries: &str| {
        let tool = Running::start("runqlat", &["-P", "--table-entries", entries], READY);
        let mut storm = Workload::new(&["fork-storm", "600"]);
        storm.go();
        storm.wait(Duration::from_secs(300));
        let out = tool.interrupt();
        let full: u64 = out
            .stderr
            .lines()
            .filter_map(|l| l.split_once("histogram table full: ")?.1.split([' ', ',']).next()?.parse::<u64>().ok())
            .sum();
        (full, out)
    };
    let (full, out) = table_full("1024");
    assert!(full > 0 && out.stderr.contains("(raise --table-entries)"), "{out:?}");
    assert_eq!(out.code(), Some(3));
    let (full, out) = table_full("65536");
    assert_eq!(full, 0, "{out:?}");
}

#[test]
fn per_pid_namespace_sections() {
    let _serial = serial();
    let mut a = Workload::with_wrapper(&["unshare", "--pid", "--fork", "--kill-child"], &["spin", "1"]);
    let mut b = Workload::spinner(1);
    a.go();
    b.go();
    // unshare forks the workload; its child is in the new namespace.
    let children = format!("/proc/{}/task/{}/children", a.pid(), a.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    let child = loop {
        if let Some(child) = read(&children).split_whitespace().next() {
            break child.to_owned();
        }
        assert!(Instant::now() < deadline, "unshare forked no child in 10 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let ns = std::fs::read_link(format!("/proc/{child}/ns/pid")).unwrap();
    let inode = ns.to_string_lossy().trim_start_matches("pid:[").trim_end_matches(']').to_owned();
    let out = Running::start("runqlat", &["--pidnss", "1", "1"], READY).wait(Duration::from_secs(10));
    let header = format!("pidns = {inode}");
    let tables = parse_tables(&out.stdout);
    let (_, table) = tables
        .iter()
        .find(|(s, _)| s.as_deref() == Some(header.as_str()))
        .unwrap_or_else(|| panic!("no section {header:?} in:\n{}", out.stdout));
    assert!(table.at_or_above(1024) > min_samples() / 2, "{table:?}");
}

#[test]
fn milliseconds() {
    let _serial = serial();
    let (spinner, _other) = contention();
    let pid = spinner.pid().to_string();
    let out = Running::start("runqlat", &["-m", "-p", &pid, "2", "1"], READY).wait(Duration::from_secs(10));
    let tables = parse_tables(&out.stdout);
    let table = &tables[0].1;
    assert_eq!(table.unit, "msecs");
    assert!((min_samples()..=2000).contains(&table.total()), "{table:?}");
    // Rows are in msecs, and row "0 -> 1" holds everything below 2 ms: the
    // median waits at least 1 ms (values are truncated to the unit).
    assert!(table.summary.expect("summary")[1] >= 1, "{table:?}");
    assert!(table.rows.iter().all(|r| r.1 < 1024), "{table:?}");
    table.assert_summary_consistent();
}

#[test]
fn interval_and_count_exit_by_themselves_with_timestamps() {
    let _serial = serial();
    let out = Running::start("runqlat", &["-T", "1", "2"], READY).wait(Duration::from_secs(10));
    out.assert_complete("runqlat");
    let times: Vec<&str> =
        out.stdout.lines().filter(|l| l.len() == 8 && l.as_bytes()[2] == b':' && l.as_bytes()[5] == b':').collect();
    assert_eq!(times.len(), 2, "{}", out.stdout);
    // Each period starts with a blank line, then the time.
    assert!(out.stdout.matches("\n\n").count() >= 2);
    assert!(out.stdout.starts_with(&format!("{READY}\n\n")), "{}", out.stdout);
    assert_eq!(parse_tables(&out.stdout).len(), 2);
}

#[test]
fn json_lines_parse_and_match_the_text() {
    let _serial = serial();
    let (spinner, _other) = contention();
    let pid = spinner.pid().to_string();
    // Text and JSON over the same two seconds of the same workload.
    let json = Running::start("runqlat", &["--json", "-p", &pid, "2", "1"], READY);
    let text = Running::start("runqlat", &["-p", &pid, "2", "1"], READY);
    let (json, text) = (json.wait(Duration::from_secs(10)), text.wait(Duration::from_secs(10)));
    let records = json_lines(&json.stdout);
    assert_eq!(records.len(), 2, "the capture record, then one histogram per interval: {}", json.stdout);
    let capture = &records[0];
    assert_eq!((capture["type"].as_str(), capture["tool"].as_str()), (Some("capture"), Some("runqlat")));
    assert_eq!(capture["kernel"].as_str().unwrap(), read("/proc/sys/kernel/osrelease").trim());
    assert_eq!(capture["host"].as_str().unwrap(), read("/proc/sys/kernel/hostname").trim());
    assert_eq!(capture["command"], serde_json::json!(["runqlat", "--json", "-p", pid, "2", "1"]));
    let record = &records[1];
    assert_eq!(record["schema"], 1);
    assert_eq!(record["tool"], "runqlat");
    assert_eq!(record["type"], "histogram");
    assert_eq!(record["unit"], "usecs");
    assert_eq!(record["lost"], 0);
    let time = record["time"].as_str().unwrap();
    assert!(time.len() >= 25 && (time.ends_with("+00:00") || time[time.len() - 6..].starts_with(['+', '-'])), "{time}");
    let buckets = record["buckets"].as_array().unwrap();
    let count = record["count"].as_u64().unwrap();
    assert_eq!(buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum::<u64>(), count);
    assert_eq!((buckets[0]["low"].as_u64(), buckets[0]["high"].as_u64()), (Some(0), Some(1)));
    // The kernel's fine slots: the same samples, each slot inside one bucket.
    let slots = record["slots"].as_array().unwrap();
    assert_eq!(slots.iter().map(|s| s[2].as_u64().unwrap()).sum::<u64>(), count);
    for slot in slots {
        let (low, high) = (slot[0].as_u64().unwrap(), slot[1].as_u64().unwrap());
        assert!(
            buckets.iter().any(|b| b["low"].as_u64().unwrap() <= low && high <= b["high"].as_u64().unwrap()),
            "slot {slot} in no bucket"
        );
    }
    let table = Table {
        unit: "usecs".into(),
        rows: buckets
            .iter()
            .map(|b| (b["low"].as_u64().unwrap(), b["high"].as_u64().unwrap(), b["count"].as_u64().unwrap()))
            .collect(),
        summary: Some(["count", "p50", "p90", "p99", "p99.9", "max"].map(|k| record[k].as_u64().unwrap())),
    };
    assert_contention_table(&table);
    let text_table = &parse_tables(&text.stdout)[0].1;
    // Two instances cannot count the same samples (their windows differ, and
    // under emulation so does what they see): each must show the contention,
    // and the JSON rows are the table's rows (checked above through Table).
    assert_contention_table(text_table);
}

#[test]
fn ctrl_c_and_sigterm_print_the_summary_and_detach_everything() {
    let _serial = serial();
    let (_a, _b) = contention();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let tool = Running::start("runqlat", &["--verbose"], READY);
        std::thread::sleep(Duration::from_millis(1500));
        let out = tool.signal(signal);
        out.assert_complete("runqlat");
        let tables = parse_tables(&out.stdout);
        assert_eq!(tables.len(), 1, "{}", out.stdout);
        assert!(tables[0].1.at_or_above(1024) > min_samples() / 2, "{}", out.stdout);
        let ids = attached_program_ids(&out.stderr);
        assert_eq!(ids.len(), 3, "--verbose names three attached programs: {}", out.stderr);
        assert_unloaded(&ids);
    }
}

/// A classic tracepoint's run is skipped while anything on its CPU holds
/// the kernel's one per-CPU BPF guard: here another process reading a BPF
/// map (as any BPF tool reads its maps) on the CPU where a sleeper's timer
/// wakes it. Those wakeups are lost, and runqlat counts them where the
/// kernel says (6.7+). The raw tracepoint's guard is its program's own.
#[test]
fn wakeups_skipped_beside_another_bpf_reader_are_counted_as_lost() {
    let _serial = serial();
    let mut reader = Workload::new(&["bpf-reads", "1"]);
    reader.go();
    let mut skipped = Vec::new();
    for rung in ["tracepoint", "raw_tracepoint"] {
        let tool = Running::start("runqlat", &["--rung", rung, "--verbose", "1"], READY);
        let mut sleeper = Workload::new(&["sleep", "1", "2000", "1"]);
        sleeper.go();
        sleeper.wait(Duration::from_secs(120));
        let out = tool.interrupt();
        if out.stderr.contains("this kernel does not say which runs it skips") {
            out.assert_complete("runqlat");
            return;
        }
        let lost = Lost::from_stderr("runqlat", &out.stderr);
        assert_eq!(lost.counted_by_programs(), 0, "{}", out.stderr);
        assert_eq!(out.code(), Some(if lost.total > 0 { 3 } else { 0 }), "{out:?}");
        skipped.push(lost.skipped);
    }
    eprintln!("skipped on the tracepoint, then the raw tracepoint: {skipped:?}");
    // Tracepoints' skipped runs are counted by the kernel since 6.7 only
    // (the field itself is 5.12's).
    if kernel_release() < (6, 7) {
        assert_eq!(skipped, [0, 0]);
        return;
    }
    assert!(skipped[0] > skipped[1], "skipped on the tracepoint, then the raw tracepoint: {skipped:?}");
}

#[test]
fn a_closed_stdout_ends_the_tool_quietly() {
    let _serial = serial();
    let mut tool = Running::start("runqlat", &["1"], READY);
    tool.close_stdout();
    let out = tool.wait(Duration::from_secs(10));
    out.assert_complete("runqlat");
    assert_eq!(out.stderr, "");
}

/// A kernel without BTF (forced): offsets come from a BTF file passed with
/// --btf; without one, the tracepoint rung still serves -p, and flags that
/// need a task's struct say so.
#[test]
fn without_kernel_btf() {
    let _serial = serial();
    let file = std::env::temp_dir().join(format!("runqlat-test-{}.btf", std::process::id()));
    std::fs::copy("/sys/kernel/btf/vmlinux", &file).unwrap();
    let (spinner, _other) = contention();
    let pid = spinner.pid().to_string();
    let path = file.to_str().unwrap();
    let out = Running::start(
        "runqlat",
        &["--hide-kernel-btf", "--btf", path, "--rung", "raw_tracepoint", "-p", &pid, "2", "1"],
        READY,
    )
    .wait(Duration::from_secs(10));
    assert_contention_table(&parse_tables(&out.stdout)[0].1);
    // Neither the kernel matrix's BTF file nor its forced rung.
    let no_btf_file = ["EBPF_TOOLS_BTF", "EBPF_TOOLS_RUNG"];
    let out = Running::start_without(
        "runqlat",
        &["--hide-kernel-btf", "--verbose", "-p", &pid, "2", "1"],
        READY,
        &no_btf_file,
    )
    .wait(Duration::from_secs(10));
    assert!(out.stderr.contains("raw_tracepoint: not usable: no task_struct offsets"), "{}", out.stderr);
    assert!(out.stderr.contains("rung tracepoint: all 3 programs attached"), "{}", out.stderr);
    assert_contention_table(&parse_tables(&out.stdout)[0].1);
    let out = run_without("runqlat", &["--hide-kernel-btf", "--pidnss", "1", "1"], &no_btf_file);
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("--btf FILE"), "{}", out.stderr);
    let _ = std::fs::remove_file(&file);
}

/// As BCC's Python runqlat: a count of 0 never runs out (until Ctrl-C).
#[test]
fn a_count_of_zero_runs_until_interrupted() {
    let _serial = serial();
    let mut tool = Running::start("runqlat", &["1", "0"], READY);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(tool.is_running(), "runqlat 1 0 ended by itself");
    let out = tool.interrupt();
    out.assert_complete("runqlat");
    assert!(parse_tables(&out.stdout).len() >= 2, "{}", out.stdout);
}
