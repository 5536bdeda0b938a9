//! `ebpf-tools-exporter`: the tools always on, their kernel
//! histograms read at each scrape and served to Prometheus (see the
//! binary for its flags, `metrics` for the expositions, `http` for the
//! server, `web_config` for TLS and basic auth, `tools` for what is loaded).

pub mod http;
pub mod metrics;
pub mod tools;
pub mod web_config;

use std::time::Instant;

use metrics::{Kind, Scrape};
use tools::{State, Tool};

/// The loaded tools and how they are served.
pub struct Exporter {
    pub tools: Vec<Tool>,
    /// The native histograms' schema.
    pub schema: i32,
    pub metrics_path: String,
}

const LOST_SAMPLES: &str = "ebpf_tools_lost_samples_total";

impl Exporter {
    /// Detaches every tool's programs, all at once (see [`crate::loader::detach_all`]).
    pub fn detach_all(&mut self) {
        let attached = self.tools.iter_mut().filter_map(|tool| match &mut tool.state {
            State::Attached { collector, .. } => Some(collector.ebpf()),
            State::Failed(_) => None,
        });
        crate::loader::detach_all(attached);
    }

    /// Reads every tool's maps and the exporter's own health into one scrape.
    pub fn scrape(&mut self) -> Scrape {
        let mut scrape = Scrape::default();
        let mut health = Vec::new();
        for tool in &mut self.tools {
            let State::Attached { collector, skipped, .. } = &mut tool.state else { continue };
            let started = Instant::now();
            let result = collector.collect(&mut scrape);
            health.push((tool.name, started.elapsed().as_secs_f64(), result, skipped.total()));
        }
        for tool in &self.tools {
            let (rung, attached) = match &tool.state {
                State::Attached { rung, .. } => (*rung, 1.0),
                State::Failed(_) => ("", 0.0),
            };
            scrape.number(
                "ebpf_tools_tool_attached",
                Kind::Gauge,
                "Whether the tool's kernel programs are attached (1), and on which rung of its ladder; 0 when none \
                 could be (the exporter's log says what was tried).",
                vec![("tool", tool.name.into()), ("rung", rung.into())],
                attached,
            );
        }
        for tool in &self.tools {
            let State::Attached { programs, .. } = &tool.state else { continue };
            for (program, hook) in programs {
                scrape.number(
                    "ebpf_tools_program_attached",
                    Kind::Gauge,
                    "Each attached kernel program and its hook.",
                    vec![("tool", tool.name.into()), ("program", program.clone()), ("hook", hook.clone())],
                    1.0,
                );
            }
        }
        for (tool, seconds, result, skipped) in &health {
            if let Ok(drops) = result {
                for (reason, n) in crate::loss::reasons(drops, *skipped) {
                    scrape.number(
                        LOST_SAMPLES,
                        Kind::Counter,
                        "Samples the kernel side could not record, by tool and reason (a full table, an \
                         unreadable struct, a run the kernel skipped because a BPF program was already running \
                         on that CPU): counted, never dropped silently.",
                        vec![("tool", (*tool).into()), ("reason", reason.into())],
                        n as f64,
                    );
                }
            }
            scrape.number(
                "ebpf_tools_scrape_collector_success",
                Kind::Gauge,
                "Whether reading the tool's kernel maps succeeded in this scrape.",
                vec![("tool", (*tool).into())],
                result.is_ok() as u8 as f64,
            );
            scrape.number(
                "ebpf_tools_scrape_collector_duration_seconds",
                Kind::Gauge,
                "Time this scrape took to read the tool's kernel maps.",
                vec![("tool", (*tool).into())],
                *seconds,
            );
            if let Err(err) = result {
                log::warn!("reading {tool}'s maps: {err:#}");
            }
        }
        scrape.number(
            "ebpf_tools_build_info",
            Kind::Info,
            "The exporter's version, and the commit it was built from (as --version says it; \"unknown\" when \
             built outside git without EBPF_TOOLS_COMMIT).",
            vec![("version", env!("CARGO_PKG_VERSION").into()), ("revision", env!("EBPF_TOOLS_COMMIT").into())],
            1.0,
        );
        process_metrics(&mut scrape);
        scrape
    }

    /// The index page: what is served, and each tool's state.
    pub fn index_page(&self) -> String {
        let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let mut rows = String::new();
        for tool in &self.tools {
            let state = match &tool.state {
                State::Attached { rung, .. } => format!("attached (rung {rung})"),
                State::Failed(err) => format!("not attached: {}", escape(err)),
            };
            rows += &format!("<li>{}: {state}</li>\n", tool.name);
        }
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ebpf-tools exporter</title></head>\n\
             <body><h1>ebpf-tools exporter</h1>\n<p><a href=\"{path}\">{path}</a></p>\n<ul>\n{rows}</ul>\n</body></html>\n",
            path = escape(&self.metrics_path)
        )
    }
}

/// The process metrics every Prometheus client library exports.
fn process_metrics(scrape: &mut Scrape) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK) as f64, libc::sysconf(libc::_SC_PAGESIZE) as f64) };
    let boot_time = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        scrape.number(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            vec![],
            (utime + stime) / ticks,
        );
    }
    if let Some(rss) = field(24) {
        scrape.number(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            vec![],
            rss * page,
        );
    }
    if let Some(vsize) = field(23) {
        scrape.number("process_virtual_memory_bytes", Kind::Gauge, "Virtual memory size in bytes.", vec![], vsize);
    }
    if let (Some(start), Some(boot)) = (field(22), boot_time) {
        scrape.number(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            vec![],
            boot + start / ticks,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        scrape.number("process_open_fds", Kind::Gauge, "Number of open file descriptors.", vec![], fds.count() as f64);
    }
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        scrape.number(
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
            vec![],
            limit.rlim_cur as f64,
        );
    }
}
