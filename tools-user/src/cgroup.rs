//! `-c PATH`: the cgroup v2 filter every tool that has it shares; and the
//! tree's directories by inode number, which name the exporter's series.

use std::{os::unix::fs::MetadataExt as _, path::Path};

use anyhow::{bail, Context as _, Result};
use tools_common::CgroupFilter;

use crate::btf::Btf;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Checks that `path` is a cgroup v2 directory.
pub fn check_dir(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("cgroup {}", path.display()))?;
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs fills the struct it is given.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut fs) } != 0
        || fs.f_type as i64 != CGROUP2_SUPER_MAGIC
        || !meta.is_dir()
    {
        bail!("{} is not a cgroup v2 directory", path.display());
    }
    Ok(())
}

/// The filter for `path` (a cgroup v2 directory, see [`check_dir`]): its
/// inode, and the struct members the kernel side walks (see [`CgroupFilter`]).
pub fn filter(path: &Path, btf: Option<&Btf>) -> Result<CgroupFilter> {
    check_dir(path)?;
    let ino = std::fs::metadata(path)?.ino() as u32;
    let btf = btf.context("-c reads the task's cgroup, which needs kernel BTF")?;
    Ok(CgroupFilter { ino, ..crate::offsets::cgroup_walk(btf)? })
}

/// Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, as a rule).
pub fn v2_root() -> Result<std::path::PathBuf> {
    let mountinfo = crate::procfs::read("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .filter_map(|line| line.split_once(" - "))
        .find(|(_, fs)| fs.starts_with("cgroup2 "))
        .and_then(|(mount, _)| mount.split(' ').nth(4).map(std::path::PathBuf::from))
        .context("no cgroup v2 hierarchy is mounted")
}

/// Every directory of the cgroup v2 tree at `root`, by inode number: its
/// path below the root (`/` for the root). Directories that go while the
/// tree is read are left out.
pub fn directories(root: &Path) -> std::collections::HashMap<u64, String> {
    let mut found = std::collections::HashMap::new();
    let mut pending = vec![(root.to_path_buf(), String::from("/"))];
    while let Some((dir, name)) = pending.pop() {
        let Ok(meta) = std::fs::metadata(&dir) else { continue };
        found.insert(meta.ino(), name.clone());
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let child = entry.file_name().to_string_lossy().into_owned();
                let path = if name == "/" { format!("/{child}") } else { format!("{name}/{child}") };
                pending.push((entry.path(), path));
            }
        }
    }
    found
}
