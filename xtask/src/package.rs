//! `cargo xtask install` and `cargo xtask deb`: the static binaries with
//! their man pages and shell completions, under a prefix or in a Debian
//! package. Pages and completions come from the binaries themselves
//! (`--generate man|bash|zsh|fish`, see tools-user's `manual.rs`), so what
//! is installed is what was built.

use std::{
    fs,
    io::Write as _,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::{arch::Arch, run, workspace, Built};

/// Where things go under a prefix, which differs between a local install
/// and a distribution's package.
struct Layout {
    /// Man pages gzipped (Debian policy), or plain.
    gzip_man: bool,
    /// zsh's directory under the prefix: site-functions for local
    /// installs, Debian's vendor-completions for packages.
    zsh: &'static str,
    /// Binaries stripped of their symbol tables and compiler notes (as
    /// dh_strip does).
    strip: bool,
}

const LOCAL: Layout = Layout { gzip_man: false, zsh: "share/zsh/site-functions", strip: false };
const DEBIAN: Layout = Layout { gzip_man: true, zsh: "share/zsh/vendor-completions", strip: true };

impl Layout {
    /// Where `shell` looks for the completions of command `name`.
    fn completion(&self, shell: &str, name: &str) -> String {
        match shell {
            "bash" => format!("share/bash-completion/completions/{name}"),
            "zsh" => format!("{}/_{name}", self.zsh),
            "fish" => format!("share/fish/vendor_completions.d/{name}.fish"),
            _ => unreachable!("a shell of SHELLS"),
        }
    }
}

const SHELLS: [&str; 3] = ["bash", "zsh", "fish"];

/// `cargo xtask install --prefix DIR`.
pub fn install(built: &Built, prefix: &Path) -> Result<()> {
    for path in lay_out(built, prefix, prefix, &LOCAL)? {
        println!("installed {}", path.display());
    }
    Ok(())
}

/// Installs every program under `dest` (a prefix, or a package's /usr),
/// which the installed system sees as `prefix`; returns what it wrote.
fn lay_out(built: &Built, dest: &Path, prefix: &Path, layout: &Layout) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    // Every program of the catalog: its binary, the names it also answers
    // to (links to it, each with its man page and completions), and its
    // systemd unit, if it is a service.
    for program in tools_catalog::TOOLS {
        let binary = built.bin_dir.join(program.name);
        // The same program built for this machine, which can run here.
        let runnable = built.host_bin_dir.join(program.name);
        let bin = dest.join("bin").join(program.name);
        // Removed first: a running binary cannot be overwritten (ETXTBSY).
        replace(&bin, |path| {
            fs::copy(&binary, path).with_context(|| format!("copying {}", binary.display()))?;
            if layout.strip {
                run(Command::new(strip(built.arch)).args(["--strip-unneeded", "--remove-section=.comment"]).arg(path))?;
            }
            Ok(fs::set_permissions(path, fs::Permissions::from_mode(0o755))?)
        })?;
        written.push(bin);
        for alias in program.aliases {
            written.push(link(&dest.join("bin").join(alias), program.name)?);
        }

        let page = generate(&runnable, program.name, "man")?;
        let section = man_section(&page).with_context(|| format!("{}'s man page has no .TH line", program.name))?;
        let suffix = if layout.gzip_man { ".gz" } else { "" };
        let man_dir = dest.join("share/man").join(format!("man{section}"));
        let file = format!("{}.{section}{suffix}", program.name);
        written.push(write(&man_dir.join(&file), &if layout.gzip_man { gzip(page.as_bytes())? } else { page.into() })?);
        for alias in program.aliases {
            written.push(link(&man_dir.join(format!("{alias}.{section}{suffix}")), &file)?);
        }

        for name in std::iter::once(&program.name).chain(program.aliases) {
            for shell in SHELLS {
                let script = generate(&runnable, name, shell)?;
                written.push(write(&dest.join(layout.completion(shell, name)), script.as_bytes())?);
            }
        }
        if let Some(unit) = program.unit {
            let source = workspace().join(unit);
            let file_name = source.file_name().context("a unit file name")?;
            // The unit names the binary where this installation puts it.
            let text =
                fs::read_to_string(&source)?.replace("/usr/local/bin/", &format!("{}/", prefix.join("bin").display()));
            written.push(write(&dest.join("lib/systemd/system").join(file_name), text.as_bytes())?);
        }
    }
    Ok(written)
}

/// What `binary --generate what` prints, run as `name` (an alias
/// completes as itself).
fn generate(binary: &Path, name: &str, what: &str) -> Result<String> {
    let out = Command::new(binary)
        .arg0(name)
        .args(["--generate", what])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!("{} --generate {what} failed: {}", binary.display(), out.status);
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The section in a man page's `.TH NAME SECTION ...` line.
fn man_section(page: &str) -> Option<String> {
    let th = page.lines().find_map(|line| line.strip_prefix(".TH "))?;
    Some(th.split_whitespace().nth(1)?.trim_matches('"').to_owned())
}

fn replace(path: &Path, make: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    fs::create_dir_all(path.parent().context("a parent directory")?)?;
    match fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).with_context(|| format!("removing {}", path.display()))
        }
        _ => {}
    }
    make(path).with_context(|| format!("installing {}", path.display()))?;
    Ok(path.to_owned())
}

fn write(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    replace(path, |path| {
        fs::write(path, bytes)?;
        Ok(fs::set_permissions(path, fs::Permissions::from_mode(0o644))?)
    })
}

/// A relative symbolic link `path` -> `target` (in the same directory).
fn link(path: &Path, target: &str) -> Result<PathBuf> {
    replace(path, |path| Ok(std::os::unix::fs::symlink(target, path)?))
}

/// gzip -9n: the best compression, and no name or time stamp inside, so
/// the same page gives the same bytes (as Debian wants).
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip").args(["-9n", "-c"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut stdin = child.stdin.take().context("gzip's stdin")?;
    let data = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    feeder.join().expect("gzip feeder")?;
    if !out.status.success() {
        bail!("gzip failed: {}", out.status);
    }
    Ok(out.stdout)
}

/// The package: name and the Debian files beside the code.
const PACKAGE: &str = "ebpf-tools";
const DEBIAN_DIR: &str = "packaging/debian";

/// binutils' strip for `arch` (Debian's own handles only its architecture).
fn strip(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "strip",
        Arch::Arm64 => "aarch64-linux-gnu-strip",
    }
}

/// `cargo xtask deb`: builds target/debian/ebpf-tools_VERSION_ARCH.deb
/// from the built binaries, checks it with lintian (no error allowed), and
/// returns its path.
pub fn deb(built: &Built) -> Result<PathBuf> {
    let version = tool_version(&built.host_bin_dir)?;
    let changelog = fs::read_to_string(workspace().join(DEBIAN_DIR).join("changelog"))?;
    let logged = changelog.split(['(', ')']).nth(1).unwrap_or_default();
    if logged != version {
        bail!("the tools are version {version}, {DEBIAN_DIR}/changelog's last entry is {logged}: add an entry");
    }
    let out_dir = workspace().join("target/debian");
    let root = out_dir.join(PACKAGE);
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;

    lay_out(built, &root.join("usr"), Path::new("/usr"), &DEBIAN)?;
    let doc = root.join("usr/share/doc").join(PACKAGE);
    write(&doc.join("copyright"), copyright(built.arch)?.as_bytes())?;
    write(&doc.join("changelog.gz"), &gzip(changelog.as_bytes())?)?;
    write(&doc.join("README.md.gz"), &gzip(&fs::read(workspace().join("README.md"))?)?)?;
    let overrides = workspace().join(DEBIAN_DIR).join("lintian-overrides");
    if overrides.exists() {
        write(&root.join("usr/share/lintian/overrides").join(PACKAGE), &fs::read(overrides)?)?;
    }

    let control_dir = root.join("DEBIAN");
    fs::create_dir_all(&control_dir)?;
    let control = fs::read_to_string(workspace().join(DEBIAN_DIR).join("control"))?
        .replace("@VERSION@", &version)
        .replace("@ARCH@", built.arch.debian())
        .replace("@INSTALLED_SIZE@", &installed_size_kib(&root.join("usr"))?.to_string());
    write(&control_dir.join("control"), control.as_bytes())?;
    write(&control_dir.join("md5sums"), &md5sums(&root)?)?;

    let deb = out_dir.join(format!("{PACKAGE}_{version}_{}.deb", built.arch.debian()));
    run(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&root).arg(&deb))?;
    println!("deb: {}", deb.display());
    run(Command::new("lintian").args(["--fail-on", "error", "--display-info"]).arg(&deb))?;
    Ok(deb)
}

/// The version the tools report: `runqlat 0.1.0 (commit ..., aya ...)`.
fn tool_version(bin_dir: &Path) -> Result<String> {
    let out = Command::new(bin_dir.join("runqlat")).arg("--version").output()?;
    let text = String::from_utf8(out.stdout)?;
    text.split_whitespace().nth(1).map(str::to_owned).context("runqlat --version printed no version")
}

/// packaging/debian/copyright, with the list of what the binaries link
/// statically: the Rust crates (from cargo tree) and musl.
fn copyright(arch: Arch) -> Result<String> {
    let text = fs::read_to_string(workspace().join(DEBIAN_DIR).join("copyright"))?;
    let out = Command::new(env!("CARGO"))
        .current_dir(workspace())
        .args(["tree", "-p", "tools-user", "-e", "normal", "--prefix", "none", "--format", "{p} ({l})"])
        .args(["--target", arch.static_target()])
        .output()?;
    if !out.status.success() {
        bail!("cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut crates: Vec<String> = String::from_utf8(out.stdout)?
        .lines()
        .filter(|line| !line.starts_with("tools-") && !line.trim().is_empty())
        .map(|line| format!(" {}", line.replace(" (*)", "")))
        .collect();
    crates.sort();
    crates.dedup();
    Ok(text.replace("@CRATES@", &crates.join("\n")))
}

fn installed_size_kib(dir: &Path) -> Result<u64> {
    let mut bytes = 0;
    for entry in walk(dir)? {
        bytes += fs::symlink_metadata(&entry)?.len();
    }
    Ok(bytes.div_ceil(1024))
}

/// DEBIAN/md5sums: every regular file, by its path in the package.
fn md5sums(root: &Path) -> Result<Vec<u8>> {
    let files: Vec<PathBuf> = walk(&root.join("usr"))?
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .map(|p| p.strip_prefix(root).expect("inside the package").to_owned())
        .collect();
    let out = Command::new("md5sum").current_dir(root).args(&files).output()?;
    if !out.status.success() {
        bail!("md5sum failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// Every file and link below `dir`, sorted.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if fs::symlink_metadata(&path)?.is_dir() {
            found.extend(walk(&path)?);
        } else {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every binary of tools-user/src/bin is in the catalog (bench-floor,
    /// not a tool, lives elsewhere), and nothing else is.
    #[test]
    fn every_tool_has_a_row() {
        let mut rows: Vec<&str> = tools_catalog::TOOLS.iter().map(|p| p.name).collect();
        rows.sort();
        assert_eq!(rows, crate::tools().unwrap());
    }

    #[test]
    fn man_section_from_the_title_line() {
        assert_eq!(
            man_section(".ie \\n(.g .ds Aq \\(aq\n.TH RUNQLAT 8 \"\" \"ebpf-tools 0.1.0\"\n").as_deref(),
            Some("8")
        );
        assert_eq!(man_section(".SH NAME\n"), None);
    }
}
