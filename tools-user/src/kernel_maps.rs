//! The maps every tool shares, read in the shape of whichever build was
//! loaded (see tools-ebpf's `maps`): per-CPU maps in the modern build,
//! plain maps added to atomically in the legacy one. The map's own type
//! says which.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap},
    Ebpf, Pod,
};
use tools_common::histogram::{HistKey, Histogram, SLOTS};

/// Takes map `name` out of a loaded object.
pub fn take(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name).with_context(|| format!("eBPF object has no map {name}"))
}

/// A struct of counters (`tools_ebpf::maps::Counters`): each CPU's copy, or
/// the one shared.
pub enum Counters<T: Pod> {
    PerCpu(PerCpuArray<MapData, T>),
    Shared(Array<MapData, T>),
}

impl<T: Pod> Counters<T> {
    pub fn take(ebpf: &mut Ebpf, name: &str) -> Result<Self> {
        Ok(match take(ebpf, name)? {
            map @ Map::PerCpuArray(_) => Counters::PerCpu(PerCpuArray::try_from(map)?),
            map => Counters::Shared(Array::try_from(map)?),
        })
    }

    /// Every copy (one per CPU, or the shared one), to be added up.
    pub fn copies(&self) -> Result<Vec<T>> {
        Ok(match self {
            Counters::PerCpu(map) => map.get(&0, 0).context("reading per-CPU counters")?.iter().copied().collect(),
            Counters::Shared(map) => vec![map.get(&0, 0).context("reading counters")?],
        })
    }
}

/// The unkeyed histogram (`tools_ebpf::maps::Hist`).
pub enum Hist {
    PerCpu(PerCpuArray<MapData, Histogram>),
    /// One count per slot.
    Slots(Array<MapData, u64>),
}

impl Hist {
    pub fn take(ebpf: &mut Ebpf, name: &str) -> Result<Self> {
        Ok(match take(ebpf, name)? {
            map @ Map::PerCpuArray(_) => Hist::PerCpu(PerCpuArray::try_from(map)?),
            map => Hist::Slots(Array::try_from(map)?),
        })
    }

    /// Every CPU's counts added up, one per slot.
    pub fn per_slot(&self) -> Result<Vec<u64>> {
        let mut total = vec![0u64; SLOTS];
        match self {
            Hist::PerCpu(map) => {
                for cpu in map.get(&0, 0).context("reading the histogram")?.iter() {
                    for (sum, n) in total.iter_mut().zip(cpu.slots.iter()) {
                        *sum += n;
                    }
                }
            }
            Hist::Slots(map) => {
                for (slot, sum) in total.iter_mut().enumerate() {
                    *sum = map.get(&(slot as u32), 0).context("reading the histogram")?;
                }
            }
        }
        Ok(total)
    }
}

/// Histograms by key (`tools_ebpf::maps::KeyedHist`).
pub enum KeyedHist {
    PerCpu(PerCpuHashMap<MapData, HistKey, u64>),
    Shared(HashMap<MapData, HistKey, u64>),
}

impl KeyedHist {
    pub fn take(ebpf: &mut Ebpf, name: &str) -> Result<Self> {
        Ok(match take(ebpf, name)? {
            map @ Map::PerCpuHashMap(_) => KeyedHist::PerCpu(PerCpuHashMap::try_from(map)?),
            map => KeyedHist::Shared(HashMap::try_from(map)?),
        })
    }

    /// Every entry, every CPU's counts added up.
    pub fn entries(&self) -> Result<BTreeMap<HistKey, u64>> {
        let mut all = BTreeMap::new();
        match self {
            KeyedHist::PerCpu(map) => {
                for entry in map.iter() {
                    let (key, per_cpu) = entry.context("reading the keyed histogram")?;
                    all.insert(key, per_cpu.iter().sum());
                }
            }
            KeyedHist::Shared(map) => {
                for entry in map.iter() {
                    let (key, n) = entry.context("reading the keyed histogram")?;
                    all.insert(key, n);
                }
            }
        }
        Ok(all)
    }

    /// Every key in the table.
    pub fn keys(&self) -> Vec<HistKey> {
        match self {
            KeyedHist::PerCpu(map) => map.keys().filter_map(Result::ok).collect(),
            KeyedHist::Shared(map) => map.keys().filter_map(Result::ok).collect(),
        }
    }

    /// Removes `key`'s entry; false if it could not be.
    pub fn remove(&mut self, key: &HistKey) -> bool {
        match self {
            KeyedHist::PerCpu(map) => map.remove(key).is_ok(),
            KeyedHist::Shared(map) => map.remove(key).is_ok(),
        }
    }
}
