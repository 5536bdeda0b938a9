//! `cargo xtask kernel-floor`: the oldest kernel each rung of each tool
//! loads on, in both builds of its programs, read from the objects the
//! binaries embed (tools-floor, through each tool's hidden
//! `--kernel-floor`, which lists its rungs as its plan makes them with
//! default flags). It prints the table, writes `target/kernel-floor.json`
//! and the table in `docs/kernels.md`, and fails when a tool's lowest rung
//! needs more than Linux 4.4. With `--check` (CI) it also fails when the
//! table differs from the committed one: a change that raises a rung's
//! floor shows in review.

use std::{fmt::Write as _, fs, path::Path, process::Command};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::{docs, workspace};

/// The kernel every tool's lowest rung must load on.
const PROMISE: (u32, u32) = (4, 4);

pub fn kernel_floor(bin_dir: &Path, check: bool) -> Result<()> {
    let mut rows: Vec<Value> = Vec::new();
    for tool in tools() {
        let out = Command::new(bin_dir.join(tool))
            .arg("--kernel-floor")
            .output()
            .with_context(|| format!("running {tool} --kernel-floor"))?;
        if !out.status.success() {
            bail!("{tool} --kernel-floor failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        rows.extend(parse(tool, &String::from_utf8_lossy(&out.stdout))?);
    }
    let table = table(&rows);
    println!("{table}");
    let json = workspace().join("target/kernel-floor.json");
    fs::create_dir_all(json.parent().context("target")?)?;
    fs::write(&json, serde_json::to_string_pretty(&rows)? + "\n")?;
    println!("kernel-floor: {} rungs; written to {}", rows.len(), json.display());

    let broken = broken_promises(&rows);
    if !check {
        docs::write("kernels.md", "kernel-floor", &table)?;
    } else if docs::updated("kernels.md", "kernel-floor", &table)?.is_some() {
        bail!(
            "docs/kernels.md does not show what the objects say (a rung's oldest kernel, what sets it or its instruction count moved): run `cargo xtask \
             kernel-floor` and commit the table"
        );
    }
    if !broken.is_empty() {
        bail!("the lowest rung needs more than Linux {}.{}:\n{}", PROMISE.0, PROMISE.1, broken.join("\n"));
    }
    Ok(())
}

/// The tools with BPF objects: what `--kernel-floor` runs on.
pub fn tools() -> impl Iterator<Item = &'static str> {
    tools_catalog::TOOLS.iter().filter(|t| t.object.is_some()).map(|t| t.name)
}

/// `tool --kernel-floor`'s output: one JSON row per rung.
pub fn parse(tool: &str, output: &str) -> Result<Vec<Value>> {
    output.lines().map(|line| serde_json::from_str(line).with_context(|| format!("{tool}: not JSON: {line}"))).collect()
}

/// Each tool's lowest rung (the one with the oldest kernel), where it needs
/// a kernel newer than the promise.
pub fn broken_promises(rows: &[Value]) -> Vec<String> {
    let mut broken = Vec::new();
    for tool in tools_catalog::TOOLS.iter().filter(|t| t.object.is_some()) {
        let floor = |row: &&Value| version(row["floor"].as_str().unwrap_or_default());
        let lowest = rows.iter().filter(|r| r["tool"] == tool.name && r["build"] == "legacy").min_by_key(floor);
        let Some(lowest) = lowest else {
            broken.push(format!("  {}: no rung in the legacy build", tool.name));
            continue;
        };
        let floor = lowest["floor"].as_str().unwrap_or_default();
        if version(floor) > PROMISE {
            broken.push(format!("  {} {}: {floor} ({})", tool.name, lowest["rung"], why(lowest)));
        }
    }
    broken
}

fn version(text: &str) -> (u32, u32) {
    let mut parts = text.split('.').map(|p| p.parse().unwrap_or(u32::MAX));
    (parts.next().unwrap_or(u32::MAX), parts.next().unwrap_or(0))
}

fn why(row: &Value) -> String {
    let reasons: Vec<&str> = row["why"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    reasons.join("; ")
}

/// The Markdown table: every tool, build and rung (in the order the
/// loader tries them), its oldest kernel and what sets it.
pub fn table(rows: &[Value]) -> String {
    let mut t = String::from(
        "| tool | build | rung | oldest kernel | what sets it | instructions |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} |",
            row["tool"].as_str().unwrap_or_default(),
            row["build"].as_str().unwrap_or_default(),
            row["rung"].as_str().unwrap_or_default(),
            row["floor"].as_str().unwrap_or_default(),
            why(row).replace('|', "\\|"),
            row["instructions"],
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers() {
        assert!(version("4.10") > version("4.4"));
        assert!(version("4.4") <= PROMISE);
        assert!(version("5.2") > PROMISE);
    }
}
