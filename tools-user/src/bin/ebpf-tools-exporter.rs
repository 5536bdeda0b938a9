//! ebpf-tools-exporter: the tools always on, for Prometheus.
//! Loads the chosen tools' kernel programs once, through the same plans and
//! ladder as the command-line tools, and serves their kernel histograms at
//! every scrape of `GET /metrics`: classic text, OpenMetrics, or protobuf
//! with native histograms, as the scraper asks.

use std::{
    cell::RefCell, net::SocketAddr, net::ToSocketAddrs as _, path::PathBuf, process::ExitCode, rc::Rc, sync::Arc,
};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use tools_user::{
    btf::Btf,
    diag::{self, note},
    exporter::{
        http,
        metrics::SCHEMAS,
        tools::{self, State},
        web_config::WebConfig,
        Exporter,
    },
    lifetime::{self, BadInput, Shutdown},
    loader::{Build, LoadOptions},
    manual,
};

/// The port: ebpf_exporter has 9435.
const DEFAULT_LISTEN: &str = ":9436";

/// Serve the toolkit's kernel histograms to Prometheus.
#[derive(Parser, Debug)]
#[command(name = "ebpf-tools-exporter", after_help = EXAMPLES)]
struct Args {
    /// Address to listen on: HOST:PORT, or :PORT for every address. Repeat for several.
    #[arg(long = "web.listen-address", value_name = "ADDRESS", default_value = DEFAULT_LISTEN, value_parser = parse_listen_address)]
    listen: Vec<ListenAddress>,

    /// exporter-toolkit web configuration (TLS, basic auth), YAML.
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config: Option<PathBuf>,

    /// Path under which to serve the metrics.
    #[arg(long = "web.telemetry-path", value_name = "PATH", default_value = "/metrics", value_parser = parse_path)]
    metrics_path: String,

    /// Tools to load, comma-separated (default: every tool whose kernel paths work here).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(tools::names()))]
    tools: Vec<String>,

    /// Schema of the native histograms: 2^(2^-SCHEMA) growth per bucket. 7 (the kernel's own
    /// resolution) keeps quantiles within 0.94 %; each step down halves the buckets and doubles the error.
    #[arg(long = "native-histogram.schema", value_name = "SCHEMA", default_value_t = 7, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(*SCHEMAS.start() as i64..=*SCHEMAS.end() as i64))]
    schema: i32,

    /// runqlat: also a run-queue latency histogram per process.
    #[arg(long = "runqlat.per-process")]
    per_process: bool,

    /// runqlat: most processes with a series of their own; the others count together under pid="other".
    #[arg(long = "runqlat.max-processes", value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_processes: u32,

    /// runqlat: also a run-queue latency histogram per cgroup v2 directory (not with --runqlat.per-process).
    #[arg(long = "runqlat.per-cgroup", conflicts_with = "per_process")]
    per_cgroup: bool,
    /// runqlat: also a run-queue latency histogram per container, the host's processes as one (not with
    /// --runqlat.per-process or --runqlat.per-cgroup).
    #[arg(long = "runqlat.per-container", conflicts_with_all = ["per_process", "per_cgroup"])]
    per_container: bool,
    /// runqlat: most cgroups with a series of their own (or, with --runqlat.per-container, counted towards
    /// their container's); the others count together under cgroup="other" (container="other").
    #[arg(long = "runqlat.max-cgroups", value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_cgroups: u32,
    /// biolatency: from insertion into the queue, not issue to the device (as biolatency -Q).
    #[arg(long = "biolatency.queued")]
    queued: bool,
    /// ext4slower: where the kernel has neither kprobes nor fentry, count through syscall tracepoints, which slow
    /// every read, write, open and fsync of every process on the host (see ext4slower(8)).
    #[arg(long = "ext4slower.allow-syscall-rung")]
    ext4slower_allow_syscall_rung: bool,

    /// Say which kernel paths were probed and taken, and each connection's errors.
    #[arg(long)]
    verbose: bool,

    /// Read struct offsets from this BTF file instead of the kernel's (kernels without BTF).
    #[arg(long, value_name = "FILE", env = "EBPF_TOOLS_BTF")]
    btf: Option<PathBuf>,

    /// Use only this rung of each tool's ladder (for tests). Also EBPF_TOOLS_RUNG.
    #[arg(long, hide = true, env = "EBPF_TOOLS_RUNG")]
    rung: Option<String>,

    /// Load the legacy build (configuration map, perf event array, plain
    /// maps), as on kernels before 5.8 (for tests).
    #[arg(long, hide = true, env = "EBPF_TOOLS_CONFIG_MAP", value_parser = clap::builder::BoolishValueParser::new())]
    config_map: bool,

    /// Behave as on a kernel without BTF (for tests).
    #[arg(long, hide = true, env = "EBPF_TOOLS_HIDE_KERNEL_BTF", value_parser = clap::builder::BoolishValueParser::new())]
    hide_kernel_btf: bool,
}

const EXAMPLES: &str = "examples:
    ebpf-tools-exporter                                  # every tool that works here, on :9436
    ebpf-tools-exporter --tools biolatency               # block I/O latency only
    ebpf-tools-exporter --runqlat.per-process            # and run-queue latency per process
    ebpf-tools-exporter --runqlat.per-cgroup             # ... or per cgroup (a service, a container)
    ebpf-tools-exporter --runqlat.per-container          # ... or per container (and pod)
    ebpf-tools-exporter --web.config.file /etc/ebpf-tools/web.yml   # TLS and basic auth";

/// An address as given, and what it resolves to.
#[derive(Clone, Debug)]
struct ListenAddress {
    given: String,
    addrs: Vec<SocketAddr>,
}

fn parse_listen_address(text: &str) -> Result<ListenAddress, String> {
    let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("{text:?} is not HOST:PORT or :PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("{port:?} is not a port"))?;
    let addrs = if host.is_empty() {
        // Every address: IPv6 and IPv4 on one socket where the host has IPv6.
        vec![SocketAddr::from(([0u16; 8], port)), SocketAddr::from(([0u8; 4], port))]
    } else {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (host, port).to_socket_addrs().map_err(|err| format!("cannot resolve {host:?}: {err}"))?.collect()
    };
    Ok(ListenAddress { given: text.to_owned(), addrs })
}

fn parse_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') || text == "/" || text.contains('?') {
        return Err(format!("{text:?}: a path such as /metrics"));
    }
    Ok(text.to_owned())
}

fn main() -> ExitCode {
    lifetime::main_with("ebpf-tools-exporter", || {
        let args = manual::parse::<Args>(tools_user::man_page!("ebpf-tools-exporter.8"));
        diag::init_logging(args.verbose);
        let web = match &args.web_config {
            Some(path) => WebConfig::read(path).map_err(|err| BadInput(format!("{err:#}")))?,
            None => WebConfig::default(),
        };
        let listeners = bind(&args.listen)?;
        let load_options = LoadOptions {
            rung: args.rung.clone(),
            legacy: args.config_map,
            btf: args.btf.clone(),
            hide_kernel_btf: args.hide_kernel_btf,
            kernel_floor: false,
        };
        // Parsed once for every tool; a --btf file that is not a kernel's
        // BTF is refused (exit status 2) before anything is loaded.
        let btf = Btf::for_tool(&load_options)?;
        let build = Build::choose(&load_options);
        let options = tools::Options {
            runqlat_max_processes: if args.per_process { args.max_processes } else { 0 },
            runqlat_max_cgroups: if args.per_cgroup || args.per_container { args.max_cgroups } else { 0 },
            runqlat_per_container: args.per_container,
            biolatency_queued: args.queued,
            ext4slower_allow_syscall_rung: args.ext4slower_allow_syscall_rung,
        };
        let chosen: Vec<&'static str> = match args.tools.is_empty() {
            true => tools::names(),
            false => tools::names().into_iter().filter(|t| args.tools.iter().any(|a| a == t)).collect(),
        };
        let loaded: Vec<tools::Tool> =
            chosen.into_iter().map(|name| tools::load(name, &options, &btf, build, &load_options)).collect();
        drop(btf);
        let mut attached = Vec::new();
        for tool in &loaded {
            match &tool.state {
                State::Attached { rung, .. } => attached.push(format!("{} on rung {rung}", tool.name)),
                State::Failed(err) => note(&format!("ebpf-tools-exporter: {} not attached: {err}", tool.name)),
            }
        }
        if attached.is_empty() {
            bail!("no tool could attach (each reason above)");
        }
        let exporter =
            Rc::new(RefCell::new(Exporter { tools: loaded, schema: args.schema, metrics_path: args.metrics_path }));
        let addresses: Vec<String> =
            listeners.iter().filter_map(|l| l.local_addr().ok()).map(|a| a.to_string()).collect();
        let scheme = if web.tls.is_some() { "https" } else { "http" };
        let runtime = lifetime::runtime()?;
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let mut shutdown = Shutdown::new()?;
            let listeners =
                listeners.into_iter().map(tokio::net::TcpListener::from_std).collect::<std::io::Result<Vec<_>>>()?;
            note(&format!(
                "ebpf-tools-exporter: serving {scheme} on {} ({}{})",
                addresses.join(", "),
                attached.join(", "),
                if web.needs_auth() { ", basic auth" } else { "" }
            ));
            tokio::select! {
                served = http::serve(listeners, Arc::new(web), exporter.clone()) => served,
                _ = shutdown.requested() => Ok(()),
            }
        })?;
        // Every connection's task goes with the set; then every program is
        // detached, and the last reference to the exporter closes the rest.
        drop(local);
        exporter.borrow_mut().detach_all();
        drop(exporter);
        Ok(ExitCode::SUCCESS)
    })
}

/// A non-blocking listener on `addr`. The IPv6 wildcard (`:PORT`) takes
/// IPv4 too whatever `net.ipv6.bindv6only` says, as Go's exporters do.
fn listen(addr: &SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
    if let SocketAddr::V6(v6) = addr {
        socket.set_only_v6(!v6.ip().is_unspecified())?;
    }
    // As std's bind: a restarted exporter rebinds over its old connections.
    socket.set_reuse_address(true)?;
    socket.bind(&(*addr).into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds every address before anything is loaded: a port in use fails fast.
fn bind(addresses: &[ListenAddress]) -> Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::new();
    for address in addresses {
        let mut last_err = None;
        let mut bound = false;
        for addr in &address.addrs {
            match listen(addr) {
                Ok(listener) => {
                    listeners.push(listener);
                    bound = true;
                    // ":PORT": the IPv6 socket takes IPv4 too; the IPv4 one is the fallback.
                    if address.given.starts_with(':') {
                        break;
                    }
                }
                // A host without IPv6 refuses [::]; the next candidate serves.
                Err(err) if err.raw_os_error() == Some(libc::EAFNOSUPPORT) => last_err = Some(err),
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("listening on {addr} (--web.listen-address {})", address.given))
                }
            }
        }
        if !bound {
            let err = last_err.map_or_else(|| "no address".to_owned(), |e| e.to_string());
            bail!("listening on {}: {err}", address.given);
        }
    }
    Ok(listeners)
}
