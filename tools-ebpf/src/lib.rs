//! Kernel-side helpers shared by every tool: struct reads at offsets
//! resolved in user space, the maps every tool declares (configuration,
//! counters, histograms, events, work in flight), and the names user space
//! finds them by.
//!
//! Each tool's object is built twice (see `tools-user/build.rs`):
//!
//! - **modern** (Linux 5.8+): configuration in a read-only global, events
//!   on the BPF ring buffer, counters and histograms in per-CPU maps;
//! - **legacy** (feature `legacy`, down to Linux 4.4): configuration in a
//!   one-entry array map, events on a perf event array, counters and
//!   histograms in plain array and hash maps added to atomically (`XADD`),
//!   compiled for the original BPF instruction set (no `JLT`, 4.14).
//!
//! The map types below hide the difference, so a tool's programs are
//! written once. Helpers are plain functions over the maps they use: each
//! tool declares its own maps (so an object holds only what its programs
//! need), and once inlined the map references are constants, as the
//! verifier wants.
#![no_std]
// Inline assembly for the legacy build's atomic adds (see `maps::add_shared`).
#![feature(asm_experimental_arch)]

pub use tools_ebpf_macros::{config, named};

pub mod maps;

use aya_ebpf::{bindings::pt_regs, helpers::bpf_probe_read_kernel};
use tools_common::{
    offsets::{FileOffsets, TaskOffsets},
    CgroupFilter,
};

/// Whether this object is the legacy build (see the crate's documentation).
pub const LEGACY: bool = cfg!(feature = "legacy");

/// Reads a `T` at `offset` bytes into a kernel struct. Offsets come from the
/// running kernel's BTF via the tool's configuration, never from literals.
#[inline(always)]
pub fn read_field<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copes with any address.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T).ok() }
}

/// The `struct file` behind descriptor `fd` of `task`: `task->files->fdt`,
/// bounds-checked against the table's `max_fds`, then `fd[fd]`.
#[inline(always)]
pub fn file_of_fd(task: *const u8, fd: i64, t: &TaskOffsets, f: &FileOffsets) -> Option<*const u8> {
    let files: *const u8 = read_field(task, t.files)?;
    let fdt: *const u8 = read_field(files, f.files_fdt)?;
    let max_fds: u32 = read_field(fdt, f.fdt_max_fds)?;
    if fd < 0 || fd >= max_fds as i64 {
        return None;
    }
    let fds: *const u8 = read_field(fdt, f.fdt_fd)?;
    let file: *const u8 = read_field(fds, (fd as u32).wrapping_mul(8))?;
    (!file.is_null()).then_some(file)
}

/// At a function's entry (a uprobe's registers), the frame its caller
/// made: the stack pointer and the return address, which together tell a
/// nested call from the next one. x86-64's `call` pushed the return
/// address where the stack pointer points; arm64's `bl` left it in the
/// link register, x30.
#[inline(always)]
pub fn entry_frame(regs: *const pt_regs) -> (u64, u64) {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: the probe's own registers, which the kernel passes.
        let sp = unsafe { (*regs).rsp };
        // SAFETY: bpf_probe_read_user copes with any address.
        let ret_addr = unsafe { aya_ebpf::helpers::bpf_probe_read_user(sp as *const u64) }.unwrap_or(0);
        (sp, ret_addr)
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        // SAFETY: as above.
        unsafe { ((*regs).sp, (*regs).regs[30]) }
    }
}

/// Whether `task` is in the `-c` cgroup or below it: its cgroup v2
/// directory's kernfs node or one of its ancestors (up to 16 levels up)
/// has the target's inode number. Unrolled by hand: kernels before 5.3
/// reject loops.
#[inline(always)]
#[allow(unused_assignments)] // the last level's step up is never read
pub fn task_in_cgroup(task: *const u8, filter: &CgroupFilter) -> bool {
    if filter.ino == 0 {
        return true;
    }
    let mut kn = task_cgroup_node(task, filter).unwrap_or(core::ptr::null());
    macro_rules! level {
        () => {
            if kn.is_null() {
                return false;
            }
            if read_field::<u32>(kn, filter.kn_id) == Some(filter.ino) {
                return true;
            }
            kn = read_field::<*const u8>(kn, filter.kn_parent).unwrap_or(core::ptr::null());
        };
    }
    macro_rules! four_levels {
        () => {
            level!();
            level!();
            level!();
            level!();
        };
    }
    four_levels!();
    four_levels!();
    four_levels!();
    four_levels!();
    false
}

/// The kernfs node of `task`'s cgroup v2 directory (through `walk`'s
/// offsets; its `ino` is not read).
#[inline(always)]
fn task_cgroup_node(task: *const u8, walk: &CgroupFilter) -> Option<*const u8> {
    let css_set = read_field::<*const u8>(task, walk.task_cgroups)?;
    let cgroup = read_field::<*const u8>(css_set, walk.css_set_dfl_cgrp)?;
    read_field::<*const u8>(cgroup, walk.cgroup_kn).filter(|kn| !kn.is_null())
}

/// The inode number of `task`'s cgroup v2 directory (as stat(2) gives it
/// in /sys/fs/cgroup), through `walk`'s offsets.
#[inline(always)]
pub fn task_cgroup_ino(task: *const u8, walk: &CgroupFilter) -> Option<u32> {
    read_field::<u32>(task_cgroup_node(task, walk)?, walk.kn_id)
}

/// An event's `cgroup` field: the current task's cgroup v2 inode (the low
/// 32 bits, as [`task_cgroup_ino`]) when `walk.report` asks for it
/// (`--containers`), else 0. `READS_TASK`: whether the program may read
/// the current task, as for `-c` (`bpf_get_current_task` is 4.8: the legacy
/// build's programs for Linux 4.4 may not, and user space refuses
/// `--containers` on their rungs).
#[inline(always)]
pub fn reported_cgroup<const READS_TASK: bool>(walk: &CgroupFilter) -> u32 {
    if !READS_TASK || walk.report == 0 {
        return 0;
    }
    // SAFETY: a helper without arguments.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() } as *const u8;
    task_cgroup_ino(task, walk).unwrap_or(0)
}

/// Whether an item's identifier is `name` (its shared constant): checked
/// at compile time by [`named`].
pub const fn is_named(ident: &str, name: &str) -> bool {
    let (a, b) = (ident.as_bytes(), name.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
