//! bench-floor: empty eBPF programs attached to the hooks named on the
//! command line (`raw_tp/NAME` or `tracepoint/CATEGORY/NAME`, as a tool's
//! `--verbose` names them) until SIGINT or SIGTERM. `cargo xtask bench`
//! runs it as the floor: what attaching anything to a tool's hooks costs.
//! Not a tool: never installed.

use std::{io::Write as _, process::ExitCode};

use anyhow::{bail, Context as _};
use aya::programs::{RawTracePoint, TracePoint};
use tools_user::{lifetime, loader, tracefs};

fn main() -> ExitCode {
    lifetime::main_with(|| {
        let hooks: Vec<String> = std::env::args().skip(1).collect();
        if hooks.is_empty() {
            bail!("usage: bench-floor raw_tp/NAME|tracepoint/CATEGORY/NAME...");
        }
        let signals = block_termination_signals();
        let mut ebpf = loader::loader_without_kernel_btf()
            .load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor")))
            .context("loading the floor object")?;
        let mut raw_loaded = false;
        let mut tp_loaded = false;
        for hook in &hooks {
            if let Some(name) = hook.strip_prefix("raw_tp/") {
                let p: &mut RawTracePoint = ebpf.program_mut("floor_raw_tp").context("no floor_raw_tp")?.try_into()?;
                if !std::mem::replace(&mut raw_loaded, true) {
                    p.load()?;
                }
                p.attach(name).with_context(|| format!("attaching to {hook}"))?;
            } else if let Some((category, name)) = hook.strip_prefix("tracepoint/").and_then(|t| t.split_once('/')) {
                tracefs::root()?;
                let p: &mut TracePoint = ebpf.program_mut("floor_tp").context("no floor_tp")?.try_into()?;
                if !std::mem::replace(&mut tp_loaded, true) {
                    p.load()?;
                }
                p.attach(category, name).with_context(|| format!("attaching to {hook}"))?;
            } else {
                bail!("unknown hook {hook:?}: raw_tp/NAME or tracepoint/CATEGORY/NAME");
            }
        }
        println!("bench-floor: empty programs on {}", hooks.join(" "));
        std::io::stdout().flush()?;
        let mut signal = 0;
        // SAFETY: a valid, initialised signal set and an out pointer.
        unsafe { libc::sigwait(&signals, &mut signal) };
        Ok(ExitCode::SUCCESS)
    })
}

/// Blocks SIGINT and SIGTERM so they wait for `sigwait` (one that comes
/// while attaching is not lost), and returns the set.
fn block_termination_signals() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before any other use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}
