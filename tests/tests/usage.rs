//! Bad input fails one way in every tool: a clear message naming what is
//! wrong, and exit status 2 (1 is for what the machine refuses, 3 for lost
//! data). And what the user names is used or refused, never ignored.

use integration_tests::*;

/// (tool, arguments, a part of the message)
const BAD_INPUT: &[(&str, &[&str], &str)] = &[
    // Flags every tool shares.
    ("runqlat", &["-p", "abc"], "'abc' is not a PID"),
    ("runqlat", &["-p", "0"], "idle task"),
    ("runqlat", &["-p", "4194304"], "no process with PID 4194304"),
    ("runqlat", &["-c", "/nonexistent/cgroup"], "/nonexistent/cgroup"),
    ("runqlat", &["-c", "/tmp"], "not a cgroup v2 directory"),
    ("runqlat", &["-c", "/etc/passwd"], "not a cgroup v2 directory"),
    ("runqlat", &["--btf", "/nonexistent"], "--btf /nonexistent: opening"),
    ("runqlat", &["--btf", "/etc/passwd"], "not a BTF file"),
    ("runqlat", &["--btf", "/dev/zero"], "not a regular file"),
    ("runqlat", &["--btf", "/"], "not a regular file"),
    ("biolatency", &["--btf", "/etc/passwd"], "not a BTF file"),
    ("execsnoop", &["--btf", "/etc/passwd"], "not a BTF file"),
    ("tcplife", &["--btf", "/etc/passwd"], "not a BTF file"),
    ("gethostlatency", &["--btf", "/etc/passwd"], "not a BTF file"),
    ("ext4slower", &["--btf", "/etc/passwd"], "not a BTF file"),
    ("runqlat", &["--rung", "nosuch"], "unknown rung"),
    ("runqlat", &["--json", "--no-such-flag"], "unexpected argument"),
    // runqlat
    ("runqlat", &["-P", "-L"], "cannot be used with"),
    ("runqlat", &["-P", "--pidnss"], "cannot be used with"),
    ("runqlat", &["-L", "--pidnss"], "cannot be used with"),
    ("runqlat", &["1", "2", "3"], "unexpected argument"),
    ("runqlat", &["x"], "invalid value 'x'"),
    ("runqlat", &["--table-entries", "65536"], "none was given"),
    ("runqlat", &["-P", "--table-entries", "10"], "invalid value '10'"),
    ("runqlat", &["-P", "--table-entries", "2000000"], "invalid value '2000000'"),
    // biolatency
    ("biolatency", &["-d", "nosuchdisk"], "no such disk 'nosuchdisk'"),
    ("biolatency", &["-F", "--btf", "/nonexistent"], "--btf /nonexistent"),
    ("biolatency", &["-D", "-j", "x"], "invalid value 'x'"),
    ("biolatency", &["-c", "/tmp"], "not a cgroup v2 directory"),
    // execsnoop
    ("execsnoop", &["-u", "no-such-user-here"], "no such user"),
    ("execsnoop", &["--max-args", "0"], "invalid value"),
    ("execsnoop", &["-n", "("], "invalid value '(' for '--name"),
    ("execsnoop", &["-l", "("], "invalid value '(' for '--line"),
    ("execsnoop", &["-P", "abc"], "invalid value"),
    ("execsnoop", &["--json", "--csv"], "cannot be used with"),
    // tcplife
    ("tcplife", &["-L", "0"], "not a port"),
    ("tcplife", &["-L", "70000"], "not a port"),
    ("tcplife", &["-D", "80,abc"], "not a port"),
    ("tcplife", &["-4", "-6"], "cannot be used with"),
    ("tcplife", &["-p", "999999999"], "no process"),
    // gethostlatency
    ("gethostlatency", &["-l", "/etc/passwd"], "not an ELF library"),
    ("gethostlatency", &["-l", "/nonexistent/libc.so.6"], "/nonexistent/libc.so.6"),
    ("gethostlatency", &["-l", "/bin/true"], "exports none of"),
    ("gethostlatency", &["-l", "/dev/zero"], "not a regular file"),
    ("gethostlatency", &["-p", "999999999"], "no process"),
    // ext4slower
    ("ext4slower", &["-1"], "unexpected argument"),
    ("ext4slower", &["abc"], "invalid value"),
    ("ext4slower", &["-m", "x"], "invalid value"),
    ("ext4slower", &["5", "-m", "5"], "cannot be used with"),
    ("ext4slower", &["-p", "999999999"], "no process"),
    ("ext4slower", &["-t", "nosuchfs"], "invalid value"),
    ("ext4slower", &["-d", "0"], "invalid value"),
    // --histogram on the event tools
    ("ext4slower", &["--histogram", "5"], "cannot be used with"),
    ("ext4slower", &["--histogram", "-j"], "cannot be used with"),
    ("ext4slower", &["--interval", "2"], "--histogram"),
    ("gethostlatency", &["--histogram", "--containers"], "cannot be used with"),
    ("gethostlatency", &["--milliseconds"], "--histogram"),
    ("tcplife", &["--histogram", "-s"], "cannot be used with"),
    ("tcplife", &["--histogram", "-w"], "cannot be used with"),
    ("tcplife", &["--histogram", "--interval", "0"], "invalid value '0'"),
    // The renderer
    ("ebpf-tools-heatmap", &["/nonexistent/capture.jsonl"], "/nonexistent/capture.jsonl"),
];

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    // Serial with the privilege test: a child forked here while that test
    // writes its copy of a tool holds the file open for writing until the
    // child execs, and the copy's exec then fails with ETXTBSY.
    let _serial = serial();
    let mut wrong = Vec::new();
    for (tool, args, message) in BAD_INPUT {
        let out = run(tool, args);
        if out.code() != Some(2) || !out.stderr.contains(message) {
            wrong.push(format!("{tool} {args:?}: exit {:?}, said: {}", out.code(), out.stderr.trim()));
        }
    }
    assert!(wrong.is_empty(), "{} of {} cases:\n{}", wrong.len(), BAD_INPUT.len(), wrong.join("\n"));
}

/// A copy of a tool that an unprivileged user may run.
fn unprivileged_copy(tool: &str) -> String {
    let dir = std::env::temp_dir().join(format!("ebpf-tools-unprivileged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join(tool);
    std::fs::copy(tool_path(tool), &copy).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy.to_str().unwrap().to_owned()
}

fn as_nobody(caps: &[&str], tool: &str, args: &[&str]) -> Output {
    let mut setpriv = vec!["--reuid=65534", "--regid=65534", "--clear-groups"];
    let (inh, ambient) = (format!("--inh-caps={}", caps.join(",")), format!("--ambient-caps={}", caps.join(",")));
    if !caps.is_empty() {
        setpriv.extend([inh.as_str(), ambient.as_str()]);
    }
    let copy = unprivileged_copy(tool);
    let out = std::process::Command::new("setpriv").args(&setpriv).arg(&copy).args(args).output().expect("setpriv");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Without privilege the tool says what it needs, in one line, exit 1;
/// with CAP_BPF and CAP_PERFMON the raw-tracepoint rung runs; a tracefs
/// it may not read is said to be unreadable, not missing.
#[test]
fn privilege_is_named_not_guessed() {
    let _serial = serial();
    let out = as_nobody(&[], "runqlat", &["1", "1"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
    assert!(out.stderr.contains("needs root, or the capabilities CAP_BPF and CAP_PERFMON"), "{}", out.stderr);
    let out = as_nobody(&["+bpf", "+perfmon"], "runqlat", &["1", "1"]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("usecs"), "{}", out.stdout);
    let out = as_nobody(&["+bpf", "+perfmon"], "execsnoop", &[]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("is not readable by this user") && !out.stderr.contains("not mounted"),
        "{}",
        out.stderr
    );
}
