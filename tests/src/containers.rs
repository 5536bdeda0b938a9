//! Real containers for the `--containers` tests: Debian's Podman and runc,
//! with an image made here from the workload and the libraries it links
//! (`podman import`, no registry).
//!
//! Two settings of this kind of host are made for Podman in a
//! `containers.conf` of the tests' own (`CONTAINERS_CONF`): no default
//! ulimits (raising RLIMIT_NOFILE or NPROC may be forbidden), and the runc
//! runtime is passed on every command (crun refuses hybrid cgroups).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use crate::{read, workload_path};

/// The image every test container runs.
pub const IMAGE: &str = "localhost/ebpf-tools-test:latest";

/// A scratch directory of the container tests, made once per test run.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ebpf-tools-containers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

/// `podman --runtime runc` with the tests' containers.conf.
pub fn podman() -> Command {
    let conf = scratch().join("containers.conf");
    if !conf.exists() {
        std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").expect("containers.conf");
    }
    let mut command = Command::new("podman");
    command.env("CONTAINERS_CONF", conf).args(["--runtime", "runc"]);
    command
}

/// Runs a command to its end; its stdout, trimmed. Panics with its stderr if it fails.
pub fn run(mut command: Command) -> String {
    let out = command.stdin(Stdio::null()).output().unwrap_or_else(|err| panic!("{command:?}: {err}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{command:?}: {}\n{stderr}", out.status);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A root filesystem holding `/bin/workload` and the libraries it links,
/// made once; the image is imported from it once.
pub fn root_filesystem() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = scratch().join("rootfs");
        let workload = workload_path();
        std::fs::create_dir_all(root.join("bin")).expect("rootfs");
        std::fs::create_dir_all(root.join("tmp")).expect("rootfs");
        std::fs::copy(&workload, root.join("bin/workload")).expect("copy the workload");
        let mut ldd = Command::new("ldd");
        ldd.arg(&workload);
        for library in run(ldd).split_whitespace().filter(|word| word.starts_with('/')) {
            let inside = root.join(library.trim_start_matches('/'));
            std::fs::create_dir_all(inside.parent().unwrap()).expect("rootfs");
            std::fs::copy(library, &inside).unwrap_or_else(|err| panic!("copy {library}: {err}"));
        }
        let tarball = scratch().join("rootfs.tar");
        let mut tar = Command::new("tar");
        tar.arg("-C").arg(&root).arg("-cf").arg(&tarball).arg(".");
        run(tar);
        let mut import = podman();
        import.arg("import").arg(&tarball).arg(IMAGE);
        run(import);
        root
    })
}

/// The process that runs a container (`podman run`, `runc run`), holding
/// the workload's go byte; killed when dropped.
struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
    what: String,
}

impl Held {
    fn go(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.write_all(b"g").expect("start the container's workload");
        }
    }

    fn wait(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "container {} still running after {limit:?}", self.what);
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `pid` (a container's workload, as the host sees it) blocks
/// reading its go byte (see [`crate::Workload::wait_until_waiting`]).
fn wait_until_waiting(pid: u32, what: &str) {
    let path = format!("/proc/{pid}/syscall");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read(&path).starts_with("0 0x0 ") {
        assert!(Instant::now() < deadline, "container {what} never waited for its go byte");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A unique name for a test's container.
pub fn name(what: &str) -> String {
    format!("ebpf-tools-test-{what}-{}", std::process::id())
}

/// A workload in a Podman container, waiting for its go byte (see the
/// workload's own documentation); removed when dropped.
pub struct Container {
    pub name: String,
    pub id: String,
    held: Held,
}

impl Container {
    /// `podman run` of `/bin/workload ARGS` in the test image, with `extra`
    /// options (`--privileged`, `-v`).
    pub fn workload(name: &str, extra: &[&str], args: &[&str]) -> Container {
        root_filesystem();
        let _ = podman().args(["rm", "-f", name]).output();
        let mut command = podman();
        command.args(["run", "-i", "--name", name]).args(extra).args([IMAGE, "/bin/workload"]).args(args);
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("podman run");
        let stdin = child.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(60);
        let id = loop {
            let mut inspect = podman();
            inspect.args(["inspect", "--format", "{{.Id}} {{.State.Pid}}", name]);
            let out = inspect.output().expect("podman inspect");
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            match text.split_once(' ') {
                Some((id, pid)) if out.status.success() && pid != "0" => break id.to_owned(),
                _ => {}
            }
            assert!(Instant::now() < deadline, "container {name} did not start: {text}");
            thread::sleep(Duration::from_millis(100));
        };
        Container { name: name.to_owned(), id, held: Held { child, stdin, what: name.to_owned() } }
    }

    /// The host's PID of the container's first process.
    pub fn host_pid(&self) -> u32 {
        let mut inspect = podman();
        inspect.args(["inspect", "--format", "{{.State.Pid}}", &self.name]);
        run(inspect).parse().expect("a PID")
    }

    /// Waits until the workload blocks reading its go byte (see
    /// [`crate::Workload::wait_until_waiting`]).
    pub fn wait_until_waiting(&self) {
        wait_until_waiting(self.host_pid(), &self.name);
    }

    pub fn go(&mut self) {
        self.held.go();
    }

    /// Waits for the workload to end by itself.
    pub fn wait(&mut self, limit: Duration) {
        self.held.wait(limit);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
    }
}

/// A container run by `runc` alone from a bundle made here, as a kubelet's
/// containerd would lay it out: containerd's Kubernetes annotations and
/// the systemd driver's cgroup path of a best-effort pod. Deleted when dropped.
pub struct KubernetesContainer {
    pub id: String,
    bundle: PathBuf,
    /// The pod's slices runc made above the container's scope, innermost first.
    slices: Vec<String>,
    held: Held,
}

impl KubernetesContainer {
    /// Container `name` of pod `pod` in namespace `namespace`, running
    /// `/bin/workload ARGS`.
    pub fn start(pod: &str, namespace: &str, name: &str, args: &[&str]) -> KubernetesContainer {
        let rootfs = root_filesystem();
        let id = format!("{:0>64x}", std::process::id() as u64 * 0x9e37_79b9 + name.len() as u64);
        let pod_uid = format!("5e1f0c2a-7b3d-4c9e-8f60-{:012x}", std::process::id());
        let bundle = scratch().join(format!("bundle-{name}"));
        let _ = std::fs::remove_dir_all(&bundle);
        std::fs::create_dir_all(&bundle).expect("bundle");
        let mut spec = Command::new("runc");
        spec.args(["spec", "--bundle"]).arg(&bundle);
        run(spec);
        let mut config: serde_json::Value =
            serde_json::from_str(&read(bundle.join("config.json").to_str().unwrap())).expect("runc spec");
        let slice = format!("kubepods-besteffort-pod{}.slice", pod_uid.replace('-', "_"));
        config["root"] = serde_json::json!({ "path": rootfs, "readonly": true });
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = std::iter::once("/bin/workload").chain(args.iter().copied()).collect();
        config["process"].as_object_mut().unwrap().remove("rlimits");
        let slices = vec![
            format!("kubepods.slice/kubepods-besteffort.slice/{slice}"),
            "kubepods.slice/kubepods-besteffort.slice".to_owned(),
            "kubepods.slice".to_owned(),
        ];
        config["linux"]["cgroupsPath"] = format!("/{}/cri-containerd-{id}.scope", slices[0]).into();
        config["annotations"] = serde_json::json!({
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": name,
            "io.kubernetes.cri.sandbox-name": pod,
            "io.kubernetes.cri.sandbox-namespace": namespace,
        });
        std::fs::write(bundle.join("config.json"), config.to_string()).expect("config.json");
        let mut command = Command::new("runc");
        command.args(["run", "--bundle"]).arg(&bundle).arg(&id);
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("runc run");
        let stdin = child.stdin.take();
        let held = Held { child, stdin, what: name.to_owned() };
        let container = KubernetesContainer { id, bundle, slices, held };
        let deadline = Instant::now() + Duration::from_secs(30);
        while container.host_pid().is_none() {
            assert!(Instant::now() < deadline, "runc did not start {name}");
            thread::sleep(Duration::from_millis(50));
        }
        container
    }

    fn host_pid(&self) -> Option<u32> {
        let out = Command::new("runc").args(["state", &self.id]).output().ok()?;
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let pid = state["pid"].as_u64().filter(|&pid| pid > 0 && state["status"] == "running")?;
        Some(pid as u32)
    }

    pub fn wait_until_waiting(&self) {
        wait_until_waiting(self.host_pid().expect("running"), &self.id);
    }

    pub fn go(&mut self) {
        self.held.go();
    }

    pub fn wait(&mut self, limit: Duration) {
        self.held.wait(limit);
    }
}

impl Drop for KubernetesContainer {
    fn drop(&mut self) {
        let _ = Command::new("runc").args(["delete", "-f", &self.id]).output();
        let _ = std::fs::remove_dir_all(&self.bundle);
        // `runc run` removes the container's own cgroup as it exits.
        let _ = self.held.child.kill();
        let _ = self.held.child.wait();
        // runc leaves the pod's slices it made, in every hierarchy; the
        // outer ones go too where nothing else is in them.
        let hierarchies = std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten().map(|e| e.path());
        for hierarchy in hierarchies.chain([PathBuf::from("/sys/fs/cgroup")]) {
            for slice in &self.slices {
                let _ = std::fs::remove_dir(hierarchy.join(slice));
            }
        }
    }
}
