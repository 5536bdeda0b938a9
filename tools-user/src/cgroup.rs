//! `-c PATH`: the cgroup v2 filter every tool that has it shares.

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
