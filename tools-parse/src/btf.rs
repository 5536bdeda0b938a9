//! Struct offsets, enum values and tracepoint prototypes from the running
//! kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! A small reader of its own: it indexes the type section once and resolves
//! only the names a tool asks for, so no offset is ever a literal and renames
//! across kernels (`state` → `__state`, ...) are handled by asking for each
//! spelling in turn.

use std::{cell::RefCell, collections::HashMap, fs, io::Read as _, path::Path};

use anyhow::{bail, Context as _, Result};

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// The largest BTF read: a kernel's is a few MB (tens with every module's).
pub const MAX_SIZE: u64 = 128 << 20;

/// How deep anonymous members and array element types are followed: real
/// kernels nest a few levels; a file whose types refer to themselves would
/// otherwise recurse until the stack runs out.
const MAX_DEPTH: u32 = 16;

/// How many members one lookup may look at: a struct whose anonymous
/// members lead back to it would otherwise be searched exponentially
/// (task_struct, the largest, has a few hundred).
const MAX_MEMBERS_VISITED: u32 = 100_000;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

pub struct Btf {
    data: Data,
    types: usize,
    strings: usize,
    strings_len: usize,
    /// Byte offset of each type record, indexed by type id (id 0 is void).
    records: Vec<u32>,
    /// Types already looked up by (kinds, name): each lookup scans every
    /// type (about 1.5 ms on a current kernel), and tools ask for the same
    /// structs' members one by one.
    /// Keyed by (a bit per kind asked for, name).
    found: RefCell<HashMap<(u32, String), Option<u32>>>,
}

/// The bytes of a BTF: the running kernel's mapped where it allows it
/// (Linux 6.16+), else read. A read of /sys/kernel/btf/vmlinux goes 4 KiB
/// at a time: about 6 ms of a tool's start-up for a 5 MB BTF, and 5 MB of
/// its memory; the mapping costs a fraction of a millisecond and no copy.
enum Data {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for Data {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Data::Mapped(map) => map,
            Data::Read(data) => data,
        }
    }
}

/// Where a member lies in its struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Bytes from the start of the outermost struct.
    pub offset: u32,
    /// Size in bytes of the member's type.
    pub size: u32,
    type_id: u32,
}

#[derive(Clone, Copy)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    size_or_type: u32,
    /// Offset of the kind-specific data that follows the common header.
    extra: usize,
}

impl Btf {
    /// The running kernel's BTF, if it has one: mapped where the kernel
    /// allows it, else read.
    pub fn from_sys_fs() -> Result<Self> {
        let path = Path::new(VMLINUX);
        let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: a private, read-only mapping of the kernel's own BTF,
        // which never changes while it runs (no file under us to shrink).
        let mapped = unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) };
        // Anything short of a whole BTF (a kernel that maps it not, or
        // reports a size of its own) is read instead.
        match mapped.ok().filter(|map| map.len() as u64 <= MAX_SIZE).map(|map| Self::from_data(Data::Mapped(map))) {
            Some(Ok(btf)) => Ok(btf),
            _ => Self::from_file(path),
        }
    }

    /// Reads a BTF file: a regular file of at most [`MAX_SIZE`] bytes (so
    /// `/dev/zero` or a FIFO is refused at once, not read until memory runs out).
    pub fn from_file(path: &Path) -> Result<Self> {
        let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let meta = file.metadata()?;
        // sysfs files report a size of their own (or 4096): only the type is checked there.
        if !meta.is_file() {
            bail!("not a regular file");
        }
        if meta.len() > MAX_SIZE {
            bail!("{} bytes: larger than any kernel's BTF ({MAX_SIZE})", meta.len());
        }
        let mut data = Vec::new();
        file.take(MAX_SIZE + 1).read_to_end(&mut data).with_context(|| format!("reading {}", path.display()))?;
        if data.len() as u64 > MAX_SIZE {
            bail!("larger than any kernel's BTF ({MAX_SIZE} bytes)");
        }
        Self::parse(data).context("not a BTF file")
    }

    pub fn parse(data: Vec<u8>) -> Result<Self> {
        Self::from_data(Data::Read(data))
    }

    fn from_data(data: Data) -> Result<Self> {
        let u16_at = |off: usize| data.get(off..off + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if u16_at(0) != Some(0xeb9f) {
            bail!("not little-endian BTF (bad magic)");
        }
        let u32_at = |off: usize| -> Result<u32> {
            let b = data.get(off..off + 4).context("truncated BTF header")?;
            Ok(u32::from_le_bytes(b.try_into()?))
        };
        let hdr_len = u32_at(4)? as usize;
        let types = hdr_len + u32_at(8)? as usize;
        let types_len = u32_at(12)? as usize;
        let strings = hdr_len + u32_at(16)? as usize;
        let strings_len = u32_at(20)? as usize;
        if types + types_len > data.len() || strings + strings_len > data.len() {
            bail!("BTF sections run past the end of the data");
        }
        let mut btf = Btf { data, types, strings, strings_len, records: vec![0], found: RefCell::default() };
        let mut off = 0;
        while off < types_len {
            btf.records.push(off as u32);
            let ty = btf.type_at(off)?;
            off = ty.extra - types + btf.extra_len(&ty)?;
        }
        Ok(btf)
    }

    fn u32_at(&self, off: usize) -> u32 {
        self.data.get(off..off + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).unwrap_or(0)
    }

    fn type_at(&self, record: usize) -> Result<Type> {
        let base = self.types + record;
        if base + 12 > self.data.len() {
            bail!("truncated BTF type record");
        }
        let info = self.u32_at(base + 4);
        Ok(Type {
            name_off: self.u32_at(base),
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: self.u32_at(base + 8),
            extra: base + 12,
        })
    }

    fn extra_len(&self, ty: &Type) -> Result<usize> {
        Ok(match ty.kind {
            KIND_INT => 4,
            KIND_ARRAY => 12,
            KIND_STRUCT | KIND_UNION => 12 * ty.vlen,
            KIND_ENUM => 8 * ty.vlen,
            KIND_FUNC_PROTO => 8 * ty.vlen,
            14 /* VAR */ | 17 /* DECL_TAG */ => 4,
            15 /* DATASEC */ | KIND_ENUM64 => 12 * ty.vlen,
            0 | KIND_PTR | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_FUNC | 16
            | KIND_TYPE_TAG => 0,
            kind => bail!("unknown BTF kind {kind}"),
        })
    }

    fn ty(&self, id: u32) -> Option<Type> {
        let record = *self.records.get(id as usize)?;
        if id == 0 {
            return None;
        }
        self.type_at(record as usize).ok()
    }

    fn name(&self, name_off: u32) -> &[u8] {
        let start = self.strings + name_off as usize;
        let end = self.strings + self.strings_len;
        let bytes = self.data.get(start..end).unwrap_or_default();
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        &bytes[..len]
    }

    /// Whether the BTF describes struct `name`.
    pub fn has_struct(&self, name: &str) -> bool {
        self.find(&[KIND_STRUCT], name).is_some()
    }

    /// Id of the first type of one of `kinds` named `name`.
    fn find(&self, kinds: &[u32], name: &str) -> Option<u32> {
        let key = (kinds.iter().fold(0, |bits, kind| bits | 1 << kind), name.to_owned());
        if let Some(&id) = self.found.borrow().get(&key) {
            return id;
        }
        let id = (1..self.records.len() as u32).find(|&id| {
            self.ty(id).is_some_and(|ty| kinds.contains(&ty.kind) && self.name(ty.name_off) == name.as_bytes())
        });
        self.found.borrow_mut().insert(key, id);
        id
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<(u32, Type)> {
        for _ in 0..32 {
            let ty = self.ty(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = ty.size_or_type,
                _ => return Some((id, ty)),
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> Option<u32> {
        self.size_at_depth(id, 0)
    }

    fn size_at_depth(&self, id: u32, depth: u32) -> Option<u32> {
        let (_, ty) = self.resolve(id)?;
        match ty.kind {
            KIND_PTR => Some(8),
            KIND_ARRAY if depth < MAX_DEPTH => {
                let elem = self.u32_at(ty.extra);
                let count = self.u32_at(ty.extra + 8);
                self.size_at_depth(elem, depth + 1)?.checked_mul(count)
            }
            KIND_ARRAY => None,
            _ => Some(ty.size_or_type),
        }
    }

    /// A member of a struct or union, searching inside anonymous members too.
    fn member_of(&self, id: u32, name: &str) -> Option<Member> {
        let mut budget = MAX_MEMBERS_VISITED;
        self.member_at_depth(id, name, 0, &mut budget)
    }

    fn member_at_depth(&self, id: u32, name: &str, depth: u32, budget: &mut u32) -> Option<Member> {
        if depth > MAX_DEPTH {
            return None;
        }
        let (_, ty) = self.resolve(id)?;
        if ty.kind != KIND_STRUCT && ty.kind != KIND_UNION {
            return None;
        }
        for i in 0..ty.vlen {
            *budget = budget.checked_sub(1)?;
            let m = ty.extra + 12 * i;
            let (name_off, type_id, raw_offset) = (self.u32_at(m), self.u32_at(m + 4), self.u32_at(m + 8));
            let bit_offset = if ty.kind_flag { raw_offset & 0xff_ffff } else { raw_offset };
            let found = if name_off == 0 {
                self.member_at_depth(type_id, name, depth + 1, budget)
                    .map(|inner| Member { offset: inner.offset.wrapping_add(bit_offset / 8), ..inner })
            } else if self.name(name_off) == name.as_bytes() {
                Some(Member { offset: bit_offset / 8, size: self.size_of(type_id)?, type_id })
            } else {
                None
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// Offset of `path` (`"ns.inum"`: members of members) in struct `strukt`.
    pub fn member(&self, strukt: &str, path: &str) -> Option<Member> {
        let id = self.find(&[KIND_STRUCT], strukt)?;
        let mut parts = path.split('.');
        let mut member = self.member_of(id, parts.next()?)?;
        for part in parts {
            let inner = self.member_of(member.type_id, part)?;
            member = Member { offset: member.offset.checked_add(inner.offset)?, ..inner };
        }
        Some(member)
    }

    /// The first of `paths` that `strukt` has: the way to follow a rename.
    pub fn member_any(&self, strukt: &str, paths: &[&str]) -> Result<Member> {
        paths
            .iter()
            .find_map(|path| self.member(strukt, path))
            .with_context(|| format!("kernel BTF has no {strukt}.{}", paths.join(" or ")))
    }

    /// Size of struct `strukt`.
    pub fn struct_size(&self, strukt: &str) -> Result<u32> {
        let id = self.find(&[KIND_STRUCT], strukt).with_context(|| format!("kernel BTF has no struct {strukt}"))?;
        self.size_of(id).context("unsized struct")
    }

    /// Arguments a raw tracepoint passes, from its `btf_trace_<name>`
    /// typedef (a pointer to a function whose first parameter is the context).
    pub fn raw_tracepoint_args(&self, tracepoint: &str) -> Option<usize> {
        let typedef = self.find(&[KIND_TYPEDEF], &format!("btf_trace_{tracepoint}"))?;
        let (_, ptr) = self.resolve(typedef)?;
        let (_, proto) = self.resolve(ptr.size_or_type)?;
        (proto.kind == KIND_FUNC_PROTO).then(|| proto.vlen.saturating_sub(1))
    }

    /// How many parameters kernel function `name` takes (fexit finds its
    /// return value after them).
    pub fn function_params(&self, name: &str) -> Option<usize> {
        let func = self.ty(self.function_id(name)?)?;
        let (_, proto) = self.resolve(func.size_or_type)?;
        (proto.kind == KIND_FUNC_PROTO).then_some(proto.vlen)
    }

    /// The type id of kernel function `name`, if this BTF describes it (a
    /// function of a module is in the module's BTF, not in vmlinux's).
    pub fn function_id(&self, name: &str) -> Option<u32> {
        self.find(&[KIND_FUNC], name)
    }

    /// Names and values of enum `name`.
    pub fn enum_values(&self, name: &str) -> Option<Vec<(String, i64)>> {
        let id = self.find(&[KIND_ENUM, KIND_ENUM64], name)?;
        let ty = self.ty(id)?;
        let step = if ty.kind == KIND_ENUM { 8 } else { 12 };
        Some(
            (0..ty.vlen)
                .map(|i| {
                    let e = ty.extra + step * i;
                    let value = if ty.kind == KIND_ENUM {
                        self.u32_at(e + 4) as i32 as i64
                    } else {
                        ((self.u32_at(e + 8) as u64) << 32 | self.u32_at(e + 4) as u64) as i64
                    };
                    (String::from_utf8_lossy(self.name(self.u32_at(e))).into_owned(), value)
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{
        testing::{Field, KernelTypes, TypeId, Writer, VOID},
        *,
    };

    /// Which spellings a fixture kernel has: `task_struct.state` (a
    /// volatile long) until 5.14, `__state` (an unsigned int) since;
    /// `sched_switch` with 3 arguments until 5.18, 4 since.
    #[derive(Clone, Copy, PartialEq)]
    enum Kernel {
        Old,
        New,
    }

    /// A kernel's BTF cut down to what these tests look up, with the
    /// shapes real kernels give it: members behind typedefs and
    /// qualifiers, embedded structs, anonymous unions and structs, a
    /// bitfield word, arrays, tracepoint prototypes, enums, a function.
    fn kernel(release: Kernel) -> Btf {
        let old = release == Kernel::Old;
        let mut w = Writer::new();
        let KernelTypes { int: _, uint, long, u8_, u16_, u64_, char_, u32_, pid_t } = w.kernel_types();
        let bool_ = w.bool();
        let any = w.ptr(VOID);

        // struct qstr { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const unsigned char *name; }
        let hash_and_len = w.structure("", 8, &[Field::new("hash", u32_, 0), Field::new("len", u32_, 4)]);
        let hash_len = w.union("", 8, &[Field::new("", hash_and_len, 0), Field::new("hash_len", u64_, 0)]);
        let const_u8 = w.constant(u8_);
        let name = w.ptr(const_u8);
        let qstr = w.structure("qstr", 16, &[Field::new("", hash_len, 0), Field::new("name", name, 8)]);
        w.structure("dentry", 192, &[Field::new("d_parent", any, 24), Field::new("d_name", qstr, 32)]);
        let path = w.structure("path", 16, &[Field::new("mnt", any, 0), Field::new("dentry", any, 8)]);
        w.structure("file", 232, &[Field::new("f_path", path, 16), Field::new("f_inode", any, 32)]);

        let volatile_long = w.volatile(long);
        let state = if old { Field::new("state", volatile_long, 16) } else { Field::new("__state", uint, 24) };
        let comm = w.array(char_, 16);
        let task = w.structure(
            "task_struct",
            9792,
            &[state, Field::new("pid", pid_t, 2464), Field::new("tgid", pid_t, 2468), Field::new("comm", comm, 3000)],
        );
        let task_ptr = w.ptr(task);

        // sock_common, then `sk_protocol`: 8 bits of a bitfield word
        // before 5.6, a u16 of its own since.
        let common = w.structure("sock_common", 136, &[Field::new("skc_family", u16_, 16)]);
        let protocol =
            if old { Field::bits("sk_protocol", uint, 140 * 8 + 8, 8) } else { Field::new("sk_protocol", u16_, 514) };
        let mut sock = vec![Field::new("__sk_common", common, 0), protocol];
        if old {
            sock.extend([Field::bits("sk_padding", uint, 140 * 8, 1), Field::bits("sk_type", uint, 140 * 8 + 16, 16)]);
        }
        w.structure("sock", 760, &sock);

        // struct pid_namespace { ...; struct ns_common ns; }
        let ns_common = w.structure("ns_common", 24, &[Field::new("stashed", any, 0), Field::new("inum", uint, 16)]);
        w.structure("pid_namespace", 144, &[Field::new("ns", ns_common, 112)]);

        // btf_trace_<tracepoint>: a pointer to a function whose first
        // parameter is the context the raw tracepoint passes.
        let mut switch = vec![("__data", any), ("preempt", bool_), ("prev", task_ptr), ("next", task_ptr)];
        if !old {
            switch.push(("prev_state", uint));
        }
        let wakeup = vec![("__data", any), ("p", task_ptr)];
        for (tracepoint, params) in [("sched_switch", switch), ("sched_wakeup", wakeup)] {
            let proto = w.func_proto(VOID, &params);
            let ptr = w.ptr(proto);
            w.typedef(&format!("btf_trace_{tracepoint}"), ptr);
        }

        w.enumeration("req_op", &[("REQ_OP_READ", 0), ("REQ_OP_WRITE", 1), ("REQ_OP_FLUSH", 2), ("REQ_OP_LAST", 36)]);
        w.enumeration("signed_enum", &[("BELOW", -2), ("ZERO", 0)]);
        w.enumeration64("wide", &[("LOW", 1), ("HIGH", 1 << 40), ("NEGATIVE", -1)]);
        let read_iter = w.func_proto(long, &[("iocb", any), ("to", any)]);
        w.func("ext4_file_read_iter", read_iter);
        // inet_csk_accept(sk, flags, err, kern) until 6.10, (sk, arg) since.
        let accept_params: &[(&str, TypeId)] = if old {
            &[("sk", any), ("flags", uint), ("err", any), ("kern", bool_)]
        } else {
            &[("sk", any), ("arg", any)]
        };
        let accept = w.func_proto(any, accept_params);
        w.func("inet_csk_accept", accept);
        w.parse()
    }

    #[test]
    fn resolves_task_struct_members_on_an_old_and_a_new_kernel() {
        for release in [Kernel::Old, Kernel::New] {
            let btf = kernel(release);
            let pid = btf.member("task_struct", "pid").unwrap();
            let tgid = btf.member("task_struct", "tgid").unwrap();
            assert_eq!(pid.size, 4, "pid_t, through its typedef");
            assert_eq!(tgid.offset, pid.offset + 4, "tgid follows pid in every kernel");
            assert!(btf.member("task_struct", "no_such_member").is_none());
            assert!(btf.member("no_such_struct", "pid").is_none());
            assert_eq!(btf.member("task_struct", "comm").unwrap().size, 16, "char[16]");
            assert_eq!(btf.raw_tracepoint_args("sched_wakeup"), Some(1));
            assert_eq!(btf.raw_tracepoint_args("no_such_tracepoint"), None);
            let ops = btf.enum_values("req_op").unwrap();
            assert!(ops.iter().any(|(name, value)| name == "REQ_OP_WRITE" && *value == 1));
        }
    }

    #[test]
    fn follows_a_rename_to_the_spelling_the_kernel_has() {
        let old = kernel(Kernel::Old);
        let new = kernel(Kernel::New);
        let state = |btf: &Btf| btf.member_any("task_struct", &["__state", "state"]).unwrap();
        // A volatile long until 5.14, then an unsigned int.
        assert_eq!((state(&old).offset, state(&old).size), (16, 8));
        assert_eq!((state(&new).offset, state(&new).size), (24, 4));
        // The first spelling the struct has wins; none is an error naming them all.
        assert_eq!(new.member_any("task_struct", &["no_such", "pid", "tgid"]).unwrap().offset, 2464);
        let err = new.member_any("task_struct", &["no_such", "nor_this"]).unwrap_err();
        assert_eq!(err.to_string(), "kernel BTF has no task_struct.no_such or nor_this");
        // sched_switch gained `prev_state` in 5.18.
        assert_eq!(old.raw_tracepoint_args("sched_switch"), Some(3));
        assert_eq!(new.raw_tracepoint_args("sched_switch"), Some(4));
        // inet_csk_accept lost three parameters to one in 6.10.
        assert_eq!(old.function_params("inet_csk_accept"), Some(4));
        assert_eq!(new.function_params("inet_csk_accept"), Some(2));
        assert_eq!(new.function_params("ext4_file_read_iter"), Some(2));
        assert_eq!(new.function_params("no_such_function"), None);
    }

    #[test]
    fn member_paths_go_through_embedded_structs_and_anonymous_members() {
        let btf = kernel(Kernel::New);
        // file.f_path (at 16) . dentry (at 8 in struct path).
        assert_eq!(btf.member("file", "f_path.dentry").unwrap().offset, 24);
        assert_eq!(btf.member("file", "f_path").unwrap().size, 16);
        // dentry.d_name (at 32): qstr's `len` is in an anonymous struct in
        // an anonymous union; `name` follows the union.
        let len = btf.member("dentry", "d_name.len").unwrap();
        assert_eq!((len.offset, len.size), (36, 4));
        assert_eq!(btf.member("dentry", "d_name.hash_len").unwrap().offset, 32);
        assert_eq!(btf.member("dentry", "d_name.name").unwrap().offset, 40);
        assert_eq!(btf.member("pid_namespace", "ns.inum").unwrap().offset, 128);
        assert!(btf.member("file", "f_path.no_such").is_none());
        assert!(btf.member("file", "f_inode.anything").is_none(), "a pointer has no members");
    }

    #[test]
    fn a_bitfield_member_is_at_its_byte() {
        // Before 5.6: `unsigned int sk_padding:1, ...:7, sk_protocol:8, sk_type:16`
        // at byte 140: sk_protocol is the word's second byte.
        let old = kernel(Kernel::Old);
        assert_eq!(old.member("sock", "sk_protocol").unwrap().offset, 141);
        assert_eq!(old.member("sock", "sk_type").unwrap().offset, 142);
        // The members around the bitfield keep their offsets.
        assert_eq!(old.member("sock", "__sk_common.skc_family").unwrap().offset, 16);
        let new = kernel(Kernel::New);
        let protocol = new.member("sock", "sk_protocol").unwrap();
        assert_eq!((protocol.offset, protocol.size), (514, 2));
    }

    #[test]
    fn structs_enums_and_functions() {
        let btf = kernel(Kernel::New);
        assert!(btf.has_struct("task_struct"));
        assert!(!btf.has_struct("no_such_struct"));
        assert!(!btf.has_struct("pid_t"), "a typedef is no struct");
        assert_eq!(btf.struct_size("task_struct").unwrap(), 9792);
        assert_eq!(btf.struct_size("qstr").unwrap(), 16);
        assert!(btf.struct_size("no_such_struct").is_err());
        assert!(btf.function_id("ext4_file_read_iter").is_some());
        assert_eq!(btf.function_id("no_such_function"), None);
        assert_eq!(btf.function_id("task_struct"), None, "a struct is no function");
        assert_eq!(btf.enum_values("signed_enum").unwrap(), [("BELOW".to_owned(), -2), ("ZERO".to_owned(), 0)]);
        assert_eq!(
            btf.enum_values("wide").unwrap(),
            [("LOW".to_owned(), 1), ("HIGH".to_owned(), 1 << 40), ("NEGATIVE".to_owned(), -1)]
        );
        assert_eq!(btf.enum_values("no_such_enum"), None);
    }

    #[test]
    fn refuses_what_is_not_btf() {
        let bytes = Writer::new().bytes();
        assert!(Btf::parse(bytes.clone()).is_ok(), "no types at all is still BTF");
        let mut bad_magic = bytes.clone();
        bad_magic[0] = 0;
        assert!(Btf::parse(bad_magic).is_err());
        assert!(Btf::parse(bytes[..10].to_vec()).is_err(), "a truncated header");
        let mut w = Writer::new();
        w.int("int", 4);
        let whole = w.bytes();
        // The sections run past the end of the data.
        assert!(Btf::parse(whole[..whole.len() - 6].to_vec()).is_err());
    }
}
