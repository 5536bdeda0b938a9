//! Latency heatmaps, as Brendan Gregg's: time across, latency up, each cell
//! coloured by its count. Drawn from any tool's JSON Lines capture by
//! `ebpf-tools-heatmap`, or while a histogram tool runs (`--heatmap
//! FILE.svg`); one reader and one drawing serve both, since the live
//! picture is drawn from the very records `--json` prints.
//!
//! A capture is untrusted input (a postmortem's attachment, a copy cut
//! short): what it makes the reader allocate is bounded by its size, and
//! the reader is a fuzz target (`fuzz`).

pub mod capture;
pub mod fuzz;
pub mod svg;
pub mod time;

use std::{
    io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use serde_json::Value;

use capture::{Capture, Choice, Picture};
use svg::Style;

/// A capture that cannot be drawn (a line that is no record, an unknown
/// series), and why: the tool says it and exits with status 2.
#[derive(Debug)]
pub struct BadCapture(pub String);

impl std::fmt::Display for BadCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadCapture {}

/// How counts map to colours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    /// Colour by log(count): rare and common cells both stand out.
    #[default]
    Log,
    /// Colour in proportion to the count.
    Linear,
}

/// What to draw and how: ebpf-tools-heatmap's flags. The live picture
/// takes the defaults.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Draw this tool's records, where the capture holds several tools'.
    #[arg(long, value_name = "TOOL")]
    pub tool: Option<String>,

    /// Draw one series of keyed histograms (-P, -L, --pidnss, -D, -F):
    /// `pid=42`, `disk=sda`, `disk=sda,flags=Read`. Default: all summed.
    #[arg(long, value_name = "NAME=VALUE[,...]")]
    pub key: Option<String>,

    /// Width of the time bins of an event capture, in seconds (default:
    /// 1, 2 or 5 × 10^k giving about 60 columns).
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
    pub bin: Option<f64>,

    /// Colour scale of the counts.
    #[arg(long, value_enum, default_value_t = Scale::Log)]
    pub scale: Scale,

    /// Width of the picture, in pixels.
    #[arg(long, default_value_t = 1200, value_parser = clap::value_parser!(u32).range(480..=20000))]
    pub width: u32,

    /// Height of the picture, in pixels.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(300..=20000))]
    pub height: u32,

    /// Host name for the title, instead of the capture's (a capture
    /// without its first record, `"type":"capture"`, names none).
    #[arg(long)]
    pub host: Option<String>,

    /// Kernel release for the title, instead of the capture's.
    #[arg(long)]
    pub kernel: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tool: None,
            key: None,
            bin: None,
            scale: Scale::Log,
            width: 1200,
            height: 600,
            host: None,
            kernel: None,
        }
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 1e-6 => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds (at least 0.000001)")),
    }
}

impl Options {
    fn choice(&self) -> Choice {
        Choice { tool: self.tool.clone(), key: self.key.clone(), bin_secs: self.bin }
    }

    fn style(&self) -> Style {
        Style { width: self.width, height: self.height, scale: self.scale }
    }

    fn draw(&self, mut picture: Picture) -> String {
        if self.host.is_some() {
            picture.host.clone_from(&self.host);
        }
        if self.kernel.is_some() {
            picture.kernel.clone_from(&self.kernel);
        }
        svg::render(&picture, &self.style())
    }
}

/// Draws a whole capture: the SVG, and warnings (a last line cut short).
pub fn draw(input: impl io::BufRead, options: &Options) -> Result<(String, Vec<String>), BadCapture> {
    let (picture, warnings) = Capture::read(input, options.choice())?;
    Ok((options.draw(picture), warnings))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over
/// `path`: a reader, or a kill at any moment, sees the old file or the new
/// one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = temporary(path)?;
    let result = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn temporary(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    Ok(path.with_file_name(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id())))
}

/// `--heatmap FILE`: the picture of every record so far, rewritten after
/// each interval.
pub struct Live {
    path: PathBuf,
    capture: Capture,
    records: usize,
    options: Options,
}

impl Live {
    /// Fails now, before tracing starts, if `path` cannot be written.
    pub fn new(path: &Path) -> Result<Live> {
        let temp = temporary(path).with_context(|| format!("--heatmap {}", path.display()))?;
        std::fs::write(&temp, b"").with_context(|| format!("--heatmap {}: cannot write beside it", path.display()))?;
        let _ = std::fs::remove_file(&temp);
        let options = Options::default();
        Ok(Live { path: path.to_owned(), capture: Capture::new(options.choice()), records: 0, options })
    }

    /// Takes one record, as `--json` prints it.
    pub fn record(&mut self, record: &Value) -> Result<()> {
        self.records += 1;
        Ok(self.capture.record(self.records, record)?)
    }

    /// Draws every record so far, and replaces the file.
    pub fn write(&self) -> Result<()> {
        let svg = self.options.draw(self.capture.picture()?);
        write_atomic(&self.path, svg.as_bytes()).with_context(|| format!("writing {}", self.path.display()))
    }
}
