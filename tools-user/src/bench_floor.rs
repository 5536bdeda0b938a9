//! bench-floor: empty eBPF programs attached to the hooks named on the
//! command line (`raw_tp/NAME`, `tracepoint/CATEGORY/NAME`,
//! `uprobe/PATH:0xOFFSET`, as a tool's `--verbose` names them) until SIGINT or SIGTERM. `cargo xtask bench`
//! runs it as the floor: what attaching anything to a tool's hooks costs.
//! Not a tool: never installed.
//!
//! The hooks attach as one rung of the loader's ladder (`loader::try_rung`):
//! if one fails, every program the rung loaded is unloaded, and bench-floor
//! exits non-zero naming that hook. `--or HOOK...` adds a rung tried after
//! the ones before it failed, as a tool's ladder steps down. Each program
//! attached is said on stderr as a tool's `--verbose` says it
//! (`bench-floor:   floor_raw_tp (id 42) -> raw_tp/sched_switch`): the
//! integration tests (tests/tests/floor.rs) check the ladder with it.

use std::{io::Write as _, process::ExitCode};

use anyhow::{bail, Context as _};
use tools_user::{
    diag, lifetime,
    loader::{self, Attach, Rung},
};

const USAGE: &str = "usage: bench-floor HOOK... [--or HOOK...]... \
                     (HOOK: raw_tp/NAME, tracepoint/CATEGORY/NAME, uprobe/PATH:0xOFFSET, \
                     uprobe_multi/PATH:0xOFFSET,...)";

fn main() -> ExitCode {
    lifetime::main_with("bench-floor", || {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let rungs: Vec<&[String]> = args.split(|arg| arg == "--or").collect();
        if rungs.iter().any(|hooks| hooks.is_empty()) {
            bail!("{USAGE}");
        }
        let rungs = rungs.into_iter().map(floor_rung).collect::<anyhow::Result<Vec<_>>>()?;
        diag::init_logging(true);
        let signals = block_termination_signals();
        let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor"));
        let mut ebpf = loader::loader_without_kernel_btf().load(object).context("loading the floor object")?;
        let mut kept = None;
        for (i, (rung, hooks)) in rungs.iter().enumerate() {
            match loader::try_rung(&mut ebpf, object, rung) {
                Ok(()) => {
                    kept = Some(hooks);
                    break;
                }
                Err(err) if i + 1 < rungs.len() => log::info!("rung {}: failed: {err:#}", i + 1),
                Err(err) => return Err(err),
            }
        }
        let hooks = kept.context("no rung")?;
        println!("bench-floor: empty programs on {}", hooks.join(" "));
        std::io::stdout().flush()?;
        let mut signal = 0;
        // SAFETY: a valid, initialised signal set and an out pointer.
        unsafe { libc::sigwait(&signals, &mut signal) };
        Ok(ExitCode::SUCCESS)
    })
}

/// A rung of the floor's empty programs on `hooks`, and the hooks.
fn floor_rung(hooks: &[String]) -> anyhow::Result<(Rung, &[String])> {
    let mut rung = Rung::new("floor");
    for hook in hooks {
        let target = Attach::parse(hook).with_context(|| format!("unknown hook {hook:?}; {USAGE}"))?;
        let program = match target {
            Attach::RawTracepoint(_) => "floor_raw_tp",
            Attach::Tracepoint { .. } => "floor_tp",
            Attach::Uprobe(_) => "floor_uprobe",
            Attach::Uretprobe(_) => "floor_uretprobe",
            Attach::UprobeMulti(_) => "floor_uprobe",
            Attach::UretprobeMulti(_) => "floor_uretprobe",
            other => bail!("the floor has no program for {other}"),
        };
        if matches!(target, Attach::UprobeMulti(_) | Attach::UretprobeMulti(_))
            && !rung.multi_uprobe.iter().any(|p| p == program)
        {
            rung = rung.multi_uprobe(program);
        }
        rung = rung.program(program, target);
    }
    Ok((rung, hooks))
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
