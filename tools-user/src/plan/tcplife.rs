//! tcplife's plan: its configuration and rungs, for the command-line tool
//! (an event per session) and the exporter (every session counted in the
//! kernel's keyed histogram), and the tables it fills before attaching.

use std::path::Path;

use anyhow::{Context as _, Result};
use aya::maps::Array;
use tools_common::tcplife::{maps, programs, Config, PORT_WORDS};

use super::{BtfSource, Plan};
use crate::{
    ebpf_object,
    events::EventPath,
    loader::{Attach, Rung},
    offsets, tracefs,
};

/// What the command-line tool and the exporter ask for.
#[derive(Default)]
pub struct Options<'a> {
    /// `-p`: only sessions this process owned.
    pub pid: Option<u32>,
    /// `-4` / `-6`: AF_INET or AF_INET6; 0 = both.
    pub family: u32,
    /// `-L` and `-D`: only these local or remote ports.
    pub local_ports: Vec<u16>,
    pub remote_ports: Vec<u16>,
    /// `-c`: only sessions whose owner ran in this cgroup v2 directory.
    pub cgroup: Option<&'a Path>,
    /// `--containers`: events carry the task's cgroup.
    pub containers: bool,
    /// Count every session in the kernel, its duration in units of this
    /// many nanoseconds; send no events (the exporter: 1 ns;
    /// `--histogram`: its unit).
    pub histogram_unit_ns: Option<u32>,
}

/// The labels of a key of the keyed histograms, its address family (the
/// low byte), as the exporter and `--histogram` name it.
pub fn key_labels(key: u64) -> Vec<(&'static str, String)> {
    let family = match (key & 0xff) as i32 {
        libc::AF_INET => "ipv4".to_owned(),
        libc::AF_INET6 => "ipv6".to_owned(),
        other => other.to_string(),
    };
    vec![("family", family)]
}

/// The configuration, the rungs best first, the map sizes, and the port
/// tables filled before anything attaches.
pub fn plan(options: &Options, btf: BtfSource<'_>, path: &EventPath) -> Result<Plan<Config>> {
    let mut config = Config {
        target_tgid: options.pid.unwrap_or(0),
        family: options.family,
        filter_lports: !options.local_ports.is_empty() as u32,
        filter_dports: !options.remote_ports.is_empty() as u32,
        histogram_unit_ns: options.histogram_unit_ns.unwrap_or(0),
        ..Config::default()
    };
    config.cgroup = crate::cgroup::events_walk(options.cgroup, options.containers, btf.as_ref().ok())?;
    // The socket's members: addresses on the raw-tracepoint and kprobe
    // rungs, byte counters on every rung.
    let no_sock = match btf.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(offsets::sock) {
        Ok(sock) => {
            config.sock = sock;
            config.has_bytes = (sock.tcp_bytes_acked != 0 && sock.tcp_bytes_received != 0) as u32;
            None
        }
        Err(err) => Some(format!("no struct sock offsets: {err:#}")),
    };
    if config.has_bytes == 0 {
        log::info!("bytes: unknown (no tcp_sock byte counters in BTF)");
    }
    // The accept syscalls' exit leads to the socket through the
    // descriptor table.
    let syscall_accept = btf.as_ref().ok().and_then(|btf| {
        let ret = tracefs::Format::read("syscalls", "sys_exit_accept4").and_then(|f| f.field("ret"));
        match (offsets::task(btf), offsets::file(btf), ret, &no_sock) {
            (Ok(task), Ok(file), Ok((ret, _)), None) => {
                (config.task, config.file, config.tp_exit_ret) = (task, file, ret);
                Some(())
            }
            _ => None,
        }
    });
    let no_tracepoint = tracepoint_fields(&mut config).err().map(|e| format!("{e:#}"));

    // accept() hands a socket to its owner: a kretprobe or fexit on
    // inet_csk_accept where the kernel allows them (the kretprobe first:
    // fexit needs the kernel's whole BTF parsed, about 15 ms and 17 MB at
    // start-up); else the accept syscalls' exit tracepoints, which put
    // every system call of every process on the slow path (see
    // ACCEPT_SYSCALL_TAX); else owners of accepted sockets are known when
    // they close. Counts name no owner (the exporter's, --histogram's):
    // they take none unless -p or -c asks for one.
    let cgroup_refused =
        super::current_task_refused(path.build, crate::cgroup::task_flag(options.cgroup, options.containers));
    let owners = options.histogram_unit_ns.is_none() || options.pid.is_some() || options.cgroup.is_some();
    let accept = owners.then(|| {
        vec![
            Rung::new("kretprobe")
                .program(programs::KRET_ACCEPT, Attach::kretprobe(&["inet_csk_accept"]))
                .unusable_if(cgroup_refused.clone()),
            fexit_accept(btf),
            Rung::new(SYSCALL_ACCEPT)
                .program(programs::ACCEPT_EXIT, Attach::tracepoint("syscalls", "sys_exit_accept"))
                .program(programs::ACCEPT_EXIT, Attach::tracepoint("syscalls", "sys_exit_accept4"))
                .unusable_if(syscall_accept.is_none().then(|| "no BTF offsets or no accept tracepoints".to_owned())),
        ]
    });
    let with_accept = |rung: Rung| match &accept {
        Some(ladder) => rung.optional(ACCEPT, ladder.clone()),
        None => rung,
    };
    let rungs = vec![
        with_accept(Rung::new("raw_tracepoint").program(programs::RAW_STATE, Attach::raw_tp("inet_sock_set_state")))
            .unusable_if(no_sock.clone()),
        with_accept(
            Rung::new("tracepoint").program(programs::TP_STATE, Attach::tracepoint("sock", "inet_sock_set_state")),
        )
        .unusable_if(no_tracepoint),
        Rung::new("kprobe")
            .program(programs::KP_STATE, Attach::kprobe(&["tcp_set_state"]))
            .program(programs::KRET_ACCEPT, Attach::kretprobe(&["inet_csk_accept"]))
            .unusable_if(no_sock)
            .unusable_if(cgroup_refused),
    ];
    let mut plan = Plan::new(ebpf_object!("tcplife"), path.build, config, rungs);
    plan.map_sizes = path.max_entries();
    plan.map_sizes.push((maps::SESSIONS, session_table_size()));
    let (local, remote) = (options.local_ports.clone(), options.remote_ports.clone());
    plan.fill = Some(Box::new(move |ebpf: &mut aya::Ebpf| fill_ports(ebpf, &local, &remote)));
    Ok(plan)
}

/// The optional part that records who accepted a socket, and its path
/// through the syscalls' tracepoints, as `Loaded::parts` names them.
pub const ACCEPT: &str = "accept";
pub const SYSCALL_ACCEPT: &str = "syscall tracepoints";

/// What the accept syscalls' tracepoints cost, said when they are taken.
pub const ACCEPT_SYSCALL_TAX: &str = "owners of accepted sockets come from the accept syscalls' tracepoints \
                                      (neither a kretprobe nor fexit on inet_csk_accept works here: --verbose \
                                      says why): every system call on the host takes the slow path while this \
                                      runs (14 ns more each where measured: OVERHEAD in tcplife(8))";

/// fexit on `inet_csk_accept`: the program for the kernel's signature.
fn fexit_accept(btf: BtfSource<'_>) -> Rung {
    const FUNCTION: &str = "inet_csk_accept";
    let rung = Rung::new("fexit");
    let btf = match btf {
        Ok(btf) => btf,
        Err(err) => return rung.unusable_if(Some(err.clone())),
    };
    let program = match btf.function_params(FUNCTION) {
        Some(2) => programs::FEXIT_ACCEPT_ARG,
        Some(4) => programs::FEXIT_ACCEPT_FLAGS,
        Some(n) => return rung.unusable_if(Some(format!("{FUNCTION} takes {n} parameters here, neither 2 nor 4"))),
        None => return rung.unusable_if(Some(format!("{FUNCTION} is not in the BTF"))),
    };
    // Asked first with an empty program: where the kernel refuses fentry
    // (as here), that is known before aya parses the kernel's BTF.
    let refused = btf.function_id(FUNCTION).and_then(|id| crate::loader::fentry_allowed(id).err());
    rung.program(program, Attach::fexit(FUNCTION)).unusable_if(refused)
}

fn tracepoint_fields(config: &mut Config) -> Result<()> {
    let f = tracefs::Format::read("sock", "inet_sock_set_state")?;
    let at = |name: &str| f.field(name).map(|(offset, _)| offset);
    config.tp_skaddr = at("skaddr")?;
    config.tp_oldstate = at("oldstate")?;
    config.tp_newstate = at("newstate")?;
    config.tp_sport = at("sport")?;
    config.tp_dport = at("dport")?;
    config.tp_family = at("family")?;
    config.tp_protocol = at("protocol")?;
    config.tp_saddr = at("saddr")?;
    config.tp_daddr = at("daddr")?;
    config.tp_saddr_v6 = at("saddr_v6")?;
    config.tp_daddr_v6 = at("daddr_v6")?;
    Ok(())
}

/// Writes the `-L` and `-D` ports into the kernel's bitmaps.
fn fill_ports(ebpf: &mut aya::Ebpf, local: &[u16], remote: &[u16]) -> Result<()> {
    if local.is_empty() && remote.is_empty() {
        return Ok(());
    }
    let mut map: Array<_, u64> = Array::try_from(ebpf.map_mut(maps::PORTS).context("no PORTS map")?)?;
    for (first_word, ports) in [(0, local), (PORT_WORDS, remote)] {
        let mut words = vec![0u64; PORT_WORDS as usize];
        for &port in ports {
            words[port as usize >> 6] |= 1 << (port & 63);
        }
        for (i, word) in words.into_iter().enumerate().filter(|(_, w)| *w != 0) {
            map.set(first_word + i as u32, word, 0)?;
        }
    }
    Ok(())
}

/// Entries of the kernel's socket → session table: every TCP socket of the
/// machine may be in it at once (it is emptied at CLOSE), so twice the
/// sockets allocated now, and never below BCC's 10240.
fn session_table_size() -> u32 {
    let sockstat = crate::procfs::read("/proc/net/sockstat").unwrap_or_default();
    let alloc = sockstat
        .lines()
        .find_map(|l| l.strip_prefix("TCP:"))
        .and_then(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.windows(2).find(|w| w[0] == "alloc").and_then(|w| w[1].parse::<u32>().ok())
        })
        .unwrap_or(0);
    alloc.saturating_mul(2).clamp(10240, 1 << 20)
}
