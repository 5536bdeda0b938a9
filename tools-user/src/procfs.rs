//! /proc (and /sys) readers, bounded: what processes exist, which files
//! they map, and the small files the tools size their tables from.

use std::{
    fs,
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{Context as _, Result};
pub use tools_parse::maps::{parse_maps, Mapped};

/// The most of a /proc file read: a process's maps run to a few hundred
/// KB at most; beyond this the rest is ignored.
const MAX_READ: u64 = 16 << 20;

/// Reads a /proc or /sys file, at most [`MAX_READ`] bytes.
pub fn read(path: &str) -> Result<String> {
    let mut text = String::new();
    fs::File::open(path)
        .with_context(|| format!("opening {path}"))?
        .take(MAX_READ)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {path}"))?;
    Ok(text)
}

/// The processes that exist now, as [`Pids::listing`] numbers them.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir(kernel_pids().listing()) else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// The files process `pid` (as [`Pids::listing`] numbers it) maps, each
/// once, whose name passes `wanted`.
pub fn mapped_files(pid: u32, wanted: impl Fn(&str) -> bool) -> Result<Vec<Mapped>> {
    let maps = read(&kernel_pids().listing().join(format!("{pid}/maps")).to_string_lossy())?;
    Ok(parse_maps(&maps, pid, wanted))
}

/// The inode of the initial PID namespace (the kernel's `PROC_PID_INIT_INO`,
/// fixed since Linux 3.8): the namespace of every PID the kernel programs
/// report (`bpf_get_current_pid_tgid`, a task's `tgid`).
const HOST_PID_NAMESPACE: u64 = 0xEFFF_FFFC;

const NO_HOST_PROC: &str =
    "the host's /proc is not here (run with --pid=host, or mount the host's /proc at /host/proc)";

/// Where the processes the kernel names by PID can be read: the kernel's
/// programs see the host's PID namespace, a tool run in a container may not.
pub struct Pids {
    /// This process's PID namespace (its inode).
    namespace: u64,
    /// A /proc of the host's PID namespace: `/proc` itself, else the
    /// host's, mounted below the host's root (`-v /:/host`) or at `/host/proc`.
    proc: Option<PathBuf>,
    /// `-p`'s PID, as given and as the host's, once translated.
    translated: OnceLock<(u32, u32)>,
}

/// How this process sees the kernel's PIDs, found once.
pub fn kernel_pids() -> &'static Pids {
    static PIDS: OnceLock<Pids> = OnceLock::new();
    PIDS.get_or_init(|| {
        let namespace_of = |path: &Path| fs::metadata(path).ok().map(|meta| meta.ino());
        let namespace = namespace_of(Path::new("/proc/self/ns/pid")).unwrap_or(HOST_PID_NAMESPACE);
        let proc = match namespace {
            HOST_PID_NAMESPACE => Some(PathBuf::from("/proc")),
            _ => [host_root().join("proc"), PathBuf::from("/host/proc")].into_iter().find(|proc| is_hosts(proc)),
        };
        Pids { namespace, proc, translated: Default::default() }
    })
}

/// Whether `proc` is a /proc of the host's PID namespace: only there is
/// PID 2 the kernel's thread maker, kthreadd, with no parent. (Its
/// `ns/pid` would say so at once, but reading that needs the right to
/// trace PID 1, which a confined host's init may refuse.)
fn is_hosts(proc: &Path) -> bool {
    let Ok(status) = read(&proc.join("2/status").to_string_lossy()) else { return false };
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    field("Name:") == Some("kthreadd") && field("PPid:") == Some("0")
}

impl Pids {
    /// The /proc that names processes by the kernel's PIDs, where there is one.
    pub fn proc(&self) -> Option<&Path> {
        self.proc.as_deref()
    }

    /// Where processes are listed (and their files found): the /proc of the
    /// kernel's PIDs, else this namespace's own, whose PIDs the kernel does
    /// not use but whose processes' files are the same.
    pub fn listing(&self) -> &Path {
        self.proc().unwrap_or(Path::new("/proc"))
    }

    /// The /proc directory of the kernel's PID `pid`: None where no /proc
    /// here names them (whether the process exists is not known).
    pub fn process(&self, pid: u32) -> Option<PathBuf> {
        Some(self.proc()?.join(pid.to_string()))
    }

    /// The name of the kernel's PID `pid` (/proc's `comm`, up to 15 bytes,
    /// without its newline); None if it is gone or no /proc names it. In
    /// one read: the exporter asks it for each series at each scrape.
    pub fn comm(&self, pid: u32) -> Option<Vec<u8>> {
        let mut buffer = [0u8; 64];
        let n = fs::File::open(self.process(pid)?.join("comm")).ok()?.read(&mut buffer).ok()?;
        let name = &buffer[..n];
        Some(name.strip_suffix(b"\n").unwrap_or(name).to_vec())
    }

    /// Whether the kernel's PID `pid` is a process (or thread) that exists
    /// now; true where that cannot be known, so that nothing of a living
    /// process is forgotten.
    pub fn exists(&self, pid: u64) -> bool {
        let Ok(pid) = u32::try_from(pid) else { return false };
        self.process(pid).is_none_or(|dir| dir.exists())
    }

    /// The host's PID of process `pid` as this tool's PID namespace numbers
    /// it (`-p` given inside a container): the process whose own namespace
    /// and TGID there are the same, found in the host's /proc. A thread's
    /// ID is refused: the kernel side matches processes.
    pub fn from_ours(&self, pid: u32) -> Result<u32, String> {
        let ours = Path::new("/proc").join(pid.to_string());
        let Ok(status) = read(&ours.join("status").to_string_lossy()) else {
            return Err(format!("no process with PID {pid}"));
        };
        let tgid = status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|t| t.trim().parse::<u32>().ok());
        if let Some(tgid) = tgid.filter(|&tgid| tgid != pid) {
            return Err(format!("{pid} is a thread of process {tgid}: -p takes a process"));
        }
        if self.namespace == HOST_PID_NAMESPACE {
            return Ok(pid);
        }
        let Some(host) = self.proc() else {
            return Err(format!(
                "PID {pid} is as this PID namespace (pid:[{}]) numbers it, the kernel numbers processes as the \
                 host does, and {NO_HOST_PROC} to translate it",
                self.namespace
            ));
        };
        // A process is its innermost PID namespace and its TGID there: the
        // TGID first (a plain read), the namespace (which needs the right to
        // trace the process) only where that matches.
        let innermost = |status: &str| -> Option<u32> {
            status.lines().find_map(|l| l.strip_prefix("NStgid:"))?.split_whitespace().last()?.parse().ok()
        };
        let namespace = |dir: &Path| fs::metadata(dir.join("ns/pid")).map(|meta| meta.ino());
        let wanted_tgid = innermost(&status).ok_or_else(|| format!("PID {pid}: no NStgid in its status"))?;
        let wanted_namespace = namespace(&ours).map_err(|err| format!("PID {pid}: its PID namespace: {err}"))?;
        let mut found = fs::read_dir(host).into_iter().flatten().filter_map(|entry| {
            let host_pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let dir = host.join(host_pid.to_string());
            let status = read(&dir.join("status").to_string_lossy()).ok()?;
            (innermost(&status)? == wanted_tgid && namespace(&dir).ok()? == wanted_namespace).then_some(host_pid)
        });
        let host_pid = found
            .next()
            .ok_or_else(|| format!("PID {pid} of pid:[{}] is not in {}", self.namespace, host.display()))?;
        let _ = self.translated.set((pid, host_pid));
        Ok(host_pid)
    }

    /// What to tell the user where the PIDs printed are not those of the
    /// tool's own PID namespace.
    pub fn note(&self) -> Option<String> {
        if self.namespace == HOST_PID_NAMESPACE {
            return None;
        }
        Some(match self.proc() {
            Some(host) => format!(
                "this tool runs in PID namespace pid:[{}]: the PIDs it prints are the host's (as {} shows them); {}",
                self.namespace,
                host.display(),
                match self.translated.get() {
                    Some((ours, host)) => format!("-p {ours} is the host's {host}"),
                    None => "-p, where a tool has it, takes this namespace's".to_owned(),
                }
            ),
            None => format!(
                "this tool runs in PID namespace pid:[{}]: the PIDs it prints are the host's, and {NO_HOST_PROC}",
                self.namespace
            ),
        })
    }
}

/// Where the host's files are, for a tool run from a container: `/proc/1/root`
/// when it can be read (the host's PID namespace, and no security module in
/// the way) and is not our own root, else `/host` where the host's root is
/// mounted there (`kubectl debug node/...` mounts it there; `docker run -v
/// /:/host` alike), else `/`.
pub fn host_root() -> PathBuf {
    let identity = |path: &str| fs::metadata(path).ok().map(|meta| (meta.dev(), meta.ino()));
    let ours = identity("/");
    if identity("/proc/1/root/").is_some_and(|init| Some(init) != ours) {
        return "/proc/1/root".into();
    }
    if fs::metadata("/host/sys/fs/cgroup").is_ok_and(|meta| meta.is_dir()) {
        return "/host".into();
    }
    "/".into()
}

#[cfg(test)]
mod tests {
    use std::os::unix::io::AsRawFd as _;

    use super::*;

    /// In the host's PID namespace (where the tests run) PIDs are taken as
    /// given and read from /proc, which is the host's.
    #[test]
    fn the_hosts_pids_are_taken_as_given() {
        let pids = kernel_pids();
        assert!(pids.note().is_none(), "the tests run in the host's PID namespace");
        assert!(is_hosts(Path::new("/proc")));
        assert_eq!(pids.from_ours(std::process::id()), Ok(std::process::id()));
        assert!(pids.exists(std::process::id().into()) && !pids.exists(u64::from(u32::MAX)));
    }

    /// A file this test maps twice (as a loader maps a library's segments)
    /// is named once, with its device and inode, and reachable through the
    /// process's root. Any Linux, any user: no library of the system.
    #[test]
    fn maps_of_a_process_name_each_file_once() {
        let path = std::env::temp_dir().join(format!("tools-user-procfs-test-{}", std::process::id()));
        fs::write(&path, [0u8; 4096]).unwrap();
        let path = path.canonicalize().unwrap();
        let file = fs::File::open(&path).unwrap();
        // Both at offset 0: the kernel never merges them into one mapping.
        // SAFETY: new private read-only mappings of a file we hold open.
        let map = || unsafe {
            libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0)
        };
        let mappings = [map(), map()];
        let name = path.to_str().unwrap().to_owned();
        let files = mapped_files(std::process::id(), |p| p == name);
        let reachable =
            files.as_ref().is_ok_and(|files| files.iter().all(|f| f.reachable(Path::new("/proc")).exists()));
        for mapping in mappings.into_iter().filter(|&m| m != libc::MAP_FAILED) {
            // SAFETY: a mapping made above, of that length.
            unsafe { libc::munmap(mapping, 4096) };
        }
        let meta = file.metadata().unwrap();
        let _ = fs::remove_file(&path);
        assert!(!mappings.contains(&libc::MAP_FAILED), "mmap: {}", std::io::Error::last_os_error());
        let files = files.unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!((files[0].path.as_str(), files[0].dev, files[0].ino), (name.as_str(), meta.dev(), meta.ino()));
        assert!(reachable, "not reachable through /proc/PID/root: {files:?}");
    }
}
