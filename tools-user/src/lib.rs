//! The shared runtime of the tools: loading with fallbacks, BTF offsets,
//! histograms, output formats, common flags, signals and exit status.
//! Each binary in `src/bin` holds only what is specific to its tool.

pub mod btf;
pub mod cli;
pub mod histogram;
pub mod lifetime;
pub mod loader;
pub mod output;
pub mod tracefs;

/// The eBPF object of a tool, built by `build.rs` and embedded in the binary.
#[macro_export]
macro_rules! ebpf_object {
    ($tool:literal) => {
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $tool))
    };
}
