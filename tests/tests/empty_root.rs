//! Every tool run from a root directory that holds nothing but its binary
//! and mounts of /proc, /sys and tracefs, in a mount namespace of its own:
//! no C library, no /etc, no /lib, no /dev, as on a host whose userspace
//! the binary was not built for. Each loads, attaches, prints what a known
//! workload did, and detaches (its programs are gone after it exits).

use std::{
    ffi::CString,
    fs,
    io::Write as _,
    net::{TcpListener, TcpStream, ToSocketAddrs as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use integration_tests::*;
use serde_json::Value;

/// A directory holding one tool's binary and the empty mount points.
struct EmptyRoot {
    dir: PathBuf,
    tool: String,
}

impl EmptyRoot {
    fn new(tool: &str) -> EmptyRoot {
        let dir = std::env::temp_dir().join(format!("ebpf-tools-root-{tool}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for mount_point in ["proc", "sys"] {
            fs::create_dir_all(dir.join(mount_point)).unwrap();
        }
        fs::copy(tool_path(tool), dir.join(tool)).unwrap();
        let entries: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(entries.len(), 3, "the root holds the binary and two mount points: {entries:?}");
        EmptyRoot { dir, tool: tool.to_owned() }
    }

    /// The tool with `args`, to be run inside: a new mount namespace (the
    /// mounts vanish with the process), proc, sysfs and tracefs mounted,
    /// then chroot. A dynamically linked binary fails here to start.
    fn command(&self, args: &[&str]) -> Command {
        let c = |s: &str| CString::new(s).unwrap();
        let root = c(self.dir.to_str().unwrap());
        let mounts: Vec<(CString, CString, CString)> =
            [("proc", "proc", "proc"), ("sysfs", "sys", "sysfs"), ("tracefs", "sys/kernel/tracing", "tracefs")]
                .iter()
                .map(|(source, target, fs)| (c(source), c(self.dir.join(target).to_str().unwrap()), c(fs)))
                .collect();
        let slash = c("/");
        let mut command = Command::new(format!("/{}", self.tool));
        command.args(args).env_clear();
        // SAFETY: only async-signal-safe syscalls on strings made before the fork.
        unsafe {
            command.pre_exec(move || {
                let check = |ret: libc::c_int| if ret == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
                let (none, no_data) = (std::ptr::null(), std::ptr::null());
                check(libc::unshare(libc::CLONE_NEWNS))?;
                // Private: nothing mounted here propagates to the host.
                check(libc::mount(none, slash.as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, no_data))?;
                for (source, target, fs) in &mounts {
                    check(libc::mount(source.as_ptr(), target.as_ptr(), fs.as_ptr(), 0, no_data))?;
                }
                check(libc::chroot(root.as_ptr()))?;
                check(libc::chdir(slash.as_ptr()))
            });
        }
        command
    }
}

impl Drop for EmptyRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The JSON records a tool printed, the capture record first.
fn records(out: &Output) -> Vec<Value> {
    let records: Vec<Value> = out.stdout.lines().map(|l| serde_json::from_str(l).expect("JSON Lines")).collect();
    assert_eq!(records.first().map(|r| r["type"].clone()), Some("capture".into()), "{out:?}");
    records
}

/// Runs `tool --verbose --json args` in an empty root; `workload` runs
/// once the tool is attached, and ends it (`interrupt`) or waits for it.
/// Checks that it exited 0 and that every program it attached is gone;
/// returns its output.
fn trace(tool: &str, args: &[&str], ready: &str, workload: impl FnOnce(Running) -> Output) -> Output {
    let root = EmptyRoot::new(tool);
    let version = root.command(&["--version"]).output().expect("spawn in the empty root");
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(version.starts_with(&format!("{tool} ")) && version.contains("aya "), "{version}");

    let mut full = vec!["--verbose", "--json"];
    full.extend(args);
    let out = workload(Running::start_command(root.command(&full), tool, ready));
    assert_eq!(out.code(), Some(0), "{out:?}");
    let ids = attached_program_ids(&out.stderr);
    assert!(!ids.is_empty(), "--verbose names the attached programs: {}", out.stderr);
    assert_unloaded(&ids);
    out
}

fn pause() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn runqlat_and_the_heatmap_of_its_capture() {
    let _serial = serial();
    let (_a, _b) = contention();
    let out = trace("runqlat", &["1", "1"], "Tracing run queue latency", |tool| tool.wait(Duration::from_secs(20)));
    let histograms: Vec<Value> = records(&out).into_iter().filter(|r| r["type"] == "histogram").collect();
    assert_eq!(histograms.len(), 1, "{out:?}");
    assert!(histograms[0]["count"].as_u64() > Some(0), "{out:?}");

    // The renderer, in an empty root of its own, draws that capture.
    let root = EmptyRoot::new("ebpf-tools-heatmap");
    let mut child = root.command(&[]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(out.stdout.as_bytes()).unwrap();
    let drawn = child.wait_with_output().unwrap();
    assert!(drawn.status.success(), "{drawn:?}");
    assert!(String::from_utf8_lossy(&drawn.stdout).contains("id=\"plot\""));
}

#[test]
fn biolatency() {
    let _serial = serial();
    let device = LoopDevice::new();
    // One interval of 5 s: with 1 s, the fresh-clone CI once saw 62 of the
    // 64 reads, the last two after the interval had ended.
    let out = trace("biolatency", &["-D", "5", "1"], "Tracing block device I/O", |tool| {
        device.direct_io(0, 64);
        tool.wait(Duration::from_secs(20))
    });
    let disk = records(&out).into_iter().find(|r| r["key"]["disk"] == device.name()).expect("the loop device's I/O");
    assert!(disk["count"].as_u64() >= Some(64), "{disk}");
}

#[test]
fn execsnoop() {
    let _serial = serial();
    let tag = unique_tag("r");
    let out = trace("execsnoop", &[], "Tracing exec()s", |mut tool| {
        Command::new("/bin/true").arg(&tag).status().unwrap();
        assert!(tool.wait_for(&tag, Duration::from_secs(10)), "the exec was not printed");
        tool.interrupt()
    });
    let exec = records(&out).into_iter().find(|r| r["args"][1] == tag.as_str()).expect("the exec");
    assert_eq!(exec["comm"], "true");
}

#[test]
fn tcplife() {
    let _serial = serial();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = trace("tcplife", &[], "Tracing TCP sessions", |mut tool| {
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.write_all(&[0; 100]).unwrap();
        drop(client);
        drop(server);
        assert!(tool.wait_for(&format!("\"lport\":{port}"), Duration::from_secs(10)), "the session was not printed");
        tool.interrupt()
    });
    let session = records(&out).into_iter().find(|r| r["lport"] == port).expect("the session");
    assert_eq!(session["pid"], std::process::id(), "{session}");
}

#[test]
fn gethostlatency() {
    let _serial = serial();
    // This test's own C library: the tool finds it through /proc/PID/root.
    let out = trace("gethostlatency", &["-p", &std::process::id().to_string()], "Tracing host name lookups", |tool| {
        pause();
        let _ = ("localhost", 80).to_socket_addrs().unwrap();
        pause();
        tool.interrupt()
    });
    let lookup = records(&out).into_iter().find(|r| r["host"] == "localhost").expect("the lookup");
    assert_eq!(lookup["function"], "getaddrinfo", "{lookup}");
}

#[test]
fn ext4slower() {
    let _serial = serial();
    let fs = Mounted::new("ext4");
    let name = unique_tag("r");
    let out = trace("ext4slower", &["--allow-syscall-rung", "0"], "Tracing ext4 operations", |tool| {
        fs::write(fs.path(&name), b"written in the empty root's test").unwrap();
        let _ = fs::read(Path::new(&fs.path(&name))).unwrap();
        pause();
        tool.interrupt()
    });
    let ops: Vec<Value> = records(&out).into_iter().filter(|r| r["file"] == name.as_str()).collect();
    assert!(ops.iter().any(|r| r["op"] == "write") && ops.iter().any(|r| r["op"] == "read"), "{out:?}");
}
