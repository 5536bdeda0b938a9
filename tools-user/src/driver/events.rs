//! The event tools' loop: events from the kernel (ring buffer or perf
//! array), decoded safely into the tool's shared event type, filtered,
//! printed through the tool's columns as text, CSV or JSON; losses
//! reported as they happen and in total, with exit status 3. Ctrl-C and
//! SIGTERM print what is still buffered, then detach everything; a closed
//! stdout ends the tool quietly.

use std::{io::Write as _, process::ExitCode, time::Duration};

use anyhow::Result;
use serde_json::json;
use tools_common::{Drops, Event};

use crate::{
    columns::Columns,
    diag::{note, tool_name},
    events::{decode, EventPath, EventStream},
    lifetime::{runtime, Shutdown, EXIT_LOST},
    loader::Loaded,
    loss,
    output::{self, Format, Out},
};

/// Which decoded events are printed.
pub type Filter<'a, T> = Box<dyn Fn(&T) -> bool + 'a>;

/// Puts an event together from the parts the kernel sent, one part at a
/// time: the whole event once its last part came (execsnoop's Linux 4.4
/// rung sends an exec's path, arguments and result apart).
pub type Assemble<'a, T> = Box<dyn FnMut(&[u8]) -> Result<Option<T>> + 'a>;

/// What an event tool hands the driver: how its events print, and the
/// little that differs between tools around them.
pub struct EventTool<'a, T> {
    pub columns: Columns<'a, T>,
    /// Events decoded but not printed (filters only user space can apply,
    /// such as execsnoop's regular expressions).
    pub filter: Option<Filter<'a, T>>,
    /// BCC's banner, printed above the text header (ext4slower's); None
    /// where BCC prints none.
    pub banner: Option<String>,
    /// What is traced, said on stderr when stdout carries CSV or JSON (so a
    /// reader knows the tool is ready).
    pub tracing: String,
    /// What the kernel's in-flight table holds, named in the loss note when
    /// it was full ("failed execs").
    pub inflight: &'static str,
    /// Stop after this long (libbpf-tools' `-d`).
    pub duration: Option<Duration>,
    /// Events sent in parts (None: each is sent whole).
    pub assemble: Option<Assemble<'a, T>>,
}

impl<'a, T> EventTool<'a, T> {
    /// A tool printing `columns`, with nothing else set.
    pub fn new(columns: Columns<'a, T>, tracing: impl Into<String>) -> Self {
        EventTool {
            columns,
            filter: None,
            banner: None,
            tracing: tracing.into(),
            inflight: "events",
            duration: None,
            assemble: None,
        }
    }
}

/// Runs the tool until a signal (or its duration); returns its exit status.
/// The plan's keeper, if any, has its round about once a second (tools
/// that attach more as they run: gethostlatency's new C libraries).
pub fn run<T: Event>(mut tool: EventTool<'_, T>, mut loaded: Loaded, path: &EventPath) -> Result<ExitCode> {
    let rt = runtime()?;
    let lost = {
        let _in_runtime = rt.enter();
        let mut stream = EventStream::open(&mut loaded.ebpf, path)?;
        rt.block_on(pump(&mut tool, &mut stream, &mut loaded))?
    };
    // Detach everything before the summary, so it is the last word.
    crate::loader::detach_all([&mut loaded.ebpf]);
    drop(loaded);
    if lost > 0 {
        note(&format!("{}: lost {lost} events in total", tool_name()));
        return Ok(ExitCode::from(EXIT_LOST));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints events until a signal; returns how many were lost.
async fn pump<T: Event>(tool: &mut EventTool<'_, T>, stream: &mut EventStream, loaded: &mut Loaded) -> Result<u64> {
    let mut shutdown = Shutdown::new()?;
    let mut out = Out::stdout();
    let format = tool.columns.format;
    if format == Format::Text {
        if let Some(banner) = &tool.banner {
            writeln!(out.text(), "{banner}").map_err(output::closed_or)?;
        }
    } else {
        if format == Format::Json {
            out.json(&output::capture_record().into()).map_err(output::closed_or)?;
        }
        note(&tool.tracing);
    }
    if let Some(header) = tool.columns.header() {
        writeln!(out.text(), "{header}").map_err(output::closed_or)?;
    }
    out.flush()?;

    let mut lost = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let deadline = tool.duration.map(|d| tokio::time::Instant::now() + d);
    let ended = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(ended);
    let mut failed = None;
    loop {
        let (columns, filter, assemble) = (&tool.columns, &tool.filter, &mut tool.assemble);
        let mut print = |bytes: &[u8]| {
            if failed.is_none() {
                let event = match assemble {
                    Some(assemble) => assemble(bytes),
                    None => decode(bytes).map(Some),
                };
                failed = match event {
                    Ok(Some(event)) => print_event(columns, filter.as_deref(), &mut out, &event).err(),
                    Ok(None) => None,
                    Err(err) => Some(err),
                };
            }
        };
        let (exiting, second) = tokio::select! {
            batch = stream.next_batch(&mut print) => { batch?; (false, false) }
            _ = tick.tick() => (false, true),
            _ = shutdown.requested() => (true, false),
            _ = &mut ended => (true, false),
        };
        if exiting {
            stream.drain_now(&mut print);
        }
        if let Some(err) = failed.take() {
            return Err(err);
        }
        out.flush()?;
        if second || exiting {
            // Read on the tick and at exit, not after every batch: each
            // read is a syscall per program or map, which a storm of events
            // should not multiply. A map read also holds the kernel's
            // per-CPU BPF guard, and a kprobe, uprobe or classic tracepoint
            // that fires on that CPU meanwhile is skipped: ours included.
            let drops = stream.new_drops()?;
            let skipped = loaded.skipped.since_last();
            if drops.total() + skipped > 0 {
                lost += drops.total() + skipped;
                report_loss(&drops, skipped, tool.inflight, format, &mut out)?;
            }
        }
        if exiting {
            return Ok(lost);
        }
        if second {
            loaded.tick()?;
        }
    }
}

fn print_event<T: Event>(
    columns: &Columns<'_, T>,
    filter: Option<&(dyn Fn(&T) -> bool + '_)>,
    out: &mut Out,
    event: &T,
) -> Result<()> {
    if filter.is_some_and(|wanted| !wanted(event)) {
        return Ok(());
    }
    writeln!(out.text(), "{}", columns.row(event)).map_err(output::closed_or)
}

/// One loss note on stderr (and a `lost` record in JSON), naming each
/// cause: what the kernel side counted, and the runs the kernel skipped.
fn report_loss(drops: &Drops, skipped: u64, inflight: &str, format: Format, out: &mut Out) -> Result<()> {
    let mut causes = Vec::new();
    if drops.output_failed > 0 {
        causes.push(format!("{} with the event buffer full: raise --buffer-pages", drops.output_failed));
    }
    if drops.inflight_full > 0 {
        causes.push(format!("{} {inflight} untracked, in-flight table full", drops.inflight_full));
    }
    if drops.read_failed > 0 {
        causes.push(format!("{} unreadable", drops.read_failed));
    }
    if drops.hist_full > 0 {
        causes.push(format!("{} with a kernel table full", drops.hist_full));
    }
    if skipped > 0 {
        causes.push(format!("{skipped} {}", loss::SKIPPED));
    }
    let total = drops.total() + skipped;
    note(&format!("{}: lost {total} events ({})", tool_name(), causes.join("; ")));
    if format == Format::Json {
        let mut record = output::json_record("lost");
        record.insert("count".into(), json!(total));
        for (reason, n) in loss::reasons(drops, skipped) {
            record.insert(reason.into(), json!(n));
        }
        out.json(&record.into()).map_err(output::closed_or)?;
        out.flush()?;
    }
    Ok(())
}
