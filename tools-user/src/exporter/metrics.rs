//! One scrape's metrics, and their three expositions: Prometheus' classic
//! text (0.0.4), OpenMetrics text (1.0.0), and the protobuf
//! `MetricFamily` stream that carries native histograms.
//!
//! Histograms come straight from the kernel's log-linear slots (in
//! nanoseconds; see `tools_common::histogram`), cumulative since the
//! programs were loaded: nothing is ever reset.
//!
//! - Classic buckets end at 2^k − 1 ns, the last nanosecond of a slot, so
//!   each counts exactly the samples at or below its bound (samples are
//!   whole nanoseconds). The slots of the last power of two below the
//!   kernel's clamp (2^38 ns, 275 s, where larger values are counted in the
//!   last slot) go to `+Inf` only.
//! - Native buckets at schema `s` are (2^((i−1)/2^s), 2^(i/2^s)] seconds.
//!   A slot's samples are placed in the bucket of the slot's midpoint: a
//!   sample lies within half a slot (1/256 of its value) of it, so a
//!   quantile read from the native histogram is within a factor
//!   2^(2^−s) × (1 + 1/255) of the true one (0.94 % at schema 7, 1.5 % at 6,
//!   2.6 % at 5). Slots below 128 ns hold one value each: exact.

use std::fmt::Write as _;

use crate::histogram::Counts;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// A constant 1 whose labels say something (`_info`): a gauge in the
    /// classic text and protobuf, OpenMetrics' own type there.
    Info,
}

/// A histogram of nanosecond samples: counts per kernel slot and their sum.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    pub counts: Counts,
    pub sum_ns: u64,
}

#[derive(Clone, Debug)]
pub enum Value {
    Number(f64),
    Histogram(Histogram),
}

/// A series' labels, in the order they are written.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Debug)]
pub struct Series {
    pub labels: Labels,
    pub value: Value,
}

/// A metric family: its full name as in the classic text (counters end
/// in `_total`, info metrics in `_info`, histograms in their unit).
#[derive(Clone, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub series: Vec<Series>,
}

impl Family {
    /// Adds histograms as series: those with the same labels add up (keys
    /// that a collector names alike, such as operations it cannot name).
    pub fn add_histograms(&mut self, histograms: impl IntoIterator<Item = (Labels, Histogram)>) {
        let mut by_labels: std::collections::BTreeMap<Labels, Histogram> = Default::default();
        for (labels, histogram) in histograms {
            match by_labels.entry(labels) {
                // The first of its labels, most often the only one: taken whole.
                std::collections::btree_map::Entry::Vacant(vacant) => {
                    vacant.insert(histogram);
                }
                std::collections::btree_map::Entry::Occupied(mut added) => {
                    let added = added.get_mut();
                    added.counts.add(&histogram.counts);
                    added.sum_ns += histogram.sum_ns;
                }
            }
        }
        self.series.extend(by_labels.into_iter().map(|(labels, h)| Series { labels, value: Value::Histogram(h) }));
    }
}

/// The families of one scrape, in the order they were first asked for.
#[derive(Default)]
pub struct Scrape {
    pub families: Vec<Family>,
}

impl Scrape {
    /// The family `name`, created empty (and described) on first use.
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &'static str) -> &mut Family {
        let at = match self.families.iter().position(|f| f.name == name) {
            Some(at) => at,
            None => {
                self.families.push(Family { name, help, kind, series: Vec::new() });
                self.families.len() - 1
            }
        };
        &mut self.families[at]
    }

    /// Adds one number to family `name`.
    pub fn number(&mut self, name: &'static str, kind: Kind, help: &'static str, labels: Labels, value: f64) {
        self.family(name, kind, help).series.push(Series { labels, value: Value::Number(value) });
    }
}

/// The classic buckets' bounds: 2^k − 1 ns for k in this range (255 ns to
/// 137 s); above the last, `+Inf`.
const CLASSIC_OCTAVES: std::ops::RangeInclusive<u32> = 8..=37;

/// The zero bucket of native histograms: up to 2^−30 s (0.93 ns), so it
/// holds exactly the samples of 0 ns. Positive, which also marks a
/// histogram without samples as native to Prometheus 2.4x.
pub const ZERO_THRESHOLD: f64 = 1.0 / (1u64 << 30) as f64;

/// The schemas a native histogram can be derived at: the kernel's slots
/// are 1/128 of a power of two, so schema 7 is the finest that means anything.
pub const SCHEMAS: std::ops::RangeInclusive<i32> = -4..=7;

impl Histogram {
    pub fn count(&self) -> u64 {
        self.counts.total()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// (upper bound in seconds, cumulative count), lowest first, without `+Inf`.
    pub fn classic_buckets(&self) -> Vec<(f64, u64)> {
        let mut slots = self.counts.slots().peekable();
        let mut buckets = Vec::with_capacity(CLASSIC_OCTAVES.count());
        let mut cumulative = 0u64;
        for k in CLASSIC_OCTAVES {
            let bound_ns = (1u64 << k) - 1;
            while let Some((_, _, n)) = slots.next_if(|&(_, high, _)| high <= bound_ns) {
                cumulative += n;
            }
            buckets.push((bound_ns as f64 / 1e9, cumulative));
        }
        buckets
    }

    /// The native histogram at `schema`: the zero bucket's count and the
    /// positive buckets as (index, count), lowest index first.
    pub fn native_buckets(&self, schema: i32) -> (u64, Vec<(i32, u64)>) {
        let mut zero = 0;
        let mut buckets: Vec<(i32, u64)> = Vec::new();
        for (low, high, count) in self.counts.slots() {
            if high == 0 {
                zero += count;
                continue;
            }
            let midpoint_ns = low as f64 + (high - low) as f64 / 2.0;
            let index = native_index(midpoint_ns / 1e9, schema);
            match buckets.last_mut() {
                Some((last, n)) if *last == index => *n += count,
                _ => buckets.push((index, count)),
            }
        }
        (zero, buckets)
    }
}

/// The index of the native bucket (2^((i−1)/2^s), 2^(i/2^s)] holding `value` (> 0).
pub fn native_index(value: f64, schema: i32) -> i32 {
    (value.log2() * 2f64.powi(schema)).ceil() as i32
}

/// The upper bound of native bucket `index` at `schema`.
pub fn native_upper_bound(index: i32, schema: i32) -> f64 {
    2f64.powf(index as f64 / 2f64.powi(schema))
}

/// A label value or HELP text escaped for the text formats: backslash,
/// newline, and (in label values) the double quote.
fn escape(text: &str, quote: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// A sample value as both text formats spell it.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// `{name="value",...}`, or nothing for no labels.
fn labels(out: &mut String, labels: &[(&'static str, String)]) {
    if !labels.is_empty() {
        let _ = write!(out, "{{{}}}", label_pairs(labels));
    }
}

/// `name="value",...`, escaped: written once per series, whose histogram
/// repeats it on each of its 33 lines.
fn label_pairs(labels: &[(&'static str, String)]) -> String {
    let mut out = String::new();
    for (n, (name, value)) in labels.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let _ = write!(out, "{name}=\"{}\"", escape(value, true));
    }
    out
}

/// The classic buckets' `le` values as the text spells them, made once.
fn classic_le() -> &'static [String] {
    static LE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LE.get_or_init(|| CLASSIC_OCTAVES.map(|k| number(((1u64 << k) - 1) as f64 / 1e9)).collect())
}

/// Which text exposition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextFormat {
    /// `text/plain; version=0.0.4`
    Classic,
    /// `application/openmetrics-text; version=1.0.0`
    OpenMetrics,
}

impl Scrape {
    pub fn text(&self, format: TextFormat) -> String {
        let om = format == TextFormat::OpenMetrics;
        let mut out = String::with_capacity(16 * 1024);
        for family in &self.families {
            let (type_name, metadata_name) = match (family.kind, om) {
                (Kind::Counter, true) => ("counter", family.name.trim_end_matches("_total")),
                (Kind::Info, true) => ("info", family.name.trim_end_matches("_info")),
                (Kind::Counter, false) => ("counter", family.name),
                (Kind::Gauge | Kind::Info, _) => ("gauge", family.name),
                (Kind::Histogram, _) => ("histogram", family.name),
            };
            let _ = writeln!(out, "# HELP {metadata_name} {}", escape(family.help, om));
            let _ = writeln!(out, "# TYPE {metadata_name} {type_name}");
            if om && family.kind == Kind::Histogram && family.name.ends_with("_seconds") {
                let _ = writeln!(out, "# UNIT {metadata_name} seconds");
            }
            for series in &family.series {
                match &series.value {
                    Value::Number(value) => {
                        out.push_str(family.name);
                        labels(&mut out, &series.labels);
                        let _ = writeln!(out, " {}", number(*value));
                    }
                    Value::Histogram(h) => {
                        let name = family.name;
                        let pairs = label_pairs(&series.labels);
                        let comma = if pairs.is_empty() { "" } else { "," };
                        let buckets = h.classic_buckets().into_iter().map(|(_, count)| count);
                        for (le, count) in
                            classic_le().iter().map(String::as_str).chain(["+Inf"]).zip(buckets.chain([h.count()]))
                        {
                            let _ = writeln!(out, "{name}_bucket{{{pairs}{comma}le=\"{le}\"}} {count}");
                        }
                        let braced = if pairs.is_empty() { String::new() } else { format!("{{{pairs}}}") };
                        let _ = writeln!(out, "{name}_sum{braced} {}", number(h.sum_seconds()));
                        let _ = writeln!(out, "{name}_count{braced} {}", h.count());
                    }
                }
            }
        }
        if om {
            out.push_str("# EOF\n");
        }
        out
    }

    /// The protobuf exposition (`io.prometheus.client.MetricFamily`, each
    /// message preceded by its length): histograms carry both their
    /// classic buckets and the native ones at `schema`.
    pub fn protobuf(&self, schema: i32) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        for family in &self.families {
            let mut message = Proto::default();
            message.string(1, family.name);
            message.string(2, family.help);
            let metric_type = match family.kind {
                Kind::Counter => 0,
                Kind::Gauge | Kind::Info => 1,
                Kind::Histogram => 4,
            };
            message.varint_field(3, metric_type);
            for series in &family.series {
                let mut metric = Proto::default();
                for (name, value) in &series.labels {
                    let mut pair = Proto::default();
                    pair.string(1, name);
                    pair.string(2, value);
                    metric.message(1, &pair);
                }
                match (&series.value, family.kind) {
                    (Value::Number(value), Kind::Counter) => {
                        let mut counter = Proto::default();
                        counter.double(1, *value);
                        metric.message(3, &counter);
                    }
                    (Value::Number(value), _) => {
                        let mut gauge = Proto::default();
                        gauge.double(1, *value);
                        metric.message(2, &gauge);
                    }
                    (Value::Histogram(h), _) => metric.message(7, &native_message(h, schema)),
                }
                message.message(4, &metric);
            }
            let mut length = Proto::default();
            length.varint(message.0.len() as u64);
            out.extend_from_slice(&length.0);
            out.extend_from_slice(&message.0);
        }
        out
    }
}

/// The `Histogram` message: count, sum, classic buckets (without `+Inf`,
/// which Prometheus takes from the count), then the native part.
fn native_message(h: &Histogram, schema: i32) -> Proto {
    let mut m = Proto::default();
    m.varint_field(1, h.count());
    m.double(2, h.sum_seconds());
    for (bound, cumulative) in h.classic_buckets() {
        let mut bucket = Proto::default();
        bucket.varint_field(1, cumulative);
        bucket.double(2, bound);
        m.message(3, &bucket);
    }
    m.varint_field(5, zigzag(schema as i64));
    m.double(6, ZERO_THRESHOLD);
    let (zero, buckets) = h.native_buckets(schema);
    m.varint_field(7, zero);
    // Spans of consecutive indices; a gap of one or two empty buckets is
    // cheaper as zero counts inside a span than as a new span.
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let mut next_index = None;
    for &(index, count) in &buckets {
        match next_index {
            Some(next) if index - next <= 2 => {
                counts.extend(std::iter::repeat_n(0, (index - next) as usize));
                spans.last_mut().expect("a span is open").1 += (index - next) as u32 + 1;
            }
            Some(next) => spans.push((index - next, 1)),
            None => spans.push((index, 1)),
        }
        counts.push(count);
        next_index = Some(index + 1);
    }
    for (offset, length) in spans {
        let mut span = Proto::default();
        span.varint_field(1, zigzag(offset as i64));
        span.varint_field(2, length as u64);
        m.message(12, &span);
    }
    if !counts.is_empty() {
        let mut deltas = Proto::default();
        let mut previous = 0i64;
        for count in counts {
            deltas.varint(zigzag(count as i64 - previous));
            previous = count as i64;
        }
        m.bytes(13, &deltas.0);
    }
    m
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// A protobuf message being written: fields in the order added.
#[derive(Default)]
struct Proto(Vec<u8>);

impl Proto {
    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push(n as u8 | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn key(&mut self, field: u32, wire_type: u32) {
        self.varint(((field << 3) | wire_type) as u64);
    }

    /// A varint field; 0 is left out, as proto3 does.
    fn varint_field(&mut self, field: u32, n: u64) {
        if n != 0 {
            self.key(field, 0);
            self.varint(n);
        }
    }

    fn double(&mut self, field: u32, value: f64) {
        self.key(field, 1);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.key(field, 2);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn string(&mut self, field: u32, text: &str) {
        self.bytes(field, text.as_bytes());
    }

    fn message(&mut self, field: u32, message: &Proto) {
        self.bytes(field, &message.0);
    }
}

#[cfg(test)]
mod tests {
    use tools_common::histogram::slot;

    use super::*;

    fn histogram(samples_ns: &[u64]) -> Histogram {
        let mut counts = Counts::default();
        for &ns in samples_ns {
            counts.add_at(slot(ns), 1);
        }
        Histogram { counts, sum_ns: samples_ns.iter().sum() }
    }

    #[test]
    fn classic_buckets_count_exactly_the_samples_at_or_below_their_bound() {
        // Every sample at a seam and one past it.
        let samples: Vec<u64> = CLASSIC_OCTAVES.flat_map(|k| [(1 << k) - 1, 1 << k]).chain([0, 1, 137]).collect();
        let h = histogram(&samples);
        for (bound, cumulative) in h.classic_buckets() {
            let bound_ns = (bound * 1e9).round() as u64;
            assert_eq!(cumulative, samples.iter().filter(|&&s| s <= bound_ns).count() as u64, "le {bound}");
        }
        assert_eq!(h.classic_buckets()[0].0, 255e-9);
        assert_eq!(h.classic_buckets().last().unwrap().0, ((1u64 << 37) - 1) as f64 / 1e9);
    }

    #[test]
    fn native_quantiles_stay_within_the_stated_bound() {
        for schema in [0, 3, 5, 7] {
            let bound = 2f64.powf(2f64.powi(-schema)) * (1.0 + 1.0 / 255.0);
            // Samples spread over six powers of two: each one's bucket holds it within the bound.
            for ns in (128..8_000_000u64).step_by(997) {
                let h = histogram(&[ns]);
                let (zero, buckets) = h.native_buckets(schema);
                assert_eq!((zero, buckets.len()), (0, 1));
                let upper = native_upper_bound(buckets[0].0, schema);
                let lower = native_upper_bound(buckets[0].0 - 1, schema);
                let value = ns as f64 / 1e9;
                assert!(upper / value <= bound && value / lower <= bound, "{ns} ns at schema {schema}");
            }
        }
        // Below 128 ns a slot is one value: its bucket is its own.
        for ns in 1..128u64 {
            let (_, buckets) = histogram(&[ns]).native_buckets(7);
            let value = ns as f64 / 1e9;
            assert!(native_upper_bound(buckets[0].0 - 1, 7) < value && value <= native_upper_bound(buckets[0].0, 7));
        }
        assert_eq!(histogram(&[0, 0, 5]).native_buckets(7).0, 2, "zeros in the zero bucket");
    }

    #[test]
    fn text_formats() {
        let mut scrape = Scrape::default();
        scrape.number("x_lost_total", Kind::Counter, "Lost \"samples\"\\", vec![("tool", "a\"b\\c\nd".into())], 3.0);
        scrape.number("x_build_info", Kind::Info, "Build.", vec![("version", "1".into())], 1.0);
        let h = histogram(&[1000, 3000]);
        scrape
            .family("x_latency_seconds", Kind::Histogram, "Latency.")
            .series
            .push(Series { labels: vec![("disk", "loop0".into())], value: Value::Histogram(h) });
        let classic = scrape.text(TextFormat::Classic);
        assert!(classic.contains("# HELP x_lost_total Lost \"samples\"\\\\\n# TYPE x_lost_total counter\n"));
        assert!(classic.contains("x_lost_total{tool=\"a\\\"b\\\\c\\nd\"} 3\n"));
        assert!(classic.contains("# TYPE x_build_info gauge\n"));
        assert!(classic.contains("x_latency_seconds_bucket{disk=\"loop0\",le=\"0.000001023\"} 1\n"));
        assert!(classic.contains("x_latency_seconds_bucket{disk=\"loop0\",le=\"+Inf\"} 2\n"));
        assert!(classic.contains("x_latency_seconds_sum{disk=\"loop0\"} 0.000004\n"));
        assert!(classic.contains("x_latency_seconds_count{disk=\"loop0\"} 2\n"));
        assert!(!classic.contains("# EOF"));
        let om = scrape.text(TextFormat::OpenMetrics);
        assert!(om.contains("# HELP x_lost Lost \\\"samples\\\"\\\\\n# TYPE x_lost counter\nx_lost_total{"));
        assert!(om.contains("# TYPE x_build info\nx_build_info{version=\"1\"} 1\n"));
        assert!(om.contains("# TYPE x_latency_seconds histogram\n# UNIT x_latency_seconds seconds\n"));
        assert!(om.ends_with("# EOF\n"));
    }

    /// Reads back the varints of a protobuf stream (enough to check the framing).
    fn varint(bytes: &[u8], at: &mut usize) -> u64 {
        let (mut n, mut shift) = (0u64, 0);
        loop {
            let b = bytes[*at];
            *at += 1;
            n |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return n;
            }
            shift += 7;
        }
    }

    #[test]
    fn protobuf_is_length_delimited_and_spans_cover_the_deltas() {
        let mut scrape = Scrape::default();
        scrape.number("a_total", Kind::Counter, "A.", vec![], 1.0);
        scrape
            .family("b_seconds", Kind::Histogram, "B.")
            .series
            .push(Series { labels: vec![], value: Value::Histogram(histogram(&[1000, 1000, 1010, 1100, 5000])) });
        let bytes = scrape.protobuf(7);
        let mut at = 0;
        let mut messages = 0;
        while at < bytes.len() {
            let length = varint(&bytes, &mut at) as usize;
            at += length;
            messages += 1;
        }
        assert_eq!((at, messages), (bytes.len(), 2));
        let (_, buckets) = histogram(&[1000, 1000, 1010, 1100, 5000]).native_buckets(7);
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 5);
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }
}
