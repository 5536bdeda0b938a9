//! Flags every tool shares, flattened into each tool's own clap parser.

use clap::Args;

use crate::{loader::LoadOptions, output::Format};

/// BCC's default interval and count: in effect, until Ctrl-C.
pub const FOREVER: u64 = 99_999_999;

/// `[interval] [count]`, `-T`, `-m` of the histogram tools.
#[derive(Args, Debug, Clone)]
pub struct HistogramArgs {
    /// Include a timestamp (HH:MM:SS) before each histogram.
    #[arg(short = 'T', long = "timestamp")]
    pub timestamp: bool,

    /// Millisecond histogram instead of microseconds.
    #[arg(short = 'm', long = "milliseconds")]
    pub milliseconds: bool,

    /// Output interval, in seconds.
    #[arg(default_value_t = FOREVER)]
    pub interval: u64,

    /// Number of outputs.
    #[arg(default_value_t = FOREVER)]
    pub count: u64,

    /// Also draw the latency heatmap of every interval so far into this
    /// SVG file, rewritten (atomically) after each interval.
    #[arg(long, value_name = "FILE.svg")]
    pub heatmap: Option<std::path::PathBuf>,
}

impl HistogramArgs {
    pub fn unit(&self) -> (&'static str, u64) {
        if self.milliseconds {
            ("msecs", 1_000_000)
        } else {
            ("usecs", 1_000)
        }
    }
}

/// `--histogram` on the event tools (BCC's ext4dist view and its kin):
/// every call counted in the kernel by key, printed as latency histograms.
#[derive(Args, Debug, Clone)]
pub struct EventHistogramArgs {
    /// Count every call in the kernel and print a latency histogram per
    /// kind of call (operation; function and result; address family) in
    /// place of a line per event, when the trace ends (Ctrl-C, SIGTERM, the
    /// end of a duration) and every --interval seconds. --json prints
    /// histogram records.
    #[arg(long, conflicts_with_all = ["csv", "containers", "buffer_pages"])]
    pub histogram: bool,

    /// With --histogram: print the histograms every SECONDS.
    #[arg(long, value_name = "SECONDS", requires = "histogram", value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: Option<u64>,

    /// With --histogram: histograms in milliseconds instead of microseconds.
    #[arg(long, requires = "histogram")]
    pub milliseconds: bool,
}

impl EventHistogramArgs {
    /// With --histogram, the nanoseconds of its unit, which the kernel
    /// counts in.
    pub fn unit_ns(&self) -> Option<u32> {
        self.histogram.then(|| self.as_histogram_args().unit().1 as u32)
    }

    /// The histogram tools' arguments these amount to: intervals of
    /// --interval seconds, else one for the whole trace.
    pub fn as_histogram_args(&self) -> HistogramArgs {
        let interval = self.interval.unwrap_or(FOREVER);
        HistogramArgs { timestamp: false, milliseconds: self.milliseconds, interval, count: FOREVER, heatmap: None }
    }
}

/// `-p PID`: a process that must exist when the tool starts, as the tool's
/// own PID namespace numbers it; held as the host's PID, the kernel's.
#[derive(Args, Debug, Clone)]
pub struct PidArg {
    /// Trace this PID only.
    #[arg(short = 'p', long = "pid", value_parser = parse_pid)]
    pub pid: Option<u32>,
}

fn parse_pid(s: &str) -> Result<u32, String> {
    let pid: u32 = s.parse().map_err(|_| format!("'{s}' is not a PID"))?;
    if pid == 0 {
        return Err("PID 0 is the idle task, not a process".into());
    }
    crate::procfs::kernel_pids().from_ours(pid)
}

/// Output format, diagnostics, and the hidden switch that forces a rung.
#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Print JSON Lines (one object per histogram or event, with a schema version).
    #[arg(long)]
    pub json: bool,

    /// Say which kernel paths were probed and taken, and why.
    #[arg(long)]
    pub verbose: bool,

    /// Use only this rung of the attach ladder (for tests), and with
    /// `RUNG/PATH` only that path of its optional parts. Also EBPF_TOOLS_RUNG.
    #[arg(long, hide = true, env = "EBPF_TOOLS_RUNG")]
    pub rung: Option<String>,

    /// Load the legacy build (configuration map, perf event array, plain
    /// maps), as on kernels before 5.8 (for tests). Also EBPF_TOOLS_CONFIG_MAP=1.
    #[arg(long, hide = true, env = "EBPF_TOOLS_CONFIG_MAP", value_parser = clap::builder::BoolishValueParser::new())]
    pub config_map: bool,

    /// Read struct offsets from this BTF file instead of the kernel's
    /// (/sys/kernel/btf/vmlinux), for kernels built without BTF: a BTFHub
    /// file for the running kernel, or one made with `pahole --btf_encode_detached`.
    #[arg(long, value_name = "FILE", env = "EBPF_TOOLS_BTF")]
    pub btf: Option<std::path::PathBuf>,

    /// Behave as on a kernel without BTF (for tests). Also EBPF_TOOLS_HIDE_KERNEL_BTF=1.
    #[arg(long, hide = true, env = "EBPF_TOOLS_HIDE_KERNEL_BTF", value_parser = clap::builder::BoolishValueParser::new())]
    pub hide_kernel_btf: bool,

    /// The same as --config-map: the legacy build hands events over
    /// through a perf event array (for tests). Also EBPF_TOOLS_PERF_ARRAY=1.
    #[arg(long, hide = true, env = "EBPF_TOOLS_PERF_ARRAY", value_parser = clap::builder::BoolishValueParser::new())]
    pub perf_array: bool,

    /// Print the oldest kernel each rung of each build loads on (JSON
    /// Lines), and load nothing (for `cargo xtask kernel-floor`).
    #[arg(long, hide = true)]
    pub kernel_floor: bool,
}

impl RuntimeArgs {
    /// What the loader is asked for.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            rung: self.rung.clone(),
            legacy: self.config_map || self.perf_array,
            btf: self.btf.clone(),
            hide_kernel_btf: self.hide_kernel_btf,
            kernel_floor: self.kernel_floor,
        }
    }
}

/// `-c PATH`: only tasks in a cgroup v2 directory (checked here, so a file,
/// a plain directory or a cgroup v1 path is bad input, exit status 2).
#[derive(Args, Debug, Clone)]
pub struct CgroupArg {
    /// Trace tasks in this cgroup v2 directory (and below it) only.
    #[arg(short = 'c', long = "cgroup", value_name = "PATH", value_parser = cgroup_dir)]
    pub cgroup: Option<std::path::PathBuf>,
}

/// `--containers` on the event tools.
#[derive(Args, Debug, Clone)]
pub struct ContainersArg {
    /// Show which container each event came from: a CONTAINER column (its
    /// name, else its short ID; - for the host's processes) and container,
    /// container_id, runtime, pod and namespace in JSON.
    #[arg(long = "containers")]
    pub containers: bool,
}

/// What the event tools share: CSV output and the event buffers' size.
#[derive(Args, Debug, Clone)]
pub struct EventArgs {
    /// Print CSV (RFC 4180: a field is quoted only when it must be).
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,

    /// Event buffer pages per CPU (ring buffer or perf buffer); raise it if events are lost.
    #[arg(long = "buffer-pages", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub buffer_pages: u32,
}

impl EventArgs {
    /// The output format `--json` and `--csv` ask for (a tool maps its own
    /// BCC spellings onto these flags first).
    pub fn format(&self, runtime: &RuntimeArgs) -> Format {
        match (runtime.json, self.csv) {
            (true, _) => Format::Json,
            (_, true) => Format::Csv,
            _ => Format::Text,
        }
    }
}

fn cgroup_dir(path: &str) -> Result<std::path::PathBuf, String> {
    crate::cgroup::check_dir(std::path::Path::new(path)).map(|()| path.into()).map_err(|e| format!("{e:#}"))
}

/// A user: a number, or a name looked up in the passwd database (`-u`).
pub fn user_id(user: &str) -> Result<u32, String> {
    if let Ok(uid) = user.parse() {
        return Ok(uid);
    }
    let c_user = std::ffi::CString::new(user).map_err(|_| format!("no such user '{user}'"))?;
    // SAFETY: getpwnam takes a NUL-terminated name; it returns NULL or a
    // pointer to a static record, read here at once, before any other call
    // could overwrite it (the tools parse their flags on one thread).
    let pw = unsafe { libc::getpwnam(c_user.as_ptr()) };
    if pw.is_null() {
        return Err(format!("no such user '{user}'"));
    }
    // SAFETY: non-null, as checked.
    Ok(unsafe { (*pw).pw_uid })
}
