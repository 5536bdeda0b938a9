//! Multi-uprobe links (Linux 6.6): one link puts a program on every given
//! offset of one file, and closing it takes them all off at once.
//!
//! A uprobe made through a perf event (aya's `UProbe::attach`) goes with a
//! grace period of its own, waited for under a lock the kernel holds
//! across it (`event_mutex`): gethostlatency's six hooks per C library
//! took 80 to 100 ms each to detach, one after another, whatever the
//! threads closing them.
//!
//! aya 0.14 loads a uprobe program with no expected attach type, and the
//! kernel links only programs loaded for `BPF_TRACE_UPROBE_MULTI`. So such
//! a program is linked here from the object by aya's own linker (aya-obj,
//! against the maps aya created for the object), loaded with that type,
//! and put in the object in the place of aya's, which was never loaded:
//! from there the loader treats it as any other program.

use std::{
    collections::HashSet,
    ffi::CString,
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::Map,
    programs::{loaded_programs, ProbeKind, Program, UProbe},
    Ebpf,
};
use aya_obj::{generated::bpf_insn, ProgramSection};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_TRACE_UPROBE_MULTI: u32 = 48;
const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;

/// Where a multi-uprobe link attaches: every offset of one file, each
/// with its cookie (`bpf_get_attach_cookie`), or none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UprobeMulti {
    /// The file, as this process can open it.
    pub binary: std::path::PathBuf,
    pub offsets: Vec<u64>,
    /// One per offset, or empty.
    pub cookies: Vec<u64>,
}

/// Loads `programs` of `object` (whose maps `ebpf` holds) for multi-uprobe
/// links, and puts them in the place of aya's, which it returns (unloaded,
/// as aya made them: [`restore`] puts them back for the rungs below).
/// Nothing is put in place unless every program loads. Fails on a kernel
/// that has no such links, which the kernel says when asked for one on a
/// file it cannot probe.
pub fn load(ebpf: &mut Ebpf, object: &[u8], programs: &[String]) -> Result<Vec<(String, Program)>> {
    let mut obj = aya_obj::Object::parse(object).context("reading the eBPF object")?;
    let definitions = obj.maps.clone();
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    let maps = ebpf.maps().filter_map(|(name, map)| Some((name, map_fd(map), definitions.get(name)?)));
    obj.relocate_maps(maps, &text_sections).context("relocating the object's maps")?;
    obj.relocate_calls(&text_sections).context("linking the object's functions")?;
    // Not sanitized: the helpers aya rewrites for old kernels are all older
    // than multi-uprobes.
    let mut loaded = Vec::new();
    for name in programs {
        let program = obj.programs.get(name).with_context(|| format!("eBPF object has no program {name}"))?;
        let kind = match program.section {
            ProgramSection::UProbe { sleepable: false } => ProbeKind::Entry,
            ProgramSection::URetProbe { sleepable: false } => ProbeKind::Return,
            _ => bail!("{name} is not a uprobe program"),
        };
        let instructions = &obj.functions[&program.function_key()].instructions;
        let fd = load_program(name, instructions, &obj.license)?;
        if let Err(err) =
            attach(fd.as_fd(), &UprobeMulti { binary: "/".into(), offsets: vec![0], cookies: vec![] }, false)
        {
            // "/" is no file to probe: a kernel with multi-uprobes says so.
            if err.raw_os_error() != Some(libc::EBADF) {
                bail!("this kernel has no multi-uprobe links (6.6+): {err}");
            }
        }
        // aya 0.14 takes a program it did not load only through its id,
        // which the kernel lists to CAP_SYS_ADMIN alone.
        let id = program_id(fd.as_fd())?;
        let info = loaded_programs()
            .find(|info| info.as_ref().map_or(true, |info| info.id() == id))
            .ok_or_else(|| anyhow!("{name}: program {id}, just loaded, is not listed"))?
            .with_context(|| format!("{name}: listing the kernel's programs (CAP_SYS_ADMIN)"))?;
        // SAFETY: the program is of type kprobe (a uprobe's) and was made
        // from a uprobe section of kind `kind`.
        let uprobe = unsafe { UProbe::from_program_info(info, name.clone().into(), kind) }?;
        loaded.push((name.clone(), Program::UProbe(uprobe)));
    }
    let mut replaced = Vec::new();
    for (name, program) in loaded {
        let place = ebpf.program_mut(&name).with_context(|| format!("eBPF object has no program {name}"))?;
        replaced.push((name, std::mem::replace(place, program)));
    }
    Ok(replaced)
}

/// Puts back the programs [`load`] replaced, dropping (and so unloading)
/// its own.
pub fn restore(ebpf: &mut Ebpf, replaced: Vec<(String, Program)>) {
    for (name, program) in replaced {
        if let Some(place) = ebpf.program_mut(&name) {
            *place = program;
        }
    }
}

/// A multi-uprobe link of program `program` at `at`'s offsets (at their
/// returns with `ret`); closing it detaches them all.
pub fn attach(program: BorrowedFd<'_>, at: &UprobeMulti, ret: bool) -> io::Result<OwnedFd> {
    if !at.cookies.is_empty() && at.cookies.len() != at.offsets.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "one cookie per offset"));
    }
    let path = CString::new(at.binary.as_os_str().as_bytes())?;
    let mut attr = [0u8; 64];
    put(&mut attr, 0, &(program.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 8, &BPF_TRACE_UPROBE_MULTI.to_ne_bytes());
    put(&mut attr, 16, &(path.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 24, &(at.offsets.as_ptr() as u64).to_ne_bytes());
    if !at.cookies.is_empty() {
        put(&mut attr, 40, &(at.cookies.as_ptr() as u64).to_ne_bytes());
    }
    put(&mut attr, 48, &(at.offsets.len() as u32).to_ne_bytes());
    put(&mut attr, 52, &(if ret { BPF_F_UPROBE_MULTI_RETURN } else { 0 }).to_ne_bytes());
    bpf(BPF_LINK_CREATE, &mut attr)
}

/// A program's descriptor in an aya map, for relocation: every variant
/// holds its `MapData`.
fn map_fd(map: &Map) -> RawFd {
    use Map as M;
    let (M::Array(data)
    | M::ArrayOfMaps(data)
    | M::BloomFilter(data)
    | M::CgroupArray(data)
    | M::CgroupStorage(data)
    | M::CgrpStorage(data)
    | M::CpuMap(data)
    | M::DevMap(data)
    | M::DevMapHash(data)
    | M::HashMap(data)
    | M::HashOfMaps(data)
    | M::InodeStorage(data)
    | M::LpmTrie(data)
    | M::LruHashMap(data)
    | M::PerCpuArray(data)
    | M::PerCpuCgroupStorage(data)
    | M::PerCpuHashMap(data)
    | M::PerCpuLruHashMap(data)
    | M::PerfEventArray(data)
    | M::ProgramArray(data)
    | M::Queue(data)
    | M::ReusePortSockArray(data)
    | M::RingBuf(data)
    | M::SockHash(data)
    | M::SockMap(data)
    | M::SkStorage(data)
    | M::Stack(data)
    | M::StackTraceMap(data)
    | M::Unsupported(data)
    | M::XskMap(data)) = map;
    data.fd().as_fd().as_raw_fd()
}

/// BPF_PROG_LOAD of a kprobe-type program expected at multi-uprobe links;
/// on a refusal, again with the verifier's log, whose end the error
/// quotes.
fn load_program(name: &str, instructions: &[bpf_insn], license: &CString) -> Result<OwnedFd> {
    // The kernel's name for it: 15 bytes at most, of [A-Za-z0-9_.].
    let short: Vec<u8> =
        name.bytes().filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.').take(15).collect();
    let mut log = vec![0u8; 0];
    loop {
        let mut attr = [0u8; 144];
        put(&mut attr, 0, &BPF_PROG_TYPE_KPROBE.to_ne_bytes());
        put(&mut attr, 4, &(instructions.len() as u32).to_ne_bytes());
        put(&mut attr, 8, &(instructions.as_ptr() as u64).to_ne_bytes());
        put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
        if !log.is_empty() {
            put(&mut attr, 24, &1u32.to_ne_bytes());
            put(&mut attr, 28, &(log.len() as u32).to_ne_bytes());
            put(&mut attr, 32, &(log.as_mut_ptr() as u64).to_ne_bytes());
        }
        put(&mut attr, 48, &short);
        put(&mut attr, 68, &BPF_TRACE_UPROBE_MULTI.to_ne_bytes());
        match bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => return Ok(fd),
            Err(err) if log.is_empty() => {
                log::info!("{name}: the kernel refused it ({err}): again with the verifier's log");
                log = vec![0u8; 1 << 20];
            }
            Err(err) => {
                let text =
                    String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(log.len())]).into_owned();
                let tail: Vec<&str> = text.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
                bail!("loading {name} for multi-uprobe links: {err}; verifier: {}", tail.join(" / "));
            }
        }
    }
}

/// The id the kernel gave program `fd`.
fn program_id(fd: BorrowedFd<'_>) -> Result<u32> {
    // struct bpf_prog_info begins { __u32 type; __u32 id; }: the kernel
    // fills as much of it as it is given.
    let mut info = [0u32; 2];
    let mut attr = [0u8; 16];
    put(&mut attr, 0, &(fd.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 4, &(std::mem::size_of_val(&info) as u32).to_ne_bytes());
    put(&mut attr, 8, &(info.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: a bpf_attr of the size passed, pointing at a live buffer of
    // the length it says.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, attr.as_mut_ptr(), attr.len()) };
    if ret < 0 {
        return Err(io::Error::last_os_error()).context("reading a program's id");
    }
    Ok(info[1])
}

fn put(attr: &mut [u8], at: usize, bytes: &[u8]) {
    attr[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A bpf() command that returns a new descriptor.
fn bpf(command: libc::c_long, attr: &mut [u8]) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a bpf_attr of the length passed (the kernel
    // requires the bytes past what the command reads to be zero), and the
    // pointers in it lead to buffers that outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, command, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, owned by no one.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_for_every_offset_or_none() {
        // Refused before any syscall: the descriptor is never used.
        let stdin = io::stdin();
        let at = UprobeMulti { binary: "/bin/true".into(), offsets: vec![1, 2], cookies: vec![7] };
        assert_eq!(attach(stdin.as_fd(), &at, false).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
