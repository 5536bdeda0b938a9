//! The benchmark floor: programs that do nothing, attached by `bench-floor`
//! to the hooks a tool uses, so `cargo xtask bench` can tell what attaching
//! anything there costs from what a tool's own work costs.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod bpf {
    use aya_ebpf::{
        macros::{raw_tracepoint, tracepoint, uprobe, uretprobe},
        programs::{ProbeContext, RawTracePointContext, RetProbeContext, TracePointContext},
    };
    // The crate's panic handler.
    use tools_ebpf as _;

    #[raw_tracepoint]
    pub fn floor_raw_tp(_ctx: RawTracePointContext) -> i32 {
        0
    }

    #[tracepoint]
    pub fn floor_tp(_ctx: TracePointContext) -> u32 {
        0
    }

    #[uprobe]
    pub fn floor_uprobe(_ctx: ProbeContext) -> u32 {
        0
    }

    #[uretprobe]
    pub fn floor_uretprobe(_ctx: RetProbeContext) -> u32 {
        0
    }
}
