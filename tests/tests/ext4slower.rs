//! ext4slower against file operations whose answer is known, on a real
//! ext4 filesystem on a loop device (shared/reference/bcc-tools.md §3 and
//! §10), and its siblings xfsslower and btrfsslower.

use std::{os::unix::fs::MetadataExt as _, process::Command, time::Duration};

use integration_tests::*;
use serde_json::Value;

const HEADER: &str = "TIME     COMM           PID    T BYTES   OFF_KB   LAT(ms) FILENAME";
const READY_MACHINE: &str = "Tracing ";

/// The tool under another name (`xfsslower`): a link to the binary.
fn tool_named(name: &str) -> String {
    if name == "ext4slower" {
        return name.into();
    }
    let dir = std::env::temp_dir().join(format!("ebpf-tools-alias-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(tool_path("ext4slower"), &link).unwrap();
    }
    link.to_str().unwrap().to_owned()
}

/// Where this host's only path is the syscall rung, the tests allow it.
const ALLOW: &str = "--allow-syscall-rung";

/// Runs `tool args...` around a workload started first (its PID is known
/// and may be passed as `-p`: write `PID` in `args`).
fn trace(tool: &str, args: &[&str], ready: &str, workload: &[&str]) -> (Output, u32) {
    let _serial = serial();
    let mut w = Workload::new(workload);
    let pid = w.pid();
    let args = filled_in(&[&[ALLOW], args].concat(), &[("PID", &pid.to_string())]);
    let out = w.traced_by(Running::start(&tool_named(tool), &args, ready));
    out.assert_complete(tool);
    (out, pid)
}

/// Text rows naming `file`: (COMM, PID, T, BYTES, OFF_KB, LAT(ms)).
fn rows(out: &Output, file: &str) -> Vec<(String, u32, String, i64, i64, f64)> {
    out.stdout
        .lines()
        .filter(|l| l.ends_with(&format!(" {file}")))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[1].to_owned(),
                f[2].parse().unwrap(),
                f[3].to_owned(),
                f[4].parse().unwrap(),
                f[5].parse().unwrap(),
                f[6].parse().unwrap(),
            )
        })
        .collect()
}

/// The five operations of `file-ops`, exactly, in order.
fn every_operation_on(fs: &str, tool: &str, extra: &[&str]) {
    let mount = Mounted::new(fs);
    let name = unique_tag("f");
    let path = mount.path(&name);
    let mut args = vec!["-p", "PID", "0"];
    args.extend(extra);
    let (out, pid) = trace(tool, &args, HEADER, &["file-ops", &path, "8192", &(1 << 20).to_string()]);
    let banner = format!("Tracing {fs} operations");
    assert_eq!(out.stdout.lines().take(2).collect::<Vec<_>>(), [banner.as_str(), HEADER], "{}", out.stdout);
    let rows = rows(&out, &name);
    let ops: Vec<(&str, i64, i64)> = rows.iter().map(|r| (r.2.as_str(), r.3, r.4)).collect();
    assert_eq!(ops, [("O", 0, 0), ("W", 8192, 1024), ("R", 8192, 1024), ("S", 0, 0), ("O", 0, 0)], "{}", out.stdout);
    assert!(rows.iter().all(|r| r.0 == "workload" && r.1 == pid && r.5 >= 0.0), "{rows:?}");
}

#[test]
fn every_operation_with_threshold_zero() {
    every_operation_on("ext4", "ext4slower", &[]);
}

#[test]
fn every_operation_on_the_perf_array_and_config_map() {
    every_operation_on("ext4", "ext4slower", &["--perf-array", "--config-map"]);
}

#[test]
fn xfsslower_and_btrfsslower() {
    every_operation_on("xfs", "xfsslower", &[]);
    every_operation_on("btrfs", "btrfsslower", &[]);
}

/// The threshold, deterministically: one read held up 50 ms by
/// userfaultfd is shown; the fast reads around it are not.
#[test]
fn a_read_slower_than_the_threshold_and_only_it() {
    let mount = Mounted::new("ext4");
    let name = unique_tag("f");
    let path = mount.path(&name);
    std::fs::write(&path, vec![b'd'; 4096]).unwrap();
    let (out, pid) = trace("ext4slower", &["-p", "PID", "20"], HEADER, &["slow-read", &path, "50"]);
    assert_eq!(out.stdout.lines().next(), Some("Tracing ext4 operations slower than 20 ms"));
    let rows = rows(&out, &name);
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    let (_, row_pid, op, bytes, off_kb, ms) = rows[0].clone();
    assert_eq!((row_pid, op.as_str(), bytes, off_kb), (pid, "R", 4096, 0));
    assert!(ms >= 50.0, "held up 50 ms, shown {ms}");
}

/// Files elsewhere never appear: tmpfs, and another filesystem than the
/// one traced.
#[test]
fn other_filesystems_never_appear() {
    for fs in ["tmpfs", "xfs"] {
        let mount = Mounted::new(fs);
        let name = unique_tag("f");
        let (out, _) = trace("ext4slower", &["-p", "PID", "0"], HEADER, &["file-ops", &mount.path(&name), "4096", "0"]);
        assert!(!out.stdout.contains(&name), "{fs}: {}", out.stdout);
    }
}

#[test]
fn csv_parses_with_a_real_csv_parser() {
    let mount = Mounted::new("ext4");
    let name = format!("{},with,\"commas\"", unique_tag("f"));
    for flag in ["-j", "--csv"] {
        let (out, pid) = trace(
            "ext4slower",
            &[flag, "-p", "PID", "0"],
            READY_MACHINE,
            &["file-ops", &mount.path(&name), "4096", "1048576"],
        );
        let rows = parse_csv(&out.stdout);
        assert_eq!(rows[0], ["ENDTIME_us", "TASK", "PID", "TYPE", "BYTES", "OFFSET_b", "LATENCY_us", "FILE"]);
        let write = rows.iter().find(|r| r[3] == "W").expect("a W row");
        assert_eq!(&write[1..6], ["workload", &pid.to_string(), "W", "4096", "1048576"]);
        assert_eq!(write[7], name);
        assert!(write[0].parse::<u64>().unwrap() > 0 && write[6].parse::<u64>().is_ok());
    }
}

/// `ext4slower 0 > file-on-ext4`: the tool's own writes of its output are
/// not traced (BCC leaves out its own PID), or each line would beget more.
#[test]
fn its_own_output_on_the_traced_filesystem_is_left_out() {
    let _serial = serial();
    let mount = Mounted::new("ext4");
    let name = unique_tag("f");
    let output = mount.path(&format!("{name}.jsonl"));
    let mut shell = Command::new("sh");
    shell.args(["-c", &format!("exec \"$0\" {ALLOW} --json 0 > {output}"), tool_path("ext4slower").to_str().unwrap()]);
    let tool = Running::start_command(shell, "ext4slower", READY_MACHINE);
    let tool_pid = tool.pid() as u64;
    let mut w = Workload::new(&["file-ops", &mount.path(&name), "4096", "0"]);
    let out = w.traced_by(tool);
    out.assert_complete("ext4slower");
    let records = json_lines(&std::fs::read_to_string(&output).unwrap());
    let own = records.iter().filter(|r| r["pid"].as_u64() == Some(tool_pid)).count();
    let ops: Vec<&str> =
        records.iter().filter(|r| r["file"] == name.as_str()).filter_map(|r| r["op"].as_str()).collect();
    assert_eq!((own, ops), (0, vec!["open", "write", "read", "fsync", "open"]), "{records:?}");
}

#[test]
fn json_names_the_file_by_device_and_inode() {
    let mount = Mounted::new("ext4");
    let name = unique_tag("f");
    let path = mount.path(&name);
    let (out, pid) =
        trace("ext4slower", &["--json", "-p", "PID", "0"], READY_MACHINE, &["file-ops", &path, "4096", "0"]);
    let meta = std::fs::metadata(&path).unwrap();
    let records = json_lines(&out.stdout);
    let write = records.iter().find(|r| r["op"] == "write").expect("a write");
    assert_eq!(
        (write["schema"].as_u64(), write["tool"].as_str(), write["type"].as_str()),
        (Some(1), Some("ext4slower"), Some("op"))
    );
    assert_eq!(
        (write["pid"].as_u64(), write["comm"].as_str(), write["file"].as_str()),
        (Some(pid as u64), Some("workload"), Some(name.as_str()))
    );
    assert_eq!((write["bytes"].as_i64(), write["offset"].as_i64()), (Some(4096), Some(0)));
    assert_eq!(
        (write["dev"].as_u64(), write["inode"].as_u64()),
        (Some(meta.dev()), Some(meta.ino())),
        "as stat(2) says"
    );
    assert!(write["latency_ns"].as_u64().is_some() && write["tid"].as_u64().is_some());
    let ops: Vec<&str> = records.iter().filter_map(|r| r["op"].as_str()).collect();
    assert_eq!(ops, ["open", "write", "read", "fsync", "open"]);
}

/// On btrfs, stat(2) gives each subvolume an anonymous device of its own;
/// `dev` is the filesystem's, as /proc/self/mountinfo names it (what the
/// man page says).
#[test]
fn btrfs_names_the_file_by_the_filesystems_device() {
    let mount = Mounted::new("btrfs");
    let name = unique_tag("f");
    let path = mount.path(&name);
    let (out, _) =
        trace("btrfsslower", &["--json", "-p", "PID", "0"], READY_MACHINE, &["file-ops", &path, "4096", "0"]);
    let dir = mount.dir.to_str().unwrap().to_owned();
    let mountinfo = read("/proc/self/mountinfo");
    let (major, minor) = mountinfo
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&dir.as_str()))
        .and_then(|f| f[2].split_once(':').map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap())))
        .unwrap_or_else(|| panic!("{dir} not in mountinfo"));
    let records = json_lines(&out.stdout);
    let write = records.iter().find(|r| r["op"] == "write").expect("a write");
    assert_eq!(write["dev"].as_u64(), Some(libc::makedev(major, minor)), "{write}");
    assert_eq!(write["inode"].as_u64(), Some(std::fs::metadata(&path).unwrap().ino()));
}

#[test]
fn hostile_file_name_is_escaped_in_text_and_exact_in_json() {
    let mount = Mounted::new("ext4");
    let name = format!("{}\nfake row \u{1b}[31m", unique_tag("f"));
    let path = mount.path(&name);
    let (out, _) = trace("ext4slower", &["-p", "PID", "0"], HEADER, &["file-ops", &path, "4096", "0"]);
    assert!(!out.stdout.contains('\u{1b}'), "ESC reached the output raw");
    let escaped = name.replace('\n', "\\n").replace('\u{1b}', "\\x1b");
    assert_eq!(out.stdout.lines().filter(|l| l.ends_with(&escaped)).count(), 5, "{}", out.stdout);
    let (out, _) = trace("ext4slower", &["--json", "-p", "PID", "0"], READY_MACHINE, &["file-ops", &path, "4096", "0"]);
    let ops: Vec<Value> = json_lines(&out.stdout).into_iter().filter(|r| r["type"] == "op").collect();
    assert!(ops.len() == 5 && ops.iter().all(|r| r["file"] == name.as_str()), "{}", out.stdout);
}

/// A file name that is not UTF-8 comes back exactly: escaped as in text in
/// CSV (`-j`), and in hex beside the lossy `file` in JSON.
#[test]
fn a_name_that_is_not_utf8_is_recoverable_in_csv_and_json() {
    use std::os::unix::ffi::OsStrExt as _;
    let _serial = serial();
    let mount = Mounted::new("ext4");
    let tag = unique_tag("f");
    let name = [tag.as_bytes(), b"\xff"].concat();
    let path = mount.dir.join(std::ffi::OsStr::from_bytes(&name));
    for (args, ready) in [(&["-j", ALLOW, "0"][..], READY_MACHINE), (&["--json", ALLOW, "0"][..], READY_MACHINE)] {
        let tool = Running::start("ext4slower", args, ready);
        std::fs::write(&path, b"x").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let out = tool.interrupt();
        let mine: Vec<&str> = out.stdout.lines().filter(|l| l.contains(&tag)).collect();
        assert!(!mine.is_empty(), "{args:?}: {}", out.stdout);
        for line in mine {
            match args[0] {
                "-j" => assert!(line.ends_with(&format!(",{tag}\\xff")), "{line}"),
                _ => {
                    let record: Value = serde_json::from_str(line).unwrap();
                    assert_eq!(record["file"].as_str(), Some(format!("{tag}\u{fffd}").as_str()));
                    let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
                    assert_eq!(record["file_hex"].as_str(), Some(hex.as_str()), "{line}");
                }
            }
        }
    }
}

/// An O_SYNC write is one W row with its bytes (BCC reports only the
/// fsync nested in it).
#[test]
fn an_osync_write_is_reported_as_a_write() {
    let mount = Mounted::new("ext4");
    let name = unique_tag("f");
    let (out, _) = trace("ext4slower", &["-p", "PID", "0"], HEADER, &["osync-write", &mount.path(&name)]);
    let rows = rows(&out, &name);
    assert!(rows.iter().any(|r| r.2 == "W" && r.3 == 4096), "{}", out.stdout);
}

/// The rung this host has (no kprobes, no fentry), forced; the others
/// fail naming why. The kernel matrix forces each for real.
#[test]
fn rungs() {
    every_operation_on("ext4", "ext4slower", &["--rung", "syscall"]);
    let out = run("ext4slower", &["--verbose", "--rung", "syscall", "-d", "1"]);
    assert!(out.stderr.contains("rung syscall: all"), "{}", out.stderr);
    if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        let out = run("ext4slower", &["--rung", "kprobe"]);
        assert_eq!(out.code(), Some(1), "{out:?}");
        assert!(out.stderr.contains("kprobe:"), "{}", out.stderr);
    }
}

/// The syscall rung taxes every process on the host: taken only when
/// allowed or asked for by name, and said when taken. Where the kernel has
/// a better path (the matrix's guests), that one is taken without the flag.
#[test]
fn the_syscall_rung_is_taken_only_when_allowed() {
    let out = run("ext4slower", &["--verbose", "-d", "1"]);
    match out.code() {
        Some(1) => {
            assert!(out.stderr.contains("syscall: syscall tracepoints slow every read"), "{}", out.stderr);
            assert!(out.stderr.contains("--allow-syscall-rung"), "{}", out.stderr);
        }
        _ => {
            out.assert_complete("ext4slower");
            assert!(!out.stderr.contains("rung syscall: all"), "{}", out.stderr);
        }
    }
    for args in [&[ALLOW, "--verbose", "-d", "1"][..], &["--rung", "syscall", "--verbose", "-d", "1"]] {
        let out = run("ext4slower", args);
        out.assert_complete("ext4slower");
        if out.stderr.contains("rung syscall: all") {
            assert!(out.stderr.contains("every read, write, open and fsync on the host pays"), "{}", out.stderr);
        }
    }
}

#[test]
fn duration_ends_the_trace() {
    let started = std::time::Instant::now();
    let out = run("ext4slower", &[ALLOW, "-d", "1"]);
    out.assert_complete("ext4slower");
    // Ends by itself; the bound only catches a tool that would not (under
    // qemu TCG start-up alone took over 10 s once, two guests at a time).
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    assert_eq!(out.stdout.lines().nth(1), Some(HEADER));
    // And with --histogram: the tables of the one interval the duration makes.
    let out = run("ext4slower", &[ALLOW, "--histogram", "-d", "1"]);
    out.assert_complete("ext4slower");
    assert_eq!(out.stdout.lines().next(), Some("Tracing ext4 operation latency... Hit Ctrl-C to end."));
}

/// `--histogram`, BCC's ext4dist view: every operation of the workload
/// counted in the kernel, whatever its latency, in a table per operation.
#[test]
fn histograms_count_every_operation_by_operation() {
    let mount = Mounted::new("ext4");
    let path = mount.path(&unique_tag("f"));
    let banner = "Tracing ext4 operation latency... Hit Ctrl-C to end.";
    let workload = ["file-ops", &path, "8192", &(1 << 20).to_string()];
    let (out, _) = trace("ext4slower", &["--histogram", "-p", "PID"], banner, &workload);
    assert_eq!(out.stdout.lines().next(), Some(banner));
    let counts: Vec<(String, u64)> = parse_tables(&out.stdout)
        .into_iter()
        .map(|(section, table)| {
            table.assert_summary_consistent();
            assert_eq!(table.unit, "usecs");
            (section.unwrap_or_default(), table.total())
        })
        .collect();
    let want = [("operation = read", 1), ("operation = write", 1), ("operation = open", 2), ("operation = fsync", 1)];
    assert_eq!(counts, want.map(|(s, n)| (s.to_owned(), n)), "{}", out.stdout);
}
