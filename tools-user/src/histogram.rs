//! Histograms: read from the kernel maps once per interval, printed as BCC's
//! log2 table (byte for byte) with count, percentiles and max beside it.
//!
//! The kernel counts into fine log-linear slots (`tools_common::histogram`)
//! and never clears them: each interval is the difference from the previous
//! read, so nothing recorded between a read and a clear can be lost.

use std::{collections::BTreeMap, io::Write};

use anyhow::{Context as _, Result};
use aya::Ebpf;
use hdrhistogram::Histogram as Hdr;
use serde_json::{json, Map, Value};
use tools_common::{
    histogram::{slot_bounds, HistKey, Totals, SLOTS, SUM_SLOT},
    map_names, Drops,
};

use crate::kernel_maps;

/// Counts per fine slot of one histogram over one interval: only the
/// slots that counted anything (a histogram of thousands of slots uses a
/// few dozen of them; an exporter scrape holds thousands of histograms).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Counts(BTreeMap<u32, u64>);

/// BCC's log2 row of a value: row k ≥ 1 covers [2^(k-1), 2^k - 1]; row 1 also holds 0.
fn log2_row(value: u64) -> usize {
    if value == 0 {
        1
    } else {
        64 - value.leading_zeros() as usize
    }
}

/// Percentiles reported beside every table.
pub const PERCENTILES: [(&str, f64); 4] = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

pub struct Summary {
    pub count: u64,
    /// Values at [`PERCENTILES`] and the maximum, within the fine slots' 0.8 %.
    pub percentiles: [u64; 4],
    pub max: u64,
}

impl Counts {
    /// Counts from one number per slot (`SLOTS` of them).
    pub fn from_slots(per_slot: Vec<u64>) -> Counts {
        assert_eq!(per_slot.len(), SLOTS, "one count per slot");
        let mut counts = Counts::default();
        for (slot, n) in per_slot.into_iter().enumerate() {
            counts.add_at(slot as u32, n);
        }
        counts
    }

    /// Counts from (slot, count) pairs in slot order, each slot once
    /// (slots beyond the histogram's ignored).
    pub fn from_ordered(slots: impl Iterator<Item = (u32, u64)>) -> Counts {
        Counts(slots.filter(|&(slot, n)| n > 0 && (slot as usize) < SLOTS).collect())
    }

    /// Counts `n` more in `slot` (a slot beyond the histogram's is ignored).
    pub fn add_at(&mut self, slot: u32, n: u64) {
        if n > 0 && (slot as usize) < SLOTS {
            *self.0.entry(slot).or_insert(0) += n;
        }
    }

    /// Adds another histogram's counts to these.
    pub fn add(&mut self, other: &Counts) {
        for (&slot, &n) in &other.0 {
            self.add_at(slot, n);
        }
    }

    /// What these counts (all since a start) add to `earlier` (since the same start).
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut delta = Counts::default();
        for (&slot, &n) in &self.0 {
            delta.add_at(slot, n.saturating_sub(earlier.0.get(&slot).copied().unwrap_or(0)));
        }
        delta
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// The non-empty slots as (low, high, count), lowest first.
    pub fn slots(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.0.iter().map(|(&slot, &n)| {
            let (low, high) = slot_bounds(slot);
            (low, high, n)
        })
    }

    /// Counts per BCC log2 row, index = row (index 0 unused, as in BCC).
    pub fn log2_rows(&self) -> Vec<u64> {
        let mut rows = vec![0u64; 66];
        for (low, _, count) in self.slots() {
            rows[log2_row(low)] += count;
        }
        rows
    }

    /// Count, percentiles and max, or None for an empty histogram.
    pub fn summary(&self) -> Option<Summary> {
        let count = self.total();
        if count == 0 {
            return None;
        }
        // Each slot enters hdrhistogram at its midpoint; 3 significant digits
        // keep hdrhistogram's own error (0.1 %) well below the slots'.
        let mut hdr = Hdr::<u64>::new(3).ok()?;
        for (low, high, n) in self.slots() {
            hdr.record_n(low + (high - low) / 2, n).ok()?;
        }
        let at = |q: f64| hdr.highest_equivalent(hdr.value_at_percentile(q)).min(hdr.max());
        Some(Summary { count, percentiles: PERCENTILES.map(|(_, q)| at(q)), max: hdr.max() })
    }
}

/// The rows BCC prints: from row 1 to the last non-zero row, as (low, high, count).
fn printed_rows(rows: &[u64]) -> Vec<(u64, u64, u64)> {
    let last = rows.iter().rposition(|&c| c > 0).unwrap_or(0);
    (1..=last)
        .map(|i| {
            let (mut low, high) = ((1u64 << i) >> 1, ((1u128 << i) - 1) as u64);
            if low == high {
                low -= 1;
            }
            (low, high, rows[i])
        })
        .collect()
}

/// BCC's star bar: floor(width × count / max) stars, padded to width.
fn stars(count: u64, max: u64, width: usize) -> String {
    let n = if max == 0 { 0 } else { ((width as u128 * count as u128) / max as u128) as usize };
    let mut bar = "*".repeat(n.min(width));
    if count > max {
        bar.pop();
        bar.push('+');
    }
    format!("{bar:<width$}")
}

/// Writes the log2 table exactly as BCC's Python `print_log2_hist` does,
/// then the summary line. An empty histogram prints nothing, as in BCC.
pub fn write_table(out: &mut impl Write, counts: &Counts, unit: &str) -> std::io::Result<()> {
    let rows = counts.log2_rows();
    let printed = printed_rows(&rows);
    if printed.is_empty() {
        return Ok(());
    }
    let max = printed.iter().map(|r| r.2).max().unwrap_or(0);
    let wide = printed.len() > 32;
    if wide {
        writeln!(out, "               {unit:<29} : count     distribution")?;
    } else {
        writeln!(out, "     {unit:<19} : count     distribution")?;
    }
    for (low, high, count) in printed {
        if wide {
            writeln!(out, "{low:>20} -> {high:<20} : {count:<8} |{}|", stars(count, max, 20))?;
        } else {
            writeln!(out, "{low:>10} -> {high:<10} : {count:<8} |{}|", stars(count, max, 40))?;
        }
    }
    if let Some(s) = counts.summary() {
        let [p50, p90, p99, p999] = s.percentiles;
        writeln!(out, "     count {}, p50 {p50}, p90 {p90}, p99 {p99}, p99.9 {p999}, max {} ({unit})", s.count, s.max)?;
    }
    Ok(())
}

/// One histogram as a JSON object: the table's rows as inclusive buckets,
/// the summary, and the kernel's non-empty fine slots as `[low, high,
/// count]` (inclusive, in the unit: finer rows for a heatmap, percentiles
/// of merged histograms). The caller adds schema, tool, time and key.
pub fn json_fields(counts: &Counts, unit: &str) -> Map<String, Value> {
    let rows = printed_rows(&counts.log2_rows());
    let summary = counts.summary();
    let mut obj = Map::new();
    obj.insert("unit".into(), json!(unit));
    obj.insert("count".into(), json!(counts.total()));
    obj.insert(
        "buckets".into(),
        rows.iter().map(|&(low, high, count)| json!({"low": low, "high": high, "count": count})).collect(),
    );
    for (i, (name, _)) in PERCENTILES.iter().enumerate() {
        obj.insert((*name).into(), json!(summary.as_ref().map(|s| s.percentiles[i])));
    }
    obj.insert("max".into(), json!(summary.as_ref().map(|s| s.max)));
    obj.insert("slots".into(), counts.slots().map(|(low, high, count)| json!([low, high, count])).collect());
    obj
}

/// One interval's worth of histograms.
pub struct Interval {
    /// Unkeyed: one entry with key None (possibly empty). Keyed: one per key seen, sorted.
    pub histograms: Vec<(Option<u64>, Counts)>,
    /// Sum and count over the interval, for tools that keep them.
    pub totals: Option<Totals>,
    /// What the kernel could not record during the interval.
    pub dropped: Drops,
}

impl Interval {
    /// The keyed histograms added up by `group` of their keys (each key's
    /// container), sorted by group.
    pub fn regroup(&mut self, group: &dyn Fn(u64) -> u64) {
        let mut by_group: BTreeMap<Option<u64>, Counts> = BTreeMap::new();
        for (key, counts) in self.histograms.drain(..) {
            by_group.entry(key.map(group)).or_default().add(&counts);
        }
        self.histograms = by_group.into_iter().collect();
    }
}

impl HistogramMaps {
    fn reclaim(&mut self, alive: &dyn Fn(u64) -> bool) {
        let keys: std::collections::BTreeSet<u64> = self.seen_keyed.keys().map(|k| k.key).collect();
        let dead: std::collections::BTreeSet<u64> = keys.into_iter().filter(|&key| !alive(key)).collect();
        if dead.is_empty() {
            return;
        }
        let gone: Vec<HistKey> = self.seen_keyed.keys().filter(|k| dead.contains(&k.key)).copied().collect();
        // Their samples were all read above; a failed removal only keeps the
        // entry (and what was seen of it, so nothing is counted twice).
        for key in self.keyed.remove(&gone) {
            self.seen_keyed.remove(key);
        }
    }
}

/// Map sizes for the loader: without keyed histograms the keyed table is
/// still referenced by the programs but never written, so it gets one
/// entry instead of preallocating thousands per CPU (milliseconds of
/// start-up).
pub fn map_sizes(keyed_mode: bool) -> Vec<(&'static str, u32)> {
    if keyed_mode {
        Vec::new()
    } else {
        vec![(map_names::KEYED_HIST, 1)]
    }
}

/// The histogram maps of a loaded tool, read as interval deltas.
pub struct HistogramMaps {
    /// None for an event tool's (see [`HistogramMaps::take_keyed`]).
    hist: Option<kernel_maps::Hist>,
    keyed: kernel_maps::KeyedHist,
    drops: kernel_maps::Counters<Drops>,
    totals: Option<kernel_maps::Counters<Totals>>,
    keyed_mode: bool,
    seen: Counts,
    seen_keyed: BTreeMap<HistKey, u64>,
    /// The keyed table's entries as [`HistogramMaps::keyed_total`] last read them.
    last_keys: Vec<HistKey>,
    seen_drops: Drops,
    seen_totals: Totals,
}

impl HistogramMaps {
    /// A tool's maps: the unkeyed histogram (keyed, only where its object
    /// has one: an event tool's has none), the keyed table, the drop
    /// counters, and the totals (`-e`, the exporter's sums) if asked for.
    pub fn take(ebpf: &mut Ebpf, keyed_mode: bool, totals: bool) -> Result<Self> {
        Ok(HistogramMaps {
            hist: match !keyed_mode || ebpf.map(map_names::HIST).is_some() {
                true => Some(kernel_maps::Hist::take(ebpf, map_names::HIST)?),
                false => None,
            },
            keyed: kernel_maps::KeyedHist::take(ebpf, map_names::KEYED_HIST)?,
            drops: kernel_maps::Counters::take(ebpf, map_names::DROPS)?,
            totals: match totals {
                true => Some(kernel_maps::Counters::take(ebpf, map_names::TOTALS)?),
                false => None,
            },
            keyed_mode,
            seen: Counts::default(),
            seen_keyed: BTreeMap::new(),
            last_keys: Vec::new(),
            seen_drops: Drops::default(),
            seen_totals: Totals::default(),
        })
    }

    /// An event tool's maps, counting in the kernel for the exporter: its
    /// keyed table and drop counters (it has no unkeyed histogram).
    pub fn take_keyed(ebpf: &mut Ebpf) -> Result<Self> {
        Self::take(ebpf, true, false)
    }

    /// Reads what was counted since the last call. `key_alive` (for keys
    /// that name processes or threads) lets entries of exited ones be
    /// reclaimed: nothing can count under them any more, and the kernel
    /// table would otherwise fill up on a long run.
    pub fn read_interval(&mut self, key_alive: Option<&dyn Fn(u64) -> bool>) -> Result<Interval> {
        let mut histograms = Vec::new();
        if self.keyed_mode {
            let mut by_key: BTreeMap<u64, Counts> = BTreeMap::new();
            for (key, now) in self.keyed.entries()? {
                let before = self.seen_keyed.insert(key, now).unwrap_or(0);
                if now > before && (key.slot as usize) < SLOTS {
                    by_key.entry(key.key).or_default().add_at(key.slot, now - before);
                }
            }
            histograms.extend(by_key.into_iter().map(|(k, c)| (Some(k), c)));
            if let Some(alive) = key_alive {
                self.reclaim(alive);
            }
        } else {
            let now = self.unkeyed_total()?;
            let delta = now.since(&self.seen);
            self.seen = now;
            histograms.push((None, delta));
        }
        let now = self.drops_total()?;
        let dropped = now.since(&self.seen_drops);
        self.seen_drops = now;
        let totals = match self.totals_total()? {
            Some(now) => {
                let delta =
                    Totals { sum_ns: now.sum_ns - self.seen_totals.sum_ns, count: now.count - self.seen_totals.count };
                self.seen_totals = now;
                Some(delta)
            }
            None => None,
        };
        Ok(Interval { histograms, dropped, totals })
    }

    /// The unkeyed histogram: everything counted since the programs were
    /// loaded, every CPU's counts added up.
    pub fn unkeyed_total(&self) -> Result<Counts> {
        let hist = self.hist.as_ref().context("this tool keeps no unkeyed histogram")?;
        Ok(Counts::from_slots(hist.per_slot()?))
    }

    /// Every key's histogram and sum of values (its `SUM_SLOT` entry, in
    /// nanoseconds; 0 where the tool keeps none), since the programs were loaded.
    pub fn keyed_total(&mut self) -> Result<BTreeMap<u64, (Counts, u64)>> {
        let entries = self.keyed.entries()?;
        self.last_keys = entries.iter().map(|(key, _)| *key).collect();
        // In key order, each key's slots together and in order: every
        // histogram is built whole, in one pass.
        let by_key = entries.chunk_by(|a, b| a.0.key == b.0.key).map(|entries| {
            let sum = entries.iter().filter(|(key, _)| key.slot == SUM_SLOT).map(|(_, n)| n).sum();
            let slots = entries.iter().map(|(key, n)| (key.slot, *n));
            (entries[0].0.key, (Counts::from_ordered(slots), sum))
        });
        Ok(by_key.collect())
    }

    /// Removes every entry of `keys` from the keyed table (processes that
    /// exited), as [`HistogramMaps::keyed_total`] last read it; returns how
    /// many entries went. (One made since, a last sample of a key that
    /// goes, is removed the next time the key is named gone.)
    pub fn remove_keys(&mut self, keys: &std::collections::BTreeSet<u64>) -> usize {
        let gone: Vec<HistKey> = self.last_keys.iter().filter(|k| keys.contains(&k.key)).copied().collect();
        self.keyed.remove(&gone).len()
    }

    /// What the kernel side could not record, since the programs were loaded.
    pub fn drops_total(&self) -> Result<Drops> {
        Ok(self.drops.copies()?.iter().fold(Drops::default(), |a, d| a.add(d)))
    }

    /// Sum and count of every value, since the programs were loaded (tools
    /// that keep them).
    pub fn totals_total(&self) -> Result<Option<Totals>> {
        let Some(map) = &self.totals else { return Ok(None) };
        let add = |a: Totals, t: &Totals| Totals { sum_ns: a.sum_ns + t.sum_ns, count: a.count + t.count };
        Ok(Some(map.copies()?.iter().fold(Totals::default(), add)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tools_common::histogram::slot;

    fn counts(values: &[(u64, u64)]) -> Counts {
        let mut c = Counts::default();
        for &(v, n) in values {
            c.add_at(slot(v), n);
        }
        c
    }

    fn table(c: &Counts) -> String {
        let mut out = Vec::new();
        write_table(&mut out, c, "usecs").unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn slots_nest_in_powers_of_two_and_stay_within_one_percent() {
        for v in (0..200_000u64).chain([1 << 20, (1 << 30) + 12345, (1 << 37) + 1]) {
            let (low, high) = slot_bounds(slot(v));
            assert!(low <= v && v <= high, "{v} not in [{low}, {high}]");
            assert_eq!(log2_row(low), log2_row(high), "slot of {v} spans two log2 rows");
            assert!((high - low) as f64 <= low as f64 / 100.0 || high - low == 0);
        }
    }

    #[test]
    fn table_matches_bcc_python_byte_for_byte() {
        // Rows and stars as BCC's table.py prints them: header with five
        // spaces before "distribution", leading zero rows, none after the last.
        let c = counts(&[(0, 233), (3, 742), (5, 10)]);
        let expected = "     usecs               : count     distribution\n\
                        \x20        0 -> 1          : 233      |************                            |\n\
                        \x20        2 -> 3          : 742      |****************************************|\n\
                        \x20        4 -> 7          : 10       |                                        |\n";
        let got = table(&c);
        assert!(got.starts_with(expected), "got:\n{got}");
        assert_eq!(got.lines().count(), 5);
        assert_eq!(got.lines().last().unwrap(), "     count 985, p50 3, p90 3, p99 5, p99.9 5, max 5 (usecs)");
    }

    #[test]
    fn leading_zero_rows_are_printed_and_empty_prints_nothing() {
        let got = table(&counts(&[(3000, 5)]));
        let lines: Vec<_> = got.lines().collect();
        assert_eq!(lines[1], "         0 -> 1          : 0        |                                        |");
        assert_eq!(lines[12], "      2048 -> 4095       : 5        |****************************************|");
        assert_eq!(lines.len(), 14);
        assert_eq!(table(&Counts::default()), "");
    }

    #[test]
    fn wide_layout_above_32_rows() {
        let got = table(&counts(&[(1 << 33, 1)]));
        assert!(got.starts_with("               usecs                         : count     distribution\n"));
        assert!(got.contains("          8589934592 -> 17179869183          : 1        |********************|\n"));
    }

    #[test]
    fn percentiles_within_one_percent() {
        let values: Vec<(u64, u64)> = (1..=10_000).map(|v| (v, 1)).collect();
        let s = counts(&values).summary().unwrap();
        for (got, want) in s.percentiles.iter().zip([5000.0, 9000.0, 9900.0, 9990.0]) {
            assert!((*got as f64 - want).abs() / want < 0.01, "{got} vs {want}");
        }
        assert!((s.max as f64 - 10_000.0).abs() / 10_000.0 < 0.01);
    }
}
