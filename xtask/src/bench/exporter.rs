//! The exporter's own costs, beside its per-event cost (the overhead
//! benchmarks): the time of one scrape in each exposition, its CPU when
//! idle and when scraped every second, and its memory.

use std::{
    fmt::Write as _,
    fs,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use integration_tests::{http_request, serving_address};

use super::{benchmarks, stat, workload, Bench, Benchmark, Contender, EXPORTER};

/// Prometheus' Accept header when native histograms are on.
const ACCEPT_PROTOBUF: &str =
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";

impl Bench {
    pub(super) fn exporter_scrapes(&self) -> Result<String> {
        let all = benchmarks();
        let b = all.iter().find(|b| b.tool == EXPORTER).context("no exporter benchmark")?;
        let quick = self.settings.rounds == 1;
        let (scrapes, idle_secs, scraped_secs) = if quick { (5, 2, 3) } else { (50, 10, 20) };
        // Every tool it has: the memory target is with all of them loaded.
        let every_tool =
            Benchmark { args: &["--web.listen-address", "127.0.0.1:0", "--ext4slower.allow-syscall-rung"], ..*b };
        let tracer = self.start(&every_tool, Contender::Ours, &[])?.context("no exporter")?;
        let address = wait_for_address(&tracer.first().err)?;
        // Something in every tool's maps: run-queue latency of a busy pair,
        // a disk's reads and writes, ext4 reads, TCP sessions, lookups.
        workload::ping_pong(self.cpu, 0.5)?;
        workload::direct_reads(&self.loop_device().path, 0.5)?;
        workload::cached_preads(&self.ext4().path("bench-file"), 0.5)?;
        workload::tcp_cycles(0.5)?;
        workload::lookups(0.5)?;

        let pid = tracer.first().child.0.id();
        let idle_ms = cpu_while(pid, || std::thread::sleep(Duration::from_secs(idle_secs)))? / idle_secs as f64;
        let mut rows = String::new();
        for (format, accept) in
            [("classic text", None), ("protobuf with native histograms (schema 7)", Some(ACCEPT_PROTOBUF))]
        {
            let mut ms = Vec::new();
            let mut bytes = 0;
            for _ in 0..scrapes {
                let (took, body) = timed_scrape(&address, accept)?;
                ms.push(took);
                bytes = body.len();
            }
            let _ =
                writeln!(rows, "| one scrape, {format}, {:.1} KiB (ms) | {} |", bytes as f64 / 1024.0, stat(&ms, 2));
        }
        let scraped_ms = cpu_while(pid, || {
            for _ in 0..scraped_secs {
                let started = Instant::now();
                let _ = http_request(&address, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
            }
        })? / scraped_secs as f64;
        let stopped = tracer.stop()?;

        let mut s = String::from("\n## Exporter: scrapes, CPU and memory\n\n");
        let _ = writeln!(
            s,
            "`ebpf-tools-exporter` with every tool it has loaded (runqlat, biolatency, ext4slower, tcplife, gethostlatency), after \
             half a second of each one's workload; {scrapes} scrapes of each exposition over loopback, one connection each (the \
             time includes connecting); CPU from the kernel's per-task run time. Targets: one scrape under 10 ms, \
             RSS under 20 MB, no measurable CPU between scrapes.\n"
        );
        s += "| measurement | value |\n|---|---|\n";
        s += &rows;
        let _ = writeln!(s, "| CPU idle, {idle_secs} s without scrapes (ms of CPU per s) | {idle_ms:.3} |");
        let _ = writeln!(s, "| CPU scraped every second for {scraped_secs} s (ms of CPU per s) | {scraped_ms:.3} |");
        let _ = writeln!(s, "| max RSS over the run (MB) | {:.1} |", stopped.max_rss_kb as f64 / 1024.0);
        s += &self.scrapes_against_series(quick)?;
        println!("{s}");
        Ok(s)
    }

    /// One scrape against the number of series: runqlat's per-process
    /// family with that many processes waking every 50 ms, each a series.
    fn scrapes_against_series(&self, quick: bool) -> Result<String> {
        let (counts, scrapes): (&[usize], usize) = if quick { (&[1, 100], 5) } else { (&[1, 100, 1000, 10000], 15) };
        let mut s = String::from("\n### Scrape against series\n\n");
        let _ = writeln!(
            s,
            "runqlat's per-process series only (`--tools runqlat --runqlat.per-process`), N sleeping processes each \
             waking every 50 ms (every N × 50 µs beyond 1000, so that together they wake at most 20000 times a \
             second) for 2 s before the first scrape; the median of {scrapes} scrapes of the classic text. Target: \
             1000 series under 10 ms.\n"
        );
        s += "| processes | series | scrape (ms) | per series (µs) | text (KiB) | exporter RSS (MB) |\n|---|---|---|---|---|---|\n";
        for &n in counts {
            println!("bench: exporter scrapes with {n} sleeping processes");
            // 10000 processes waking every 50 ms would be 200000 wake-ups a
            // second, more than two CPUs run besides the exporter.
            let every = Duration::from_micros(50 * n.max(1000) as u64);
            let sleepers = workload::Sleepers::start(n, every)?;
            let mut exporter = Command::new(self.bin_dir.join(EXPORTER));
            exporter.args(["--web.listen-address", "127.0.0.1:0", "--tools", "runqlat", "--runqlat.per-process"]);
            // Room for every sleeper and what else runs.
            exporter.args(["--runqlat.max-processes", &(n + 100).to_string()]);
            super::default_signals(&mut exporter);
            let tracer = self.start_commands(&format!("exporter-{n}-series"), vec![exporter])?;
            let address = wait_for_address(&tracer.first().err)?;
            std::thread::sleep(Duration::from_secs(2));
            let (mut ms, mut bytes, mut series) = (Vec::new(), 0, 0);
            for _ in 0..scrapes {
                let (took, body) = timed_scrape(&address, None)?;
                ms.push(took);
                bytes = body.len();
                let count_line = |l: &&str| l.starts_with("ebpf_tools_process_run_queue_latency_seconds_count");
                series = String::from_utf8_lossy(&body).lines().filter(count_line).count();
                std::thread::sleep(Duration::from_millis(200));
            }
            let stopped = tracer.stop()?;
            drop(sleepers);
            let per_series = super::median(&ms) * 1e3 / series.max(1) as f64;
            let _ = writeln!(
                s,
                "| {n} | {series} | {} | {per_series:.0} | {:.0} | {:.1} |",
                stat(&ms, 1),
                bytes as f64 / 1024.0,
                stopped.max_rss_kb as f64 / 1024.0
            );
        }
        Ok(s)
    }
}

/// One scrape of `/metrics` (as `accept`, else the classic text), on a
/// connection of its own: its time in ms, connecting included, and the body.
fn timed_scrape(address: &str, accept: Option<&str>) -> Result<(f64, Vec<u8>)> {
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    let started = Instant::now();
    let (status, _, body) =
        http_request(address, &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n"))?;
    let took = started.elapsed().as_secs_f64() * 1e3;
    if status != 200 {
        bail!("scraping the exporter: status {status}");
    }
    Ok((took, body))
}

/// The exporter's address, from its `serving ... on ADDRESS` line.
fn wait_for_address(stderr: &std::path::Path) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let said = fs::read_to_string(stderr).unwrap_or_default();
        if let Some(address) = serving_address(&said) {
            return Ok(address);
        }
        if Instant::now() > deadline {
            bail!("the exporter did not say where it serves:\n{said}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CPU time (ms) that process `pid`'s threads spent while `work` ran.
fn cpu_while(pid: u32, work: impl FnOnce()) -> Result<f64> {
    let before = cpu_ns(pid)?;
    work();
    Ok((cpu_ns(pid)? - before) as f64 / 1e6)
}

/// The run time of every thread of `pid` (`/proc/PID/task/*/schedstat`, ns).
fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let schedstat = fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        total += schedstat.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(total)
}
