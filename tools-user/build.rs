//! Compiles `tools-ebpf` for the BPF target (aya-build) so each tool binary
//! embeds its bytecode and needs no other file at run time.

use std::{env, path::PathBuf};

fn main() -> anyhow::Result<()> {
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

    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../tools-ebpf");
    let root = root.canonicalize()?;
    let root_dir = root.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    let package = |features| aya_build::Package { name: "tools-ebpf", root_dir, features, ..Default::default() };
    aya_build::build_ebpf([package(&[])], aya_build::Toolchain::default())?;

    // The same programs with their configuration in a map, for kernels
    // without global data: aya-build writes into OUT_DIR, so point it at a
    // subfolder for this second object.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let config_map_dir = out_dir.join("config-map");
    std::fs::create_dir_all(&config_map_dir)?;
    // SAFETY: as above.
    unsafe { env::set_var("OUT_DIR", &config_map_dir) };
    aya_build::build_ebpf([package(&["config-map"])], aya_build::Toolchain::default())?;
    unsafe { env::set_var("OUT_DIR", &out_dir) };
    Ok(())
}
