//! Struct offsets from BTF, one function per kernel object. Every member
//! that kernels renamed or moved is followed here and only here, with the
//! version that changed it (as libbpf-tools' `core_fixes.bpf.h` does), so
//! a tool never spells a member's name itself.

use anyhow::{Context as _, Result};
use tools_common::{
    biolatency::RequestOffsets,
    offsets::{FileOffsets, SockOffsets, TaskOffsets},
    CgroupFilter,
};

use crate::btf::Btf;

/// `struct task_struct`.
pub fn task(btf: &Btf) -> Result<TaskOffsets> {
    let m = |paths: &[&str]| btf.member_any("task_struct", paths).map(|m| m.offset);
    Ok(TaskOffsets {
        pid: m(&["pid"])?,
        tgid: m(&["tgid"])?,
        // 5.14 (2f064a59a1): `state` became `__state`, and an unsigned int.
        state: m(&["__state", "state"])?,
        real_parent: m(&["real_parent"])?,
        comm: m(&["comm"])?,
        mm: m(&["mm"])?,
        files: m(&["files"])?,
        _pad: 0,
    })
}

/// `struct file`, its dentry, inode and super block, and the descriptor
/// table (`files_struct` → `fdtable`) that leads to it.
pub fn file(btf: &Btf) -> Result<FileOffsets> {
    let m = |strukt: &str, path: &str| btf.member_any(strukt, &[path]).map(|m| m.offset);
    Ok(FileOffsets {
        f_inode: m("file", "f_inode")?,
        f_dentry: m("file", "f_path.dentry")?,
        f_pos: m("file", "f_pos")?,
        f_private_data: m("file", "private_data")?,
        dentry_name: m("dentry", "d_name.name")?,
        // `len` sits in an anonymous struct inside an anonymous union of `qstr`.
        dentry_name_len: m("dentry", "d_name.len")?,
        dentry_parent: m("dentry", "d_parent")?,
        inode_sb: m("inode", "i_sb")?,
        inode_ino: m("inode", "i_ino")?,
        sb_magic: m("super_block", "s_magic")?,
        sb_dev: m("super_block", "s_dev")?,
        files_fdt: m("files_struct", "fdt")?,
        fdt_max_fds: m("fdtable", "max_fds")?,
        fdt_fd: m("fdtable", "fd")?,
    })
}

/// `struct sock` (its `sock_common`), `struct tcp_sock` and `struct socket`.
/// `sk_protocol` became a u16 of its own in 5.6 (bf9765145b85); before, it
/// was 8 bits of a bitfield word, at a byte boundary: read as one byte.
pub fn sock(btf: &Btf) -> Result<SockOffsets> {
    let common = |name: &str| btf.member_any("sock", &[&format!("__sk_common.{name}")]).map(|m| m.offset);
    // The byte counters of RFC 4898 came in 4.1 (bytes_acked, bytes_received);
    // without them bytes are unknown, never 0.
    let tcp = |name: &str| btf.member("tcp_sock", name).map_or(0, |m| m.offset);
    Ok(SockOffsets {
        protocol: btf.member_any("sock", &["sk_protocol"])?.offset,
        family: common("skc_family")?,
        state: common("skc_state")?,
        sport: btf.member_any("inet_sock", &["inet_sport"])?.offset,
        dport: common("skc_dport")?,
        rcv_saddr: common("skc_rcv_saddr")?,
        daddr: common("skc_daddr")?,
        // Kernels built without IPv6 have no v6 addresses: 0 is never read for AF_INET.
        v6_rcv_saddr: common("skc_v6_rcv_saddr").unwrap_or(0),
        v6_daddr: common("skc_v6_daddr").unwrap_or(0),
        tcp_bytes_acked: tcp("bytes_acked"),
        tcp_bytes_received: tcp("bytes_received"),
        socket_sk: btf.member_any("socket", &["sk"])?.offset,
    })
}

/// `struct request` and the disk it leads to.
pub fn request(btf: &Btf) -> Result<RequestOffsets> {
    let m = |strukt: &str, paths: &[&str]| btf.member_any(strukt, paths).map(|m| m.offset);
    let mut rq = RequestOffsets {
        q: m("request", &["q"])?,
        cmd_flags: m("request", &["cmd_flags"])?,
        disk_major: m("gendisk", &["major"])?,
        disk_first_minor: m("gendisk", &["first_minor"])?,
        ..RequestOffsets::default()
    };
    // 5.17 (f3fa33acca9f) removed `request.rq_disk`; `request_queue.disk`
    // exists from 5.15 (d152c682f03c).
    match btf.member("request", "rq_disk") {
        Some(disk) => (rq.disk, rq.has_rq_disk) = (disk.offset, 1),
        None => rq.q_disk = m("request_queue", &["disk"]).context("no request.rq_disk either")?,
    }
    Ok(rq)
}

/// The members the `-c` cgroup walk reads (see [`CgroupFilter`]); `ino` is
/// left to the caller.
pub fn cgroup_walk(btf: &Btf) -> Result<CgroupFilter> {
    Ok(CgroupFilter {
        ino: 0,
        task_cgroups: btf.member_any("task_struct", &["cgroups"])?.offset,
        css_set_dfl_cgrp: btf.member_any("css_set", &["dfl_cgrp"])?.offset,
        cgroup_kn: btf.member_any("cgroup", &["kn"])?.offset,
        kn_id: btf.member_any("kernfs_node", &["id"])?.offset,
        // 6.15 renamed `kernfs_node.parent` to `__parent` (now RCU-protected).
        kn_parent: btf.member_any("kernfs_node", &["__parent", "parent"])?.offset,
        report: 0,
        _pad: 0,
    })
}

/// How this architecture names its syscalls' wrappers in /proc/kallsyms
/// (`__x64_sys_execve`): since x86-64 4.17 and arm64 4.19 they take a
/// `struct pt_regs *` (see [`syscall_args`]).
#[cfg(target_arch = "x86_64")]
pub const SYSCALL_WRAPPER_PREFIX: &str = "__x64_";
#[cfg(target_arch = "aarch64")]
pub const SYSCALL_WRAPPER_PREFIX: &str = "__arm64_";

/// Where a syscall wrapper's `struct pt_regs` holds the syscall's first
/// three arguments: x86-64's `di`, `si`, `dx`; arm64's `regs[0..3]`.
pub fn syscall_args(btf: &Btf) -> Result<[u32; 3]> {
    #[cfg(target_arch = "x86_64")]
    {
        let m = |name: &str| btf.member_any("pt_regs", &[name]).map(|m| m.offset);
        Ok([m("di")?, m("si")?, m("dx")?])
    }
    #[cfg(target_arch = "aarch64")]
    {
        let regs = btf.member_any("pt_regs", &["regs"])?.offset;
        Ok([regs, regs + 8, regs + 16])
    }
}

#[cfg(test)]
mod tests {
    use tools_parse::btf::testing::{Field, KernelTypes, Writer, VOID};

    use super::*;

    /// Which side of each change this file follows a fixture kernel is on.
    #[derive(Clone, Copy)]
    struct Kernel {
        /// 5.14: `task_struct.state` became `__state`.
        state_renamed: bool,
        /// 5.6: `sock.sk_protocol` a u16 of its own, no longer 8 bits of a bitfield word.
        protocol_u16: bool,
        /// 4.1: `tcp_sock.bytes_acked` and `bytes_received` (RFC 4898).
        byte_counters: bool,
        /// Until 5.16: `request.rq_disk`.
        rq_disk: bool,
        /// 5.15: `request_queue.disk`.
        queue_disk: bool,
        /// 6.15: `kernfs_node.parent` became `__parent`.
        kn_parent_renamed: bool,
        /// CONFIG_IPV6: `sock_common`'s IPv6 addresses.
        ipv6: bool,
    }

    /// Every member as kernels had it before each change (no one release
    /// had them all so: the byte counters came before the rest changed),
    /// built without IPv6.
    const OLD: Kernel = Kernel {
        state_renamed: false,
        protocol_u16: false,
        byte_counters: false,
        rq_disk: true,
        queue_disk: false,
        kn_parent_renamed: false,
        ipv6: false,
    };

    /// 5.15 and 5.16: a request reaches its disk both ways.
    const BOTH_DISKS: Kernel = Kernel {
        state_renamed: true,
        protocol_u16: true,
        byte_counters: true,
        rq_disk: true,
        queue_disk: true,
        kn_parent_renamed: false,
        ipv6: true,
    };

    /// As 6.18.
    const NEW: Kernel = Kernel { rq_disk: false, kn_parent_renamed: true, ..BOTH_DISKS };

    /// A kernel's BTF with the structs this file reads, in the shapes the
    /// kernel gives them (typedefs, qualifiers, embedded structs, anonymous
    /// unions, a bitfield word). The offsets are made up, and the two
    /// spellings of a renamed member lie apart, so a wrong pick shows.
    fn btf(k: Kernel) -> Btf {
        let mut w = Writer::new();
        let KernelTypes { int, uint, long, u8_, u16_, u64_, char_, u32_, pid_t } = w.kernel_types();
        let long_long = w.signed("long long", 8);
        let ulong = w.int("unsigned long", 8);
        let be16 = w.typedef("__be16", u16_);
        let be32 = w.typedef("__be32", uint);
        let any = w.ptr(VOID);

        let state = if k.state_renamed {
            Field::new("__state", uint, 24)
        } else {
            let volatile_long = w.volatile(long);
            Field::new("state", volatile_long, 16)
        };
        let comm = w.array(char_, 16);
        w.structure(
            "task_struct",
            9792,
            &[
                state,
                Field::new("mm", any, 2336),
                Field::new("pid", pid_t, 2464),
                Field::new("tgid", pid_t, 2468),
                Field::new("real_parent", any, 2480),
                Field::new("comm", comm, 3000),
                Field::new("files", any, 3072),
                Field::new("cgroups", any, 3560),
            ],
        );

        let path = w.structure("path", 16, &[Field::new("mnt", any, 0), Field::new("dentry", any, 8)]);
        let loff_t = w.typedef("loff_t", long_long);
        w.structure(
            "file",
            232,
            &[
                Field::new("f_inode", any, 32),
                Field::new("f_path", path, 64),
                Field::new("f_pos", loff_t, 96),
                Field::new("private_data", any, 200),
            ],
        );
        // struct qstr { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const unsigned char *name; }
        let hash_and_len = w.structure("", 8, &[Field::new("hash", u32_, 0), Field::new("len", u32_, 4)]);
        let hash_len = w.union("", 8, &[Field::new("", hash_and_len, 0), Field::new("hash_len", u64_, 0)]);
        let const_u8 = w.constant(u8_);
        let name = w.ptr(const_u8);
        let qstr = w.structure("qstr", 16, &[Field::new("", hash_len, 0), Field::new("name", name, 8)]);
        w.structure("dentry", 192, &[Field::new("d_parent", any, 24), Field::new("d_name", qstr, 32)]);
        w.structure("inode", 600, &[Field::new("i_sb", any, 40), Field::new("i_ino", ulong, 64)]);
        let dev_t = w.typedef("dev_t", u32_);
        w.structure("super_block", 1400, &[Field::new("s_dev", dev_t, 16), Field::new("s_magic", ulong, 96)]);
        w.structure("files_struct", 704, &[Field::new("fdt", any, 32)]);
        w.structure("fdtable", 56, &[Field::new("max_fds", uint, 0), Field::new("fd", any, 8)]);

        // struct sock_common: the addresses and ports in anonymous structs
        // inside anonymous unions (`skc_addrpair`, `skc_portpair`).
        let addrs = w.structure("", 8, &[Field::new("skc_daddr", be32, 0), Field::new("skc_rcv_saddr", be32, 4)]);
        let addrpair = w.union("", 8, &[Field::new("skc_addrpair", u64_, 0), Field::new("", addrs, 0)]);
        let ports = w.structure("", 4, &[Field::new("skc_dport", be16, 0), Field::new("skc_num", u16_, 2)]);
        let portpair = w.union("", 4, &[Field::new("skc_portpair", u32_, 0), Field::new("", ports, 0)]);
        let volatile_u8 = w.volatile(u8_);
        let mut common = vec![
            Field::new("", addrpair, 0),
            Field::new("", portpair, 12),
            Field::new("skc_family", u16_, 16),
            Field::new("skc_state", volatile_u8, 18),
        ];
        if k.ipv6 {
            let bytes = w.array(u8_, 16);
            let in6_addr = w.structure("in6_addr", 16, &[Field::new("s6_addr", bytes, 0)]);
            common.extend([Field::new("skc_v6_daddr", in6_addr, 56), Field::new("skc_v6_rcv_saddr", in6_addr, 72)]);
        }
        let sock_common = w.structure("sock_common", 136, &common);
        let mut sock = vec![Field::new("__sk_common", sock_common, 0)];
        if k.protocol_u16 {
            sock.extend([Field::new("sk_type", u16_, 512), Field::new("sk_protocol", u16_, 514)]);
        } else {
            // unsigned int sk_padding:1, sk_kern_sock:1, sk_no_check_tx:1,
            // sk_no_check_rx:1, sk_userlocks:4, sk_protocol:8, sk_type:16;
            let word = 140 * 8;
            sock.extend([
                Field::bits("sk_padding", uint, word, 1),
                Field::bits("sk_kern_sock", uint, word + 1, 1),
                Field::bits("sk_no_check_tx", uint, word + 2, 1),
                Field::bits("sk_no_check_rx", uint, word + 3, 1),
                Field::bits("sk_userlocks", uint, word + 4, 4),
                Field::bits("sk_protocol", uint, word + 8, 8),
                Field::bits("sk_type", uint, word + 16, 16),
            ]);
        }
        let sock = w.structure("sock", 760, &sock);
        let inet_sock =
            w.structure("inet_sock", 976, &[Field::new("sk", sock, 0), Field::new("inet_sport", be16, 782)]);
        let icsk = w.structure("inet_connection_sock", 1400, &[Field::new("icsk_inet", inet_sock, 0)]);
        let mut tcp = vec![Field::new("inet_conn", icsk, 0)];
        if k.byte_counters {
            tcp.extend([Field::new("bytes_received", u64_, 1520), Field::new("bytes_acked", u64_, 1600)]);
        }
        w.structure("tcp_sock", 2300, &tcp);
        w.structure("socket", 128, &[Field::new("state", int, 0), Field::new("sk", any, 24)]);

        let opf = w.typedef("blk_opf_t", u32_);
        let mut request = vec![Field::new("q", any, 0), Field::new("cmd_flags", opf, 16)];
        if k.rq_disk {
            request.push(Field::new("rq_disk", any, 168));
        }
        w.structure("request", 288, &request);
        let mut queue = vec![Field::new("queuedata", any, 8)];
        if k.queue_disk {
            queue.push(Field::new("disk", any, 112));
        }
        w.structure("request_queue", 1000, &queue);
        w.structure("gendisk", 1000, &[Field::new("major", int, 0), Field::new("first_minor", int, 4)]);

        w.structure("css_set", 800, &[Field::new("dfl_cgrp", any, 128)]);
        w.structure("cgroup", 2000, &[Field::new("kn", any, 264)]);
        let parent = if k.kn_parent_renamed { Field::new("__parent", any, 8) } else { Field::new("parent", any, 16) };
        w.structure("kernfs_node", 128, &[Field::new("count", int, 0), parent, Field::new("id", u64_, 80)]);

        #[cfg(target_arch = "x86_64")]
        {
            let names = [
                "r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di",
                "orig_ax", "ip", "cs", "flags", "sp", "ss",
            ];
            let regs: Vec<Field<'_>> = names.iter().zip(0..).map(|(name, i)| Field::new(name, ulong, 8 * i)).collect();
            w.structure("pt_regs", 168, &regs);
        }
        #[cfg(target_arch = "aarch64")]
        {
            let regs = w.array(u64_, 31);
            let fields = [
                Field::new("regs", regs, 0),
                Field::new("sp", u64_, 248),
                Field::new("pc", u64_, 256),
                Field::new("pstate", u64_, 264),
            ];
            w.structure("pt_regs", 336, &fields);
        }
        Btf::from(w.parse())
    }

    #[test]
    fn every_object_resolves_on_an_old_and_a_new_kernel() {
        for k in [OLD, BOTH_DISKS, NEW] {
            let btf = btf(k);
            let t = task(&btf).unwrap();
            assert_eq!(t.tgid, t.pid + 4, "tgid follows pid in every kernel");
            let f = file(&btf).unwrap();
            assert_ne!(f.f_dentry, f.f_inode);
            let s = sock(&btf).unwrap();
            assert!(s.sport > s.dport, "inet_sock follows its sock_common");
            request(&btf).unwrap();
            cgroup_walk(&btf).unwrap();
            syscall_args(&btf).unwrap();
        }
    }

    #[test]
    fn task_state_is_read_under_the_name_the_kernel_gives_it() {
        let (old, new) = (task(&btf(OLD)).unwrap(), task(&btf(NEW)).unwrap());
        assert_eq!(old.state, 16, "`state` before 5.14");
        assert_eq!(new.state, 24, "`__state` from 5.14");
        assert_eq!(
            (new.pid, new.tgid, new.real_parent, new.comm, new.mm, new.files),
            (2464, 2468, 2480, 3000, 2336, 3072)
        );
    }

    #[test]
    fn file_members_are_found_through_embedded_structs_and_anonymous_unions() {
        let f = file(&btf(NEW)).unwrap();
        assert_eq!((f.f_inode, f.f_pos, f.f_private_data), (32, 96, 200));
        assert_eq!(f.f_dentry, 64 + 8, "file.f_path.dentry");
        assert_eq!(f.dentry_name, 32 + 8, "dentry.d_name.name, after qstr's anonymous union");
        assert_eq!(f.dentry_name_len, 32 + 4, "d_name.len, in an anonymous struct in an anonymous union");
        assert_eq!(f.dentry_parent, 24);
        assert_eq!((f.inode_sb, f.inode_ino, f.sb_magic, f.sb_dev), (40, 64, 96, 16));
        assert_eq!((f.files_fdt, f.fdt_max_fds, f.fdt_fd), (32, 0, 8));
    }

    #[test]
    fn sock_protocol_is_a_byte_of_a_bitfield_word_before_5_6() {
        assert_eq!(sock(&btf(OLD)).unwrap().protocol, 141, "sk_protocol: bits 8 to 15 of the word at 140");
        assert_eq!(sock(&btf(NEW)).unwrap().protocol, 514, "sk_protocol: a u16 of its own");
        let s = sock(&btf(NEW)).unwrap();
        // Addresses and ports of sock_common, in anonymous structs inside anonymous unions.
        assert_eq!((s.daddr, s.rcv_saddr, s.dport, s.family, s.state), (0, 4, 12, 16, 18));
        assert_eq!((s.sport, s.socket_sk), (782, 24));
    }

    #[test]
    fn tcp_byte_counters_are_0_on_a_kernel_without_them() {
        let new = sock(&btf(NEW)).unwrap();
        assert!(new.tcp_bytes_acked > 0 && new.tcp_bytes_received > 0, "6.18 has the RFC 4898 counters");
        assert_eq!((new.tcp_bytes_acked, new.tcp_bytes_received), (1600, 1520));
        let old = sock(&btf(OLD)).unwrap();
        assert_eq!((old.tcp_bytes_acked, old.tcp_bytes_received), (0, 0), "unknown, never another member's");
    }

    #[test]
    fn ipv6_addresses_are_0_on_a_kernel_without_ipv6() {
        let new = sock(&btf(NEW)).unwrap();
        assert_eq!((new.v6_daddr, new.v6_rcv_saddr), (56, 72));
        let old = sock(&btf(OLD)).unwrap();
        assert_eq!((old.v6_daddr, old.v6_rcv_saddr), (0, 0));
        assert_eq!((old.daddr, old.rcv_saddr), (0, 4), "IPv4 is there all the same");
    }

    #[test]
    fn a_request_reaches_its_disk_through_rq_disk_while_there_is_one() {
        let old = request(&btf(OLD)).unwrap();
        assert_eq!((old.has_rq_disk, old.disk, old.q_disk), (1, 168, 0));
        // 5.15 and 5.16 have both: rq_disk is taken.
        let both = request(&btf(BOTH_DISKS)).unwrap();
        assert_eq!((both.has_rq_disk, both.disk, both.q_disk), (1, 168, 0));
        // 5.17 removed it: through the queue.
        let new = request(&btf(NEW)).unwrap();
        assert_eq!((new.has_rq_disk, new.disk, new.q_disk), (0, 0, 112));
        assert_eq!((new.q, new.cmd_flags, new.disk_major, new.disk_first_minor), (0, 16, 0, 4));
        let neither = request(&btf(Kernel { rq_disk: false, queue_disk: false, ..NEW })).unwrap_err();
        assert!(format!("{neither:#}").contains("no request.rq_disk either"), "{neither:#}");
    }

    #[test]
    fn the_cgroup_walk_follows_kernfs_parent_under_either_name() {
        let old = cgroup_walk(&btf(OLD)).unwrap();
        assert_eq!(old.kn_parent, 16, "`parent` before 6.15");
        let new = cgroup_walk(&btf(NEW)).unwrap();
        assert_eq!(new.kn_parent, 8, "`__parent` from 6.15");
        assert_eq!((new.task_cgroups, new.css_set_dfl_cgrp, new.cgroup_kn, new.kn_id), (3560, 128, 264, 80));
        assert_eq!(new.ino, 0, "left to the caller");
    }

    #[test]
    fn syscall_arguments_are_the_first_three_argument_registers() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(syscall_args(&btf(NEW)).unwrap(), [112, 104, 96], "di, si, dx");
        #[cfg(target_arch = "aarch64")]
        assert_eq!(syscall_args(&btf(NEW)).unwrap(), [0, 8, 16], "regs[0..3]");
    }

    #[test]
    fn a_member_no_spelling_of_which_the_kernel_has_is_an_error_naming_them() {
        let mut w = Writer::new();
        let int = w.signed("int", 4);
        w.structure("task_struct", 64, &[Field::new("pid", int, 0), Field::new("tgid", int, 4)]);
        let err = task(&Btf::from(w.parse())).unwrap_err();
        assert_eq!(err.to_string(), "kernel BTF has no task_struct.__state or state");
    }
}
