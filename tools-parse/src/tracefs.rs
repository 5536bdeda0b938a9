//! Tracepoint record layouts from tracefs format files: where each field
//! of a plain tracepoint's record is.

use anyhow::{bail, Context as _, Result};

/// The most of a format file looked at.
pub const MAX_SIZE: usize = 1 << 20;

/// A tracepoint's record layout, as tracefs gives it in
/// `events/<category>/<name>/format`.
pub struct Format {
    text: String,
}

impl Format {
    /// The format file's text, at most [`MAX_SIZE`] bytes of it (a format
    /// file is a few KB).
    pub fn parse(mut text: String) -> Format {
        if text.len() > MAX_SIZE {
            let mut cut = MAX_SIZE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Format { text }
    }

    /// Offset and size of field `name`.
    pub fn field(&self, name: &str) -> Result<(u32, u32)> {
        for line in self.text.lines() {
            let Some(decl) = line.trim().strip_prefix("field:") else {
                continue;
            };
            let mut parts = decl.split(';').map(str::trim);
            let declared = parts.next().unwrap_or_default();
            // `pid_t pid`, `char comm[16]`, `long prev_state`.
            let ident = declared.rsplit(' ').next().unwrap_or_default();
            let ident = ident.split('[').next().unwrap_or_default();
            if ident != name {
                continue;
            }
            let value = |key: &str| -> Result<u32> {
                decl.split(';')
                    .find_map(|p| p.trim().strip_prefix(key))
                    .with_context(|| format!("no {key} for field {name}"))?
                    .parse()
                    .with_context(|| format!("bad {key} for field {name}"))
            };
            return Ok((value("offset:")?, value("size:")?));
        }
        bail!("tracepoint format has no field {name}")
    }

    /// Offset of a 4-byte field.
    pub fn field_u32(&self, name: &str) -> Result<u32> {
        match self.field(name)? {
            (offset, 4) => Ok(offset),
            (_, size) => bail!("field {name} is {size} bytes, expected 4"),
        }
    }

    /// The highest flag value that the print format names in a
    /// `__print_flags(...)` list: for `sched_switch`, the last task state
    /// letter (`I`). The preempted marker (`R+`) is the next bit up.
    pub fn highest_printed_flag(&self) -> Option<u64> {
        let fmt = self.text.split("print fmt:").nth(1)?;
        fmt.split('{')
            .skip(1)
            .filter_map(|entry| {
                let value = entry.split(',').next()?.trim();
                match value.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16).ok(),
                    None => value.parse().ok(),
                }
            })
            .max()
    }
}
