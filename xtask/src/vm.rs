//! `cargo xtask vm-test`: every tool's integration tests inside real Debian
//! kernels (5.10, 6.1, 6.12, 7.3; amd64 and arm64) booted under qemu (TCG:
//! this machine's /dev/kvm is PVM and cannot run them), on the rung the
//! loader picks there and with lower rungs forced. Kernels, modules and
//! initramfs images are cached outside the repository; binaries are built
//! on the host and run in the guest over a read-only 9p view of the host's
//! /. An arm64 guest runs the arm64 builds of the tools and of the tests,
//! over a root of Debian's arm64 programs (a shell, mkfs, Python, a C
//! compiler for musl) laid over the host's /.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{arch::Arch, run, setup, workspace};

pub const KERNELS: [&str; 4] = ["5.10", "6.1", "6.12", "7.3"];

/// The arm64 kernels of the matrix `cargo xtask test` runs: one, the
/// oldest of Debian's that has what the 4.4 cells need (kprobes, the
/// legacy build), since arm64 under TCG costs about twice x86-64's time.
pub const ARM64_KERNELS: [&str; 1] = ["6.1"];

/// One guest: a Debian kernel series of an architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guest {
    pub arch: Arch,
    pub kernel: String,
}

impl Guest {
    /// The matrix `cargo xtask test` runs, and docs/kernels.md shows.
    pub fn matrix() -> Vec<Guest> {
        let guests = |arch: Arch, kernels: &[&str]| {
            kernels.iter().map(move |k| Guest { arch, kernel: k.to_string() }).collect::<Vec<_>>()
        };
        [guests(Arch::Amd64, &KERNELS), guests(Arch::Arm64, &ARM64_KERNELS)].concat()
    }

    /// Its name in the output and the matrix: `6.1`, `arm64 6.1`.
    fn label(&self) -> String {
        match self.arch {
            Arch::HOST => self.kernel.clone(),
            arch => format!("{arch} {}", self.kernel),
        }
    }

    /// Its folder in the cache: the host architecture's kernels by their
    /// series (`6.1`), others' with their architecture (`arm64-6.1`).
    fn dir(&self, cache: &Path) -> PathBuf {
        match self.arch {
            Arch::HOST => cache.join(&self.kernel),
            arch => cache.join(format!("{arch}-{}", self.kernel)),
        }
    }
}

/// The programs an arm64 guest runs beside the tools and the tests (which
/// are ours, cross-built): what the tests run (a shell, coreutils, mount
/// and losetup, mkfs of each filesystem, Python's csv module, musl-gcc for
/// gethostlatency's musl program), dpkg and tar to install the package,
/// and busybox for the initramfs.
const GUEST_ROOT_PACKAGES: &[&str] = &[
    "busybox-static",
    "dash",
    "coreutils",
    "dpkg",
    "tar",
    "util-linux",
    "mount",
    "kmod",
    "e2fsprogs",
    "xfsprogs",
    "btrfs-progs",
    "python3",
    "musl-tools",
    "gcc",
];

/// One cell of the matrix: a tool and its catalog cell (its tests on the
/// best rung, or with a lower rung forced; rungs a tool's tests force
/// themselves run inside "best"). Cells with a lower rung forced run only
/// the tests that tell the rung works, to keep the matrix within its share
/// of CI's time.
type Cell = (&'static str, &'static tools_catalog::Cell);

/// The tools whose cells a guest runs in its second boot, the longer of
/// its two (each start of ext4slower attaches kprobes, seconds apiece
/// under emulation; execsnoop's tests exec hundreds of programs).
const SECOND_BOOT: &[&str] = &["ext4slower", "execsnoop"];

/// One boot of a guest: the cells it runs, and whether it is the guest's
/// last, which also installs the package and reads the kernel floor.
struct Boot {
    guest: Guest,
    cells: Vec<Cell>,
    last: bool,
}

/// Every tool's cells, from the catalog.
fn matrix() -> Vec<Cell> {
    tools_catalog::TOOLS.iter().flat_map(|tool| tool.matrix.iter().map(move |cell| (tool.name, cell))).collect()
}

const GUEST_TIMEOUT: Duration = Duration::from_secs(40 * 60);

pub fn vm_test(guests: &[Guest], only_tool: Option<&str>) -> Result<()> {
    let started = Instant::now();
    let cells: Vec<Cell> = matrix().into_iter().filter(|c| only_tool.is_none_or(|t| t == c.0)).collect();
    if cells.is_empty() {
        bail!("no matrix cells for {}", only_tool.unwrap_or_default());
    }
    install_packages()?;
    let cache = setup::cache_dir().join("vm");
    fs::create_dir_all(&cache)?;
    for guest in guests {
        prepare(&cache, guest).with_context(|| format!("preparing kernel {}", guest.label()))?;
    }
    let mut arches: Vec<Arch> = guests.iter().map(|guest| guest.arch).collect();
    arches.sort();
    arches.dedup();
    let builds: BTreeMap<Arch, Build> =
        arches.into_iter().map(|arch| Ok((arch, build_tests(arch, &cells)?))).collect::<Result<_>>()?;

    // Two boots at a time, the fastest on two host cores (each guest keeps
    // one busy). Each guest boots twice, its cells in two parts, and each
    // worker takes the next boot when its own is done, the longest first
    // so the short ones even out the end: other architectures' (about
    // twice as slow under emulation), then the second parts (ext4slower's
    // and execsnoop's, 376 to 447 s of an amd64 guest's tests in the last
    // run, against 284 to 332 s for the first parts).
    let mut queue: Vec<Boot> = guests
        .iter()
        .flat_map(|guest| {
            let (second, first): (Vec<Cell>, Vec<Cell>) =
                cells.iter().filter(|(_, cell)| runs_on(cell, guest)).partition(|(tool, _)| SECOND_BOOT.contains(tool));
            // One boot where a part is empty (`--tool`); the last does the package and the floor.
            let parts = if first.is_empty() || second.is_empty() {
                vec![[first, second].concat()]
            } else {
                vec![first, second]
            };
            let boots = parts.len();
            parts.into_iter().enumerate().map(move |(i, cells)| Boot {
                guest: guest.clone(),
                cells,
                last: i + 1 == boots,
            })
        })
        // A boot with nothing to run (no cell, and no package or floor here) is none.
        .filter(|boot| !steps(boot, &builds[&boot.guest.arch]).is_empty())
        .collect();
    queue.sort_by_key(|boot| (boot.guest.arch == Arch::HOST, !boot.last));
    let queue = Mutex::new(VecDeque::from(queue));
    let results: Mutex<BTreeMap<(String, String, String), bool>> = Mutex::new(BTreeMap::new());
    thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    // Taken in a statement of its own: a `while let` would
                    // hold the lock, and the other worker, through the boot.
                    let next = queue.lock().expect("queue").pop_front();
                    let Some(boot) = next else { break };
                    let label = boot.guest.label();
                    let build = &builds[&boot.guest.arch];
                    let outcome = boot_and_test(&cache, &boot, build).unwrap_or_else(|err| {
                        eprintln!("vm-test: kernel {label}: {err:#}");
                        let steps = steps(&boot, build);
                        steps.into_iter().map(|(tool, rung)| (tool.to_string(), rung.to_string(), false)).collect()
                    });
                    let mut results = results.lock().expect("results");
                    for (tool, rung, ok) in outcome {
                        results.insert((tool, label.clone(), rung), ok);
                    }
                }
            });
        }
    });
    let results = results.into_inner().expect("results");
    let table = matrix_table(&cache, guests, &cells, &results);
    println!("\n{table}");
    fs::write(workspace().join("target/kernel-matrix.md"), &table)?;
    // A run of every cell of the whole matrix is the docs' table.
    if only_tool.is_none() && guests == Guest::matrix().as_slice() {
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
        ("qemu-system-aarch64", "qemu-system-arm"),
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

/// Runs vm/debian.sh (fetches Debian packages) with `args`.
fn debian(cache: &Path, args: &[&str]) -> Result<()> {
    let script = cache.join("debian.sh");
    fs::write(&script, include_str!("vm/debian.sh"))?;
    run(Command::new("bash").arg(&script).args(args))
}

/// Fetches the kernel and builds what it boots (x86-64: the vmlinux inside
/// the bzImage; arm64 boots its Image as it is) and its initramfs, once;
/// for a guest of another architecture, its root of programs too.
fn prepare(cache: &Path, guest: &Guest) -> Result<()> {
    let dir = guest.dir(cache);
    let cache_text = cache.to_str().context("a cache path in UTF-8")?;
    if !dir.join("vmlinux").exists() {
        let out = dir.to_str().context("a cache path in UTF-8")?;
        debian(cache, &["kernel", cache_text, guest.arch.debian(), &guest.kernel, out])?;
        let vmlinuz = PathBuf::from(fs::read_to_string(dir.join("vmlinuz-path"))?.trim());
        match guest.arch {
            Arch::Amd64 => extract_vmlinux(&vmlinuz, &dir.join("vmlinux"))?,
            Arch::Arm64 => std::os::unix::fs::symlink(&vmlinuz, dir.join("vmlinux"))?,
        }
    }
    let root = guest_root(cache, guest.arch);
    // Made again when its packages or the script that makes it change.
    let root_recipe = format!("# packages: {}\n{}", GUEST_ROOT_PACKAGES.join(" "), include_str!("vm/debian.sh"));
    if let Some(root) = &root {
        if fs::read_to_string(root.with_extension("recipe")).ok().as_deref() != Some(root_recipe.as_str()) {
            let out = root.to_str().context("a cache path in UTF-8")?;
            let args = [&["root", cache_text, guest.arch.debian(), out][..], GUEST_ROOT_PACKAGES].concat();
            debian(cache, &args)?;
            fs::write(root.with_extension("recipe"), &root_recipe)?;
        }
    }
    // Rebuilt whenever the init script, the modules or the root (its
    // busybox) change.
    let mut recipe = format!("{}\n# modules: {}\n", include_str!("vm/init.sh"), INITRAMFS_MODULES.join(" "));
    if root.is_some() {
        recipe.push_str(&root_recipe);
    }
    if !dir.join("initramfs.cpio.gz").exists()
        || fs::read_to_string(dir.join("initramfs.init")).ok().as_deref() != Some(recipe.as_str())
    {
        let busybox = match &root {
            Some(root) => root.join("bin/busybox"),
            None => PathBuf::from("/bin/busybox"),
        };
        build_initramfs(&dir, &busybox)?;
        fs::write(dir.join("initramfs.init"), recipe)?;
    }
    Ok(())
}

/// The root of programs a guest of `arch` runs, laid over the host's /
/// (none for the host's own architecture).
fn guest_root(cache: &Path, arch: Arch) -> Option<PathBuf> {
    (arch != Arch::HOST).then(|| cache.join(format!("{arch}-root")))
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

/// The modules the initramfs loads: to mount the host (virtio PCI, 9p,
/// overlay), to write the command's output (arm64: a virtio console) and
/// to run the tests (loop).
const INITRAMFS_MODULES: [&str; 6] = ["virtio_pci", "virtio_console", "9pnet_virtio", "9p", "overlay", "loop"];

/// busybox (static, of the guest's architecture), an init script and
/// [`INITRAMFS_MODULES`].
fn build_initramfs(dir: &Path, busybox: &Path) -> Result<()> {
    let kver = fs::read_to_string(dir.join("kver"))?.trim().to_owned();
    let root = dir.join("root");
    let staging = dir.join("initramfs");
    let _ = fs::remove_dir_all(&staging);
    for sub in ["bin", "modules", "proc", "sys", "dev", "lower", "upper", "newroot", "guestroot"] {
        fs::create_dir_all(staging.join(sub))?;
    }
    fs::copy(busybox, staging.join("bin/busybox")).with_context(|| format!("copying {}", busybox.display()))?;
    fs::write(staging.join("init"), include_str!("vm/init.sh"))?;
    run(Command::new("chmod").arg("+x").arg(staging.join("init")).arg(staging.join("bin/busybox")))?;
    let mut order = Vec::new();
    for module in INITRAMFS_MODULES {
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

/// What a guest runs, built on the host for its architecture.
struct Build {
    /// The tools (static: the guests run the very binaries a user copies).
    bin_dir: PathBuf,
    /// The integration tests' executables, by tool name.
    tests: BTreeMap<String, PathBuf>,
    /// The Debian package, installed in the guest, where the host cannot
    /// install it itself (another architecture's).
    deb: Option<PathBuf>,
}

/// The guests' PATH: the system's folders only, where an arm64 guest's
/// root hides the host's programs (/usr/local shows the host's own).
const GUEST_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// The row of the package's installation in the matrix.
const PACKAGE_ROW: (&str, &str) = ("package", "dpkg -i, run, purge");

/// The row of the kernel floor of another architecture's objects (the
/// host's is `cargo xtask kernel-floor`): the tools' `--kernel-floor` run
/// in the guest, their lowest rungs held to Linux 4.4.
const FLOOR_ROW: (&str, &str) = ("kernel floor", "lowest rungs load on 4.4");

fn build_tests(arch: Arch, cells: &[Cell]) -> Result<Build> {
    let cargo = env!("CARGO");
    let built = crate::Built::for_arch(arch)?;
    let deb = match arch {
        Arch::HOST => None,
        _ => Some(crate::package::deb(&built)?),
    };
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
        .args(arch.test_target().map(|target| ["--target", target]).iter().flatten())
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
        if !tests.contains_key(test_name(tool)) {
            bail!("no integration test executable for {tool}");
        }
    }
    Ok(Build { bin_dir: built.bin_dir, tests, deb })
}

/// A program's integration test file: its name (`tests/tests/runqlat.rs`),
/// the exporter's without the project's prefix (`exporter.rs`).
fn test_name(program: &str) -> &str {
    program.strip_prefix("ebpf-tools-").unwrap_or(program)
}

/// Whether `cell` is one of `guest`'s.
fn runs_on(cell: &tools_catalog::Cell, guest: &Guest) -> bool {
    let kernel = guest.kernel.as_str();
    (cell.kernels.is_empty() || cell.kernels.contains(&kernel)) && !cell.not_on.contains(&(guest.arch.debian(), kernel))
}

/// What a boot runs, as (tool, rung) of the matrix: its cells, then, in
/// a guest's last, the package where it installs it and the floor.
fn steps<'a>(boot: &'a Boot, build: &Build) -> Vec<(&'a str, &'a str)> {
    let mut steps: Vec<(&str, &str)> = boot.cells.iter().map(|(tool, cell)| (*tool, cell.rung)).collect();
    if boot.last {
        steps.extend(build.deb.is_some().then_some(PACKAGE_ROW));
        steps.extend((boot.guest.arch != Arch::HOST).then_some(FLOOR_ROW));
    }
    steps
}

/// Boots one kernel, runs a part of the matrix in it, streams libtest's
/// output, and returns (tool, rung, passed) per cell.
fn boot_and_test(cache: &Path, boot: &Boot, build: &Build) -> Result<Vec<(String, String, bool)>> {
    let guest = &boot.guest;
    let steps = steps(boot, build);
    let (with_package, with_floor) = (steps.contains(&PACKAGE_ROW), steps.contains(&FLOOR_ROW));
    let kernel = guest.kernel.as_str();
    // Not under /tmp: the guest mounts its own tmpfs there.
    let job =
        cache.join("jobs").join(format!("{}-{kernel}-{}-{}", guest.arch, u8::from(boot.last), std::process::id()));
    let _ = fs::remove_dir_all(&job);
    fs::create_dir_all(&job)?;
    let mut cmd = format!("export PATH={GUEST_PATH}\n");
    // Emulation is ~7x slower: fewer execs in the accounting tests (the sum
    // is what they check), and fewer wakeups of contending spinners (what
    // runqlat checks is where they land, not how many).
    let _ = writeln!(
        cmd,
        "export EBPF_TOOLS_BIN_DIR='{}' RUST_BACKTRACE=1 EBPF_TOOLS_TEST_EXECS=150 EBPF_TOOLS_TEST_CONNECTIONS=150 EBPF_TOOLS_TEST_MIN_WAKEUPS=20",
        build.bin_dir.display()
    );
    // Modules the tests need; mount cannot load them itself here (the
    // kernel's modprobe helper runs in the initramfs, not in this root).
    cmd.push_str("for m in loop ext4 xfs btrfs; do modprobe $m 2>/dev/null; done\n");
    cmd.push_str("cp /sys/kernel/btf/vmlinux /tmp/vmlinux.btf\n");
    cmd.push_str("echo \"=== kernel $(uname -r)\"\n");
    for (tool, cell) in &boot.cells {
        let rung = cell.rung;
        let env: String = cell.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let exe = build.tests[test_name(tool)].display();
        let filters = cell.tests.join(" ");
        let _ = writeln!(
            cmd,
            "echo '=== BEGIN {tool} {rung}'; t=$(date +%s); (cd /tmp && env {env}'{exe}' --test-threads=1 {filters}); echo \"=== END {tool} {rung} rc=$? ($(( $(date +%s) - t )) s)\""
        );
    }
    // The package: installed, each program's --version and runqlat run
    // (named in /usr/bin: the host's libbpf-tools are in /usr/sbin, before
    // it in PATH), purged without a trace.
    let (package, step) = PACKAGE_ROW;
    if let Some(deb) = build.deb.as_ref().filter(|_| with_package) {
        let programs: Vec<&str> = tools_catalog::TOOLS.iter().map(|program| program.name).collect();
        let _ = writeln!(
            cmd,
            "echo '=== BEGIN {package} {step}'; (set -e; dpkg -i '{}'; for p in {}; do /usr/bin/$p --version; done; \
             /usr/bin/runqlat 1 1 > runqlat.out; tail -2 runqlat.out; test -e /usr/share/man/man8/runqlat.8.gz; dpkg --purge ebpf-tools; \
             test ! -e /usr/bin/runqlat); echo \"=== END {package} {step} rc=$?\"",
            deb.display(),
            programs.join(" "),
        );
    }
    if with_floor {
        let (floor, step) = FLOOR_ROW;
        let tools: Vec<&str> = crate::floor::tools().collect();
        let _ = writeln!(
            cmd,
            "echo '=== BEGIN {floor} {step}'; (set -e; for t in {}; do '{}'/$t --kernel-floor > floor-$t.jsonl; done); echo \"=== END {floor} {step} rc=$?\"",
            tools.join(" "),
            build.bin_dir.display(),
        );
    }
    fs::write(job.join("cmd.sh"), cmd)?;
    let mut tools: Vec<&str> = boot.cells.iter().map(|(tool, _)| *tool).collect();
    tools.dedup();
    tools.extend(with_package.then_some("the package"));
    tools.extend(with_floor.then_some("the kernel floor"));
    println!("vm-test: {}: a boot for {}", guest.label(), tools.join(", "));
    let output = run_in_qemu(cache, guest, &job)?;
    let floor_ok = !with_floor || floor_kept(guest, &job);
    let verdicts = steps
        .into_iter()
        .map(|(tool, rung)| {
            let ok = output.contains(&format!("=== END {tool} {rung} rc=0")) && ((tool, rung) != FLOOR_ROW || floor_ok);
            (tool.to_string(), rung.to_string(), ok)
        })
        .collect();
    let _ = fs::remove_dir_all(&job);
    Ok(verdicts)
}

/// Reads the kernel floors the guest wrote, prints their table, and says
/// whether each tool's lowest rung loads on Linux 4.4.
fn floor_kept(guest: &Guest, job: &Path) -> bool {
    let mut rows = Vec::new();
    for tool in crate::floor::tools() {
        let text = fs::read_to_string(job.join(format!("floor-{tool}.jsonl"))).unwrap_or_default();
        match crate::floor::parse(tool, &text) {
            Ok(more) if !more.is_empty() => rows.extend(more),
            _ => {
                println!("vm-test: {}: no kernel floor from {tool}", guest.label());
                return false;
            }
        }
    }
    println!("vm-test: {}: the kernel floor of its objects:\n{}", guest.label(), crate::floor::table(&rows));
    let broken = crate::floor::broken_promises(&rows);
    for line in &broken {
        println!("vm-test: {}: lowest rung above Linux 4.4:{line}", guest.label());
    }
    broken.is_empty()
}

/// Boots `guest` with `job`/cmd.sh as its command, streams its output,
/// and returns it; fails with the console tail when the guest gives no verdict.
fn run_in_qemu(cache: &Path, guest: &Guest, job: &Path) -> Result<String> {
    let dir = guest.dir(cache);
    let label = guest.label();
    let kver = fs::read_to_string(dir.join("kver"))?.trim().to_owned();
    let modules = dir.join("root/lib/modules").join(&kver);
    let root = guest_root(cache, guest.arch);
    // x86-64 has two serial ports: the console and the command's output;
    // arm64's virt machine has one, so the output goes to a virtio console.
    // pauth-impdef: arm64's pointer authentication by a cheap
    // implementation-defined algorithm instead of QARMA, slow to emulate.
    let (program, machine, console, out) = match guest.arch {
        Arch::Amd64 => ("qemu-system-x86_64", ["-machine", "q35", "-cpu", "max"], "ttyS0", "/dev/ttyS1"),
        Arch::Arm64 => {
            ("qemu-system-aarch64", ["-machine", "virt", "-cpu", "max,pauth-impdef=on"], "ttyAMA0", "/dev/hvc0")
        }
    };
    let append = format!(
        "console={console} quiet loglevel=4 panic=-1 mitigations=off random.trust_cpu=on vmtest.job={} vmtest.modules={} vmtest.out={out}{}",
        job.display(),
        modules.display(),
        if root.is_some() { " vmtest.root=1" } else { "" },
    );
    println!("vm-test: booting {label} ({kver})");
    let mut qemu = Command::new(program);
    qemu.args(machine);
    // The first serial port is the console.
    qemu.arg("-serial").arg(format!("file:{}", job.join("console.log").display()));
    let output = job.join("output");
    match guest.arch {
        Arch::Amd64 => qemu.arg("-serial").arg(format!("file:{}", output.display())),
        Arch::Arm64 => qemu
            .args(["-device", "virtio-serial-pci", "-chardev"])
            .arg(format!("file,id=out,path={}", output.display()))
            .args(["-device", "virtconsole,chardev=out"]),
    };
    if let Some(root) = &root {
        qemu.arg("-fsdev")
            .arg(format!("local,id=guestroot,path={},security_model=none,readonly=on,multidevs=remap", root.display()))
            .args(["-device", "virtio-9p-pci,fsdev=guestroot,mount_tag=guestroot"]);
    }
    let mut qemu = qemu
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-accel", "tcg,thread=single,tb-size=256", "-smp", "2", "-m", "2G"])
        .arg("-kernel")
        .arg(dir.join("vmlinux"))
        .arg("-initrd")
        .arg(dir.join("initramfs.cpio.gz"))
        .args(["-append", &append])
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
        shown = stream_new_output(&label, &job.join("output"), shown);
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
    stream_new_output(&label, &job.join("output"), shown);
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
        log_rc(&label, rc.trim());
    }
    Ok(output)
}

fn log_rc(kernel: &str, rc: &str) {
    println!("vm-test: {kernel}: the guest command exited {rc}");
}

/// `cargo xtask vm-run --kernel K [--arch A] -- CMD...`: one command in a guest (for debugging).
pub fn vm_run(guest: &Guest, command: &[String]) -> Result<()> {
    install_packages()?;
    let cache = setup::cache_dir().join("vm");
    prepare(&cache, guest)?;
    let job = cache.join("jobs").join(format!("{}-{}-run-{}", guest.arch, guest.kernel, std::process::id()));
    fs::create_dir_all(&job)?;
    let quoted: Vec<String> = command.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
    fs::write(
        job.join("cmd.sh"),
        format!("export PATH={GUEST_PATH}\ncd '{}'\n{}\n", workspace().display(), quoted.join(" ")),
    )?;
    let output = run_in_qemu(&cache, guest, &job);
    let rc = fs::read_to_string(job.join("rc")).unwrap_or_default();
    let _ = fs::remove_dir_all(&job);
    output?;
    if rc.trim() != "0" {
        bail!("exited {}", rc.trim());
    }
    Ok(())
}

/// Prints what the guest wrote since `shown` bytes, prefixed with its label.
fn stream_new_output(label: &str, path: &Path, shown: usize) -> usize {
    let Ok(data) = fs::read(path) else { return shown };
    if data.len() <= shown {
        return shown;
    }
    let text = String::from_utf8_lossy(&data[shown..]);
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    for line in text[..complete].lines() {
        println!("[{label}] {line}");
    }
    shown + text[..complete].len()
}

fn matrix_table(
    cache: &Path,
    guests: &[Guest],
    cells: &[Cell],
    results: &BTreeMap<(String, String, String), bool>,
) -> String {
    let mut t = String::from("| tool | rung |");
    for guest in guests {
        let package = fs::read_to_string(guest.dir(cache).join("kver")).unwrap_or_default();
        let _ = write!(t, " {} ({}) |", guest.label(), package.trim());
    }
    t.push_str("\n|---|---|");
    t.push_str(&"---|".repeat(guests.len()));
    t.push('\n');
    let mut rows: Vec<(&str, &str)> = cells.iter().map(|(tool, cell)| (*tool, cell.rung)).collect();
    for row in [PACKAGE_ROW, FLOOR_ROW] {
        if results.keys().any(|(tool, _, rung)| (tool.as_str(), rung.as_str()) == row) {
            rows.push(row);
        }
    }
    for (tool, rung) in rows {
        let _ = write!(t, "| {tool} | {rung} |");
        for guest in guests {
            let cell = match results.get(&(tool.to_string(), guest.label(), rung.to_string())) {
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
