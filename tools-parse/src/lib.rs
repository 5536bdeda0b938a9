//! Parsers of what the tools read from outside the program: the kernel's
//! BTF (or a file the user names), ELF symbol tables of libraries,
//! tracefs format files, `/proc/PID/maps` and the cgroup paths that name
//! containers. Each is bounded (inputs are size-checked before they are
//! read, nothing is allocated from a count in the input without a bound,
//! recursion is limited) and fuzzed: see `fuzz/` and [`fuzz`], the entry
//! points the fuzz targets and the regression tests share.

pub mod btf;
pub mod cgroup_path;
pub mod elf;
pub mod fuzz;
pub mod maps;
pub mod tracefs;
