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

/// Where the host's files are, for a tool run from a container: `/proc/1/root`
/// when it can be read (the host's PID namespace, and no security module in
/// the way) and is not our own root, else `/host` where the host's root is
/// mounted there (`kubectl debug node/...` mounts it there; `docker run -v
/// /:/host` alike), else `/`.
pub fn host_root() -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    let identity = |path: &str| fs::metadata(path).ok().map(|meta| (meta.dev(), meta.ino()));
    let ours = identity("/");
    if identity("/proc/1/root/").is_some_and(|init| Some(init) != ours) {
        return "/proc/1/root".into();
    }
    if fs::metadata("/host/sys/fs/cgroup").is_ok_and(|meta| meta.is_dir()) {
        return "/host".into();
    }
    "/".into()
}

#[cfg(test)]
mod tests {
    use std::os::unix::{fs::MetadataExt as _, io::AsRawFd as _};

    use super::*;

    /// A file this test maps twice (as a loader maps a library's segments)
    /// is named once, with its device and inode, and reachable through the
    /// process's root. Any Linux, any user: no library of the system.
    #[test]
    fn maps_of_a_process_name_each_file_once() {
        let path = std::env::temp_dir().join(format!("tools-user-procfs-test-{}", std::process::id()));
        fs::write(&path, [0u8; 4096]).unwrap();
        let path = path.canonicalize().unwrap();
        let file = fs::File::open(&path).unwrap();
        // Both at offset 0: the kernel never merges them into one mapping.
        // SAFETY: new private read-only mappings of a file we hold open.
        let map = || unsafe {
            libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0)
        };
        let mappings = [map(), map()];
        let name = path.to_str().unwrap().to_owned();
        let files = mapped_files(std::process::id(), |p| p == name);
        let reachable = files.as_ref().is_ok_and(|files| files.iter().all(|f| f.reachable().exists()));
        for mapping in mappings.into_iter().filter(|&m| m != libc::MAP_FAILED) {
            // SAFETY: a mapping made above, of that length.
            unsafe { libc::munmap(mapping, 4096) };
        }
        let meta = file.metadata().unwrap();
        let _ = fs::remove_file(&path);
        assert!(!mappings.contains(&libc::MAP_FAILED), "mmap: {}", std::io::Error::last_os_error());
        let files = files.unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!((files[0].path.as_str(), files[0].dev, files[0].ino), (name.as_str(), meta.dev(), meta.ino()));
        assert!(reachable, "not reachable through /proc/PID/root: {files:?}");
    }
}
