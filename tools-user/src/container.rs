//! `--containers`: which container a cgroup v2 directory belongs to, and
//! what it is called. No API server and no runtime socket: the cgroup's
//! path names the runtime and the container's ID (`tools_parse::cgroup_path`),
//! and the runtime's own records on disk name the rest: the OCI bundle's
//! `config.json` annotations (containerd's and CRI-O's Kubernetes names),
//! Docker's `config.v2.json`, containers/storage's `containers.json`
//! (Podman, CRI-O). Where none names it, the 12-digit ID stands for it, as
//! `docker ps` shows it.
//!
//! Run from a container, the host's files are read below the host's root
//! (see [`crate::procfs::host_root`]).

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    rc::Rc,
};

use anyhow::Result;
use serde_json::Value;

use crate::columns::{Cell, Column};
pub use tools_parse::cgroup_path::ContainerRef;

/// A container, as the tools print it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub reference: ContainerRef,
    /// Its name: the Kubernetes container name, or the runtime's
    /// (`docker ps`'s NAMES); None when no record names it.
    pub name: Option<String>,
    /// Kubernetes: the pod's name and namespace.
    pub pod: Option<String>,
    pub namespace: Option<String>,
}

impl Container {
    /// What the CONTAINER column and a histogram's heading show: its name,
    /// else its short ID.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.reference.short_id())
    }

    /// Its field `key` (one of [`FIELDS`]); None where unknown (a pod
    /// and namespace outside Kubernetes).
    pub fn field(&self, key: &str) -> Option<&str> {
        match key {
            "container" => Some(self.display_name()),
            "container_id" => Some(&self.reference.id),
            "runtime" => Some(self.reference.runtime),
            "pod" => self.pod.as_deref(),
            "namespace" => self.namespace.as_deref(),
            _ => None,
        }
    }

    /// Its JSON keys, those of [`FIELDS`] it has.
    pub fn json_fields(&self) -> Vec<(&'static str, Value)> {
        FIELDS.iter().filter_map(|key| Some((*key, self.field(key)?.into()))).collect()
    }
}

/// What the tools say of a container: `container` (its name, else its
/// short ID), `container_id`, `runtime`, `pod`, `namespace`.
pub const FIELDS: [&str; 5] = ["container", "container_id", "runtime", "pod", "namespace"];

/// Cgroups remembered, beyond which the cache starts again: cgroups and
/// containers come and go all day on a busy node.
const MAX_CACHED: usize = 16384;

/// The largest runtime record read (a bundle's config.json is a few KB;
/// containers.json grows with the containers a host has).
const MAX_RECORD: u64 = 16 << 20;

/// Cgroup v2 directories (by inode number, as the kernel side keys them)
/// to containers. The tree is looked at when the tools start, at every
/// [`Containers::look`] (once a second), and when an unknown cgroup is
/// asked for: a container is named while its cgroup exists, and stays
/// named after it is gone, for the samples read then.
pub struct Containers {
    root: PathBuf,
    /// Where the host's files are: `/`, or a container's view of them.
    host_root: PathBuf,
    by_cgroup: HashMap<u64, Option<Rc<Container>>>,
    by_id: HashMap<String, Rc<Container>>,
    /// The cgroups there were at the last look.
    present: HashSet<u64>,
    /// Cgroups asked for and not found by a look at once: gone, and not looked for again.
    missed: HashSet<u64>,
}

impl Containers {
    pub fn new() -> Result<Containers> {
        let root = crate::cgroup::v2_root()?;
        let host_root = crate::procfs::host_root();
        let mut containers = Containers {
            root,
            host_root,
            by_cgroup: HashMap::new(),
            by_id: HashMap::new(),
            present: HashSet::new(),
            missed: HashSet::new(),
        };
        containers.look();
        Ok(containers)
    }

    /// Walks the cgroup tree and names the containers of directories not
    /// seen before.
    pub fn look(&mut self) {
        // The kernel side keys cgroups by the low 32 bits of their inode number.
        let directories: HashMap<u64, PathBuf> =
            crate::cgroup::directories(&self.root).into_iter().map(|(ino, path)| (ino & 0xffff_ffff, path)).collect();
        if self.by_cgroup.len() > MAX_CACHED {
            // Keeps the bound: what is gone is forgotten.
            self.by_cgroup.retain(|ino, _| directories.contains_key(ino));
            self.by_id.retain(|_, container| Rc::strong_count(container) > 1);
        }
        if self.missed.len() > MAX_CACHED {
            self.missed.clear();
        }
        self.present = directories.keys().copied().collect();
        for (ino, path) in directories {
            // A container its runtime had not named yet (its records were
            // being written) is looked up again.
            let named = |seen: &Option<Rc<Container>>| seen.as_ref().is_none_or(|c| c.name.is_some());
            if self.by_cgroup.get(&ino).is_some_and(named) {
                continue;
            }
            let Ok(below) = path.strip_prefix(&self.root) else { continue };
            let path = format!("/{}", below.to_string_lossy());
            let container = tools_parse::cgroup_path::container_of(&path).map(|reference| self.describe(reference));
            self.by_cgroup.insert(ino, container);
        }
    }

    /// The container of cgroup `ino`: None for a host process; Err for a
    /// cgroup removed before it was seen.
    pub fn of_cgroup(&mut self, ino: u64) -> Result<Option<Rc<Container>>, Removed> {
        let ino = ino & 0xffff_ffff;
        if !self.by_cgroup.contains_key(&ino) && !self.missed.contains(&ino) {
            self.look();
            if !self.by_cgroup.contains_key(&ino) {
                self.missed.insert(ino);
            }
        }
        self.by_cgroup.get(&ino).cloned().ok_or(Removed)
    }

    /// Whether cgroup `ino` was there at the last look.
    pub fn exists(&self, ino: u64) -> bool {
        self.present.contains(&(ino & 0xffff_ffff))
    }

    fn describe(&mut self, reference: ContainerRef) -> Rc<Container> {
        if let Some(known) = self.by_id.get(&reference.id) {
            return known.clone();
        }
        let container = Rc::new(names_on_disk(&self.host_root, reference));
        if container.name.is_some() {
            self.by_id.insert(container.reference.id.clone(), container.clone());
        }
        container
    }
}

/// A cgroup removed before it was seen: which container it was of cannot be known.
#[derive(Debug)]
pub struct Removed;

/// What an event's cgroup says of its container.
#[derive(Clone)]
enum Seen {
    Host,
    In(Rc<Container>),
    /// The cgroup went before it was seen.
    Removed,
    /// The kernel side could not read it (0), or tcplife's session had no owner.
    Unread,
}

/// `--containers` on an event tool: its columns, placed after the command
/// name (COMM). In text and CSV `CONTAINER`: the
/// container's name or short ID, `-` (empty in CSV) for a host process,
/// `?` for a cgroup gone before it was seen or not read. In JSON `container` (null for
/// a host process), `container_id`, `runtime`, and `pod` and `namespace`
/// where known; `cgroup_removed: true` for the unknown. `cgroup` is the
/// event's cgroup field.
pub fn add_columns<'a, E: 'a>(columns: &mut Vec<Column<'a, E>>, cgroup: fn(&E) -> u32) -> Result<()> {
    let containers = RefCell::new(Containers::new()?);
    // Each column asks for the event's container: one lookup per cgroup in a row.
    let last: RefCell<Option<(u32, Seen)>> = RefCell::new(None);
    let seen = Rc::new(move |event: &E| -> Seen {
        let ino = cgroup(event);
        if let Some((_, seen)) = last.borrow().as_ref().filter(|(last, _)| *last == ino) {
            return seen.clone();
        }
        let seen = match ino {
            0 => Seen::Unread,
            ino => match containers.borrow_mut().of_cgroup(ino.into()) {
                Ok(Some(container)) => Seen::In(container),
                Ok(None) => Seen::Host,
                Err(Removed) => Seen::Removed,
            },
        };
        *last.borrow_mut() = Some((ino, seen.clone()));
        seen
    });
    let column = |value: Box<dyn Fn(Seen) -> Cell<'static>>| {
        let seen = seen.clone();
        Column::new(move |event: &E| value(seen(event)))
    };
    let mut added = vec![column(Box::new(|seen| match seen {
        Seen::In(container) => Cell::Untrusted(container.display_name().to_owned()),
        Seen::Host => Cell::Unknown,
        Seen::Removed | Seen::Unread => Cell::Text("?".into()),
    }))
    .text_csv("CONTAINER", 16)];
    // JSON: the container's own fields; `container: null` for the rest.
    for key in FIELDS {
        added.push(
            column(Box::new(move |seen| match seen {
                Seen::In(container) => container
                    .json_fields()
                    .into_iter()
                    .find(|(k, _)| *k == key)
                    .map_or(Cell::Absent, |(_, v)| Cell::Json(v)),
                _ if key == "container" => Cell::Json(Value::Null),
                _ => Cell::Absent,
            }))
            .json(key),
        );
    }
    added.push(
        column(Box::new(|seen| match seen {
            Seen::Removed => Cell::Bool(true),
            _ => Cell::Absent,
        }))
        .json("cgroup_removed"),
    );
    let after_command = columns.iter().position(|c| c.text.as_ref().is_some_and(|t| t.header == "COMM"));
    let at = after_command.map_or(columns.len(), |i| i + 1);
    columns.splice(at..at, added);
    Ok(())
}

/// Histograms per container (`runqlat --containers`): cgroup keys
/// grouped by the container they belong to, each group a key of its own,
/// in the order first seen. Key 0 is every host process; key 1 every
/// cgroup removed before it could be looked at.
pub struct Groups {
    containers: Containers,
    keys: HashMap<String, u64>,
    groups: Vec<Rc<Container>>,
}

impl Groups {
    const HOST: u64 = 0;
    const REMOVED: u64 = 1;

    pub fn new() -> Result<Groups> {
        Ok(Groups { containers: Containers::new()?, keys: HashMap::new(), groups: Vec::new() })
    }

    /// The group of cgroup `ino`.
    pub fn of_cgroup(&mut self, ino: u64) -> u64 {
        let container = match self.containers.of_cgroup(ino) {
            Ok(Some(container)) => container,
            Ok(None) => return Self::HOST,
            Err(Removed) => return Self::REMOVED,
        };
        let next = self.groups.len() as u64 + 2;
        let key = *self.keys.entry(container.reference.id.clone()).or_insert(next);
        if key == next {
            self.groups.push(container);
        }
        key
    }

    /// The group's fields: its container's ([`Container::json_fields`]),
    /// or `container: null` for the host's processes (and `cgroup_removed:
    /// true` for cgroups gone unnamed).
    pub fn fields(&self, key: u64) -> Vec<(&'static str, Value)> {
        match key {
            Self::HOST => vec![("container", Value::Null)],
            Self::REMOVED => vec![("container", Value::Null), ("cgroup_removed", true.into())],
            _ => self.groups[(key - 2) as usize].json_fields(),
        }
    }

    /// See [`Containers::look`].
    pub fn look(&mut self) {
        self.containers.look();
    }

    /// See [`Containers::exists`].
    pub fn cgroup_exists(&self, ino: u64) -> bool {
        self.containers.exists(ino)
    }
}

/// The names the runtime's records give `reference`, read from the host's files.
fn names_on_disk(root: &Path, reference: ContainerRef) -> Container {
    let mut container = Container { name: None, pod: None, namespace: None, reference };
    if !tools_parse::cgroup_path::is_hex_id(&container.reference.id) {
        // Machines and LXC containers are named by their cgroup.
        container.name = Some(container.reference.id.clone());
        return container;
    }
    let id = container.reference.id.clone();
    if let Some(annotations) = bundle_config(root, &id).as_ref().and_then(|config| config.get("annotations")) {
        let annotation = |keys: &[&str]| keys.iter().find_map(|key| annotations.get(*key)?.as_str().map(str::to_owned));
        container.pod = annotation(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]);
        container.namespace = annotation(&["io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"]);
        container.name =
            annotation(&["io.kubernetes.cri.container-name", "io.kubernetes.container.name", "nerdctl/name"]);
        let sandbox = annotation(&["io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType"]);
        if container.name.is_none() && sandbox.as_deref() == Some("sandbox") {
            // The pod's own (pause) container, as the kubelet names it.
            container.name = Some("POD".into());
        }
    }
    if container.name.is_none() {
        container.name = docker_name(root, &id).or_else(|| storage_name(root, &id));
    }
    container
}

/// The OCI bundle's `config.json` of container `id`: where containerd,
/// CRI-O and Podman keep it, or where runc's state (`runc run`, Docker's
/// and containerd's runc roots) says the bundle is.
fn bundle_config(root: &Path, id: &str) -> Option<Value> {
    let mut candidates: Vec<PathBuf> =
        ["run/containers/storage/overlay-containers", "var/lib/containers/storage/overlay-containers"]
            .iter()
            .map(|dir| root.join(dir).join(id).join("userdata/config.json"))
            .collect();
    // containerd: one directory per namespace (k8s.io, moby, default).
    candidates.extend(
        subdirectories(&root.join("run/containerd/io.containerd.runtime.v2.task"))
            .map(|ns| ns.join(id).join("config.json")),
    );
    let runc_roots = ["run/runc", "run/docker/runtime-runc/moby"].map(|dir| root.join(dir));
    let containerd_runc = subdirectories(&root.join("run/containerd/runc"));
    for state in runc_roots.into_iter().chain(containerd_runc).map(|dir| dir.join(id).join("state.json")) {
        let Some(state) = read_json(&state) else { continue };
        let labels = state.pointer("/config/labels").and_then(Value::as_array).into_iter().flatten();
        let bundle = labels.filter_map(Value::as_str).find_map(|label| label.strip_prefix("bundle="));
        // The bundle path is the host's: it is read below the host's root too.
        if let Some(bundle) = bundle {
            candidates.push(root.join(bundle.trim_start_matches('/')).join("config.json"));
        }
    }
    candidates.iter().find_map(|path| read_json(path))
}

/// Docker's name for container `id` (`/web` → `web`).
fn docker_name(root: &Path, id: &str) -> Option<String> {
    let config = read_json(&root.join("var/lib/docker/containers").join(id).join("config.v2.json"))?;
    Some(config.get("Name")?.as_str()?.trim_start_matches('/').to_owned())
}

/// The name containers/storage records for container `id` (Podman's, rootful).
fn storage_name(root: &Path, id: &str) -> Option<String> {
    ["var/lib/containers/storage", "run/containers/storage"].iter().find_map(|dir| {
        let list = read_json(&root.join(dir).join("overlay-containers/containers.json"))?;
        let entry = list.as_array()?.iter().find(|entry| entry.get("id").and_then(Value::as_str) == Some(id))?;
        Some(entry.get("names")?.as_array()?.first()?.as_str()?.to_owned())
    })
}

fn subdirectories(dir: &Path) -> impl Iterator<Item = PathBuf> {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries.filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir())).map(|entry| entry.path())
}

/// A runtime's JSON record, at most [`MAX_RECORD`] bytes; None when it is
/// missing, larger or not JSON (records are written while containers
/// start: a half-written one names nothing yet).
fn read_json(path: &Path) -> Option<Value> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).ok()?;
    let mut text = Vec::new();
    file.take(MAX_RECORD + 1).read_to_end(&mut text).ok()?;
    if text.len() as u64 > MAX_RECORD {
        return None;
    }
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

    fn reference(runtime: &'static str) -> ContainerRef {
        ContainerRef { runtime, id: ID.into(), pod_uid: None }
    }

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("containers-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn containerd_annotations_name_pod_namespace_and_container() {
        let root = scratch("containerd");
        let annotations = r#"{"annotations": {"io.kubernetes.cri.container-name": "app",
            "io.kubernetes.cri.sandbox-name": "web-7d9f", "io.kubernetes.cri.sandbox-namespace": "prod"}}"#;
        write(&root, &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"), annotations);
        let container = names_on_disk(&root, reference("containerd"));
        assert_eq!(
            (container.name.as_deref(), container.pod.as_deref(), container.namespace.as_deref()),
            (Some("app"), Some("web-7d9f"), Some("prod"))
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn runc_state_leads_to_the_bundle_and_docker_and_podman_records_name_theirs() {
        let root = scratch("records");
        let state = r#"{"config": {"labels": ["bundle=/srv/bundle"]}}"#;
        write(&root, &format!("run/runc/{ID}/state.json"), state);
        write(
            &root,
            "srv/bundle/config.json",
            r#"{"annotations": {"io.kubernetes.pod.name": "db-0",
            "io.kubernetes.pod.namespace": "data", "io.kubernetes.container.name": "postgres"}}"#,
        );
        let container = names_on_disk(&root, reference("cri-o"));
        assert_eq!((container.name.as_deref(), container.pod.as_deref()), (Some("postgres"), Some("db-0")));
        std::fs::remove_dir_all(&root).unwrap();

        let root = scratch("docker");
        write(&root, &format!("var/lib/docker/containers/{ID}/config.v2.json"), r#"{"Name": "/web"}"#);
        assert_eq!(names_on_disk(&root, reference("docker")).display_name(), "web");
        let list =
            format!(r#"[{{"id": "{}", "names": ["other"]}}, {{"id": "{ID}", "names": ["cache"]}}]"#, "b".repeat(64));
        write(&root, "var/lib/containers/storage/overlay-containers/containers.json", &list);
        let podman = names_on_disk(&root, reference("podman"));
        assert_eq!(podman.display_name(), "web", "the first record that names it");
        std::fs::remove_dir_all(root.join("var/lib/docker")).unwrap();
        assert_eq!(names_on_disk(&root, reference("podman")).display_name(), "cache");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn unnamed_containers_show_their_short_id_and_half_written_records_name_nothing() {
        let root = scratch("unnamed");
        write(&root, &format!("var/lib/docker/containers/{ID}/config.v2.json"), r#"{"Name": "/we"#);
        let container = names_on_disk(&root, reference("docker"));
        assert_eq!(container.display_name(), "3f2a1b0c9d8e");
        let keys: Vec<&str> = container.json_fields().iter().map(|(key, _)| *key).collect();
        assert_eq!(keys, ["container", "container_id", "runtime"]);
        std::fs::remove_dir_all(root).unwrap();
    }
}
