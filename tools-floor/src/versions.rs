//! The one table of what each BPF feature first needs, and where each
//! version comes from.
//!
//! Sources, read for this table (facts only):
//! - bcc's `docs/kernel-versions.md` (iovisor/bcc at 6d0a964c2cda; the
//!   file last changed in 1dcfcec51c89, 2025-04-19), its "Helpers",
//!   "Map types", "Program types" and "Main features" tables;
//! - the history of the kernel's `include/uapi/linux/bpf.h` (read in
//!   libbpf's mirror of it, whose sync commits keep the kernel commits'
//!   subjects and dates), for what bcc does not list: the date of the
//!   commit that added a constant, and the release whose merge window
//!   followed it.
//!
//! Helper ids are the order of `___BPF_FUNC_MAPPER` in that header
//! (`bpf_map_lookup_elem` = 1 ... `bpf_cgrp_storage_delete` = 211, the last
//! helper there is); the names here are the header's, checked against it
//! and against bcc's list, which has every one of them.

use std::fmt;

/// A kernel release, `major.minor`: ordered, shown as "4.4".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion(pub u32, pub u32);

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// What a row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// A helper, by its id (`imm` of a `call` with `src_reg` 0).
    Helper(i32),
    /// A map type, by its `bpf_map_type` number.
    MapType(u32),
    /// A program type, by the section kind aya reads it from (`kprobe`,
    /// `uprobe.s`, ...).
    ProgramType(&'static str),
    /// Something in the instructions themselves.
    Insn(Insn),
    /// A kind of link a program is attached with, beyond the perf events
    /// and raw tracepoints its program type comes with (`uprobe_multi`):
    /// what the loader does, not what the object says.
    LinkType(&'static str),
}

/// Instruction-level features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insn {
    /// `call` with `src_reg` `BPF_PSEUDO_CALL`.
    BpfToBpfCall,
    /// A jump to itself or an earlier instruction.
    Loop,
    /// `ld_imm64` of a `.rodata`/`.data`/`.bss` address (`BPF_PSEUDO_MAP_VALUE`).
    GlobalData,
    /// More than `BPF_MAXINSNS` (4096) instructions.
    MoreThan4096,
    /// Any instruction of class `BPF_JMP32`.
    Jmp32,
    /// `BPF_JLT`, `BPF_JLE`, `BPF_JSLT`, `BPF_JSLE` (the v2 CPU).
    JumpLessThan,
    /// `BPF_ATOMIC` other than plain add (`BPF_XADD`): fetch, xchg,
    /// cmpxchg, and, or, xor.
    AtomicFetch,
    /// `BPF_ATOMIC` load-acquire / store-release.
    LoadAcquireStoreRelease,
    /// Instructions of the v4 CPU: sign-extending loads and moves, signed
    /// division, byte swaps, 32-bit-offset `gotol`.
    CpuV4,
    /// `ld_imm64` of a function's address (`BPF_PSEUDO_FUNC`), for callbacks.
    FunctionReference,
    /// `call` with `src_reg` `BPF_PSEUDO_KFUNC_CALL`.
    KfuncCall,
}

/// One fact: the feature, its name, the first release that has it, and
/// where that version comes from.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub feature: Feature,
    pub name: &'static str,
    pub version: KernelVersion,
    pub source: &'static str,
}

const BCC_HELPERS: &str = "bcc docs/kernel-versions.md, \"Helpers\"";
const BCC_MAPS: &str = "bcc docs/kernel-versions.md, \"Map types\"";
const BCC_PROGRAMS: &str = "bcc docs/kernel-versions.md, \"Program types\"";
const BCC_FEATURES: &str = "bcc docs/kernel-versions.md, \"Main features\"";

const fn h(id: i32, name: &'static str, major: u32, minor: u32) -> Row {
    Row { feature: Feature::Helper(id), name, version: KernelVersion(major, minor), source: BCC_HELPERS }
}

const fn m(map_type: u32, name: &'static str, major: u32, minor: u32) -> Row {
    Row { feature: Feature::MapType(map_type), name, version: KernelVersion(major, minor), source: BCC_MAPS }
}

const fn p(section: &'static str, major: u32, minor: u32, source: &'static str) -> Row {
    Row { feature: Feature::ProgramType(section), name: section, version: KernelVersion(major, minor), source }
}

const fn l(link: &'static str, major: u32, minor: u32, source: &'static str) -> Row {
    Row { feature: Feature::LinkType(link), name: link, version: KernelVersion(major, minor), source }
}

const fn i(insn: Insn, name: &'static str, major: u32, minor: u32, source: &'static str) -> Row {
    Row { feature: Feature::Insn(insn), name, version: KernelVersion(major, minor), source }
}

/// Every fact the analysis knows.
pub const TABLE: &[Row] = &[
    // Program types: tracing ones only, by the section prefixes aya-obj 0.3
    // parses. bcc docs/kernel-versions.md, "Program types" and "Main
    // features" ("BPF attached to kprobes" 4.1, ...), except uprobes, which
    // bcc does not list: BPF programs on uprobes came with the kernel's
    // "tracing, perf: Implement BPF programs attached to uprobes" (4.3),
    // still of program type BPF_PROG_TYPE_KPROBE.
    p("kprobe", 4, 1, BCC_PROGRAMS),
    p("kretprobe", 4, 1, BCC_PROGRAMS),
    p("uprobe", 4, 3, "Linux 4.3, \"tracing, perf: Implement BPF programs attached to uprobes\" (not in bcc's tables)"),
    p("uretprobe", 4, 3, "Linux 4.3, \"tracing, perf: Implement BPF programs attached to uprobes\" (not in bcc's tables)"),
    p("tracepoint", 4, 7, BCC_PROGRAMS),
    p("perf_event", 4, 9, BCC_PROGRAMS),
    p("raw_tracepoint", 4, 17, BCC_PROGRAMS),
    // BPF_PROG_TYPE_TRACING: "Tracing (BTF/BPF trampoline)" 5.5.
    p("tp_btf", 5, 5, BCC_PROGRAMS),
    p("fentry", 5, 5, BCC_PROGRAMS),
    p("fexit", 5, 5, BCC_PROGRAMS),
    p("lsm", 5, 7, BCC_PROGRAMS),
    p("iter", 5, 8, BCC_FEATURES),
    // "Sleepable BPF programs" 5.10 (fentry.s, fexit.s, lsm.s).
    p("fentry.s", 5, 10, BCC_FEATURES),
    p("fexit.s", 5, 10, BCC_FEATURES),
    p("lsm.s", 5, 10, BCC_FEATURES),
    // Sleepable uprobes came later than other sleepable programs; bcc does
    // not list them. libbpf's "uprobe.s" section came with the kernel's
    // support in 2022-06, in the merge window of 6.0.
    p("uprobe.s", 6, 0, "libbpf history, \"libbpf: add support for sleepable uprobe programs\" (2022-06, 6.0)"),
    p("uretprobe.s", 6, 0, "libbpf history, \"libbpf: add support for sleepable uprobe programs\" (2022-06, 6.0)"),
    // Links.
    l("uprobe_multi", 6, 6, "uapi bpf.h: BPF_TRACE_UPROBE_MULTI, \"bpf: Add multi uprobe link\" (2023-08, 6.6)"),
    // Instructions.
    i(Insn::BpfToBpfCall, "bpf-to-bpf call", 4, 16, "bcc docs/kernel-versions.md, \"Main features\": bpf2bpf function calls"),
    i(Insn::GlobalData, "global data", 5, 2, "uapi bpf.h: BPF_PSEUDO_MAP_VALUE, \"bpf: implement lookup-free direct value access for maps\" (2019-04, 5.2)"),
    i(Insn::MoreThan4096, "more than 4096 instructions", 5, 2, "bcc docs/kernel-versions.md, \"Main features\": BPF 1M insn limit"),
    i(Insn::Loop, "bounded loop", 5, 3, "bcc docs/kernel-versions.md, \"Main features\": BPF bounded loop"),
    i(Insn::JumpLessThan, "JLT/JLE/JSLT/JSLE jumps", 4, 14, "uapi bpf.h: BPF_JLT, BPF_JLE, BPF_JSLT, BPF_JSLE, \"bpf: add BPF_J{LT,LE,SLT,SLE} instructions\" (2017-08, 4.14)"),
    i(Insn::Jmp32, "JMP32 instructions", 5, 1, "uapi bpf.h: BPF_JMP32, \"bpf: introduce BPF_JMP32 instruction class\" (2019-01, 5.1)"),
    i(Insn::AtomicFetch, "atomic fetch/xchg/cmpxchg/and/or/xor", 5, 12, "uapi bpf.h: BPF_FETCH, BPF_XCHG, BPF_CMPXCHG, \"bpf: Add BPF_FETCH field / create atomic_fetch_add instruction\" (2021-01, 5.12)"),
    i(Insn::FunctionReference, "function reference (callback)", 5, 13, "uapi bpf.h: BPF_PSEUDO_FUNC, with bpf_for_each_map_elem (2021-02, 5.13; bcc \"Helpers\": for_each_map_elem 5.13)"),
    i(Insn::KfuncCall, "kfunc call", 5, 13, "uapi bpf.h: BPF_PSEUDO_KFUNC_CALL, \"bpf: Support bpf program calling kernel function\" (2021-03, 5.13)"),
    i(Insn::CpuV4, "cpu v4 instructions", 6, 6, "uapi bpf.h: BPF_MEMSX, \"bpf: Support new sign-extension load insns\" (2023-07, 6.6)"),
    i(Insn::LoadAcquireStoreRelease, "load-acquire/store-release", 6, 15, "uapi bpf.h: BPF_LOAD_ACQ, \"bpf: Introduce load-acquire and store-release instructions\" (2025-03, 6.15)"),
    // Map types, by enum bpf_map_type. bcc docs/kernel-versions.md, "Map
    // types", except the last two.
    m(1, "hash", 3, 19),
    m(2, "array", 3, 19),
    m(3, "prog_array", 4, 2),
    m(4, "perf_event_array", 4, 3),
    m(5, "percpu_hash", 4, 6),
    m(6, "percpu_array", 4, 6),
    m(7, "stack_trace", 4, 6),
    m(8, "cgroup_array", 4, 8),
    m(9, "lru_hash", 4, 10),
    m(10, "lru_percpu_hash", 4, 10),
    m(11, "lpm_trie", 4, 11),
    m(12, "array_of_maps", 4, 12),
    m(13, "hash_of_maps", 4, 12),
    m(14, "devmap", 4, 14),
    m(15, "sockmap", 4, 14),
    m(16, "cpumap", 4, 15),
    m(17, "xskmap", 4, 18),
    m(18, "sockhash", 4, 18),
    m(19, "cgroup_storage", 4, 19),
    m(20, "reuseport_sockarray", 4, 19),
    m(21, "percpu_cgroup_storage", 4, 20),
    m(22, "queue", 4, 20),
    m(23, "stack", 4, 20),
    m(24, "sk_storage", 5, 2),
    m(25, "devmap_hash", 5, 4),
    m(26, "struct_ops", 5, 6),
    m(27, "ringbuf", 5, 8),
    m(28, "inode_storage", 5, 10),
    m(29, "task_storage", 5, 11),
    m(30, "bloom_filter", 5, 16),
    m(31, "user_ringbuf", 6, 1),
    // Not in bcc's map table: cgrp_storage came in the commit bcc gives for
    // bpf_cgrp_storage_get/delete (c4bcfb38a95e, 6.2).
    Row { feature: Feature::MapType(32), name: "cgrp_storage", version: KernelVersion(6, 2), source: BCC_HELPERS },
    Row {
        feature: Feature::MapType(33),
        name: "arena",
        version: KernelVersion(6, 9),
        source: "uapi bpf.h: BPF_MAP_TYPE_ARENA, \"bpf: Introduce bpf_arena.\" (2024-03, 6.9)",
    },
    // Helpers, by id. bcc docs/kernel-versions.md, "Helpers" (which lists
    // bpf_skc_to_mptcp_sock as "skc_to_mctcp_sock").
    h(1, "map_lookup_elem", 3, 19),
    h(2, "map_update_elem", 3, 19),
    h(3, "map_delete_elem", 3, 19),
    h(4, "probe_read", 4, 1),
    h(5, "ktime_get_ns", 4, 1),
    h(6, "trace_printk", 4, 1),
    h(7, "get_prandom_u32", 4, 1),
    h(8, "get_smp_processor_id", 4, 1),
    h(9, "skb_store_bytes", 4, 1),
    h(10, "l3_csum_replace", 4, 1),
    h(11, "l4_csum_replace", 4, 1),
    h(12, "tail_call", 4, 2),
    h(13, "clone_redirect", 4, 2),
    h(14, "get_current_pid_tgid", 4, 2),
    h(15, "get_current_uid_gid", 4, 2),
    h(16, "get_current_comm", 4, 2),
    h(17, "get_cgroup_classid", 4, 3),
    h(18, "skb_vlan_push", 4, 3),
    h(19, "skb_vlan_pop", 4, 3),
    h(20, "skb_get_tunnel_key", 4, 3),
    h(21, "skb_set_tunnel_key", 4, 3),
    h(22, "perf_event_read", 4, 3),
    h(23, "redirect", 4, 4),
    h(24, "get_route_realm", 4, 4),
    h(25, "perf_event_output", 4, 4),
    h(26, "skb_load_bytes", 4, 5),
    h(27, "get_stackid", 4, 6),
    h(28, "csum_diff", 4, 6),
    h(29, "skb_get_tunnel_opt", 4, 6),
    h(30, "skb_set_tunnel_opt", 4, 6),
    h(31, "skb_change_proto", 4, 8),
    h(32, "skb_change_type", 4, 8),
    h(33, "skb_under_cgroup", 4, 8),
    h(34, "get_hash_recalc", 4, 8),
    h(35, "get_current_task", 4, 8),
    h(36, "probe_write_user", 4, 8),
    h(37, "current_task_under_cgroup", 4, 9),
    h(38, "skb_change_tail", 4, 9),
    h(39, "skb_pull_data", 4, 9),
    h(40, "csum_update", 4, 9),
    h(41, "set_hash_invalid", 4, 9),
    h(42, "get_numa_node_id", 4, 10),
    h(43, "skb_change_head", 4, 10),
    h(44, "xdp_adjust_head", 4, 10),
    h(45, "probe_read_str", 4, 11),
    h(46, "get_socket_cookie", 4, 12),
    h(47, "get_socket_uid", 4, 12),
    h(48, "set_hash", 4, 13),
    h(49, "setsockopt", 4, 13),
    h(50, "skb_adjust_room", 4, 13),
    h(51, "redirect_map", 4, 14),
    h(52, "sk_redirect_map", 4, 14),
    h(53, "sock_map_update", 4, 14),
    h(54, "xdp_adjust_meta", 4, 15),
    h(55, "perf_event_read_value", 4, 15),
    h(56, "perf_prog_read_value", 4, 15),
    h(57, "getsockopt", 4, 15),
    h(58, "override_return", 4, 16),
    h(59, "sock_ops_cb_flags_set", 4, 16),
    h(60, "msg_redirect_map", 4, 17),
    h(61, "msg_apply_bytes", 4, 17),
    h(62, "msg_cork_bytes", 4, 17),
    h(63, "msg_pull_data", 4, 17),
    h(64, "bind", 4, 17),
    h(65, "xdp_adjust_tail", 4, 18),
    h(66, "skb_get_xfrm_state", 4, 18),
    h(67, "get_stack", 4, 18),
    h(68, "skb_load_bytes_relative", 4, 18),
    h(69, "fib_lookup", 4, 18),
    h(70, "sock_hash_update", 4, 18),
    h(71, "msg_redirect_hash", 4, 18),
    h(72, "sk_redirect_hash", 4, 18),
    h(73, "lwt_push_encap", 4, 18),
    h(74, "lwt_seg6_store_bytes", 4, 18),
    h(75, "lwt_seg6_adjust_srh", 4, 18),
    h(76, "lwt_seg6_action", 4, 18),
    h(77, "rc_repeat", 4, 18),
    h(78, "rc_keydown", 4, 18),
    h(79, "skb_cgroup_id", 4, 18),
    h(80, "get_current_cgroup_id", 4, 18),
    h(81, "get_local_storage", 4, 19),
    h(82, "sk_select_reuseport", 4, 19),
    h(83, "skb_ancestor_cgroup_id", 4, 19),
    h(84, "sk_lookup_tcp", 4, 20),
    h(85, "sk_lookup_udp", 4, 20),
    h(86, "sk_release", 4, 20),
    h(87, "map_push_elem", 4, 20),
    h(88, "map_pop_elem", 4, 20),
    h(89, "map_peek_elem", 4, 20),
    h(90, "msg_push_data", 4, 20),
    h(91, "msg_pop_data", 5, 0),
    h(92, "rc_pointer_rel", 5, 0),
    h(93, "spin_lock", 5, 1),
    h(94, "spin_unlock", 5, 1),
    h(95, "sk_fullsock", 5, 1),
    h(96, "tcp_sock", 5, 1),
    h(97, "skb_ecn_set_ce", 5, 1),
    h(98, "get_listener_sock", 5, 1),
    h(99, "skc_lookup_tcp", 5, 2),
    h(100, "tcp_check_syncookie", 5, 2),
    h(101, "sysctl_get_name", 5, 2),
    h(102, "sysctl_get_current_value", 5, 2),
    h(103, "sysctl_get_new_value", 5, 2),
    h(104, "sysctl_set_new_value", 5, 2),
    h(105, "strtol", 5, 2),
    h(106, "strtoul", 5, 2),
    h(107, "sk_storage_get", 5, 2),
    h(108, "sk_storage_delete", 5, 2),
    h(109, "send_signal", 5, 3),
    h(110, "tcp_gen_syncookie", 5, 3),
    h(111, "skb_output", 5, 5),
    h(112, "probe_read_user", 5, 5),
    h(113, "probe_read_kernel", 5, 5),
    h(114, "probe_read_user_str", 5, 5),
    h(115, "probe_read_kernel_str", 5, 5),
    h(116, "tcp_send_ack", 5, 5),
    h(117, "send_signal_thread", 5, 5),
    h(118, "jiffies64", 5, 5),
    h(119, "read_branch_records", 5, 6),
    h(120, "get_ns_current_pid_tgid", 5, 7),
    h(121, "xdp_output", 5, 6),
    h(122, "get_netns_cookie", 5, 7),
    h(123, "get_current_ancestor_cgroup_id", 5, 6),
    h(124, "sk_assign", 5, 6),
    h(125, "ktime_get_boot_ns", 5, 8),
    h(126, "seq_printf", 5, 7),
    h(127, "seq_write", 5, 7),
    h(128, "sk_cgroup_id", 5, 7),
    h(129, "sk_ancestor_cgroup_id", 5, 7),
    h(130, "ringbuf_output", 5, 8),
    h(131, "ringbuf_reserve", 5, 8),
    h(132, "ringbuf_submit", 5, 8),
    h(133, "ringbuf_discard", 5, 8),
    h(134, "ringbuf_query", 5, 8),
    h(135, "csum_level", 5, 7),
    h(136, "skc_to_tcp6_sock", 5, 9),
    h(137, "skc_to_tcp_sock", 5, 9),
    h(138, "skc_to_tcp_timewait_sock", 5, 9),
    h(139, "skc_to_tcp_request_sock", 5, 9),
    h(140, "skc_to_udp6_sock", 5, 9),
    h(141, "get_task_stack", 5, 9),
    h(142, "load_hdr_opt", 5, 10),
    h(143, "store_hdr_opt", 5, 10),
    h(144, "reserve_hdr_opt", 5, 10),
    h(145, "inode_storage_get", 5, 10),
    h(146, "inode_storage_delete", 5, 10),
    h(147, "d_path", 5, 10),
    h(148, "copy_from_user", 5, 10),
    h(149, "snprintf_btf", 5, 10),
    h(150, "seq_printf_btf", 5, 10),
    h(151, "skb_cgroup_classid", 5, 10),
    h(152, "redirect_neigh", 5, 10),
    h(153, "per_cpu_ptr", 5, 10),
    h(154, "this_cpu_ptr", 5, 10),
    h(155, "redirect_peer", 5, 10),
    h(156, "task_storage_get", 5, 11),
    h(157, "task_storage_delete", 5, 11),
    h(158, "get_current_task_btf", 5, 11),
    h(159, "bprm_opts_set", 5, 11),
    h(160, "ktime_get_coarse_ns", 5, 11),
    h(161, "ima_inode_hash", 5, 11),
    h(162, "sock_from_file", 5, 11),
    h(163, "check_mtu", 5, 12),
    h(164, "for_each_map_elem", 5, 13),
    h(165, "snprintf", 5, 13),
    h(166, "sys_bpf", 5, 14),
    h(167, "btf_find_by_name_kind", 5, 14),
    h(168, "sys_close", 5, 14),
    h(169, "timer_init", 5, 15),
    h(170, "timer_set_callback", 5, 15),
    h(171, "timer_start", 5, 15),
    h(172, "timer_cancel", 5, 15),
    h(173, "get_func_ip", 5, 15),
    h(174, "get_attach_cookie", 5, 15),
    h(175, "task_pt_regs", 5, 15),
    h(176, "get_branch_snapshot", 5, 16),
    h(177, "trace_vprintk", 5, 16),
    h(178, "skc_to_unix_sock", 5, 16),
    h(179, "kallsyms_lookup_name", 5, 16),
    h(180, "find_vma", 5, 17),
    h(181, "loop", 5, 17),
    h(182, "strncmp", 5, 17),
    h(183, "get_func_arg", 5, 17),
    h(184, "get_func_ret", 5, 17),
    h(185, "get_func_arg_cnt", 5, 17),
    h(186, "get_retval", 5, 18),
    h(187, "set_retval", 5, 18),
    h(188, "xdp_get_buff_len", 5, 18),
    h(189, "xdp_load_bytes", 5, 18),
    h(190, "xdp_store_bytes", 5, 18),
    h(191, "copy_from_user_task", 5, 18),
    h(192, "skb_set_tstamp", 5, 18),
    h(193, "ima_file_hash", 5, 18),
    h(194, "kptr_xchg", 5, 19),
    h(195, "map_lookup_percpu_elem", 5, 19),
    h(196, "skc_to_mptcp_sock", 5, 19),
    h(197, "dynptr_from_mem", 5, 19),
    h(198, "ringbuf_reserve_dynptr", 5, 19),
    h(199, "ringbuf_submit_dynptr", 5, 19),
    h(200, "ringbuf_discard_dynptr", 5, 19),
    h(201, "dynptr_read", 5, 19),
    h(202, "dynptr_write", 5, 19),
    h(203, "dynptr_data", 5, 19),
    h(204, "tcp_raw_gen_syncookie_ipv4", 6, 0),
    h(205, "tcp_raw_gen_syncookie_ipv6", 6, 0),
    h(206, "tcp_raw_check_syncookie_ipv4", 6, 0),
    h(207, "tcp_raw_check_syncookie_ipv6", 6, 0),
    h(208, "ktime_get_tai_ns", 6, 1),
    h(209, "user_ringbuf_drain", 6, 1),
    h(210, "cgrp_storage_get", 6, 2),
    h(211, "cgrp_storage_delete", 6, 2),
];

/// The row of `feature`, if the table has one.
pub fn lookup(feature: Feature) -> Option<&'static Row> {
    TABLE.iter().find(|row| row.feature == feature)
}

#[cfg(test)]
mod tests {
    use aya_obj::generated::{bpf_func_id as f, bpf_map_type};

    use super::*;

    #[test]
    fn every_helper_and_map_type_once() {
        let ids = |pick: fn(&Row) -> Option<i64>| {
            let mut ids: Vec<i64> = TABLE.iter().filter_map(pick).collect();
            ids.sort_unstable();
            ids
        };
        let helpers = ids(|r| if let Feature::Helper(id) = r.feature { Some(id.into()) } else { None });
        assert_eq!(helpers, (1..=211).collect::<Vec<_>>(), "every helper of ___BPF_FUNC_MAPPER, once");
        let maps = ids(|r| if let Feature::MapType(t) = r.feature { Some(t.into()) } else { None });
        assert_eq!(maps, (1..=33).collect::<Vec<_>>(), "every map type aya-obj 0.3 knows, once");
        assert!(TABLE.iter().all(|r| !r.source.is_empty() && !r.name.is_empty()));
    }

    #[test]
    fn helper_ids_match_aya_objs_bindings() {
        // aya-obj's bindings are generated from the kernel's uapi bpf.h.
        for (id, name) in [
            (f::BPF_FUNC_map_lookup_elem, "map_lookup_elem"),
            (f::BPF_FUNC_probe_read, "probe_read"),
            (f::BPF_FUNC_ktime_get_ns, "ktime_get_ns"),
            (f::BPF_FUNC_perf_event_output, "perf_event_output"),
            (f::BPF_FUNC_get_current_task, "get_current_task"),
            (f::BPF_FUNC_probe_read_str, "probe_read_str"),
            (f::BPF_FUNC_probe_read_user, "probe_read_user"),
            (f::BPF_FUNC_probe_read_kernel, "probe_read_kernel"),
            (f::BPF_FUNC_probe_read_user_str, "probe_read_user_str"),
            (f::BPF_FUNC_probe_read_kernel_str, "probe_read_kernel_str"),
            (f::BPF_FUNC_ringbuf_output, "ringbuf_output"),
            (f::BPF_FUNC_get_attach_cookie, "get_attach_cookie"),
            (f::BPF_FUNC_skc_to_mptcp_sock, "skc_to_mptcp_sock"),
            (f::BPF_FUNC_cgrp_storage_delete, "cgrp_storage_delete"),
        ] {
            assert_eq!(lookup(Feature::Helper(id as i32)).map(|r| r.name), Some(name));
        }
    }

    #[test]
    fn map_type_names_match_aya_objs_bindings() {
        for row in TABLE {
            if let Feature::MapType(t) = row.feature {
                let binding = format!("{:?}", bpf_map_type::try_from(t).ok().unwrap());
                let binding = binding.strip_prefix("BPF_MAP_TYPE_").unwrap().to_lowercase();
                assert_eq!(binding.trim_end_matches("_deprecated"), row.name);
            }
        }
    }

    #[test]
    fn versions_read_as_releases() {
        assert_eq!(KernelVersion(4, 4).to_string(), "4.4");
        assert!(KernelVersion(4, 17) > KernelVersion(4, 4));
        assert!(KernelVersion(5, 1) > KernelVersion(4, 20));
    }
}
