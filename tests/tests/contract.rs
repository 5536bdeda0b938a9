//! The contract every program keeps, checked for each one the catalog
//! (`tools_catalog::TOOLS`) lists, so a new tool is held to it by its row:
//! `--version` says what it is; bad input exits 2 with one line; a tracer
//! that attached and is stopped by SIGINT or SIGTERM exits 0, and after
//! those or SIGKILL none of its programs stays loaded.

use std::time::Duration;

use integration_tests::*;
use tools_catalog::{Kind, Tool, TOOLS};

fn names(tool: &Tool) -> impl Iterator<Item = &'static str> + '_ {
    std::iter::once(tool.name).chain(tool.aliases.iter().copied())
}

#[test]
fn version_names_the_program_and_its_commit() {
    for tool in TOOLS {
        let out = run(tool.name, &["--version"]);
        assert_eq!(out.code(), Some(0), "{}: {out:?}", tool.name);
        let line = out.stdout.trim();
        assert!(
            line.starts_with(&format!("{} {} (commit ", tool.name, env!("CARGO_PKG_VERSION")))
                && line.contains(", aya "),
            "{}: {line}",
            tool.name
        );
    }
}

#[test]
fn an_unknown_flag_exits_2_with_one_line() {
    for tool in TOOLS {
        for name in names(tool) {
            let out = run_as(tool.name, name, &["--no-such-flag"]);
            assert_eq!(out.code(), Some(2), "{name}: {out:?}");
            assert!(out.stderr.contains("unexpected argument '--no-such-flag'"), "{name}: {}", out.stderr);
            assert!(out.stdout.is_empty(), "{name}: {}", out.stdout);
        }
    }
}

/// Started as the catalog says, with `--verbose` so it names its programs;
/// returns it once it is tracing, and the ids of what it attached.
fn started(tool: &Tool) -> (Running, Vec<u32>) {
    let contract = tool.contract.as_ref().expect("a tracer's contract");
    let mut args = contract.args.to_vec();
    args.push("--verbose");
    let mut running = Running::start(tool.name, &args, contract.ready);
    let ids = attached_program_ids(running.stderr_so_far());
    assert!(!ids.is_empty(), "{}: no program named in --verbose:\n{}", tool.name, running.stderr_so_far());
    (running, ids)
}

#[test]
fn sigint_and_sigterm_end_the_tracers_cleanly_and_sigkill_leaves_nothing_loaded() {
    let _serial = serial();
    for tool in TOOLS.iter().filter(|t| t.kind != Kind::Renderer) {
        for signal in [libc::SIGINT, libc::SIGTERM] {
            let (running, ids) = started(tool);
            let out = running.signal(signal);
            assert_eq!(out.code(), Some(0), "{} after signal {signal}: {out:?}", tool.name);
            assert_unloaded(&ids);
        }
        let (mut running, ids) = started(tool);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(running.pid(), libc::SIGKILL) };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while running.is_running() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(running);
        assert_unloaded(&ids);
    }
}

/// A tool started where SIGINT is ignored (a script's background job,
/// `nohup`) and sent one at any moment of its start still ends promptly:
/// no signal sent once it runs is lost. (One sent between exec and the
/// program's first instructions is beyond any program's reach: the test
/// waits until the tool's first act, blocking SIGINT, shows in /proc.)
/// Each run costs a whole start (the signal waits, blocked, until the
/// tool can act on it): `EBPF_TOOLS_TEST_SIGNAL_RUNS` sets the runs per
/// tool (default 6; hundreds to hunt a race), `EBPF_TOOLS_TEST_SIGNAL_WINDOW_MS`
/// the window the moments fall in (default 1000 ms, where an emulated
/// guest's starts fall; 100 on a host).
#[test]
fn sigint_at_any_moment_of_the_start_is_never_lost() {
    use std::os::unix::process::CommandExt as _;
    let _serial = serial();
    let setting = |name: &str, default: u64| std::env::var(name).ok().and_then(|n| n.parse().ok()).unwrap_or(default);
    let runs = setting("EBPF_TOOLS_TEST_SIGNAL_RUNS", 6);
    let window_us = setting("EBPF_TOOLS_TEST_SIGNAL_WINDOW_MS", 1000) * 1000;
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    for tool in TOOLS.iter().filter(|t| t.kind != Kind::Renderer) {
        let contract = tool.contract.as_ref().expect("a tracer's contract");
        for run in 0..runs {
            // xorshift: a moment in the window, where starts fall.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let delay = Duration::from_micros(seed % window_us.max(1));
            let mut command = std::process::Command::new(tool_path(tool.name));
            command.args(contract.args).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
            command.stderr(std::process::Stdio::null());
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    libc::signal(libc::SIGINT, libc::SIG_IGN);
                    Ok(())
                });
            }
            let mut child = command.spawn().expect("spawn tool");
            wait_until_sigint_is_blocked_or_caught(child.id());
            std::thread::sleep(delay);
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let status = loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    break status;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("{} run {run}: SIGINT after {delay:?} was lost: still running after 20 s", tool.name);
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            assert_eq!(status.code(), Some(0), "{} run {run}: SIGINT after {delay:?}: {status}", tool.name);
        }
    }
}

/// Waits until process `pid` blocks SIGINT or has a handler for it
/// (`SigBlk`, `SigCgt` of /proc/PID/status), or is gone.
fn wait_until_sigint_is_blocked_or_caught(pid: u32) {
    const SIGINT_BIT: u64 = 1 << (libc::SIGINT - 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return };
        let mask = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        };
        if (mask("SigBlk:").unwrap_or(0) | mask("SigCgt:").unwrap_or(0)) & SIGINT_BIT != 0 {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    panic!("process {pid} never blocked or caught SIGINT");
}
