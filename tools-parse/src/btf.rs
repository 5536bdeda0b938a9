//! Struct offsets, enum values and tracepoint prototypes from the running
//! kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! A small reader of its own: it indexes the type section once and resolves
//! only the names a tool asks for, so no offset is ever a literal and renames
//! across kernels (`state` → `__state`, ...) are handled by asking for each
//! spelling in turn.

use std::{cell::RefCell, collections::HashMap, fs, io::Read as _, path::Path};

use anyhow::{bail, Context as _, Result};

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
    data: Vec<u8>,
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
    /// The running kernel's BTF, if it has one.
    pub fn from_sys_fs() -> Result<Self> {
        Self::from_file(Path::new(VMLINUX))
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
    use super::*;

    #[test]
    fn resolves_task_struct_members_from_the_running_kernel() {
        let btf = Btf::from_sys_fs().expect("kernel BTF");
        let pid = btf.member("task_struct", "pid").unwrap();
        let tgid = btf.member("task_struct", "tgid").unwrap();
        assert_eq!(pid.size, 4);
        assert_eq!(tgid.offset, pid.offset + 4, "tgid follows pid in every kernel");
        assert!(btf.member_any("task_struct", &["__state", "state"]).is_ok());
        assert!(btf.member("task_struct", "no_such_member").is_none());
        assert_eq!(btf.raw_tracepoint_args("sched_wakeup"), Some(1));
        assert!(matches!(btf.raw_tracepoint_args("sched_switch"), Some(3 | 4)));
        let ops = btf.enum_values("req_op").unwrap();
        assert!(ops.iter().any(|(name, value)| name == "REQ_OP_WRITE" && *value == 1));
    }
}
