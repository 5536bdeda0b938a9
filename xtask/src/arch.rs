//! The architectures the tools are built for: this machine's, x86-64, and
//! arm64, cross-built here (Debian's cross compiler and rustc's lld; see
//! .cargo/config.toml) and tested in arm64 guests under qemu.

use std::fmt;

/// An architecture, by Debian's name (as packages and kernels spell it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Arch {
    #[value(alias = "x86_64", alias = "x86-64")]
    Amd64,
    #[value(alias = "aarch64")]
    Arm64,
}

impl Arch {
    /// The machine the tasks run on (the only kind they run on).
    pub const HOST: Arch = Arch::Amd64;

    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// Debian's name: packages, kernels, the .deb's file name.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The tools' target: statically linked, so one file runs on any
    /// distribution (glibc binaries need the glibc they were built against).
    pub fn static_target(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-musl",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The tests' target where it is not the host's: glibc programs, since
    /// gethostlatency's tests probe glibc's resolver in their own workload.
    pub fn test_target(self) -> Option<&'static str> {
        match self {
            Arch::Amd64 => None,
            Arch::Arm64 => Some("aarch64-unknown-linux-gnu"),
        }
    }

    /// The Rust targets building for it and testing on it need.
    pub fn rust_targets(self) -> Vec<&'static str> {
        std::iter::once(self.static_target()).chain(self.test_target()).collect()
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.debian())
    }
}
