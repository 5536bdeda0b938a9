//! Project tasks: `cargo xtask <command>`.

mod bench;
mod fuzz;
mod setup;
mod vm;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, run, test and install the eBPF tools")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks: nightly rust-src, bpf-linker (cached), Debian packages.
    Setup,
    /// Set up if needed, then build every tool (release).
    Build,
    /// Set up if needed, build, and run one tool: `cargo xtask run runqlat -- 1 5`.
    Run {
        tool: String,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up if needed, build, and run the whole test suite (as root): unit and
    /// integration tests on this kernel, then the kernel matrix (vm-test).
    Test {
        /// Skip the kernel matrix (for quick local runs; CI runs everything).
        #[arg(long)]
        host_only: bool,
        /// Extra arguments for the test harness (a test name filter, `--nocapture`, ...).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run every tool's tests inside Debian kernels booted under qemu, and print the matrix.
    VmTest {
        /// 5.10, 6.1, 6.12, 7.3 or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Only this tool's cells (all tools when omitted).
        #[arg(long)]
        tool: Option<String>,
    },
    /// Run one command inside a Debian kernel under qemu: `cargo xtask vm-run --kernel 6.1 -- CMD...`.
    VmRun {
        #[arg(long)]
        kernel: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Benchmark the tools against libbpf-tools and the floor; writes target/bench.md.
    Bench {
        /// One tool (runqlat, execsnoop, biolatency); all when omitted.
        tool: Option<String>,
        /// One short round of each measurement: checks the harness, not the numbers.
        #[arg(long)]
        quick: bool,
    },
    /// Fuzz the parsers of outside input (BTF, ELF, tracefs formats, /proc
    /// maps) with libFuzzer; a fault's input is kept in fuzz/regressions.
    Fuzz {
        /// One target (btf, elf, tracefs_format, proc_maps); all when omitted.
        target: Option<String>,
        /// How long each target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Build and copy the tool binaries into PREFIX/bin.
    Install {
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::setup(),
        Cmd::Build => build().map(drop),
        Cmd::Run { tool, args } => {
            let bin = build()?.join(&tool);
            if !bin.exists() {
                bail!("no tool named {tool}; tools: {}", tools()?.join(", "));
            }
            let status =
                Command::new(&bin).args(&args).status().with_context(|| format!("running {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Test { host_only, args } => {
            let bin_dir = test(&args)?;
            if host_only {
                return Ok(());
            }
            // One short round: the harness still works (no number can fail it).
            bench::bench(&bin_dir, &bench::Options { tool: None, quick: true })?;
            vm::vm_test(&vm::KERNELS.map(String::from), None)?;
            // Last: the matrix has fetched its kernels, whose BTF seeds the BTF target.
            fuzz::fuzz(None, 60)
        }
        Cmd::VmTest { kernel, tool } => {
            setup::setup()?;
            let kernels: Vec<String> = if kernel == "all" {
                vm::KERNELS.iter().map(|k| k.to_string()).collect()
            } else if vm::KERNELS.contains(&kernel.as_str()) {
                vec![kernel]
            } else {
                bail!("unknown kernel {kernel}: one of {} or all", vm::KERNELS.join(", "));
            };
            vm::vm_test(&kernels, tool.as_deref())
        }
        Cmd::VmRun { kernel, command } => vm::vm_run(&kernel, &command),
        Cmd::Bench { tool, quick } => {
            let bin_dir = build()?;
            require_root("the benchmarks load BPF programs")?;
            bench::bench(&bin_dir, &bench::Options { tool, quick })
        }
        Cmd::Fuzz { target, seconds } => {
            setup::setup()?;
            fuzz::fuzz(target.as_deref(), seconds)
        }
        Cmd::Install { prefix } => install(&prefix),
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

/// Tool names: one per file in tools-user/src/bin. This includes
/// `ebpf-tools-heatmap`, the renderer of the tools' captures (no BPF, no
/// root): `install` puts it beside them and `run` runs it like a tool.
fn tools() -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(workspace().join("tools-user/src/bin"))?
        .filter_map(|e| Some(e.ok()?.path().file_stem()?.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    Ok(names)
}

/// Sets up (cheap when done), builds the tools in release, returns their directory.
fn build() -> Result<PathBuf> {
    setup::setup()?;
    run(Command::new(env!("CARGO")).current_dir(workspace()).args(["build", "--release", "-p", "tools-user"]))?;
    Ok(workspace().join("target/release"))
}

/// Runs the host tests; returns the tools' directory.
fn test(args: &[String]) -> Result<PathBuf> {
    let bin_dir = build()?;
    // Without root the tests would fail one by one.
    require_root("the tests load BPF programs")?;
    run(Command::new(env!("CARGO"))
        .current_dir(workspace())
        // --release: the same build as the tools, so the eBPF crate is built once.
        .args(["test", "--release", "--workspace", "--exclude", "tools-ebpf", "--"])
        .args(args)
        .env("EBPF_TOOLS_BIN_DIR", &bin_dir))?;
    Ok(bin_dir)
}

fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{why}: run them as root");
    }
    Ok(())
}

fn install(prefix: &Path) -> Result<()> {
    let bin_dir = build()?;
    let dest = prefix.join("bin");
    fs::create_dir_all(&dest)?;
    for tool in tools()? {
        fs::copy(bin_dir.join(&tool), dest.join(&tool)).with_context(|| format!("installing {tool}"))?;
        println!("installed {}", dest.join(&tool).display());
    }
    // ext4slower traces the filesystem it is named after.
    for alias in ["xfsslower", "btrfsslower"] {
        let link = dest.join(alias);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("ext4slower", &link).with_context(|| format!("linking {alias}"))?;
        println!("installed {} -> ext4slower", link.display());
    }
    Ok(())
}

/// Runs a command, failing with its command line when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
