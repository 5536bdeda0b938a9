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
    use super::*;

    #[test]
    fn every_object_resolves_on_the_running_kernel() {
        let btf = Btf::from_sys_fs().expect("kernel BTF");
        let t = task(&btf).unwrap();
        assert_eq!(t.tgid, t.pid + 4, "tgid follows pid in every kernel");
        let f = file(&btf).unwrap();
        assert_ne!(f.f_dentry, f.f_inode);
        let s = sock(&btf).unwrap();
        assert!(s.tcp_bytes_acked > 0 && s.tcp_bytes_received > 0, "6.18 has the RFC 4898 counters");
        assert!(s.sport > s.dport, "inet_sock follows its sock_common");
        request(&btf).unwrap();
        cgroup_walk(&btf).unwrap();
    }
}
