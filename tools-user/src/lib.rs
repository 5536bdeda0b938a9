//! The shared runtime of the tools: loading with fallbacks, BTF offsets,
//! event streams, histograms, columns and output formats, common flags,
//! signals and exit status, and what every program says about itself
//! (`--version`, man page, completions). Heatmaps are `tools_heatmap`'s.
//! Each binary in `src/bin` holds only what is specific to its tool: its
//! flags, its plan, its columns.

pub mod btf;
pub mod cgroup;
pub mod cli;
pub mod columns;
pub mod container;
pub mod diag;
pub mod driver;
pub mod events;
pub mod exporter;
pub mod histogram;
pub mod kernel_maps;
pub mod lifetime;
pub mod loader;
pub mod loss;
pub mod manual;
pub mod offsets;
pub mod output;
pub mod plan;
pub mod procfs;
pub mod tracefs;
pub mod uprobe_multi;

pub use tools_parse::elf;

/// The eBPF objects of a tool, both builds, made by `build.rs` and
/// embedded in the binary.
#[macro_export]
macro_rules! ebpf_object {
    ($tool:literal) => {
        $crate::loader::Objects {
            modern: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $tool)),
            legacy: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/legacy/", $tool)),
        }
    };
}
