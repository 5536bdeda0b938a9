//! ebpf-tools-heatmap: draws a latency heatmap (one self-contained SVG)
//! from any tool's JSON Lines capture: runqlat's and biolatency's
//! histograms per interval, or the latencies of the event tools' records.
//! Not a tracer: it needs no BPF and no root.

use std::{
    fs::File,
    io::{BufReader, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context as _, Result};
use clap::Parser;
use tools_heatmap::Options;
use tools_user::{
    diag::{note, tool_name},
    lifetime::{self, BadInput},
    manual,
};

/// Draw a latency heatmap (SVG: time across, latency up, colour by count)
/// from a tool's --json capture.
#[derive(Parser, Debug)]
#[command(name = "ebpf-tools-heatmap", after_help = EXAMPLES)]
struct Args {
    /// The capture, JSON Lines from a tool's --json; standard input when
    /// absent or `-`.
    capture: Option<PathBuf>,

    /// Write the SVG to this file (atomically) instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE.svg")]
    output: Option<PathBuf>,

    #[command(flatten)]
    options: Options,
}

const EXAMPLES: &str = "examples:
    runqlat --json 1 60 > runqlat.jsonl; ebpf-tools-heatmap runqlat.jsonl -o runqlat.svg
    biolatency -D --json 1 | ebpf-tools-heatmap --key disk=sda > sda.svg
    ebpf-tools-heatmap --bin 0.5 --scale linear tcplife.jsonl -o tcplife.svg

exit status: 0 drawn (a last line cut short is left out, with a warning),
1 error writing the picture, 2 bad input (a capture that cannot be read;
a bad line, named) or bad usage";

fn main() -> ExitCode {
    lifetime::main_with("ebpf-tools-heatmap", || {
        // It waits for no signal: Ctrl-C ends it as it ends any program.
        lifetime::signals_end_the_process();
        let args = manual::parse::<Args>(tools_user::man_page!("ebpf-tools-heatmap.1"));
        // The capture is read a line at a time (it may be gigabytes); one
        // that cannot be read is bad input, named.
        let (svg, warnings) = match args.capture.as_deref().filter(|p| p.as_os_str() != "-") {
            Some(path) => {
                let named = |e: &dyn std::fmt::Display| BadInput(format!("{}: {e}", path.display()));
                let file = File::open(path).map_err(|e| named(&e))?;
                tools_heatmap::draw(BufReader::new(file), &args.options).map_err(|bad| named(&bad))?
            }
            None => tools_heatmap::draw(std::io::stdin().lock(), &args.options)
                .map_err(|bad| BadInput(format!("standard input: {bad}")))?,
        };
        for warning in warnings {
            note(&format!("{}: warning: {warning}", tool_name()));
        }
        write(&args, &svg)?;
        Ok(ExitCode::SUCCESS)
    })
}

fn write(args: &Args, svg: &str) -> Result<()> {
    match &args.output {
        Some(path) => {
            tools_heatmap::write_atomic(path, svg.as_bytes()).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(svg.as_bytes()).and_then(|()| out.flush()).map_err(tools_user::output::closed_or)
        }
    }
}
