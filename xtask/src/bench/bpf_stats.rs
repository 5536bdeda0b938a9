//! The kernel's own account of BPF program run time (`kernel.bpf_stats_enabled`):
//! run count and nanoseconds per loaded program, read with the bpf syscall.
//! The profile behind the overhead figures: what each program costs per
//! run, apart from the tracer's user-space work.

use std::{collections::BTreeMap, fs};

use anyhow::{Context as _, Result};

const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Offsets in `struct bpf_prog_info` (stable UAPI).
const INFO_NAME: usize = 64;
const INFO_RUN_TIME_NS: usize = 192;
const INFO_RUN_CNT: usize = 200;

/// One program's counters.
#[derive(Clone, Debug)]
pub struct ProgStats {
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> libc::c_long {
    // SAFETY: attr is a zero-padded union buffer as large as the kernel reads.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

/// Every loaded program's counters, by id.
pub fn snapshot() -> BTreeMap<u32, ProgStats> {
    let mut all = BTreeMap::new();
    let mut id = 0u32;
    loop {
        let mut attr = [0u8; 128];
        attr[..4].copy_from_slice(&id.to_ne_bytes());
        if bpf(BPF_PROG_GET_NEXT_ID, &mut attr) < 0 {
            return all;
        }
        id = u32::from_ne_bytes(attr[4..8].try_into().unwrap());
        let mut attr = [0u8; 128];
        attr[..4].copy_from_slice(&id.to_ne_bytes());
        let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr);
        if fd < 0 {
            continue; // unloaded meanwhile
        }
        let mut info = [0u8; 256];
        let mut attr = [0u8; 128];
        attr[..4].copy_from_slice(&(fd as u32).to_ne_bytes());
        attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
        let ok = bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) == 0;
        // SAFETY: closes the descriptor just opened.
        unsafe { libc::close(fd as i32) };
        if ok {
            let u64_at = |at: usize| u64::from_ne_bytes(info[at..at + 8].try_into().unwrap());
            let name = &info[INFO_NAME..INFO_NAME + 16];
            let name = String::from_utf8_lossy(&name[..name.iter().position(|&b| b == 0).unwrap_or(16)]).into_owned();
            all.insert(id, ProgStats { name, run_time_ns: u64_at(INFO_RUN_TIME_NS), run_cnt: u64_at(INFO_RUN_CNT) });
        }
    }
}

/// Programs that ran between two snapshots, with the runs and time in between.
pub fn delta(before: &BTreeMap<u32, ProgStats>, after: &BTreeMap<u32, ProgStats>) -> Vec<ProgStats> {
    after
        .iter()
        .filter_map(|(id, now)| {
            let (time0, cnt0) = before.get(id).map(|b| (b.run_time_ns, b.run_cnt)).unwrap_or((0, 0));
            let runs = now.run_cnt.saturating_sub(cnt0);
            (runs > 0).then(|| ProgStats {
                name: now.name.clone(),
                run_time_ns: now.run_time_ns.saturating_sub(time0),
                run_cnt: runs,
            })
        })
        .collect()
}

/// Turns the kernel's run-time accounting on until dropped (then restores
/// the previous setting). It costs two clock reads per run, so the
/// overhead runs are made without it.
pub struct Enabled(String);

impl Enabled {
    pub fn new() -> Result<Self> {
        let previous = fs::read_to_string(STATS_SYSCTL).context("reading kernel.bpf_stats_enabled")?;
        fs::write(STATS_SYSCTL, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(Enabled(previous.trim().to_owned()))
    }
}

impl Drop for Enabled {
    fn drop(&mut self) {
        let _ = fs::write(STATS_SYSCTL, &self.0);
    }
}
