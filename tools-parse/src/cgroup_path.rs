//! Which container a cgroup v2 directory belongs to, from its path alone:
//! every runtime names the cgroup it makes after the container, with the
//! systemd driver (`docker-<id>.scope`) or the cgroupfs one
//! (`/docker/<id>`). What the container is called is found elsewhere (the
//! runtime's records on disk); this only says which runtime and which ID.

/// A container named by a cgroup path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    /// Who made it: `docker`, `containerd`, `cri-o`, `podman`, `kubernetes`
    /// (a kubelet's cgroupfs layout, which does not say which runtime),
    /// `machine` (systemd-machined: nspawn, libvirt) or `lxc`.
    pub runtime: &'static str,
    /// The runtime's ID: 64 hex digits, or a name (machines, LXC).
    pub id: String,
    /// The Kubernetes pod's UID, where the path holds it.
    pub pod_uid: Option<String>,
}

impl ContainerRef {
    /// The ID as `docker ps` and `podman ps` show it: 12 hex digits; a name whole.
    pub fn short_id(&self) -> &str {
        match is_hex_id(&self.id) {
            true => &self.id[..12],
            false => &self.id,
        }
    }
}

/// The container whose cgroup `path` (below the cgroup v2 mount, `/` first)
/// is or is below; None for a host process. The outermost container is the
/// one named: the host's runtime made it, while what looks like a container
/// below it may be any name its processes chose for a cgroup of their own.
pub fn container_of(path: &str) -> Option<ContainerRef> {
    let parts: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
    let mut pod_uid = None;
    for (i, part) in parts.iter().enumerate() {
        let parent = i.checked_sub(1).map(|p| parts[p]);
        if let Some(uid) = pod_uid_of(part) {
            pod_uid = Some(uid);
            continue;
        }
        if let Some((runtime, id)) = named_by(part, parent, pod_uid.is_some()) {
            return Some(ContainerRef { runtime, id, pod_uid });
        }
    }
    None
}

/// The runtime and ID a cgroup directory's name gives, if any. `parent` is
/// the directory above it; `in_pod` says a pod's directory is above it.
fn named_by(part: &str, parent: Option<&str>, in_pod: bool) -> Option<(&'static str, String)> {
    const SCOPES: [(&str, &str); 5] = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("nerdctl-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ];
    if let Some(scope) = part.strip_suffix(".scope") {
        for (prefix, runtime) in SCOPES {
            // `crio-conmon-<id>` and `libpod-conmon-<id>` are the runtimes' monitors, on the host.
            if let Some(id) = scope.strip_prefix(prefix).filter(|id| is_hex_id(id)) {
                return Some((runtime, id.to_owned()));
            }
        }
        if let Some(name) = scope.strip_prefix("machine-") {
            return Some(("machine", systemd_unescape(name)));
        }
        return None;
    }
    if let Some(name) = part.strip_prefix("lxc.payload.").filter(|name| !name.is_empty()) {
        return Some(("lxc", name.to_owned()));
    }
    match parent {
        // Podman's cgroupfs driver: /libpod_parent/libpod-<id>.
        Some("libpod_parent") => {
            part.strip_prefix("libpod-").filter(|id| is_hex_id(id)).map(|id| ("podman", id.to_owned()))
        }
        Some("docker") if is_hex_id(part) => Some(("docker", part.to_owned())),
        // LXC before 4.0: /lxc/<name>.
        Some("lxc") => Some(("lxc", part.to_owned())),
        // The kubelet's cgroupfs driver: /kubepods/<qos>/pod<uid>/<id>, or
        // with the runtime's prefix (CRI-O's crio-<id>, cri-dockerd's docker-<id>).
        _ if in_pod => {
            let prefixed = SCOPES.iter().find_map(|(prefix, runtime)| Some((*runtime, part.strip_prefix(prefix)?)));
            match prefixed.filter(|(_, id)| is_hex_id(id)) {
                Some((runtime, id)) => Some((runtime, id.to_owned())),
                None => is_hex_id(part).then(|| ("kubernetes", part.to_owned())),
            }
        }
        _ => None,
    }
}

/// The pod UID a kubelet's pod directory names: `pod<uid>` (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid with _ for ->.slice` (systemd).
fn pod_uid_of(part: &str) -> Option<String> {
    let uid = match part.strip_suffix(".slice") {
        Some(slice) if slice.starts_with("kubepods") => slice.rsplit_once("-pod")?.1.replace('_', "-"),
        Some(_) => return None,
        None => part.strip_prefix("pod")?.to_owned(),
    };
    let is_uid = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    is_uid.then_some(uid)
}

/// 64 lowercase hex digits: the IDs Docker, containerd, CRI-O and Podman give.
pub fn is_hex_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A systemd unit name's `\xNN` escapes undone (`qemu\x2d1` → `qemu-1`).
fn systemd_unescape(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 2..i + 4).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (&bytes[i..], hex) {
            ([b'\\', b'x', ..], Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";
    const UID: &str = "0b1e2d3c-4f5a-6b7c-8d9e-0f1a2b3c4d5e";

    fn of(path: &str) -> Option<(&'static str, String, Option<String>)> {
        container_of(path).map(|c| (c.runtime, c.id, c.pod_uid))
    }

    #[test]
    fn systemd_driver_scopes_name_their_runtime() {
        for (path, runtime) in [
            (format!("/system.slice/docker-{ID}.scope"), "docker"),
            (format!("/machine.slice/libpod-{ID}.scope"), "podman"),
            (format!("/machine.slice/libpod-{ID}.scope/container"), "podman"),
            (format!("/system.slice/crio-{ID}.scope"), "cri-o"),
        ] {
            assert_eq!(of(&path), Some((runtime, ID.to_owned(), None)), "{path}");
        }
    }

    #[test]
    fn kubelet_layouts_give_the_pod() {
        let uid_ = UID.replace('-', "_");
        let systemd = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(of(&systemd), Some(("containerd", ID.to_owned(), Some(UID.to_owned()))));
        let guaranteed = format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope");
        assert_eq!(of(&guaranteed), Some(("cri-o", ID.to_owned(), Some(UID.to_owned()))));
        let cgroupfs = format!("/kubepods/burstable/pod{UID}/{ID}");
        assert_eq!(of(&cgroupfs), Some(("kubernetes", ID.to_owned(), Some(UID.to_owned()))));
        let crio_cgroupfs = format!("/kubepods/besteffort/pod{UID}/crio-{ID}");
        assert_eq!(of(&crio_cgroupfs), Some(("cri-o", ID.to_owned(), Some(UID.to_owned()))));
    }

    #[test]
    fn cgroupfs_driver_and_other_managers() {
        assert_eq!(of(&format!("/docker/{ID}")), Some(("docker", ID.to_owned(), None)));
        assert_eq!(of(&format!("/libpod_parent/libpod-{ID}")), Some(("podman", ID.to_owned(), None)));
        assert_eq!(of(r"/machine.slice/machine-qemu\x2d1\x2dvm.scope"), Some(("machine", "qemu-1-vm".into(), None)));
        assert_eq!(of("/lxc.payload.web/init.scope"), Some(("lxc", "web".into(), None)));
        assert_eq!(of("/lxc/web"), Some(("lxc", "web".into(), None)));
    }

    #[test]
    fn host_cgroups_and_monitors_are_no_container() {
        for path in [
            "/".to_owned(),
            "/system.slice/cron.service".to_owned(),
            "/user.slice/user-0.slice/session-1.scope".to_owned(),
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            format!("/system.slice/crio-conmon-{ID}.scope"),
            format!("/system.slice/docker-{}.scope", &ID[..12]),
            format!("/{ID}"),
            "/kubepods.slice/kubepods-burstable.slice".to_owned(),
        ] {
            assert_eq!(of(&path), None, "{path}");
        }
    }

    #[test]
    fn the_outermost_container_is_named_and_ids_shorten_as_ps_shows_them() {
        // A container's processes may name a cgroup of their own after any other container.
        let other = "a".repeat(64);
        let nested = container_of(&format!("/system.slice/docker-{ID}.scope/docker/{other}")).unwrap();
        assert_eq!(nested.id, ID);
        assert_eq!(container_of(&format!("/docker/{ID}")).unwrap().short_id(), "3f2a1b0c9d8e");
        assert_eq!(container_of("/lxc.payload.web").unwrap().short_id(), "web");
    }
}
