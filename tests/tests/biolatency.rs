//! biolatency against direct I/O on loop devices: the answer is exact.

use std::time::Duration;

use integration_tests::*;

const READY: &str = "Tracing block device I/O... Hit Ctrl-C to end.";

/// Runs biolatency with `args` around 100 direct writes and 50 direct reads on `dev`.
fn around_io(dev: &LoopDevice, args: &[&str]) -> Output {
    let tool = Running::start("biolatency", args, READY);
    dev.direct_io(100, 50);
    let out = tool.interrupt();
    out.assert_complete("biolatency");
    out
}

fn assert_exact_150(out: &Output, unit: &str) {
    let tables = parse_tables(&out.stdout);
    assert_eq!(tables.len(), 1, "{}", out.stdout);
    let table = &tables[0].1;
    assert_eq!(table.total(), 150, "{}", out.stdout);
    assert_eq!(table.unit, unit);
    assert_eq!((table.rows[0].0, table.rows[0].1), (0, 1), "rows start at 0 -> 1");
    assert!(table.rows.last().unwrap().2 > 0, "no rows after the last non-zero one");
    let max = table.rows.iter().map(|r| r.2).max().unwrap();
    let max_line = out.stdout.lines().find(|l| l.contains(&format!(": {max:<8} |"))).unwrap();
    assert!(max_line.ends_with(&format!("|{}|", "*".repeat(40))), "{max_line}");
    table.assert_summary_consistent();
}

#[test]
fn exact_count_on_the_best_rung() {
    let _serial = serial();
    let dev = LoopDevice::new();
    let out = around_io(&dev, &["-d", dev.name()]);
    assert_exact_150(&out, "usecs");
}

#[test]
fn exact_count_on_each_forced_lower_rung() {
    let _serial = serial();
    let dev = LoopDevice::new();
    for extra in [&["--rung", "raw_tracepoint"][..], &["--rung", "tracepoint"], &["--config-map"]] {
        let mut args = vec!["-d", dev.name()];
        args.extend(extra);
        assert_exact_150(&around_io(&dev, &args), "usecs");
    }
    if has_block_io_tracepoints() {
        assert_exact_150(&around_io(&dev, &["-d", dev.name(), "--rung", "tracepoint_io"]), "usecs");
    } else {
        let out = run("biolatency", &["-d", dev.name(), "--rung", "tracepoint_io"]);
        assert_eq!(out.code(), Some(1));
        assert!(out.stderr.contains("block_io_done"), "names what is missing: {}", out.stderr);
    }
}

/// `block:block_io_start`/`block_io_done` exist from 6.5.
fn has_block_io_tracepoints() -> bool {
    std::path::Path::new("/sys/kernel/tracing/events/block/block_io_done").exists()
}

#[test]
fn milliseconds_and_queued_keep_the_count() {
    let _serial = serial();
    let dev = LoopDevice::new();
    assert_exact_150(&around_io(&dev, &["-m", "-d", dev.name()]), "msecs");
    assert_exact_150(&around_io(&dev, &["-Q", "-d", dev.name()]), "usecs");
    assert_exact_150(&around_io(&dev, &["-Q", "--rung", "tracepoint", "-d", dev.name()]), "usecs");
    if has_block_io_tracepoints() {
        assert_exact_150(&around_io(&dev, &["-Q", "--rung", "tracepoint_io", "-d", dev.name()]), "usecs");
    }
}

#[test]
fn per_disk_sections_with_exact_counts() {
    let _serial = serial();
    let (a, b) = (LoopDevice::new(), LoopDevice::new());
    let tool = Running::start("biolatency", &["-D"], READY);
    a.direct_io(100, 50);
    b.direct_io(30, 0);
    let out = tool.interrupt();
    let tables = parse_tables(&out.stdout);
    for (dev, expected) in [(&a, 150), (&b, 30)] {
        let header = format!("disk = {}", dev.name());
        let (_, table) = tables
            .iter()
            .find(|(s, _)| s.as_deref() == Some(header.as_str()))
            .unwrap_or_else(|| panic!("no {header:?} in\n{}", out.stdout));
        assert_eq!(table.total(), expected, "{header}");
    }
}

#[test]
fn per_flag_sections_name_reads_and_writes() {
    let _serial = serial();
    let dev = LoopDevice::new();
    let out = around_io(&dev, &["-F", "-d", dev.name()]);
    let tables = parse_tables(&out.stdout);
    let sum = |suffix: &str| -> u64 {
        tables
            .iter()
            .filter(|(s, _)| s.as_deref().is_some_and(|s| s.starts_with("flags = ") && s.ends_with(suffix)))
            .map(|(_, t)| t.total())
            .sum()
    };
    assert_eq!(sum("Read"), 50, "{}", out.stdout);
    assert_eq!(sum("Write"), 100, "{}", out.stdout);
}

#[test]
fn extension_line() {
    let _serial = serial();
    let dev = LoopDevice::new();
    let out = around_io(&dev, &["-e", "-d", dev.name()]);
    let line = out.stdout.lines().find(|l| l.starts_with("avg = ")).expect("avg line");
    assert!(line.ends_with(", count: 150") && line.contains(" usecs, total: "), "{line}");
}

#[test]
fn json_counts_exactly() {
    let _serial = serial();
    let dev = LoopDevice::new();
    for flag in ["--json", "-j"] {
        let out = around_io(&dev, &[flag, "-D", "-d", dev.name()]);
        let records: Vec<_> = json_lines(&out.stdout).into_iter().filter(|r| r["type"] != "capture").collect();
        assert_eq!(records.len(), 1, "{}", out.stdout);
        let r = &records[0];
        assert_eq!(
            (r["tool"].as_str(), r["type"].as_str(), r["count"].as_u64()),
            (Some("biolatency"), Some("histogram"), Some(150))
        );
        assert_eq!(r["key"]["disk"], dev.name());
        let sum: u64 = r["buckets"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
        assert_eq!(sum, 150);
    }
}

#[test]
fn idle_intervals_print_timestamps_and_exit() {
    let _serial = serial();
    let dev = LoopDevice::new();
    let out = Running::start("biolatency", &["-d", dev.name(), "-T", "1", "3"], READY).wait(Duration::from_secs(10));
    out.assert_complete("biolatency");
    let times = out.stdout.lines().filter(|l| l.len() == 8 && l.as_bytes()[2] == b':').count();
    assert_eq!(times, 3, "{}", out.stdout);
    assert!(parse_tables(&out.stdout).is_empty(), "no I/O, no rows: {}", out.stdout);
}
