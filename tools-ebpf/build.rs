//! How bpf-linker builds the objects. Both builds target the original
//! instruction set (rustc's `generic` BPF CPU: no `JLT`, 4.14; no 32-bit
//! jumps, 5.1) and inline memory copies and fills; the legacy build also
//! asks it to unroll loops and inline everything it can (loops need Linux
//! 5.3, calls 4.16). `cargo xtask kernel-floor` checks the result.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // bpf-linker asks LLVM to expand memcpy in order by default, which
    // leaves every memset (each zeroed array: `[0; 16]`) a call into a
    // looping function: the generic expansion inlines both as stores.
    println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
    if std::env::var_os("CARGO_FEATURE_LEGACY").is_some() {
        for arg in ["--unroll-loops", "--ignore-inline-never"] {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}
