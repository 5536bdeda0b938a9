//! How costs grow with the work: runqlat's added time per round trip as
//! ping-pong pairs are added (the event rate of the whole machine rising,
//! then, with more pairs than CPUs, CPUs shared), and gethostlatency's
//! start-up as processes are added (it reads each one's maps for the C
//! libraries to probe).

use std::{collections::BTreeSet, fmt::Write as _, time::Duration};

use anyhow::{Context as _, Result};

use super::{benchmarks, median, ratio, rotated, stat, workload, Bench, Contender, OURS_AND_C};

/// Ping-pong pairs of the event-rate rows.
const PAIRS: [usize; 3] = [1, 2, 4];

impl Bench {
    /// The section, with the rows of whichever of the two tools is benchmarked.
    pub(super) fn cost_growth(&self, runqlat: bool, gethostlatency: bool) -> Result<String> {
        let mut s = String::from("\n## Cost growth\n\n");
        if runqlat {
            s += &self.event_rate_rows()?;
        }
        if gethostlatency {
            s += &self.processes_rows()?;
        }
        Ok(s)
    }

    /// runqlat, ours and libbpf-tools', with 1, 2 and 4 ping-pong pairs,
    /// the first on the last CPU (as the ping-pong rows') and each next on
    /// the next CPU, round: CPU time per round trip, untraced and added by each.
    fn event_rate_rows(&self) -> Result<String> {
        let all = benchmarks();
        let b = all.iter().find(|b| b.name == "runqlat").context("no runqlat benchmark")?;
        let cpus = workload::last_cpu() + 1;
        let mut s = String::from(
            "### runqlat as the event rate rises: ping-pong pairs, each pinned to a CPU, the CPUs taken in turn\n\n\
             CPU time per round trip (the pairs keep their CPUs busy): untraced, and added by each tracer \
             (the ping-pong rows' *added ns per op*, measured the same way).\n\n\
             | pairs | round trips per second, untraced | untraced ns | ours: added ns | libbpf-tools: added ns |\n\
             |---|---|---|---|---|\n",
        );
        for pairs in PAIRS {
            let on: Vec<usize> = (0..pairs).map(|i| (self.cpu + i) % cpus).collect();
            let busy = on.iter().collect::<BTreeSet<_>>().len() as f64;
            println!("bench: runqlat, {pairs} ping-pong pair(s)");
            // Per contender (untraced, ours, libbpf-tools): ns per trip, then added.
            let mut ns = [Vec::new(), Vec::new(), Vec::new()];
            let mut added = [Vec::new(), Vec::new()];
            let mut per_sec = Vec::new();
            for round in 0..self.settings.rounds {
                let mut this = [f64::NAN; 3];
                let contenders = [(0, Contender::Untraced), (1, Contender::Ours), (2, Contender::C)];
                for (i, contender) in rotated(&contenders, round) {
                    let tracer = self.start(b, contender, &[])?;
                    let done = workload::ping_pongs(&on, self.settings.run_secs);
                    tracer.map(|t| t.stop()).transpose()?;
                    let done = done?;
                    this[i] = done.ns_per_op();
                    if contender == Contender::Untraced {
                        per_sec.push(done.ops as f64 * busy / done.secs);
                    }
                }
                for i in 0..3 {
                    ns[i].push(this[i]);
                }
                for (i, _) in OURS_AND_C {
                    added[i].push(this[i + 1] - this[0]);
                }
            }
            let _ = writeln!(
                s,
                "| {pairs} | {} | {} | {} | {} |",
                stat(&per_sec, 0),
                stat(&ns[0], 0),
                stat(&added[0], 0),
                stat(&added[1], 0)
            );
        }
        s.push('\n');
        Ok(s)
    }

    /// gethostlatency's start-up, ours and libbpf-tools', with more
    /// processes running (each with a C library mapped: forked from xtask).
    fn processes_rows(&self) -> Result<String> {
        let all = benchmarks();
        let b = all.iter().find(|b| b.tool == "gethostlatency").context("no gethostlatency benchmark")?;
        let counts: &[usize] = if self.settings.rounds == 1 { &[0, 100] } else { &[0, 100, 1000] };
        let mut s = String::from(
            "### gethostlatency's start-up as processes are added\n\n\
             Exec to the first line on a pty (ms), with *n* more processes sleeping, each with the C library \
             mapped. Ours reads each process's maps to find the C libraries to probe; libbpf-tools probes the one \
             it is given or finds.\n\n\
             | more processes | ours | libbpf-tools | ours / libbpf-tools |\n|---|---|---|---|\n",
        );
        for &n in counts {
            println!("bench: gethostlatency start-up, {n} more processes");
            let _sleepers = workload::Sleepers::start(n, Duration::from_secs(1))?;
            let ms = self.startup_ms(b)?;
            let _ = writeln!(
                s,
                "| {n} | {} | {} | {} |",
                stat(&ms[0], 1),
                stat(&ms[1], 1),
                ratio(median(&ms[0]), median(&ms[1]))
            );
        }
        s.push('\n');
        Ok(s)
    }
}
