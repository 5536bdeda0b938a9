//! What every program says about itself, from its own clap definition:
//! `--version` (the version, the commit and aya's version), and the hidden
//! `--generate man|bash|zsh|fish` that `cargo xtask install` and `cargo
//! xtask deb` run on the built binaries. So a binary copied alone onto a
//! host still carries its manual: `runqlat --generate man | man -l -`.
//!
//! A man page is the clap definition (name, synopsis, every visible flag,
//! the examples of `after_help`) around the program's prose,
//! `docs/man/<name>.<section>.md`, embedded by [`man_page!`](crate::man_page):
//! BCC's description, the output fields, the overhead. The prose is a small
//! subset of Markdown (see [`prose`]).

use std::io::Write as _;

use clap::{Arg, Command, Parser};
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};

/// What `--version` prints after the program's name.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("EBPF_TOOLS_COMMIT"),
    ", aya ",
    env!("EBPF_TOOLS_AYA_VERSION"),
    ")"
);

/// A program's man page: its file name (`runqlat.8`) and its prose.
pub struct Page {
    pub file: &'static str,
    pub prose: &'static str,
}

/// The [`Page`] `"name.section"`, with its prose from
/// `docs/man/name.section.md` embedded at compile time.
#[macro_export]
macro_rules! man_page {
    ($file:literal) => {
        $crate::manual::Page {
            file: $file,
            prose: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/man/", $file, ".md")),
        }
    };
}

const GENERATE: &str = "generate";

/// Parses the command line of `T` with `--version` added; `--generate`
/// prints the man page or a completion script instead, and exits.
pub fn parse<T: Parser>(page: Page) -> T {
    let mut command = T::command().version(VERSION).arg(
        Arg::new(GENERATE)
            .long(GENERATE)
            .hide(true)
            .value_name("WHAT")
            .value_parser(["man", "bash", "zsh", "fish"])
            .help("Print the man page or a shell's completion script, and exit"),
    );
    let mut matches = command.clone().get_matches();
    if let Some(what) = matches.get_one::<String>(GENERATE) {
        let text = match what.as_str() {
            "man" => man(command, &page),
            shell => completion(command, shell.parse().expect("a shell clap_complete knows")),
        };
        // A closed stdout (`--generate man | head`) is no error.
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        std::process::exit(0);
    }
    T::from_arg_matches_mut(&mut matches).unwrap_or_else(|err| err.format(&mut command).exit())
}

/// The completion script of `shell` for the name the program was run as
/// (so `xfsslower`, a link to ext4slower, completes as itself).
fn completion(mut command: Command, shell: Shell) -> String {
    let name = crate::diag::invoked_name();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The man page: NAME and SYNOPSIS from clap, the prose's DESCRIPTION,
/// OPTIONS from clap, EXAMPLES from `after_help`, then the prose's other
/// sections, with the tracers' EXIT STATUS unless the prose has its own.
fn man(command: Command, page: &Page) -> String {
    let (name, section) = page.file.rsplit_once('.').expect("a man page file is NAME.SECTION");
    let manual = if section == "8" { "System Administration" } else { "User Commands" };
    let examples = command.get_after_help().map(|help| help.to_string()).unwrap_or_default();
    let date = Some(env!("EBPF_TOOLS_DATE")).filter(|d| !d.is_empty()).unwrap_or("undated");
    let man = clap_mangen::Man::new(command)
        .title(name.to_uppercase())
        .section(section)
        .date(date)
        .source(format!("ebpf-tools {}", env!("CARGO_PKG_VERSION")))
        .manual(manual);
    let mut out = Vec::new();
    let sections = prose::sections(page.prose);
    let rendered: std::io::Result<()> = (|| {
        man.render_title(&mut out)?;
        man.render_name_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        let mut rest = sections.iter();
        if let Some(description) = sections.first().filter(|s| s.heading == "DESCRIPTION") {
            rest.next();
            out.extend(description.roff.to_roff().into_bytes());
        }
        man.render_options_section(&mut out)?;
        out.extend(examples_section(&examples).to_roff().into_bytes());
        let tracers_exit_status = prose::sections(TRACER_EXIT_STATUS);
        let mut rest: Vec<&prose::Section> = rest.collect();
        if !rest.iter().any(|s| s.heading == "EXIT STATUS") {
            // Where man-pages(7) puts it: before SEE ALSO.
            let at = rest.iter().position(|s| s.heading == "SEE ALSO").unwrap_or(rest.len());
            rest.insert(at, &tracers_exit_status[0]);
        }
        for section in rest {
            out.extend(section.roff.to_roff().into_bytes());
        }
        Ok(())
    })();
    rendered.expect("writing to memory");
    ascii_only(&without_repeated_preambles(&String::from_utf8_lossy(&out)))
}

/// Characters beyond ASCII (a help's `×`) as groff's `\[uXXXX]`, so the
/// page reads the same whatever encoding its reader assumes.
fn ascii_only(page: &str) -> String {
    page.chars().map(|c| if c.is_ascii() { c.to_string() } else { format!("\\[u{:04X}]", c as u32) }).collect()
}

/// Each of clap_mangen's sections starts with the same two-line preamble
/// (the `Aq` string); the page needs it once.
fn without_repeated_preambles(page: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for line in page.lines() {
        let repeated = line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq");
        if !(repeated && lines.contains(&line)) {
            lines.push(line);
        }
    }
    lines.join("\n") + "\n"
}

/// The exit status of every tracing tool.
const TRACER_EXIT_STATUS: &str = "# EXIT STATUS

- 0: done, also when ended by Ctrl-C (SIGINT) or SIGTERM, with every program detached, or when standard output was closed (`| head`).
- 1: what the machine refuses: no privilege (root, or CAP_BPF with CAP_PERFMON, is named before anything is loaded), no usable kernel path (every rung tried is named, with why it failed), a tracefs this user may not read.
- 2: bad input of any kind, named in the message: a malformed flag or value; a PID, user, disk, cgroup or file that does not exist or is not what the flag needs (`--btf` a file that is not a kernel's BTF, `-c` a file or a cgroup v1 path, `-l` a file that is not a C library); a bad regular expression.
- 3: the tool ran, but the kernel side lost data (a full table or buffer, or runs of its programs the kernel skipped because a BPF program was already running on that CPU); how much, and why, was said on stderr as it happened and at exit.
";

/// EXAMPLES from a tool's `after_help`: its lines `    ./tool ARGS  # what`
/// after `examples:`, up to the first blank line.
fn examples_section(after_help: &str) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXAMPLES"]);
    let lines = after_help.lines().skip_while(|l| !l.trim_end().ends_with("examples:")).skip(1);
    for line in lines.take_while(|l| !l.trim().is_empty()) {
        let (example, what) = line.split_once(" # ").unwrap_or((line, ""));
        let example = example.trim().trim_start_matches("./");
        roff.control("TP", []);
        roff.text([bold(example)]);
        roff.text([roman(what.trim())]);
    }
    roff
}

/// The prose of a man page, in a subset of Markdown: `# HEADING` starts a
/// section, `## Heading` a subsection; a blank line ends a paragraph; a
/// line indented by four spaces is literal; `- ` starts a list item;
/// `` `code` `` is bold, `*words*` italic.
pub mod prose {
    use super::*;

    pub struct Section {
        pub heading: String,
        pub roff: Roff,
    }

    pub fn sections(text: &str) -> Vec<Section> {
        let mut sections: Vec<Section> = Vec::new();
        let mut paragraph: Vec<&str> = Vec::new();
        let mut literal = false;
        let flush_literal = |roff: &mut Roff, literal: &mut bool| {
            if std::mem::take(literal) {
                roff.control("fi", []).control("RE", []);
            }
        };
        // Ends the paragraph or literal block being written.
        let flush = |roff: &mut Roff, paragraph: &mut Vec<&str>, literal: &mut bool| {
            flush_literal(roff, literal);
            if !paragraph.is_empty() {
                roff.text(inline(&paragraph.join(" ")));
                paragraph.clear();
            }
        };
        // A last, empty heading closes the last section.
        for line in text.lines().chain(["# "]) {
            if let Some(heading) = line.strip_prefix("# ") {
                if let Some(section) = sections.last_mut() {
                    flush(&mut section.roff, &mut paragraph, &mut literal);
                }
                if !heading.is_empty() {
                    let mut roff = Roff::new();
                    roff.control("SH", [heading]);
                    sections.push(Section { heading: heading.to_owned(), roff });
                }
                continue;
            }
            let Some(section) = sections.last_mut() else { continue };
            let roff = &mut section.roff;
            if let Some(code) = line.strip_prefix("    ").filter(|_| paragraph.is_empty()) {
                if !literal {
                    roff.control("RS", ["4"]).control("nf", []);
                    literal = true;
                }
                roff.text([roman(code)]);
                continue;
            }
            flush_literal(roff, &mut literal);
            if line.trim().is_empty() {
                flush(roff, &mut paragraph, &mut literal);
            } else if let Some(heading) = line.strip_prefix("## ") {
                flush(roff, &mut paragraph, &mut literal);
                roff.control("SS", [heading]);
            } else if let Some(item) = line.strip_prefix("- ") {
                flush(roff, &mut paragraph, &mut literal);
                roff.control("IP", ["\\(bu", "2"]);
                paragraph.push(item);
            } else {
                if paragraph.is_empty() && !line.starts_with("  ") {
                    roff.control("PP", []);
                }
                paragraph.push(line.trim());
            }
        }
        sections
    }

    /// Text with `code` in bold and *words* in italic.
    fn inline(text: &str) -> Vec<Inline> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(['`', '*']) {
            let mark = &rest[start..start + 1];
            let Some(len) = rest[start + 1..].find(mark) else { break };
            if start > 0 {
                out.push(roman(&rest[..start]));
            }
            let marked = &rest[start + 1..start + 1 + len];
            out.push(if mark == "`" { bold(marked) } else { italic(marked) });
            rest = &rest[start + 2 + len..];
        }
        out.push(roman(rest));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roff(section: &prose::Section) -> String {
        section.roff.to_roff()
    }

    #[test]
    fn prose_becomes_sections_paragraphs_lists_and_literal_blocks() {
        let sections = prose::sections(
            "# DESCRIPTION\n\nSome `--flag` and *words*,\nwrapped.\n\n    literal -x\n\n- one\n  more\n- two\n\n## Sub\n\n.dot\n# SEE ALSO\n\nx(8)\n",
        );
        let headings: Vec<&str> = sections.iter().map(|s| s.heading.as_str()).collect();
        assert_eq!(headings, ["DESCRIPTION", "SEE ALSO"]);
        let text = roff(&sections[0]);
        assert!(text.contains(".PP\nSome \\fB\\-\\-flag\\fR and \\fIwords\\fR, wrapped.\n"), "{text}");
        assert!(text.contains(".RS 4\n.nf\nliteral \\-x\n.fi\n.RE\n"), "{text}");
        assert!(text.contains(".IP \\(bu 2\none more\n.IP \\(bu 2\ntwo\n"), "{text}");
        // A line that would be a roff request is escaped.
        assert!(text.contains(".SS Sub\n.PP\n\\&.dot\n"), "{text}");
    }

    #[test]
    fn pages_are_ascii() {
        assert_eq!(ascii_only("5 \u{d7} 10^k\n"), "5 \\[u00D7] 10^k\n");
    }

    #[test]
    fn examples_come_from_after_help() {
        let text =
            examples_section("examples:\n    ./runqlat 1 10   # print 1 second summaries\n    ./x\n\nexit status: 0")
                .to_roff();
        assert!(text.contains(".TP\n\\fBrunqlat 1 10\\fR\nprint 1 second summaries\n"), "{text}");
        assert!(text.contains(".TP\n\\fBx\\fR\n"), "{text}");
        assert!(!text.contains("exit status"), "{text}");
    }

    /// Every page's prose has the sections a man page of this project
    /// needs, and no figure left to fill in.
    #[test]
    fn every_prose_file_is_complete() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/man");
        let mut pages = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let headings: Vec<String> = prose::sections(&text).into_iter().map(|s| s.heading).collect();
            assert_eq!(headings.first().map(String::as_str), Some("DESCRIPTION"), "{}", path.display());
            for needed in ["OUTPUT", "OVERHEAD", "SEE ALSO"] {
                assert!(headings.iter().any(|h| h == needed), "{} has no {needed}", path.display());
            }
            assert!(!text.contains('@'), "{} has a placeholder left", path.display());
            pages += 1;
        }
        assert!(pages > 0, "no prose in {}", dir.display());
    }
}
