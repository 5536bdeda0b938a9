//! The maps every tool shares, read in the shape of whichever build was
//! loaded (see tools-ebpf's `maps`): per-CPU maps in the modern build,
//! plain maps added to atomically in the legacy one. The map's own type
//! says which.

use std::{
    cell::Cell,
    os::fd::{AsFd as _, OwnedFd},
};

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
pub struct KeyedHist {
    map: Keyed,
    /// A copy of the map's descriptor, for the batch commands (see [`batch`]).
    fd: OwnedFd,
    /// Values per entry: one per possible CPU (per-CPU), else one.
    copies: usize,
    /// Whether to ask for batches: until the kernel refuses one (before 5.6).
    batches: Cell<bool>,
}

enum Keyed {
    PerCpu(PerCpuHashMap<MapData, HistKey, u64>),
    Shared(HashMap<MapData, HistKey, u64>),
}

impl KeyedHist {
    pub fn take(ebpf: &mut Ebpf, name: &str) -> Result<Self> {
        let map = take(ebpf, name)?;
        let data = match &map {
            Map::PerCpuHashMap(data) | Map::HashMap(data) => data,
            _ => anyhow::bail!("map {name} is not a hash map"),
        };
        let fd = data.fd().as_fd().try_clone_to_owned().context("duplicating the keyed histogram's descriptor")?;
        Ok(match map {
            map @ Map::PerCpuHashMap(_) => {
                let copies = aya::util::nr_cpus().map_err(|(path, err)| anyhow::anyhow!("reading {path}: {err}"))?;
                KeyedHist { map: Keyed::PerCpu(PerCpuHashMap::try_from(map)?), fd, copies, batches: Cell::new(true) }
            }
            map => KeyedHist { map: Keyed::Shared(HashMap::try_from(map)?), fd, copies: 1, batches: Cell::new(true) },
        })
    }

    /// Every entry, every CPU's counts added up, in key order: in batches
    /// where the kernel has them, else entry by entry.
    pub fn entries(&self) -> Result<Vec<(HistKey, u64)>> {
        let mut all = self.unordered_entries()?;
        all.sort_unstable_by_key(|(key, _)| *key);
        // A key met twice (deleted and made again between two batches) is
        // one counter read twice: the later, larger read stands.
        all.dedup_by(|again, kept| {
            let same = again.0 == kept.0;
            if same {
                kept.1 = kept.1.max(again.1);
            }
            same
        });
        Ok(all)
    }

    fn unordered_entries(&self) -> Result<Vec<(HistKey, u64)>> {
        if self.batches.get() {
            match batch::lookup(self.fd.as_fd(), self.copies) {
                Ok(all) => return Ok(all),
                Err(err) if batch::unsupported(&err) => {
                    log::info!("keyed histograms read entry by entry: no batch lookup here ({err})");
                    self.batches.set(false);
                }
                Err(err) => return Err(err).context("reading the keyed histogram"),
            }
        }
        let mut all = Vec::new();
        match &self.map {
            Keyed::PerCpu(map) => {
                for entry in map.iter() {
                    let (key, per_cpu) = entry.context("reading the keyed histogram")?;
                    all.push((key, per_cpu.iter().sum()));
                }
            }
            Keyed::Shared(map) => {
                for entry in map.iter() {
                    let (key, n) = entry.context("reading the keyed histogram")?;
                    all.push((key, n));
                }
            }
        }
        Ok(all)
    }

    /// Removes the entries of `keys`; returns those that went. In one
    /// batch where the kernel has them (a batch stops at a key that is
    /// not there: the rest are removed one by one).
    pub fn remove<'k>(&mut self, keys: &'k [HistKey]) -> Vec<&'k HistKey> {
        let in_batch = match self.batches.get() {
            true => batch::delete(self.fd.as_fd(), keys),
            false => 0,
        };
        let (batched, rest) = keys.split_at(in_batch.min(keys.len()));
        let one_by_one = rest.iter().filter(|key| match &mut self.map {
            Keyed::PerCpu(map) => map.remove(key).is_ok(),
            Keyed::Shared(map) => map.remove(key).is_ok(),
        });
        batched.iter().chain(one_by_one).collect()
    }
}

/// BPF_MAP_LOOKUP_BATCH and BPF_MAP_DELETE_BATCH (Linux 5.6), which aya
/// 0.14 lacks: it reads a hash map with two system calls per entry (the
/// next key, then its value). A keyed histogram holds an entry per key and
/// latency slot seen, tens of thousands at a thousand series; a batch
/// reads thousands of them in one call.
mod batch {
    use std::{
        io,
        os::fd::{AsRawFd as _, BorrowedFd},
    };

    use tools_common::histogram::HistKey;

    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
    /// The kernel's ENOTSUPP, which it returns for a map without batches.
    const ENOTSUPP: i32 = 524;

    /// The batch commands' member of `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct Attr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }

    fn bpf(command: libc::c_long, attr: &mut Attr) -> io::Result<()> {
        // SAFETY: `attr` is the command's member of bpf_attr (the kernel
        // zero-fills the rest), and its pointers lead to buffers of `count`
        // keys and values, which outlive the call.
        let ret = unsafe { libc::syscall(libc::SYS_bpf, command, attr as *mut Attr, std::mem::size_of::<Attr>()) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A kernel or map that has no batches (before 5.6): read otherwise.
    pub fn unsupported(err: &io::Error) -> bool {
        matches!(err.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | ENOTSUPP))
    }

    const NO_KEY: HistKey = HistKey { key: 0, slot: 0, _pad: 0 };

    /// Every entry of hash map `fd`, its `copies` values added up, in the
    /// table's order.
    pub fn lookup(fd: BorrowedFd<'_>, copies: usize) -> io::Result<Vec<(HistKey, u64)>> {
        let mut all = Vec::new();
        let mut chunk = 4096usize;
        // Buffers for `chunk` entries, reused from batch to batch.
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        // Where the next batch starts: a bucket number for hash maps (u32),
        // given room for any map's.
        let (mut at, mut next) = ([0u64; 1], [0u64; 1]);
        let mut first = true;
        loop {
            keys.resize(chunk, NO_KEY);
            values.resize(chunk * copies, 0u64);
            let mut attr = Attr {
                in_batch: if first { 0 } else { at.as_ptr() as u64 },
                out_batch: next.as_mut_ptr() as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: chunk as u32,
                map_fd: fd.as_raw_fd() as u32,
                ..Attr::default()
            };
            let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
            let done = match result {
                Ok(()) => false,
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => true,
                // One bucket holds more entries than a batch has room for
                // (no bucket holds more than the table: the doubling ends).
                Err(err) if err.raw_os_error() == Some(libc::ENOSPC) && attr.count == 0 && chunk < 1 << 24 => {
                    chunk *= 2;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let n = (attr.count as usize).min(chunk);
            all.extend(
                keys[..n].iter().zip(values.chunks_exact(copies)).map(|(key, counts)| (*key, counts.iter().sum())),
            );
            if done {
                return Ok(all);
            }
            at = next;
            first = false;
        }
    }

    /// Deletes `keys` from map `fd`, in order, until one is not there (or
    /// the kernel has no batches); returns how many went.
    pub fn delete(fd: BorrowedFd<'_>, keys: &[HistKey]) -> usize {
        if keys.is_empty() {
            return 0;
        }
        let mut attr = Attr {
            keys: keys.as_ptr() as u64,
            count: keys.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Attr::default()
        };
        match bpf(BPF_MAP_DELETE_BATCH, &mut attr) {
            Ok(()) => keys.len(),
            // The kernel writes how many went only once it has begun: a
            // refusal before that leaves the count as it was given.
            Err(_) if (attr.count as usize) < keys.len() => attr.count as usize,
            Err(_) => 0,
        }
    }
}
