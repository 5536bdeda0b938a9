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
