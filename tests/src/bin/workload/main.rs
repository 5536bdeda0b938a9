//! Workloads with known answers, started by the tests. Each waits for a
//! byte on stdin before it starts, so the tool under test can be attached
//! (and given the workload's PID) first.
//!
//!   workload spin CPU                 burn CPU pinned to CPU until killed
//!   workload sleep CPU N MS           pinned to CPU, sleep MS milliseconds N times, then exit
//!   workload bpf-reads CPU            pinned to CPU, read a BPF map of its own until killed (as
//!                                     any BPF tool reads its maps)
//!   workload thread-exec PATH ARG...  execve from a thread that is not the leader
//!   workload execveat PATH ARG...     execveat(AT_FDCWD, PATH, [PATH, ARG...])
//!   workload fexecve PATH ARG...      fexecve(open(PATH), [PATH, ARG...])
//!   workload exec-storm N PATH ARG... two threads fork and exec PATH ARG... W-I N times each, at full speed;
//!                                     prints `made M`, the execs that happened (PATH exited 0)
//!   workload fork-storm N             the same with children that exit at once, without an exec
//!   workload tcp-session ...          a TCP client and server (see tcp.rs)
//!   workload tcp-storm COUNT          COUNT short TCP connections (see tcp.rs)
//!   workload file-ops PATH N K        open, write, read, fsync, open again (see files.rs)
//!   workload slow-read PATH MS        a read held up MS milliseconds by userfaultfd (see files.rs)
//!   workload osync-write PATH         one O_SYNC write (see files.rs)
//!   workload direct-reads PATH N      N reads of 4 KiB with O_DIRECT (see files.rs)
//!   workload resolve MS HOSTS CALL... host-name lookups against a DNS server of its own (see resolve.rs)
//!   workload v6only-network CMD ARG... exec CMD at once, in a network namespace of its own (loopback up)
//!                                     where net.ipv6.bindv6only is 1

use std::{
    ffi::{CString, OsStr},
    io::Read as _,
    os::unix::ffi::OsStrExt as _,
    time::Duration,
};

mod files;
mod resolve;
mod tcp;

fn cstrings(args: &[String]) -> Vec<CString> {
    args.iter().map(|a| CString::new(OsStr::new(a).as_bytes()).unwrap()).collect()
}

/// NULL-terminated pointer array over `strings`.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> u64 { args.get(i).and_then(|a| a.parse().ok()).expect("usage: see workload/main.rs") };
    let cmd = args[0].as_str();
    let wait_for_go = || {
        let mut go = [0u8; 1];
        let _ = std::io::stdin().read(&mut go);
    };
    // These report what the test needs (PIDs, a port) before they wait.
    match cmd {
        "tcp-session" => return tcp::session(&args[1..], wait_for_go),
        "tcp-storm" => return tcp::storm(&args[1..], wait_for_go),
        "resolve" => return resolve::resolve(&args[1..], wait_for_go),
        "v6only-network" => {
            use std::os::unix::process::CommandExt as _;
            tcp::private_network();
            std::fs::write("/proc/sys/net/ipv6/bindv6only", "1").expect("net.ipv6.bindv6only");
            panic!("exec {}: {}", args[1], std::process::Command::new(&args[1]).args(&args[2..]).exec());
        }
        _ => {}
    }
    if matches!(cmd, "spin" | "sleep" | "bpf-reads") {
        assert!(integration_tests::pin_to_cpu(num(1) as usize), "sched_setaffinity");
    }
    wait_for_go();
    let env: [*const libc::c_char; 1] = [std::ptr::null()];
    match cmd {
        "spin" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "sleep" => {
            for _ in 0..num(2) {
                std::thread::sleep(Duration::from_millis(num(3)));
            }
        }
        "bpf-reads" => bpf_reads(),
        "thread-exec" => {
            let argv = cstrings(&args[1..]);
            let thread = std::thread::spawn(move || {
                let ptrs = pointers(&argv);
                let env: [*const libc::c_char; 1] = [std::ptr::null()];
                // SAFETY: valid NUL-terminated strings and arrays.
                unsafe { libc::execve(ptrs[0], ptrs.as_ptr(), env.as_ptr()) };
                panic!("execve failed: {}", std::io::Error::last_os_error());
            });
            let _ = thread.join();
        }
        "execveat" => {
            let argv = cstrings(&args[1..]);
            let ptrs = pointers(&argv);
            // SAFETY: as above.
            unsafe { libc::syscall(libc::SYS_execveat, libc::AT_FDCWD, ptrs[0], ptrs.as_ptr(), env.as_ptr(), 0) };
            panic!("execveat failed: {}", std::io::Error::last_os_error());
        }
        "fexecve" => {
            let argv = cstrings(&args[1..]);
            let ptrs = pointers(&argv);
            // SAFETY: as above.
            unsafe {
                // Not close-on-exec: some kernels (5.10) refuse execveat on
                // such an fd with ENOENT.
                let fd = libc::open(ptrs[0], libc::O_RDONLY);
                assert!(fd >= 0, "open");
                libc::fexecve(fd, ptrs.as_ptr(), env.as_ptr());
            }
            // Some kernels refuse (5.10 under the test VM: ENOENT); the test
            // then expects the failed exec with -x.
            std::process::exit(3);
        }
        "file-ops" => files::ops(&args[1..]),
        "slow-read" => files::slow_read(&args[1..]),
        "osync-write" => files::osync_write(&args[1..]),
        "direct-reads" => files::direct_reads(&args[1..]),
        "exec-storm" => storm(num(1), Some(&args[2..])),
        "fork-storm" => storm(num(1), None),
        other => panic!("unknown workload {other}"),
    }
}

/// Two threads, each forking N children at full speed: every child has
/// this process as its parent, so a tool can filter on it (-P). A child
/// execs `exec` with `W-I` appended, or exits at once without it (new
/// processes at the lowest cost under emulation). Prints `made M`: the
/// children that exited 0 (with `exec`, the execs that happened).
fn storm(n: u64, exec: Option<&[String]>) {
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let exec = exec.map(<[String]>::to_vec);
            std::thread::spawn(move || {
                let mut made = 0u64;
                for i in 0..n {
                    let argv = exec.as_ref().map(|exec| {
                        let mut argv = exec.clone();
                        argv.push(format!("{w}-{i}"));
                        cstrings(&argv)
                    });
                    let ptrs = argv.as_deref().map(pointers);
                    let env: [*const libc::c_char; 1] = [std::ptr::null()];
                    // SAFETY: fork then only async-signal-safe calls in the child.
                    unsafe {
                        let pid = libc::fork();
                        if pid == 0 {
                            match &ptrs {
                                Some(ptrs) => {
                                    libc::execve(ptrs[0], ptrs.as_ptr(), env.as_ptr());
                                    libc::_exit(127);
                                }
                                None => libc::_exit(0),
                            }
                        }
                        if pid < 0 {
                            eprintln!("storm: fork: {}", std::io::Error::last_os_error());
                            continue;
                        }
                        let mut status = 0;
                        if libc::waitpid(pid, &mut status, 0) == pid && status == 0 {
                            made += 1;
                        }
                    }
                }
                made
            })
        })
        .collect();
    // What the tests count against: the children that did their work.
    let made: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    println!("made {made}");
}

/// Looks up the one entry of an array map of its own, forever: each lookup
/// holds the kernel's per-CPU BPF guard for a moment, as any BPF tool's
/// reads of its maps do.
fn bpf_reads() -> ! {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    // union bpf_attr: for BPF_MAP_CREATE, map_type, key_size, value_size,
    // max_entries; for a lookup, map_fd, then key and value pointers at 8, 16.
    let mut attr = [0u64; 16];
    attr[0] = BPF_MAP_TYPE_ARRAY as u64 | 4 << 32;
    attr[1] = 8 | 1 << 32;
    // SAFETY: a bpf_attr of the size passed.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_ptr(), std::mem::size_of_val(&attr)) };
    assert!(fd >= 0, "BPF_MAP_CREATE: {}", std::io::Error::last_os_error());
    let (key, mut value) = (0u32, 0u64);
    attr = [0; 16];
    attr[0] = fd as u64;
    attr[1] = &key as *const u32 as u64;
    attr[2] = &mut value as *mut u64 as u64;
    loop {
        // SAFETY: the attr points at live key and value buffers of the map's sizes.
        let r =
            unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_ELEM, attr.as_ptr(), std::mem::size_of_val(&attr)) };
        assert_eq!(r, 0, "BPF_MAP_LOOKUP_ELEM: {}", std::io::Error::last_os_error());
    }
}
