//! The Debian package (`cargo xtask deb`; `cargo xtask test` passes its path
//! in `EBPF_TOOLS_DEB`): installed with `dpkg -i` beside libbpf-tools, its
//! runqlat runs, its man pages are found, bash completes its flags, and it
//! purges without a trace.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

const PACKAGE: &str = "ebpf-tools";

/// Runs a command to completion: (success, stdout, stderr).
fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// dpkg, waiting while another dpkg or apt holds its lock (other work on a
/// shared machine may be installing something).
fn dpkg(args: &[&str]) -> (bool, String, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = run("dpkg", args);
        if out.0 || !out.2.contains("lock") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The package installed; purged when dropped, also when the test fails.
struct Installed;

impl Installed {
    fn new(deb: &str) -> Installed {
        let (ok, stdout, stderr) = dpkg(&["-i", deb]);
        assert!(ok, "dpkg -i {deb}:\n{stdout}{stderr}");
        Installed
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let (ok, stdout, stderr) = dpkg(&["--purge", PACKAGE]);
        if !std::thread::panicking() {
            assert!(ok, "dpkg --purge:\n{stdout}{stderr}");
        }
    }
}

#[test]
fn installs_beside_libbpf_tools_runs_is_documented_and_purges() {
    let deb = std::env::var("EBPF_TOOLS_DEB")
        .expect("EBPF_TOOLS_DEB names the package: run `cargo xtask test` (or `cargo xtask deb` and set it)");
    // The C tools of the same names stay where they are: no conflict.
    assert!(Path::new("/usr/sbin/runqlat").exists(), "libbpf-tools is installed (cargo xtask setup)");
    {
        let _installed = Installed::new(&deb);

        let (ok, version, _) = run("/usr/bin/runqlat", &["--version"]);
        assert!(ok && version.starts_with("runqlat 0.") && version.contains(" (commit "), "{version}");

        let (ok, page, stderr) = run("man", &["-w", "runqlat"]);
        assert!(ok, "man -w runqlat: {stderr}");
        // Another install (/usr/local) may come first in the search order.
        let (_, pages, _) = run("man", &["-aw", "runqlat"]);
        assert!(pages.lines().any(|p| p == "/usr/share/man/man8/runqlat.8.gz"), "{page}{pages}");
        // An alias's page is a link to ext4slower's (man names the target).
        let (ok, alias, _) = run("man", &["-aw", "xfsslower"]);
        assert!(ok && alias.lines().any(|p| p.starts_with("/usr/share/man/man8/")), "{alias}");
        let (ok, text, _) = run("man", &["-P", "cat", "/usr/share/man/man8/runqlat.8.gz"]);
        assert!(ok && text.contains("OVERHEAD") && text.contains("--pidnss"), "{text}");

        // What bash-completion loads when `runqlat --pi<TAB>` is typed.
        let script = "source /usr/share/bash-completion/completions/runqlat
            COMP_WORDS=(runqlat --pi); COMP_CWORD=1; COMP_LINE='runqlat --pi'; COMP_POINT=${#COMP_LINE}
            _runqlat runqlat --pi runqlat
            printf '%s\\n' \"${COMPREPLY[@]}\"";
        let (ok, completed, stderr) = run("bash", &["-c", script]);
        assert!(ok, "{stderr}");
        let mut completed: Vec<&str> = completed.lines().map(str::trim).collect();
        completed.sort();
        assert_eq!(completed, ["--pid", "--pidnss", "--pids"], "{stderr}");

        let (_, files, _) = run("dpkg", &["-L", PACKAGE]);
        for file in ["/usr/bin/ext4slower", "/usr/bin/xfsslower", "/usr/share/doc/ebpf-tools/copyright"] {
            assert!(files.lines().any(|l| l == file), "{file} not in the package:\n{files}");
        }
    }
    let (installed, _, _) = run("dpkg", &["-s", PACKAGE]);
    assert!(!installed, "still installed after the purge");
    assert!(!Path::new("/usr/bin/runqlat").exists());
    assert!(Path::new("/usr/sbin/runqlat").exists(), "libbpf-tools' runqlat is untouched");
}
