//! Diagnostics: the tool's name, lines on stderr, and `--verbose`. The one
//! module every other may use; it uses none of them.

use std::{io::Write as _, sync::OnceLock};

static TOOL_NAME: OnceLock<&'static str> = OnceLock::new();

/// Names the tool for every message, error and JSON record. Set once, at
/// the start of `main` (see `lifetime::main_with`).
pub fn set_tool_name(name: &'static str) {
    let _ = TOOL_NAME.set(name);
}

/// The tool's name: as set by its `main`, else the name it was run as.
pub fn tool_name() -> &'static str {
    TOOL_NAME.get_or_init(|| Box::leak(invoked_name().into_boxed_str()))
}

/// The name the program was run as (`xfsslower` for a link to ext4slower).
pub fn invoked_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "tool".into())
}

/// A line on stderr. A closed stderr (`tool 2>&1 | head`) is no reason to
/// fail: the line is dropped, where `eprintln!` would panic.
pub fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `--verbose`: info-level log lines on stderr, `tool: ...`; otherwise
/// warnings only.
pub fn init_logging(verbose: bool) {
    struct Stderr;
    impl log::Log for Stderr {
        /// Our own lines: the library's and the tool binary's (whose
        /// crate is named after the tool), not those of aya or tokio.
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            let target = m.target();
            target.starts_with("tools_user") || target.split("::").next() == Some(&tool_name().replace('-', "_"))
        }
        fn log(&self, r: &log::Record<'_>) {
            if self.enabled(r.metadata()) {
                note(&format!("{}: {}", tool_name(), r.args()));
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(if verbose { log::LevelFilter::Info } else { log::LevelFilter::Warn });
    if let Some(line) = crate::procfs::kernel_pids().note() {
        note(&format!("{}: {line}", tool_name()));
    }
}
