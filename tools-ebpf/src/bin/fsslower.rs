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
    use core::mem::offset_of;

    use aya_ebpf::{
        helpers::{
            bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
            bpf_probe_read_kernel_str_bytes,
        },
        macros::{fentry, kprobe, map, tracepoint},
        maps::{HashMap, PerCpuArray},
        programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
        EbpfContext,
    };
    use tools_common::fsslower::{op, programs, Config, FileOpEvent, Start, NAME_SIZE};
    use tools_ebpf::{
        check_name, config, count_drop, declare_config, emit, event_maps, event_programs, file_of_fd,
        keyed_histogram_map, read_field, record_keyed_with_sum,
    };

    declare_config!(Config);
    event_maps!(DROPS, EVENTS, EVENTS_PERF);
    keyed_histogram_map!(KEYED_HIST);

    /// Operations in flight: by thread and operation on the function rungs
    /// (an O_SYNC write's fsync nests inside it), by thread on the syscall
    /// rung. A full table is counted as lost.
    #[map]
    static STARTS: HashMap<u64, Start> = HashMap::with_max_entries(10240, 0);

    /// Where an event is built: too large for the BPF stack.
    #[map]
    static SCRATCH: PerCpuArray<FileOpEvent> = PerCpuArray::with_max_entries(1, 0);

    type Ptr = *const u8;

    /// `-p` and `-c`.
    #[inline(always)]
    fn wanted_task() -> bool {
        let target = config!(target_tgid);
        if target != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 != target {
            return false;
        }
        tools_ebpf::task_in_cgroup(unsafe { bpf_get_current_task() } as Ptr, &config!(cgroup))
    }

    #[inline(always)]
    fn tid() -> u64 {
        bpf_get_current_pid_tgid() & 0xffff_ffff
    }

    #[inline(always)]
    fn start(key: u64, file: Ptr, offset: i64, op: u32) {
        let start = Start { ts_ns: unsafe { bpf_ktime_get_ns() }, file: file as u64, offset, op, _pad: 0 };
        if STARTS.insert(&key, &start, 0).is_err() {
            count_drop(&DROPS, |d| &mut d.inflight_full);
        }
    }

    /// An operation that returned `ret`: reported if slower than the threshold.
    #[inline(always)]
    fn finish<const RING: bool, C: EbpfContext>(ctx: &C, started: &Start, file: Ptr, ret: i64) {
        let now = unsafe { bpf_ktime_get_ns() };
        let latency = now.saturating_sub(started.ts_ns);
        if config!(histograms) != 0 {
            return record_keyed_with_sum(&KEYED_HIST, &DROPS, started.op as u64, latency);
        }
        if latency <= config!(min_ns) {
            return;
        }
        let Some(ev) = SCRATCH.get_ptr_mut(0) else { return };
        // SAFETY: this CPU's scratch value.
        let ev = unsafe { &mut *ev };
        let id = bpf_get_current_pid_tgid();
        ev.end_ns = now;
        ev.latency_ns = latency;
        ev.offset = started.offset;
        ev.bytes = ret;
        ev.pid = (id >> 32) as u32;
        ev.tid = id as u32;
        ev.op = started.op;
        ev.comm = bpf_get_current_comm().unwrap_or_default();
        let inode: Ptr = read_field(file, config!(file.f_inode)).unwrap_or(core::ptr::null());
        ev.ino = read_field(inode, config!(file.inode_ino)).unwrap_or(0);
        let sb: Ptr = read_field(inode, config!(file.inode_sb)).unwrap_or(core::ptr::null());
        ev.dev = read_field(sb, config!(file.sb_dev)).unwrap_or(0);
        let dentry: Ptr = read_field(file, config!(file.f_dentry)).unwrap_or(core::ptr::null());
        let name: Ptr = read_field(dentry, config!(file.dentry_name)).unwrap_or(core::ptr::null());
        ev.name_len = match unsafe { bpf_probe_read_kernel_str_bytes(name, &mut ev.name) } {
            Ok(bytes) => bytes.len() as u32,
            Err(_) => 0,
        };
        let len = offset_of!(FileOpEvent, name) + (ev.name_len as usize & (NAME_SIZE - 1));
        let bytes = unsafe { core::slice::from_raw_parts(ev as *const FileOpEvent as *const u8, len) };
        emit::<RING, _>(ctx, &EVENTS, &EVENTS_PERF, &DROPS, bytes);
    }

    /// The operation `op` of this thread that began on a function rung.
    #[inline(always)]
    fn finish_call<const RING: bool, C: EbpfContext>(ctx: &C, op: u32, ret: i64) {
        let key = tid() | (op as u64) << 32;
        let Some(started) = (unsafe { STARTS.get(&key) }).copied() else { return };
        let _ = STARTS.remove(&key);
        finish::<RING, _>(ctx, &started, started.file as Ptr, ret);
    }

    #[inline(always)]
    fn start_call(op: u32, file: Ptr, offset: i64) {
        if wanted_task() {
            start(tid() | (op as u64) << 32, file, offset, op);
        }
    }

    /// `read_iter(iocb, to)` and `write_iter(iocb, from)`: the file and the
    /// starting offset are the kiocb's.
    #[inline(always)]
    fn start_iter(op: u32, iocb: Ptr) {
        let file = read_field(iocb, config!(kiocb_filp)).unwrap_or(core::ptr::null());
        start_call(op, file, read_field(iocb, config!(kiocb_pos)).unwrap_or(0));
    }

    // ---- fentry/fexit ----

    #[fentry]
    pub fn fsslower_fentry_read(ctx: FEntryContext) -> i32 {
        start_iter(op::READ, ctx.arg(0));
        0
    }
    check_name!(fsslower_fentry_read = programs::FENTRY_READ);

    #[fentry]
    pub fn fsslower_fentry_write(ctx: FEntryContext) -> i32 {
        start_iter(op::WRITE, ctx.arg(0));
        0
    }
    check_name!(fsslower_fentry_write = programs::FENTRY_WRITE);

    /// `open(inode, file)`.
    #[fentry]
    pub fn fsslower_fentry_open(ctx: FEntryContext) -> i32 {
        start_call(op::OPEN, ctx.arg(1), 0);
        0
    }
    check_name!(fsslower_fentry_open = programs::FENTRY_OPEN);

    /// `fsync(file, start, end, datasync)`.
    #[fentry]
    pub fn fsslower_fentry_sync(ctx: FEntryContext) -> i32 {
        start_call(op::SYNC, ctx.arg(0), 0);
        0
    }
    check_name!(fsslower_fentry_sync = programs::FENTRY_SYNC);

    // fexit sees the arguments, then the return value (as the next one).
    #[inline(always)]
    fn fexit_read<const RING: bool>(ctx: &FExitContext) {
        finish_call::<RING, _>(ctx, op::READ, ctx.arg::<i64>(2));
    }
    #[inline(always)]
    fn fexit_write<const RING: bool>(ctx: &FExitContext) {
        finish_call::<RING, _>(ctx, op::WRITE, ctx.arg::<i64>(2));
    }
    #[inline(always)]
    fn fexit_open<const RING: bool>(ctx: &FExitContext) {
        finish_call::<RING, _>(ctx, op::OPEN, ctx.arg::<i32>(2) as i64);
    }
    #[inline(always)]
    fn fexit_sync<const RING: bool>(ctx: &FExitContext) {
        finish_call::<RING, _>(ctx, op::SYNC, ctx.arg::<i32>(4) as i64);
    }

    event_programs!(fexit() fsslower_fexit_read / fsslower_fexit_read_perf(FExitContext) = programs::FEXIT_READ => fexit_read);
    event_programs!(fexit() fsslower_fexit_write / fsslower_fexit_write_perf(FExitContext) = programs::FEXIT_WRITE => fexit_write);
    event_programs!(fexit() fsslower_fexit_open / fsslower_fexit_open_perf(FExitContext) = programs::FEXIT_OPEN => fexit_open);
    event_programs!(fexit() fsslower_fexit_sync / fsslower_fexit_sync_perf(FExitContext) = programs::FEXIT_SYNC => fexit_sync);

    // ---- kprobe/kretprobe ----

    #[kprobe]
    pub fn fsslower_kp_read(ctx: ProbeContext) -> u32 {
        start_iter(op::READ, ctx.arg(0).unwrap_or(core::ptr::null()));
        0
    }
    check_name!(fsslower_kp_read = programs::KP_READ);

    #[kprobe]
    pub fn fsslower_kp_write(ctx: ProbeContext) -> u32 {
        start_iter(op::WRITE, ctx.arg(0).unwrap_or(core::ptr::null()));
        0
    }
    check_name!(fsslower_kp_write = programs::KP_WRITE);

    #[kprobe]
    pub fn fsslower_kp_open(ctx: ProbeContext) -> u32 {
        start_call(op::OPEN, ctx.arg(1).unwrap_or(core::ptr::null()), 0);
        0
    }
    check_name!(fsslower_kp_open = programs::KP_OPEN);

    #[kprobe]
    pub fn fsslower_kp_sync(ctx: ProbeContext) -> u32 {
        start_call(op::SYNC, ctx.arg(0).unwrap_or(core::ptr::null()), 0);
        0
    }
    check_name!(fsslower_kp_sync = programs::KP_SYNC);

    // ssize_t for reads and writes; an int (sign-extended) for open and fsync.
    #[inline(always)]
    fn kret_read<const RING: bool>(ctx: &RetProbeContext) {
        finish_call::<RING, _>(ctx, op::READ, ctx.ret::<i64>());
    }
    #[inline(always)]
    fn kret_write<const RING: bool>(ctx: &RetProbeContext) {
        finish_call::<RING, _>(ctx, op::WRITE, ctx.ret::<i64>());
    }
    #[inline(always)]
    fn kret_open<const RING: bool>(ctx: &RetProbeContext) {
        finish_call::<RING, _>(ctx, op::OPEN, ctx.ret::<i32>() as i64);
    }
    #[inline(always)]
    fn kret_sync<const RING: bool>(ctx: &RetProbeContext) {
        finish_call::<RING, _>(ctx, op::SYNC, ctx.ret::<i32>() as i64);
    }

    event_programs!(kretprobe() fsslower_kret_read / fsslower_kret_read_perf(RetProbeContext) = programs::KRET_READ => kret_read);
    event_programs!(kretprobe() fsslower_kret_write / fsslower_kret_write_perf(RetProbeContext) = programs::KRET_WRITE => kret_write);
    event_programs!(kretprobe() fsslower_kret_open / fsslower_kret_open_perf(RetProbeContext) = programs::KRET_OPEN => kret_open);
    event_programs!(kretprobe() fsslower_kret_sync / fsslower_kret_sync_perf(RetProbeContext) = programs::KRET_SYNC => kret_sync);

    // ---- Syscall tracepoints ----

    /// Whether `file` lives on the traced filesystem: its super block's magic.
    #[inline(always)]
    fn on_our_fs(file: Ptr) -> bool {
        let inode: Ptr = read_field(file, config!(file.f_inode)).unwrap_or(core::ptr::null());
        let sb: Ptr = read_field(inode, config!(file.inode_sb)).unwrap_or(core::ptr::null());
        read_field::<u64>(sb, config!(file.sb_magic)) == Some(config!(magic) as u64)
    }

    /// A read, write or fsync syscall on descriptor `fd`: tracked only when
    /// the file is on the traced filesystem. Every other file of the machine
    /// costs this walk and a compare, and no map update. The offset is the
    /// syscall's own, else the file position (0 for fsync, as BCC's).
    #[inline(always)]
    fn sys_enter_fd(ctx: &TracePointContext, op: u32, with_offset: bool) {
        if !wanted_task() {
            return;
        }
        let Ok(fd) = (unsafe { ctx.read_at::<i64>(config!(tp_fd) as usize) }) else { return };
        let task = unsafe { bpf_get_current_task() } as Ptr;
        let Some(file) = file_of_fd(task, fd, &config!(task), &config!(file)) else { return };
        if !on_our_fs(file) {
            return;
        }
        // The offset argument, where there is one and it is not -1 (preadv2's "current position").
        let given =
            if with_offset { unsafe { ctx.read_at::<i64>(config!(tp_pos) as usize) }.unwrap_or(-1) } else { -1 };
        let offset = match (given, op) {
            (0.., _) => given,
            (_, op::SYNC) => 0,
            _ => read_field(file, config!(file.f_pos)).unwrap_or(0),
        };
        start(tid(), file, offset, op);
    }

    #[tracepoint]
    pub fn fsslower_sys_read(ctx: TracePointContext) -> u32 {
        sys_enter_fd(&ctx, op::READ, false);
        0
    }
    check_name!(fsslower_sys_read = programs::SYS_READ);

    #[tracepoint]
    pub fn fsslower_sys_pread(ctx: TracePointContext) -> u32 {
        sys_enter_fd(&ctx, op::READ, true);
        0
    }
    check_name!(fsslower_sys_pread = programs::SYS_PREAD);

    #[tracepoint]
    pub fn fsslower_sys_write(ctx: TracePointContext) -> u32 {
        sys_enter_fd(&ctx, op::WRITE, false);
        0
    }
    check_name!(fsslower_sys_write = programs::SYS_WRITE);

    #[tracepoint]
    pub fn fsslower_sys_pwrite(ctx: TracePointContext) -> u32 {
        sys_enter_fd(&ctx, op::WRITE, true);
        0
    }
    check_name!(fsslower_sys_pwrite = programs::SYS_PWRITE);

    #[tracepoint]
    pub fn fsslower_sys_sync(ctx: TracePointContext) -> u32 {
        sys_enter_fd(&ctx, op::SYNC, false);
        0
    }
    check_name!(fsslower_sys_sync = programs::SYS_SYNC);

    /// An open: which file it is, and so whether it counts, is known at exit.
    #[tracepoint]
    pub fn fsslower_sys_open(_ctx: TracePointContext) -> u32 {
        if wanted_task() {
            start(tid(), core::ptr::null(), 0, op::OPEN);
        }
        0
    }
    check_name!(fsslower_sys_open = programs::SYS_OPEN);

    #[inline(always)]
    fn sys_exit<const RING: bool>(ctx: &TracePointContext) {
        let key = tid();
        let Some(started) = (unsafe { STARTS.get(&key) }).copied() else { return };
        let _ = STARTS.remove(&key);
        let Ok(ret) = (unsafe { ctx.read_at::<i64>(config!(tp_ret) as usize) }) else { return };
        let file = if started.op == op::OPEN {
            // A failed open never reached a filesystem's file.
            if ret < 0 {
                return;
            }
            let task = unsafe { bpf_get_current_task() } as Ptr;
            match file_of_fd(task, ret, &config!(task), &config!(file)) {
                Some(file) if on_our_fs(file) => file,
                _ => return,
            }
        } else {
            started.file as Ptr
        };
        // An open's result is a descriptor, not bytes: 0, as the filesystem's open returns.
        let bytes = if started.op == op::OPEN { 0 } else { ret };
        finish::<RING, _>(ctx, &started, file, bytes);
    }

    event_programs!(tracepoint() fsslower_sys_exit / fsslower_sys_exit_perf(TracePointContext) = programs::SYS_EXIT => sys_exit);
}
