//! What a tool loses, by reason: what its kernel side counted (`Drops`),
//! and the runs of its programs the kernel skipped. A program is not run
//! while it, or on older hooks any BPF program, is already running on the
//! same CPU (a softirq's TCP state change landing while the program runs
//! for a process's one); the event is lost, and the kernel says so only in
//! the program's `recursion_misses` (`struct bpf_prog_info`, Linux 5.12+,
//! for trampolines; kprobes, tracepoints and raw tracepoints fill it in
//! since 6.7). Read
//! here so those losses are counted with the others, never silent.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::{programs::ProgramFd, Ebpf};
use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
use tools_common::Drops;

/// How a loss note names the skipped runs.
pub const SKIPPED: &str = "skipped by the kernel (a BPF program was already running on that CPU)";

/// Each reason for a loss, as the JSON `lost` record and the exporter's
/// `reason` label name it, with its count.
pub fn reasons(drops: &Drops, skipped: u64) -> [(&'static str, u64); 5] {
    [
        ("inflight_table_full", drops.inflight_full),
        ("histogram_table_full", drops.hist_full),
        ("read_failed", drops.read_failed),
        ("output_failed", drops.output_failed),
        ("recursion_miss", skipped),
    ]
}

/// The programs of the rung taken, and how many skipped runs of each were
/// reported (by default, no programs).
#[derive(Default)]
pub struct SkippedRuns {
    /// Our own descriptors of the programs (duplicates: the tool's object
    /// keeps its own, and may be taken apart by its reader), each with its
    /// count when last read.
    programs: Vec<(ProgramFd, u64)>,
}

impl SkippedRuns {
    /// Follows the programs `names` of `ebpf` (those loaded; others are
    /// left out). A program attached to several hooks is named once per
    /// hook, and followed once.
    pub fn of<'a>(ebpf: &Ebpf, names: impl IntoIterator<Item = &'a str>) -> SkippedRuns {
        let names: std::collections::BTreeSet<&str> = names.into_iter().collect();
        let programs: Vec<(ProgramFd, u64)> =
            names.into_iter().filter_map(|name| Some((ebpf.program(name)?.fd().ok()?.try_clone().ok()?, 0))).collect();
        match programs.first().map(|(fd, _)| prog_info(fd)) {
            Some(Some(info)) if info.counts_misses => log::info!(
                "runs the kernel skips (recursion_misses) are counted as lost, as far as it reports them \
                 (kprobes, tracepoints and raw tracepoints since Linux 6.7)"
            ),
            Some(_) => log::info!(
                "this kernel does not say which runs it skips (bpf_prog_info.recursion_misses, Linux 5.12+): \
                 those losses cannot be counted"
            ),
            None => {}
        }
        SkippedRuns { programs }
    }

    /// Every skipped run of the programs since they were loaded (0 where
    /// the kernel does not count them).
    pub fn total(&self) -> u64 {
        self.programs.iter().filter_map(|(fd, _)| prog_info(fd)).map(|info| info.misses).sum()
    }

    /// The skipped runs since the last call. A program that cannot be read
    /// now keeps its last count, so nothing is counted twice.
    pub fn since_last(&mut self) -> u64 {
        let mut new = 0;
        for (fd, reported) in &mut self.programs {
            if let Some(info) = prog_info(fd) {
                new += info.misses.saturating_sub(*reported);
                *reported = info.misses.max(*reported);
            }
        }
        new
    }
}

struct ProgInfo {
    /// Whether this kernel's `bpf_prog_info` has `recursion_misses`.
    counts_misses: bool,
    misses: u64,
}

/// A program's `bpf_prog_info`, as far as this kernel fills it in. None
/// where the kernel has no BPF_OBJ_GET_INFO_BY_FD (before 4.13).
fn prog_info(program: &ProgramFd) -> Option<ProgInfo> {
    // SAFETY: both are plain C structs, valid all zero.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = program.as_fd().as_raw_fd() as u32;
    attr.info.info_len = size_of::<bpf_prog_info>() as u32;
    attr.info.info = (&raw mut info) as u64;
    // SAFETY: `attr` points at `info`, which lives through the call and is
    // as long as `info_len` says; the kernel writes at most that much. (A
    // kernel whose struct is shorter accepts ours: its tail is zero.)
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &raw mut attr,
            size_of::<bpf_attr>(),
        )
    };
    if ret != 0 {
        return None;
    }
    // The kernel says how much of the struct it knows.
    // SAFETY: the union's `info` member was written above and by the kernel.
    let known = unsafe { attr.info.info_len } as usize;
    let end = std::mem::offset_of!(bpf_prog_info, recursion_misses) + size_of::<u64>();
    Some(ProgInfo { counts_misses: known >= end, misses: info.recursion_misses })
}
