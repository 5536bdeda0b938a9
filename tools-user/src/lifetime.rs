//! How a tool lives and ends: signals, intervals, the final summary, exit
//! status. Ctrl-C and SIGTERM end the current interval, print it and exit
//! with everything detached; a closed stdout ends the tool quietly.

use std::{io::Write as _, process::ExitCode, time::Duration};

use anyhow::Result;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    cli::{HistogramArgs, RuntimeArgs},
    histogram::{self, HistogramMaps},
    loader::{tool_name, Loaded},
    output::{self, Closed, Out},
};

/// Exit status when the tool ran but the kernel side lost data.
pub const EXIT_LOST: u8 = 3;

/// Runs a tool's body and turns its outcome into the exit status: errors
/// are printed as `tool: error: ...` with status 1; a closed stdout is a
/// quiet success.
pub fn main_with(body: impl FnOnce() -> Result<ExitCode>) -> ExitCode {
    match body() {
        Ok(code) => code,
        Err(err) if err.is::<Closed>() => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}: error: {err:#}", tool_name());
            ExitCode::FAILURE
        }
    }
}

/// A single-threaded runtime: the tools wait on timers, signals and rings;
/// one thread keeps start-up and memory small.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Waits for SIGINT or SIGTERM. Created before the banner is printed, so a
/// signal that arrives at any later moment is seen.
pub struct Shutdown {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Shutdown {
    pub fn new() -> Result<Self> {
        Ok(Shutdown { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
    }

    pub async fn requested(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// What a histogram tool prints around its tables.
pub struct HistogramTool<'a> {
    pub banner: &'a str,
    /// Section header of keyed histograms (`pid`, `tid`, `disk`, ...), None when unkeyed.
    pub section: Option<&'a str>,
    /// Renders a key for its section header and JSON record: a number
    /// (pid, tid, namespace) or a string (a disk name, escaped in text).
    pub key_name: &'a dyn Fn(u32) -> serde_json::Value,
    pub hist: &'a HistogramArgs,
    pub runtime: &'a RuntimeArgs,
}

/// BCC's interval loop: sleep, print the interval's histograms, repeat
/// `count` times or until a signal, which prints the partial interval.
pub fn run_histograms(tool: HistogramTool<'_>, loaded: Loaded) -> Result<ExitCode> {
    let Loaded { mut ebpf, .. } = loaded;
    let mut maps = HistogramMaps::take(&mut ebpf, tool.section.is_some())?;
    let rt = runtime()?;
    let name = tool_name();
    let (unit, _) = tool.hist.unit();
    let mut out = Out::stdout();
    let mut lost_total = 0u64;
    rt.block_on(async {
        let mut shutdown = Shutdown::new()?;
        if tool.runtime.json {
            eprintln!("{}", tool.banner);
        } else {
            writeln!(out.text(), "{}", tool.banner).map_err(output::closed_or)?;
            out.flush()?;
        }
        let mut remaining = tool.hist.count;
        let mut interval_no = 0u64;
        loop {
            let exiting = tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(tool.hist.interval)) => false,
                _ = shutdown.requested() => true,
            };
            interval_no += 1;
            let interval = maps.read_interval()?;
            let lost = interval.dropped.total();
            lost_total += lost;
            if tool.runtime.json {
                for (key, counts) in &interval.histograms {
                    let mut record = output::json_record(&name, "histogram");
                    record.insert("interval".into(), json!(interval_no));
                    if let (Some(section), Some(key)) = (tool.section, key) {
                        record.insert("key".into(), json!({ section: (tool.key_name)(*key) }));
                    }
                    record.extend(histogram::json_fields(counts, unit));
                    record.insert("lost".into(), json!(lost));
                    out.json(&record.into()).map_err(output::closed_or)?;
                }
            } else {
                let w = out.text();
                let mut print = || -> std::io::Result<()> {
                    writeln!(w)?;
                    if tool.hist.timestamp {
                        writeln!(w, "{:<8}", output::hms_now())?;
                    }
                    for (key, counts) in &interval.histograms {
                        if let (Some(section), Some(key)) = (tool.section, key) {
                            let name = match (tool.key_name)(*key) {
                                serde_json::Value::String(s) => output::escape(s.as_bytes()),
                                other => other.to_string(),
                            };
                            writeln!(w, "\n{section} = {name}")?;
                        }
                        histogram::write_table(w, counts, unit)?;
                    }
                    Ok(())
                };
                print().map_err(output::closed_or)?;
            }
            out.flush()?;
            if lost > 0 {
                let d = interval.dropped;
                eprintln!(
                    "{name}: lost {lost} samples this interval (in-flight table full: {}, histogram table full: {}, unreadable: {})",
                    d.inflight_full, d.hist_full, d.read_failed
                );
            }
            remaining = remaining.saturating_sub(1);
            if exiting || remaining == 0 {
                break;
            }
        }
        anyhow::Ok(())
    })?;
    // Detach everything before reporting, so the summary is the last word.
    drop(maps);
    drop(ebpf);
    if lost_total > 0 {
        eprintln!("{name}: lost {lost_total} samples in total");
        return Ok(ExitCode::from(EXIT_LOST));
    }
    Ok(ExitCode::SUCCESS)
}
