//! `-c PATH`: the cgroup v2 filter every tool that has it shares.

use std::{os::unix::fs::MetadataExt as _, path::Path};

use anyhow::{bail, Context as _, Result};
use tools_common::CgroupFilter;

use crate::btf::Btf;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The filter for `path`: checks it is a cgroup v2 directory and resolves
/// the struct members the kernel side walks (see [`CgroupFilter`]).
pub fn filter(path: &Path, btf: Option<&Btf>) -> Result<CgroupFilter> {
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
    let btf = btf.context("-c reads the task's cgroup, which needs kernel BTF")?;
    Ok(CgroupFilter { ino: meta.ino() as u32, ..crate::offsets::cgroup_walk(btf)? })
}
