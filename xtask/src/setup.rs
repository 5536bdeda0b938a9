//! `cargo xtask setup`: installs what a fresh machine lacks to build and test
//! the toolkit. Every step checks first, so a second run costs about nothing.
//!
//! bpf-linker has no prebuilt download and the machine has no system LLVM 22,
//! so it is built once against the nightly toolchain's own libLLVM and cached
//! outside the repository (a fresh clone or `cargo clean` reuses it).

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::run;

pub const BPF_LINKER_VERSION: &str = "0.13.0";
pub const CARGO_FUZZ_VERSION: &str = "0.13.1";

/// What a command needs installed: building and running the tools, making
/// the Debian package, or running the tests and benchmarks (each includes
/// the one before).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Needs {
    Build,
    Package,
    Tests,
}

/// Debian packages building the tools needs, keyed by a command they
/// provide (an absolute path where the name alone could be ours, or a file
/// where they provide no command).
const BUILD_PACKAGES: &[(&str, &str)] = &[
    // The C parts of the tools' crates (ring) for the musl target.
    ("musl-gcc", "musl-tools"),
    // arm64: the tools' C parts, and the tests' linker with its glibc
    // (see .cargo/config.toml); strip for the arm64 package.
    ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    ("/usr/aarch64-linux-gnu/lib/libc.so", "libc6-dev-arm64-cross"),
];

/// Debian packages `cargo xtask deb` needs: stripped binaries, built and
/// checked.
const PACKAGE_PACKAGES: &[(&str, &str)] =
    &[("strip", "binutils"), ("dpkg-deb", "dpkg"), ("lintian", "lintian"), ("gzip", "gzip")];

/// Debian packages the tests and benchmarks need.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("taskset", "util-linux"),
    ("unshare", "util-linux"),
    ("losetup", "mount"),
    // The tests parse CSV with Python's csv module, as a user's script would.
    ("/usr/bin/python3", "python3"),
    // ext4slower's tests (and xfsslower's, btrfsslower's) make filesystems.
    ("mkfs.ext4", "e2fsprogs"),
    ("mkfs.xfs", "xfsprogs"),
    ("mkfs.btrfs", "btrfs-progs"),
    // The heatmap tests: SVG well-formedness, and a real browser's rendering.
    ("xmllint", "libxml2-utils"),
    ("/usr/bin/chromium", "chromium"),
    // The C tools the benchmarks compare with.
    ("/usr/sbin/runqlat", "libbpf-tools"),
    // The Debian package installed and its man pages found; bash
    // completion as a user gets it.
    ("man", "man-db"),
    ("/usr/share/bash-completion/bash_completion", "bash-completion"),
    // The exporter's tests: a real Prometheus (started by the tests on
    // loopback, never the package's service) and promtool; curl as the
    // scraping client, openssl for test certificates, htpasswd for bcrypt.
    ("/usr/bin/prometheus", "prometheus"),
    ("promtool", "prometheus"),
    ("curl", "curl"),
    ("openssl", "openssl"),
    ("htpasswd", "apache2-utils"),
    // --containers' tests: real containers, Podman's and runc's, from an
    // image made locally (no registry).
    ("podman", "podman"),
    ("runc", "runc"),
];

/// Installs what `needs` asks for (cheap when done).
pub fn setup(needs: Needs) -> Result<()> {
    install_rust_src()?;
    install_rust_targets()?;
    let linker = install_bpf_linker()?;
    println!("setup: bpf-linker at {}", linker.display());
    let mut packages: Vec<&(&str, &str)> = BUILD_PACKAGES.iter().collect();
    if needs >= Needs::Package {
        packages.extend(PACKAGE_PACKAGES);
    }
    if needs >= Needs::Tests {
        packages.extend(TEST_PACKAGES);
    }
    install_apt_packages(&packages)
}

fn install_rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup")?;
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn install_rust_targets() -> Result<()> {
    let out = Command::new("rustup").args(["target", "list", "--installed"]).output().context("running rustup")?;
    let installed = String::from_utf8_lossy(&out.stdout);
    let targets = crate::arch::Arch::ALL.into_iter().flat_map(|arch| arch.rust_targets());
    for target in targets.filter(|t| !installed.lines().any(|line| line == *t)) {
        run(Command::new("rustup").args(["target", "add", target]))?;
    }
    Ok(())
}

/// Where build outputs that outlive the repository go.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache"));
    base.join("ebpf-tools")
}

/// The folder whose `bin/` holds the cached bpf-linker. tools-user's build
/// script looks here too, so it must stay in step with `tools-user/build.rs`.
pub fn bpf_linker_root() -> PathBuf {
    cache_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}"))
}

fn install_bpf_linker() -> Result<PathBuf> {
    let root = bpf_linker_root();
    let linker = root.join("bin/bpf-linker");
    let llvm = nightly_libllvm()?;
    // The linker loads the nightly's libLLVM at run time: a new nightly means a rebuild.
    let stamp = root.join("built-against");
    if linker.exists() && fs::read_to_string(&stamp).ok().as_deref() == Some(llvm.to_str().unwrap_or_default()) {
        return Ok(linker);
    }

    // A folder that looks like an LLVM install: lib/libLLVM.so and the
    // library's own soname, both pointing at the nightly's libLLVM.
    let prefix = root.join("llvm");
    let lib = prefix.join("lib");
    let _ = fs::remove_dir_all(&prefix);
    fs::create_dir_all(&lib)?;
    let soname = llvm.file_name().context("libLLVM has no file name")?;
    symlink(&llvm, lib.join("libLLVM.so"))?;
    symlink(&llvm, lib.join(soname))?;

    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against {} (about a minute)", llvm.display());
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--locked", "--force", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22", "--root"])
        .arg(&root)
        .env("LLVM_PREFIX", &prefix)
        .env("RUSTFLAGS", format!("-L {} -C link-arg=-Wl,-rpath,{}", lib.display(), lib.display())))?;
    fs::write(&stamp, llvm.to_str().unwrap_or_default())?;
    Ok(linker)
}

/// The nightly toolchain's `lib/libLLVM.so.<version>-rust-*`.
fn nightly_libllvm() -> Result<PathBuf> {
    let out = Command::new("rustc").args(["+nightly", "--print", "sysroot"]).output().context("rustc +nightly")?;
    if !out.status.success() {
        bail!("no nightly toolchain: `rustc +nightly --print sysroot` failed");
    }
    let sysroot = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let lib = sysroot.join("lib");
    for entry in fs::read_dir(&lib)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("libLLVM.so.") && name.contains("-rust-") {
            return Ok(lib.join(&*name));
        }
    }
    bail!("no libLLVM.so.*-rust-* in {}", lib.display())
}

/// cargo-fuzz, built once and cached beside bpf-linker (it drives libFuzzer
/// on the nightly toolchain for `cargo xtask fuzz`).
pub fn install_cargo_fuzz() -> Result<PathBuf> {
    let root = cache_dir().join(format!("cargo-fuzz-{CARGO_FUZZ_VERSION}"));
    let bin = root.join("bin/cargo-fuzz");
    if !bin.exists() {
        println!("setup: building cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute)");
        run(Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION, "--root"])
            .arg(&root))?;
    }
    Ok(bin)
}

fn install_apt_packages(packages: &[&(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = packages.iter().filter(|(cmd, _)| !command_exists(cmd)).map(|(_, pkg)| *pkg).collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends"]).args(&missing))
}

pub fn command_exists(cmd: &str) -> bool {
    if cmd.starts_with('/') {
        return Path::new(cmd).is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(cmd))))
        .unwrap_or(false)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}
