//! The oldest Linux kernel whose BPF loader and verifier can accept a set of
//! programs of a compiled BPF object, from static facts.

pub mod versions;

pub use versions::KernelVersion;
