//! bench-floor: empty eBPF programs attached to the hooks named on the
//! command line (`raw_tp/NAME`, `tracepoint/CATEGORY/NAME`,
//! `uprobe/PATH:0xOFFSET`, as a tool's `--verbose` names them) until SIGINT or SIGTERM. `cargo xtask bench`
//! runs it as the floor: what attaching anything to a tool's hooks costs.
//! Not a tool: never installed.

use std::{io::Write as _, process::ExitCode};

use anyhow::{bail, Context as _};
use tools_user::{
    lifetime,
    loader::{self, Attach},
};

fn main() -> ExitCode {
    lifetime::main_with("bench-floor", || {
        let hooks: Vec<String> = std::env::args().skip(1).collect();
        if hooks.is_empty() {
            bail!("usage: bench-floor raw_tp/NAME|tracepoint/CATEGORY/NAME...");
        }
        let signals = block_termination_signals();
        let mut ebpf = loader::loader_without_kernel_btf()
            .load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor")))
            .context("loading the floor object")?;
        for hook in &hooks {
            let target = Attach::parse(hook).with_context(|| {
                format!("unknown hook {hook:?}: raw_tp/NAME, tracepoint/CATEGORY/NAME, uprobe/PATH:0xOFFSET")
            })?;
            let program = match target {
                Attach::RawTracepoint(_) => "floor_raw_tp",
                Attach::Tracepoint { .. } => "floor_tp",
                Attach::Uprobe(_) => "floor_uprobe",
                Attach::Uretprobe(_) => "floor_uretprobe",
                other => bail!("the floor has no program for {other}"),
            };
            loader::attach(&mut ebpf, program, &target).with_context(|| format!("attaching to {hook}"))?;
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
