//! The event path shared by the event tools: the BPF ring buffer in the
//! modern build (5.8+), a perf event array in the legacy one, drained in batches,
//! with the kernel's own count of events it could not hand over. Events
//! that follow one another (a read, then the fsync after it) come out in
//! that order on either path: the ring buffer is one queue, in the order
//! events were sent; a perf batch takes every CPU's buffer and is put back
//! in time order before it is handed over.

use std::{future::poll_fn, mem::MaybeUninit, task::Poll};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{
        perf::{PerfEvent, PerfEventArrayBuffer},
        Map, MapData, PerfEventArray, RingBuf,
    },
    util::online_cpus,
    Ebpf,
};
use tokio::io::unix::AsyncFd;
use tools_common::{map_names, Drops, Event};

use crate::{
    cli::{EventArgs, EventHistogramArgs},
    kernel_maps,
    loader::Build,
};

/// The event path a tool takes: its build (ring buffer or perf event
/// array) and the buffers' size.
#[derive(Clone, Copy, Debug)]
pub struct EventPath {
    pub build: Build,
    /// Buffer pages per CPU (`--buffer-pages`).
    pub pages_per_cpu: usize,
    /// The tool counts in its kernel's keyed histogram instead of sending
    /// events (the exporter's tools).
    pub counting: bool,
}

impl EventPath {
    /// The path of a command-line event tool.
    pub fn new(build: Build, events: &EventArgs) -> EventPath {
        EventPath { build, pages_per_cpu: events.buffer_pages as usize, counting: false }
    }

    /// The path of a command-line event tool that may be asked for
    /// `--histogram`: then it counts in the kernel, as the exporter's do.
    pub fn of_event_tool(build: Build, events: &EventArgs, histogram: &EventHistogramArgs) -> EventPath {
        match histogram.histogram {
            true => EventPath::counting_in_kernel(build),
            false => EventPath::new(build, events),
        }
    }

    /// The path of a tool that counts in the kernel and sends no events
    /// (the exporter's): its buffers at their smallest.
    pub fn counting_in_kernel(build: Build) -> EventPath {
        EventPath { build, pages_per_cpu: 1, counting: true }
    }

    /// Map sizes for the loader: the ring buffer holds `pages` pages per CPU
    /// (a power of two in all, as the kernel requires).
    pub fn max_entries(&self) -> Vec<(&'static str, u32)> {
        let cpus = online_cpus().map(|c| c.len()).unwrap_or(1);
        // At most 1 GiB: the kernel's limit is below 4 GiB, and the size is a u32.
        let bytes = (self.pages_per_cpu * cpus * page_size()).next_power_of_two().min(1 << 30);
        let mut sizes = Vec::new();
        if self.build == Build::Modern {
            sizes.push((map_names::EVENTS, bytes as u32));
        }
        // An event tool's keyed histogram table is the exporter's: one
        // entry where it is unused.
        if !self.counting {
            sizes.push((map_names::KEYED_HIST, 1));
        }
        sizes
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// How often the ring buffer is drained: its writers do not wake the
/// reader per event (see `emit` in tools-ebpf), only when it fills up.
const RING_POLL: std::time::Duration = std::time::Duration::from_millis(50);

enum Source {
    Ring(AsyncFd<RingBuf<MapData>>),
    Perf(Vec<AsyncFd<PerfEventArrayBuffer<MapData>>>),
}

/// Events from the kernel, and the drop counters that go with them.
pub struct EventStream {
    source: Source,
    drops: kernel_maps::Counters<Drops>,
    reported: Drops,
    /// A perf batch, every CPU's samples, before it is put in time order.
    batch: PerfBatch,
    /// When the ring buffer is next drained without a wakeup.
    ring_poll: tokio::time::Interval,
}

impl EventStream {
    pub fn open(ebpf: &mut Ebpf, path: &EventPath) -> Result<Self> {
        let pages_per_cpu = path.pages_per_cpu;
        let source = match kernel_maps::take(ebpf, map_names::EVENTS)? {
            map @ Map::RingBuf(_) => Source::Ring(watch(RingBuf::try_from(map)?)?),
            map => {
                let mut array = PerfEventArray::try_from(map)?;
                let cpus = online_cpus().map_err(|(_, err)| err).context("listing online CPUs")?;
                let mut buffers = Vec::new();
                for cpu in cpus {
                    buffers.push(watch(array.open(cpu, Some(pages_per_cpu.next_power_of_two()))?)?);
                }
                Source::Perf(buffers)
            }
        };
        let drops = kernel_maps::Counters::take(ebpf, map_names::DROPS)?;
        let mut ring_poll = tokio::time::interval(RING_POLL);
        ring_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(EventStream { source, drops, reported: Drops::default(), batch: PerfBatch::default(), ring_poll })
    }

    /// Waits until events are ready (or, on the ring buffer, for its next
    /// poll), then hands each available one to `f`: one wakeup drains a
    /// whole batch.
    pub async fn next_batch(&mut self, mut f: impl FnMut(&[u8])) -> Result<()> {
        let poll = &mut self.ring_poll;
        match &mut self.source {
            Source::Ring(fd) => {
                tokio::select! {
                    guard = fd.readable_mut() => {
                        let mut guard = guard?;
                        while let Some(item) = guard.get_inner_mut().next() {
                            f(&item);
                        }
                        guard.clear_ready();
                    }
                    _ = poll.tick() => {
                        while let Some(item) = fd.get_mut().next() {
                            f(&item);
                        }
                    }
                }
            }
            Source::Perf(buffers) => {
                // Wait for any CPU's buffer, then take every CPU's: an event
                // that happened first on another CPU is in this batch too.
                poll_fn(|cx| {
                    let mut any = false;
                    for fd in buffers.iter_mut() {
                        if let Poll::Ready(guard) = fd.poll_read_ready_mut(cx) {
                            guard?.clear_ready();
                            any = true;
                        }
                    }
                    if any {
                        Poll::Ready(std::io::Result::Ok(()))
                    } else {
                        Poll::Pending
                    }
                })
                .await?;
                self.batch.take_in_time_order(buffers, f);
            }
        }
        Ok(())
    }

    /// Hands over whatever is buffered now, without waiting (at exit).
    pub fn drain_now(&mut self, mut f: impl FnMut(&[u8])) {
        match &mut self.source {
            Source::Ring(fd) => {
                while let Some(item) = fd.get_mut().next() {
                    f(&item);
                }
            }
            Source::Perf(buffers) => self.batch.take_in_time_order(buffers, f),
        }
    }

    /// What the kernel could not hand over since the last call.
    pub fn new_drops(&mut self) -> Result<Drops> {
        let now = self.drops.copies()?.iter().fold(Drops::default(), |a, d| a.add(d));
        let new = now.since(&self.reported);
        self.reported = now;
        Ok(new)
    }
}

/// Registers a buffer with the event loop.
fn watch<T: std::os::fd::AsRawFd>(inner: T) -> Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its fd, and the AsyncFd owns `inner`: the fd
    // stays open for as long as it is registered.
    unsafe { AsyncFd::register(inner) }.map_err(|err| anyhow::anyhow!("watching an event buffer: {err}"))
}

/// Every CPU's perf samples, copied out and handed over in time order.
/// Each CPU's buffer is in order, but a reader that takes them one after
/// another would print a read that finished on CPU 1 after the fsync that
/// followed it on CPU 0. Samples that wrap around the end of their buffer
/// are reassembled by the copy.
#[derive(Default)]
struct PerfBatch {
    bytes: Vec<u8>,
    /// (time, start, end) of each sample in `bytes`.
    samples: Vec<(u64, usize, usize)>,
}

impl PerfBatch {
    fn take_in_time_order(&mut self, buffers: &mut [AsyncFd<PerfEventArrayBuffer<MapData>>], mut f: impl FnMut(&[u8])) {
        self.bytes.clear();
        self.samples.clear();
        for fd in buffers.iter_mut() {
            // The kernel side counts what it failed to output, so the
            // buffer's own lost records (the same events, reported late)
            // are not added again.
            fd.get_mut().for_each(|event| {
                if let PerfEvent::Sample { head, tail } = event {
                    let start = self.bytes.len();
                    self.bytes.extend_from_slice(head);
                    self.bytes.extend_from_slice(tail);
                    let time = event_time(&self.bytes[start..]);
                    self.samples.push((time, start, self.bytes.len()));
                }
            });
        }
        // Stable: samples of one time keep their CPU's order.
        self.samples.sort_by_key(|&(time, ..)| time);
        for &(_, start, end) in &self.samples {
            f(&self.bytes[start..end]);
        }
    }
}

/// When an event happened: every event begins with its CLOCK_MONOTONIC
/// time, a native-endian u64 (see `tools_common::Event`); a sample too
/// short to hold one sorts first, and is refused by `decode`.
fn event_time(bytes: &[u8]) -> u64 {
    bytes.first_chunk::<8>().map_or(0, |time| u64::from_ne_bytes(*time))
}

/// An event as the kernel side sent it, read safely: at least
/// `T::MIN_LEN` bytes, the rest of a shorter one zero, extra bytes ignored.
pub fn decode<T: Event>(bytes: &[u8]) -> Result<T> {
    if bytes.len() < T::MIN_LEN {
        bail!("short event: {} bytes, at least {} expected", bytes.len(), T::MIN_LEN);
    }
    let mut event = MaybeUninit::<T>::zeroed();
    let n = bytes.len().min(size_of::<T>());
    // SAFETY: T is plain data (aya::Pod): every byte pattern is a valid T,
    // and at most size_of::<T>() bytes are written into it.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), event.as_mut_ptr().cast::<u8>(), n);
        Ok(event.assume_init())
    }
}
