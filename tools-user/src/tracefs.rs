//! tracefs: where tracepoint record layouts come from when a program reads
//! a plain tracepoint's fields. Mounted on demand, as perf and bpftrace do.

use std::{fs, path::PathBuf, sync::OnceLock};

use anyhow::{bail, Result};

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

/// A tracepoint's record layout, from `events/<category>/<name>/format`
/// (parsed by [`tools_parse::tracefs::Format`]).
pub struct Format(tools_parse::tracefs::Format);

impl std::ops::Deref for Format {
    type Target = tools_parse::tracefs::Format;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Format {
    pub fn read(category: &str, name: &str) -> Result<Self> {
        let path = root()?.join("events").join(category).join(name).join("format");
        let text = crate::procfs::read(path.to_str().unwrap_or_default())?;
        Ok(Format(tools_parse::tracefs::Format::parse(text)))
    }
}
