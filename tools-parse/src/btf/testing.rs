//! A writer of raw BTF for tests: kernels' type information built in the
//! test itself (a struct here, a renamed member there), so the reader and
//! what the tools resolve with it are checked on any machine, as any user,
//! whatever kernel it runs and whether or not it has BTF.
//!
//! It writes what [`Btf::parse`] reads: the header (magic 0xeB9F, version
//! 1), the type section, then the string section. Types get ids in the
//! order they are added, from 1 (0 is void); a type may only refer to
//! types added before it, or to void (a pointer to void stands in for any
//! pointer whose target a test does not follow).

use super::{
    Btf, KIND_ARRAY, KIND_CONST, KIND_ENUM, KIND_ENUM64, KIND_FUNC, KIND_FUNC_PROTO, KIND_INT, KIND_PTR, KIND_STRUCT,
    KIND_TYPEDEF, KIND_UNION, KIND_VOLATILE,
};

/// A type's id in the BTF being written (0 is void).
pub type TypeId = u32;

/// Void: what a `void *` points to, what a function returning nothing returns.
pub const VOID: TypeId = 0;

const INT_SIGNED: u32 = 1;
const INT_CHAR: u32 = 2;
const INT_BOOL: u32 = 4;

/// A member of a struct or union.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    /// Empty for an anonymous member (an unnamed struct or union, whose own
    /// members are found as the outer one's).
    name: &'a str,
    ty: TypeId,
    bit_offset: u32,
    /// Bits of a bitfield member; 0 for a whole member.
    bits: u32,
}

impl<'a> Field<'a> {
    /// Member `name` of type `ty`, `offset` bytes from the start of its
    /// struct; `""` for an anonymous member.
    pub fn new(name: &'a str, ty: TypeId, offset: u32) -> Self {
        Field { name, ty, bit_offset: offset * 8, bits: 0 }
    }

    /// A bitfield member: `bits` bits of an integer type `ty`, from
    /// `bit_offset` bits after the start of its struct.
    pub fn bits(name: &'a str, ty: TypeId, bit_offset: u32, bits: u32) -> Self {
        assert!(bits > 0 && bits < 256, "a bitfield has 1 to 255 bits");
        Field { name, ty, bit_offset, bits }
    }
}

/// The types of [`Writer::kernel_types`].
pub struct KernelTypes {
    pub int: TypeId,
    pub uint: TypeId,
    pub long: TypeId,
    pub u8_: TypeId,
    pub u16_: TypeId,
    pub u64_: TypeId,
    pub char_: TypeId,
    pub u32_: TypeId,
    pub pid_t: TypeId,
}

/// Raw BTF, built type by type.
pub struct Writer {
    types: Vec<u8>,
    /// Starts with the empty string (offset 0: no name).
    strings: Vec<u8>,
    /// Types written so far.
    count: u32,
    /// The integer type arrays are indexed by, written with the first array.
    array_index: Option<TypeId>,
}

impl Default for Writer {
    fn default() -> Self {
        Writer { types: Vec::new(), strings: vec![0], count: 0, array_index: None }
    }
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Offset of `s` in the string section (added once).
    fn string(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let mut wanted = s.as_bytes().to_vec();
        wanted.push(0);
        // Only a whole string after a terminator (or at the start) is the same name.
        let found =
            (1..self.strings.len()).find(|&at| self.strings[at - 1] == 0 && self.strings[at..].starts_with(&wanted));
        found.unwrap_or_else(|| {
            let at = self.strings.len();
            self.strings.extend_from_slice(&wanted);
            at
        }) as u32
    }

    fn u32(&mut self, value: u32) {
        self.types.extend_from_slice(&value.to_le_bytes());
    }

    /// The record every type starts with: name, info (vlen, kind, kind_flag)
    /// and size or type. The caller writes the kind's own data after it.
    fn record(&mut self, name: &str, kind: u32, vlen: usize, kind_flag: bool, size_or_type: u32) -> TypeId {
        assert!(vlen <= 0xffff, "at most 65535 members");
        let name = self.string(name);
        self.u32(name);
        self.u32(vlen as u32 | kind << 24 | u32::from(kind_flag) << 31);
        self.u32(size_or_type);
        self.count += 1;
        self.count
    }

    fn int_encoded(&mut self, name: &str, size: u32, encoding: u32) -> TypeId {
        let id = self.record(name, KIND_INT, 0, false, size);
        self.u32((encoding << 24) | (size * 8));
        id
    }

    /// An unsigned integer of `size` bytes.
    pub fn int(&mut self, name: &str, size: u32) -> TypeId {
        self.int_encoded(name, size, 0)
    }

    /// A signed integer of `size` bytes.
    pub fn signed(&mut self, name: &str, size: u32) -> TypeId {
        self.int_encoded(name, size, INT_SIGNED)
    }

    /// `char`.
    pub fn char(&mut self) -> TypeId {
        self.int_encoded("char", 1, INT_CHAR | INT_SIGNED)
    }

    /// `_Bool`.
    pub fn bool(&mut self) -> TypeId {
        self.int_encoded("_Bool", 1, INT_BOOL)
    }

    /// The C types every kernel fixture starts from, as the kernel names them.
    pub fn kernel_types(&mut self) -> KernelTypes {
        let int = self.signed("int", 4);
        let uint = self.int("unsigned int", 4);
        let u16_ = self.int("unsigned short", 2);
        KernelTypes {
            int,
            uint,
            long: self.signed("long", 8),
            u8_: self.int("unsigned char", 1),
            u16_,
            u64_: self.int("unsigned long long", 8),
            char_: self.char(),
            u32_: self.typedef("u32", uint),
            pid_t: self.typedef("pid_t", int),
        }
    }

    /// A pointer to `target`.
    pub fn ptr(&mut self, target: TypeId) -> TypeId {
        self.record("", KIND_PTR, 0, false, target)
    }

    /// `target elem[count]`.
    pub fn array(&mut self, elem: TypeId, count: u32) -> TypeId {
        let index = match self.array_index {
            Some(index) => index,
            None => {
                let index = self.int("__ARRAY_SIZE_TYPE__", 4);
                *self.array_index.insert(index)
            }
        };
        let id = self.record("", KIND_ARRAY, 0, false, 0);
        self.u32(elem);
        self.u32(index);
        self.u32(count);
        id
    }

    fn members(&mut self, kind: u32, name: &str, size: u32, fields: &[Field<'_>]) -> TypeId {
        // Once a member is a bitfield, every member's offset carries its
        // bitfield size (0 for a whole member) in its top 8 bits.
        let kind_flag = fields.iter().any(|f| f.bits > 0);
        let id = self.record(name, kind, fields.len(), kind_flag, size);
        for field in fields {
            assert!(field.bit_offset < 1 << 24 || !kind_flag, "a bitfield struct's offsets have 24 bits");
            let name = self.string(field.name);
            self.u32(name);
            self.u32(field.ty);
            self.u32(if kind_flag { field.bits << 24 | field.bit_offset } else { field.bit_offset });
        }
        id
    }

    /// A struct of `size` bytes (`name` empty: an anonymous one).
    pub fn structure(&mut self, name: &str, size: u32, fields: &[Field<'_>]) -> TypeId {
        self.members(KIND_STRUCT, name, size, fields)
    }

    /// A union of `size` bytes (`name` empty: an anonymous one).
    pub fn union(&mut self, name: &str, size: u32, fields: &[Field<'_>]) -> TypeId {
        self.members(KIND_UNION, name, size, fields)
    }

    /// An enum of 4-byte values.
    pub fn enumeration(&mut self, name: &str, values: &[(&str, i32)]) -> TypeId {
        let signed = values.iter().any(|&(_, v)| v < 0);
        let id = self.record(name, KIND_ENUM, values.len(), signed, 4);
        for &(value_name, value) in values {
            let value_name = self.string(value_name);
            self.u32(value_name);
            self.u32(value as u32);
        }
        id
    }

    /// An enum of 8-byte values (ENUM64, 6.0+).
    pub fn enumeration64(&mut self, name: &str, values: &[(&str, i64)]) -> TypeId {
        let signed = values.iter().any(|&(_, v)| v < 0);
        let id = self.record(name, KIND_ENUM64, values.len(), signed, 8);
        for &(value_name, value) in values {
            let value_name = self.string(value_name);
            self.u32(value_name);
            self.u32(value as u64 as u32);
            self.u32((value as u64 >> 32) as u32);
        }
        id
    }

    /// `typedef target name`.
    pub fn typedef(&mut self, name: &str, target: TypeId) -> TypeId {
        self.record(name, KIND_TYPEDEF, 0, false, target)
    }

    /// `const target`.
    pub fn constant(&mut self, target: TypeId) -> TypeId {
        self.record("", KIND_CONST, 0, false, target)
    }

    /// `volatile target`.
    pub fn volatile(&mut self, target: TypeId) -> TypeId {
        self.record("", KIND_VOLATILE, 0, false, target)
    }

    /// A function prototype: what it returns and its parameters.
    pub fn func_proto(&mut self, returns: TypeId, params: &[(&str, TypeId)]) -> TypeId {
        let id = self.record("", KIND_FUNC_PROTO, params.len(), false, returns);
        for &(param, ty) in params {
            let param = self.string(param);
            self.u32(param);
            self.u32(ty);
        }
        id
    }

    /// A global function `name` of prototype `proto`.
    pub fn func(&mut self, name: &str, proto: TypeId) -> TypeId {
        const LINKAGE_GLOBAL: usize = 1;
        self.record(name, KIND_FUNC, LINKAGE_GLOBAL, false, proto)
    }

    /// The BTF as the kernel exposes it: header, types, strings.
    pub fn bytes(&self) -> Vec<u8> {
        const HEADER_LEN: u32 = 24;
        let mut out = Vec::with_capacity(HEADER_LEN as usize + self.types.len() + self.strings.len());
        out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
        out.push(1); // version
        out.push(0); // flags
        let types_len = self.types.len() as u32;
        for field in [HEADER_LEN, 0, types_len, types_len, self.strings.len() as u32] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }

    /// The BTF written so far, read back.
    pub fn parse(&self) -> Btf {
        Btf::parse(self.bytes()).expect("the writer's BTF parses")
    }
}
