//! ext4slower's plan (and xfsslower's, btrfsslower's: a table of
//! filesystems, as libbpf-tools' fsslower): its configuration and rungs,
//! for the command-line tool (events slower than a threshold) and the
//! exporter (every operation counted in the kernel's keyed histogram).

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use tools_common::fsslower::{op, programs, Config};

use super::{BtfSource, Plan};
use crate::{
    ebpf_object,
    events::EventPath,
    loader::{self, Attach, LoadOptions, Rung},
    offsets, tracefs,
};

/// A filesystem the tool can trace: its super block magic (the syscall
/// rung's test) and its file operations (the function rungs' hooks).
pub struct Fs {
    pub name: &'static str,
    pub magic: u32,
    pub read: &'static str,
    pub write: &'static str,
    pub open: &'static str,
    pub sync: &'static str,
}

pub const FILESYSTEMS: &[Fs] = &[
    Fs {
        name: "ext4",
        magic: 0xef53,
        read: "ext4_file_read_iter",
        write: "ext4_file_write_iter",
        open: "ext4_file_open",
        sync: "ext4_sync_file",
    },
    Fs {
        name: "xfs",
        magic: 0x5846_5342,
        read: "xfs_file_read_iter",
        write: "xfs_file_write_iter",
        open: "xfs_file_open",
        sync: "xfs_file_fsync",
    },
    Fs {
        name: "btrfs",
        magic: 0x9123_683e,
        read: "btrfs_file_read_iter",
        write: "btrfs_file_write_iter",
        open: "btrfs_file_open",
        sync: "btrfs_sync_file",
    },
];

/// The syscalls of the syscall rung, by the program that takes their entry.
const SYSCALLS: &[(&str, &[&str])] = &[
    (programs::SYS_READ, &["read", "readv"]),
    (programs::SYS_PREAD, &["pread64", "preadv", "preadv2"]),
    (programs::SYS_WRITE, &["write", "writev"]),
    (programs::SYS_PWRITE, &["pwrite64", "pwritev", "pwritev2"]),
    (programs::SYS_SYNC, &["fsync", "fdatasync"]),
    (programs::SYS_OPEN, &["open", "openat", "openat2", "creat"]),
];

/// What the command-line tool and the exporter ask for.
pub struct Options<'a> {
    pub fs: &'a Fs,
    /// Only operations slower than this (command-line tool).
    pub min_ms: u64,
    /// `-p`: only this process.
    pub pid: Option<u32>,
    /// `-c`: only tasks in this cgroup v2 directory or below it.
    pub cgroup: Option<&'a Path>,
    /// `--containers`: events carry the task's cgroup.
    pub containers: bool,
    /// Count every operation in the kernel, by operation, in units of this
    /// many nanoseconds; send no events (the exporter: 1 ns; `--histogram`:
    /// its unit).
    pub histogram_unit_ns: Option<u32>,
    /// The syscall rung may be taken though it was not asked for by
    /// `--rung syscall` (`--allow-syscall-rung`): it taxes every process.
    pub allow_syscall_rung: bool,
}

/// Why the syscall rung is not taken unless allowed: what it costs the host.
const SYSCALL_TAX: &str = "syscall tracepoints slow every read, write, open and fsync of every process on the \
                           host (about a microsecond each: see OVERHEAD in ext4slower(8)); --allow-syscall-rung \
                           takes them (the exporter's --ext4slower.allow-syscall-rung)";

/// Operations by `op::*`, as the exporter and `--json` name them.
pub const OPERATIONS: [&str; 4] = ["read", "write", "open", "fsync"];

/// The labels of a key of the keyed histograms, an operation, as the
/// exporter and `--histogram` name it.
pub fn key_labels(op: u64) -> Vec<(&'static str, String)> {
    vec![("operation", OPERATIONS.get(op as usize).copied().unwrap_or("unknown").to_owned())]
}

/// The configuration, the rungs best first, and the map sizes.
pub fn plan(
    options: &Options,
    btf: BtfSource<'_>,
    load_options: &LoadOptions,
    path: &EventPath,
) -> Result<Plan<Config>> {
    let fs = options.fs;
    let btf = btf
        .as_ref()
        .map_err(|err| anyhow::anyhow!("{err}"))
        .context("the file behind an operation is read through kernel BTF offsets")?;
    let mut config = Config {
        min_ns: options.min_ms.saturating_mul(1_000_000),
        target_tgid: options.pid.unwrap_or(0),
        histogram_unit_ns: options.histogram_unit_ns.unwrap_or(0),
        own_tgid: std::process::id(),
        magic: fs.magic,
        task: offsets::task(btf)?,
        file: offsets::file(btf)?,
        kiocb_filp: btf.member_any("kiocb", &["ki_filp"])?.offset,
        kiocb_pos: btf.member_any("kiocb", &["ki_pos"])?.offset,
        ..Config::default()
    };
    config.cgroup = crate::cgroup::events_walk(options.cgroup, options.containers, Some(btf))?;
    let functions = [(fs.read, op::READ), (fs.write, op::WRITE), (fs.open, op::OPEN), (fs.sync, op::SYNC)];
    let program = |op: u32, of: [&'static str; 4]| of[op as usize];

    // fentry names its function by its id in the kernel's own BTF: a
    // filesystem built as a module has its functions in the module's BTF,
    // which aya 0.14 cannot attach to.
    let no_fentry = match btf.function_id(fs.read) {
        _ if load_options.btf.is_some() || load_options.hide_kernel_btf => {
            Some("fentry needs the kernel's own BTF".to_owned())
        }
        None => Some(format!(
            "{} is not in the kernel's BTF ({} is a module: aya 0.14 attaches fentry to vmlinux functions only)",
            fs.read, fs.name
        )),
        Some(id) => loader::fentry_allowed(id).err(),
    };
    let mut fentry = Rung::new("fentry");
    for (function, op) in functions {
        let entry = [programs::FENTRY_READ, programs::FENTRY_WRITE, programs::FENTRY_OPEN, programs::FENTRY_SYNC];
        let exit = [programs::FEXIT_READ, programs::FEXIT_WRITE, programs::FEXIT_OPEN, programs::FEXIT_SYNC];
        fentry = fentry
            .program(program(op, exit), Attach::fexit(function))
            .program(program(op, entry), Attach::fentry(function));
    }
    let mut kprobe = Rung::new("kprobe");
    for (function, op) in functions {
        let entry = [programs::KP_READ, programs::KP_WRITE, programs::KP_OPEN, programs::KP_SYNC];
        let exit = [programs::KRET_READ, programs::KRET_WRITE, programs::KRET_OPEN, programs::KRET_SYNC];
        kprobe = kprobe
            .program(program(op, exit), Attach::kretprobe(&[function]))
            .program(program(op, entry), Attach::kprobe(&[function]));
    }
    let allowed = options.allow_syscall_rung || load_options.rung.as_deref() == Some("syscall");
    let syscalls = syscall_rung(&mut config).unusable_if((!allowed).then(|| SYSCALL_TAX.to_owned()));
    let kprobe = kprobe.unusable_if(super::current_task_refused(
        path.build,
        crate::cgroup::task_flag(options.cgroup, options.containers),
    ));
    let rungs = vec![fentry.unusable_if(no_fentry), kprobe, syscalls];
    let mut plan = Plan::new(ebpf_object!("fsslower"), path.build, config, rungs);
    plan.map_sizes = path.max_entries();
    Ok(plan)
}

/// The syscall tracepoints that exist on this kernel: every exit first (an
/// operation started before its exit is watched would stay in the table),
/// then the entries.
fn syscall_rung(config: &mut Config) -> Rung {
    let mut rung = Rung::new("syscall");
    let mut layout = || -> Result<()> {
        let field = |syscall: &str, name: &str| {
            tracefs::Format::read("syscalls", syscall).and_then(|f| f.field(name)).map(|(offset, _)| offset)
        };
        config.tp_fd = field("sys_enter_read", "fd")?;
        config.tp_pos = field("sys_enter_pread64", "pos")?;
        config.tp_ret = field("sys_exit_read", "ret")?;
        // Every syscall of a program must put its fields where it reads them.
        let (fd, pos, ret) = (config.tp_fd, config.tp_pos, config.tp_ret);
        for (program, syscalls) in SYSCALLS {
            for syscall in syscalls.iter().filter(|s| exists(s)) {
                if *program != programs::SYS_OPEN && field(&format!("sys_enter_{syscall}"), "fd")? != fd {
                    bail!("sys_enter_{syscall} has its fd elsewhere");
                }
                let offset_name =
                    if syscall.starts_with("preadv") || syscall.starts_with("pwritev") { "pos_l" } else { "pos" };
                if [programs::SYS_PREAD, programs::SYS_PWRITE].contains(program)
                    && field(&format!("sys_enter_{syscall}"), offset_name)? != pos
                {
                    bail!("sys_enter_{syscall} has its offset elsewhere");
                }
                if field(&format!("sys_exit_{syscall}"), "ret")? != ret {
                    bail!("sys_exit_{syscall} has its ret elsewhere");
                }
            }
        }
        Ok(())
    };
    if let Err(err) = layout() {
        return rung.unusable_if(Some(format!("syscall records: {err:#}")));
    }
    let present: Vec<(&str, &str)> = SYSCALLS
        .iter()
        .flat_map(|(program, syscalls)| syscalls.iter().map(move |s| (*program, *s)))
        .filter(|(_, syscall)| exists(syscall))
        .collect();
    for (_, syscall) in &present {
        rung = rung.program(programs::SYS_EXIT, Attach::tracepoint("syscalls", &format!("sys_exit_{syscall}")));
    }
    for (program, syscall) in &present {
        rung = rung.program(*program, Attach::tracepoint("syscalls", &format!("sys_enter_{syscall}")));
    }
    rung
}

/// Whether this kernel has the syscall's tracepoints (openat2 came in 5.6,
/// preadv2 in 4.6).
fn exists(syscall: &str) -> bool {
    tracefs::root().is_ok_and(|root| root.join(format!("events/syscalls/sys_enter_{syscall}")).is_dir())
}
