//! `cargo xtask bench [TOOL] [--quick]`: each tool beside the libbpf-tools C
//! tool of the same name (Debian's `libbpf-tools`, in /usr/sbin) and beside
//! the floor (empty programs on the same hooks, `bench-floor`).
//!
//! Per-event overhead: a fixed workload untraced, under the floor, under our
//! tool and under the C tool, the contenders interleaved within each round
//! (their order rotating) so drift of the machine cancels; the cost added
//! per operation is taken against the untraced run of the same round.
//! Max RSS comes from the same runs (wait4). Startup: exec to the first
//! line on a pty. Loss: execsnoop at rising exec rates, with every exec
//! accounted for by a unique argument. Every figure is the median of the
//! rounds with min and max; nothing fails on a number, only on a harness
//! that cannot run (a tracer that dies, a workload that fails).

mod bpf_stats;
mod exporter;
mod growth;
mod workload;

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use integration_tests::LoopDevice;
use tools_catalog::{Versus, Workload};
use workload::Done;

/// A benchmark: the tool, the workload that exercises its hooks, and what
/// one operation of it is (the catalog's `bench` rows).
struct Benchmark {
    /// The section's name: the tool's, or the tool's and the workload's.
    name: &'static str,
    tool: &'static str,
    /// A contender beside ours runs on this kernel: libbpf-tools' tool of
    /// the same name (its ext4slower has only kprobe and fentry paths: not
    /// here), or `versus_cli`.
    c_tool: bool,
    /// The tool's arguments.
    args: &'static [&'static str],
    /// The contender beside ours when it is not libbpf-tools' tool of the
    /// same name: our command-line tools of these names, side by side (for
    /// the exporter).
    versus_cli: Option<&'static [&'static str]>,
    title: &'static str,
    ops: &'static str,
    run: fn(&Bench, f64) -> Result<Done>,
}

/// The benchmarks, in the order they are run: every tool's rows of the catalog.
fn benchmarks() -> Vec<Benchmark> {
    let mut all = Vec::new();
    for tool in tools_catalog::TOOLS {
        for row in tool.bench {
            all.push(Benchmark {
                name: row.name.unwrap_or(tool.name),
                tool: tool.name,
                c_tool: row.versus != Versus::Nothing,
                args: row.args,
                versus_cli: match row.versus {
                    Versus::OurTools(names) => Some(names),
                    _ => None,
                },
                title: row.workload.title(),
                ops: row.workload.ops(),
                run: workload_of(row.workload),
            });
        }
    }
    all
}

/// How each workload of the catalog runs, for `secs` seconds.
fn workload_of(kind: Workload) -> fn(&Bench, f64) -> Result<Done> {
    match kind {
        Workload::PingPong => |bench, secs| workload::ping_pong(bench.cpu, secs),
        Workload::ExecStorm => |bench, secs| workload::exec_storm(1, None, secs, &bench.marker()),
        Workload::DirectReads => |bench, secs| workload::direct_reads(&bench.loop_device().path, secs),
        Workload::TcpCycles => |_, secs| workload::tcp_cycles(secs),
        Workload::Lookups => |_, secs| workload::lookups(secs),
        Workload::CachedPreads => |bench, secs| workload::cached_preads(&bench.ext4().path("bench-file"), secs),
        Workload::PipeRoundTrips => |_, secs| workload::pipe_round_trips(secs),
    }
}

const EXPORTER: &str = "ebpf-tools-exporter";

impl Benchmark {
    /// How tables name the contender beside ours.
    fn versus_label(&self) -> String {
        match self.versus_cli {
            Some(cli) => format!("{} (command line)", cli.join(" + ")),
            None => "libbpf-tools".to_owned(),
        }
    }

    /// The contenders that can run: the C tool only where it has a path here.
    fn contenders(&self) -> Vec<Contender> {
        OVERHEAD_CONTENDERS.into_iter().filter(|c| self.c_tool || *c != Contender::C).collect()
    }
}

/// Where the C tools are (Debian's libbpf-tools).
const C_TOOLS: &str = "/usr/sbin";

pub struct Options {
    pub tool: Option<String>,
    pub quick: bool,
}

struct Settings {
    rounds: usize,
    /// Length of each traced workload run (the memory figure's window too).
    run_secs: f64,
    /// Length of each loss trial.
    loss_secs: f64,
    /// Time a tracer gets to attach before the workload starts. Startup is
    /// measured separately; this only has to exceed it comfortably.
    settle: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    Untraced,
    Floor,
    Ours,
    C,
}

const OVERHEAD_CONTENDERS: [Contender; 4] = [Contender::Untraced, Contender::Floor, Contender::Ours, Contender::C];

/// The two tools compared head to head, with their column in such tables.
const OURS_AND_C: [(usize, Contender); 2] = [(0, Contender::Ours), (1, Contender::C)];

impl Contender {
    fn index(self) -> usize {
        self as usize
    }
}

/// Each round runs `items` in an order rotated by the round number.
fn rotated<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let mut v = items.to_vec();
    v.rotate_left(round % items.len().max(1));
    v
}

pub fn bench(bin_dir: &Path, options: &Options) -> Result<()> {
    let all = benchmarks();
    let benchmarks: Vec<&Benchmark> =
        all.iter().filter(|b| options.tool.as_ref().is_none_or(|t| t == b.tool)).collect();
    if benchmarks.is_empty() {
        let mut names: Vec<&str> = all.iter().map(|b| b.tool).collect();
        names.dedup();
        bail!("no benchmark for {}; tools: {}", options.tool.as_deref().unwrap_or_default(), names.join(", "));
    }
    let settings = if options.quick {
        Settings { rounds: 1, run_secs: 1.0, loss_secs: 0.5, settle: Duration::from_millis(300) }
    } else {
        Settings { rounds: 5, run_secs: 5.0, loss_secs: 1.5, settle: Duration::from_millis(500) }
    };
    for b in benchmarks.iter().filter(|b| b.c_tool && b.versus_cli.is_none()) {
        let c_tool = Path::new(C_TOOLS).join(b.tool);
        if !c_tool.exists() {
            bail!("{} is missing: `cargo xtask setup` installs Debian's libbpf-tools", c_tool.display());
        }
    }
    let work = crate::workspace().join("target/bench");
    fs::create_dir_all(&work)?;
    let bench = Bench {
        bin_dir: bin_dir.to_owned(),
        work,
        settings,
        loop_device: std::cell::OnceCell::new(),
        ext4: std::cell::OnceCell::new(),
        cpu: workload::last_cpu(),
        trials: std::cell::Cell::new(0),
    };

    let mut report = header(&bench.settings)?;
    let mut startup = String::new();
    let mut memory = String::new();
    let mut stops = String::new();
    let mut sections = String::new();
    let mut timed_startup = Vec::new();
    for b in &benchmarks {
        println!("bench: {}", b.name);
        let (rung, hooks) = bench.our_hooks(b)?;
        let overhead = bench.overhead(b, &hooks)?;
        let section = overhead.section(b, &rung, &hooks);
        println!("{section}");
        sections += &section;
        memory += &overhead.memory_row(b.name);
        stops += &overhead.stop_row(b.name);
        // Start-up is the tool's, whatever the workload (the exporter prints no first line).
        if !timed_startup.contains(&b.tool) && b.tool != EXPORTER {
            startup += &bench.startup_row(b)?;
            timed_startup.push(b.tool);
        }
    }
    report += "## Per-event overhead\n\n";
    let _ = writeln!(
        report,
        "Each run: the tracer started and given {:.1} s to attach, the workload for {} s, the tracer stopped with \
         SIGINT. *Added* is the run's time per operation minus the untraced run's in the same round; the ratios \
         divide medians of added time (targets: ours ≤ 0.8 × libbpf-tools, ≤ 1.5 × floor).\n",
        bench.settings.settle.as_secs_f64(),
        bench.settings.run_secs
    );
    report += &sections;
    if !startup.is_empty() {
        report += "## Startup: exec to the first line of output, on a pty (ms)\n\n";
        report += "| tool | ours | libbpf-tools | ours / libbpf-tools |\n|---|---|---|---|\n";
        report += &startup;
    }
    let _ =
        writeln!(report, "\n## Memory: max RSS over the {} s runs under the workload (MB)\n", bench.settings.run_secs);
    report += "For the exporter's rows, the libbpf-tools column is our command-line tool's.\n\n";
    report += "| tool | ours | libbpf-tools | floor | ours / libbpf-tools |\n|---|---|---|---|---|\n";
    report += &memory;
    report += "\n## Stop: SIGINT to exit, after the same runs (ms)\n\n";
    report += "Printing what is left, detaching every hook, exiting.\n\n";
    report += "| tool | ours | libbpf-tools | floor | ours / libbpf-tools |\n|---|---|---|---|---|\n";
    report += &stops;
    if benchmarks.iter().any(|b| b.tool == "execsnoop") {
        println!("bench: execsnoop loss");
        report += &bench.loss()?;
    }
    let (runqlat, gethostlatency) =
        (benchmarks.iter().any(|b| b.tool == "runqlat"), benchmarks.iter().any(|b| b.tool == "gethostlatency"));
    if runqlat || gethostlatency {
        report += &bench.cost_growth(runqlat, gethostlatency)?;
    }
    if benchmarks.iter().any(|b| b.tool == EXPORTER) {
        println!("bench: exporter scrapes");
        report += &bench.exporter_scrapes()?;
    }

    let path = crate::workspace().join("target/bench.md");
    fs::write(&path, &report)?;
    // A full run of every benchmark is the docs' table.
    if !options.quick && options.tool.is_none() {
        // The docs page has its own title.
        crate::docs::write("benchmarks.md", "bench", report.strip_prefix("# Benchmarks\n\n").unwrap_or(&report))?;
    }
    println!("\n{report}\nbench: written to {}", path.display());
    Ok(())
}

/// Date, machine and settings of a run.
fn header(settings: &Settings) -> Result<String> {
    let output = |cmd: &mut Command| -> String {
        cmd.output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
    };
    let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    let mut commit = output(Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(crate::workspace()));
    if !output(Command::new("git").args(["status", "--porcelain"]).current_dir(crate::workspace())).is_empty() {
        commit += " (with uncommitted changes)";
    }
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")?.trim().to_owned();
    let cpuinfo = fs::read_to_string("/proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown CPU");
    let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let mem_kb: u64 = fs::read_to_string("/proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let c_version = output(Command::new("dpkg-query").args(["-W", "-f", "${Version}", "libbpf-tools"]));
    let mut s = String::from("# Benchmarks\n\n");
    let _ = writeln!(
        s,
        "`cargo xtask bench{}` on {date}: Linux {kernel}, {cpus} × {model}, {:.0} GiB; commit {commit}; \
         libbpf-tools {c_version}. {} round(s), contenders interleaved; cells are median (min–max).\n",
        if settings.rounds == 1 { " --quick" } else { "" },
        mem_kb as f64 / (1 << 20) as f64,
        settings.rounds,
    );
    Ok(s)
}

struct Bench {
    bin_dir: PathBuf,
    work: PathBuf,
    settings: Settings,
    /// Made when a workload first asks for one.
    loop_device: std::cell::OnceCell<LoopDevice>,
    ext4: std::cell::OnceCell<integration_tests::Mounted>,
    /// The CPU the ping-pong pair is pinned to.
    cpu: usize,
    trials: std::cell::Cell<u64>,
}

/// A tracer running in the background, its output going to files.
/// A contender's processes: one tool, or our command-line tools side by
/// side (what the exporter replaces), measured together.
struct Tracer {
    processes: Vec<Process>,
}

struct Process {
    /// Killed if left running on any way out (an error, a failed row).
    child: KillOnDrop,
    label: String,
    out: PathBuf,
    err: PathBuf,
}

/// How a tracer ended.
struct Stopped {
    code: i32,
    max_rss_kb: u64,
    /// User plus system CPU time of the tracer's processes.
    cpu_secs: f64,
    /// From SIGINT until the tracer was reaped: printing, detaching, exit.
    stop_secs: f64,
    stdout: String,
    stderr: String,
}

impl Bench {
    /// The contender's commands: none for the untraced run, several for
    /// our command-line tools side by side.
    fn commands(&self, b: &Benchmark, contender: Contender, hooks: &[String]) -> Vec<Command> {
        let mut commands = self.bare_commands(b, contender, hooks);
        commands.iter_mut().for_each(default_signals);
        commands
    }

    /// The contender's one command (start-up and loss rows).
    fn command(&self, b: &Benchmark, contender: Contender) -> Option<Command> {
        self.commands(b, contender, &[]).into_iter().next()
    }

    fn bare_commands(&self, b: &Benchmark, contender: Contender, hooks: &[String]) -> Vec<Command> {
        let tool = b.tool;
        match contender {
            Contender::Untraced => Vec::new(),
            Contender::Floor => {
                let mut cmd = Command::new(self.bin_dir.join("bench-floor"));
                cmd.args(hooks);
                vec![cmd]
            }
            Contender::Ours => {
                let mut cmd = Command::new(self.bin_dir.join(tool));
                cmd.args(b.args);
                vec![cmd]
            }
            Contender::C => match b.versus_cli {
                Some(cli) => cli.iter().map(|cli| Command::new(self.bin_dir.join(cli))).collect(),
                None => vec![Command::new(Path::new(C_TOOLS).join(tool))],
            },
        }
    }

    /// A unique argument for the execs of one trial.
    fn marker(&self) -> String {
        self.trials.set(self.trials.get() + 1);
        format!("ebpf-tools-bench-{}-{}", std::process::id(), self.trials.get())
    }

    /// Starts `contender` (None for the untraced run) and lets it attach.
    fn start(&self, b: &Benchmark, contender: Contender, hooks: &[String]) -> Result<Option<Tracer>> {
        let commands = self.commands(b, contender, hooks);
        if commands.is_empty() {
            return Ok(None);
        }
        self.start_commands(&format!("{}-{contender:?}", b.tool).to_lowercase(), commands).map(Some)
    }

    /// Starts `commands` as one tracer and lets them attach.
    fn start_commands(&self, label: &str, commands: Vec<Command>) -> Result<Tracer> {
        let mut processes = Vec::new();
        for (n, mut cmd) in commands.into_iter().enumerate() {
            let label = format!("{label}-{n}");
            let out = self.work.join(format!("{label}.out"));
            let err = self.work.join(format!("{label}.err"));
            let child = cmd
                .stdin(Stdio::null())
                .stdout(fs::File::create(&out)?)
                .stderr(fs::File::create(&err)?)
                .spawn()
                .with_context(|| format!("starting {cmd:?}"))?;
            processes.push(Process { child: KillOnDrop::new(child), label, out, err });
        }
        let mut tracer = Tracer { processes };
        std::thread::sleep(self.settings.settle);
        for p in &mut tracer.processes {
            if let Some(status) = p.child.0.try_wait()? {
                bail!("{} exited while starting ({status}): {}", p.label, fs::read_to_string(&p.err)?);
            }
        }
        Ok(tracer)
    }

    /// Our tool's rung and hooks on this kernel, from its `--verbose`
    /// account: the floor attaches to the same ones.
    fn our_hooks(&self, b: &Benchmark) -> Result<(String, Vec<String>)> {
        let tool = b.tool;
        let mut command = Command::new(self.bin_dir.join(tool));
        default_signals(&mut command);
        let child = command
            .args(b.args)
            .arg("--verbose")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        // Killed on an early return (a line that cannot be read).
        let mut child = KillOnDrop::new(child);
        let mut hooks = Vec::new();
        let mut said = String::new();
        let mut rungs = Vec::new();
        // Hooks of rungs already taken (the exporter takes one per tool).
        let mut kept = 0;
        for line in BufReader::new(child.0.stderr.take().context("no stderr")?).lines() {
            let line = line?;
            said += &line;
            said.push('\n');
            // `  NAME (id N) -> HOOK` for each program attached; a rung (or
            // a path of its optional part) that failed after some attached
            // is unloaded whole: start again.
            if line.contains(": rung ") && line.contains(" failed: ") {
                hooks.truncate(kept);
            } else if let Some((_, hook)) = line.split_once(") -> ").filter(|_| line.contains(" (id ")) {
                let hook = in_this_root(hook.trim());
                if !hooks.contains(&hook) {
                    hooks.push(hook);
                }
            }
            if let Some(rest) = line.split_once(": rung ").map(|(_, r)| r) {
                if let Some((name, _)) = rest.split_once(": all ") {
                    rungs.push(name.to_owned());
                    kept = hooks.len();
                } else if rest.contains(" through ") {
                    // An optional part's path (tcplife's accept), after the rung.
                    kept = hooks.len();
                }
            }
            // A tool has one rung, whose load ends with `rung X: loaded in`;
            // the exporter says when it has them all.
            if tool != EXPORTER && line.contains(": rung ") && line.contains(": loaded in ") {
                break;
            }
            if line.contains(": serving ") {
                break;
            }
        }
        signal(&child.0, libc::SIGINT);
        child.0.wait()?;
        match rungs.is_empty() || hooks.is_empty() {
            false => Ok((rungs.join(", "), hooks)),
            true => bail!("{tool} --verbose named no rung and hooks:\n{said}"),
        }
    }

    fn run_workload(&self, b: &Benchmark) -> Result<Done> {
        (b.run)(self, self.settings.run_secs)
    }

    fn loop_device(&self) -> &LoopDevice {
        self.loop_device.get_or_init(LoopDevice::new)
    }

    fn ext4(&self) -> &integration_tests::Mounted {
        self.ext4.get_or_init(|| integration_tests::Mounted::new("ext4"))
    }

    fn overhead(&self, b: &Benchmark, hooks: &[String]) -> Result<Overhead> {
        let mut result = Overhead::default();
        for round in 0..self.settings.rounds {
            let mut ns = [f64::NAN; 4];
            for contender in rotated(&b.contenders(), round) {
                let tracer = self.start(b, contender, hooks)?;
                let done = self.run_workload(b);
                let stopped = tracer.map(Tracer::stop).transpose()?;
                let done = done?;
                ns[contender.index()] = done.ns_per_op();
                result.per_sec[contender.index()].push(done.per_sec());
                if let Some(stopped) = stopped {
                    result.rss_mb[contender.index()].push(stopped.max_rss_kb as f64 / 1024.0);
                    result.stop_ms[contender.index()].push(stopped.stop_secs * 1e3);
                    result.cpu_ns[contender.index()].push(stopped.cpu_secs * 1e9 / done.ops.max(1) as f64);
                }
                println!("  round {} {contender:?}: {:.0} ns/op", round + 1, done.ns_per_op());
            }
            for contender in b.contenders() {
                result.ns[contender.index()].push(ns[contender.index()]);
                result.added[contender.index()].push(ns[contender.index()] - ns[Contender::Untraced.index()]);
            }
        }
        result.profile = self.profile(b, hooks)?;
        Ok(result)
    }

    /// One more run of each tracer with the kernel's BPF run-time accounting
    /// on: what each program costs per run, and runs per operation.
    fn profile(&self, b: &Benchmark, hooks: &[String]) -> Result<Vec<(Contender, Vec<bpf_stats::ProgStats>, u64)>> {
        let _stats = bpf_stats::Enabled::new()?;
        let mut profile = Vec::new();
        for contender in b.contenders().into_iter().filter(|c| *c != Contender::Untraced) {
            let existing = bpf_stats::snapshot();
            let tracer = self.start(b, contender, hooks)?;
            let before = bpf_stats::snapshot();
            let done = self.run_workload(b);
            let after = bpf_stats::snapshot();
            tracer.map(Tracer::stop).transpose()?;
            // The tracer's programs only: not those loaded before it started.
            let after = after.into_iter().filter(|(id, _)| !existing.contains_key(id)).collect();
            let progs = bpf_stats::delta(&before, &after);
            profile.push((contender, progs, done?.ops));
        }
        Ok(profile)
    }

    fn startup_row(&self, b: &Benchmark) -> Result<String> {
        let ms = self.startup_ms(b)?;
        Ok(format!(
            "| {} | {} | {} | {} |\n",
            b.tool,
            stat(&ms[0], 1),
            stat(&ms[1], 1),
            ratio(median(&ms[0]), median(&ms[1]))
        ))
    }

    /// Start-ups of ours and of the C tool (ms), interleaved.
    fn startup_ms(&self, b: &Benchmark) -> Result<[Vec<f64>; 2]> {
        let tool = b.tool;
        let mut ms = [Vec::new(), Vec::new()];
        for round in 0..self.settings.rounds.max(5) {
            for (i, contender) in rotated(&OURS_AND_C, round) {
                if contender == Contender::C && !b.c_tool {
                    continue;
                }
                // A start-up that timed out is tried again before the row
                // fails: a slow moment of a loaded machine is not a result.
                let mut tries = 0;
                let elapsed = loop {
                    let cmd = self.command(b, contender).context("no command")?;
                    match time_to_first_line(cmd) {
                        Ok(elapsed) => break elapsed,
                        Err(err) if tries < 2 && format!("{err:#}").contains(PTY_SILENT) => {
                            tries += 1;
                            eprintln!("bench: {tool} ({contender:?}) start-up, try {tries}: {err:#}; again");
                        }
                        Err(err) => return Err(err.context(format!("{tool} ({contender:?}) start-up, 3 tries"))),
                    }
                };
                ms[i].push(elapsed.as_secs_f64() * 1e3);
            }
        }
        Ok(ms)
    }

    /// execsnoop at rising rates with 1, 2 and 4 workers: the highest rate
    /// at which every exec was printed, ours and the C tool's.
    fn loss(&self) -> Result<String> {
        const WORKERS: [usize; 3] = [1, 2, 4];
        const STEPS: [Option<f64>; 4] = [Some(0.25), Some(0.5), Some(0.75), None];
        let all = benchmarks();
        let execsnoop = all.iter().find(|b| b.tool == "execsnoop").context("no execsnoop benchmark")?;
        let secs = self.settings.loss_secs;
        // Per worker count: untraced rates, then per contender the highest clean rate and notes.
        let mut untraced = vec![Vec::new(); WORKERS.len()];
        let mut clean = vec![[Vec::new(), Vec::new()]; WORKERS.len()];
        let mut losses = vec![[String::new(), String::new()]; WORKERS.len()];
        for round in 0..self.settings.rounds {
            for (w, &workers) in WORKERS.iter().enumerate() {
                let top = workload::exec_storm(workers, None, secs, &self.marker())?.per_sec();
                untraced[w].push(top);
                let mut highest = [0.0f64; 2];
                let mut lost_at = [false; 2];
                for step in STEPS {
                    for (i, contender) in rotated(&OURS_AND_C, round) {
                        if lost_at[i] {
                            continue;
                        }
                        let marker = self.marker();
                        let tracer = self.start(execsnoop, contender, &[])?.context("no tracer")?;
                        let done = workload::exec_storm(workers, step.map(|f| f * top), secs, &marker);
                        // Let the tracer drain what is still in its buffers.
                        std::thread::sleep(Duration::from_millis(300));
                        let stopped = tracer.stop()?;
                        let done = done?;
                        let seen = stopped.stdout.lines().filter(|l| l.contains(&marker)).count() as u64;
                        let missing = done.ops.saturating_sub(seen);
                        if missing == 0 {
                            highest[i] = highest[i].max(done.per_sec());
                            continue;
                        }
                        lost_at[i] = true;
                        let _ = write!(
                            losses[w][i],
                            "round {}: {missing} of {} missing at {:.0}/s, {} reported, exit status {}; ",
                            round + 1,
                            done.ops,
                            done.per_sec(),
                            reported_loss(contender, &stopped.stderr),
                            stopped.code,
                        );
                    }
                }
                for i in 0..2 {
                    clean[w][i].push(highest[i]);
                }
            }
        }
        let mut s = String::from("\n## Loss: execsnoop, the highest exec rate with nothing lost (execs/s)\n\n");
        let _ = writeln!(
            s,
            "Workers fork and exec `/bin/true MARKER` paced at 25, 50 and 75 % of the untraced rate, then unpaced, \
             {secs} s per trial; an exec is lost when no output line carries its marker. ≥ means nothing was lost \
             even unpaced.\n"
        );
        s += "| workers | untraced rate | ours | libbpf-tools | losses seen (ours) | losses seen (libbpf-tools) |\n";
        s += "|---|---|---|---|---|---|\n";
        for (w, workers) in WORKERS.iter().enumerate() {
            let cell = |i: usize| {
                // No loss in any round: every round reached the unpaced step clean.
                let prefix = if losses[w][i].is_empty() { "≥ " } else { "" };
                format!("{prefix}{}", stat(&clean[w][i], 0))
            };
            let note = |i: usize| if losses[w][i].is_empty() { "none".to_owned() } else { losses[w][i].clone() };
            let _ = writeln!(
                s,
                "| {workers} | {} | {} | {} | {} | {} |",
                stat(&untraced[w], 0),
                cell(0),
                cell(1),
                note(0).trim_end_matches("; "),
                note(1).trim_end_matches("; ")
            );
        }
        Ok(s)
    }
}

/// What a tracer said it lost: ours, `lost N events in total`; the C tool,
/// `Lost N events on CPU #C!` per perf-buffer report.
fn reported_loss(contender: Contender, stderr: &str) -> u64 {
    let number_after =
        |line: &str, word: &str| -> Option<u64> { line.split_once(word)?.1.split_whitespace().next()?.parse().ok() };
    match contender {
        Contender::Ours => {
            stderr.lines().filter(|l| l.contains("in total")).filter_map(|l| number_after(l, "lost ")).sum()
        }
        _ => stderr.lines().filter_map(|l| number_after(l, "Lost ")).sum(),
    }
}

impl Tracer {
    /// SIGINT to every process (the tools print their summary and detach),
    /// then each exit status from wait4; CPU times and peak RSS added up,
    /// the stop the last process's. The max RSS is each process's own
    /// peak (VmHWM), read just before: wait4's `ru_maxrss` also counts, at
    /// exec, the memory the child shared with this process when it was
    /// forked, so every tracer started after the harness had grown showed
    /// the harness's size (46.5 MB for every contender) instead of its own.
    fn stop(mut self) -> Result<Stopped> {
        let mut max_rss_kb = 0;
        for p in &self.processes {
            let pid = p.child.0.id() as libc::pid_t;
            max_rss_kb += peak_rss_kb(pid).with_context(|| format!("the peak RSS of {}", p.label))?;
        }
        for p in &self.processes {
            signal(&p.child.0, libc::SIGINT);
        }
        let interrupted = Instant::now();
        let deadline = interrupted + Duration::from_secs(10);
        let mut stopped = Stopped {
            code: 0,
            max_rss_kb,
            cpu_secs: 0.0,
            stop_secs: 0.0,
            stdout: String::new(),
            stderr: String::new(),
        };
        for p in &mut self.processes {
            let (status, usage) = p.reap(deadline)?;
            // To within the 10 ms poll of `reap`.
            stopped.stop_secs = interrupted.elapsed().as_secs_f64();
            let stderr = fs::read_to_string(&p.err)?;
            if !libc::WIFEXITED(status) {
                bail!("{} was killed (wait status {status:#x}): {stderr}", p.label);
            }
            let code = libc::WEXITSTATUS(status);
            // 3: ours, when the kernel side lost events (counted by the loss table).
            if code != 0 && code != 3 {
                bail!("{} exited with {code}: {stderr}", p.label);
            }
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            stopped.cpu_secs += secs(usage.ru_utime) + secs(usage.ru_stime);
            stopped.code = stopped.code.max(code);
            stopped.stdout += &fs::read_to_string(&p.out).unwrap_or_default();
            stopped.stderr += &stderr;
        }
        Ok(stopped)
    }

    /// The first process: the tool itself, where it is one.
    fn first(&self) -> &Process {
        &self.processes[0]
    }
}

impl Process {
    /// Its wait status and resource usage once it exits, by `deadline`
    /// (else it is killed).
    fn reap(&mut self, deadline: Instant) -> Result<(i32, libc::rusage)> {
        let pid = self.child.0.id() as libc::pid_t;
        loop {
            let mut status = 0;
            // SAFETY: zeroed rusage is a valid out value.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: waits for our own child, without blocking.
            match unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) } {
                0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                0 => {
                    signal(&self.child.0, libc::SIGKILL);
                    bail!("{} did not end within 10 s of SIGINT", self.label);
                }
                p if p == pid => {
                    self.child.reaped();
                    return Ok((status, usage));
                }
                _ => bail!("wait4 {}: {}", self.label, std::io::Error::last_os_error()),
            }
        }
    }
}

/// A live process's peak resident set since its exec, from /proc.
fn peak_rss_kb(pid: libc::pid_t) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM line")
}

/// Every process the harness starts gets SIGINT and SIGTERM at their
/// defaults, unblocked: run from a shell that ignores them (a background
/// job), a tool would inherit that, and a C tool that installs its handler
/// late would lose the harness's SIGINT.
fn default_signals(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in [libc::SIGINT, libc::SIGTERM] {
                libc::signal(signal, libc::SIG_DFL);
                libc::sigaddset(&mut set, signal);
            }
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
}

/// Results of one tool's overhead runs, indexed by [`Contender::index`].
#[derive(Default)]
struct Overhead {
    ns: [Vec<f64>; 4],
    added: [Vec<f64>; 4],
    per_sec: [Vec<f64>; 4],
    rss_mb: [Vec<f64>; 4],
    stop_ms: [Vec<f64>; 4],
    /// The tracer process's own CPU time per operation.
    cpu_ns: [Vec<f64>; 4],
    /// Per tracer: its programs' bpf_stats over a run, and the run's operations.
    profile: Vec<(Contender, Vec<bpf_stats::ProgStats>, u64)>,
}

impl Overhead {
    fn section(&self, b: &Benchmark, rung: &str, hooks: &[String]) -> String {
        let Benchmark { name, title, ops, .. } = b;
        let mut s = format!("### {name}: {title}\n\n");
        let _ = writeln!(
            s,
            "| tracer | {ops} per second | ns per op | added ns per op | tracer's CPU ns per op |\n|---|---|---|---|---|"
        );
        for contender in OVERHEAD_CONTENDERS {
            let i = contender.index();
            let name = match contender {
                Contender::Untraced => "no tracer".to_owned(),
                Contender::Floor => format!("floor: empty programs on {}", hooks.join(", ")),
                Contender::Ours => format!("ours (rung {rung})"),
                Contender::C if b.versus_cli.is_some() => b.versus_label(),
                Contender::C if b.c_tool => "libbpf-tools".to_owned(),
                Contender::C => "libbpf-tools (no path on this kernel)".to_owned(),
            };
            let added = if contender == Contender::Untraced { "".to_owned() } else { stat(&self.added[i], 0) };
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {added} | {} |",
                stat(&self.per_sec[i], 0),
                stat(&self.ns[i], 0),
                stat(&self.cpu_ns[i], 0)
            );
        }
        s += "\nIn the kernel, from a separate run with `kernel.bpf_stats_enabled` (which adds two clock reads per \
              run): nanoseconds per run × runs per operation.\n\n";
        for (contender, progs, ops) in &self.profile {
            let total: u64 = progs.iter().map(|p| p.run_time_ns).sum();
            let each: Vec<String> = progs
                .iter()
                .map(|p| {
                    let runs = p.run_cnt as f64 / (*ops).max(1) as f64;
                    format!("`{}` {:.0} ns × {runs:.2}", p.name, p.run_time_ns as f64 / p.run_cnt.max(1) as f64)
                })
                .collect();
            let name = match contender {
                Contender::Floor => "floor",
                Contender::Ours => "ours",
                _ if b.versus_cli.is_some() => "command line",
                _ => "libbpf-tools",
            };
            let per_op = total as f64 / (*ops).max(1) as f64;
            let _ = writeln!(s, "- {name}: {per_op:.0} ns per op: {}", each.join(", "));
        }
        let ours = median(&self.added[Contender::Ours.index()]);
        let _ = writeln!(
            s,
            "\nAdded cost, ours / {}: **{}**; ours / floor: **{}**.\n",
            if b.versus_cli.is_some() { b.versus_label() } else { "libbpf-tools".to_owned() },
            ratio(ours, median(&self.added[Contender::C.index()])),
            ratio(ours, median(&self.added[Contender::Floor.index()]))
        );
        s
    }

    fn memory_row(&self, name: &str) -> String {
        Self::row(name, &self.rss_mb, 1)
    }

    fn stop_row(&self, name: &str) -> String {
        Self::row(name, &self.stop_ms, 0)
    }

    /// A row of ours, libbpf-tools', the floor's, and ours / libbpf-tools.
    fn row(name: &str, values: &[Vec<f64>; 4], decimals: usize) -> String {
        let [_, floor, ours, c] = values;
        format!(
            "| {name} | {} | {} | {} | {} |\n",
            stat(ours, decimals),
            stat(c, decimals),
            stat(floor, decimals),
            ratio(median(ours), median(c))
        )
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `median (min–max)`, or just the value for a single round.
fn stat(xs: &[f64], decimals: usize) -> String {
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match xs.len() {
        0 => "–".to_owned(),
        1 => format!("{:.decimals$}", xs[0]),
        _ => format!("{:.decimals$} ({min:.decimals$}–{max:.decimals$})", median(xs)),
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".to_owned()
    }
}

/// Time from spawning `cmd` to the first line it prints. Its stdout is a
/// pty, as in an interactive run, so a C tool's stdio flushes each line.
fn time_to_first_line(mut cmd: Command) -> Result<Duration> {
    let (master, slave) = open_pty()?;
    cmd.stdin(Stdio::null()).stdout(Stdio::from(slave)).stderr(Stdio::null());
    let what = format!("{cmd:?}");
    let started = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    // Killed if this returns early (an error): nothing is left running.
    let mut child = KillOnDrop::new(child);
    // The pty ends (reads fail) once the child has exited and no copy of
    // its end is left here.
    drop(cmd);
    let mut seen = Vec::new();
    let elapsed = loop {
        match read_pty(&master, Duration::from_secs(10))? {
            Some(bytes) => {
                seen.extend_from_slice(&bytes);
                if seen.contains(&b'\n') {
                    break started.elapsed();
                }
            }
            None => bail!("{what} printed no line: {}", String::from_utf8_lossy(&seen)),
        }
    };
    signal(&child.0, libc::SIGINT);
    while read_pty(&master, Duration::from_secs(10))?.is_some() {}
    child.0.wait()?;
    Ok(elapsed)
}

/// How a start-up that printed nothing in time fails (retried).
const PTY_SILENT: &str = "no output from the pty";

/// A child killed when dropped, unless it has ended, or was reaped by
/// other means (`wait4`: then its PID may be another process's).
struct KillOnDrop(Child, bool);

impl KillOnDrop {
    fn new(child: Child) -> KillOnDrop {
        KillOnDrop(child, false)
    }

    /// Reaped by `wait4`: nothing is left to kill.
    fn reaped(&mut self) {
        self.1 = true;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.1 && matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
    // SAFETY: plain calls on the descriptor just opened; the name buffer is large enough.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if master < 0 {
            bail!("posix_openpt: {}", std::io::Error::last_os_error());
        }
        let master = OwnedFd::from_raw_fd(master);
        let mut name = [0 as libc::c_char; 128];
        if libc::grantpt(master.as_raw_fd()) != 0
            || libc::unlockpt(master.as_raw_fd()) != 0
            || libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) != 0
        {
            bail!("setting up a pty: {}", std::io::Error::last_os_error());
        }
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if slave < 0 {
            bail!("opening the pty: {}", std::io::Error::last_os_error());
        }
        Ok((master, OwnedFd::from_raw_fd(slave)))
    }
}

/// Bytes from the pty, None once the other end is gone; an error when
/// nothing came within `timeout`.
fn read_pty(master: &OwnedFd, timeout: Duration) -> Result<Option<Vec<u8>>> {
    let mut poll = libc::pollfd { fd: master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as i32) };
    if ready == 0 {
        bail!("{PTY_SILENT} within {timeout:?}");
    }
    let mut buf = [0u8; 4096];
    // SAFETY: reads into a live buffer of its length.
    let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    Ok((n > 0).then(|| buf[..n as usize].to_vec()))
}

/// A uprobe's library as this root names it: gethostlatency reaches a C
/// library that this root lacks through `/proc/PID/root/...` of a process
/// that maps it, and that process may have exited by the time the floor
/// attaches. The workloads run in this root, so its own path is the same file.
fn in_this_root(hook: &str) -> String {
    let Some((kind, path)) = hook.split_once('/') else { return hook.to_owned() };
    match path.strip_prefix("/proc/").and_then(|rest| rest.split_once("/root/")) {
        Some((pid, inside)) if pid.bytes().all(|b| b.is_ascii_digit()) => format!("{kind}//{inside}"),
        _ => hook.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::in_this_root;

    #[test]
    fn a_library_reached_through_a_process_root_is_named_from_this_root() {
        assert_eq!(
            in_this_root("uretprobe//proc/9114/root/usr/lib/libc.so.6:0xefc70 (cookie 0x0)"),
            "uretprobe//usr/lib/libc.so.6:0xefc70 (cookie 0x0)"
        );
        assert_eq!(in_this_root("raw_tp/sched_wakeup"), "raw_tp/sched_wakeup");
        assert_eq!(in_this_root("uprobe//usr/lib/libc.so.6:0x10"), "uprobe//usr/lib/libc.so.6:0x10");
    }
}
