//! Project tasks: `cargo xtask <command>`.

mod arch;
mod bench;
mod docs;
mod floor;
mod fuzz;
mod package;
mod setup;
mod vm;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use arch::Arch;
use clap::{Parser, Subcommand};
use setup::Needs;

#[derive(Parser)]
#[command(about = "Build, run, test and install the eBPF tools")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks to build, package and test: nightly
    /// rust-src, bpf-linker (cached), Debian packages. `build` and `run` install
    /// only what building needs, `deb` what packaging needs, `test` the rest.
    Setup,
    /// Set up if needed, then build every tool: release, statically linked
    /// (musl), in target/x86_64-unknown-linux-musl/release (arm64:
    /// target/aarch64-unknown-linux-musl/release).
    Build {
        /// Always the case; accepted for the habit.
        #[arg(long)]
        release: bool,
        #[arg(long, value_enum, default_value_t = Arch::HOST)]
        arch: Arch,
    },
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
        /// 5.10, 6.1, 6.12, 7.3, several of them (5.10,6.1) or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// The guests' architecture: amd64, or arm64 (cross-built, and
        /// booted under qemu-system-aarch64).
        #[arg(long, value_enum, default_value_t = Arch::HOST)]
        arch: Arch,
        /// Only this tool's cells (all tools when omitted).
        #[arg(long)]
        tool: Option<String>,
    },
    /// Run one command inside a Debian kernel under qemu: `cargo xtask vm-run --kernel 6.1 -- CMD...`.
    VmRun {
        #[arg(long)]
        kernel: String,
        #[arg(long, value_enum, default_value_t = Arch::HOST)]
        arch: Arch,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The oldest kernel each rung of each tool loads on, read from the
    /// objects: prints the table, writes target/kernel-floor.json and the
    /// table in docs/kernels.md; fails when a tool's lowest rung needs more
    /// than Linux 4.4.
    KernelFloor {
        /// Also fail when docs/kernels.md's table is not what the objects say (CI).
        #[arg(long)]
        check: bool,
    },
    /// Benchmark the tools against libbpf-tools and the floor; writes target/bench.md.
    Bench {
        /// One tool (runqlat, execsnoop, biolatency, tcplife, gethostlatency, ext4slower); all when omitted.
        tool: Option<String>,
        /// One short round of each measurement: checks the harness, not the numbers.
        #[arg(long)]
        quick: bool,
        /// Benchmark the tools in this directory instead of building them
        /// (another build, to compare with).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
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
    /// Build, then install the binaries (PREFIX/bin), their man pages
    /// (PREFIX/share/man) and bash, zsh and fish completions (PREFIX/share).
    Install {
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// The binaries' architecture (arm64: for a root that another
        /// machine mounts, or an image).
        #[arg(long, value_enum, default_value_t = Arch::HOST)]
        arch: Arch,
    },
    /// Build, then make the Debian package target/debian/ebpf-tools_VERSION_ARCH.deb
    /// and check it with lintian.
    Deb {
        #[arg(long, value_enum, default_value_t = Arch::HOST)]
        arch: Arch,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::setup(Needs::Tests),
        Cmd::Build { release: _, arch } => build(arch).map(drop),
        Cmd::Run { tool, args } => {
            let bin = build(Arch::HOST)?.join(&tool);
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
            vm::vm_test(&vm::Guest::matrix(), None)?;
            // Last: the matrix has fetched its kernels, whose BTF seeds the BTF
            // target. Half a minute each: what a longer run finds belongs in
            // `cargo xtask fuzz`.
            fuzz::fuzz(None, 30)
        }
        Cmd::VmTest { kernel, arch, tool } => {
            setup::setup(Needs::Tests)?;
            let kernels: Vec<String> = match kernel.as_str() {
                "all" => vm::KERNELS.iter().map(|k| k.to_string()).collect(),
                list => list.split(',').map(str::to_owned).collect(),
            };
            if let Some(unknown) = kernels.iter().find(|k| !vm::KERNELS.contains(&k.as_str())) {
                bail!("unknown kernel {unknown}: one of {} or all", vm::KERNELS.join(", "));
            }
            let guests: Vec<vm::Guest> = kernels.into_iter().map(|kernel| vm::Guest { arch, kernel }).collect();
            vm::vm_test(&guests, tool.as_deref())
        }
        Cmd::VmRun { kernel, arch, command } => vm::vm_run(&vm::Guest { arch, kernel }, &command),
        Cmd::KernelFloor { check } => floor::kernel_floor(&build(Arch::HOST)?, check),
        Cmd::Bench { tool, quick, bin_dir } => {
            setup::setup(Needs::Tests)?;
            let bin_dir = match bin_dir {
                Some(dir) => dir,
                None => build(Arch::HOST)?,
            };
            require_root("the benchmarks load BPF programs")?;
            bench::bench(&bin_dir, &bench::Options { tool, quick })
        }
        Cmd::Fuzz { target, seconds } => {
            setup::setup(Needs::Tests)?;
            fuzz::fuzz(target.as_deref(), seconds)
        }
        Cmd::Install { prefix, arch } => package::install(&Built::for_arch(arch)?, &prefix),
        Cmd::Deb { arch } => {
            setup::setup(Needs::Package)?;
            package::deb(&Built::for_arch(arch)?).map(drop)
        }
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

/// Sets up what building needs (cheap when done), builds the tools,
/// returns their directory.
fn build(arch: Arch) -> Result<PathBuf> {
    setup::setup(Needs::Build)?;
    build_tools(arch)
}

/// Builds the tools in release for `arch`'s static target; returns their directory.
pub fn build_tools(arch: Arch) -> Result<PathBuf> {
    let target = arch.static_target();
    run(Command::new(env!("CARGO")).current_dir(workspace()).args([
        "build",
        "--release",
        "-p",
        "tools-user",
        "--target",
        target,
    ]))?;
    Ok(workspace().join("target").join(target).join("release"))
}

/// The tools built for an architecture, and for this machine: what the
/// package holds is the former, and what it says about itself (version,
/// man pages, completions, which the binaries print) is asked of the
/// latter, which can run here.
pub struct Built {
    pub arch: Arch,
    pub bin_dir: PathBuf,
    pub host_bin_dir: PathBuf,
}

impl Built {
    pub fn for_arch(arch: Arch) -> Result<Built> {
        let host_bin_dir = build(Arch::HOST)?;
        let bin_dir = if arch == Arch::HOST { host_bin_dir.clone() } else { build_tools(arch)? };
        Ok(Built { arch, bin_dir, host_bin_dir })
    }

    fn host(bin_dir: &Path) -> Built {
        Built { arch: Arch::HOST, bin_dir: bin_dir.to_owned(), host_bin_dir: bin_dir.to_owned() }
    }
}

/// The profile of the test harnesses and their workloads (Cargo.toml): the
/// kernel matrix runs the same build.
pub const TESTS_PROFILE: &str = "tests";

/// Runs the host tests; returns the tools' directory.
fn test(args: &[String]) -> Result<PathBuf> {
    setup::setup(Needs::Tests)?;
    let bin_dir = build(Arch::HOST)?;
    // Without root the tests would fail one by one.
    require_root("the tests load BPF programs")?;
    // First: seconds, and a rung that no longer loads where it did fails here.
    floor::kernel_floor(&bin_dir, true)?;
    let deb = package::deb(&Built::host(&bin_dir))?;
    let cargo_test = |profile: &str, packages: &[&str]| -> Result<()> {
        run(Command::new(env!("CARGO"))
            .current_dir(workspace())
            .args(["test", "--profile", profile])
            .args(packages)
            .arg("--")
            .args(args)
            .env("EBPF_TOOLS_BIN_DIR", &bin_dir)
            .env("EBPF_TOOLS_DEB", &deb))
    };
    // tools-user's unit tests for the tools' own target: one more build of
    // it (and of the eBPF objects its build script embeds) would cost minutes.
    // The library's only: the binaries have none, and linking each again
    // with the test harness would cost minutes too.
    // The release profile: the tools' build, so the eBPF crate is built once.
    cargo_test("release", &["-p", "tools-user", "--lib", "--target", Arch::HOST.static_target()])?;
    // The rest for the host: the integration tests' workloads resolve names
    // through glibc, as most programs gethostlatency traces do.
    cargo_test(TESTS_PROFILE, &["--workspace", "--exclude", "tools-ebpf", "--exclude", "tools-user"])?;
    Ok(bin_dir)
}

fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{why}: run them as root");
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
