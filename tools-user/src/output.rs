//! Output: text as BCC prints it, CSV, JSON Lines, time stamps, and
//! escaping of every untrusted string so no traced process can forge a line
//! or reach the terminal with an escape sequence.

use std::{
    borrow::Cow,
    io::{self, BufWriter, Stdout, Write},
};

use serde_json::{Map, Value};

/// Version of the JSON Lines records; bumped on any incompatible change.
pub const JSON_SCHEMA: u32 = 1;

/// How a tool prints: BCC's text (the default), CSV (`--csv`, and BCC's own
/// spellings: tcplife `-s`, ext4slower `-j`) or JSON Lines (`--json`,
/// biolatency's `-j`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Csv,
    Json,
}

/// Buffered stdout, flushed at the end of each interval or event batch.
/// A closed pipe (`tool | head`) surfaces as [`Closed`], which ends the tool quietly.
pub struct Out {
    inner: BufWriter<Stdout>,
}

/// The reader of stdout went away.
#[derive(Debug)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout closed")
    }
}

impl std::error::Error for Closed {}

impl Out {
    pub fn stdout() -> Self {
        Out { inner: BufWriter::with_capacity(64 * 1024, io::stdout()) }
    }

    pub fn text(&mut self) -> &mut impl Write {
        &mut self.inner
    }

    /// Writes one JSON Lines record.
    pub fn json(&mut self, record: &Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.inner, record)?;
        self.inner.write_all(b"\n")
    }

    /// Flushes; a broken pipe becomes [`Closed`].
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.inner.flush().map_err(closed_or)
    }
}

/// Maps EPIPE to [`Closed`], anything else to itself.
pub fn closed_or(err: io::Error) -> anyhow::Error {
    if err.kind() == io::ErrorKind::BrokenPipe {
        Closed.into()
    } else {
        err.into()
    }
}

/// The common head of every JSON record.
pub fn json_record(kind: &str) -> Map<String, Value> {
    let mut obj = Map::new();
    obj.insert("schema".into(), JSON_SCHEMA.into());
    obj.insert("tool".into(), crate::diag::tool_name().into());
    obj.insert("type".into(), kind.into());
    obj.insert("time".into(), rfc3339_now().into());
    obj
}

/// The first record of a JSON capture: where and when it was made (its
/// `time` is the start), by which command (`command`: the tool's name,
/// then its arguments). A reader such as the heatmap
/// names the host and kernel from it; readers that filter by `type` pass
/// it over.
pub fn capture_record() -> Map<String, Value> {
    let mut obj = json_record("capture");
    // SAFETY: uname fills the struct it is given; a zeroed one is valid.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } == 0 {
        // c_char is i8 on x86-64 and u8 on arm64: read the bytes as a C string.
        let text = |field: &[libc::c_char; 65]| {
            // SAFETY: uname ends each field with a NUL within its 65 bytes.
            Value::from(unsafe { std::ffi::CStr::from_ptr(field.as_ptr()) }.to_string_lossy())
        };
        obj.insert("host".into(), text(&uts.nodename));
        obj.insert("kernel".into(), text(&uts.release));
    }
    let args = std::env::args_os().skip(1).map(|a| Value::from(a.to_string_lossy()));
    let command: Vec<Value> = std::iter::once(Value::from(crate::diag::tool_name())).chain(args).collect();
    obj.insert("command".into(), command.into());
    obj
}

/// A C string from the kernel (a COMM, a name): the bytes before the first NUL.
pub fn cstr(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())]
}

/// Renders untrusted bytes for a text line: printable ASCII and valid
/// UTF-8 pass, `\` and control characters become `\\`, `\n`, `\t`, `\r`,
/// `\xNN`; invalid UTF-8 bytes become `\xNN`. Nothing can end the line or
/// start a terminal escape sequence.
pub fn escape(bytes: &[u8]) -> String {
    escape_with(bytes, false)
}

/// Untrusted bytes for a CSV field: escaped as in text, so every name can
/// be recovered and nothing acts on a terminal, but for LF, CR and TAB,
/// which stay (inside quotes).
pub fn csv_text(bytes: &[u8]) -> String {
    escape_with(bytes, true)
}

/// The one walk behind [`escape`] and [`csv_text`].
fn escape_with(bytes: &[u8], keep_line_breaks: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' | '\r' | '\t' if keep_line_breaks => out.push(c),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
                // C1 controls (U+0080..U+009F) act as escapes on some terminals;
                // line and paragraph separators, bidi overrides and other
                // invisible format characters could end or reorder a line.
                c if is_invisible_control(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Bytes as lowercase hex, two digits each (`args_hex`, `file_hex`): what
/// JSON carries where a name is not UTF-8.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One CSV field as RFC 4180 writes it: quoted (quotes doubled) only when
/// it holds a comma, a quote, CR or LF, so ordinary rows stay byte for byte
/// BCC's unquoted CSV.
pub fn csv_field(text: &str) -> Cow<'_, str> {
    if text.contains([',', '"', '\r', '\n']) {
        Cow::Owned(format!("\"{}\"", text.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(text)
    }
}

fn is_invisible_control(c: char) -> bool {
    matches!(c,
        '\u{80}'..='\u{9f}' | '\u{ad}' | '\u{61c}' | '\u{180e}' | '\u{200b}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// libc's `time_t`. The libc crate marks it deprecated on musl targets (it
/// is to become 64-bit on 32-bit ones); on x86-64 it is 64-bit already.
#[allow(deprecated)]
type TimeT = libc::time_t;

fn local_time(secs: TimeT) -> libc::tm {
    // SAFETY: localtime_r fills the struct it is given.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        tm
    }
}

fn now() -> (TimeT, u32) {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() as TimeT, d.subsec_nanos())
}

/// Local wall-clock time as BCC's `strftime("%H:%M:%S")`.
pub fn hms_now() -> String {
    let tm = local_time(now().0);
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// Local time as RFC 3339 with microseconds and the zone's offset.
pub fn rfc3339_now() -> String {
    let (secs, nanos) = now();
    let tm = local_time(secs);
    let off = tm.tm_gmtoff / 60;
    let sign = if off < 0 { '-' } else { '+' };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}{sign}{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        nanos / 1000,
        off.abs() / 60,
        off.abs() % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_forge_a_line_or_reach_the_terminal() {
        assert_eq!(escape(b"plain text-1.2_/"), "plain text-1.2_/");
        assert_eq!(escape(b"a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(escape(b"\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape(b"back\\slash"), "back\\\\slash");
        assert_eq!(escape(b"bad\xffutf8"), "bad\\xffutf8");
        assert_eq!(escape("caf\u{e9} \u{9b}".as_bytes()), "caf\u{e9} \\u{9b}");
        assert_eq!(escape(b"\x00\x7f"), "\\x00\\x7f");
        assert_eq!(escape("a\u{202e}b\u{2028}c\u{200b}".as_bytes()), "a\\u{202e}b\\u{2028}c\\u{200b}");
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        // A byte that is not UTF-8 is escaped as in text, so the name can be recovered.
        assert_eq!(csv_text(b"a\nb\x1b[31m\xff\xc3\xa9"), "a\nb\\x1b[31m\\xff\u{e9}");
        // And a backslash, so that a name spelled `\xff` is told from the byte.
        assert_eq!(csv_text(b"a\\xff"), "a\\\\xff");
    }

    #[test]
    fn rfc3339_has_a_zone() {
        let t = rfc3339_now();
        assert_eq!(t.len(), "2026-11-23T20:55:01.123456+00:00".len(), "{t}");
        assert!(matches!(&t[26..27], "+" | "-"));
        // The heatmap reads it back.
        assert!(tools_heatmap::time::Stamp::parse(&t).is_some());
    }
}
