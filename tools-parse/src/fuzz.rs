//! The fuzz targets' entry points (see `fuzz/`), shared with the
//! regression tests: each feeds arbitrary bytes to one parser and exercises
//! its lookups. Whatever the bytes, they must return: no panic, no hang,
//! no unbounded allocation.

use crate::{btf::Btf, elf::Elf, maps::parse_maps, tracefs::Format};

/// A fuzz target: its name and the parser it drives.
pub type Target = (&'static str, fn(&[u8]));

/// The parsers, by the name of their fuzz target.
pub const TARGETS: [Target; 5] = [
    ("btf", btf),
    ("elf", elf),
    ("tracefs_format", tracefs_format),
    ("proc_maps", proc_maps),
    ("cgroup_path", cgroup_path),
];

pub fn btf(data: &[u8]) {
    let Ok(btf) = Btf::parse(data.to_vec()) else { return };
    for (strukt, member) in [("task_struct", "pid"), ("task_struct", "__state"), ("sock", "__sk_common.skc_family")] {
        let _ = btf.member(strukt, member);
        let _ = btf.member_any(strukt, &[member, "state"]);
        let _ = btf.struct_size(strukt);
    }
    let _ = btf.member("pid_namespace", "ns.inum");
    let _ = btf.raw_tracepoint_args("sched_switch");
    let _ = btf.enum_values("req_op");
    let _ = btf.function_id("ext4_file_read_iter");
    let _ = btf.function_params("inet_csk_accept");
    let _ = btf.has_struct("request");
}

pub fn elf(data: &[u8]) {
    let Ok(elf) = Elf::parse(data.to_vec()) else { return };
    for function in ["getaddrinfo", "gethostbyname", "gethostbyname2"] {
        let _ = elf.function_offset(function);
    }
    let _ = elf.section(".BTF");
}

pub fn tracefs_format(data: &[u8]) {
    let format = Format::parse(String::from_utf8_lossy(data).into_owned());
    for field in ["pid", "prev_state", "skaddr", "filename"] {
        let _ = format.field(field);
        let _ = format.field_u32(field);
    }
    let _ = format.highest_printed_flag();
}

pub fn proc_maps(data: &[u8]) {
    let _ = parse_maps(&String::from_utf8_lossy(data), 1, |path| path.contains("libc"));
}

pub fn cgroup_path(data: &[u8]) {
    if let Some(container) = crate::cgroup_path::container_of(&String::from_utf8_lossy(data)) {
        let _ = container.short_id();
    }
}

#[cfg(test)]
mod tests {
    /// Every input a fuzz run ever found a fault with stays a test:
    /// `fuzz/regressions/<target>/`.
    #[test]
    fn regressions_found_by_fuzzing() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
        for (target, parse) in super::TARGETS {
            let Ok(dir) = std::fs::read_dir(root.join(target)) else { continue };
            for entry in dir {
                let path = entry.unwrap().path();
                parse(&std::fs::read(&path).unwrap());
            }
        }
    }
}
