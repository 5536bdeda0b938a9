//! The picture: one self-contained SVG, time across, latency up on a log
//! axis, each cell coloured by its count, p50, p99 and max drawn over the
//! cells, a tooltip (`<title>`) on every cell.
//!
//! Rows are log-linear: 2^k rows per power of two, as many as the plot's
//! height allows at 6 px a row (at most 128, the kernel's own slots), so
//! they nest the kernel's slots exactly; a coarser cell (a log2 bucket of
//! a capture without slots) is drawn as its own row. The values in cells
//! are whole units (a tool truncates to its unit), so the cell of `v`
//! covers [v, v+1) units; the cell of 0 is drawn from half a unit.
//!
//! For scripts and tests the SVG carries its numbers as attributes: the
//! plot group's position, size and axis ranges (`data-ymin-ns`,
//! `data-ymax-ns`), each column group's interval numbers, span and count,
//! each cell's range (in the capture's unit, inclusive) and count.

use std::fmt::Write as _;

use crate::{
    capture::{fit, Cells, Column, Picture},
    time::{duration, trimmed},
    Scale,
};

/// Size of the picture and how counts map to colours.
#[derive(Clone, Debug)]
pub struct Style {
    pub width: u32,
    pub height: u32,
    pub scale: Scale,
}

const LEFT: f64 = 78.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 62.0;
const BOTTOM: f64 = 48.0;
/// The lowest a row may be, which sets how many rows a power of two gets
/// (a band of one row stays visible under the p50 line).
const MIN_ROW_PX: f64 = 6.0;
/// Colours from one count (pale yellow) to the most (dark red).
const PALETTE: [(f64, [f64; 3]); 4] = [
    (0.0, [255.0, 237.0, 160.0]),
    (0.33, [254.0, 178.0, 76.0]),
    (0.66, [240.0, 59.0, 32.0]),
    (1.0, [128.0, 0.0, 38.0]),
];
/// p50, p99 and max: name, colour, dashes.
const MARKS: [(&str, &str, &str); 3] = [("p50", "#1f5fd6", ""), ("p99", "#087f7f", "6 3"), ("max", "#222222", "2 3")];

/// XML text: `&`, `<`, `>` and quotes escaped.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 forbids (control bytes from a host name).
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A span of wall-clock time: `45 s`, `5 min 30 s`, `2 h 5 min`.
fn span(micros: i64) -> String {
    let secs = micros as f64 / 1e6;
    match secs.round() as i64 {
        s if s < 60 => format!("{} s", trimmed(secs, 3)),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// The row (inclusive bounds) holding `value` with 2^`sub_bits` rows per
/// power of two; values below 2^(sub_bits+1) have a row each.
fn row_of(value: u64, sub_bits: u32) -> (u64, u64) {
    if value >> (sub_bits + 1) == 0 {
        return (value, value);
    }
    let shift = 63 - value.leading_zeros() - sub_bits;
    let low = value >> shift << shift;
    (low, low + ((1u64 << shift) - 1))
}

/// A column's cells gathered into rows; a cell wider than its row is its own row.
fn rows(cells: &Cells, sub_bits: u32) -> Cells {
    let mut rows = Cells::new();
    for (&(low, high), &n) in cells {
        let row = row_of(low, sub_bits);
        let row = if high <= row.1 { row } else { (low, high) };
        *rows.entry(row).or_default() += n;
    }
    rows
}

/// The colour of `t` in [0, 1].
fn colour(t: f64) -> String {
    let t = t.clamp(0.0, 1.0);
    let i = PALETTE.iter().position(|(at, _)| *at >= t).unwrap_or(PALETTE.len() - 1).max(1);
    let ((t0, c0), (t1, c1)) = (PALETTE[i - 1], PALETTE[i]);
    let f = (t - t0) / (t1 - t0);
    let c: Vec<u8> = (0..3).map(|k| (c0[k] + (c1[k] - c0[k]) * f).round() as u8).collect();
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// Where the plot is, and how time and latency map onto it.
struct Plot {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    t0: i64,
    t1: i64,
    /// log2 of the axis' ends, in nanoseconds.
    y0: f64,
    y1: f64,
}

impl Plot {
    fn x(&self, micros: i64) -> f64 {
        self.left + (micros - self.t0) as f64 / (self.t1 - self.t0) as f64 * self.width
    }

    fn y(&self, ns: f64) -> f64 {
        let l = ns.max(f64::MIN_POSITIVE).log2().clamp(self.y0, self.y1);
        self.top + self.height * (1.0 - (l - self.y0) / (self.y1 - self.y0))
    }
}

/// Nanoseconds a cell [low, high] in units covers, drawn: [low, high + 1), 0 from half a unit.
fn extent(&(low, high): &(u64, u64), unit_ns: u64) -> (f64, f64) {
    let unit = unit_ns as f64;
    (if low == 0 { unit / 2.0 } else { low as f64 * unit }, (high as f64 + 1.0) * unit)
}

/// The SVG of `picture`.
pub fn render(picture: &Picture, style: &Style) -> String {
    let (width, height) = (style.width as f64, style.height as f64);
    let (plot_w, plot_h) = (width - LEFT - RIGHT, height - TOP - BOTTOM);
    let (columns, per_column) = fit(&picture.columns, (plot_w / 2.0) as usize, picture.unit_ns);
    let unit = picture.unit_ns;

    // Rows: as many per power of two as the height allows.
    let extents = || columns.iter().flat_map(|c| c.cells.keys()).map(|r| extent(r, unit));
    let lowest = extents().map(|e| e.0).fold(f64::INFINITY, f64::min);
    let highest = extents().map(|e| e.1).fold(0.0, f64::max);
    let octaves = if highest > 0.0 { (highest / lowest).log2().max(1.0) } else { 1.0 };
    let sub_bits = (plot_h / (octaves * MIN_ROW_PX)).log2().floor().clamp(0.0, 7.0) as u32;
    let column_rows: Vec<Cells> = columns.iter().map(|c| rows(&c.cells, sub_bits)).collect();
    let row_extents = || column_rows.iter().flat_map(|r| r.keys()).map(|r| extent(r, unit));
    let (y0, y1) = match row_extents().next() {
        None => ((unit as f64).log2(), (unit as f64).log2() + 10.0),
        Some(_) => {
            let low = row_extents().map(|e| e.0).fold(f64::INFINITY, f64::min).log2().floor();
            let high = row_extents().map(|e| e.1).fold(0.0, f64::max).log2().ceil();
            (low, high.max(low + 1.0))
        }
    };
    let t0 = columns.first().map_or(0, |c| c.start.micros);
    let t1 = columns.last().map_or(1, |c| c.end.micros).max(t0 + 1);
    let plot = Plot { left: LEFT, top: TOP, width: plot_w, height: plot_h, t0, t1, y0, y1 };
    // Colour by count per interval (or bin): a column holding fewer of
    // them than its neighbours (the last, one beside a gap) is not cooler.
    let rate = |n: u64, column: &Column| n as f64 / column.weight as f64;
    let rates = || columns.iter().zip(&column_rows).flat_map(|(c, r)| r.values().map(move |&n| rate(n, c)));
    let max_rate = rates().fold(0.0, f64::max);
    // Log from the lowest rate drawn (1 where columns hold one interval
    // each), so rates below one (a sparse merged column) keep their contrast.
    let min_rate = rates().filter(|&r| r > 0.0).fold(1.0, f64::min);
    let colours = Range { min: min_rate, max: max_rate, scale: style.scale };
    let per_interval = columns.iter().any(|c| c.weight > 1);

    let mut svg = String::with_capacity(4096 + columns.len() * 2048);
    let w = &mut svg;
    let (w_, h_) = (style.width, style.height);
    let _ = writeln!(w, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        w,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w_}" height="{h_}" viewBox="0 0 {w_} {h_}" font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif" font-size="12" data-columns="{}" data-per-column="{per_column}">"#,
        columns.len()
    );
    let (title, subtitle) = titles(picture, &columns, per_column, sub_bits, style.scale);
    let _ = writeln!(w, "<title>{}</title>", xml(&title));
    let _ = writeln!(w, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(w, r#"<text x="{LEFT}" y="24" font-size="15" font-weight="bold">{}</text>"#, xml(&title));
    let _ = writeln!(w, r##"<text x="{LEFT}" y="44" fill="#444444">{}</text>"##, xml(&subtitle));

    // The cells.
    let _ = writeln!(
        w,
        r##"<g id="plot" data-left="{LEFT}" data-top="{TOP}" data-width="{plot_w}" data-height="{plot_h}" data-ymin-ns="{}" data-ymax-ns="{}" shape-rendering="crispEdges"><rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#ffffff" stroke="#999999"/>"##,
        y0.exp2(),
        y1.exp2()
    );
    for (column, rows) in columns.iter().zip(&column_rows) {
        let total = column.count();
        let (x0, x1) = (plot.x(column.start.micros), plot.x(column.end.micros));
        let intervals = match column.intervals {
            Some((a, b)) if a == b => format!(r#" data-interval="{a}""#),
            Some((a, b)) => format!(r#" data-interval="{a}-{b}""#),
            None => String::new(),
        };
        let _ = writeln!(
            w,
            r#"<g class="column"{intervals} data-start="{}" data-end="{}" data-count="{total}" data-lost="{}">"#,
            column.start.micros, column.end.micros, column.lost
        );
        let when = format!("{} to {}", column.start.clock(3), column.end.clock(3));
        for (range, &n) in rows.iter().rev() {
            let (low, high) = extent(range, unit);
            let (top, bottom) = (plot.y(high), plot.y(low));
            let from = if range.0 == 0 { "0".to_owned() } else { duration(low) };
            let tip = format!(
                "{when}\n{from} to {}\ncount {n}, {:.1} % of the column ({total})",
                duration(high),
                n as f64 * 100.0 / total as f64
            );
            let _ = writeln!(
                w,
                r#"<rect class="cell" x="{x0:.2}" y="{top:.2}" width="{:.2}" height="{:.2}" fill="{}" data-low="{}" data-high="{}" data-count="{n}"><title>{}</title></rect>"#,
                (x1 - x0).max(0.5),
                (bottom - top).max(0.5),
                colour(colours.position(rate(n, column))),
                range.0,
                range.1,
                xml(&tip)
            );
        }
        let _ = writeln!(w, "</g>");
    }
    if max_rate == 0.0 {
        let _ = writeln!(
            w,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#888888">no samples</text>"##,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    let _ = writeln!(w, "</g>");

    marks(w, &plot, &columns);
    losses(w, &plot, &columns);
    let zero_row = column_rows.iter().any(|rows| rows.keys().any(|r| r.0 == 0)).then_some(unit as f64);
    axes(w, &plot, &columns, zero_row);
    legend(w, &plot, &colours, per_interval);
    let _ = writeln!(w, "</svg>");
    svg
}

/// The title (tool, host, kernel, span) and the line under it (what the cells hold).
fn titles(picture: &Picture, columns: &[Column], per_column: usize, sub_bits: u32, scale: Scale) -> (String, String) {
    let mut title = picture.tool.clone();
    match (&picture.host, &picture.kernel) {
        (Some(host), Some(kernel)) => title += &format!(" on {host}, Linux {kernel}"),
        (Some(host), None) => title += &format!(" on {host}"),
        (None, Some(kernel)) => title += &format!(", Linux {kernel}"),
        (None, None) => title += " (host and kernel unknown)",
    }
    if let (Some(first), Some(last)) = (columns.first(), columns.last()) {
        let end = if first.start.date() == last.end.date() {
            last.end.clock(0)
        } else {
            format!("{} {}", last.end.date(), last.end.clock(0))
        };
        title += &format!(
            ": {} {} to {end} {} ({})",
            first.start.date(),
            first.start.clock(0),
            first.start.zone(),
            span(last.end.micros - first.start.micros)
        );
    }
    let mut parts = Vec::new();
    if let Some(command) = &picture.command {
        parts.push(command.join(" "));
    }
    parts.push(picture.series.clone());
    let samples: u64 = columns.iter().map(Column::count).sum();
    let lost: u64 = columns.iter().map(|c| c.lost).sum();
    let mut counts = format!("{} columns", columns.len());
    if per_column > 1 {
        counts += &format!(" of {per_column} intervals or bins each");
    }
    counts += &format!(", {samples} samples");
    if lost > 0 {
        counts += &format!(", {lost} lost");
    }
    parts.push(counts);
    parts.push(format!("rows: {} per power of two", 1u32 << sub_bits));
    let per_interval = if columns.iter().any(|c| c.weight > 1) { " per interval" } else { "" };
    parts.push(format!(
        "colour: count per cell{per_interval}, {} scale",
        match scale {
            Scale::Log => "log",
            Scale::Linear => "linear",
        }
    ));
    (title, parts.join("; "))
}

/// p50, p99 and max as steps over the columns.
fn marks(w: &mut String, plot: &Plot, columns: &[Column]) {
    for (k, (name, colour, dashes)) in MARKS.iter().enumerate() {
        let mut d = String::new();
        let mut prev_end = None;
        for column in columns {
            let Some(marks) = column.marks else {
                prev_end = None;
                continue;
            };
            let (x0, x1, y) = (plot.x(column.start.micros), plot.x(column.end.micros), plot.y(marks[k]));
            if prev_end == Some(column.start.micros) {
                let _ = write!(d, "V{y:.2}H{x1:.2}");
            } else {
                let _ = write!(d, "M{x0:.2} {y:.2}H{x1:.2}");
            }
            prev_end = Some(column.end.micros);
        }
        if !d.is_empty() {
            let dash = if dashes.is_empty() { String::new() } else { format!(r#" stroke-dasharray="{dashes}""#) };
            let _ = writeln!(
                w,
                r#"<path class="{name}" d="{d}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}><title>{name}</title></path>"#
            );
        }
    }
}

/// A red mark above each column in which the kernel lost samples.
fn losses(w: &mut String, plot: &Plot, columns: &[Column]) {
    for column in columns.iter().filter(|c| c.lost > 0) {
        let (x0, x1) = (plot.x(column.start.micros), plot.x(column.end.micros));
        let _ = writeln!(
            w,
            r##"<rect class="lost" x="{x0:.2}" y="{:.2}" width="{:.2}" height="4" fill="#d62728"><title>{} to {}: {} samples lost</title></rect>"##,
            plot.top - 7.0,
            (x1 - x0).max(1.0),
            column.start.clock(3),
            column.end.clock(3),
            column.lost
        );
    }
}

/// Time ticks (wall clock, in the capture's zone) and latency ticks (1, 2,
/// 5 × 10^k); the band of 0 (drawn below one unit, `zero_row`) is labelled 0.
fn axes(w: &mut String, plot: &Plot, columns: &[Column], zero_row: Option<f64>) {
    let bottom = plot.top + plot.height;
    let _ = writeln!(w, r##"<g class="axes" stroke="#555555" fill="#222222">"##);
    // Time: the first step giving labels at least 90 px apart.
    const STEPS: [i64; 22] = [
        100_000,
        200_000,
        500_000,
        1_000_000,
        2_000_000,
        5_000_000,
        10_000_000,
        15_000_000,
        30_000_000,
        60_000_000,
        120_000_000,
        300_000_000,
        600_000_000,
        900_000_000,
        1_800_000_000,
        3_600_000_000,
        7_200_000_000,
        10_800_000_000,
        21_600_000_000,
        43_200_000_000,
        86_400_000_000,
        604_800_000_000,
    ];
    let span = plot.t1 - plot.t0;
    let step = *STEPS.iter().find(|&&s| span as f64 / s as f64 <= plot.width / 90.0).unwrap_or(&STEPS[21]);
    if let Some(first) = columns.first() {
        let offset = first.start.offset as i64 * 1_000_000;
        let mut t = (plot.t0 + offset).div_euclid(step) * step - offset;
        while t <= plot.t1 {
            if t >= plot.t0 {
                let x = plot.x(t);
                let label = first.start.at(t).clock(if step < 1_000_000 { 1 } else { 0 });
                let _ = writeln!(
                    w,
                    r#"<line x1="{x:.2}" y1="{bottom}" x2="{x:.2}" y2="{}"/><text x="{x:.2}" y="{}" text-anchor="middle" stroke="none">{label}</text>"#,
                    bottom + 5.0,
                    bottom + 18.0
                );
            }
            t += step;
        }
        let _ = writeln!(
            w,
            r#"<text x="{}" y="{}" text-anchor="middle" stroke="none">time ({})</text>"#,
            plot.left + plot.width / 2.0,
            bottom + 38.0,
            first.start.zone()
        );
    }
    // Latency: decades, and 2 and 5 between them where there is room.
    let decade_px = plot.height * 10f64.log2() / (plot.y1 - plot.y0);
    let every = (18.0 / decade_px).ceil().max(1.0) as i32;
    let (lo, hi) = (plot.y0.exp2().max(zero_row.unwrap_or(0.0)), plot.y1.exp2());
    let mut ticks = Vec::new();
    for k in (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32) {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(k);
            let shown = if m == 1.0 { k.rem_euclid(every) == 0 } else { decade_px >= 60.0 };
            if shown && v >= lo * 0.999 && v <= hi * 1.001 {
                ticks.push((plot.y(v), duration(v)));
            }
        }
    }
    if let Some(unit) = zero_row {
        ticks.push((plot.y(unit * std::f64::consts::FRAC_1_SQRT_2), "0".into()));
    }
    for (y, label) in ticks {
        let _ = writeln!(
            w,
            r#"<line x1="{}" y1="{y:.2}" x2="{}" y2="{y:.2}"/><text x="{}" y="{:.2}" text-anchor="end" stroke="none">{label}</text>"#,
            plot.left - 5.0,
            plot.left,
            plot.left - 8.0,
            y + 4.0
        );
    }
    let (x, y) = (16.0, plot.top + plot.height / 2.0);
    let _ = writeln!(
        w,
        r#"<text x="{x}" y="{y}" text-anchor="middle" stroke="none" transform="rotate(-90 {x} {y})">latency (log scale)</text>"#
    );
    let _ = writeln!(w, "</g>");
}

/// The colour scale, and the lines' names.
/// The colour scale's range: from the lowest rate drawn to the highest.
struct Range {
    min: f64,
    max: f64,
    scale: Scale,
}

impl Range {
    /// Where `rate` falls on the colour scale, 0 to 1.
    fn position(&self, rate: f64) -> f64 {
        match self.scale {
            Scale::Log if self.max > self.min => (rate / self.min).ln() / (self.max / self.min).ln(),
            Scale::Log => 1.0,
            Scale::Linear => rate / self.max.max(f64::MIN_POSITIVE),
        }
    }
}

fn legend(w: &mut String, plot: &Plot, range: &Range, per_interval: bool) {
    let scale = range.scale;
    let x = plot.left + plot.width + 24.0;
    let (top, height) = (plot.top + 16.0, (plot.height * 0.55).min(240.0));
    let what = if per_interval { "count per cell per interval" } else { "count per cell" };
    let _ = writeln!(w, r#"<g class="legend"><text x="{x}" y="{}">{what}</text>"#, plot.top + 4.0);
    const STEPS: usize = 48;
    for i in 0..STEPS {
        let t = (i as f64 + 0.5) / STEPS as f64;
        let y = top + height * (1.0 - (i + 1) as f64 / STEPS as f64);
        let _ = writeln!(
            w,
            r#"<rect x="{x}" y="{y:.2}" width="16" height="{:.2}" fill="{}"/>"#,
            height / STEPS as f64 + 0.3,
            colour(t)
        );
    }
    // The top is the highest count (per interval, which may be a fraction).
    let max = if range.max > 0.0 { range.max } else { 1.0 };
    let mut ticks: Vec<f64> = match scale {
        Scale::Log => std::iter::once(range.min)
            .chain(std::iter::successors(Some(1.0), |v| Some(v * 10.0)).take_while(|&v| v < max))
            .collect(),
        Scale::Linear => vec![1.0, max / 2.0],
    };
    ticks.retain(|&t| t < max);
    ticks.push(max);
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    let position = |n: f64| range.position(n).clamp(0.0, 1.0);
    let mut last_y = f64::INFINITY;
    for n in ticks.into_iter().rev() {
        let y = top + height * (1.0 - position(n));
        if (last_y - y).abs() < 12.0 && n != max {
            continue;
        }
        last_y = y;
        let label = if n.fract() == 0.0 { format!("{n:.0}") } else { format!("{n:.2}") };
        let _ = writeln!(w, r#"<text x="{}" y="{:.2}">{label}</text>"#, x + 22.0, y + 4.0);
    }
    let scale_name = match scale {
        Scale::Log => "log scale",
        Scale::Linear => "linear scale",
    };
    let _ = writeln!(
        w,
        r##"<text x="{x}" y="{:.2}" fill="#444444">{scale_name}</text><text x="{x}" y="{:.2}" fill="#444444">blank: no samples</text>"##,
        top + height + 16.0,
        top + height + 31.0
    );
    for (i, (name, colour, dashes)) in MARKS.iter().enumerate() {
        let y = top + height + 54.0 + i as f64 * 18.0;
        let _ = writeln!(
            w,
            r#"<line x1="{x}" y1="{y:.2}" x2="{}" y2="{y:.2}" stroke="{colour}" stroke-width="1.6" stroke-dasharray="{dashes}"/><text x="{}" y="{:.2}">{name}</text>"#,
            x + 26.0,
            x + 32.0,
            y + 4.0
        );
    }
    let _ = writeln!(w, "</g>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tools_common::histogram::{slot, slot_bounds};

    #[test]
    fn the_kernels_slots_nest_in_rows() {
        for sub_bits in 0..=7 {
            for s in 0..4000 {
                let (low, high) = slot_bounds(s);
                let row = row_of(low, sub_bits);
                assert!(row.0 <= low && high <= row.1, "slot {s} [{low}, {high}] not inside row {row:?} ({sub_bits})");
            }
        }
        // 8 rows per power of two: 4096..4607 is one row.
        assert_eq!(row_of(4100, 3), (4096, 4607));
        assert_eq!(row_of(slot_bounds(slot(5000)).0, 3), (4608, 5119));
        assert_eq!(row_of(9, 3), (9, 9));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(512.0), "512 ns");
        assert_eq!(duration(4_096_000.0), "4.1 ms");
        assert_eq!(duration(1_000.0), "1 µs");
        assert_eq!(duration(2_304_000.0), "2.3 ms");
        assert_eq!(duration(12_345_678_901.0), "12.3 s");
        assert_eq!(span(30_000_000), "30 s");
        assert_eq!(span(1_500_000), "1.5 s");
        assert_eq!(span(330_000_000), "5 min 30 s");
    }

    #[test]
    fn colours_run_from_pale_to_dark() {
        assert_eq!(colour(0.0), "#ffeda0");
        assert_eq!(colour(1.0), "#800026");
        assert_eq!(xml("a<b & \"c\"\u{1b}"), "a&lt;b &amp; &quot;c&quot;\u{fffd}");
    }
}
