//! `-c PATH`: the cgroup v2 filter every tool that has it shares; and the
//! tree's directories by inode number, which name the exporter's series.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

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

/// What a tool's kernel side is given for `-c PATH` and
/// `--containers`: the filter (none without `-c`), the walk's offsets
/// (with either), and whether events carry the task's cgroup.
pub fn events_walk(path: Option<&Path>, containers: bool, btf: Option<&Btf>) -> Result<CgroupFilter> {
    let mut walk = match (path, containers) {
        (Some(path), _) => filter(path, btf)?,
        (None, true) => {
            crate::offsets::cgroup_walk(btf.context("--containers reads the task's cgroup, which needs kernel BTF")?)?
        }
        (None, false) => return Ok(CgroupFilter::default()),
    };
    walk.report = containers as u32;
    Ok(walk)
}

/// The flag that makes a tool read the current task's cgroup (`-c`, else
/// `--containers`), which the legacy build's rungs cannot: None without either.
pub fn task_flag(path: Option<&Path>, containers: bool) -> Option<&'static str> {
    path.map(|_| "-c").or(containers.then_some("--containers"))
}

/// Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, as a rule):
/// the whole of it, not a subtree (a cgroup namespace, a bind mount),
/// since cgroups are named by their paths from the top. In a container
/// whose runtime mounted a cgroup tree of its own over the host's, the
/// host's is looked for below the host's root (see [`crate::procfs::host_root`]).
pub fn v2_root() -> Result<PathBuf> {
    let mountinfo = crate::procfs::read("/proc/self/mountinfo")?;
    // mountinfo(5): ID PARENT MAJ:MIN ROOT MOUNT_POINT ... - cgroup2 SOURCE OPTIONS
    let mounts: Vec<Vec<&str>> = mountinfo
        .lines()
        .filter_map(|line| line.split_once(" - ").filter(|(_, fs)| fs.starts_with("cgroup2 ")))
        .map(|(mount, _)| mount.split(' ').collect::<Vec<_>>())
        .collect();
    let wholes = mounts.iter().filter(|fields| fields.get(3) == Some(&"/")).filter_map(|fields| fields.get(4));
    // A whole tree mounted over (by a container runtime's own /sys/fs/cgroup)
    // is listed but not reached; in a cgroup namespace of its own, a
    // container's mount of its subtree reads as `/` too. The hierarchy's
    // own top is inode 1.
    let is_top = |dir: &PathBuf| check_dir(dir).is_ok() && std::fs::metadata(dir).is_ok_and(|meta| meta.ino() == 1);
    let reachable = wholes.map(|point| PathBuf::from(unescape_octal(point))).find(is_top);
    let below_host = || {
        let host_root = crate::procfs::host_root();
        let candidates = ["sys/fs/cgroup/unified", "sys/fs/cgroup"].map(|dir| host_root.join(dir));
        candidates.into_iter().find(|dir| host_root != Path::new("/") && is_top(dir))
    };
    match (reachable.or_else(below_host), mounts.is_empty()) {
        (Some(point), _) => Ok(point),
        (None, true) => bail!("no cgroup v2 hierarchy is mounted"),
        (None, false) => bail!(
            "only a subtree of the cgroup v2 hierarchy is visible here (a cgroup namespace?); from a container, \
             mount the host's root at /host"
        ),
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
pub fn directories(root: &Path) -> HashMap<u64, PathBuf> {
    let mut found = HashMap::new();
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

/// Cgroup v2 directories by inode number, as the kernel side keys them:
/// their paths below the cgroup2 mount (`/system.slice/cron.service`). The
/// tree is walked again when a key is not known, at most once between
/// calls of [`Directories::allow_walk`]; a key not in the whole tree is a
/// cgroup removed.
pub struct Directories {
    root: PathBuf,
    by_ino: HashMap<u64, PathBuf>,
    walked: bool,
}

impl Directories {
    /// The directories of the whole cgroup v2 tree (see [`v2_root`]).
    pub fn new() -> Result<Directories> {
        Ok(Directories { root: v2_root()?, by_ino: Default::default(), walked: false })
    }

    /// The path of directory `ino` (`/` and below); None once it is gone.
    pub fn path_of(&mut self, ino: u64) -> Option<String> {
        let root = &self.root;
        // One stat a key: the directory is still there, not another under its name.
        let still_there = |path: &&PathBuf| std::fs::metadata(path).is_ok_and(|meta| meta.ino() == ino);
        if self.by_ino.get(&ino).filter(still_there).is_none() && !self.walked {
            self.by_ino = directories(root);
            self.walked = true;
        }
        let path = self.by_ino.get(&ino).filter(still_there)?;
        let below = path.strip_prefix(root).ok()?;
        Some(format!("/{}", below.to_string_lossy()))
    }

    /// Lets the next unknown key walk the tree again (once a scrape).
    pub fn allow_walk(&mut self) {
        self.walked = false;
    }
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
