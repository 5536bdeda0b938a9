//! Columns of the event tools, declared once per tool: where each appears
//! (BCC's text layout, BCC's CSV header, a JSON key) and how its value is
//! read from an event. The text header and row, the CSV header and row and
//! the JSON object all render from that one declaration, so they cannot
//! drift apart.

use serde_json::{Map, Value};

use crate::output::{self, Format};

/// One value of one event.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell<'e> {
    /// Untrusted bytes (a COMM, a path, a host name): escaped in text,
    /// exact in CSV (but for terminal controls and bytes that are not
    /// UTF-8, escaped as in text) and in JSON (invalid UTF-8 as U+FFFD,
    /// with the exact bytes in hex beside it, under the key + `_hex`).
    Bytes(&'e [u8]),
    /// Untrusted text held by the tool (a container's name from its
    /// runtime's records): rendered as [`Cell::Bytes`].
    Untrusted(String),
    /// Text the tool made (a time, an address, a name it chose); in text
    /// output it must already be escaped where it holds untrusted parts.
    Text(String),
    Int(i64),
    UInt(u64),
    /// A number printed with this many decimals (`%.2f`); a number in JSON.
    Fixed(f64, usize),
    Bool(bool),
    /// Unknown: `-` in text, empty in CSV, `null` in JSON.
    Unknown,
    /// Any JSON value (an array of arguments); JSON only.
    Json(Value),
    /// Not in this record: its JSON key is left out.
    Absent,
}

impl Cell<'_> {
    /// As printed in a text row (before padding).
    pub fn text(&self) -> String {
        match self {
            Cell::Bytes(b) => output::escape(b),
            Cell::Untrusted(s) => output::escape(s.as_bytes()),
            Cell::Text(s) => s.clone(),
            Cell::Int(n) => n.to_string(),
            Cell::UInt(n) => n.to_string(),
            Cell::Fixed(x, decimals) => format!("{x:.decimals$}"),
            Cell::Bool(b) => b.to_string(),
            Cell::Unknown => "-".into(),
            Cell::Json(v) => v.to_string(),
            Cell::Absent => String::new(),
        }
    }

    /// As a CSV field's content (before quoting).
    pub fn csv(&self) -> String {
        match self {
            Cell::Bytes(b) => output::csv_text(b),
            Cell::Untrusted(s) => output::csv_text(s.as_bytes()),
            Cell::Unknown | Cell::Absent => String::new(),
            other => other.text(),
        }
    }

    /// As a JSON value; None when absent.
    pub fn json(&self) -> Option<Value> {
        Some(match self {
            Cell::Bytes(b) => Value::from(String::from_utf8_lossy(b)),
            Cell::Text(s) | Cell::Untrusted(s) => Value::from(s.as_str()),
            Cell::Int(n) => Value::from(*n),
            Cell::UInt(n) => Value::from(*n),
            Cell::Fixed(x, _) => Value::from(*x),
            Cell::Bool(b) => Value::from(*b),
            Cell::Unknown => Value::Null,
            Cell::Json(v) => v.clone(),
            Cell::Absent => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Where a column sits in BCC's text layout: `%-16s ` is
/// `text("COMM", 16)`, `%-10.10s` adds `.cut()`, `%7.2f` is `.right()`.
#[derive(Clone, Debug)]
pub struct TextSpec {
    pub header: &'static str,
    /// Padded to this many characters (a longer value overflows, as in C).
    pub width: usize,
    pub align: Align,
    /// Cut to `width` characters (BCC's `%-10.10s`).
    pub cut: bool,
    /// What follows the column, unless it is the last: BCC's formats
    /// separate columns with one space, except where the width holds it.
    pub gap: &'static str,
    /// How an unknown value reads when not as [`Cell::Unknown`]'s `-`: the
    /// tool's own BCC mark.
    pub unknown: Option<&'static str>,
}

type ValueFn<'a, T> = Box<dyn for<'e> Fn(&'e T) -> Cell<'e> + 'a>;

/// A column of events of type `T`.
pub struct Column<'a, T> {
    pub text: Option<TextSpec>,
    pub csv: Option<&'static str>,
    pub json: Option<&'static str>,
    value: ValueFn<'a, T>,
}

impl<'a, T> Column<'a, T> {
    /// A column whose value is `value(event)`; it appears nowhere until
    /// given a text, CSV or JSON place.
    pub fn new(value: impl for<'e> Fn(&'e T) -> Cell<'e> + 'a) -> Self {
        Column { text: None, csv: None, json: None, value: Box::new(value) }
    }

    /// In text under `header`, left-aligned and padded to `width`.
    pub fn text(mut self, header: &'static str, width: usize) -> Self {
        self.text = Some(TextSpec { header, width, align: Align::Left, cut: false, gap: " ", unknown: None });
        self
    }

    /// Right-aligned in text.
    pub fn right(mut self) -> Self {
        self.text.as_mut().expect("right() after text()").align = Align::Right;
        self
    }

    /// Cut to its width in text.
    pub fn cut(mut self) -> Self {
        self.text.as_mut().expect("cut() after text()").cut = true;
        self
    }

    /// What follows it in text (default one space).
    pub fn gap(mut self, gap: &'static str) -> Self {
        self.text.as_mut().expect("gap() after text()").gap = gap;
        self
    }

    /// An unknown value reads `mark` in text (BCC's execsnoop: `?`).
    pub fn unknown_as(mut self, mark: &'static str) -> Self {
        self.text.as_mut().expect("unknown_as() after text()").unknown = Some(mark);
        self
    }

    /// In CSV under `header`.
    pub fn csv(mut self, header: &'static str) -> Self {
        self.csv = Some(header);
        self
    }

    /// In text and in CSV, under the same header.
    pub fn text_csv(self, header: &'static str, width: usize) -> Self {
        self.text(header, width).csv(header)
    }

    /// Keeps the text and CSV places only if `on` (a flag such as `-T`
    /// adds the column); JSON has every column always.
    pub fn text_if(mut self, on: bool) -> Self {
        if !on {
            self.text = None;
            self.csv = None;
        }
        self
    }

    /// In JSON under `key`.
    pub fn json(mut self, key: &'static str) -> Self {
        self.json = Some(key);
        self
    }

    pub fn value<'e>(&self, event: &'e T) -> Cell<'e> {
        (self.value)(event)
    }

    /// The value as its text row shows it.
    fn text_of(&self, event: &T) -> String {
        match (self.value(event), &self.text) {
            (Cell::Unknown, Some(TextSpec { unknown: Some(mark), .. })) => (*mark).to_owned(),
            (cell, _) => cell.text(),
        }
    }
}

/// A tool's columns, rendered in one format.
pub struct Columns<'a, T> {
    pub columns: Vec<Column<'a, T>>,
    pub format: Format,
    /// The JSON record's `type` (`exec`, `session`, ...).
    pub record: &'static str,
}

impl<T> Columns<'_, T> {
    /// The header line, or None in JSON.
    pub fn header(&self) -> Option<String> {
        match self.format {
            Format::Text => {
                let specs: Vec<&TextSpec> = self.columns.iter().filter_map(|c| c.text.as_ref()).collect();
                let cells: Vec<String> = specs.iter().map(|s| s.header.to_owned()).collect();
                Some(join_text(&specs, cells))
            }
            Format::Csv => {
                Some(self.columns.iter().filter_map(|c| c.csv).map(output::csv_field).collect::<Vec<_>>().join(","))
            }
            Format::Json => None,
        }
    }

    /// One event as a line (no newline), in the chosen format.
    pub fn row(&self, event: &T) -> String {
        match self.format {
            Format::Text => {
                let (specs, cells): (Vec<&TextSpec>, Vec<String>) =
                    self.columns.iter().filter_map(|c| Some((c.text.as_ref()?, c.text_of(event)))).unzip();
                join_text(&specs, cells)
            }
            Format::Csv => self
                .columns
                .iter()
                .filter(|c| c.csv.is_some())
                .map(|c| output::csv_field(&c.value(event).csv()).into_owned())
                .collect::<Vec<_>>()
                .join(","),
            Format::Json => Value::Object(self.json(event)).to_string(),
        }
    }

    /// One event as a JSON object: the common head, then each column with
    /// a key, in declaration order; bytes that are not UTF-8 also as
    /// `<key>_hex`, exactly.
    pub fn json(&self, event: &T) -> Map<String, Value> {
        let mut record = output::json_record(self.record);
        for column in &self.columns {
            if let Some(key) = column.json {
                let cell = column.value(event);
                if let Some(value) = cell.json() {
                    record.insert(key.into(), value);
                }
                if let Cell::Bytes(bytes) = cell {
                    if std::str::from_utf8(bytes).is_err() {
                        record.insert(format!("{key}_hex"), output::hex(bytes).into());
                    }
                }
            }
        }
        record
    }
}

/// Pads (and cuts) each cell to its column and joins them; the last column
/// is neither padded nor followed by its gap, as BCC's formats end.
fn join_text(specs: &[&TextSpec], cells: Vec<String>) -> String {
    let mut line = String::new();
    let last = specs.len().saturating_sub(1);
    for (i, (spec, mut cell)) in specs.iter().zip(cells).enumerate() {
        if spec.cut {
            if let Some((at, _)) = cell.char_indices().nth(spec.width) {
                cell.truncate(at);
            }
        }
        if i == last {
            line += &cell;
            break;
        }
        let width = spec.width;
        match spec.align {
            Align::Left => line += &format!("{cell:<width$}"),
            Align::Right => line += &format!("{cell:>width$}"),
        }
        line += spec.gap;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ev {
        pid: u32,
        comm: Vec<u8>,
        ms: f64,
        bytes: Option<u64>,
    }

    fn columns(format: Format) -> Columns<'static, Ev> {
        Columns {
            columns: vec![
                Column::new(|e: &Ev| Cell::UInt(e.pid as u64)).text_csv("PID", 7).json("pid"),
                Column::new(|e: &Ev| Cell::Bytes(&e.comm)).text_csv("COMM", 10).cut().json("comm"),
                Column::new(|e: &Ev| e.bytes.map_or(Cell::Unknown, Cell::UInt))
                    .text_csv("BYTES", 5)
                    .right()
                    .json("bytes"),
                Column::new(|e: &Ev| Cell::Fixed(e.ms, 2)).text_csv("MS", 0).json("ms"),
            ],
            format,
            record: "test",
        }
    }

    #[test]
    fn one_declaration_renders_text_csv_and_json() {
        let ev = Ev { pid: 42, comm: b"a,b \"q\"\nz\x1bxyz".to_vec(), ms: 1.5, bytes: None };
        let text = columns(Format::Text);
        assert_eq!(text.header().unwrap(), "PID     COMM       BYTES MS");
        // Cut to 10 characters after escaping: nothing forges a line or reaches the terminal.
        assert_eq!(text.row(&ev), "42      a,b \"q\"\\nz     - 1.50");

        let csv = columns(Format::Csv);
        assert_eq!(csv.header().unwrap(), "PID,COMM,BYTES,MS");
        assert_eq!(csv.row(&ev), "42,\"a,b \"\"q\"\"\nz\\x1bxyz\",,1.50");
        let plain = Ev { pid: 7, comm: b"curl".to_vec(), ms: 0.25, bytes: Some(1024) };
        assert_eq!(csv.row(&plain), "7,curl,1024,0.25", "ordinary rows are not quoted");

        let json: Value = serde_json::from_str(&columns(Format::Json).row(&ev)).unwrap();
        assert_eq!(json["pid"], 42);
        assert_eq!(json["comm"], "a,b \"q\"\nz\u{1b}xyz", "exact in JSON");
        assert_eq!(json["bytes"], Value::Null);
        assert_eq!(json["ms"], 1.5);
        assert_eq!((json["schema"].as_u64(), json["type"].as_str()), (Some(1), Some("test")));
        assert_eq!(columns(Format::Json).header(), None);
        assert_eq!(json.get("comm_hex"), None, "valid UTF-8 needs no hex");

        // Bytes that are not UTF-8: escaped in text and CSV, and exact in JSON's hex.
        let odd = Ev { pid: 1, comm: b"a\xffb".to_vec(), ms: 0.5, bytes: None };
        assert_eq!(text.row(&odd), "1       a\\xffb         - 0.50");
        assert_eq!(csv.row(&odd), "1,a\\xffb,,0.50");
        let json: Value = serde_json::from_str(&columns(Format::Json).row(&odd)).unwrap();
        assert_eq!((json["comm"].as_str(), json["comm_hex"].as_str()), (Some("a\u{fffd}b"), Some("61ff62")));
    }

    #[test]
    fn an_unknown_value_reads_as_the_column_marks_it() {
        let ppid = |format| Columns {
            columns: vec![Column::new(|_: &Ev| Cell::Unknown).text_csv("PPID", 7).unknown_as("?").json("ppid")],
            format,
            record: "test",
        };
        let ev = Ev { pid: 1, comm: vec![], ms: 0.0, bytes: None };
        assert_eq!(ppid(Format::Text).row(&ev), "?");
        assert_eq!(ppid(Format::Csv).row(&ev), "");
        let json: Value = serde_json::from_str(&ppid(Format::Json).row(&ev)).unwrap();
        assert_eq!(json["ppid"], Value::Null);
    }
}
