//! Each tool's plan: from options that the command-line tool, the
//! exporter and the capture fill in alike, its kernel configuration, its
//! rungs best first, its map sizes and what it keeps doing once loaded.
//! All of them load a [`Plan`] the same way, so the same kernel paths are
//! probed the same way wherever a tool runs.

pub mod biolatency;
pub mod execsnoop;
pub mod fsslower;
pub mod gethostlatency;
pub mod runqlat;
pub mod tcplife;

use anyhow::Result;
use aya::Pod;

use crate::loader::{self, Build, Fill, Keeper, Load, LoadOptions, Loaded, Objects, Rung};

/// Everything a tool's load needs.
pub struct Plan<C> {
    /// The tool's two builds of its programs (`ebpf_object!`).
    pub objects: Objects,
    /// The build this kernel takes (see [`Build::choose`]).
    pub build: Build,
    pub config: C,
    /// Best first.
    pub rungs: Vec<Rung>,
    /// Sizes of the maps user space sets (unknown names are refused).
    pub map_sizes: Vec<(&'static str, u32)>,
    /// Fills maps before any program attaches (a filter's table).
    pub fill: Option<Fill<'static>>,
    /// What the tool keeps doing once loaded (gethostlatency's C libraries).
    pub keeper: Option<Box<dyn Keeper>>,
}

impl<C: Pod> Plan<C> {
    pub fn new(objects: Objects, build: Build, config: C, rungs: Vec<Rung>) -> Self {
        Plan { objects, build, config, rungs, map_sizes: Vec::new(), fill: None, keeper: None }
    }

    /// Loads through the ladder; the keeper, if any, goes with what is loaded.
    pub fn load(self, options: &LoadOptions) -> Result<Loaded> {
        let Plan { objects, build, config, rungs, map_sizes, fill, keeper } = self;
        let what = Load { objects, build, config: &config, max_entries: &map_sizes, rungs, fill };
        let mut loaded = loader::load(what, options)?;
        if let Some(mut keeper) = keeper {
            keeper.loaded(&mut loaded.ebpf, loaded.rung);
            loaded.keeper = Some(keeper);
        }
        Ok(loaded)
    }
}

/// Why a rung of the legacy build cannot serve a flag that needs the
/// current task (-c): its programs for Linux 4.4 cannot read it
/// (`bpf_get_current_task` is 4.8). None where the flag is not given or
/// the build is the modern one.
fn current_task_refused(build: Build, flag: Option<&str>) -> Option<String> {
    let flag = flag.filter(|_| build == Build::Legacy)?;
    Some(format!("{flag} reads the current task, which this rung's legacy build (for Linux 4.4) does not"))
}

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
