//! ext4slower (and its siblings for other filesystems): reads, writes,
//! opens and fsyncs slower than a threshold, with the file's name.
//!
//! Rungs, best first: fentry/fexit on the filesystem's `read_iter`,
//! `write_iter`, `open` and `fsync` functions (BCC's semantics: the
//! filesystem's own time), kprobe/kretprobe on the same functions, and the
//! syscall tracepoints of read, write, open and fsync, whose descriptor
//! leads to the file through the task's descriptor table, kept when its
//! super block is the filesystem's (the whole syscall is timed). The
//! threshold is applied here: fast operations never reach user space.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod bpf {
    #[cfg(not(feature = "legacy"))]
    use core::mem::offset_of;

    #[cfg(not(feature = "legacy"))]
    use aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes;
    use aya_ebpf::{
        helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns},
        macros::{fentry, fexit, kprobe, kretprobe, map, tracepoint},
        programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
        EbpfContext,
    };
    use tools_common::fsslower::{op, programs, Config, FileOpEventOf, Start};
    #[cfg(not(feature = "legacy"))]
    use tools_common::fsslower::{FileOpEvent, NAME_SIZE};
    #[cfg(feature = "legacy")]
    use tools_common::fsslower::{LegacyFileOpEvent, LEGACY_NAME_SIZE};
    #[cfg(feature = "legacy")]
    use tools_ebpf::maps::emit_value;
    #[cfg(not(feature = "legacy"))]
    use tools_ebpf::maps::{emit_prefix, Scratch};
    use tools_ebpf::{
        config, event_maps, file_of_fd,
        maps::{Configuration, Starts},
        named, read_field,
    };

    #[config]
    static CONFIG: Configuration<Config> = Configuration::new();

    // DROPS, EVENTS, and KEYED_HIST: the histograms by operation of the
    // exporter and --histogram (`Config::histogram_unit_ns`).
    event_maps!();

    /// Operations in flight: by thread and operation on the function rungs
    /// (an O_SYNC write's fsync nests inside it), by thread on the syscall
    /// rung. A full table is counted as lost.
    #[map]
    static STARTS: Starts<u64, Start> = Starts::with_max_entries(10240);

    /// Where an event is built: too large for the BPF stack.
    #[cfg(not(feature = "legacy"))]
    #[map]
    static SCRATCH: Scratch<FileOpEvent> = Scratch::new();

    type Ptr = *const u8;

    /// Not the tool itself; `-p`; and `-c` where `CGROUP`: the current
    /// task's cgroup, which Linux 4.4 cannot read (`bpf_get_current_task`
    /// is 4.8). The legacy build's kprobes leave it out, and user space
    /// refuses -c there.
    #[inline(always)]
    fn wanted_task<const CGROUP: bool>(config: &Config) -> bool {
        let (target, tgid) = (config.target_tgid, (bpf_get_current_pid_tgid() >> 32) as u32);
        if tgid == config.own_tgid || (target != 0 && tgid != target) {
            return false;
        }
        !CGROUP || tools_ebpf::task_in_cgroup(unsafe { bpf_get_current_task() } as Ptr, &config.cgroup)
    }

    /// Whether the kprobes filter by cgroup: not in the legacy build.
    const KPROBES_READ_THE_TASK: bool = !tools_ebpf::LEGACY;

    #[inline(always)]
    fn tid() -> u64 {
        bpf_get_current_pid_tgid() & 0xffff_ffff
    }

    #[inline(always)]
    fn start<const CGROUP: bool>(config: &Config, key: u64, file: Ptr, offset: i64, op: u32) {
        let cgroup = tools_ebpf::reported_cgroup::<CGROUP>(&config.cgroup);
        let start = Start { ts_ns: unsafe { bpf_ktime_get_ns() }, file: file as u64, offset, op, cgroup };
        STARTS.begin(&DROPS, &key, &start);
    }

    /// An operation that returned `ret`: reported if slower than the threshold.
    #[inline(always)]
    fn finish<C: EbpfContext>(ctx: &C, config: &Config, started: &Start, file: Ptr, ret: i64) {
        let now = unsafe { bpf_ktime_get_ns() };
        let latency = now.saturating_sub(started.ts_ns);
        if config.histogram_unit_ns != 0 {
            return KEYED_HIST.record_with_sum(&DROPS, started.op as u64, latency, config.histogram_unit_ns);
        }
        if latency <= config.min_ns {
            return;
        }
        let id = bpf_get_current_pid_tgid();
        let inode: Ptr = read_field(file, config.file.f_inode).unwrap_or(core::ptr::null());
        let sb: Ptr = read_field(inode, config.file.inode_sb).unwrap_or(core::ptr::null());
        let dentry: Ptr = read_field(file, config.file.f_dentry).unwrap_or(core::ptr::null());
        let name: Ptr = read_field(dentry, config.file.dentry_name).unwrap_or(core::ptr::null());
        let fill = |ev: &mut FileOpEventOf<_>| {
            ev.end_ns = now;
            ev.latency_ns = latency;
            ev.offset = started.offset;
            ev.bytes = ret;
            ev.pid = (id >> 32) as u32;
            ev.tid = id as u32;
            ev.op = started.op;
            ev.comm = bpf_get_current_comm().unwrap_or_default();
            ev.ino = read_field(inode, config.file.inode_ino).unwrap_or(0);
            ev.dev = read_field(sb, config.file.sb_dev).unwrap_or(0);
            ev.cgroup = started.cgroup;
        };
        // The modern build sends the name's bytes, up to NAME_MAX, from a
        // per-CPU event; the legacy build a fixed-size read of the name's
        // start, as BCC did, from an event on the stack (Linux 4.4).
        #[cfg(not(feature = "legacy"))]
        {
            let Some(ev) = SCRATCH.get() else { return };
            fill(ev);
            ev.name_len = match unsafe { bpf_probe_read_kernel_str_bytes(name, &mut ev.name) } {
                Ok(bytes) => bytes.len() as u32,
                Err(_) => 0,
            };
            let len = offset_of!(FileOpEvent, name) + (ev.name_len as usize & (NAME_SIZE - 1));
            emit_prefix(ctx, &EVENTS, &DROPS, ev, len);
        }
        #[cfg(feature = "legacy")]
        {
            let mut ev: LegacyFileOpEvent = unsafe { core::mem::zeroed() };
            fill(&mut ev);
            if let Some(bytes) = read_field(name, 0) {
                ev.name = bytes;
                ev.name_len = LEGACY_NAME_SIZE as u32;
            }
            emit_value(ctx, &EVENTS, &DROPS, &ev);
        }
    }

    /// The operation `op` of this thread that began on a function rung.
    #[inline(always)]
    fn finish_call<C: EbpfContext>(ctx: &C, op: u32, ret: i64) {
        let Some(config) = CONFIG.get() else { return };
        let Some(started) = STARTS.end(&(tid() | (op as u64) << 32)) else { return };
        finish(ctx, config, &started, started.file as Ptr, ret);
    }

    #[inline(always)]
    fn start_call<const CGROUP: bool>(op: u32, file: Ptr, offset: i64) {
        if let Some(config) = CONFIG.get().filter(|config| wanted_task::<CGROUP>(config)) {
            start::<CGROUP>(config, tid() | (op as u64) << 32, file, offset, op);
        }
    }

    /// `read_iter(iocb, to)` and `write_iter(iocb, from)`: the file and the
    /// starting offset are the kiocb's.
    #[inline(always)]
    fn start_iter<const CGROUP: bool>(op: u32, iocb: Ptr) {
        let Some(config) = CONFIG.get() else { return };
        let file = read_field(iocb, config.kiocb_filp).unwrap_or(core::ptr::null());
        start_call::<CGROUP>(op, file, read_field(iocb, config.kiocb_pos).unwrap_or(0));
    }

    // ---- fentry/fexit ----

    #[named(programs::FENTRY_READ)]
    #[fentry]
    pub fn fsslower_fentry_read(ctx: FEntryContext) -> i32 {
        start_iter::<true>(op::READ, ctx.arg(0));
        0
    }

    #[named(programs::FENTRY_WRITE)]
    #[fentry]
    pub fn fsslower_fentry_write(ctx: FEntryContext) -> i32 {
        start_iter::<true>(op::WRITE, ctx.arg(0));
        0
    }

    /// `open(inode, file)`.
    #[named(programs::FENTRY_OPEN)]
    #[fentry]
    pub fn fsslower_fentry_open(ctx: FEntryContext) -> i32 {
        start_call::<true>(op::OPEN, ctx.arg(1), 0);
        0
    }

    /// `fsync(file, start, end, datasync)`.
    #[named(programs::FENTRY_SYNC)]
    #[fentry]
    pub fn fsslower_fentry_sync(ctx: FEntryContext) -> i32 {
        start_call::<true>(op::SYNC, ctx.arg(0), 0);
        0
    }

    // fexit sees the arguments, then the return value (as the next one).
    #[named(programs::FEXIT_READ)]
    #[fexit]
    pub fn fsslower_fexit_read(ctx: FExitContext) -> i32 {
        finish_call(&ctx, op::READ, ctx.arg::<i64>(2));
        0
    }

    #[named(programs::FEXIT_WRITE)]
    #[fexit]
    pub fn fsslower_fexit_write(ctx: FExitContext) -> i32 {
        finish_call(&ctx, op::WRITE, ctx.arg::<i64>(2));
        0
    }

    #[named(programs::FEXIT_OPEN)]
    #[fexit]
    pub fn fsslower_fexit_open(ctx: FExitContext) -> i32 {
        finish_call(&ctx, op::OPEN, ctx.arg::<i32>(2) as i64);
        0
    }

    #[named(programs::FEXIT_SYNC)]
    #[fexit]
    pub fn fsslower_fexit_sync(ctx: FExitContext) -> i32 {
        finish_call(&ctx, op::SYNC, ctx.arg::<i32>(4) as i64);
        0
    }

    // ---- kprobe/kretprobe ----

    #[named(programs::KP_READ)]
    #[kprobe]
    pub fn fsslower_kp_read(ctx: ProbeContext) -> u32 {
        start_iter::<KPROBES_READ_THE_TASK>(op::READ, ctx.arg(0).unwrap_or(core::ptr::null()));
        0
    }

    #[named(programs::KP_WRITE)]
    #[kprobe]
    pub fn fsslower_kp_write(ctx: ProbeContext) -> u32 {
        start_iter::<KPROBES_READ_THE_TASK>(op::WRITE, ctx.arg(0).unwrap_or(core::ptr::null()));
        0
    }

    #[named(programs::KP_OPEN)]
    #[kprobe]
    pub fn fsslower_kp_open(ctx: ProbeContext) -> u32 {
        start_call::<KPROBES_READ_THE_TASK>(op::OPEN, ctx.arg(1).unwrap_or(core::ptr::null()), 0);
        0
    }

    #[named(programs::KP_SYNC)]
    #[kprobe]
    pub fn fsslower_kp_sync(ctx: ProbeContext) -> u32 {
        start_call::<KPROBES_READ_THE_TASK>(op::SYNC, ctx.arg(0).unwrap_or(core::ptr::null()), 0);
        0
    }

    // ssize_t for reads and writes; an int (sign-extended) for open and fsync.
    #[named(programs::KRET_READ)]
    #[kretprobe]
    pub fn fsslower_kret_read(ctx: RetProbeContext) -> u32 {
        finish_call(&ctx, op::READ, ctx.ret::<i64>());
        0
    }

    #[named(programs::KRET_WRITE)]
    #[kretprobe]
    pub fn fsslower_kret_write(ctx: RetProbeContext) -> u32 {
        finish_call(&ctx, op::WRITE, ctx.ret::<i64>());
        0
    }

    #[named(programs::KRET_OPEN)]
    #[kretprobe]
    pub fn fsslower_kret_open(ctx: RetProbeContext) -> u32 {
        finish_call(&ctx, op::OPEN, ctx.ret::<i32>() as i64);
        0
    }

    #[named(programs::KRET_SYNC)]
    #[kretprobe]
    pub fn fsslower_kret_sync(ctx: RetProbeContext) -> u32 {
        finish_call(&ctx, op::SYNC, ctx.ret::<i32>() as i64);
        0
    }

    // ---- Syscall tracepoints ----

    /// Whether `file` lives on the traced filesystem: its super block's magic.
    #[inline(always)]
    fn on_our_fs(config: &Config, file: Ptr) -> bool {
        let inode: Ptr = read_field(file, config.file.f_inode).unwrap_or(core::ptr::null());
        let sb: Ptr = read_field(inode, config.file.inode_sb).unwrap_or(core::ptr::null());
        read_field::<u64>(sb, config.file.sb_magic) == Some(config.magic as u64)
    }

    /// A read, write or fsync syscall on descriptor `fd`: tracked only when
    /// the file is on the traced filesystem. Every other file of the machine
    /// costs this walk and a compare, and no map update. The offset is the
    /// syscall's own, else the file position (0 for fsync, as BCC's).
    #[inline(always)]
    fn sys_enter_fd(ctx: &TracePointContext, op: u32, with_offset: bool) {
        let Some(config) = CONFIG.get().filter(|config| wanted_task::<true>(config)) else { return };
        let Ok(fd) = (unsafe { ctx.read_at::<i64>(config.tp_fd as usize) }) else { return };
        let task = unsafe { bpf_get_current_task() } as Ptr;
        let Some(file) = file_of_fd(task, fd, &config.task, &config.file) else { return };
        if !on_our_fs(config, file) {
            return;
        }
        // The offset argument, where there is one and it is not -1 (preadv2's "current position").
        let given = if with_offset { unsafe { ctx.read_at::<i64>(config.tp_pos as usize) }.unwrap_or(-1) } else { -1 };
        let offset = match (given, op) {
            (0.., _) => given,
            (_, op::SYNC) => 0,
            _ => read_field(file, config.file.f_pos).unwrap_or(0),
        };
        start::<true>(config, tid(), file, offset, op);
    }

    #[named(programs::SYS_READ)]
    #[tracepoint]
    pub fn fsslower_sys_read(ctx: TracePointContext) -> u32 {
        sys_enter_fd(&ctx, op::READ, false);
        0
    }

    #[named(programs::SYS_PREAD)]
    #[tracepoint]
    pub fn fsslower_sys_pread(ctx: TracePointContext) -> u32 {
        sys_enter_fd(&ctx, op::READ, true);
        0
    }

    #[named(programs::SYS_WRITE)]
    #[tracepoint]
    pub fn fsslower_sys_write(ctx: TracePointContext) -> u32 {
        sys_enter_fd(&ctx, op::WRITE, false);
        0
    }

    #[named(programs::SYS_PWRITE)]
    #[tracepoint]
    pub fn fsslower_sys_pwrite(ctx: TracePointContext) -> u32 {
        sys_enter_fd(&ctx, op::WRITE, true);
        0
    }

    #[named(programs::SYS_SYNC)]
    #[tracepoint]
    pub fn fsslower_sys_sync(ctx: TracePointContext) -> u32 {
        sys_enter_fd(&ctx, op::SYNC, false);
        0
    }

    /// An open: which file it is, and so whether it counts, is known at exit.
    #[named(programs::SYS_OPEN)]
    #[tracepoint]
    pub fn fsslower_sys_open(_ctx: TracePointContext) -> u32 {
        if let Some(config) = CONFIG.get().filter(|config| wanted_task::<true>(config)) {
            start::<true>(config, tid(), core::ptr::null(), 0, op::OPEN);
        }
        0
    }

    #[named(programs::SYS_EXIT)]
    #[tracepoint]
    pub fn fsslower_sys_exit(ctx: TracePointContext) -> u32 {
        if let Some(config) = CONFIG.get() {
            sys_exit(&ctx, config);
        }
        0
    }

    #[inline(always)]
    fn sys_exit(ctx: &TracePointContext, config: &Config) {
        let Some(started) = STARTS.end(&tid()) else { return };
        let Ok(ret) = (unsafe { ctx.read_at::<i64>(config.tp_ret as usize) }) else { return };
        let file = if started.op == op::OPEN {
            // A failed open never reached a filesystem's file.
            if ret < 0 {
                return;
            }
            let task = unsafe { bpf_get_current_task() } as Ptr;
            match file_of_fd(task, ret, &config.task, &config.file) {
                Some(file) if on_our_fs(config, file) => file,
                _ => return,
            }
        } else {
            started.file as Ptr
        };
        // An open's result is a descriptor, not bytes: 0, as the filesystem's open returns.
        let bytes = if started.op == op::OPEN { 0 } else { ret };
        finish(ctx, config, &started, file, bytes);
    }
}
