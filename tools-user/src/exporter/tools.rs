//! The tools the exporter loads: each through its plan and the loader's
//! ladder, as the command-line tool does, with the kernel keeping
//! nanosecond histograms, their sums and the exporter's keys. Read whole
//! at every scrape; nothing is reset.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context as _, Result};
use aya::{
    maps::{HashMap as BpfHashMap, MapData},
    Ebpf,
};
use tools_common::{
    histogram::OTHER_KEY,
    runqlat::{key_mode, Config as RunqlatConfig},
    tcplife::hist_key,
    Drops,
};

use super::metrics::{Histogram, Kind, Labels, Scrape, Series, Value};
use crate::{
    btf::Btf,
    events::EventPath,
    histogram::HistogramMaps,
    loader::{self, Build, LoadOptions, Loaded},
    loss::SkippedRuns,
    plan::{
        biolatency::{self, Disks, FlagNames, RUNGS_WITH_FLAGS},
        fsslower, gethostlatency, runqlat, tcplife,
    },
};

/// Every tool the exporter knows, in the order they are loaded (the
/// catalog's `exported`).
pub fn names() -> Vec<&'static str> {
    tools_catalog::exported().map(|tool| tool.name).collect()
}

/// What a loaded tool gives each scrape.
pub trait Collector {
    /// Adds the tool's families to the scrape; returns what its kernel side
    /// could not record since it was loaded.
    fn collect(&mut self, scrape: &mut Scrape) -> Result<Drops>;

    /// Its object, to detach when the exporter stops.
    fn ebpf(&mut self) -> &mut Ebpf;
}

/// A tool as the exporter holds it: attached, or the reason it is not.
pub struct Tool {
    pub name: &'static str,
    pub state: State,
}

pub enum State {
    Attached {
        rung: &'static str,
        /// (program, hook) of the rung taken.
        programs: Vec<(String, String)>,
        /// Runs of its programs the kernel skipped.
        skipped: SkippedRuns,
        collector: Box<dyn Collector>,
    },
    Failed(String),
}

/// The exporter's choices for the tools.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// runqlat: one series per process, at most this many (0: none).
    pub runqlat_max_processes: u32,
    /// runqlat: one series per cgroup, at most this many (0: none; not
    /// with a series per process).
    pub runqlat_max_cgroups: u32,
    /// runqlat: the cgroups' series added up by container.
    pub runqlat_per_container: bool,
    /// biolatency: from queue insertion (`-Q`).
    pub biolatency_queued: bool,
    /// ext4slower: the syscall rung may be taken (it taxes every process).
    pub ext4slower_allow_syscall_rung: bool,
}

/// Loads tool `name` (one of [`names`]) with the BTF parsed once for all.
pub fn load(
    name: &'static str,
    options: &Options,
    btf: &Result<Btf, String>,
    build: Build,
    load_options: &LoadOptions,
) -> Tool {
    let state = match load_tool(name, options, btf, build, load_options) {
        Ok(state) => state,
        Err(err) => State::Failed(format!("{err:#}")),
    };
    Tool { name, state }
}

fn load_tool(
    name: &str,
    options: &Options,
    btf: &Result<Btf, String>,
    build: Build,
    load_options: &LoadOptions,
) -> Result<State> {
    match name {
        "runqlat" => {
            let (key_mode, series_cap) = match (options.runqlat_max_processes, options.runqlat_max_cgroups) {
                (0, 0) => (key_mode::NONE, 0),
                (0, cgroups) => (key_mode::CGROUP, cgroups),
                (processes, _) => (key_mode::PID, processes),
            };
            // Each key's slots and sum, plus room for the others' key.
            let keyed_entries = series_cap.saturating_add(1).saturating_mul(512).clamp(16384, 1 << 20);
            let plan_options = runqlat::Options {
                key_mode,
                unit_ns: 1,
                totals: true,
                series_cap,
                keyed_entries: Some(keyed_entries),
                ..Default::default()
            };
            let plan = runqlat::plan(&plan_options, btf, build)?;
            let config = plan.config;
            // Where cgroups are named, known before anything is attached.
            let series_of = match (key_mode, options.runqlat_per_container) {
                (key_mode::CGROUP, false) => SeriesOf::Cgroups(crate::cgroup::Directories::new()?),
                (key_mode::CGROUP, true) => SeriesOf::Containers(Box::new(crate::container::Containers::new()?)),
                _ => SeriesOf::Processes,
            };
            attached(plan.load(load_options)?, |loaded| Runqlat::new(loaded, &config, series_of))
        }
        "biolatency" => {
            let flag_names = FlagNames::from_btf(btf.as_ref().ok());
            let plan_options = biolatency::Options {
                queued: options.biolatency_queued,
                per_disk: true,
                per_operation: true,
                unit_ns: 1,
                totals: true,
                ..Default::default()
            };
            // The keyed table keeps the object's 16384 (disk, operation, slot)
            // entries, as biolatency -D -F: 8 bytes per entry per CPU of
            // kernel memory; what does not fit is counted as lost.
            attached(biolatency::plan(&plan_options, btf, build)?.load(load_options)?, |mut loaded| {
                let maps = HistogramMaps::take(&mut loaded.ebpf, true, false)?;
                let operations = match flag_names {
                    Ok(names) if RUNGS_WITH_FLAGS.contains(&loaded.rung) => Some(names),
                    _ => None,
                };
                Ok(Biolatency { ebpf: loaded.ebpf, maps, disks: Disks::read()?, operations })
            })
        }
        "ext4slower" => {
            let ext4 = fsslower::FILESYSTEMS.iter().find(|fs| fs.name == "ext4").context("no ext4 in the table")?;
            let plan_options = fsslower::Options {
                fs: ext4,
                min_ms: 0,
                pid: None,
                cgroup: None,
                containers: false,
                histogram_unit_ns: Some(1),
                allow_syscall_rung: options.ext4slower_allow_syscall_rung,
            };
            let path = EventPath::counting_in_kernel(build);
            let loaded = fsslower::plan(&plan_options, btf, load_options, &path)?.load(load_options)?;
            attached(loaded, |loaded| {
                KeyedFamily::new(loaded, EXT4_OPERATION_LATENCY, EXT4_OPERATION_LATENCY_HELP, fsslower::key_labels)
            })
        }
        "tcplife" => {
            let plan_options = tcplife::Options { histogram_unit_ns: Some(1), ..Default::default() };
            let path = EventPath::counting_in_kernel(build);
            let plan = tcplife::plan(&plan_options, btf, &path)?;
            let bytes_known = plan.config.has_bytes != 0;
            attached(plan.load(load_options)?, |loaded| Tcplife::new(loaded, bytes_known))
        }
        "gethostlatency" => {
            let plan_options = gethostlatency::Options { histogram_unit_ns: Some(1), ..Default::default() };
            let path = EventPath::counting_in_kernel(build);
            // The plan's keeper probes new C libraries at each scrape, so
            // the exporter does nothing between scrapes.
            let (plan, _) = gethostlatency::plan(&plan_options, btf, &path)?;
            attached(plan.load(load_options)?, |loaded| {
                KeyedFamily::new(
                    loaded,
                    NAME_RESOLUTION_LATENCY,
                    NAME_RESOLUTION_LATENCY_HELP,
                    gethostlatency::key_labels,
                )
            })
        }
        other => anyhow::bail!("no tool named {other}"),
    }
}

/// The state of a tool whose programs are attached: its rung, programs
/// and skipped runs as `loaded` says, and the collector made from it.
fn attached<C: Collector + 'static>(mut loaded: Loaded, collector: impl FnOnce(Loaded) -> Result<C>) -> Result<State> {
    let (rung, programs, skipped) = (loaded.rung, loaded.hooks.clone(), std::mem::take(&mut loaded.skipped));
    let ids = loader::program_ids(&loaded.ebpf);
    match collector(loaded) {
        Ok(collector) => Ok(State::Attached { rung, programs, skipped, collector: Box::new(collector) }),
        Err(err) => {
            // Nothing of the tool stays attached.
            loader::drop_links(&ids);
            Err(err)
        }
    }
}

const RUN_QUEUE_LATENCY: &str = "ebpf_tools_run_queue_latency_seconds";
const RUN_QUEUE_LATENCY_HELP: &str = "Scheduler run-queue latency: from a task becoming runnable (woken, new, or \
                                      preempted) to it running on a CPU (runqlat).";
const PROCESS_RUN_QUEUE_LATENCY: &str = "ebpf_tools_process_run_queue_latency_seconds";
const PROCESS_RUN_QUEUE_LATENCY_HELP: &str = "Run-queue latency per process (--runqlat.max-processes of them, first \
                                              come while they live); pid=\"other\" counts every process beyond.";
const PROCESS_SERIES_LIMIT: &str = "ebpf_tools_process_series_limit";
const PROCESS_SERIES_LIMIT_HELP: &str =
    "Processes that can have a run-queue latency series of their own (--runqlat.max-processes).";
const CGROUP_RUN_QUEUE_LATENCY: &str = "ebpf_tools_cgroup_run_queue_latency_seconds";
const CGROUP_RUN_QUEUE_LATENCY_HELP: &str = "Run-queue latency per cgroup v2 directory (--runqlat.max-cgroups of \
                                             them, first come while they exist); cgroup=\"other\" counts every \
                                             cgroup beyond.";
const CONTAINER_RUN_QUEUE_LATENCY: &str = "ebpf_tools_container_run_queue_latency_seconds";
const CONTAINER_RUN_QUEUE_LATENCY_HELP: &str = "Run-queue latency per container (its cgroups added up; \
                                                --runqlat.max-cgroups cgroups first come while they exist); \
                                                container=\"\" is the host's processes, container=\"other\" \
                                                every cgroup beyond.";
const CGROUP_SERIES_LIMIT: &str = "ebpf_tools_cgroup_series_limit";
const CGROUP_SERIES_LIMIT_HELP: &str =
    "Cgroups that can have a run-queue latency series of their own (--runqlat.max-cgroups).";

/// The per-container series' labels: the container's fields but its
/// runtime (which its ID already tells apart).
const CONTAINER_LABELS: [&str; 4] = ["container", "container_id", "pod", "namespace"];

/// What runqlat's series of their own are of: processes, cgroups, or
/// containers (cgroups added up).
enum SeriesOf {
    Processes,
    Cgroups(crate::cgroup::Directories),
    Containers(Box<crate::container::Containers>),
}

impl SeriesOf {
    /// The labels of `key`'s series; None when what it names is gone.
    fn labels(&mut self, key: u64) -> Option<Labels> {
        match self {
            SeriesOf::Processes => {
                // Read before /proc is: a process that exits in between is still seen whole.
                let comm = crate::procfs::kernel_pids().comm(u32::try_from(key).ok()?)?;
                let comm = String::from_utf8_lossy(&comm).into_owned();
                Some(vec![("pid", key.to_string()), ("comm", comm)])
            }
            // The id too: a service restarted gets a new cgroup at the same
            // path, whose counts start again from zero.
            SeriesOf::Cgroups(names) => Some(vec![("cgroup", names.path_of(key)?), ("cgroup_id", key.to_string())]),
            SeriesOf::Containers(containers) => {
                if !containers.exists(key) {
                    return None;
                }
                let container = containers.of_cgroup(key).ok()?;
                // The host's processes: every label empty.
                let field = |key| container.as_ref().and_then(|c| c.field(key)).unwrap_or_default().to_owned();
                Some(CONTAINER_LABELS.map(|key| (key, field(key))).to_vec())
            }
        }
    }

    fn other(&self) -> Labels {
        match self {
            SeriesOf::Processes => vec![("pid", "other".into()), ("comm", String::new())],
            SeriesOf::Cgroups(_) => vec![("cgroup", "other".into()), ("cgroup_id", String::new())],
            SeriesOf::Containers(_) => {
                CONTAINER_LABELS.map(|key| (key, if key == "container" { "other" } else { "" }.to_owned())).to_vec()
            }
        }
    }

    /// (family, its help, the limit's gauge, its help).
    fn names(&self) -> [&'static str; 4] {
        match self {
            SeriesOf::Processes => [
                PROCESS_RUN_QUEUE_LATENCY,
                PROCESS_RUN_QUEUE_LATENCY_HELP,
                PROCESS_SERIES_LIMIT,
                PROCESS_SERIES_LIMIT_HELP,
            ],
            SeriesOf::Cgroups(_) => {
                [CGROUP_RUN_QUEUE_LATENCY, CGROUP_RUN_QUEUE_LATENCY_HELP, CGROUP_SERIES_LIMIT, CGROUP_SERIES_LIMIT_HELP]
            }
            SeriesOf::Containers(_) => [
                CONTAINER_RUN_QUEUE_LATENCY,
                CONTAINER_RUN_QUEUE_LATENCY_HELP,
                CGROUP_SERIES_LIMIT,
                CGROUP_SERIES_LIMIT_HELP,
            ],
        }
    }
}

struct Runqlat {
    ebpf: Ebpf,
    maps: HistogramMaps,
    /// The kernel's table of keys with a series of their own, and what
    /// they are (with a key only).
    series: Option<(BpfHashMap<MapData, u64, u8>, SeriesOf)>,
    cap: u32,
    /// Each key's labels at the last scrape: when the key goes, its last
    /// counts stay in a series that other keys still add up to.
    labels_of: HashMap<u64, Labels>,
    /// The counts of keys gone from a series that lives on (a container's
    /// cgroup removed; a host service stopped), so that its counters never
    /// go down, which Prometheus would take for a reset.
    retired: BTreeMap<Labels, Histogram>,
}

impl Runqlat {
    fn new(mut loaded: Loaded, config: &RunqlatConfig, series_of: SeriesOf) -> Result<Runqlat> {
        let keyed = config.key_mode != key_mode::NONE;
        let maps = HistogramMaps::take(&mut loaded.ebpf, keyed, true)?;
        let series = match keyed {
            false => None,
            true => {
                let table = BpfHashMap::try_from(loaded.ebpf.take_map("SERIES").context("no SERIES map")?)?;
                Some((table, series_of))
            }
        };
        let (labels_of, retired) = Default::default();
        Ok(Runqlat { ebpf: loaded.ebpf, maps, series, cap: config.series_cap, labels_of, retired })
    }
}

impl Collector for Runqlat {
    fn ebpf(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    fn collect(&mut self, scrape: &mut Scrape) -> Result<Drops> {
        let counts = self.maps.unkeyed_total()?;
        let sum_ns = self.maps.totals_total()?.unwrap_or_default().sum_ns;
        scrape
            .family(RUN_QUEUE_LATENCY, Kind::Histogram, RUN_QUEUE_LATENCY_HELP)
            .series
            .push(Series { labels: vec![], value: Value::Histogram(Histogram { counts, sum_ns }) });
        if let Some((table, of)) = &mut self.series {
            match of {
                SeriesOf::Cgroups(names) => names.allow_walk(),
                // One walk a scrape: which cgroups exist, and the containers of new ones.
                SeriesOf::Containers(containers) => containers.look(),
                SeriesOf::Processes => {}
            }
            let [name, help, limit, limit_help] = of.names();
            let mut gone = BTreeSet::new();
            let mut labelled = Vec::new();
            let mut living = BTreeSet::new();
            // Only containers' series add several keys up: the others end with their one key.
            let shared = matches!(of, SeriesOf::Containers(_));
            for (key, (counts, sum_ns)) in self.maps.keyed_total()? {
                let histogram = Histogram { counts, sum_ns };
                let labels = match key {
                    OTHER_KEY => Some(of.other()),
                    _ => of.labels(key),
                };
                match labels {
                    Some(labels) => {
                        if shared {
                            living.insert(labels.clone());
                            self.labels_of.insert(key, labels.clone());
                        }
                        labelled.push((labels, histogram));
                    }
                    None => {
                        gone.insert(key);
                        if let Some(labels) = self.labels_of.remove(&key) {
                            let retired = self.retired.entry(labels).or_default();
                            retired.counts.add(&histogram.counts);
                            retired.sum_ns += histogram.sum_ns;
                        }
                    }
                }
            }
            // A series no key adds up to any more is gone, its retired counts with it.
            self.retired.retain(|labels, _| living.contains(labels));
            labelled.extend(self.retired.iter().map(|(labels, histogram)| (labels.clone(), histogram.clone())));
            // A container's cgroups add up into its series.
            scrape.family(name, Kind::Histogram, help).add_histograms(labelled);
            // What is gone counts no more: its place goes to the next one.
            self.maps.remove_keys(&gone);
            for key in &gone {
                let _ = table.remove(key);
            }
            scrape.number(limit, Kind::Gauge, limit_help, vec![], self.cap as f64);
        }
        self.maps.drops_total()
    }
}

const BLOCK_IO_LATENCY: &str = "ebpf_tools_block_io_latency_seconds";
const BLOCK_IO_LATENCY_HELP: &str = "Block I/O latency from issue to the device (or, with --biolatency.queued, \
                                     from queueing) to completion, by disk and operation (biolatency).";

struct Biolatency {
    ebpf: Ebpf,
    maps: HistogramMaps,
    disks: Disks,
    /// Names of operations, where the rung taken reads the request.
    operations: Option<FlagNames>,
}

impl Collector for Biolatency {
    fn ebpf(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    fn collect(&mut self, scrape: &mut Scrape) -> Result<Drops> {
        let keyed = self.maps.keyed_total()?;
        // A disk attached since the last look (a new loop device) is named.
        if keyed.keys().any(|key| self.disks.get((key >> 32) as u32).is_none()) {
            self.disks = Disks::read()?;
        }
        // Operations this exporter cannot name are all "unknown": their keys add up.
        let (disks, operations) = (&self.disks, &self.operations);
        let labelled = keyed.into_iter().map(|(key, (counts, sum_ns))| {
            let dev = (key >> 32) as u32;
            let disk = match disks.get(dev) {
                Some(name) => name.to_owned(),
                None => format!("{}:{}", dev >> 20, dev & 0xf_ffff),
            };
            let operation =
                operations.as_ref().and_then(|names| names.op_label(key as u32)).unwrap_or_else(|| "unknown".into());
            (vec![("disk", disk), ("operation", operation)], Histogram { counts, sum_ns })
        });
        scrape.family(BLOCK_IO_LATENCY, Kind::Histogram, BLOCK_IO_LATENCY_HELP).add_histograms(labelled);
        self.maps.drops_total()
    }
}

const EXT4_OPERATION_LATENCY: &str = "ebpf_tools_ext4_operation_latency_seconds";
const EXT4_OPERATION_LATENCY_HELP: &str =
    "Latency of ext4 reads, writes, opens and fsyncs, from the call to its return, by operation (ext4slower).";

const TCP_SESSION_DURATION: &str = "ebpf_tools_tcp_session_duration_seconds";
const TCP_SESSION_DURATION_HELP: &str = "How long TCP sessions lived, from their last move into a state below \
                                         FIN_WAIT1 to CLOSE, counted as they close, by address family (tcplife).";
const TCP_SESSION_SENT: &str = "ebpf_tools_tcp_session_sent_bytes_total";
const TCP_SESSION_SENT_HELP: &str =
    "Bytes sent and acknowledged (tcp_sock.bytes_acked) by TCP sessions that closed, by address family (tcplife).";
const TCP_SESSION_RECEIVED: &str = "ebpf_tools_tcp_session_received_bytes_total";
const TCP_SESSION_RECEIVED_HELP: &str =
    "Bytes received (tcp_sock.bytes_received) by TCP sessions that closed, by address family (tcplife).";

/// tcplife counting every session in the kernel as it closes.
struct Tcplife {
    ebpf: Ebpf,
    maps: HistogramMaps,
    /// The kernel's BTF gives the byte counters' offsets.
    bytes_known: bool,
}

impl Tcplife {
    fn new(mut loaded: Loaded, bytes_known: bool) -> Result<Tcplife> {
        let maps = HistogramMaps::take_keyed(&mut loaded.ebpf)?;
        Ok(Tcplife { ebpf: loaded.ebpf, maps, bytes_known })
    }
}

impl Collector for Tcplife {
    fn ebpf(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    fn collect(&mut self, scrape: &mut Scrape) -> Result<Drops> {
        let keyed = self.maps.keyed_total()?;
        let durations = scrape.family(TCP_SESSION_DURATION, Kind::Histogram, TCP_SESSION_DURATION_HELP);
        for (key, (counts, sum_ns)) in keyed.iter().filter(|(key, _)| *key & !0xff == hist_key::DURATION) {
            durations.series.push(Series {
                labels: tcplife::key_labels(*key),
                value: Value::Histogram(Histogram { counts: counts.clone(), sum_ns: *sum_ns }),
            });
        }
        if self.bytes_known {
            for (which, name, help) in [
                (hist_key::TX_BYTES, TCP_SESSION_SENT, TCP_SESSION_SENT_HELP),
                (hist_key::RX_BYTES, TCP_SESSION_RECEIVED, TCP_SESSION_RECEIVED_HELP),
            ] {
                let family = scrape.family(name, Kind::Counter, help);
                for (key, (_, bytes)) in keyed.iter().filter(|(key, _)| *key & !0xff == which) {
                    family
                        .series
                        .push(Series { labels: tcplife::key_labels(*key), value: Value::Number(*bytes as f64) });
                }
            }
        }
        self.maps.drops_total()
    }
}

const NAME_RESOLUTION_LATENCY: &str = "ebpf_tools_name_resolution_latency_seconds";
const NAME_RESOLUTION_LATENCY_HELP: &str =
    "Latency of host name lookups (getaddrinfo, gethostbyname, gethostbyname2) in \
                                            every C library, by function and result: ok, getaddrinfo's EAI_*, or \
                                            gethostbyname's NULL (gethostlatency).";

/// Tells a key's labels.
type Labeller = fn(u64) -> Labels;

/// An event tool counting in the kernel (ext4slower, gethostlatency): one
/// histogram family, a series per key of its keyed table.
struct KeyedFamily {
    /// Its keeper (gethostlatency's C libraries) has a round at each scrape.
    loaded: Loaded,
    maps: HistogramMaps,
    name: &'static str,
    help: &'static str,
    labels: Labeller,
}

impl KeyedFamily {
    fn new(mut loaded: Loaded, name: &'static str, help: &'static str, labels: Labeller) -> Result<KeyedFamily> {
        let maps = HistogramMaps::take_keyed(&mut loaded.ebpf)?;
        Ok(KeyedFamily { loaded, maps, name, help, labels })
    }
}

impl Collector for KeyedFamily {
    fn ebpf(&mut self) -> &mut Ebpf {
        &mut self.loaded.ebpf
    }

    fn collect(&mut self, scrape: &mut Scrape) -> Result<Drops> {
        self.loaded.tick()?;
        // gethostlatency's results beyond EAI_OVERFLOW are all "EAI_?": their keys add up.
        let labels = self.labels;
        let labelled = self
            .maps
            .keyed_total()?
            .into_iter()
            .map(|(key, (counts, sum_ns))| (labels(key), Histogram { counts, sum_ns }));
        scrape.family(self.name, Kind::Histogram, self.help).add_histograms(labelled);
        self.maps.drops_total()
    }
}
