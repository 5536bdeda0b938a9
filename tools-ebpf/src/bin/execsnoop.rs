//! execsnoop: every exec, with PID, PPID, return code and arguments.
//!
//! The legacy build adds BCC's execsnoop of 2016, for Linux 4.4 (which has
//! no string read, no current task and sends only events on the stack): a
//! kprobe on the exec syscalls' entry sends the path and each argument as
//! a part of its own, a kretprobe the result; user space puts them back
//! together.
//!
//! Successful execs are seen at `sched:sched_process_exec`, for execve and
//! execveat alike and from any thread, once the new program is in place:
//! its arguments are read from the new `mm->arg_start..arg_end`, which the
//! kernel has just written (never missing, unlike the caller's pages at
//! syscall entry). Failed execs (-x) pair the syscall tracepoints by TID and
//! read the caller's argv at exit, when the kernel has already touched it.
//!
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod bpf {
    use core::mem::offset_of;

    use aya_ebpf::{
        helpers::{
            bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid,
            bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user,
            bpf_probe_read_user_str_bytes, generated,
        },
        macros::{map, tracepoint},
        maps::HashMap,
        programs::TracePointContext,
        EbpfContext as _,
    };
    use tools_common::execsnoop::{event_flags, programs, Config, ExecEvent, InFlight, ARGS_SIZE, FAILED_MAX_ARGS};
    use tools_ebpf::{
        config, event_maps,
        maps::{count_drop, emit_prefix, Configuration, Scratch},
        named, read_field,
    };

    #[config]
    static CONFIG: Configuration<Config> = Configuration::new();

    // DROPS, EVENTS, and KEYED_HIST (unused: one entry).
    event_maps!();

    /// Where an event is built: too large for the BPF stack.
    #[map]
    static SCRATCH: Scratch<ExecEvent> = Scratch::new();

    /// -x: TID → the caller's pointers, from syscall entry to exit.
    #[map]
    static INFLIGHT: HashMap<u32, InFlight> = HashMap::with_max_entries(10240, 0);

    type Ptr = *const u8;

    /// The event under construction with its common fields filled, or None
    /// when the current task is filtered out.
    #[inline(always)]
    fn new_event(config: &Config, ret: i32) -> Option<&'static mut ExecEvent> {
        let task = unsafe { bpf_get_current_task() } as Ptr;
        let uid = bpf_get_current_uid_gid() as u32;
        if config.filter_uid != 0 && uid != config.uid {
            return None;
        }
        let parent = read_field::<Ptr>(task, config.task.real_parent).unwrap_or(core::ptr::null());
        let ppid = read_field::<u32>(parent, config.task.tgid).unwrap_or(0);
        let only_children_of = config.ppid;
        if only_children_of != 0 && ppid != only_children_of {
            return None;
        }
        if !tools_ebpf::task_in_cgroup(task, &config.cgroup) {
            return None;
        }
        let ev = SCRATCH.get()?;
        ev.ts_ns = unsafe { bpf_ktime_get_ns() };
        ev.pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        ev.ppid = ppid;
        ev.uid = uid;
        ev.cpu = unsafe { bpf_get_smp_processor_id() };
        ev.ret = ret;
        ev.flags = 0;
        ev.args_len = 0;
        ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
        ev.pcomm = read_field(parent, config.task.comm).unwrap_or([0; 16]);
        ev.cgroup = tools_ebpf::reported_cgroup::<true>(&config.cgroup);
        ev.filename[0] = 0;
        Some(ev)
    }

    #[inline(always)]
    fn send(ctx: &TracePointContext, ev: &ExecEvent) {
        let len = offset_of!(ExecEvent, args) + (ev.args_len as usize & (ARGS_SIZE - 1));
        emit_prefix(ctx, &EVENTS, &DROPS, ev, len);
    }

    // ---- Successful execs ----

    #[named(programs::EXEC)]
    #[tracepoint(category = "sched", name = "sched_process_exec")]
    pub fn execsnoop_exec(ctx: TracePointContext) -> u32 {
        if let Some(config) = CONFIG.get() {
            on_exec(config, &ctx);
        }
        0
    }

    #[inline(always)]
    fn on_exec(config: &Config, ctx: &TracePointContext) {
        // A failed-exec entry of this task (keyed by its TID before exec,
        // `old_pid`, which differs when a non-leader thread execs) is done.
        if let Ok(old_tid) = unsafe { ctx.read_at::<u32>(config.tp_exec_old_pid as usize) } {
            let _ = INFLIGHT.remove(old_tid);
        }
        let Some(ev) = new_event(config, 0) else { return };
        // __data_loc: offset of the string in the record in the low 16 bits.
        if let Ok(loc) = unsafe { ctx.read_at::<u32>(config.tp_exec_filename as usize) } {
            let src = unsafe { (ctx.as_ptr() as Ptr).add((loc & 0xffff) as usize) };
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut ev.filename) };
        }
        let task = unsafe { bpf_get_current_task() } as Ptr;
        let mm = read_field::<Ptr>(task, config.task.mm).unwrap_or(core::ptr::null());
        let start = read_field::<u64>(mm, config.mm_arg_start).unwrap_or(0);
        let end = read_field::<u64>(mm, config.mm_arg_end).unwrap_or(0);
        let mut len = end.saturating_sub(start) as usize;
        if len >= ARGS_SIZE {
            len = ARGS_SIZE - 1;
            ev.flags |= event_flags::ARGS_TRUNCATED;
        }
        let len = len & (ARGS_SIZE - 1);
        let ret = unsafe { generated::bpf_probe_read_user(ev.args.as_mut_ptr().cast(), len as u32, start as *const _) };
        if ret == 0 {
            ev.args_len = len as u32;
        } else {
            // Still an exec worth reporting: flagged, not counted as lost
            // (nor said to be cut: none of it was read).
            ev.flags = (ev.flags & !event_flags::ARGS_TRUNCATED) | event_flags::ARGS_UNREADABLE;
        }
        ev.flags |= event_flags::FROM_MM;
        send(ctx, ev);
    }

    // ---- Failed execs (-x) ----

    #[inline(always)]
    fn on_enter(ctx: &TracePointContext, filename_at: u32, argv_at: u32) {
        let tid = bpf_get_current_pid_tgid() as u32;
        let (Ok(filename), Ok(argv)) =
            (unsafe { ctx.read_at::<u64>(filename_at as usize) }, unsafe { ctx.read_at::<u64>(argv_at as usize) })
        else {
            return;
        };
        if INFLIGHT.insert(tid, InFlight { filename, argv }, 0).is_err() {
            count_drop(&DROPS, |d| &mut d.inflight_full);
        }
    }

    #[named(programs::ENTER_EXECVE)]
    #[tracepoint(category = "syscalls", name = "sys_enter_execve")]
    pub fn execsnoop_enter_execve(ctx: TracePointContext) -> u32 {
        if let Some(config) = CONFIG.get() {
            on_enter(&ctx, config.tp_execve_filename, config.tp_execve_argv);
        }
        0
    }

    #[named(programs::ENTER_EXECVEAT)]
    #[tracepoint(category = "syscalls", name = "sys_enter_execveat")]
    pub fn execsnoop_enter_execveat(ctx: TracePointContext) -> u32 {
        if let Some(config) = CONFIG.get() {
            on_enter(&ctx, config.tp_execveat_filename, config.tp_execveat_argv);
        }
        0
    }

    /// Reaches only execs that failed: a successful one removed its entry
    /// at `sched_process_exec`.
    #[inline(always)]
    fn on_exit(ctx: &TracePointContext) {
        let Some(config) = CONFIG.get() else { return };
        let tid = bpf_get_current_pid_tgid() as u32;
        let Some(inflight) = INFLIGHT.get_ptr(tid).map(|inflight| unsafe { *inflight }) else { return };
        let _ = INFLIGHT.remove(tid);
        let ret = unsafe { ctx.read_at::<i64>(config.tp_exit_ret as usize) }.unwrap_or(0);
        if ret >= 0 {
            return;
        }
        let Some(ev) = new_event(config, ret as i32) else { return };
        let _ = unsafe { bpf_probe_read_user_str_bytes(inflight.filename as Ptr, &mut ev.filename) };
        // argv[0], argv[1], ... one string at a time, at most FAILED_MAX_ARGS,
        // unrolled (kernels before 5.3 reject loops). Each string may take
        // up to half the buffer, so every read stays inside it.
        let argv = inflight.argv as *const u64;
        let mut off = 0usize;
        let mut i = 0usize;
        let mut done = false;
        macro_rules! one_arg {
            () => {
                if !done {
                    match unsafe { bpf_probe_read_user(argv.wrapping_add(i)) } {
                        Ok(0) | Err(_) => done = true,
                        Ok(ptr) => {
                            // Masked as the last step before use, past an opaque
                            // copy: older verifiers (6.12) lose the bound if LLVM
                            // folds the mask into the previous addition.
                            let at = core::hint::black_box(off) & (ARGS_SIZE / 2 - 1);
                            let n = unsafe {
                                generated::bpf_probe_read_user_str(
                                    ev.args.as_mut_ptr().add(at).cast(),
                                    (ARGS_SIZE / 2) as u32,
                                    ptr as *const _,
                                )
                            };
                            if n <= 0 || at + n as usize >= ARGS_SIZE / 2 {
                                done = true;
                                ev.flags |= event_flags::ARGS_TRUNCATED;
                            } else {
                                off = at + n as usize;
                            }
                            i += 1;
                        }
                    }
                }
            };
        }
        macro_rules! eight_args {
            () => {
                one_arg!();
                one_arg!();
                one_arg!();
                one_arg!();
                one_arg!();
                one_arg!();
                one_arg!();
                one_arg!();
            };
        }
        eight_args!();
        eight_args!();
        eight_args!();
        eight_args!();
        if !done && i == FAILED_MAX_ARGS {
            if let Ok(next) = unsafe { bpf_probe_read_user(argv.wrapping_add(i)) } {
                if next != 0 {
                    ev.flags |= event_flags::ARGS_TRUNCATED;
                }
            }
        }
        ev.args_len = off as u32;
        send(ctx, ev);
    }

    #[named(programs::EXIT_EXECVE)]
    #[tracepoint(category = "syscalls", name = "sys_exit_execve")]
    pub fn execsnoop_exit_execve(ctx: TracePointContext) -> u32 {
        on_exit(&ctx);
        0
    }

    #[named(programs::EXIT_EXECVEAT)]
    #[tracepoint(category = "syscalls", name = "sys_exit_execveat")]
    pub fn execsnoop_exit_execveat(ctx: TracePointContext) -> u32 {
        on_exit(&ctx);
        0
    }

    // ---- The legacy build's kprobe rung: Linux 4.4 ----

    #[cfg(feature = "legacy")]
    use aya_ebpf::{
        macros::{kprobe, kretprobe},
        programs::{ProbeContext, RetProbeContext},
    };
    #[cfg(feature = "legacy")]
    use tools_common::execsnoop::{maps, part, ExecPart, Parent, PART_MAX_ARGS, PART_SIZE};

    /// The execs in flight on this rung: process → its parent, learnt from
    /// the exec's task (see `execsnoop_kp_exec_task`).
    #[cfg(feature = "legacy")]
    #[named(maps::PARENTS)]
    #[map]
    static PARENTS: HashMap<u32, Parent> = HashMap::with_max_entries(10240, 0);

    /// Argument `n` of the exec syscall: the probe's own, or, where the
    /// syscall takes a `struct pt_regs *`, that struct's.
    #[cfg(feature = "legacy")]
    #[inline(always)]
    fn syscall_arg(ctx: &ProbeContext, config: &Config, n: usize) -> Option<u64> {
        if config.syscall_regs == 0 {
            return ctx.arg::<u64>(n);
        }
        let regs = ctx.arg::<*const u8>(0)?;
        read_field::<u64>(regs, config.regs_args[n & 3])
    }

    /// A part of an exec, on the stack, with what every part carries.
    #[cfg(feature = "legacy")]
    #[inline(always)]
    fn new_part(kind: u32) -> ExecPart {
        let id = bpf_get_current_pid_tgid();
        let mut p: ExecPart = unsafe { core::mem::zeroed() };
        p.ts_ns = unsafe { bpf_ktime_get_ns() };
        p.pid = (id >> 32) as u32;
        p.tid = id as u32;
        p.uid = bpf_get_current_uid_gid() as u32;
        p.cpu = unsafe { bpf_get_smp_processor_id() };
        p.kind = kind;
        p.comm = bpf_get_current_comm().unwrap_or([0; 16]);
        p
    }

    /// Reads the string at `at` into `p.bytes`: a fixed size (4.4 has no
    /// string read), shorter where the longer read fails (the string ends
    /// near its page's end).
    #[cfg(feature = "legacy")]
    #[inline(always)]
    fn read_string(p: &mut ExecPart, at: u64) {
        // Straight into the event (no copy: 4.4's limit is 4096 instructions).
        let into = p.bytes.as_mut_ptr().cast();
        // SAFETY: the helper writes at most `len` bytes into the event's bytes.
        let read = |len: u32| unsafe { generated::bpf_probe_read_user(into, len, at as *const _) };
        if read(PART_SIZE as u32) == 0 {
            return;
        }
        // What the 16 bytes read hold ends there, whatever a longer string left.
        p.bytes[16] = 0;
        if read(16) != 0 {
            p.bytes[0] = 0;
            p.unreadable = 1;
        }
    }

    /// The entry: the path, then argv[0], argv[1], ... (unrolled: 4.4 has no
    /// loops), each sent as it is read.
    #[cfg(feature = "legacy")]
    #[inline(always)]
    fn kp_exec(ctx: &ProbeContext, filename_arg: usize) {
        let Some(config) = CONFIG.get() else { return };
        let uid = bpf_get_current_uid_gid() as u32;
        if config.filter_uid != 0 && uid != config.uid {
            return;
        }
        // One at a time: read as a pair, the compiler merges the two
        // failures into one test the verifier cannot follow.
        let Some(filename) = syscall_arg(ctx, config, filename_arg) else { return };
        let Some(argv) = syscall_arg(ctx, config, filename_arg + 1) else { return };
        let mut p = new_part(part::FILENAME);
        // Its parent, once the exec reaches its task (keyed by process: a
        // thread that execs takes its process's leader's TID).
        if PARENTS.insert(p.pid, Parent::default(), 0).is_err() {
            count_drop(&DROPS, |d| &mut d.inflight_full);
        }
        read_string(&mut p, filename);
        emit_part(ctx, &p);
        p.kind = part::ARG;
        let mut done = false;
        macro_rules! one_arg {
            ($i:expr) => {
                if !done {
                    match unsafe { bpf_probe_read_user::<u64>((argv + 8 * $i) as *const u64) } {
                        Ok(0) | Err(_) => done = true,
                        Ok(at) => {
                            p.index = $i;
                            p.unreadable = 0;
                            read_string(&mut p, at);
                            emit_part(ctx, &p);
                        }
                    }
                }
            };
        }
        one_arg!(0);
        one_arg!(1);
        one_arg!(2);
        one_arg!(3);
        one_arg!(4);
        one_arg!(5);
        one_arg!(6);
        one_arg!(7);
        one_arg!(8);
        one_arg!(9);
        one_arg!(10);
        one_arg!(11);
        one_arg!(12);
        one_arg!(13);
        one_arg!(14);
        one_arg!(15);
        one_arg!(16);
        one_arg!(17);
        one_arg!(18);
        one_arg!(19);
        const _: () = assert!(PART_MAX_ARGS == 20, "one one_arg! per argument");
        if !done {
            if let Ok(next) = unsafe { bpf_probe_read_user::<u64>((argv + 8 * PART_MAX_ARGS as u64) as *const u64) } {
                if next != 0 {
                    let more = new_part(part::MORE);
                    emit_part(ctx, &more);
                }
            }
        }
    }

    #[cfg(feature = "legacy")]
    #[inline(always)]
    fn emit_part<C: aya_ebpf::EbpfContext>(ctx: &C, p: &ExecPart) {
        tools_ebpf::maps::emit_value(ctx, &EVENTS, &DROPS, p);
    }

    /// `execve(filename, argv, envp)`.
    #[cfg(feature = "legacy")]
    #[named(programs::KP_EXECVE)]
    #[kprobe]
    pub fn execsnoop_kp_execve(ctx: ProbeContext) -> u32 {
        kp_exec(&ctx, 0);
        0
    }

    /// `execveat(dirfd, filename, argv, envp, flags)`.
    #[cfg(feature = "legacy")]
    #[named(programs::KP_EXECVEAT)]
    #[kprobe]
    pub fn execsnoop_kp_execveat(ctx: ProbeContext) -> u32 {
        kp_exec(&ctx, 1);
        0
    }

    /// Either syscall's return: its result, and the new program's name.
    #[cfg(feature = "legacy")]
    #[named(programs::KRET_EXEC)]
    #[kretprobe]
    pub fn execsnoop_kret_exec(ctx: RetProbeContext) -> u32 {
        let Some(config) = CONFIG.get() else { return 0 };
        if config.filter_uid != 0 && bpf_get_current_uid_gid() as u32 != config.uid {
            return 0;
        }
        let mut p = new_part(part::RET);
        p.ret = ctx.ret::<i64>() as i32;
        if let Some(parent) = PARENTS.get_ptr(p.pid) {
            // SAFETY: copied out of a live entry at once.
            let parent = unsafe { *parent };
            p.ppid = parent.tgid;
            p.bytes[..16].copy_from_slice(&parent.comm);
            let _ = PARENTS.remove(p.pid);
        }
        emit_part(&ctx, &p);
        0
    }

    /// `exec_mm_release(task, mm)` / `mm_release(task, mm)`: the exec puts
    /// its task's old memory away, and names the task, whose parent is read
    /// here for a process with an exec in flight (the same function runs at
    /// exit too: those have none).
    #[cfg(feature = "legacy")]
    #[named(programs::KP_EXEC_TASK)]
    #[kprobe]
    pub fn execsnoop_kp_exec_task(ctx: ProbeContext) -> u32 {
        let (Some(config), Some(task)) = (CONFIG.get(), ctx.arg::<Ptr>(0)) else { return 0 };
        let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if PARENTS.get_ptr(pid).is_none() || config.task.real_parent == 0 {
            return 0;
        }
        let parent = read_field::<Ptr>(task, config.task.real_parent).unwrap_or(core::ptr::null());
        let known = Parent {
            tgid: read_field(parent, config.task.tgid).unwrap_or(0),
            _pad: 0,
            comm: read_field(parent, config.task.comm).unwrap_or([0; 16]),
        };
        const BPF_EXIST: u64 = 2;
        let _ = PARENTS.insert(pid, known, BPF_EXIST);
        0
    }
}
