//! A capture, the JSON Lines a tool prints with `--json`, read into the
//! columns of a heatmap: one per interval of a histogram tool, one per time
//! bin of an event tool's latencies.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, Read as _},
};

use serde_json::{Map, Value};

use tools_catalog::LatencyField;

use crate::time::Stamp;
use crate::BadCapture;

/// Where the records of event tool `tool` (or one of its aliases) of type
/// `record` keep a latency: the catalog's `latency` of each tool.
/// Histogram records (`"type": "histogram"`) of any tool need none.
fn latency_field(tool: &str, record: &str) -> Option<&'static LatencyField> {
    tools_catalog::tool(tool)?.latency.as_ref().filter(|field| field.record == record)
}

/// Units of histogram records, in nanoseconds.
const UNITS: &[(&str, u64)] = &[("nsecs", 1), ("usecs", 1_000), ("msecs", 1_000_000)];

/// Records that carry no samples: `capture` says where and when, `lost`
/// counts what an event tool lost, `totals` is biolatency's `-e`.
const OTHER_RECORDS: &[&str] = &["capture", "lost", "totals"];

/// Event captures are cut into at most this many time bins.
const MAX_BINS: i64 = 5000;

/// Intervals kept: past this, neighbours are merged in pairs, so that the
/// live picture of a long run keeps bounded memory (the picture draws at
/// most a few hundred columns anyway).
const MAX_INTERVALS: usize = 2048;

/// The most intervals a capture may skip at once (a million: 11 days of
/// one-second intervals); more is a damaged or forged capture.
const MAX_GAP: u64 = 1 << 20;

/// The longest line read, without its newline: the tools' records are a
/// few kilobytes at most (a keyed histogram's slots, an exec's arguments).
const MAX_LINE: usize = 1 << 20;

/// Counts by inclusive [low, high] range of values, in the capture's unit.
pub type Cells = BTreeMap<(u64, u64), u64>;

/// One column of the picture.
#[derive(Clone, Debug)]
pub struct Column {
    pub start: Stamp,
    pub end: Stamp,
    /// The finest ranges the capture has: the kernel's slots, the log2
    /// buckets of older captures, or each event's exact value.
    pub cells: Cells,
    /// p50, p99 and max, in nanoseconds; None when the column is empty.
    pub marks: Option<[f64; 3]>,
    /// Samples the kernel could not record in the column's time.
    pub lost: u64,
    /// The tool's interval numbers, first and last (histogram captures).
    pub intervals: Option<(u64, u64)>,
    /// How many of the tool's intervals (or time bins) the column holds:
    /// colours are by count per interval, so a wider column is not hotter.
    pub weight: u64,
}

impl Column {
    /// An empty column of `intervals` (histogram captures), or a time bin.
    fn empty(start: Stamp, end: Stamp, intervals: Option<(u64, u64)>) -> Column {
        let weight = intervals.map_or(1, |(first, last)| last - first + 1);
        Column { start, end, cells: Cells::new(), marks: None, lost: 0, intervals, weight }
    }

    pub fn count(&self) -> u64 {
        self.cells.values().sum()
    }
}

/// p50, p99 and max of cells by nearest rank, each at the middle of the
/// cell that holds it (exact for an event's value, within a slot's 0.8 %
/// for the kernel's slots), in nanoseconds.
pub fn marks_from_cells(cells: &Cells, unit_ns: u64) -> Option<[f64; 3]> {
    let total: u64 = cells.values().sum();
    let (last, _) = cells.iter().rev().find(|(_, &n)| n > 0)?;
    let middle = |&(low, high): &(u64, u64)| (low as f64 + high as f64 + 1.0) / 2.0 * unit_ns as f64;
    let at = |q: f64| {
        let rank = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        cells.iter().find(|(_, &n)| {
            seen += n;
            seen >= rank
        })
    };
    Some([middle(at(0.5)?.0), middle(at(0.99)?.0), middle(last)])
}

/// What the picture draws, and what its title says.
#[derive(Clone, Debug)]
pub struct Picture {
    pub tool: String,
    pub host: Option<String>,
    pub kernel: Option<String>,
    /// The tool's name and arguments, as run (from the capture record).
    pub command: Option<Vec<String>>,
    /// What the columns hold: `pid=42`, `all 3 keys summed`, `duration_ns in 1 s bins`.
    pub series: String,
    /// Nanoseconds per unit of the cells.
    pub unit_ns: u64,
    pub columns: Vec<Column>,
}

/// Which part of a capture to draw.
#[derive(Clone, Debug, Default)]
pub struct Choice {
    /// The tool, where the capture holds several.
    pub tool: Option<String>,
    /// One series of keyed histograms, as `pid=42` or `disk=sda,flags=Read`.
    pub key: Option<String>,
    /// The width of an event capture's time bins, in seconds.
    pub bin_secs: Option<f64>,
}

/// One interval of a histogram tool, as its records say (or several in a
/// row, merged: `first` to `number`).
struct Interval {
    run: usize,
    first: u64,
    number: u64,
    end: Stamp,
    cells: Cells,
    /// Records of the chosen series, and the marks of the last one.
    records: usize,
    record_marks: Option<[f64; 3]>,
    lost: u64,
}

/// A capture being read, record by record.
pub struct Capture {
    choice: Choice,
    lines: usize,
    tool: Option<(String, usize)>,
    other_tools: BTreeSet<String>,
    host: Option<String>,
    kernel: Option<String>,
    command: Option<Vec<String>>,
    /// Histogram captures: unit, nanoseconds per unit, the line that said so.
    unit: Option<(String, u64, usize)>,
    /// Event captures: where the latency is.
    field: Option<&'static LatencyField>,
    /// Runs of the tool: a capture record starts one, so does an interval
    /// number that goes back (captures joined end to end).
    run: usize,
    run_starts: BTreeMap<usize, Stamp>,
    intervals: Vec<Interval>,
    /// Live pictures keep at most MAX_INTERVALS, merging the oldest; a
    /// finished capture keeps every one (each came from a line of it), so
    /// its columns are even.
    bounded: bool,
    samples: Vec<(Stamp, u64)>,
    lost: Vec<(Stamp, u64)>,
    keys: BTreeSet<String>,
}

fn bad(line: usize, message: impl std::fmt::Display) -> BadCapture {
    BadCapture(format!("line {line}: {message}"))
}

fn text<'r>(record: &'r Map<String, Value>, name: &str, line: usize) -> Result<&'r str, BadCapture> {
    record.get(name).and_then(Value::as_str).ok_or_else(|| bad(line, format!("no string \"{name}\"")))
}

fn whole(record: &Map<String, Value>, name: &str, line: usize) -> Result<u64, BadCapture> {
    record.get(name).and_then(Value::as_u64).ok_or_else(|| bad(line, format!("no whole number \"{name}\"")))
}

/// A record's key as `--key` spells it: `pid=42`, `disk=sda,flags=Sync-Write`.
fn key_text(key: &Value, line: usize) -> Result<String, BadCapture> {
    let key = key.as_object().ok_or_else(|| bad(line, "\"key\" is not an object"))?;
    let parts: Vec<String> = key
        .iter()
        .map(|(name, value)| match value {
            Value::String(s) => format!("{name}={s}"),
            other => format!("{name}={other}"),
        })
        .collect();
    Ok(parts.join(","))
}

/// `--key` as the user typed it, spaces after commas allowed.
fn normal_key(key: &str) -> String {
    key.split(',').map(str::trim).collect::<Vec<_>>().join(",")
}

/// A histogram record's cells: the kernel's fine `slots` where the record
/// has them, else its log2 `buckets`.
fn record_cells(record: &Map<String, Value>, line: usize) -> Result<Vec<(u64, u64, u64)>, BadCapture> {
    let triple = |low: Option<u64>, high: Option<u64>, count: Option<u64>| match (low, high, count) {
        (Some(l), Some(h), Some(c)) if l <= h => Ok((l, h, c)),
        _ => Err(bad(line, "a bucket is not low <= high with a count")),
    };
    if let Some(slots) = record.get("slots") {
        let slots = slots.as_array().ok_or_else(|| bad(line, "\"slots\" is not an array"))?;
        slots
            .iter()
            .map(|s| {
                let n = |i: usize| s.get(i).and_then(Value::as_u64);
                triple(n(0), n(1), n(2))
            })
            .collect()
    } else {
        let buckets = record.get("buckets").and_then(Value::as_array).ok_or_else(|| bad(line, "no \"buckets\""))?;
        buckets
            .iter()
            .map(|b| {
                let n = |k: &str| b.get(k).and_then(Value::as_u64);
                triple(n("low"), n("high"), n("count"))
            })
            .collect()
    }
}

impl Capture {
    pub fn new(choice: Choice) -> Capture {
        let choice = Choice { key: choice.key.as_deref().map(normal_key), ..choice };
        Capture {
            choice,
            lines: 0,
            tool: None,
            other_tools: BTreeSet::new(),
            host: None,
            kernel: None,
            command: None,
            unit: None,
            field: None,
            run: 0,
            run_starts: BTreeMap::new(),
            intervals: Vec::new(),
            bounded: true,
            samples: Vec::new(),
            lost: Vec::new(),
            keys: BTreeSet::new(),
        }
    }

    /// Reads a whole capture, a line at a time: what it keeps is the
    /// samples, not the text. A last line cut short (no newline at the end,
    /// and not JSON: the writer was killed mid-line) is left out, with a
    /// warning; any other line that is not a record is an error naming it.
    pub fn read(mut input: impl BufRead, choice: Choice) -> Result<(Picture, Vec<String>), BadCapture> {
        let mut capture = Capture { bounded: false, ..Capture::new(choice) };
        let mut warnings = Vec::new();
        let mut line = Vec::new();
        for number in 1.. {
            line.clear();
            let read = (&mut input).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line);
            match read {
                Ok(0) => break,
                Ok(_) if line.strip_suffix(b"\n").unwrap_or(&line).len() > MAX_LINE => {
                    return Err(bad(number, format!("longer than {} MiB: not a record", MAX_LINE >> 20)))
                }
                Ok(_) => {}
                Err(e) => return Err(bad(number, format!("cannot be read: {e}"))),
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed = std::str::from_utf8(&line)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Value>(t).map_err(|e| e.to_string()));
            match parsed {
                Ok(record) => capture.record(number, &record)?,
                // The piece after the last newline is the one a kill cuts.
                Err(_) if !line.ends_with(b"\n") => warnings.push(format!(
                    "line {number} is cut short (no newline at its end, not JSON): left out; the lines before it are drawn"
                )),
                Err(e) => return Err(bad(number, format!("not a JSON record: {e}"))),
            }
        }
        Ok((capture.picture()?, warnings))
    }

    /// Takes one record; `line` names it in errors.
    pub fn record(&mut self, line: usize, record: &Value) -> Result<(), BadCapture> {
        self.lines = line;
        let record = record.as_object().ok_or_else(|| bad(line, "not a JSON object"))?;
        let tool = text(record, "tool", line)?;
        let kind = text(record, "type", line)?;
        if self.choice.tool.as_deref().is_some_and(|want| want != tool) {
            self.other_tools.insert(tool.to_owned());
            return Ok(());
        }
        match &self.tool {
            None => self.tool = Some((tool.to_owned(), line)),
            Some((first, first_line)) if first != tool => {
                return Err(bad(
                    line,
                    format!(
                        "a record of {tool}, but line {first_line} was {first}'s: choose one with --tool {first} or --tool {tool}"
                    ),
                ))
            }
            Some(_) => {}
        }
        let time = Stamp::parse(text(record, "time", line)?).ok_or_else(|| bad(line, "\"time\" is not RFC 3339"))?;
        match kind {
            "capture" => {
                let field = |name: &str| record.get(name).and_then(Value::as_str).map(str::to_owned);
                (self.host, self.kernel) = (field("host"), field("kernel"));
                self.command = record
                    .get("command")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(|v| v.as_str().unwrap_or("?").to_owned()).collect());
                self.run += 1;
                self.run_starts.insert(self.run, time);
            }
            "lost" => self.lost.push((time, record.get("count").and_then(Value::as_u64).unwrap_or(0))),
            "histogram" => self.histogram(line, record, time)?,
            _ if OTHER_RECORDS.contains(&kind) => {}
            _ => {
                let Some(field) = latency_field(tool, kind) else {
                    let known: Vec<String> = tools_catalog::TOOLS
                        .iter()
                        .filter_map(|t| Some(format!("{} ({})", t.name, t.latency.as_ref()?.field)))
                        .collect();
                    return Err(bad(
                        line,
                        format!(
                            "{tool}'s \"{kind}\" records carry no latency to draw; what can be drawn: any tool's \
                             histogram records (runqlat, biolatency), and {}",
                            known.join(", ")
                        ),
                    ));
                };
                let value = whole(record, field.field, line)?;
                self.field = Some(field);
                self.samples.push((time, value));
            }
        }
        Ok(())
    }

    fn histogram(&mut self, line: usize, record: &Map<String, Value>, time: Stamp) -> Result<(), BadCapture> {
        let unit = text(record, "unit", line)?;
        let unit_ns = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, ns)| *ns)
            .ok_or_else(|| bad(line, format!("unknown unit \"{unit}\" (nsecs, usecs or msecs)")))?;
        match &self.unit {
            Some((first, _, first_line)) if first != unit => {
                return Err(bad(line, format!("unit {unit}, but line {first_line} was in {first}: draw one at a time")))
            }
            Some(_) => {}
            None => self.unit = Some((unit.to_owned(), unit_ns, line)),
        }
        let number = whole(record, "interval", line)?;
        let run = self.run;
        let last = self.intervals.last().filter(|i| i.run == run);
        if last.is_some_and(|i| i.number > number) {
            self.run += 1;
        }
        if last.is_none_or(|i| i.number != number) {
            let before = match self.intervals.last().filter(|i| i.run == self.run) {
                Some(last) => Some(last.number),
                None => self.run_starts.contains_key(&self.run).then_some(0),
            };
            if let Some(before) = before.filter(|&b| number.saturating_sub(b) > MAX_GAP) {
                return Err(bad(
                    line,
                    format!("interval {number} follows {before}: more than {MAX_GAP} intervals missing"),
                ));
            }
            if self.bounded && self.intervals.len() >= MAX_INTERVALS {
                self.merge_pairs();
            }
            let run = self.run;
            self.intervals.push(Interval {
                run,
                first: number,
                number,
                end: time,
                cells: Cells::new(),
                records: 0,
                record_marks: None,
                lost: 0,
            });
        }
        let interval = self.intervals.last_mut().expect("just pushed");
        // Every record of an interval carries the interval's loss.
        interval.lost = interval.lost.max(record.get("lost").and_then(Value::as_u64).unwrap_or(0));
        let key = record.get("key").map(|k| key_text(k, line)).transpose()?;
        if let Some(key) = &key {
            self.keys.insert(key.clone());
            if self.choice.key.as_ref().is_some_and(|want| want != key) {
                return Ok(());
            }
        }
        let cells = record_cells(record, line)?;
        let count = whole(record, "count", line)?;
        let sum: u64 = cells.iter().map(|c| c.2).sum();
        if sum != count {
            return Err(bad(line, format!("its buckets add up to {sum}, its count says {count}")));
        }
        for (low, high, n) in cells.into_iter().filter(|c| c.2 > 0) {
            *interval.cells.entry((low, high)).or_default() += n;
        }
        interval.records += 1;
        let mark = |name: &str| record.get(name).and_then(Value::as_u64).map(|v| (v as f64 + 0.5) * unit_ns as f64);
        interval.record_marks = match (mark("p50"), mark("p99"), mark("max")) {
            (Some(p50), Some(p99), Some(max)) => Some([p50, p99, max]),
            _ => None,
        };
        Ok(())
    }

    /// Halves the intervals kept: each pair of neighbours in a run becomes one.
    fn merge_pairs(&mut self) {
        let mut intervals = std::mem::take(&mut self.intervals).into_iter().peekable();
        while let Some(mut a) = intervals.next() {
            if let Some(b) = intervals.next_if(|b| b.run == a.run) {
                for (range, n) in b.cells {
                    *a.cells.entry(range).or_default() += n;
                }
                a.record_marks = if a.records + b.records == 1 { a.record_marks.or(b.record_marks) } else { None };
                (a.number, a.end, a.records, a.lost) = (b.number, b.end, a.records + b.records, a.lost + b.lost);
            }
            self.intervals.push(a);
        }
    }

    /// The picture of what has been read so far.
    pub fn picture(&self) -> Result<Picture, BadCapture> {
        let Some((tool, _)) = &self.tool else {
            return Err(match (&self.choice.tool, self.lines) {
                (Some(want), _) if !self.other_tools.is_empty() => BadCapture(format!(
                    "no {want} records in the capture; it has: {}",
                    self.other_tools.iter().cloned().collect::<Vec<_>>().join(", ")
                )),
                (_, 0) => BadCapture("empty capture: no records".into()),
                (_, n) => BadCapture(format!("empty capture: no records in {n} lines")),
            });
        };
        if let Some(want) = &self.choice.key {
            if !self.keys.contains(want) {
                let keys: Vec<&str> = self.keys.iter().map(String::as_str).collect();
                return Err(BadCapture(match keys.is_empty() {
                    true => format!("--key {want}: the capture has no keyed histograms"),
                    false => format!("--key {want}: no such series; the capture has {}", keys.join(", ")),
                }));
            }
        }
        let mut picture = Picture {
            tool: tool.clone(),
            host: self.host.clone(),
            kernel: self.kernel.clone(),
            command: self.command.clone(),
            series: String::new(),
            unit_ns: 1,
            columns: Vec::new(),
        };
        if let Some((unit, unit_ns, _)) = &self.unit {
            picture.unit_ns = *unit_ns;
            picture.columns = self.interval_columns(*unit_ns);
            picture.series = match (&self.choice.key, self.keys.len()) {
                (Some(key), _) => format!("{key}, {unit}"),
                (None, 0) => unit.clone(),
                (None, 1) => format!("{}, {unit}", self.keys.first().expect("one key")),
                (None, n) => format!("all {n} series summed ({}), {unit}", key_names(&self.keys)),
            };
        } else if let Some(field) = self.field {
            let (columns, bin) = self.bin_columns(field.unit_ns)?;
            picture.unit_ns = field.unit_ns;
            picture.columns = columns;
            picture.series = format!("{} in {} bins", field.field, crate::time::duration(bin as f64 * 1e3));
        } else {
            return Err(BadCapture(format!("empty capture: no histogram or latency records in {} lines", self.lines)));
        }
        Ok(picture)
    }

    /// One column per interval. An interval starts where the one before it
    /// ended (or where the run started); an interval missing from the
    /// capture (keyed histograms print nothing for one without samples) is
    /// an empty column, its time shared evenly with the next.
    fn interval_columns(&self, unit_ns: u64) -> Vec<Column> {
        let mut widths: Vec<i64> = self
            .intervals
            .windows(2)
            .filter(|w| w[0].run == w[1].run)
            .map(|w| (w[1].end.micros - w[0].end.micros) / (w[1].number - w[0].number).max(1) as i64)
            .collect();
        widths.sort_unstable();
        let typical = widths.get(widths.len() / 2).copied().unwrap_or(1_000_000).max(1);
        let mut columns = Vec::new();
        let mut prev: Option<(usize, u64, Stamp)> = None;
        for interval in &self.intervals {
            let anchor = match prev {
                Some((run, number, end)) if run == interval.run => Some((number, end)),
                _ => self.run_starts.get(&interval.run).map(|start| (0, *start)),
            };
            let held = interval.number - interval.first + 1;
            let (from_number, from) =
                anchor.filter(|(n, t)| *n < interval.first && t.micros <= interval.end.micros).unwrap_or((
                    interval.first.saturating_sub(1),
                    interval.end.at(interval.end.micros - typical * held as i64),
                ));
            let missing = interval.first.saturating_sub(from_number + 1);
            let span = (interval.end.micros - from.micros) / (missing + held) as i64;
            let at = |k: u64| from.at(from.micros + k as i64 * span);
            // The intervals missing, as one empty column as wide as they are.
            if missing > 0 {
                columns.push(Column::empty(at(0), at(missing), Some((from_number + 1, from_number + missing))));
            }
            let marks = match interval.records {
                1 => interval.record_marks.or_else(|| marks_from_cells(&interval.cells, unit_ns)),
                _ => marks_from_cells(&interval.cells, unit_ns),
            };
            columns.push(Column {
                start: at(missing),
                end: interval.end,
                cells: interval.cells.clone(),
                marks,
                lost: interval.lost,
                intervals: Some((interval.first, interval.number)),
                weight: interval.number - interval.first + 1,
            });
            prev = Some((interval.run, interval.number, interval.end));
        }
        columns
    }

    /// Events in time bins (`--bin`, else about 60 across the capture),
    /// aligned to whole multiples of the bin; returns them and the bin in µs.
    fn bin_columns(&self, unit_ns: u64) -> Result<(Vec<Column>, i64), BadCapture> {
        let times = self.samples.iter().chain(&self.lost).map(|(t, _)| *t).chain(self.run_starts.values().copied());
        let first = times.clone().min_by_key(|t| t.micros).expect("samples");
        let last = times.max_by_key(|t| t.micros).expect("samples");
        let span = last.micros - first.micros;
        let bin = match self.choice.bin_secs {
            Some(secs) => ((secs * 1e6).round() as i64).max(1),
            None => nice_bin(span / 60),
        };
        let t0 = first.micros.div_euclid(bin) * bin;
        let n = (last.micros - t0) / bin + 1;
        if n > MAX_BINS {
            return Err(BadCapture(format!(
                "--bin {}: {n} columns across the capture, at most {MAX_BINS}: choose a wider bin",
                bin as f64 / 1e6
            )));
        }
        let mut columns: Vec<Column> =
            (0..n).map(|i| Column::empty(first.at(t0 + i * bin), first.at(t0 + (i + 1) * bin), None)).collect();
        let index = |t: &Stamp| ((t.micros - t0) / bin) as usize;
        for (t, value) in &self.samples {
            *columns[index(t)].cells.entry((*value, *value)).or_default() += 1;
        }
        for (t, count) in &self.lost {
            columns[index(t)].lost += count;
        }
        for column in &mut columns {
            column.marks = marks_from_cells(&column.cells, unit_ns);
        }
        Ok((columns, bin))
    }
}

/// The key names of keyed histograms: `pid`, `disk, flags`.
fn key_names(keys: &BTreeSet<String>) -> String {
    let names: BTreeSet<&str> =
        keys.iter().flat_map(|k| k.split(',').filter_map(|part| part.split_once('=').map(|(name, _)| name))).collect();
    names.into_iter().collect::<Vec<_>>().join(", ")
}

/// The smallest of 1, 2, 5 × 10^k µs (at least 1 ms) not below `micros`.
fn nice_bin(micros: i64) -> i64 {
    let mut decade = 1000;
    loop {
        for m in [1, 2, 5] {
            if m * decade >= micros {
                return m * decade;
            }
        }
        decade *= 10;
    }
}

/// Consecutive columns merged so that about `max` remain (a long capture
/// in a picture a few hundred pixels wide), each holding `per` intervals or
/// bins (fewer at the end, or beside a gap wider than that); returns them
/// and `per`.
pub fn fit(columns: &[Column], max: usize, unit_ns: u64) -> (Vec<Column>, usize) {
    let total: u64 = columns.iter().map(|c| c.weight).sum();
    let per = total.div_ceil(max.max(1) as u64).max(1);
    if per == 1 && columns.len() <= max.max(1) {
        return (columns.to_vec(), 1);
    }
    let mut groups: Vec<&[Column]> = Vec::new();
    let (mut start, mut held) = (0, 0);
    for (i, column) in columns.iter().enumerate() {
        if i > start && held + column.weight > per {
            groups.push(&columns[start..i]);
            (start, held) = (i, 0);
        }
        held += column.weight;
    }
    if start < columns.len() {
        groups.push(&columns[start..]);
    }
    let merged = groups
        .into_iter()
        .map(|group| {
            let mut cells = Cells::new();
            for (range, n) in group.iter().flat_map(|c| &c.cells) {
                *cells.entry(*range).or_default() += n;
            }
            let (first, last) = (&group[0], &group[group.len() - 1]);
            Column {
                start: first.start,
                end: last.end,
                marks: marks_from_cells(&cells, unit_ns),
                cells,
                lost: group.iter().map(|c| c.lost).sum(),
                intervals: first.intervals.zip(last.intervals).map(|(a, b)| (a.0, b.1)),
                weight: group.iter().map(|c| c.weight).sum(),
            }
        })
        .collect();
    (merged, per as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<(Picture, Vec<String>), BadCapture> {
        Capture::read(text.as_bytes(), Choice::default())
    }

    const T: &str = "2026-11-24T10:00:0";

    fn hist(n: u64, key: Option<&str>, slots: &[(u64, u64, u64)]) -> String {
        let count: u64 = slots.iter().map(|s| s.2).sum();
        let slots: Vec<Value> = slots.iter().map(|&(l, h, c)| serde_json::json!([l, h, c])).collect();
        let key = key.map(|k| format!(",\"key\":{{\"pid\":{k}}}")).unwrap_or_default();
        format!(
            "{{\"schema\":1,\"tool\":\"runqlat\",\"type\":\"histogram\",\"time\":\"{T}{n}.000000+01:00\",\"interval\":{n}{key},\
             \"unit\":\"usecs\",\"count\":{count},\"buckets\":[],\"slots\":{},\"lost\":0}}\n",
            Value::from(slots)
        )
    }

    #[test]
    fn intervals_become_columns_with_the_fine_slots() {
        let capture = format!(
            "{{\"schema\":1,\"tool\":\"runqlat\",\"type\":\"capture\",\"time\":\"{T}0.000000+01:00\",\"host\":\"h\",\"kernel\":\"6.18\"}}\n{}{}",
            hist(1, None, &[(4000, 4031, 10), (5, 5, 2)]),
            hist(2, None, &[])
        );
        let (p, warnings) = read(&capture).unwrap();
        assert!(warnings.is_empty());
        assert_eq!((p.host.as_deref(), p.kernel.as_deref(), p.unit_ns), (Some("h"), Some("6.18"), 1000));
        assert_eq!(p.columns.len(), 2);
        let c = &p.columns[0];
        assert_eq!((c.start.clock(0), c.end.clock(0), c.count()), ("10:00:00".into(), "10:00:01".into(), 12));
        assert_eq!(c.cells.get(&(4000, 4031)), Some(&10));
        let [p50, p99, max] = c.marks.unwrap();
        assert_eq!((p50, p99, max), (4_016_000.0, 4_016_000.0, 4_016_000.0));
        assert_eq!((p.columns[1].count(), p.columns[1].marks), (0, None));
    }

    #[test]
    fn keyed_series_sum_or_one_and_missing_intervals_are_empty_columns() {
        let capture = [
            hist(1, Some("7"), &[(10, 10, 1)]),
            hist(1, Some("8"), &[(20, 20, 2)]),
            hist(4, Some("8"), &[(30, 30, 3)]),
        ]
        .concat();
        let (p, _) = read(&capture).unwrap();
        let counts: Vec<u64> = p.columns.iter().map(Column::count).collect();
        assert_eq!(counts, [3, 0, 3]);
        // Intervals 2 and 3, missing, are one empty column as wide as both:
        // 2..4 share the time between the records of 1 and 4.
        assert_eq!(p.columns[1].intervals, Some((2, 3)));
        assert_eq!(p.columns[1].start.clock(0), "10:00:01");
        assert_eq!(p.columns[2].start.clock(0), "10:00:03");
        assert!(p.series.starts_with("all 2 series summed (pid)"), "{}", p.series);
        let choice = Choice { key: Some("pid=7".into()), ..Choice::default() };
        let (p, _) = Capture::read(capture.as_bytes(), choice).unwrap();
        assert_eq!(p.columns.iter().map(Column::count).collect::<Vec<_>>(), [1, 0, 0]);
        let choice = Choice { key: Some("pid=9".into()), ..Choice::default() };
        let err = Capture::read(capture.as_bytes(), choice).unwrap_err().0;
        assert_eq!(err, "--key pid=9: no such series; the capture has pid=7, pid=8");
    }

    #[test]
    fn events_are_binned_by_time() {
        let ev = |s: &str, ns: u64| {
            format!("{{\"schema\":1,\"tool\":\"tcplife\",\"type\":\"session\",\"time\":\"{T}{s}+00:00\",\"duration_ns\":{ns}}}\n")
        };
        let lost =
            format!("{{\"schema\":1,\"tool\":\"tcplife\",\"type\":\"lost\",\"time\":\"{T}3.5Z\",\"count\":4}}\n");
        let capture = [ev("0.1", 1000), ev("0.9", 3000), ev("2.5", 2000), lost].concat();
        let choice = Choice { bin_secs: Some(1.0), ..Choice::default() };
        let (p, _) = Capture::read(capture.as_bytes(), choice).unwrap();
        assert_eq!(p.columns.iter().map(Column::count).collect::<Vec<_>>(), [2, 0, 1, 0]);
        assert_eq!(p.columns[3].lost, 4);
        assert_eq!(p.columns[0].marks, Some([1000.5, 3000.5, 3000.5]));
        assert_eq!(p.series, "duration_ns in 1 s bins");
    }

    #[test]
    fn bad_input_names_its_line() {
        let runqlat = hist(1, None, &[(1, 1, 1)]);
        let bio = runqlat.replace("runqlat", "biolatency");
        let exec = "{\"schema\":1,\"tool\":\"execsnoop\",\"type\":\"exec\",\"time\":\"2026-11-24T10:00:00Z\"}\n";
        for (input, message) in [
            (String::new(), "empty capture: no records"),
            ("\n\n".into(), "empty capture: no records"),
            (format!("{runqlat}{bio}"), "line 2: a record of biolatency, but line 1 was runqlat's: choose one with --tool runqlat or --tool biolatency"),
            (format!("{runqlat}{{oops\n{runqlat}"), "line 2: not a JSON record"),
            (exec.into(), "line 1: execsnoop's \"exec\" records carry no latency"),
            (runqlat.replace("\"count\":1", "\"count\":2"), "line 1: its buckets add up to 1, its count says 2"),
            (format!("{runqlat}{}", runqlat.replace("usecs", "msecs")), "line 2: unit msecs, but line 1 was in usecs"),
            (runqlat.replace("2026-11-24T10", "yesterday"), "line 1: \"time\" is not RFC 3339"),
            // A line is read up to its bound, not whole, before it is refused.
            (format!("{runqlat}{}\n", " ".repeat(MAX_LINE + 1)), "line 2: longer than 1 MiB: not a record"),
            // One of exactly the bound is read (and this one is no record).
            (format!("{runqlat}{}x\n", " ".repeat(MAX_LINE - 1)), "line 2: not a JSON record"),
        ] {
            let err = read(&input).unwrap_err().0;
            assert!(err.starts_with(message), "{err:?} vs {message:?}");
        }
        let choice = Choice { tool: Some("biolatency".into()), ..Choice::default() };
        let (p, _) = Capture::read(format!("{runqlat}{bio}").as_bytes(), choice).unwrap();
        assert_eq!(p.tool, "biolatency");
    }

    #[test]
    fn a_last_line_cut_short_is_left_out_with_a_warning() {
        let whole = [hist(1, None, &[(1, 1, 1)]), hist(2, None, &[(2, 2, 2)])].concat();
        let cut = &whole[..whole.len() - 20];
        let (p, warnings) = read(cut).unwrap();
        assert_eq!(p.columns.len(), 1);
        assert_eq!(
            warnings,
            ["line 2 is cut short (no newline at its end, not JSON): left out; the lines before it are drawn"]
        );
        // A complete last line without its newline is a record.
        assert_eq!(read(whole.trim_end()).unwrap().0.columns.len(), 2);
    }

    #[test]
    fn a_long_run_keeps_bounded_memory() {
        let mut capture = Capture::new(Choice::default());
        let n = MAX_INTERVALS as u64 * 2 + 100;
        for i in 1..=n {
            let time = format!("2026-11-24T{:02}:{:02}:{:02}.000000Z", i / 3600, i / 60 % 60, i % 60);
            let record = serde_json::json!({"schema": 1, "tool": "runqlat", "type": "histogram", "time": time,
                "interval": i, "unit": "usecs", "count": 1, "buckets": [{"low": i, "high": i, "count": 1}]});
            capture.record(i as usize, &record).unwrap();
        }
        assert!(capture.intervals.len() <= MAX_INTERVALS);
        let columns = capture.picture().unwrap().columns;
        assert_eq!(columns.iter().map(Column::count).sum::<u64>(), n);
        // Merged twice: the oldest columns hold 8 intervals, the newest 1.
        assert_eq!((columns[0].intervals, columns.last().unwrap().intervals), (Some((1, 8)), Some((n, n))));
        assert!(columns.windows(2).all(|w| w[0].intervals.unwrap().1 + 1 == w[1].intervals.unwrap().0));
        assert!(columns.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(columns[1].start.clock(0), "00:00:08");
    }

    /// Interval `i` of a runqlat capture, one second apart, as a line.
    fn second(i: u64) -> String {
        let time = format!("2026-11-24T{:02}:{:02}:{:02}.000000Z", i / 3600, i / 60 % 60, i % 60);
        let record = serde_json::json!({"schema": 1, "tool": "runqlat", "type": "histogram", "time": time,
            "interval": i, "unit": "usecs", "count": 1, "buckets": [{"low": i, "high": i, "count": 1}]});
        format!("{record}\n")
    }

    #[test]
    fn a_finished_capture_gets_even_columns() {
        let n = MAX_INTERVALS as u64 * 2 + 100;
        let capture: String = (1..=n).map(second).collect();
        let (p, _) = read(&capture).unwrap();
        assert_eq!(p.columns.len() as u64, n, "every interval kept");
        let (merged, per) = fit(&p.columns, 300, p.unit_ns);
        assert_eq!(per, 14);
        let (last, even) = merged.split_last().unwrap();
        assert!(even.iter().all(|c| c.weight == 14 && c.count() == 14), "{:?}", even.iter().map(|c| c.weight));
        assert_eq!(last.weight, n % 14);
    }

    #[test]
    fn missing_intervals_are_one_column_and_absurd_gaps_are_refused() {
        let capture = format!("{}{}", second(1), second(5));
        let (p, _) = read(&capture).unwrap();
        let weights: Vec<u64> = p.columns.iter().map(|c| c.weight).collect();
        assert_eq!((weights, p.columns[1].intervals, p.columns[1].count()), (vec![1, 3, 1], Some((2, 4)), 0));
        let forged = second(3).replace("\"interval\":3", "\"interval\":1000000000000");
        let err = read(&format!("{}{forged}", second(2))).unwrap_err();
        assert_eq!(err.0, "line 2: interval 1000000000000 follows 2: more than 1048576 intervals missing");
    }

    #[test]
    fn many_columns_are_merged_to_fit() {
        let capture: String = (1..=9).map(|n| hist(n, None, &[(n, n, 1)])).collect();
        let (p, _) = read(&capture).unwrap();
        let (merged, per) = fit(&p.columns, 4, p.unit_ns);
        assert_eq!((merged.len(), per), (3, 3));
        assert_eq!(merged[1].intervals, Some((4, 6)));
        assert_eq!(merged[1].count(), 3);
        assert_eq!(merged[1].marks.unwrap()[2], 6500.0);
    }
}
