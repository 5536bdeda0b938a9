//! `cargo xtask fuzz [TARGET] [--seconds N]`: the parsers of outside input
//! (tools-parse: BTF, ELF, tracefs formats, /proc maps; tools-heatmap:
//! captures) under libFuzzer, through cargo-fuzz on the nightly toolchain.
//! Each run starts from seeds made of real inputs (this machine's BTF and
//! the kernel matrix's, its C libraries, tracefs formats, /proc maps, the
//! README's runqlat capture) and small synthetic ones (a BTF, captures of
//! keyed histograms and of each event tool). A fault fails the run, and its
//! input is kept in fuzz/regressions/TARGET/, which the parsers' tests
//! replay every time.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::{run, setup, workspace};

pub const TARGETS: [&str; 6] = ["btf", "elf", "tracefs_format", "proc_maps", "cgroup_path", "capture"];

pub fn fuzz(only: Option<&str>, seconds: u64) -> Result<()> {
    let targets: Vec<&str> = match only {
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!("no fuzz target {t}; targets: {}", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    let cargo_fuzz = setup::install_cargo_fuzz()?;
    let root = workspace();
    let fuzz_dir = root.join("fuzz");
    // No sanitizer: the parsers are safe Rust; what is looked for is a
    // panic, a hang, or memory without bound.
    run(cargo_fuzz_command(&cargo_fuzz).args(["build", "-O", "-s", "none", "--fuzz-dir"]).arg(&fuzz_dir))?;
    let corpus_root = root.join("target/fuzz-corpus");
    // Two at a time: this machine has two cores.
    let mut outcomes = Vec::new();
    for pair in targets.chunks(2) {
        let mut running: Vec<(&str, Child, PathBuf)> = Vec::new();
        for &target in pair {
            let corpus = corpus_root.join(target);
            seed(target, &corpus)?;
            let log = corpus_root.join(format!("{target}.log"));
            let child = cargo_fuzz_command(&cargo_fuzz)
                .args(["run", "-O", "-s", "none", "--fuzz-dir"])
                .arg(&fuzz_dir)
                .arg(target)
                .arg(&corpus)
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .args(["-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1"])
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log)?)
                .spawn()
                .context("starting cargo fuzz run")?;
            running.push((target, child, log));
        }
        for (target, mut child, log) in running {
            let status = child.wait()?;
            let text = fs::read_to_string(&log).unwrap_or_default();
            let execs = text
                .lines()
                .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
                .map(|n| n.trim().to_owned())
                .unwrap_or_else(|| "?".into());
            let corpus_size = fs::read_dir(corpus_root.join(target)).map(|d| d.count()).unwrap_or(0);
            println!("fuzz: {target}: {execs} executions in {seconds} s, corpus {corpus_size} inputs, {status}");
            outcomes.push((target, status.success(), log));
        }
    }
    let mut failed = Vec::new();
    for (target, ok, log) in outcomes {
        if ok {
            continue;
        }
        let kept = keep_faults(&fuzz_dir, target)?;
        failed.push(format!("{target} (log {}; inputs kept: {})", log.display(), kept.join(", ")));
    }
    if !failed.is_empty() {
        bail!("fuzzing found faults in {}: commit the kept inputs as regression tests", failed.join("; "));
    }
    Ok(())
}

/// cargo-fuzz, on the nightly toolchain.
fn cargo_fuzz_command(cargo_fuzz: &Path) -> Command {
    let mut cmd = Command::new(cargo_fuzz);
    // Run as cargo runs its subcommands: the first argument is the subcommand's name.
    cmd.arg("fuzz").env("RUSTUP_TOOLCHAIN", "nightly").current_dir(workspace());
    cmd
}

/// Moves what libFuzzer left in fuzz/artifacts/TARGET into
/// fuzz/regressions/TARGET; returns their new paths.
fn keep_faults(fuzz_dir: &Path, target: &str) -> Result<Vec<String>> {
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let regressions = fuzz_dir.join("regressions").join(target);
    fs::create_dir_all(&regressions)?;
    let mut kept = Vec::new();
    for entry in fs::read_dir(&artifacts).into_iter().flatten() {
        let path = entry?.path();
        let dest = regressions.join(path.file_name().context("artifact without a name")?);
        fs::rename(&path, &dest)?;
        kept.push(dest.display().to_string());
    }
    Ok(kept)
}

/// Fills the target's corpus directory with its seeds (inputs found by
/// earlier runs stay).
fn seed(target: &str, corpus: &Path) -> Result<()> {
    fs::create_dir_all(corpus)?;
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut file = |name: &str, path: &Path| {
        if let Ok(data) = fs::read(path) {
            seeds.push((name.to_owned(), data));
        }
    };
    match target {
        "btf" => {
            file("host-vmlinux.btf", Path::new("/sys/kernel/btf/vmlinux"));
            // The kernel matrix's kernels, where `cargo xtask vm-test` has fetched them.
            for kernel in crate::vm::KERNELS {
                let vmlinux = setup::cache_dir().join("vm").join(kernel).join("vmlinux");
                let Ok(elf) = tools_parse::elf::Elf::open(&vmlinux) else { continue };
                if let Some(btf) = elf.section(".BTF")? {
                    seeds.push((format!("{kernel}-vmlinux.btf"), btf.to_vec()));
                }
            }
            seeds.push(("small.btf".into(), small_btf()));
        }
        "elf" => {
            file("glibc-libc.so.6", Path::new("/lib/x86_64-linux-gnu/libc.so.6"));
            file("musl-libc.so", Path::new("/usr/lib/x86_64-linux-musl/libc.so"));
            file("true", Path::new("/bin/true"));
        }
        "tracefs_format" => {
            for event in [
                "sched/sched_switch",
                "sched/sched_wakeup",
                "sched/sched_process_exec",
                "sock/inet_sock_set_state",
                "block/block_rq_issue",
                "syscalls/sys_enter_pread64",
                "syscalls/sys_exit_read",
            ] {
                file(&event.replace('/', "-"), &Path::new("/sys/kernel/tracing/events").join(event).join("format"));
            }
        }
        "proc_maps" => {
            file("self", Path::new("/proc/self/maps"));
            file("init", Path::new("/proc/1/maps"));
        }
        "cgroup_path" => {
            // This host's own cgroups, and every runtime's layout (see tools_parse::cgroup_path).
            file("self", Path::new("/proc/self/cgroup"));
            let id = "3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";
            let uid = "0b1e2d3c_4f5a_6b7c_8d9e_0f1a2b3c4d5e";
            for (name, path) in [
                ("docker", format!("/system.slice/docker-{id}.scope")),
                ("kubelet", format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/cri-containerd-{id}.scope")),
                ("kubelet-cgroupfs", format!("/kubepods/burstable/pod{}/{id}", uid.replace('_', "-"))),
                ("podman-cgroupfs", format!("/libpod_parent/libpod-{id}")),
                ("machine", r"/machine.slice/machine-qemu\x2d1\x2dvm.scope".to_owned()),
                ("lxc", "/lxc.payload.web/init.scope".to_owned()),
            ] {
                seeds.push((name.into(), path.into_bytes()));
            }
        }
        "capture" => {
            file("runqlat.jsonl", &workspace().join("docs/heatmap-runqlat.jsonl"));
            seeds.extend(small_captures());
        }
        _ => unreachable!("targets come from TARGETS"),
    }
    if seeds.is_empty() {
        bail!("no seeds for {target}");
    }
    for (name, data) in seeds {
        fs::write(corpus.join(format!("seed-{name}")), data)?;
    }
    Ok(())
}

/// A small BTF of a handful of types, shaped as the tools read a kernel's:
/// a struct with an anonymous union, an enum, a raw tracepoint's typedef,
/// a function. libFuzzer mutates it far faster than a kernel's megabytes.
fn small_btf() -> Vec<u8> {
    let mut strings = vec![0u8];
    let mut name = |s: &str| -> u32 {
        let at = strings.len() as u32;
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        at
    };
    let (int, task, pid, tgid, state, req_op, read, write, trace, func) = (
        name("int"),
        name("task_struct"),
        name("pid"),
        name("tgid"),
        name("__state"),
        name("req_op"),
        name("REQ_OP_READ"),
        name("REQ_OP_WRITE"),
        name("btf_trace_sched_switch"),
        name("ext4_file_read_iter"),
    );
    let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
    let mut types: Vec<u32> = Vec::new();
    // 1: int, 32 bits
    types.extend([int, info(1, 0), 4, 32]);
    // 2: struct task_struct { int pid; int tgid; union { int __state; }; }
    types.extend([task, info(4, 3), 12, pid, 1, 0, tgid, 1, 32, 0, 3, 64]);
    // 3: the anonymous union
    types.extend([0, info(5, 1), 4, state, 1, 0]);
    // 4: struct task_struct *
    types.extend([0, info(2, 0), 2]);
    // 5: enum req_op { REQ_OP_READ, REQ_OP_WRITE }
    types.extend([req_op, info(6, 2), 4, read, 0, write, 1]);
    // 6: void (*)(struct task_struct *, int)
    types.extend([0, info(13, 2), 0, 0, 4, 0, 1]);
    // 7: a pointer to it; 8: its btf_trace_ typedef; 9: a function
    types.extend([0, info(2, 0), 6, trace, info(8, 0), 7, func, info(12, 0), 6]);
    let types: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut btf = Vec::new();
    btf.extend(0xeb9fu16.to_le_bytes());
    btf.extend([1u8, 0]); // version, flags
    for word in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
        btf.extend(word.to_le_bytes());
    }
    btf.extend(types);
    btf.extend(strings);
    btf
}

/// Small captures of what the heatmap reads besides runqlat's histograms:
/// keyed histograms with a gap and a second run, and each event tool's
/// latency records with a loss.
fn small_captures() -> Vec<(String, Vec<u8>)> {
    let time = |s: u32| format!("2026-12-07T10:00:{s:02}.5+01:00");
    let capture = |tool: &str, s| {
        format!(
            r#"{{"tool":"{tool}","type":"capture","time":"{}","host":"h","kernel":"k","command":["{tool}"]}}"#,
            time(s)
        )
    };
    let mut keyed = String::new();
    for (run, intervals) in [(0, [1, 2, 5]), (20, [1, 2, 3])] {
        keyed += &capture("biolatency", run);
        keyed.push('\n');
        for interval in intervals {
            for disk in ["sda", "vdb"] {
                keyed += &format!(
                    r#"{{"tool":"biolatency","type":"histogram","time":"{}","interval":{interval},"unit":"usecs","key":{{"disk":"{disk}"}},"count":3,"lost":1,"p50":5,"p99":70,"max":70,"slots":[[4,4,1],[5,5,1],[64,71,1]]}}"#,
                    time(run + interval)
                );
                keyed.push('\n');
            }
        }
    }
    let mut seeds = vec![("keyed.jsonl".to_owned(), keyed.into_bytes())];
    for tool in tools_catalog::TOOLS {
        let Some(latency) = &tool.latency else { continue };
        let mut events = capture(tool.name, 0) + "\n";
        for (s, value) in [(1, 900), (2, 15_000), (4, 2_000_000)] {
            events += &format!(
                r#"{{"tool":"{}","type":"{}","time":"{}","{}":{value}}}"#,
                tool.name,
                latency.record,
                time(s),
                latency.field
            );
            events.push('\n');
        }
        events += &format!(r#"{{"tool":"{}","type":"lost","time":"{}","count":2}}"#, tool.name, time(5));
        seeds.push((format!("{}.jsonl", tool.name), events.into_bytes()));
    }
    seeds
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_small_captures_draw() {
        for (name, capture) in super::small_captures() {
            let drawn = tools_heatmap::draw(&capture[..], &tools_heatmap::Options::default());
            assert!(drawn.is_ok_and(|(_, warnings)| warnings.is_empty()), "{name}");
        }
    }

    #[test]
    fn the_small_btf_reads_as_a_kernels_would() {
        let btf = tools_parse::btf::Btf::parse(super::small_btf()).unwrap();
        assert_eq!(btf.member_any("task_struct", &["__state", "state"]).unwrap().offset, 8);
        assert_eq!(btf.member("task_struct", "tgid").unwrap().offset, 4);
        assert_eq!(btf.raw_tracepoint_args("sched_switch"), Some(1));
        assert_eq!(btf.enum_values("req_op").unwrap().len(), 2);
        assert!(btf.function_id("ext4_file_read_iter").is_some());
    }
}
