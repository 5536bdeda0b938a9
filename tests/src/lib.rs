//! Helpers of the integration tests: the tools as child processes, and
//! workloads as RAII guards that are killed when dropped.
//!
//! Every test really loads BPF: a tool that cannot start makes the test
//! fail with the tool's stderr, never pass by returning early.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{mpsc, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

pub mod containers;

/// Tests measure scheduling and I/O: one at a time, so they don't disturb
/// each other's workloads.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where the cgroup v2 hierarchy is mounted (from /proc/self/mountinfo).
pub fn cgroup2_root() -> PathBuf {
    read("/proc/self/mountinfo")
        .lines()
        .find_map(|l| l.split_once(" - cgroup2 ").and_then(|(mount, _)| mount.split(' ').nth(4)).map(PathBuf::from))
        .expect("a cgroup v2 mount")
}

/// Pins the calling process to `cpu`; false if the kernel refuses.
pub fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays in bounds for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Where the tool binaries are: `EBPF_TOOLS_BIN_DIR` (set by `cargo xtask
/// test`), else the workspace's static release build (`cargo xtask build`),
/// then host builds.
pub fn tool_path(tool: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("EBPF_TOOLS_BIN_DIR") {
        return PathBuf::from(dir).join(tool);
    }
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let static_build = format!("{}-unknown-linux-musl/release", std::env::consts::ARCH);
    [static_build.as_str(), "release", "debug"]
        .iter()
        .map(|dir| target.join(dir).join(tool))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{tool} is not built: run `cargo xtask test` (or `cargo xtask build`)"))
}

/// What a finished tool printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts `tool` ended as a complete run does: exit 0, or exit 3 where
    /// every loss it reported is runs of its programs that the kernel
    /// skipped. Those are the kernel's to decide, not the tool's: a
    /// kprobe's, uprobe's or classic tracepoint's run is skipped while
    /// anything else on that CPU holds the kernel's one per-CPU BPF guard
    /// (`bpf_prog_active`; a 7.3 guest skipped 16 runs of ext4slower's
    /// syscall rung in two seconds), and most such runs are not events the
    /// tool would print. The test's own events are checked by what was
    /// printed, as always.
    pub fn assert_complete(&self, tool: &str) {
        let lost = Lost::from_stderr(tool, &self.stderr);
        let only_skipped = self.code() == Some(3) && lost.total > 0 && lost.counted_by_programs() == 0;
        assert!(self.code() == Some(0) || only_skipped, "{lost:?}: {self:?}");
    }
}

/// A tool running in the background.
pub struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    seen: String,
    stderr: Option<thread::JoinHandle<String>>,
    err_lines: mpsc::Receiver<String>,
    err_seen: String,
}

/// Runs `tool args...` to completion.
pub fn run(tool: &str, args: &[&str]) -> Output {
    run_without(tool, args, &[])
}

/// As [`run`], with the program told it runs as `name` (its `argv[0]`):
/// an alias such as `xfsslower`.
pub fn run_as(tool: &str, name: &str, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt as _;
    let out = Command::new(tool_path(tool)).arg0(name).args(args).stdin(Stdio::null()).output().expect("spawn tool");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// As [`run`], without the environment variables `unset`.
pub fn run_without(tool: &str, args: &[&str], unset: &[&str]) -> Output {
    let mut command = Command::new(tool_path(tool));
    for var in unset {
        command.env_remove(var);
    }
    let out = command.args(args).stdin(Stdio::null()).output().expect("spawn tool");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Running {
    /// Starts the tool and waits until it printed `ready` (its banner) on
    /// stdout or stderr: from then on its programs are attached.
    pub fn start<S: AsRef<std::ffi::OsStr>>(tool: &str, args: &[S], ready: &str) -> Running {
        Self::start_without(tool, args, ready, &[])
    }

    /// As [`Running::start`], without the environment variables `unset`
    /// (the kernel matrix sets some for every tool).
    pub fn start_without<S: AsRef<std::ffi::OsStr>>(tool: &str, args: &[S], ready: &str, unset: &[&str]) -> Running {
        let mut command = Command::new(tool_path(tool));
        for var in unset {
            command.env_remove(var);
        }
        command.args(args);
        Self::start_command(command, tool, ready)
    }

    /// As [`Running::start`], for a command made ready to run (`tool` names
    /// it in failures).
    pub fn start_command(mut command: Command, tool: &str, ready: &str) -> Running {
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn tool");
        let (tx, stdout) = mpsc::channel();
        let (err_tx, err_lines) = mpsc::channel::<String>();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        thread::spawn(move || loop {
            let mut line = String::new();
            match out.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        });
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let stderr = thread::spawn(move || {
            let mut all = String::new();
            let mut line = String::new();
            while matches!(err.read_line(&mut line), Ok(n) if n > 0) {
                let _ = err_tx.send(line.clone());
                all.push_str(&line);
                line.clear();
            }
            all
        });
        let mut running =
            Running { child, stdout, seen: String::new(), stderr: Some(stderr), err_lines, err_seen: String::new() };
        // Generous: an emulated guest has taken over 10 s to start a tool.
        if !running.wait_for(ready, Duration::from_secs(60)) {
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!("{tool} exited ({status}) before it was ready:\n{}{}", running.err_seen, running.seen);
            }
            panic!("{tool} not ready after 60 s:\n{}{}", running.err_seen, running.seen);
        }
        running
    }

    /// Waits until the tool has printed `text` on stdout or stderr; false if
    /// it did not within `limit` (or exited first).
    pub fn wait_for(&mut self, text: &str, limit: Duration) -> bool {
        self.wait_until(|stdout, stderr| stdout.contains(text) || stderr.contains(text), limit)
    }

    /// Waits until what the tool printed so far (stdout, stderr) satisfies
    /// `done`; false if it did not within `limit` (or exited first).
    pub fn wait_until(&mut self, done: impl Fn(&str, &str) -> bool, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            while let Ok(line) = self.err_lines.try_recv() {
                self.err_seen.push_str(&line);
            }
            if done(&self.seen, &self.err_seen) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                while let Ok(line) = self.err_lines.try_recv() {
                    self.err_seen.push_str(&line);
                }
                return done(&self.seen, &self.err_seen);
            }
            if Instant::now() > deadline {
                return false;
            }
            if let Ok(line) = self.stdout.recv_timeout(Duration::from_millis(20)) {
                self.seen.push_str(&line);
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether the tool has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` and collects everything the tool printed until it exits.
    pub fn signal(self, signal: i32) -> Output {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), signal) };
        self.wait(Duration::from_secs(20))
    }

    /// Ctrl-C.
    pub fn interrupt(self) -> Output {
        self.signal(libc::SIGINT)
    }

    /// Waits for the tool to exit by itself.
    pub fn wait(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("tool did not exit within {limit:?}; printed:\n{}", self.seen);
            }
            thread::sleep(Duration::from_millis(20));
        };
        // Every line up to the end of the pipe: the reader thread ends the
        // channel at EOF, however long it was kept from running. The bound
        // only guards against a child that inherited the pipe and lives on.
        let mut stdout = std::mem::take(&mut self.seen);
        let drained = Instant::now() + Duration::from_secs(10);
        while let Ok(line) = self.stdout.recv_timeout(drained.saturating_duration_since(Instant::now())) {
            stdout.push_str(&line);
        }
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        Output { status, stdout, stderr }
    }

    /// What the tool printed on stderr so far.
    pub fn stderr_so_far(&mut self) -> &str {
        while let Ok(line) = self.err_lines.try_recv() {
            self.err_seen.push_str(&line);
        }
        &self.err_seen
    }

    /// Closes the read end of the tool's stdout (as `tool | head` does).
    pub fn close_stdout(&mut self) {
        let (_, dead) = mpsc::channel();
        self.stdout = dead;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ebpf-tools-exporter` running in the background on a port of its own.
pub struct Exporter {
    pub running: Running,
    /// `127.0.0.1:PORT`
    pub address: String,
}

impl Exporter {
    /// Starts the exporter with `args` on 127.0.0.1 and an unused port;
    /// returns once it serves.
    pub fn start(args: &[&str]) -> Exporter {
        let mut all = vec!["--web.listen-address", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut running = Running::start("ebpf-tools-exporter", &all, "ebpf-tools-exporter: serving");
        let said = running.stderr_so_far().to_owned();
        let address = serving_address(&said).unwrap_or_else(|| panic!("no address in: {said}"));
        Exporter { running, address }
    }

    /// `GET path` (plain HTTP): the status and the body.
    pub fn get(&self, path: &str, accept: Option<&str>) -> (u16, String) {
        let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
        let (status, _, body) = http_request(
            &self.address,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n"),
        )
        .expect("scraping the exporter");
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// The (first) address the exporter serves on, from its stderr line
/// `ebpf-tools-exporter: serving http on ADDRESS (...)`.
pub fn serving_address(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find_map(|l| l.split_once(": serving ")?.1.split_once(" on ")?.1.split([' ', ',']).next())
        .map(str::to_owned)
}

/// Sends one raw HTTP/1.1 request on a new connection and reads the reply
/// to its end: the status, the head and the body.
pub fn http_request(address: &str, request: &str) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let split = reply.windows(4).position(|w| w == b"\r\n\r\n").map_or(reply.len(), |at| at + 4);
    let head = String::from_utf8_lossy(&reply[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, head, reply[split..].to_vec()))
}

/// The workload program, built beside the test executables
/// (target/<profile>/workload).
pub fn workload_path() -> PathBuf {
    let deps = std::env::current_exe().expect("test executable");
    deps.parent().and_then(|d| d.parent()).expect("target dir").join("workload")
}

/// A workload process (see `src/bin/workload/main.rs`), held until it is started
/// with [`Workload::go`], and killed when dropped.
pub struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl Workload {
    /// `wrapper` runs the workload: `unshare --pid --fork`, `env VAR=value`.
    pub fn with_wrapper(wrapper: &[&str], args: &[&str]) -> Workload {
        Self::spawn(wrapper, args)
    }

    pub fn new(args: &[&str]) -> Workload {
        Self::spawn(&[], args)
    }

    fn spawn(wrapper: &[&str], args: &[&str]) -> Workload {
        let exe = workload_path();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let mut child = cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn workload");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        Workload { child, stdin, stdout }
    }

    /// A CPU-bound loop pinned to `cpu`.
    pub fn spinner(cpu: u32) -> Workload {
        Self::new(&["spin", &cpu.to_string()])
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the workload printed (what it reports before it
    /// waits: PIDs, a port).
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.as_mut().expect("stdout").read_line(&mut line).expect("workload output");
        assert!(!line.is_empty(), "the workload ended without reporting");
        line.trim_end().to_owned()
    }

    /// Waits until the workload is blocked reading its go byte (syscall 0,
    /// read, on fd 0): from then on it wakes only when [`Workload::go`]
    /// lets it, so whatever attaches now sees every wakeup after its start.
    pub fn wait_until_waiting(&self) {
        let path = format!("/proc/{}/syscall", self.pid());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let syscall = std::fs::read_to_string(&path).unwrap_or_default();
            if syscall.starts_with("0 0x0 ") {
                return;
            }
            assert!(Instant::now() < deadline, "workload {} never waited for its go byte: {syscall:?}", self.pid());
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Lets the workload start.
    pub fn go(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.write_all(b"g").expect("start workload");
        }
    }

    /// Lets the workload go while `tool` traces it, waits for it to end,
    /// gives the tool a moment to print what it saw, and interrupts it.
    pub fn traced_by(&mut self, tool: Running) -> Output {
        self.go();
        self.wait(Duration::from_secs(30));
        thread::sleep(Duration::from_millis(300));
        tool.interrupt()
    }

    /// Waits for a workload that ends by itself.
    pub fn wait(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "workload still running after {limit:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two spinners pinned to CPU 1: each waits while the other runs, a few
/// milliseconds a time (HZ and scheduler settings decide how many).
pub fn contention() -> (Workload, Workload) {
    let (mut a, mut b) = (Workload::spinner(1), Workload::spinner(1));
    a.go();
    b.go();
    (a, b)
}

/// Whether a BPF program with this id is still loaded in the kernel.
pub fn bpf_program_loaded(id: u32) -> bool {
    // union bpf_attr for BPF_PROG_GET_FD_BY_ID: { u32 prog_id; u32 next_id; u32 open_flags; }
    let attr: [u32; 3] = [id, 0, 0];
    // SAFETY: the attr buffer outlives the call and its size is passed.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, 13 /* BPF_PROG_GET_FD_BY_ID */, attr.as_ptr(), 12)
    };
    if fd >= 0 {
        unsafe { libc::close(fd as i32) };
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "BPF_PROG_GET_FD_BY_ID({id}): {err}");
    false
}

/// The ids of the BPF programs loaded now whose name is `name` (the
/// kernel keeps the first 15 bytes of a program's name).
pub fn loaded_programs_named(name: &str) -> Vec<u32> {
    // union bpf_attr for BPF_OBJ_GET_INFO_BY_FD.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let bpf = |cmd: libc::c_long, attr: *mut u8, size: usize| {
        // SAFETY: `attr` points at a live buffer of `size` bytes.
        let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
        if ret < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(ret as i32)
        }
    };
    let mut ids = Vec::new();
    let mut id = 0;
    loop {
        // { start_id, next_id, open_flags }
        let mut attr: [u32; 3] = [id, 0, 0];
        match bpf(11 /* BPF_PROG_GET_NEXT_ID */, attr.as_mut_ptr().cast(), 12) {
            Ok(_) => id = attr[1],
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return ids,
            Err(err) => panic!("BPF_PROG_GET_NEXT_ID (run as root): {err}"),
        }
        // { prog_id, next_id, open_flags }
        let mut attr: [u32; 3] = [id, 0, 0];
        let fd = match bpf(13 /* BPF_PROG_GET_FD_BY_ID */, attr.as_mut_ptr().cast(), 12) {
            Ok(fd) => fd,
            // Freed since it was listed.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(err) => panic!("BPF_PROG_GET_FD_BY_ID({id}): {err}"),
        };
        // struct bpf_prog_info up to its name: char name[16] at byte 64.
        let mut info = [0u8; 80];
        let mut attr = InfoAttr { bpf_fd: fd as u32, info_len: info.len() as u32, info: info.as_mut_ptr() as u64 };
        let got = bpf(15 /* BPF_OBJ_GET_INFO_BY_FD */, (&raw mut attr).cast(), std::mem::size_of::<InfoAttr>());
        // SAFETY: the descriptor just returned.
        unsafe { libc::close(fd) };
        got.unwrap_or_else(|err| panic!("BPF_OBJ_GET_INFO_BY_FD({id}): {err}"));
        let program = &info[64..80];
        let program = &program[..program.iter().position(|&b| b == 0).unwrap_or(program.len())];
        if program == &name.as_bytes()[..name.len().min(15)] {
            ids.push(id);
        }
    }
}

/// The ids of the programs a tool's `--verbose` says it attached
/// (`  name (id 42) -> hook`).
pub fn attached_program_ids(stderr: &str) -> Vec<u32> {
    stderr.lines().filter_map(|l| l.split("(id ").nth(1)?.split(')').next()?.parse().ok()).collect()
}

/// Asserts that none of these programs is loaded any more. The kernel
/// frees a program after an RCU grace period once its last reference is
/// gone: it is allowed 5 s.
pub fn assert_unloaded(ids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ids.iter().any(|&id| bpf_program_loaded(id)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    for &id in ids {
        assert!(!bpf_program_loaded(id), "program {id} still loaded 5 s after exit");
    }
}

/// Parses CSV with a real CSV parser (Python's `csv` module), as a user's
/// script would: rows of fields.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut python = Command::new("python3")
        .args(["-c", "import csv, json, sys; json.dump(list(csv.reader(sys.stdin)), sys.stdout)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (cargo xtask setup installs it)");
    python.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(out.status.success(), "python3's csv module refused:\n{text}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `args` with each placeholder replaced by its value: a PID or a port
/// known only once the workload has started.
pub fn filled_in(args: &[&str], values: &[(&str, &str)]) -> Vec<String> {
    args.iter().map(|a| values.iter().fold(a.to_string(), |a, (name, value)| a.replace(name, value))).collect()
}

/// Every line of a `--json` output as a JSON value; a line that is not
/// JSON fails the test, with the line.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

/// What a tool said it lost, from its loss notes on stderr (`tcplife: lost
/// 5 events (3 with the event buffer full: ...; 2 skipped by the kernel
/// (...))`, or a histogram tool's `runqlat: lost 2 samples this interval
/// (...)`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Lost {
    pub total: u64,
    /// Of which runs of its programs the kernel skipped (a BPF program was
    /// already running on that CPU).
    pub skipped: u64,
}

impl Lost {
    pub fn from_stderr(tool: &str, stderr: &str) -> Lost {
        let prefix = format!("{tool}: lost ");
        let mut lost = Lost::default();
        for note in stderr.lines().filter_map(|l| l.strip_prefix(&prefix)).filter(|l| !l.ends_with(" in total")) {
            if let Some((count, causes)) = note.split_once(" events (") {
                lost.total += count.parse::<u64>().unwrap();
                lost.skipped += causes
                    .split("; ")
                    .filter_map(|cause| cause.split_once(" skipped by the kernel"))
                    .map(|(n, _)| n.parse::<u64>().unwrap())
                    .sum::<u64>();
            } else if let Some((count, causes)) = note.split_once(" samples this interval (") {
                // A histogram tool's: "(in-flight table full: 0, ..., skipped
                // by the kernel (...): 2)".
                lost.total += count.parse::<u64>().unwrap();
                let skipped = causes.rsplit(": ").next().and_then(|n| n.strip_suffix(')'));
                lost.skipped += skipped.unwrap_or_else(|| panic!("a loss note: {note}")).parse::<u64>().unwrap();
            } else {
                panic!("a loss note: {note}");
            }
        }
        lost
    }

    /// What the tool's own programs counted: everything but the skipped runs.
    pub fn counted_by_programs(&self) -> u64 {
        self.total - self.skipped
    }

    /// Asserts that of `expected` events, every one not printed was counted
    /// as lost. Exactly, unless the kernel skipped runs: a skipped run may
    /// have been another event's (outside the tool's filter, or a step the
    /// event could do without), so then the loss only bounds what is missing.
    pub fn assert_accounts_for(&self, printed: u64, expected: u64, context: &str) {
        if self.skipped == 0 {
            assert_eq!(printed + self.total, expected, "{self:?}: {context}");
        } else {
            assert!(
                printed <= expected && expected - printed <= self.total,
                "{printed} printed, {self:?} of {expected}: {context}"
            );
        }
    }
}

/// The running kernel's (major, minor) release, for tests whose answer
/// depends on what the kernel reports (the tools never ask).
pub fn kernel_release() -> (u32, u32) {
    let release = read("/proc/sys/kernel/osrelease");
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok());
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

/// Reads a whole file to a string, for /proc lookups.
pub fn read(path: &str) -> String {
    let mut s = String::new();
    std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut s)).unwrap_or_default();
    s
}

/// One log2 histogram as printed: (low, high, count) rows and the summary.
#[derive(Debug, Default, Clone)]
pub struct Table {
    pub unit: String,
    pub rows: Vec<(u64, u64, u64)>,
    /// count, p50, p90, p99, p99.9, max
    pub summary: Option<[u64; 6]>,
}

impl Table {
    pub fn total(&self) -> u64 {
        self.rows.iter().map(|r| r.2).sum()
    }

    /// Samples in rows starting at or above `low`.
    pub fn at_or_above(&self, low: u64) -> u64 {
        self.rows.iter().filter(|r| r.0 >= low).map(|r| r.2).sum()
    }

    /// The row holding the sample at `fraction` of the total.
    pub fn row_of_quantile(&self, fraction: f64) -> (u64, u64) {
        let target = (self.total() as f64 * fraction).ceil().max(1.0) as u64;
        let mut seen = 0;
        for &(low, high, count) in &self.rows {
            seen += count;
            if seen >= target {
                return (low, high);
            }
        }
        panic!("empty table")
    }

    /// Checks the summary line against the rows: count equal, percentiles
    /// and max inside the rows where the table puts them.
    pub fn assert_summary_consistent(&self) {
        let [count, p50, p90, p99, _p999, max] = self.summary.expect("summary line");
        assert_eq!(count, self.total(), "summary count vs rows in {self:?}");
        for (value, q) in [(p50, 0.5), (p90, 0.9), (p99, 0.99)] {
            let (low, high) = self.row_of_quantile(q);
            assert!(low <= value && value <= high, "p{} = {value} outside row {low} -> {high}: {self:?}", q * 100.0);
        }
        let last = self.rows.last().unwrap();
        assert!(last.0 <= max && max <= last.1, "max {max} outside the last row {last:?}");
        assert!(p50 <= p90 && p90 <= p99 && p99 <= max);
    }
}

/// Parses every histogram in text output, with the section header
/// (`pid = 42`) that precedes it, if any.
pub fn parse_tables(text: &str) -> Vec<(Option<String>, Table)> {
    let mut tables: Vec<(Option<String>, Table)> = Vec::new();
    let mut section = None;
    for line in text.lines() {
        if line.contains(" = ") && !line.starts_with(' ') {
            section = Some(line.to_owned());
        } else if line.ends_with(": count     distribution") {
            let unit = line.split(':').next().unwrap().trim().to_owned();
            tables.push((section.take(), Table { unit, ..Table::default() }));
        } else if line.contains(" -> ") {
            let t = &mut tables.last_mut().expect("row before header").1;
            let nums: Vec<u64> =
                line.split(['-', '>', ':', '|']).filter_map(|s| s.trim().parse().ok()).take(3).collect();
            t.rows.push((nums[0], nums[1], nums[2]));
        } else if let Some(rest) = line.trim_start().strip_prefix("count ") {
            let t = &mut tables.last_mut().expect("summary before header").1;
            let nums: Vec<u64> = rest.split([',', ' ', '(']).filter_map(|s| s.parse().ok()).collect();
            // "count N, p50 A, p90 B, p99 C, p99.9 D, max E (unit)"
            assert_eq!(nums.len(), 6, "summary line: {line}");
            t.summary = Some([nums[0], nums[1], nums[2], nums[3], nums[4], nums[5]]);
        }
    }
    tables
}

/// A 64 MiB loop device over a temporary file, detached when dropped.
pub struct LoopDevice {
    pub path: String,
    file: PathBuf,
}

impl Default for LoopDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl LoopDevice {
    pub fn new() -> LoopDevice {
        Self::with_size(64 << 20)
    }

    /// A loop device over a sparse file of `bytes`.
    pub fn with_size(bytes: u64) -> LoopDevice {
        let file = std::env::temp_dir().join(format!("ebpf-tools-loop-{}-{}", std::process::id(), rand_suffix()));
        std::fs::File::create(&file).and_then(|f| f.set_len(bytes)).expect("backing file");
        let out = Command::new("losetup").args(["-f", "--show"]).arg(&file).output().expect("losetup");
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        let path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        LoopDevice { path, file }
    }

    /// `loop3`, as in /proc/partitions.
    pub fn name(&self) -> &str {
        self.path.trim_start_matches("/dev/")
    }

    /// `count` direct 4 KiB writes, then `reads` direct 4 KiB reads.
    pub fn direct_io(&self, writes: u32, reads: u32) {
        for (args, n) in [
            (vec!["if=/dev/zero".to_owned(), format!("of={}", self.path), "oflag=direct".into()], writes),
            (vec![format!("if={}", self.path), "of=/dev/null".into(), "iflag=direct".into()], reads),
        ] {
            if n == 0 {
                continue;
            }
            let status = Command::new("dd")
                .args(&args)
                .args(["bs=4k", &format!("count={n}")])
                .stderr(Stdio::null())
                .status()
                .expect("dd");
            assert!(status.success());
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// A fresh filesystem (`ext4`, `xfs`, `btrfs`, or `tmpfs`) mounted on a
/// temporary directory; unmounted (and its loop device detached) when dropped.
pub struct Mounted {
    pub dir: PathBuf,
    _device: Option<LoopDevice>,
}

impl Mounted {
    pub fn new(fs: &str) -> Mounted {
        let dir = std::env::temp_dir().join(format!("ebpf-tools-{fs}-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let device = if fs == "tmpfs" {
            let status = Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&dir).status().expect("mount");
            assert!(status.success(), "mounting tmpfs");
            None
        } else {
            // XFS wants 300 MB at least; the files are sparse.
            let device = LoopDevice::with_size(if fs == "xfs" { 320 << 20 } else { 128 << 20 });
            let force = if fs == "ext4" { "-F" } else { "-f" };
            let out = Command::new(format!("mkfs.{fs}"))
                .args(["-q", force])
                .arg(&device.path)
                .output()
                .unwrap_or_else(|e| panic!("mkfs.{fs} (cargo xtask setup installs it): {e}"));
            assert!(out.status.success(), "mkfs.{fs}: {}", String::from_utf8_lossy(&out.stderr));
            let out = Command::new("mount").arg(&device.path).arg(&dir).output().expect("mount");
            assert!(out.status.success(), "mount {fs}: {}", String::from_utf8_lossy(&out.stderr));
            Some(device)
        };
        Mounted { dir, _device: device }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A word no other test run uses (this process and the time): a tag to
/// find a workload's own events among the machine's.
pub fn unique_tag(prefix: &str) -> String {
    format!("{prefix}{:x}{:x}", std::process::id(), rand_suffix())
}

/// A copy of the machine's C library in a directory of its own, and the
/// `env` that makes a program load it.
pub fn libc_copy() -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("ebpf-tools-libc-{}", unique_tag("h")));
    fs::create_dir_all(&dir).unwrap();
    let libc = format!("/lib/{}-linux-gnu/libc.so.6", std::env::consts::ARCH);
    fs::copy(libc, dir.join("libc.so.6")).unwrap();
    let env = format!("LD_LIBRARY_PATH={}", dir.display());
    (dir, env)
}

/// A musl program built in `dir` that reads a byte from stdin, then looks
/// its first argument up with getaddrinfo and gethostbyname.
pub fn musl_lookup(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let source = dir.join("lookup.c");
    fs::write(
        &source,
        "#include <netdb.h>\n#include <unistd.h>\n\
         int main(int c, char **v) { char b; read(0, &b, 1); struct addrinfo *r;\n\
         if (getaddrinfo(v[1], 0, 0, &r) == 0) freeaddrinfo(r); gethostbyname(v[1]); return 0; }\n",
    )
    .unwrap();
    let program = dir.join("musl-lookup");
    let built = Command::new("musl-gcc")
        .arg("-o")
        .arg(&program)
        .arg(&source)
        .output()
        .expect("musl-gcc (setup installs musl-tools)");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    program
}

/// How many C libraries gethostlatency (or the exporter's) says it probes:
/// its `probing PATH` lines, not those of a library that failed
/// (`probing PATH: why`).
pub fn libraries_probed(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.split_once(": probing ").is_some_and(|(_, path)| !path.contains(": "))).count()
}

/// Two processes that keep C libraries other than the machine's mapped (a
/// copy of it, musl's), so that gethostlatency probes three; gone on drop.
pub struct CLibraryUsers {
    dir: PathBuf,
    users: [Child; 2],
}

impl CLibraryUsers {
    pub fn start() -> Self {
        let (dir, env) = libc_copy();
        let copy = Command::new("env").args([env.as_str(), "sleep", "600"]).spawn().unwrap();
        let musl = Command::new(musl_lookup(&dir))
            .arg("localhost")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Both have mapped their library once they run their first line.
        thread::sleep(Duration::from_millis(300));
        CLibraryUsers { dir, users: [copy, musl] }
    }
}

impl Drop for CLibraryUsers {
    fn drop(&mut self) {
        for user in &mut self.users {
            let _ = user.kill();
            let _ = user.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
