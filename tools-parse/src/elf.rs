//! ELF symbol lookup for uprobes: where a function of a shared library is,
//! as a file offset (the kernel places uprobes by file offset), and
//! whether the library exports it at all.
//!
//! A small reader of its own, bounded everywhere: the file is a regular
//! file of at most [`MAX_SIZE`] bytes, every table is checked against the
//! data before it is read, and nothing is allocated from a count in the
//! file. It reads 64-bit little-endian ELF (x86-64, arm64).

use std::{fs, io::Read as _, path::Path};

use anyhow::{bail, Context as _, Result};

/// The largest file read: C libraries are a few MB; a file larger than
/// this is not one.
pub const MAX_SIZE: u64 = 256 << 20;

const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const STT_FUNC: u8 = 2;
const STT_GNU_IFUNC: u8 = 10;

/// A parsed ELF file's function symbols.
pub struct Elf {
    data: Vec<u8>,
}

/// A section header: what the symbol lookup needs of it.
#[derive(Clone, Copy)]
struct Section {
    /// Offset of its name in the section-name table.
    name: u32,
    kind: u32,
    offset: usize,
    size: usize,
    /// For a symbol table, the index of its string table.
    link: u32,
    entsize: usize,
}

/// A program header: what address translation needs of it.
struct Segment {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    file_size: u64,
}

impl Elf {
    /// Reads `path`, refusing what is not a regular file of a sane size.
    pub fn open(path: &Path) -> Result<Elf> {
        let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            bail!("{} is not a regular file", path.display());
        }
        if meta.len() > MAX_SIZE {
            bail!("{} is {} bytes, more than any library ({MAX_SIZE})", path.display(), meta.len());
        }
        let mut data = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_SIZE).read_to_end(&mut data)?;
        Elf::parse(data).with_context(|| format!("{} is not an ELF library", path.display()))
    }

    pub fn parse(data: Vec<u8>) -> Result<Elf> {
        if data.get(..4) != Some(b"\x7fELF") {
            bail!("no ELF magic");
        }
        if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
            bail!("not 64-bit little-endian ELF");
        }
        let elf = Elf { data };
        // Check the tables once; lookups then only re-read what was checked.
        elf.sections()?;
        elf.segments()?;
        Ok(elf)
    }

    fn u16_at(&self, at: usize) -> Result<u16> {
        let b = self.data.get(at..at.checked_add(2).context("offset overflows")?).context("truncated ELF")?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32_at(&self, at: usize) -> Result<u32> {
        let b = self.data.get(at..at.checked_add(4).context("offset overflows")?).context("truncated ELF")?;
        Ok(u32::from_le_bytes(b.try_into()?))
    }

    fn u64_at(&self, at: usize) -> Result<u64> {
        let b = self.data.get(at..at.checked_add(8).context("offset overflows")?).context("truncated ELF")?;
        Ok(u64::from_le_bytes(b.try_into()?))
    }

    /// (offset, entry size, count) of a table whose header fields are at
    /// `off`, `entsize` and `num`, checked to lie inside the file.
    fn table(&self, off: usize, entsize: usize, num: usize, min_entsize: usize) -> Result<(usize, usize, usize)> {
        let (start, size, count) =
            (self.u64_at(off)? as usize, self.u16_at(entsize)? as usize, self.u16_at(num)? as usize);
        if count > 0 && size < min_entsize {
            bail!("table entries of {size} bytes, fewer than {min_entsize}");
        }
        let end = size.checked_mul(count).and_then(|n| n.checked_add(start)).context("table size overflows")?;
        if end > self.data.len() {
            bail!("a table runs past the end of the file");
        }
        Ok((start, size, count))
    }

    fn sections(&self) -> Result<Vec<Section>> {
        let (start, size, count) = self.table(0x28, 0x3a, 0x3c, 0x40)?;
        (0..count)
            .map(|i| {
                let h = start + i * size;
                let section = Section {
                    name: self.u32_at(h)?,
                    kind: self.u32_at(h + 4)?,
                    offset: self.u64_at(h + 0x18)? as usize,
                    size: self.u64_at(h + 0x20)? as usize,
                    link: self.u32_at(h + 0x28)?,
                    entsize: self.u64_at(h + 0x38)? as usize,
                };
                let end = section.offset.checked_add(section.size).context("section size overflows")?;
                // SHT_NOBITS (8) occupies no file space.
                if section.kind != 8 && end > self.data.len() {
                    bail!("section {i} runs past the end of the file");
                }
                Ok(section)
            })
            .collect()
    }

    fn segments(&self) -> Result<Vec<Segment>> {
        let (start, size, count) = self.table(0x20, 0x36, 0x38, 0x38)?;
        (0..count)
            .map(|i| {
                let h = start + i * size;
                Ok(Segment {
                    kind: self.u32_at(h)?,
                    flags: self.u32_at(h + 4)?,
                    offset: self.u64_at(h + 8)?,
                    vaddr: self.u64_at(h + 0x10)?,
                    file_size: self.u64_at(h + 0x20)?,
                })
            })
            .collect()
    }

    /// The defined function `name`, as a file offset for a uprobe: from the
    /// dynamic symbols (what the library exports), else the full symbol
    /// table. None when the file has no such function.
    pub fn function_offset(&self, name: &str) -> Result<Option<u64>> {
        let sections = self.sections()?;
        for wanted in [SHT_DYNSYM, SHT_SYMTAB] {
            for table in sections.iter().filter(|s| s.kind == wanted && s.entsize >= 24) {
                let Some(strtab) = sections.get(table.link as usize) else { continue };
                let (strings, strings_len) = (strtab.offset, strtab.size);
                for i in 0..table.size / table.entsize {
                    let sym = table.offset + i * table.entsize;
                    let info = *self.data.get(sym + 4).context("truncated symbol")?;
                    let value = self.u64_at(sym + 8)?;
                    let shndx = self.u16_at(sym + 6)?;
                    if !matches!(info & 0xf, STT_FUNC | STT_GNU_IFUNC) || value == 0 || shndx == 0 {
                        continue;
                    }
                    let name_at = self.u32_at(sym)? as usize;
                    if name_at >= strings_len || self.c_str(strings + name_at, strings + strings_len) != name.as_bytes()
                    {
                        continue;
                    }
                    return self.file_offset(value).map(Some);
                }
            }
        }
        Ok(None)
    }

    /// The contents of section `name` (`.BTF` of a kernel image), if any.
    pub fn section(&self, name: &str) -> Result<Option<&[u8]>> {
        let sections = self.sections()?;
        let Some(names) = sections.get(self.u16_at(0x3e)? as usize) else { return Ok(None) };
        let found = sections.iter().find(|s| {
            let at = s.name as usize;
            at < names.size && self.c_str(names.offset + at, names.offset + names.size) == name.as_bytes()
        });
        Ok(found.filter(|s| s.kind != 8).map(|s| &self.data[s.offset..s.offset + s.size]))
    }

    fn c_str(&self, start: usize, end: usize) -> &[u8] {
        let bytes = self.data.get(start..end.min(self.data.len())).unwrap_or_default();
        &bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())]
    }

    /// The file offset of virtual address `vaddr`: through the executable
    /// loadable segment that holds it.
    fn file_offset(&self, vaddr: u64) -> Result<u64> {
        for s in self.segments()? {
            if s.kind == PT_LOAD && s.flags & PF_X != 0 && vaddr >= s.vaddr && vaddr - s.vaddr < s.file_size {
                return Ok(vaddr - s.vaddr + s.offset);
            }
        }
        bail!("address {vaddr:#x} is in no executable segment")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_resolver_functions_of_this_machines_libc() {
        let libc = Elf::open(Path::new("/lib/x86_64-linux-gnu/libc.so.6")).expect("glibc");
        for function in ["getaddrinfo", "gethostbyname", "gethostbyname2"] {
            let offset = libc.function_offset(function).unwrap().unwrap_or_else(|| panic!("{function}"));
            assert!(offset > 0);
        }
        assert_eq!(libc.function_offset("no_such_function_here").unwrap(), None);
    }

    #[test]
    fn refuses_what_is_not_an_elf_library() {
        assert!(Elf::open(Path::new("/etc/passwd")).is_err());
        assert!(Elf::open(Path::new("/dev/zero")).is_err(), "not a regular file");
        assert!(Elf::open(Path::new("/")).is_err());
        let libc = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        for cut in [16, 64, 4096, libc.len() / 2] {
            let truncated = Elf::parse(libc[..cut].to_vec());
            if let Ok(elf) = truncated {
                // What parses must still fail cleanly on lookups, never panic.
                let _ = elf.function_offset("getaddrinfo");
            }
        }
    }
}
