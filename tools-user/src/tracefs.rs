//! tracefs: where tracepoint record layouts come from when a program reads
//! a plain tracepoint's fields. Mounted on demand, as perf and bpftrace do.

use std::{fs, path::PathBuf, sync::OnceLock};

use anyhow::{bail, Context as _, Result};

const MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs root, mounting it at /sys/kernel/tracing if nothing is
/// mounted. A tracefs this process may not read (mode 0700, and no root) is
/// said to be so, not taken for a missing one.
pub fn root() -> Result<&'static PathBuf> {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    if let Some(root) = ROOT.get() {
        return Ok(root);
    }
    let mut found = None;
    for candidate in MOUNTS.iter().map(PathBuf::from) {
        match fs::metadata(candidate.join("events")) {
            Ok(meta) if meta.is_dir() => {
                found = Some(candidate);
                break;
            }
            Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => bail!(
                "tracefs at {} is not readable by this user ({err}): tracepoints need root (or CAP_DAC_READ_SEARCH)",
                candidate.display()
            ),
            _ => {}
        }
    }
    let root = match found {
        Some(root) => root,
        None => {
            let target = PathBuf::from(MOUNTS[0]);
            // SAFETY: a mount of a pseudo filesystem on a path of ours.
            let ret = unsafe {
                libc::mount(
                    c"nodev".as_ptr(),
                    c"/sys/kernel/tracing".as_ptr(),
                    c"tracefs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            if ret != 0 {
                bail!(
                    "tracefs is not mounted and mounting it on {} failed: {}",
                    target.display(),
                    std::io::Error::last_os_error()
                );
            }
            log::info!("mounted tracefs on {}", target.display());
            target
        }
    };
    Ok(ROOT.get_or_init(|| root))
}

/// A tracepoint's record layout, from `events/<category>/<name>/format`.
pub struct Format {
    text: String,
}

impl Format {
    pub fn read(category: &str, name: &str) -> Result<Self> {
        let path = root()?.join("events").join(category).join(name).join("format");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Format { text })
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
