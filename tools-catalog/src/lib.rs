//! Every program of the toolkit, declared once. The exporter's tools, the
//! heatmap's latency fields, what `cargo xtask install` and `deb` put on a
//! machine, the kernel matrix's cells, the benchmarks and the contract
//! every tool's tests check are all derived from [`TOOLS`].
//!
//! A tool's code is found by its name: its user file is
//! `tools-user/src/bin/<name>.rs`, its man page `docs/man/<name>.<section>.md`,
//! its tests `tests/tests/<name>.rs`, its kernel programs
//! `tools-ebpf/src/bin/<object>.rs` and its plan `tools-user/src/plan/<object>.rs`.

/// One program of the toolkit.
#[derive(Debug)]
pub struct Tool {
    /// Its binary's name.
    pub name: &'static str,
    /// Other names it runs as (links to the binary; each picks a variant).
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    /// The man page's section: 8 for what needs root, 1 for the rest.
    pub man_section: u8,
    /// Its kernel programs' object (several tools may share one); None for
    /// a program that loads none.
    pub object: Option<&'static str>,
    /// The records of its `--json` output that carry a latency, which
    /// `ebpf-tools-heatmap` draws (histogram tools need none).
    pub latency: Option<LatencyField>,
    /// Whether `ebpf-tools-exporter` serves it (in this order).
    pub exported: bool,
    /// Its systemd unit, installed beside it.
    pub unit: Option<&'static str>,
    /// Its cells of the kernel matrix (`cargo xtask vm-test`).
    pub matrix: &'static [Cell],
    /// Its rows of `cargo xtask bench`.
    pub bench: &'static [Bench],
    /// How the contract tests start it and know it is tracing.
    pub contract: Option<Contract>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Histograms per interval (`driver::histograms`).
    Histograms,
    /// A stream of events (`driver::events`).
    Events,
    /// The Prometheus exporter.
    Exporter,
    /// Draws captures; loads no BPF.
    Renderer,
}

/// A field of an event tool's `--json` records that holds a latency.
#[derive(Debug)]
pub struct LatencyField {
    /// The record's `type`.
    pub record: &'static str,
    pub field: &'static str,
    /// Nanoseconds per unit of the field.
    pub unit_ns: u64,
}

/// One cell of the kernel matrix: the tool's integration tests in a guest,
/// with `env` set (a rung forced, kernel BTF hidden, ...), all of them or
/// only `tests` (name filters), on every kernel of the matrix or only
/// `kernels` (of every architecture), but for the guests `not_on` names.
#[derive(Debug)]
pub struct Cell {
    /// The row's label.
    pub rung: &'static str,
    pub env: &'static [(&'static str, &'static str)],
    pub tests: &'static [&'static str],
    pub kernels: &'static [&'static str],
    /// Guests of those kernels that lack what the cell forces, as
    /// (architecture, kernel): no cell there.
    pub not_on: &'static [(&'static str, &'static str)],
}

/// One row of the benchmarks: the tool under a workload, beside a contender.
#[derive(Debug)]
pub struct Bench {
    /// The section's name (the tool's when None).
    pub name: Option<&'static str>,
    pub args: &'static [&'static str],
    pub versus: Versus,
    pub workload: Workload,
}

/// What a benchmark row compares with, beside the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versus {
    /// libbpf-tools' tool of the same name.
    LibbpfTools,
    /// Nothing runs on this kernel (libbpf-tools' ext4slower has only kprobe
    /// and fentry paths).
    Nothing,
    /// Our command-line tools of these names, run side by side: what the
    /// exporter replaces.
    OurTools(&'static [&'static str]),
}

/// The benchmark workloads (`xtask/src/bench/workload.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    PingPong,
    ExecStorm,
    DirectReads,
    TcpCycles,
    Lookups,
    CachedPreads,
    PipeRoundTrips,
}

impl Workload {
    /// What it does, as the benchmark tables say.
    pub fn title(self) -> &'static str {
        match self {
            Workload::PingPong => "ping-pong over pipes between two processes pinned to one CPU",
            Workload::ExecStorm => "one process forking and exec'ing /bin/true",
            Workload::DirectReads => "4 KiB O_DIRECT reads of a loop device, one at a time",
            Workload::TcpCycles => "loopback connections, each 100 bytes sent then closed, one after another",
            Workload::Lookups => "getaddrinfo(\"localhost\") in a loop, answered from /etc/hosts",
            Workload::CachedPreads => "4 KiB preads of a cached file on ext4 (all faster than the default 10 ms)",
            Workload::PipeRoundTrips => {
                "4 KiB written to a pipe and read back: what every read that is not ext4's pays"
            }
        }
    }

    /// What one of its operations is.
    pub fn ops(self) -> &'static str {
        match self {
            Workload::PingPong => "round trips",
            Workload::ExecStorm => "execs",
            Workload::DirectReads => "I/Os",
            Workload::TcpCycles => "connections",
            Workload::Lookups => "lookups",
            Workload::CachedPreads => "reads",
            Workload::PipeRoundTrips => "write + read pairs",
        }
    }
}

/// How the contract tests run a tracer: these arguments, and the text it
/// prints (stdout or stderr) once its programs are attached.
#[derive(Debug)]
pub struct Contract {
    pub args: &'static [&'static str],
    pub ready: &'static str,
}

/// Kernel BTF hidden: struct offsets from a BTF file passed with --btf.
const BTF_FILE: &[(&str, &str)] = &[("EBPF_TOOLS_HIDE_KERNEL_BTF", "1"), ("EBPF_TOOLS_BTF", "/tmp/vmlinux.btf")];
/// Both close orders, a refused connect and a reset: owners, bytes and
/// durations.
const TCPLIFE_SESSIONS: &[&str] = &["closes_first", "refused", "accepter"];
/// Every operation exactly, and the threshold on a read held up by userfaultfd.
const EXT4SLOWER_OPS: &[&str] = &["every_operation_with_threshold_zero", "a_read_slower"];

const BEST: Cell = everywhere("best", &[], &[]);

/// A cell on every guest of the matrix.
const fn everywhere(
    rung: &'static str,
    env: &'static [(&'static str, &'static str)],
    tests: &'static [&'static str],
) -> Cell {
    Cell { rung, env, tests, kernels: &[], not_on: &[] }
}

/// The legacy build (configuration map, perf event array, plain maps) with
/// the rung for Linux 4.4 forced, in the oldest guests: that rung's own
/// known-answer tests (no flag that needs the current task).
const fn legacy_4_4(
    rung: &'static str,
    env: &'static [(&'static str, &'static str)],
    tests: &'static [&'static str],
) -> Cell {
    Cell { rung, env, tests, kernels: OLDEST, not_on: &[] }
}

const OLDEST: &[&str] = &["5.10", "6.1"];
const LEGACY_KPROBE: &[(&str, &str)] = &[("EBPF_TOOLS_RUNG", "kprobe"), ("EBPF_TOOLS_CONFIG_MAP", "1")];

/// Every program, in the order the exporter loads the ones it serves.
pub const TOOLS: &[Tool] = &[
    Tool {
        name: "runqlat",
        aliases: &[],
        kind: Kind::Histograms,
        man_section: 8,
        object: Some("runqlat"),
        latency: None,
        exported: true,
        unit: None,
        matrix: &[
            BEST,
            everywhere(
                "kprobe",
                &[("EBPF_TOOLS_RUNG", "kprobe")],
                &["contention_on_the_best_rung", "per_process_and_per_thread", "per_pid_namespace"],
            ),
            everywhere("btf-file", BTF_FILE, &["contention_on_the_best_rung"]),
            legacy_4_4(
                "4.4 kprobe",
                LEGACY_KPROBE,
                &["contention_on_the_best_rung", "per_process_and_per_thread", "json_lines_parse", "milliseconds"],
            ),
        ],
        // What --containers adds: each sample keyed by its task's cgroup.
        bench: &[
            Bench { name: None, args: &[], versus: Versus::LibbpfTools, workload: Workload::PingPong },
            Bench {
                name: Some("runqlat --containers"),
                args: &["--containers"],
                versus: Versus::LibbpfTools,
                workload: Workload::PingPong,
            },
        ],
        contract: Some(Contract { args: &[], ready: "Tracing run queue latency" }),
    },
    Tool {
        name: "biolatency",
        aliases: &[],
        kind: Kind::Histograms,
        man_section: 8,
        object: Some("biolatency"),
        latency: None,
        exported: true,
        unit: None,
        // The kprobe rung runs as the legacy build's, Linux 4.4's, in the
        // oldest guests.
        matrix: &[
            BEST,
            everywhere("btf-file", BTF_FILE, &["exact_count_on_the_best_rung"]),
            legacy_4_4(
                "4.4 kprobe",
                LEGACY_KPROBE,
                &["exact_count_on_the_best_rung", "json_counts_exactly", "per_disk_sections"],
            ),
        ],
        bench: &[Bench { name: None, args: &[], versus: Versus::LibbpfTools, workload: Workload::DirectReads }],
        contract: Some(Contract { args: &[], ready: "Tracing block device I/O" }),
    },
    Tool {
        name: "ext4slower",
        // It traces the filesystem it is run as.
        aliases: &["xfsslower", "btrfsslower"],
        kind: Kind::Events,
        man_section: 8,
        object: Some("fsslower"),
        latency: Some(LatencyField { record: "op", field: "latency_ns", unit_ns: 1 }),
        exported: true,
        unit: None,
        // ext4 is a module on Debian: fentry cannot reach it, so "best" is
        // the kprobe rung there.
        matrix: &[
            BEST,
            everywhere("syscall", &[("EBPF_TOOLS_RUNG", "syscall")], EXT4SLOWER_OPS),
            everywhere("btf-file", BTF_FILE, EXT4SLOWER_OPS),
            legacy_4_4("4.4 kprobe", LEGACY_KPROBE, EXT4SLOWER_OPS),
        ],
        // Where the only path is the syscall rung (this host's kernel), it
        // is taken as a user allows it, knowing its cost.
        bench: &[
            Bench {
                name: None,
                args: &["--allow-syscall-rung"],
                versus: Versus::Nothing,
                workload: Workload::CachedPreads,
            },
            Bench {
                name: Some("ext4slower on pipes"),
                args: &["--allow-syscall-rung"],
                versus: Versus::Nothing,
                workload: Workload::PipeRoundTrips,
            },
        ],
        contract: Some(Contract { args: &["--json", "--allow-syscall-rung"], ready: "Tracing ext4 operations" }),
    },
    Tool {
        name: "tcplife",
        aliases: &[],
        kind: Kind::Events,
        man_section: 8,
        object: Some("tcplife"),
        latency: Some(LatencyField { record: "session", field: "duration_ns", unit_ns: 1 }),
        exported: true,
        unit: None,
        matrix: &[
            BEST,
            everywhere("kprobe", &[("EBPF_TOOLS_RUNG", "kprobe")], TCPLIFE_SESSIONS),
            everywhere("btf-file", BTF_FILE, TCPLIFE_SESSIONS),
            // The kretprobe comes first where both work: fexit's own cell.
            // arm64 attaches fentry and fexit from 6.4 (ftrace's direct
            // calls); before, the kernel refuses them (ENOTSUPP).
            Cell {
                rung: "fexit accept",
                env: &[("EBPF_TOOLS_RUNG", "raw_tracepoint/fexit")],
                tests: &["accepter"],
                kernels: &[],
                not_on: &[("arm64", "5.10"), ("arm64", "6.1")],
            },
            legacy_4_4("4.4 kprobe", LEGACY_KPROBE, &["closes_first", "refused", "accepter", "default_text_layout"]),
        ],
        // Where accept() is traced through syscall tracepoints (this host's
        // kernel), every system call pays: pipes show what.
        bench: &[
            Bench { name: None, args: &[], versus: Versus::LibbpfTools, workload: Workload::TcpCycles },
            Bench {
                name: Some("tcplife on pipes"),
                args: &[],
                versus: Versus::LibbpfTools,
                workload: Workload::PipeRoundTrips,
            },
        ],
        contract: Some(Contract { args: &["--json"], ready: "Tracing TCP sessions" }),
    },
    Tool {
        name: "gethostlatency",
        aliases: &[],
        kind: Kind::Events,
        man_section: 8,
        object: Some("gethostlatency"),
        latency: Some(LatencyField { record: "lookup", field: "latency_ns", unit_ns: 1 }),
        exported: true,
        unit: None,
        matrix: &[
            BEST,
            legacy_4_4(
                "4.4 uprobe",
                &[("EBPF_TOOLS_RUNG", "uprobe"), ("EBPF_TOOLS_CONFIG_MAP", "1")],
                &["a_lookup_against_a_slow_dns_server", "failed_and_local_lookups", "each_function_and_a_null_host"],
            ),
        ],
        bench: &[Bench { name: None, args: &[], versus: Versus::LibbpfTools, workload: Workload::Lookups }],
        contract: Some(Contract { args: &["--json"], ready: "Tracing host name lookups" }),
    },
    Tool {
        name: "execsnoop",
        aliases: &[],
        kind: Kind::Events,
        man_section: 8,
        object: Some("execsnoop"),
        latency: None,
        exported: false,
        unit: None,
        matrix: &[
            BEST,
            everywhere(
                "perf-array",
                &[("EBPF_TOOLS_PERF_ARRAY", "1")],
                &["basic_exec", "failed_exec_only_with_x", "argument_limits", "json_lines_are_lossless", "scripts"],
            ),
            everywhere("btf-file", BTF_FILE, &["basic_exec", "failed_exec_only_with_x"]),
            legacy_4_4(
                "4.4 kprobe",
                LEGACY_KPROBE,
                &["basic_exec", "failed_exec_only_with_x", "quoting_and_escaping", "exec_from_a_thread"],
            ),
        ],
        // What --containers adds: each exec's cgroup read, and named.
        bench: &[
            Bench { name: None, args: &[], versus: Versus::LibbpfTools, workload: Workload::ExecStorm },
            Bench {
                name: Some("execsnoop --containers"),
                args: &["--containers"],
                versus: Versus::LibbpfTools,
                workload: Workload::ExecStorm,
            },
        ],
        contract: Some(Contract { args: &["--json"], ready: "Tracing exec()s" }),
    },
    Tool {
        name: "ebpf-tools-heatmap",
        aliases: &[],
        kind: Kind::Renderer,
        man_section: 1,
        object: None,
        latency: None,
        exported: false,
        unit: None,
        matrix: &[],
        bench: &[],
        contract: None,
    },
    Tool {
        name: "ebpf-tools-exporter",
        aliases: &[],
        kind: Kind::Exporter,
        man_section: 8,
        object: None,
        latency: None,
        exported: false,
        unit: Some("contrib/systemd/ebpf-tools-exporter.service"),
        // Its other tests need Prometheus and promtool, which the guests
        // lack (arm64's); this one scrapes by itself, with a tool refused.
        matrix: &[everywhere("serves a scrape", &[], &["a_tool_that_cannot_attach_is_named_and_the_others_serve"])],
        bench: &[
            Bench {
                name: Some("exporter under runqlat's workload"),
                args: EXPORTER_ARGS,
                versus: Versus::OurTools(EXPORTED_BY_THE_BENCH),
                workload: Workload::PingPong,
            },
            Bench {
                name: Some("exporter under biolatency's workload"),
                args: EXPORTER_ARGS,
                versus: Versus::OurTools(EXPORTED_BY_THE_BENCH),
                workload: Workload::DirectReads,
            },
        ],
        contract: Some(Contract {
            args: &["--web.listen-address", "127.0.0.1:0"],
            ready: "ebpf-tools-exporter: serving",
        }),
    },
];

/// The exporter's benchmark loads the tools its command-line rows compare
/// with, all of them under each workload (as the command-line tools they
/// replace would run side by side).
const EXPORTER_ARGS: &[&str] = &["--web.listen-address", "127.0.0.1:0", "--tools", "runqlat,biolatency"];
const EXPORTED_BY_THE_BENCH: &[&str] = &["runqlat", "biolatency"];

/// The tool named `name` (or one of its aliases).
pub fn tool(name: &str) -> Option<&'static Tool> {
    TOOLS.iter().find(|t| t.name == name || t.aliases.contains(&name))
}

/// The tools that load BPF programs (tracers and the exporter).
pub fn tracers() -> impl Iterator<Item = &'static Tool> {
    TOOLS.iter().filter(|t| t.kind != Kind::Renderer)
}

/// The tools the exporter serves, in the order it loads them.
pub fn exported() -> impl Iterator<Item = &'static Tool> {
    TOOLS.iter().filter(|t| t.exported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> =
            TOOLS.iter().flat_map(|t| std::iter::once(&t.name).chain(t.aliases)).copied().collect();
        let all = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all);
    }

    #[test]
    fn every_tracer_has_a_contract_and_every_event_tool_an_object() {
        for tool in tracers() {
            assert!(tool.contract.is_some(), "{} has no contract", tool.name);
            if matches!(tool.kind, Kind::Events | Kind::Histograms) {
                assert!(tool.object.is_some(), "{} has no object", tool.name);
            }
        }
    }
}
