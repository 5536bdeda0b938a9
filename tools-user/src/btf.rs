//! Struct offsets, enum values and tracepoint prototypes from BTF: the
//! running kernel's (`/sys/kernel/btf/vmlinux`) or a file the user names.
//! The reader itself is `tools_parse::btf` (bounded, and fuzzed); this adds
//! where the tools take it from.

use std::{ops::Deref, path::Path};

use anyhow::Result;
use tools_parse::btf::Btf as Parsed;
pub use tools_parse::btf::{Member, MAX_SIZE, VMLINUX};

use crate::lifetime::BadInput;

/// Parsed BTF, with the lookups of [`tools_parse::btf::Btf`].
pub struct Btf(Parsed);

impl Deref for Btf {
    type Target = Parsed;

    fn deref(&self) -> &Parsed {
        &self.0
    }
}

impl From<Parsed> for Btf {
    /// BTF read from elsewhere (bytes in memory: tests build theirs).
    fn from(parsed: Parsed) -> Self {
        Btf(parsed)
    }
}

impl Btf {
    /// The running kernel's BTF, if it has one.
    pub fn from_sys_fs() -> Result<Self> {
        Ok(Btf(Parsed::from_sys_fs()?))
    }

    /// Where the tools take struct offsets from: `--btf FILE`, else the
    /// kernel's own BTF. A file the user names is used or refused (an
    /// error, exit status 2): the ladder steps down for what the kernel
    /// lacks, never for what the user got wrong. The inner error says why
    /// there is no BTF at all (the kernel has none): rungs that need no
    /// struct offsets (plain tracepoints) still work then.
    pub fn for_tool(options: &crate::loader::LoadOptions) -> Result<std::result::Result<Self, String>> {
        if let Some(file) = &options.btf {
            let refused = |err: anyhow::Error| BadInput(format!("--btf {}: {err:#}", file.display()));
            let btf = Btf(Parsed::from_file(file).map_err(refused)?);
            // Any kernel's BTF describes its tasks; another file's does not.
            if !btf.has_struct("task_struct") {
                return Err(refused(anyhow::anyhow!("no struct task_struct: not a kernel's BTF")).into());
            }
            log::info!("BTF: {} (--btf)", file.display());
            return Ok(Ok(btf));
        }
        if options.hide_kernel_btf {
            return Ok(Err("kernel BTF hidden (EBPF_TOOLS_HIDE_KERNEL_BTF); pass --btf FILE".into()));
        }
        if !Path::new(VMLINUX).exists() {
            return Ok(Err(format!("this kernel has no BTF ({VMLINUX}); pass --btf FILE (for example from BTFHub)")));
        }
        let started = std::time::Instant::now();
        let btf = Self::from_sys_fs()?;
        log::info!("BTF: {VMLINUX} ({:.1} ms)", started.elapsed().as_secs_f64() * 1e3);
        Ok(Ok(btf))
    }
}
