//! Compiles `tools-ebpf` for the BPF target (aya-build) so each tool binary
//! embeds its bytecode and needs no other file at run time; and tells the
//! tools' `--version` the commit they were built from and the aya version.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir.join("..");
    let (commit, date) = commit(&workspace);
    println!("cargo:rustc-env=EBPF_TOOLS_COMMIT={commit}");
    // The man pages' date: the commit's, so the same source gives the same pages.
    println!("cargo:rustc-env=EBPF_TOOLS_DATE={date}");
    println!("cargo:rustc-env=EBPF_TOOLS_AYA_VERSION={}", aya_version(&workspace));

    // bpf-linker is built by `cargo xtask setup` into a cache outside the
    // repository (see xtask/src/setup.rs); make it findable for the BPF build.
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|cache| cache.join("ebpf-tools/bpf-linker-0.13.0/bin"));
    if let Some(linker_dir) = cache.filter(|dir| dir.join("bpf-linker").exists()) {
        let path = env::var_os("PATH").unwrap_or_default();
        let paths = std::iter::once(linker_dir).chain(env::split_paths(&path));
        // SAFETY: build scripts are single-threaded here; the child cargo inherits it.
        unsafe { env::set_var("PATH", env::join_paths(paths)?) };
    }
    println!("cargo:rerun-if-env-changed=XDG_CACHE_HOME");

    let root = workspace.join("tools-ebpf");
    let root = root.canonicalize()?;
    let root_dir = root.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    let package = |features| aya_build::Package { name: "tools-ebpf", root_dir, features, ..Default::default() };
    aya_build::build_ebpf([package(&[])], aya_build::Toolchain::default())?;

    // The legacy build of the same programs, for kernels before 5.8 (see
    // tools-ebpf's lib.rs): aya-build writes into OUT_DIR, so point it at
    // a subfolder for this second object.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let legacy_dir = out_dir.join("legacy");
    std::fs::create_dir_all(&legacy_dir)?;
    // SAFETY: as above.
    unsafe { env::set_var("OUT_DIR", &legacy_dir) };
    aya_build::build_ebpf([package(&["legacy"])], aya_build::Toolchain::default())?;
    unsafe { env::set_var("OUT_DIR", &out_dir) };
    Ok(())
}

/// The commit being built and its date (YYYY-MM-DD): `EBPF_TOOLS_COMMIT`
/// when set (a packager building from a source tarball knows it), else
/// git's answer, else "unknown" (and no date). Rebuilt when HEAD moves.
fn commit(workspace: &Path) -> (String, String) {
    println!("cargo:rerun-if-env-changed=EBPF_TOOLS_COMMIT");
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").arg("-C").arg(workspace).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let date = git(&["log", "-1", "--format=%cs", "HEAD"]).unwrap_or_default();
    if let Ok(commit) = env::var("EBPF_TOOLS_COMMIT") {
        return (commit, date);
    }
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return ("unknown".into(), date);
    };
    // HEAD names a branch whose ref file (or packed-refs) moves on commit;
    // in a worktree these live in two different git directories. Only
    // files that exist are watched: cargo reruns on every build for one
    // that does not, and a rerun relinks every tool.
    let git_dir = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from);
    let common_dir = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]).map(PathBuf::from);
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    let mut watched: Vec<PathBuf> = git_dir.iter().map(|dir| dir.join("HEAD")).collect();
    if let Some(common) = common_dir {
        watched.extend(branch.map(|branch| common.join(branch)));
        watched.push(common.join("packed-refs"));
    }
    for path in watched.iter().filter(|path| path.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    (commit, date)
}

/// aya's version, as Cargo.lock resolved it.
fn aya_version(workspace: &Path) -> String {
    let lock = workspace.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    text.split("[[package]]")
        .find(|package| package.lines().any(|line| line.trim() == "name = \"aya\""))
        .and_then(|package| package.lines().find_map(|line| line.trim().strip_prefix("version = ")))
        .map(|version| version.trim_matches('"').to_owned())
        .unwrap_or_else(|| "unknown".into())
}
