//! `--containers`: samples of processes in real containers (Podman's, and a
//! bundle run by runc as a kubelet's containerd lays it out) attributed to
//! those containers by name, pod and namespace; the host's own processes
//! to none; and the static tool run from inside a privileged container.

use std::time::Duration;

use integration_tests::{
    containers::{self, Container, KubernetesContainer},
    json_lines, serial, tool_path, LoopDevice, Lost, Mounted, Running, Workload,
};
use serde_json::Value;

const RUNQLAT_READY: &str = "Tracing run queue latency... Hit Ctrl-C to end.";

/// The samples of each histogram record, by the record's key.
fn counts_by_key(stdout: &str) -> Vec<(Value, u64)> {
    let records = json_lines(stdout);
    let histograms = records.iter().filter(|record| record["type"] == "histogram");
    histograms.map(|record| (record["key"].clone(), record["count"].as_u64().expect("a count"))).collect()
}

/// The samples counted under the container named `name`.
fn count_of(counts: &[(Value, u64)], name: &str) -> u64 {
    counts.iter().filter(|(key, _)| key["container"] == name).map(|(_, count)| count).sum()
}

#[test]
fn runqlat_gives_each_container_the_wakeups_it_made_and_the_host_its_own() {
    let _serial = serial();
    // Each sleeper wakes once per sleep: 200, 400 and 150 times.
    let sleeps = |n: u32| ["sleep", "1", &n.to_string(), "1"].map(str::to_owned);
    let (name_a, name_b) = (containers::name("a"), containers::name("b"));
    let mut a = Container::workload(&name_a, &[], &sleeps(200).each_ref().map(String::as_str));
    let mut b = Container::workload(&name_b, &[], &sleeps(400).each_ref().map(String::as_str));
    let mut host = Workload::new(&sleeps(150).each_ref().map(String::as_str));
    a.wait_until_waiting();
    b.wait_until_waiting();
    host.wait_until_waiting();
    let tool = Running::start("runqlat", &["--containers", "--json"], RUNQLAT_READY);
    a.go();
    b.go();
    host.go();
    a.wait(Duration::from_secs(60));
    b.wait(Duration::from_secs(60));
    host.wait(Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    let out = tool.interrupt();
    out.assert_complete("runqlat");
    let counts = counts_by_key(&out.stdout);
    for (name, container, made) in [(&name_a, &a, 200), (&name_b, &b, 400)] {
        let count = count_of(&counts, name);
        assert!((made..=made + made / 5).contains(&count), "{name}: {count} samples for {made} wakeups: {counts:?}");
        let key = &counts.iter().find(|(key, _)| key["container"] == name.as_str()).unwrap().0;
        assert_eq!(
            (key["container_id"].as_str(), key["runtime"].as_str()),
            (Some(container.id.as_str()), Some("podman"))
        );
    }
    // The host's sleeper is among the host's processes: at least its wakeups are there.
    let host_count: u64 = counts.iter().filter(|(key, _)| key["container"].is_null()).map(|(_, n)| n).sum();
    assert!(host_count >= 150, "the host's processes: {host_count} samples: {counts:?}");
}

#[test]
fn a_kubelet_layout_is_named_by_pod_namespace_and_container_on_each_rung() {
    let _serial = serial();
    // The tracepoint rung knows the task's cgroup only at its next switch-out.
    for rung in ["raw_tracepoint", "tracepoint"] {
        let mut app = KubernetesContainer::start("web-7d9f", "prod", "app", &["sleep", "1", "100", "1"]);
        app.wait_until_waiting();
        let tool = Running::start("runqlat", &["--containers", "--json", "--rung", rung], RUNQLAT_READY);
        app.go();
        app.wait(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(300));
        let out = tool.interrupt();
        out.assert_complete("runqlat");
        let counts = counts_by_key(&out.stdout);
        let found = counts.iter().find(|(key, _)| key["container"] == "app");
        let (key, count) = found.unwrap_or_else(|| panic!("{rung}: {counts:?}"));
        assert_eq!((key["pod"].as_str(), key["namespace"].as_str()), (Some("web-7d9f"), Some("prod")), "{key}");
        assert_eq!(
            (key["container_id"].as_str(), key["runtime"].as_str()),
            (Some(app.id.as_str()), Some("containerd"))
        );
        assert!((100..=120).contains(count), "{rung}: {count} samples for 100 wakeups");
    }
}

#[test]
fn runqlat_from_a_privileged_container_names_the_hosts_containers() {
    let _serial = serial();
    let name = containers::name("watched");
    let mut watched = Container::workload(&name, &[], &["sleep", "1", "100000", "2"]);
    watched.go();
    // As `kubectl debug node/...` runs a debug container: the host's root at /host.
    let runqlat = format!("{}:/bin/runqlat:ro", tool_path("runqlat").display());
    let mut command = containers::podman();
    command.args(["run", "--rm", "--privileged", "--pid=host", "-v", "/sys:/sys", "-v", "/:/host:ro", "-v", &runqlat]);
    command.args([containers::IMAGE, "/bin/runqlat", "--containers", "--json", "2", "1"]);
    let stdout = containers::run(command);
    let counts = counts_by_key(&stdout);
    let count = count_of(&counts, &name);
    assert!(count > 100, "{name} woke every 2 ms for 2 s: {count} samples: {counts:?}");
}

/// Runs `tool --containers --json ARGS` while `container`'s workload runs
/// to its end; the tool's records.
fn records_around(tool: &str, args: &[&str], ready: &str, container: &mut Container) -> Vec<Value> {
    container.wait_until_waiting();
    let args: Vec<&str> = ["--containers", "--json"].iter().chain(args).copied().collect();
    let running = Running::start(tool, &args, ready);
    container.go();
    container.wait(Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let out = running.interrupt();
    out.assert_complete(tool);
    json_lines(&out.stdout)
}

/// The records of container `container`, checked to name it whole.
fn of_container<'a>(records: &'a [Value], container: &Container) -> Vec<&'a Value> {
    let of: Vec<&Value> = records.iter().filter(|r| r["container"] == container.name.as_str()).collect();
    for record in &of {
        assert_eq!(
            (record["container_id"].as_str(), record["runtime"].as_str()),
            (Some(container.id.as_str()), Some("podman"))
        );
    }
    of
}

#[test]
fn execsnoop_names_the_container_of_each_exec_and_none_for_the_host() {
    let _serial = serial();
    let name = containers::name("exec");
    let args = ["execveat", "/bin/workload", "sleep", "0", "1", "1"];
    let mut container = Container::workload(&name, &[], &args);
    container.wait_until_waiting();
    let tool = Running::start("execsnoop", &["--containers", "--json"], "Tracing exec()s");
    container.go();
    container.wait(Duration::from_secs(60));
    let host_exec = std::process::Command::new("/bin/true").status().expect("/bin/true");
    assert!(host_exec.success());
    std::thread::sleep(Duration::from_millis(500));
    let out = tool.interrupt();
    out.assert_complete("execsnoop");
    let records = json_lines(&out.stdout);
    let of = of_container(&records, &container);
    assert!(
        of.iter().any(|r| r["args"] == serde_json::json!(["/bin/workload", "sleep", "0", "1", "1"])),
        "{records:?}"
    );
    let host = records.iter().find(|r| r["args"] == serde_json::json!(["/bin/true"])).expect("the host's exec");
    assert_eq!(host["container"], Value::Null, "{host}");
    assert!(host.get("container_id").is_none(), "{host}");

    // Text: the CONTAINER column after COMM, the name in it.
    let mut container = Container::workload(&name, &[], &args);
    container.wait_until_waiting();
    let tool = Running::start("execsnoop", &["--containers"], "COMM");
    container.go();
    container.wait(Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let out = tool.interrupt();
    let header = out.stdout.lines().next().unwrap_or_default();
    assert!(header.starts_with("COMM             CONTAINER        PID"), "{header}");
    let row = out
        .stdout
        .lines()
        .find(|l| l.contains("/bin/workload sleep 0 1 1"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert_eq!(row.split_whitespace().nth(1), Some(name.as_str()), "{row}");
}

#[test]
fn ext4slower_names_the_container_of_each_operation() {
    let _serial = serial();
    let mount = Mounted::new("ext4");
    let volume = format!("{}:/data", mount.dir.display());
    let mut container =
        Container::workload(&containers::name("files"), &["-v", &volume], &["file-ops", "/data/f", "4096", "0"]);
    let records =
        records_around("ext4slower", &["--allow-syscall-rung", "0"], "Tracing ext4 operations", &mut container);
    let ops: Vec<&str> = of_container(&records, &container).iter().filter_map(|r| r["op"].as_str()).collect();
    for op in ["write", "read", "fsync", "open"] {
        assert!(ops.contains(&op), "{op} in {ops:?}: {records:?}");
    }
}

#[test]
fn tcplife_names_the_container_of_each_end() {
    let _serial = serial();
    // A network namespace of the session's own: the container must be privileged.
    let args = ["tcp-session", "4", "100", "200", "client", "tl-client", "tl-server"];
    let mut container = Container::workload(&containers::name("tcp"), &["--privileged"], &args);
    let records = records_around("tcplife", &[], "Tracing TCP sessions", &mut container);
    let comms: Vec<&str> = of_container(&records, &container).iter().filter_map(|r| r["comm"].as_str()).collect();
    assert!(comms.contains(&"tl-client") && comms.contains(&"tl-server"), "{records:?}");
}

#[test]
fn gethostlatency_names_the_container_of_each_lookup() {
    let _serial = serial();
    // Namespaces of the resolver's own (its DNS server, /etc/hosts): privileged.
    let args = ["resolve", "20", "-", "getaddrinfo:in-a-container.test"];
    let mut container = Container::workload(&containers::name("dns"), &["--privileged"], &args);
    let records = records_around("gethostlatency", &[], "Tracing host name lookups", &mut container);
    let hosts: Vec<&str> = of_container(&records, &container).iter().filter_map(|r| r["host"].as_str()).collect();
    assert_eq!(hosts, ["in-a-container.test"], "{records:?}");
}

#[test]
fn biolatency_gives_each_container_the_reads_it_issued_on_each_rung() {
    let _serial = serial();
    let dev = LoopDevice::new();
    let device = format!("{}:/dev/traced", dev.path);
    let args = ["direct-reads", "/dev/traced", "200"];
    let mut container = Container::workload(&containers::name("reads"), &["--device", &device], &args);
    container.wait_until_waiting();
    // Each rung that reads the starting task, at once, around the same I/O
    // (and -Q, whose start is the first of insertion and issue).
    let rungs = [&[][..], &["--rung", "tracepoint"], &["--config-map"], &["-Q"]];
    let running: Vec<Running> = rungs
        .iter()
        .map(|rung| {
            let args: Vec<&str> = ["--containers", "--json", "-d", dev.name()].iter().chain(*rung).copied().collect();
            Running::start("biolatency", &args, "Tracing block device I/O")
        })
        .collect();
    container.go();
    container.wait(Duration::from_secs(60));
    dev.direct_io(0, 50);
    for (rung, running) in rungs.iter().zip(running) {
        let out = running.interrupt();
        out.assert_complete("biolatency");
        let counts = counts_by_key(&out.stdout);
        let host: u64 = counts.iter().filter(|(key, _)| key["container"].is_null()).map(|(_, count)| count).sum();
        let of_container = count_of(&counts, &container.name);
        // Exact, but for runs the kernel skipped (four tools' programs nest on
        // one CPU at times), which are counted as lost.
        let lost = Lost::from_stderr("biolatency", &out.stderr);
        lost.assert_accounts_for(of_container + host, 250, &format!("{rung:?}: {counts:?}"));
        assert!(of_container <= 200 && of_container + lost.total >= 200, "{rung:?}: {counts:?}, {lost:?}");
        assert!(host <= 50 && host + lost.total >= 50, "{rung:?}: {counts:?}, {lost:?}");
    }
}

#[test]
fn runqlat_in_a_private_pid_namespace_takes_its_pids_and_says_whose_it_prints() {
    let _serial = serial();
    let runqlat = format!("{}:/bin/runqlat:ro", tool_path("runqlat").display());
    // The workload is the container's PID 1; the host's root (and /proc) at /host.
    let extra = ["--privileged", "-v", "/sys:/sys", "-v", "/:/host:ro", "-v", &runqlat];
    let mut container = Container::workload(&containers::name("pidns"), &extra, &["sleep", "0", "100000", "2"]);
    container.go();
    let mut exec = containers::podman();
    exec.args(["exec", &container.name, "/bin/runqlat", "-P", "-p", "1", "--json", "2", "1"]);
    let out = exec.output().expect("podman exec");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let host_pid = container.host_pid();
    let said = format!("the PIDs it prints are the host's (as /host/proc shows them); -p 1 is the host's {host_pid}");
    assert!(stderr.contains(&said), "{stderr}");
    // -P keys by the host's PID: the workload's, and only its.
    let counts = counts_by_key(&stdout);
    assert!(counts.iter().all(|(key, _)| key["pid"] == host_pid), "{counts:?}");
    let count: u64 = counts.iter().map(|(_, count)| count).sum();
    assert!(count > 100, "PID 1 of the container woke every 2 ms for 2 s: {count} samples\n{stdout}");

    // Without the host's /proc, its PIDs cannot be told: refused, saying why.
    let mut alone = containers::podman();
    alone.args(["run", "--rm", "--privileged", "-v", &runqlat, containers::IMAGE, "/bin/runqlat", "-p", "1", "1", "1"]);
    let out = alone.output().expect("podman run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("as this PID namespace (pid:[") && stderr.contains("--pid=host"), "{stderr}");
}
