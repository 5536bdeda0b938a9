//! `cargo xtask vm-test`: every tool's integration tests inside real Debian
//! kernels (5.10, 6.1, 6.12, 7.3) booted under qemu (TCG: this machine's
//! /dev/kvm is PVM and cannot run them), on the rung the loader picks there
//! and with lower rungs forced. Kernels, modules and initramfs images are
//! cached outside the repository; binaries are built on the host and run in
//! the guest over a read-only 9p view of the host's /.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{run, setup, workspace};

pub const KERNELS: [&str; 4] = ["5.10", "6.1", "6.12", "7.3"];

/// One cell of the matrix: a tool and its catalog cell (its tests on the
/// best rung, or with a lower rung forced; rungs a tool's tests force
/// themselves run inside "best"). Cells with a lower rung forced run only
/// the tests that tell the rung works, to keep the matrix within its share
/// of CI's time.
type Cell = (&'static str, &'static tools_catalog::Cell);

/// Every tool's cells, from the catalog.
fn matrix() -> Vec<Cell> {
    tools_catalog::TOOLS.iter().flat_map(|tool| tool.matrix.iter().map(move |cell| (tool.name, cell))).collect()
}

const GUEST_TIMEOUT: Duration = Duration::from_secs(40 * 60);

pub fn vm_test(kernels: &[String], only_tool: Option<&str>) -> Result<()> {
    let started = Instant::now();
    let cells: Vec<Cell> = matrix().into_iter().filter(|c| only_tool.is_none_or(|t| t == c.0)).collect();
    if cells.is_empty() {
        bail!("no matrix cells for {}", only_tool.unwrap_or_default());
    }
    install_packages()?;
    let cache = setup::cache_dir().join("vm");
    fs::create_dir_all(&cache)?;
    for kernel in kernels {
        prepare(&cache, kernel).with_context(|| format!("preparing kernel {kernel}"))?;
    }
    let (bin_dir, tests) = build_tests(&cells)?;

    // Two guests at a time: the fastest on two host cores.
    let mut results: BTreeMap<(String, String, String), bool> = BTreeMap::new();
    for pair in kernels.chunks(2) {
        let handles: Vec<_> = pair
            .iter()
            .map(|kernel| {
                let (cache, tests, bin_dir, kernel) = (cache.clone(), tests.clone(), bin_dir.clone(), kernel.clone());
                let cells = cells.clone();
                thread::spawn(move || (kernel.clone(), boot_and_test(&cache, &kernel, &tests, &bin_dir, &cells)))
            })
            .collect();
        for handle in handles {
            let (kernel, outcome) = handle.join().expect("guest thread");
            match outcome {
                Ok(cells) => {
                    for (tool, rung, ok) in cells {
                        results.insert((tool, kernel.clone(), rung), ok);
                    }
                }
                Err(err) => {
                    eprintln!("vm-test: kernel {kernel}: {err:#}");
                    for (tool, cell) in cells.iter().filter(|(_, cell)| runs_on(cell, &kernel)) {
                        results.insert((tool.to_string(), kernel.clone(), cell.rung.to_string()), false);
                    }
                }
            }
        }
    }
    let table = matrix_table(&cache, kernels, &cells, &results);
    println!("\n{table}");
    fs::write(workspace().join("target/kernel-matrix.md"), &table)?;
    // A run of every cell of every kernel is the docs' table.
    if only_tool.is_none() && kernels.len() == KERNELS.len() {
        crate::docs::write("kernels.md", "vm-test", &table)?;
    }
    println!("vm-test: {:.0} s; table in target/kernel-matrix.md", started.elapsed().as_secs_f64());
    let failed = results.values().filter(|ok| !**ok).count();
    if failed > 0 {
        bail!("{failed} of {} kernel-matrix cells failed", results.len());
    }
    Ok(())
}

fn install_packages() -> Result<()> {
    let needed = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("cpio", "cpio"),
        ("modprobe", "kmod"),
        ("zstd", "zstd"),
        ("xz", "xz-utils"),
    ];
    let mut missing: Vec<&str> =
        needed.iter().filter(|(cmd, _)| !setup::command_exists(cmd)).map(|(_, pkg)| *pkg).collect();
    if !Path::new("/bin/busybox").exists() || !is_static("/bin/busybox") {
        missing.push("busybox-static");
    }
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends"]).args(&missing))
}

fn is_static(path: &str) -> bool {
    Command::new("ldd").arg(path).output().map(|o| !o.status.success()).unwrap_or(false)
}

/// Fetches the kernel and builds its vmlinux and initramfs, once.
fn prepare(cache: &Path, kernel: &str) -> Result<()> {
    let dir = cache.join(kernel);
    if !dir.join("vmlinux").exists() {
        let script = cache.join("fetch-kernel.sh");
        fs::write(&script, include_str!("vm/fetch-kernel.sh"))?;
        run(Command::new("bash").arg(&script).arg(cache).arg(kernel))?;
        let vmlinuz = PathBuf::from(fs::read_to_string(dir.join("vmlinuz-path"))?.trim());
        extract_vmlinux(&vmlinuz, &dir.join("vmlinux"))?;
    }
    // Rebuilt whenever the init script changes.
    let init = include_str!("vm/init.sh");
    if !dir.join("initramfs.cpio.gz").exists()
        || fs::read_to_string(dir.join("initramfs.init")).ok().as_deref() != Some(init)
    {
        build_initramfs(&dir)?;
        fs::write(dir.join("initramfs.init"), init)?;
    }
    Ok(())
}

/// The uncompressed ELF kernel inside a bzImage, for a PVH boot that skips
/// the slow in-guest decompressor.
fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<()> {
    let image = fs::read(vmlinuz)?;
    let formats: [(&[u8], &str); 2] = [(b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd")];
    for (magic, tool) in formats {
        for start in image.windows(magic.len()).enumerate().filter(|(_, w)| *w == magic).map(|(i, _)| i) {
            let tail = out.with_extension("payload");
            fs::write(&tail, &image[start..])?;
            let output = Command::new(tool).args(["-dc"]).stdin(fs::File::open(&tail)?).output()?;
            let _ = fs::remove_file(&tail);
            // Trailing data after the stream makes the tool complain; the ELF is what counts.
            if output.stdout.starts_with(b"\x7fELF") {
                fs::write(out, &output.stdout)?;
                return Ok(());
            }
        }
    }
    bail!("no xz or zstd kernel payload in {}", vmlinuz.display())
}

/// busybox, an init script and the modules needed to mount the host
/// (virtio PCI, 9p, overlay) and to run the tests (loop).
fn build_initramfs(dir: &Path) -> Result<()> {
    let kver = fs::read_to_string(dir.join("kver"))?.trim().to_owned();
    let root = dir.join("root");
    let staging = dir.join("initramfs");
    let _ = fs::remove_dir_all(&staging);
    for sub in ["bin", "modules", "proc", "sys", "dev", "lower", "upper", "newroot"] {
        fs::create_dir_all(staging.join(sub))?;
    }
    fs::copy("/bin/busybox", staging.join("bin/busybox"))?;
    fs::write(staging.join("init"), include_str!("vm/init.sh"))?;
    run(Command::new("chmod").arg("+x").arg(staging.join("init")).arg(staging.join("bin/busybox")))?;
    let mut order = Vec::new();
    for module in ["virtio_pci", "9pnet_virtio", "9p", "overlay", "loop"] {
        let out =
            Command::new("modprobe").arg("-d").arg(&root).args(["-S", &kver, "--show-depends", module]).output()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(path) = line.strip_prefix("insmod ").map(|p| p.split_whitespace().next().unwrap_or(p)) else {
                continue; // "builtin ..."
            };
            let src = if path.starts_with(root.to_str().unwrap_or_default()) {
                PathBuf::from(path)
            } else {
                root.join(path.trim_start_matches('/'))
            };
            let name = src.file_name().unwrap().to_string_lossy().into_owned();
            let (plain, tool) = match name.rsplit_once('.') {
                Some((stem, "xz")) => (stem.to_owned(), Some("xz")),
                Some((stem, "zst")) => (stem.to_owned(), Some("zstd")),
                _ => (name.clone(), None),
            };
            if order.contains(&plain) {
                continue;
            }
            let dest = staging.join("modules").join(&plain);
            match tool {
                Some(tool) => {
                    let data = Command::new(tool).arg("-dc").arg(&src).output()?;
                    fs::write(&dest, data.stdout)?;
                }
                None => {
                    fs::copy(&src, &dest).with_context(|| format!("copying {}", src.display()))?;
                }
            }
            order.push(plain);
        }
    }
    fs::write(staging.join("modules.order"), order.join("\n") + "\n")?;
    let cpio = format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        staging.display(),
        dir.join("initramfs.cpio.gz").display()
    );
    run(Command::new("bash").args(["-c", &cpio]))
}

/// Builds the tools (static: the guests run the very binaries a user copies)
/// and the integration tests on the host; returns the tools' directory and
/// the test executables by tool name.
fn build_tests(cells: &[Cell]) -> Result<(PathBuf, BTreeMap<String, PathBuf>)> {
    let cargo = env!("CARGO");
    let bin_dir = crate::build_tools()?;
    let out = Command::new(cargo)
        .current_dir(workspace())
        .args([
            "test",
            "--profile",
            crate::TESTS_PROFILE,
            "-p",
            "integration-tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the integration tests failed");
    }
    let mut tests = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // {"reason":"compiler-artifact",..."target":{..."kind":["test"],..."name":"runqlat"...},"executable":"/..."}
        if !line.contains("\"compiler-artifact\"") || !line.contains("\"kind\":[\"test\"]") {
            continue;
        }
        let field = |key: &str| -> Option<String> {
            let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
            Some(line[start..start + line[start..].find('"')?].to_owned())
        };
        if let (Some(name), Some(exe)) = (field("name"), field("executable")) {
            tests.insert(name, PathBuf::from(exe));
        }
    }
    for (tool, ..) in cells {
        if !tests.contains_key(*tool) {
            bail!("no integration test executable for {tool}");
        }
    }
    Ok((bin_dir, tests))
}

/// Whether `cell` is one of `kernel`'s.
fn runs_on(cell: &tools_catalog::Cell, kernel: &str) -> bool {
    cell.kernels.is_empty() || cell.kernels.contains(&kernel)
}

/// Boots one kernel, runs the matrix in it, streams libtest's output, and
/// returns (tool, rung, passed) per cell.
fn boot_and_test(
    cache: &Path,
    kernel: &str,
    tests: &BTreeMap<String, PathBuf>,
    bin_dir: &Path,
    cells: &[Cell],
) -> Result<Vec<(String, String, bool)>> {
    let dir = cache.join(kernel);
    // Not under /tmp: the guest mounts its own tmpfs there.
    let job = cache.join("jobs").join(format!("{kernel}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&job);
    fs::create_dir_all(&job)?;
    let mut cmd = String::from("export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n");
    // Emulation is ~7x slower: fewer execs in the accounting tests (the sum
    // is what they check), and fewer wakeups of contending spinners (what
    // runqlat checks is where they land, not how many).
    let _ = writeln!(
        cmd,
        "export EBPF_TOOLS_BIN_DIR='{}' RUST_BACKTRACE=1 EBPF_TOOLS_TEST_EXECS=150 EBPF_TOOLS_TEST_CONNECTIONS=150 EBPF_TOOLS_TEST_MIN_WAKEUPS=20",
        bin_dir.display()
    );
    // Modules the tests need; mount cannot load them itself here (the
    // kernel's modprobe helper runs in the initramfs, not in this root).
    cmd.push_str("for m in loop ext4 xfs btrfs; do modprobe $m 2>/dev/null; done\n");
    cmd.push_str("cp /sys/kernel/btf/vmlinux /tmp/vmlinux.btf\n");
    cmd.push_str("echo \"=== kernel $(uname -r)\"\n");
    for (tool, cell) in cells.iter().filter(|(_, cell)| runs_on(cell, kernel)) {
        let rung = cell.rung;
        let env: String = cell.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let exe = tests[*tool].display();
        let filters = cell.tests.join(" ");
        let _ = writeln!(
            cmd,
            "echo '=== BEGIN {tool} {rung}'; t=$(date +%s); (cd /tmp && env {env}'{exe}' --test-threads=1 {filters}); echo \"=== END {tool} {rung} rc=$? ($(( $(date +%s) - t )) s)\""
        );
    }
    fs::write(job.join("cmd.sh"), cmd)?;
    let output = boot(&dir, kernel, &job)?;
    let verdicts = cells
        .iter()
        .filter(|(_, cell)| runs_on(cell, kernel))
        .map(|(tool, cell)| {
            let ok = output.contains(&format!("=== END {tool} {} rc=0", cell.rung));
            (tool.to_string(), cell.rung.to_string(), ok)
        })
        .collect();
    let _ = fs::remove_dir_all(&job);
    Ok(verdicts)
}

/// Boots `kernel` with `job`/cmd.sh as its command, streams its output,
/// and returns it; fails with the console tail when the guest gives no verdict.
fn boot(dir: &Path, kernel: &str, job: &Path) -> Result<String> {
    let kver = fs::read_to_string(dir.join("kver"))?.trim().to_owned();
    let modules = dir.join("root/lib/modules").join(&kver);
    let append = format!(
        "console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off random.trust_cpu=on vmtest.job={} vmtest.modules={}",
        job.display(),
        modules.display()
    );
    println!("vm-test: booting {kernel} ({kver})");
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-machine", "q35"])
        .args(["-accel", "tcg,thread=single,tb-size=256", "-cpu", "max", "-smp", "2", "-m", "2G"])
        .arg("-kernel")
        .arg(dir.join("vmlinux"))
        .arg("-initrd")
        .arg(dir.join("initramfs.cpio.gz"))
        .args(["-append", &append])
        .arg("-serial")
        .arg(format!("file:{}", job.join("console.log").display()))
        .arg("-serial")
        .arg(format!("file:{}", job.join("output").display()))
        .args(["-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap"])
        .args(["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"])
        .arg("-fsdev")
        .arg(format!("local,id=job,path={},security_model=none,multidevs=remap", job.display()))
        .args(["-device", "virtio-9p-pci,fsdev=job,mount_tag=vmtest_job", "-monitor", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu")?;
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let mut shown = 0;
    let status = loop {
        shown = stream_new_output(kernel, &job.join("output"), shown);
        if let Some(status) = qemu.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(500));
    };
    stream_new_output(kernel, &job.join("output"), shown);
    let output = fs::read_to_string(job.join("output")).unwrap_or_default();
    let rc = fs::read_to_string(job.join("rc")).ok();
    if status.is_none() || rc.is_none() {
        let console = fs::read_to_string(job.join("console.log")).unwrap_or_default();
        let tail: Vec<&str> = console.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        bail!(
            "{} ; console tail:\n{}",
            if status.is_none() { "guest timed out" } else { "guest ended without a verdict (boot failure or panic)" },
            tail.join("\n")
        );
    }
    let rc = rc.unwrap_or_default();
    if rc.trim() != "0" {
        log_rc(kernel, rc.trim());
    }
    Ok(output)
}

fn log_rc(kernel: &str, rc: &str) {
    println!("vm-test: {kernel}: the guest command exited {rc}");
}

/// `cargo xtask vm-run --kernel K -- CMD...`: one command in a guest (for debugging).
pub fn vm_run(kernel: &str, command: &[String]) -> Result<()> {
    install_packages()?;
    let cache = setup::cache_dir().join("vm");
    prepare(&cache, kernel)?;
    let job = cache.join("jobs").join(format!("{kernel}-run-{}", std::process::id()));
    fs::create_dir_all(&job)?;
    let quoted: Vec<String> = command.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
    fs::write(
        job.join("cmd.sh"),
        format!(
            "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\ncd '{}'\n{}\n",
            workspace().display(),
            quoted.join(" ")
        ),
    )?;
    let output = boot(&cache.join(kernel), kernel, &job);
    let rc = fs::read_to_string(job.join("rc")).unwrap_or_default();
    let _ = fs::remove_dir_all(&job);
    output?;
    if rc.trim() != "0" {
        bail!("exited {}", rc.trim());
    }
    Ok(())
}

/// Prints what the guest wrote since `shown` bytes, prefixed with its kernel.
fn stream_new_output(kernel: &str, path: &Path, shown: usize) -> usize {
    let Ok(data) = fs::read(path) else { return shown };
    if data.len() <= shown {
        return shown;
    }
    let text = String::from_utf8_lossy(&data[shown..]);
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    for line in text[..complete].lines() {
        println!("[{kernel}] {line}");
    }
    shown + text[..complete].len()
}

fn matrix_table(
    cache: &Path,
    kernels: &[String],
    cells: &[Cell],
    results: &BTreeMap<(String, String, String), bool>,
) -> String {
    let mut t = String::from("| tool | rung |");
    for k in kernels {
        let package = fs::read_to_string(cache.join(k).join("kver")).unwrap_or_default();
        let _ = write!(t, " {k} ({}) |", package.trim());
    }
    t.push_str("\n|---|---|");
    t.push_str(&"---|".repeat(kernels.len()));
    t.push('\n');
    for (tool, cell) in cells {
        let rung = cell.rung;
        let _ = write!(t, "| {tool} | {rung} |");
        for k in kernels {
            let cell = match results.get(&(tool.to_string(), k.clone(), rung.to_string())) {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "-",
            };
            let _ = write!(t, " {cell} |");
        }
        t.push('\n');
    }
    t
}
