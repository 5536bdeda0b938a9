//! How a tool's process lives and ends: its exit status, its runtime,
//! and the signals that end it. The drivers (`driver::histograms`,
//! `driver::events`) run the loops on top of this.

use std::process::ExitCode;

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    diag::{note, set_tool_name, tool_name},
    output::Closed,
};

/// Exit status when the tool ran but the kernel side lost data.
pub const EXIT_LOST: u8 = 3;

/// Exit status for bad usage or input (clap's own errors exit 2 too).
pub const EXIT_BAD_INPUT: u8 = 2;

/// Input the tool cannot use (a capture line that is no record, an unknown
/// series): said on stderr, exit status 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// The tool did what it was asked and has nothing more to do (it printed
/// what a hidden switch asked for): a success.
#[derive(Debug)]
pub struct Finished;

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("finished")
    }
}

impl std::error::Error for Finished {}

/// Runs tool `name`'s body and turns its outcome into the exit status:
/// errors are printed as `name: error: ...` with status 1 ([`BadInput`]:
/// 2); a closed stdout is a quiet success.
///
/// SIGINT and SIGTERM are blocked first: a tool started where they are
/// ignored (a script's background job, `nohup`) would otherwise discard
/// one sent before its handlers are in place, and run on. Linux keeps a
/// blocked signal pending even when its action is to ignore it; the
/// signals are let through once [`Shutdown`] waits for them.
pub fn main_with(name: &'static str, body: impl FnOnce() -> Result<ExitCode>) -> ExitCode {
    set_signals_blocked(true);
    set_tool_name(name);
    match body() {
        Ok(code) => code,
        Err(err) if err.is::<Closed>() || err.is::<Finished>() => ExitCode::SUCCESS,
        Err(err) if err.is::<BadInput>() => {
            note(&format!("{}: error: {}", tool_name(), chain(&err)));
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Err(err) => {
            note(&format!("{}: error: {}", tool_name(), chain(&err)));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes as one line, `a: b: c`, without a cause that the
/// line already says (aya's errors repeat their source in their own text).
fn chain(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A single-threaded runtime: the tools wait on timers, signals and rings;
/// one thread keeps start-up and memory small.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// For a program that never waits for SIGINT or SIGTERM (the heatmap
/// renderer): let them end it, as their default action does.
pub fn signals_end_the_process() {
    set_signals_blocked(false);
}

/// Blocks (or lets through) SIGINT and SIGTERM for this thread, and the
/// threads it starts later.
fn set_signals_blocked(blocked: bool) {
    // SAFETY: a set initialised by sigemptyset, for this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let how = if blocked { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGINT or SIGTERM. Created before the banner is printed; one
/// sent since the tool started was kept pending (see [`main_with`]) and is
/// seen at once.
pub struct Shutdown {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Shutdown {
    pub fn new() -> Result<Self> {
        let shutdown = Shutdown { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? };
        set_signals_blocked(false);
        Ok(shutdown)
    }

    /// The first SIGINT or SIGTERM. From then on a second one ends the
    /// process at once (its default action), whatever is still being done.
    pub async fn requested(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        // SAFETY: resetting two signals' actions to their defaults.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
        }
    }
}
