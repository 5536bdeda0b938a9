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

/// Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, as a rule):
/// the whole of it, not a subtree (a cgroup namespace, a bind mount),
/// since the exporter names every cgroup by its path from the top.
pub fn v2_root() -> Result<std::path::PathBuf> {
    let mountinfo = crate::procfs::read("/proc/self/mountinfo")?;
    // mountinfo(5): ID PARENT MAJ:MIN ROOT MOUNT_POINT ... - cgroup2 SOURCE OPTIONS
    let mounts: Vec<Vec<&str>> = mountinfo
        .lines()
        .filter_map(|line| line.split_once(" - ").filter(|(_, fs)| fs.starts_with("cgroup2 ")))
        .map(|(mount, _)| mount.split(' ').collect::<Vec<_>>())
        .collect();
    let whole = mounts.iter().find(|fields| fields.get(3) == Some(&"/")).and_then(|fields| fields.get(4));
    match (whole, mounts.is_empty()) {
        (Some(point), _) => Ok(std::path::PathBuf::from(unescape_octal(point))),
        (None, true) => bail!("no cgroup v2 hierarchy is mounted"),
        (None, false) => bail!("only a subtree of the cgroup v2 hierarchy is visible here (a cgroup namespace?)"),
    }
}

/// A mountinfo field, whose spaces, tabs, newlines and backslashes are
/// written as `\ooo`.
fn unescape_octal(field: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt as _;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// Every directory of the cgroup v2 tree at `root`, by inode number.
/// Directories that go while the tree is read are left out.
pub fn directories(root: &Path) -> std::collections::HashMap<u64, std::path::PathBuf> {
    let mut found = std::collections::HashMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(meta) = std::fs::metadata(&dir) else { continue };
        found.insert(meta.ino(), dir.clone());
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_octal("/sys/fs/cgroup"), "/sys/fs/cgroup");
        assert_eq!(unescape_octal(r"/mnt/a\040b\011c\134d"), "/mnt/a b\tc\\d");
        assert_eq!(unescape_octal(r"/odd\04"), r"/odd\04");
    }
}
