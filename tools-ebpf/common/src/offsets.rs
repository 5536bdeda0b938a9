//! Struct member offsets the kernel side reads, one struct per kernel
//! object, shared by every tool that reads that object. User space resolves
//! each once at start-up from BTF (`tools-user/src/offsets.rs`, the one
//! place that knows every rename) and embeds it in the tool's
//! configuration. None is ever a literal: rustc emits no CO-RE relocations.

/// `struct task_struct`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskOffsets {
    pub pid: u32,
    pub tgid: u32,
    /// `__state` (5.14+) or `state`; read as 32 bits (the low half of the
    /// older `long`: x86 and arm64 are little-endian, and state bits fit).
    pub state: u32,
    pub real_parent: u32,
    pub comm: u32,
    pub mm: u32,
    /// `struct files_struct *files`: the descriptor table.
    pub files: u32,
    pub _pad: u32,
}

/// `struct file` and what it leads to: its dentry and name, its inode and
/// super block; and the descriptor table that leads to it
/// (`files_struct.fdt` → `fdtable.{max_fds, fd}`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FileOffsets {
    pub f_inode: u32,
    /// `f_path.dentry`.
    pub f_dentry: u32,
    pub f_pos: u32,
    /// `private_data`: a socket file's `struct socket`.
    pub f_private_data: u32,
    /// `d_name.name` (a pointer) and `d_name.len` (u32).
    pub dentry_name: u32,
    pub dentry_name_len: u32,
    pub dentry_parent: u32,
    pub inode_sb: u32,
    pub inode_ino: u32,
    pub sb_magic: u32,
    pub sb_dev: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
}

/// `struct sock` (its `sock_common`), `struct tcp_sock` and `struct socket`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockOffsets {
    /// `sk_protocol`: a u16 from 5.6, before that 8 bits of a bitfield word
    /// at a byte boundary; read as one byte either way.
    pub protocol: u32,
    pub family: u32,
    pub state: u32,
    /// Local port, network byte order (`inet_sock.inet_sport`: `skc_num`
    /// is zeroed when the port is released, before the CLOSE tracepoint).
    pub sport: u32,
    /// Remote port, network byte order (`skc_dport`).
    pub dport: u32,
    pub rcv_saddr: u32,
    pub daddr: u32,
    pub v6_rcv_saddr: u32,
    pub v6_daddr: u32,
    /// `tcp_sock.bytes_acked` and `.bytes_received` (RFC 4898, 4.1+); 0 when
    /// this kernel's BTF lacks them (then bytes are unknown).
    pub tcp_bytes_acked: u32,
    pub tcp_bytes_received: u32,
    /// `struct socket.sk`.
    pub socket_sk: u32,
}
