//! The histogram tools' loop, as BCC's: sleep an interval, print its
//! histograms (text or JSON), repeat `count` times or until a signal, which
//! prints the partial interval.

use std::{cell::RefCell, io::Write as _, process::ExitCode, time::Duration};

use anyhow::Result;
use serde_json::{json, Value};
use tools_heatmap::Live;

use crate::{
    cli::{EventHistogramArgs, HistogramArgs, RuntimeArgs},
    container::Groups,
    diag::{note, tool_name},
    histogram::{self, Counts, HistogramMaps, Interval},
    lifetime::{runtime, Shutdown, EXIT_LOST},
    loader::Loaded,
    output::{self, Out},
};

/// What a key of a keyed histogram means, as (name, value) pairs: printed
/// `pid = 42` or `disk = sda, flags = Sync-Write` in text (strings escaped),
/// and as an object in JSON.
pub type KeyFields<'a> = &'a dyn Fn(u64) -> Vec<(&'static str, Value)>;

/// What a histogram tool prints around its tables.
pub struct HistogramTool<'a> {
    pub banner: &'a str,
    /// Keyed histograms: how to name a key. None when unkeyed.
    pub key_fields: Option<KeyFields<'a>>,
    /// BCC's `-e`: an `avg = ..., total: ..., count: ...` line after each interval.
    pub totals: bool,
    /// For keys naming processes or threads: whether one still exists (see
    /// [`HistogramMaps::read_interval`]).
    pub key_alive: Option<&'a dyn Fn(u64) -> bool>,
    /// `--containers`: the keys are cgroups, added up into their
    /// containers before they are printed, and named and kept by them
    /// (in place of `key_fields` and `key_alive`). The cgroup tree is
    /// looked at once a second while an interval runs and just before it
    /// is read, to name containers while their cgroups exist.
    pub containers: Option<Groups>,
    /// The flag that enlarges the keyed table, named when it was full.
    pub table_flag: Option<&'static str>,
    /// The whole trace's duration (ext4slower's `-d`): its last interval
    /// ends with it.
    pub duration: Option<Duration>,
    pub hist: &'a HistogramArgs,
    pub runtime: &'a RuntimeArgs,
}

fn section_header(fields: &[(&str, Value)]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(name, value)| match value {
            Value::String(s) => format!("{name} = {}", output::escape(s.as_bytes())),
            Value::Null => format!("{name} = (none)"),
            other => format!("{name} = {other}"),
        })
        .collect();
    parts.join(", ")
}

/// One interval as JSON records: a histogram per key (or the one), then
/// the totals (`-e`), each with the interval's loss.
fn interval_records(tool: &HistogramTool<'_>, interval: &Interval, interval_no: u64, lost: u64) -> Vec<Value> {
    let unit = tool.hist.unit().0;
    let mut records = Vec::new();
    for (key, counts) in &interval.histograms {
        let key = match (tool.key_fields, key) {
            (Some(fields), Some(key)) => {
                Some(fields(*key).into_iter().map(|(name, value)| (name.to_owned(), value)).collect())
            }
            _ => None,
        };
        records.push(histogram_record(interval_no, key, counts, unit, lost));
    }
    if let Some(totals) = interval.totals.filter(|t| t.count > 0) {
        let unit_ns = tool.hist.unit().1;
        let mut record = output::json_record("totals");
        record.insert("interval".into(), json!(interval_no));
        record.insert("unit".into(), json!(unit));
        record.insert("avg".into(), json!(totals.sum_ns / unit_ns / totals.count));
        record.insert("total".into(), json!(totals.sum_ns / unit_ns));
        record.insert("count".into(), json!(totals.count));
        record.insert("lost".into(), json!(lost));
        records.push(record.into());
    }
    records
}

/// One histogram record: `key` (`{"pid": 42}`) with keyed histograms.
fn histogram_record(
    interval_no: u64,
    key: Option<serde_json::Map<String, Value>>,
    counts: &Counts,
    unit: &str,
    lost: u64,
) -> Value {
    let mut record = output::json_record("histogram");
    record.insert("interval".into(), json!(interval_no));
    if let Some(key) = key {
        record.insert("key".into(), key.into());
    }
    record.extend(histogram::json_fields(counts, unit));
    record.insert("lost".into(), json!(lost));
    record.into()
}

/// BCC's interval loop: sleep, print the interval's histograms, repeat
/// `count` times or until a signal, which prints the partial interval.
pub fn run(mut tool: HistogramTool<'_>, loaded: Loaded) -> Result<ExitCode> {
    let containers = tool.containers.take().map(RefCell::new);
    let containers = containers.as_ref();
    let container_fields = |key: u64| containers.map_or_else(Vec::new, |groups| groups.borrow().fields(key));
    let cgroup_exists = |cgroup: u64| containers.is_some_and(|groups| groups.borrow().cgroup_exists(cgroup));
    let tool = match containers {
        Some(_) => HistogramTool { key_fields: Some(&container_fields), key_alive: Some(&cgroup_exists), ..tool },
        None => tool,
    };
    let look = || containers.iter().for_each(|groups| groups.borrow_mut().look());
    let Loaded { mut ebpf, mut skipped, mut keeper, .. } = loaded;
    let mut maps = HistogramMaps::take(&mut ebpf, tool.key_fields.is_some(), tool.totals)?;
    let rt = runtime()?;
    let name = tool_name();
    let (unit, unit_ns) = tool.hist.unit();
    let mut out = Out::stdout();
    let mut lost_total = 0u64;
    let mut live = tool.hist.heatmap.as_deref().map(Live::new).transpose()?;
    rt.block_on(async {
        let mut shutdown = Shutdown::new()?;
        let capture = Value::from(output::capture_record());
        if let Some(live) = &mut live {
            live.record(&capture)?;
        }
        if tool.runtime.json {
            out.json(&capture).map_err(output::closed_or)?;
            note(tool.banner);
        } else {
            writeln!(out.text(), "{}", tool.banner).map_err(output::closed_or)?;
            out.flush()?;
        }
        let mut remaining = tool.hist.count;
        let mut interval_no = 0u64;
        let started = tokio::time::Instant::now();
        // An interval or duration beyond what a clock holds (BCC takes any number) is a century.
        let century = Duration::from_secs(100 * 365 * 86400);
        let ends = tool.duration.map(|d| started + d.min(century));
        // Across intervals, so that one as short as a second does not starve it.
        let one_second = Duration::from_secs(1);
        let mut second = tokio::time::interval_at(started + one_second, one_second);
        second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let every_second = containers.is_some() || keeper.is_some();
        loop {
            let now = tokio::time::Instant::now();
            let mut interval_ends = now + Duration::from_secs(tool.hist.interval).min(century);
            if let Some(ends) = ends {
                interval_ends = interval_ends.min(ends);
            }
            let exiting = loop {
                tokio::select! {
                    biased;
                    _ = shutdown.requested() => break true,
                    _ = tokio::time::sleep_until(interval_ends) => break Some(interval_ends) == ends,
                    _ = second.tick(), if every_second => {
                        look();
                        // gethostlatency --histogram: probe the C libraries that appeared.
                        if let Some(keeper) = &mut keeper {
                            keeper.tick(&mut ebpf)?;
                        }
                    }
                }
            };
            // And once more just before the read, so what is reclaimed and
            // how keys are named agree with the machine as it is now.
            look();
            interval_no += 1;
            let mut interval = maps.read_interval(tool.key_alive)?;
            if let Some(groups) = containers {
                interval.regroup(&|cgroup| groups.borrow_mut().of_cgroup(cgroup));
            }
            let skipped_runs = skipped.since_last();
            let lost = interval.dropped.total() + skipped_runs;
            lost_total += lost;
            let records = match tool.runtime.json || live.is_some() {
                true => interval_records(&tool, &interval, interval_no, lost),
                false => Vec::new(),
            };
            if let Some(live) = &mut live {
                if interval.histograms.is_empty() {
                    // Keyed, and nothing counted: still a column of the picture.
                    live.record(&histogram_record(interval_no, None, &Counts::default(), unit, lost))?;
                }
                for record in records.iter().filter(|r| r["type"] == "histogram") {
                    live.record(record)?;
                }
                if let Err(err) = live.write() {
                    note(&format!("{name}: warning: --heatmap: {err:#}"));
                }
            }
            if tool.runtime.json {
                for record in &records {
                    out.json(record).map_err(output::closed_or)?;
                }
            } else {
                let w = out.text();
                let mut print = || -> std::io::Result<()> {
                    writeln!(w)?;
                    if tool.hist.timestamp {
                        writeln!(w, "{:<8}", output::hms_now())?;
                    }
                    for (key, counts) in &interval.histograms {
                        if let (Some(fields), Some(key)) = (tool.key_fields, key) {
                            writeln!(w, "\n{}", section_header(&fields(*key)))?;
                        }
                        histogram::write_table(w, counts, unit)?;
                    }
                    if let Some(t) = interval.totals.filter(|t| t.count > 0) {
                        let (total, avg) = (t.sum_ns / unit_ns, t.sum_ns / unit_ns / t.count);
                        writeln!(w, "\navg = {avg} {unit}, total: {total} {unit}, count: {}\n", t.count)?;
                    }
                    Ok(())
                };
                print().map_err(output::closed_or)?;
            }
            out.flush()?;
            if lost > 0 {
                let d = interval.dropped;
                let raise = match tool.table_flag {
                    Some(flag) if d.hist_full > 0 => format!(" (raise {flag})"),
                    _ => String::new(),
                };
                note(&format!(
                    "{name}: lost {lost} samples this interval (in-flight table full: {}, histogram table full: {}{raise}, \
                     unreadable: {}, {}: {skipped_runs})",
                    d.inflight_full,
                    d.hist_full,
                    d.read_failed,
                    crate::loss::SKIPPED
                ));
            }
            // As BCC's Python tools: the count runs down to 0 (so a count of
            // 0 never does: until Ctrl-C), and an interval of 0 prints again
            // at once.
            remaining = remaining.wrapping_sub(1);
            if exiting || remaining == 0 {
                break;
            }
        }
        anyhow::Ok(())
    })?;
    // Detach everything before reporting, so the summary is the last word.
    drop(maps);
    crate::loader::detach_all([&mut ebpf]);
    drop(keeper);
    drop(ebpf);
    drop(skipped);
    if lost_total > 0 {
        note(&format!("{name}: lost {lost_total} samples in total"));
        return Ok(ExitCode::from(EXIT_LOST));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--histogram` on an event tool: its programs count every call in the
/// kernel by key (the exporter's tables), printed as a histogram tool's
/// intervals with each key's section header (`operation = read`), its
/// labels as the exporter's (`key_labels`), until a signal or the end of
/// `duration`.
pub fn run_event_histograms(
    loaded: Loaded,
    banner: &str,
    key_labels: fn(u64) -> Vec<(&'static str, String)>,
    args: &EventHistogramArgs,
    duration: Option<Duration>,
    runtime: &RuntimeArgs,
) -> Result<ExitCode> {
    let hist = &args.as_histogram_args();
    let key_fields = |key: u64| key_labels(key).into_iter().map(|(name, value)| (name, Value::from(value))).collect();
    let tool = HistogramTool {
        banner,
        key_fields: Some(&key_fields),
        totals: false,
        key_alive: None,
        containers: None,
        table_flag: None,
        duration,
        hist,
        runtime,
    };
    run(tool, loaded)
}
