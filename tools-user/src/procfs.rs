//! /proc (and /sys) readers, bounded: what processes exist, which files
//! they map, and the small files the tools size their tables from.

use std::{fs, io::Read as _};

use anyhow::{Context as _, Result};
pub use tools_parse::maps::{parse_maps, Mapped};

/// The most of a /proc file read: a process's maps run to a few hundred
/// KB at most; beyond this the rest is ignored.
const MAX_READ: u64 = 16 << 20;

/// Reads a /proc or /sys file, at most [`MAX_READ`] bytes.
pub fn read(path: &str) -> Result<String> {
    let mut text = String::new();
    fs::File::open(path)
        .with_context(|| format!("opening {path}"))?
        .take(MAX_READ)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {path}"))?;
    Ok(text)
}

/// The processes that exist now.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// The files `pid` maps, each once, whose name passes `wanted`.
pub fn mapped_files(pid: u32, wanted: impl Fn(&str) -> bool) -> Result<Vec<Mapped>> {
    let maps = read(&format!("/proc/{pid}/maps"))?;
    Ok(parse_maps(&maps, pid, wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_of_this_process_name_its_c_library_once() {
        let files = mapped_files(std::process::id(), |p| p.contains("libc")).unwrap();
        assert_eq!(files.iter().filter(|f| f.path.ends_with("libc.so.6")).count(), 1, "{files:?}");
        assert!(files[0].reachable().exists());
    }
}
