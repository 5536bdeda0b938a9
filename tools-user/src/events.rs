//! The event path shared by the event tools: the BPF ring buffer where the
//! kernel has one (5.8+), a perf event array otherwise, drained in batches,
//! with the kernel's own count of events it could not hand over.

use std::{future::poll_fn, mem::MaybeUninit, task::Poll};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{
        perf::{PerfEvent, PerfEventArrayBuffer},
        MapData, MapType, PerCpuArray, PerfEventArray, RingBuf,
    },
    util::online_cpus,
    Ebpf,
};
use tokio::io::unix::AsyncFd;
use tools_common::{map_names, Drops, Event};

use crate::cli::{EventArgs, RuntimeArgs};

/// How events reach user space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    RingBuffer,
    PerfArray,
}

/// The event path a tool takes: its transport and the buffer size.
#[derive(Clone, Copy, Debug)]
pub struct EventPath {
    pub transport: Transport,
    /// Buffer pages per CPU (`--buffer-pages`).
    pub pages_per_cpu: usize,
}

impl EventPath {
    /// The ring buffer when the kernel has it (probed) and the perf array is
    /// not forced, else the perf event array.
    pub fn choose(runtime: &RuntimeArgs, events: &EventArgs) -> EventPath {
        let ring = aya::sys::is_map_supported(MapType::RingBuf).unwrap_or(false);
        let chosen = if ring && !runtime.perf_array { Transport::RingBuffer } else { Transport::PerfArray };
        log::info!(
            "events: {} ({})",
            if chosen == Transport::RingBuffer { "ring buffer" } else { "perf event array" },
            if ring {
                if runtime.perf_array {
                    "forced"
                } else {
                    "probed"
                }
            } else {
                "the kernel has no ring buffer"
            }
        );
        EventPath { transport: chosen, pages_per_cpu: events.buffer_pages as usize }
    }

    /// The build of an emitting program for this transport: `name`, or its
    /// `name_perf` twin (see tools-ebpf's `event_programs!`).
    pub fn program(&self, name: &str) -> String {
        match self.transport {
            Transport::RingBuffer => name.to_owned(),
            Transport::PerfArray => format!("{name}_perf"),
        }
    }

    /// Map sizes for the loader: the ring buffer holds `pages` pages per CPU
    /// (a power of two in all, as the kernel requires).
    pub fn max_entries(&self) -> Vec<(&'static str, u32)> {
        let cpus = online_cpus().map(|c| c.len()).unwrap_or(1);
        // At most 1 GiB: the kernel's limit is below 4 GiB, and the size is a u32.
        let bytes = (self.pages_per_cpu * cpus * page_size()).next_power_of_two().min(1 << 30);
        match self.transport {
            Transport::RingBuffer => vec![(map_names::EVENTS, bytes as u32)],
            // An unused ring buffer still gets created where supported: keep it small.
            Transport::PerfArray => vec![(map_names::EVENTS, page_size() as u32)],
        }
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
    drops: PerCpuArray<MapData, Drops>,
    reported: Drops,
    /// Reassembles perf samples that wrap around the end of their buffer.
    scratch: Vec<u8>,
    /// When the ring buffer is next drained without a wakeup.
    ring_poll: tokio::time::Interval,
}

impl EventStream {
    pub fn open(ebpf: &mut Ebpf, path: &EventPath) -> Result<Self> {
        let pages_per_cpu = path.pages_per_cpu;
        let source = match path.transport {
            Transport::RingBuffer => {
                let ring = RingBuf::try_from(ebpf.take_map(map_names::EVENTS).context("no EVENTS map")?)?;
                Source::Ring(watch(ring)?)
            }
            Transport::PerfArray => {
                let mut array =
                    PerfEventArray::try_from(ebpf.take_map(map_names::EVENTS_PERF).context("no EVENTS_PERF map")?)?;
                let cpus = online_cpus().map_err(|(_, err)| err).context("listing online CPUs")?;
                let mut buffers = Vec::new();
                for cpu in cpus {
                    buffers.push(watch(array.open(cpu, Some(pages_per_cpu.next_power_of_two()))?)?);
                }
                Source::Perf(buffers)
            }
        };
        let drops = PerCpuArray::try_from(ebpf.take_map(map_names::DROPS).context("no DROPS map")?)?;
        let mut ring_poll = tokio::time::interval(RING_POLL);
        ring_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(EventStream { source, drops, reported: Drops::default(), scratch: Vec::new(), ring_poll })
    }

    /// Waits until events are ready (or, on the ring buffer, for its next
    /// poll), then hands each available one to `f`: one wakeup drains a
    /// whole batch.
    pub async fn next_batch(&mut self, mut f: impl FnMut(&[u8])) -> Result<()> {
        let scratch = &mut self.scratch;
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
                poll_fn(|cx| {
                    let mut any = false;
                    for fd in buffers.iter_mut() {
                        if let Poll::Ready(guard) = fd.poll_read_ready_mut(cx) {
                            let mut guard = guard?;
                            drain_perf(guard.get_inner_mut(), scratch, &mut f);
                            guard.clear_ready();
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
            Source::Perf(buffers) => {
                for fd in buffers.iter_mut() {
                    drain_perf(fd.get_mut(), &mut self.scratch, &mut f);
                }
            }
        }
    }

    /// What the kernel could not hand over since the last call.
    pub fn new_drops(&mut self) -> Result<Drops> {
        let per_cpu = self.drops.get(&0, 0).context("reading drop counters")?;
        let now = per_cpu.iter().fold(Drops::default(), |a, d| a.add(d));
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

/// Perf samples, reassembled when they wrap. The kernel side counts what it
/// failed to output, so the buffer's own lost records (the same events,
/// reported late) are not added again.
fn drain_perf(buf: &mut PerfEventArrayBuffer<MapData>, scratch: &mut Vec<u8>, f: &mut impl FnMut(&[u8])) {
    buf.for_each(|event| {
        if let PerfEvent::Sample { head, tail } = event {
            if tail.is_empty() {
                f(head);
            } else {
                scratch.clear();
                scratch.extend_from_slice(head);
                scratch.extend_from_slice(tail);
                f(scratch);
            }
        }
    });
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
