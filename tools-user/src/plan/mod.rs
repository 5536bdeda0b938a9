//! Each tool's plan (every histogram tool's, and the event tools' the
//! exporter loads): its kernel configuration and its rungs,
//! best first, from options that the command-line tool and the exporter
//! both fill in. Both load through [`crate::loader`] with what this returns,
//! so the same kernel paths are probed the same way wherever a tool runs.

pub mod biolatency;
pub mod fsslower;
pub mod gethostlatency;
pub mod runqlat;
pub mod tcplife;

/// What a plan needs besides its options: the struct offsets' source,
/// parsed once for every tool, as [`crate::btf::Btf::for_tool`] gives it
/// (`Err` says why the kernel has none; a `--btf` file the user got wrong
/// was refused before any plan).
pub type BtfSource<'a> = &'a Result<crate::btf::Btf, String>;

/// The reason a rung that needs struct offsets cannot be tried.
fn no_btf_reason(
    what: &str,
    btf: BtfSource<'_>,
    resolve: impl FnOnce(&crate::btf::Btf) -> anyhow::Result<()>,
) -> Option<String> {
    match btf {
        Ok(btf) => resolve(btf).err().map(|err| format!("{err:#}")),
        Err(err) => Some(err.clone()),
    }
    .map(|err| format!("no {what} offsets: {err}"))
}
