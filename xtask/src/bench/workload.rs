//! The fixed workloads the benchmarks trace. Each runs until a deadline and
//! returns how many operations it completed and in how long, so a tracer's
//! cost shows as fewer operations per second.
//!
//! The workers are forked from xtask itself (single-threaded, so fork is
//! safe) and use only system calls until they `_exit`.

use std::{
    ffi::CString,
    fs::File,
    io::Read as _,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// Operations completed and the seconds they took.
#[derive(Clone, Copy, Debug)]
pub struct Done {
    pub ops: u64,
    pub secs: f64,
}

impl Done {
    pub fn ns_per_op(&self) -> f64 {
        self.secs * 1e9 / self.ops.max(1) as f64
    }

    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here only.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks a child that runs `body` and `_exit`s with its return value.
fn fork(body: impl FnOnce() -> i32) -> Result<libc::pid_t> {
    // SAFETY: xtask has a single thread, so the child may run anything.
    match unsafe { libc::fork() } {
        -1 => bail!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            let code = body();
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid),
    }
}

fn wait_ok(pid: libc::pid_t, what: &str) -> Result<()> {
    let mut status = 0;
    // SAFETY: waits for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid
        || !libc::WIFEXITED(status)
        || libc::WEXITSTATUS(status) != 0
    {
        bail!("{what} worker failed (wait status {status:#x})");
    }
    Ok(())
}

fn write_u64(fd: &OwnedFd, value: u64) {
    // SAFETY: writes 8 bytes from a live value; 8-byte pipe writes are atomic.
    unsafe { libc::write(fd.as_raw_fd(), (&value as *const u64).cast(), 8) };
}

/// Reads `n` u64 values the workers wrote.
fn read_u64s(fd: OwnedFd, n: usize) -> Result<Vec<u64>> {
    let mut bytes = Vec::new();
    File::from(fd).read_to_end(&mut bytes)?;
    if bytes.len() != 8 * n {
        bail!("workers reported {} bytes, not {}", bytes.len(), 8 * n);
    }
    Ok(bytes.chunks_exact(8).map(|c| u64::from_ne_bytes(c.try_into().unwrap())).collect())
}

pub fn last_cpu() -> usize {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) - 1) as usize
}

/// Two processes pinned to one CPU pass a byte back and forth over pipes:
/// every round trip is two wakeups and two context switches.
pub fn ping_pong(cpu: usize, secs: f64) -> Result<Done> {
    ping_pongs(&[cpu], secs)
}

/// A ping-pong pair pinned to each of `cpus`, all at once: their round
/// trips added up, over the longest run times the CPUs they kept busy (a
/// pair keeps its CPU busy), so `ns_per_op` is CPU time per round trip
/// however many pairs share a CPU.
pub fn ping_pongs(cpus: &[usize], secs: f64) -> Result<Done> {
    let pairs: Vec<PingPong> = cpus.iter().map(|&cpu| PingPong::start(cpu, secs)).collect::<Result<_>>()?;
    let mut done = Done { ops: 0, secs: 0.0 };
    for pair in pairs {
        let pair = pair.finish()?;
        done.ops += pair.ops;
        done.secs = done.secs.max(pair.secs);
    }
    let mut busy = cpus.to_vec();
    busy.sort_unstable();
    busy.dedup();
    done.secs *= busy.len() as f64;
    Ok(done)
}

/// One ping-pong pair, running.
struct PingPong {
    pinger: libc::pid_t,
    ponger: libc::pid_t,
    result: OwnedFd,
}

impl PingPong {
    fn start(cpu: usize, secs: f64) -> Result<PingPong> {
        let (ping_r, ping_w) = pipe()?;
        let (pong_r, pong_w) = pipe()?;
        let (result_r, result_w) = pipe()?;
        let one_byte = |fd: &OwnedFd, read: bool, byte: &mut u8| -> bool {
            let p: *mut u8 = byte;
            // SAFETY: one byte to or from a live local.
            let n = unsafe {
                if read {
                    libc::read(fd.as_raw_fd(), p.cast(), 1)
                } else {
                    libc::write(fd.as_raw_fd(), p.cast(), 1)
                }
            };
            n == 1
        };
        // Each child closes the ends it does not use (fork has no exec to
        // close them), so the other's exit is an end of file, never a hang.
        let close = |fds: [&OwnedFd; 3]| {
            // SAFETY: closes this child's copies only.
            fds.iter().for_each(|fd| unsafe {
                libc::close(fd.as_raw_fd());
            });
        };
        let ponger = fork(|| {
            close([&ping_w, &pong_r, &result_w]);
            if !integration_tests::pin_to_cpu(cpu) {
                return 2;
            }
            let mut byte = 0u8;
            while one_byte(&ping_r, true, &mut byte) && byte != 0 {
                if !one_byte(&pong_w, false, &mut byte) {
                    return 1;
                }
            }
            0
        })?;
        let pinger = fork(|| {
            close([&ping_r, &pong_w, &result_r]);
            if !integration_tests::pin_to_cpu(cpu) {
                return 2;
            }
            let started = Instant::now();
            let deadline = started + Duration::from_secs_f64(secs);
            let mut trips = 0u64;
            let mut byte = 1u8;
            loop {
                for _ in 0..256 {
                    if !one_byte(&ping_w, false, &mut byte) || !one_byte(&pong_r, true, &mut byte) {
                        return 1;
                    }
                }
                trips += 256;
                if Instant::now() >= deadline {
                    break;
                }
            }
            let elapsed = started.elapsed();
            byte = 0;
            one_byte(&ping_w, false, &mut byte);
            write_u64(&result_w, trips);
            write_u64(&result_w, elapsed.as_nanos() as u64);
            0
        })?;
        Ok(PingPong { pinger, ponger, result: result_r })
    }

    /// Waits for the pair: its round trips and how long it ran.
    fn finish(self) -> Result<Done> {
        let result = read_u64s(self.result, 2);
        wait_ok(self.pinger, "ping")?;
        wait_ok(self.ponger, "pong")?;
        let result = result?;
        Ok(Done { ops: result[0], secs: result[1] as f64 / 1e9 })
    }
}

/// `workers` processes each fork and exec `/bin/true MARKER` in a loop,
/// at `rate` execs per second in all (paced evenly), or as fast as they can.
pub fn exec_storm(workers: usize, rate: Option<f64>, secs: f64, marker: &str) -> Result<Done> {
    let path = CString::new("/bin/true")?;
    let arg = CString::new(marker)?;
    let argv = [path.as_ptr(), arg.as_ptr(), std::ptr::null()];
    let (result_r, result_w) = pipe()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let interval = rate.map(|r| Duration::from_secs_f64(workers as f64 / r));
    let mut pids = Vec::new();
    for _ in 0..workers {
        pids.push(fork(|| {
            let mut execs = 0u64;
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if let Some(interval) = interval {
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    next += interval;
                }
                // SAFETY: the child only execs (or exits); argv is NULL-terminated.
                match unsafe { libc::fork() } {
                    -1 => return 1,
                    0 => unsafe {
                        libc::execv(path.as_ptr(), argv.as_ptr());
                        libc::_exit(127)
                    },
                    child => {
                        let mut status = 0;
                        // SAFETY: waits for the child just forked.
                        unsafe { libc::waitpid(child, &mut status, 0) };
                        if status != 0 {
                            return 1;
                        }
                    }
                }
                execs += 1;
            }
            write_u64(&result_w, execs);
            0
        })?);
    }
    drop(result_w);
    let counts = read_u64s(result_r, workers);
    for pid in pids {
        wait_ok(pid, "exec")?;
    }
    Ok(Done { ops: counts?.iter().sum(), secs: started.elapsed().as_secs_f64() })
}

/// Reads 4 KiB blocks of `device` with O_DIRECT, one after another, until
/// the deadline: every read is one block I/O request.
pub fn direct_reads(device: &str, secs: f64) -> Result<Done> {
    use std::os::unix::fs::OpenOptionsExt as _;
    const BLOCK: usize = 4096;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(device)
        .with_context(|| format!("opening {device} for direct I/O"))?;
    let blocks = (file.metadata()?.len() as usize).max(BLOCK) / BLOCK;
    let layout = std::alloc::Layout::from_size_align(BLOCK, BLOCK)?;
    // SAFETY: a non-zero-sized layout; freed below.
    let buf = unsafe { std::alloc::alloc(layout) };
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut ops = 0u64;
    let mut failed = None;
    while failed.is_none() && Instant::now() < deadline {
        for _ in 0..64 {
            let offset = (ops as usize % blocks * BLOCK) as libc::off_t;
            // SAFETY: reads at most BLOCK bytes into the aligned buffer.
            if unsafe { libc::pread(file.as_raw_fd(), buf.cast(), BLOCK, offset) } != BLOCK as isize {
                failed = Some(std::io::Error::last_os_error());
                break;
            }
            ops += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(buf, layout) };
    match failed {
        Some(err) => bail!("direct read of {device}: {err}"),
        None => Ok(Done { ops, secs }),
    }
}

/// A client process connects to a loopback server, sends 100 bytes and
/// closes, one connection after another until the deadline; the server
/// process reads each to its end and closes. Every cycle is two TCP
/// sessions (one per end) and a dozen state changes.
pub fn tcp_cycles(secs: f64) -> Result<Done> {
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let (result_r, result_w) = pipe()?;
    let server = fork(|| {
        let mut buf = [0u8; 512];
        loop {
            let Ok((mut conn, _)) = listener.accept() else { return 1 };
            let mut got = 0;
            loop {
                match std::io::Read::read(&mut conn, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(_) => return 1,
                }
            }
            // The client's last connection carries no data: the end.
            if got == 0 {
                return 0;
            }
        }
    })?;
    drop(listener);
    let client = fork(|| {
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(secs);
        let mut cycles = 0u64;
        let payload = [b'x'; 100];
        while Instant::now() < deadline {
            let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else { return 1 };
            if std::io::Write::write_all(&mut conn, &payload).is_err() {
                return 1;
            }
            // Wait for the server's end, so no 4-tuple is reused half-closed.
            let _ = conn.shutdown(std::net::Shutdown::Write);
            let _ = std::io::Read::read(&mut conn, &mut [0u8; 1]);
            cycles += 1;
        }
        let elapsed = started.elapsed();
        drop(TcpStream::connect(("127.0.0.1", port)));
        write_u64(&result_w, cycles);
        write_u64(&result_w, elapsed.as_nanos() as u64);
        0
    })?;
    drop(result_w);
    let result = read_u64s(result_r, 2);
    wait_ok(client, "tcp client")?;
    wait_ok(server, "tcp server")?;
    let result = result?;
    Ok(Done { ops: result[0], secs: result[1] as f64 / 1e9 })
}

/// 4 KiB `pread`s of one cached file, round the file's first MiB: every
/// read is served from the page cache (ext4slower's common case: fast
/// operations its threshold drops).
pub fn cached_preads(path: &str, secs: f64) -> Result<Done> {
    const BLOCK: usize = 4096;
    const FILE: usize = 1 << 20;
    std::fs::write(path, vec![b'b'; FILE]).with_context(|| format!("writing {path}"))?;
    let file = File::open(path)?;
    let mut buf = vec![0u8; BLOCK];
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut ops = 0u64;
    while Instant::now() < deadline {
        for _ in 0..256 {
            let offset = (ops as usize * BLOCK % FILE) as libc::off_t;
            // SAFETY: reads at most BLOCK bytes into the buffer.
            if unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), BLOCK, offset) } != BLOCK as isize {
                bail!("pread of {path}: {}", std::io::Error::last_os_error());
            }
            ops += 1;
        }
    }
    Ok(Done { ops, secs: started.elapsed().as_secs_f64() })
}

/// 4 KiB written to a pipe and read back, by one process: a write and a
/// read of a file that is no filesystem's, the cost every such read pays
/// under ext4slower's syscall rung.
pub fn pipe_round_trips(secs: f64) -> Result<Done> {
    const BLOCK: usize = 4096;
    let (r, w) = pipe()?;
    let mut buf = vec![b'p'; BLOCK];
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut ops = 0u64;
    while Instant::now() < deadline {
        for _ in 0..256 {
            // SAFETY: BLOCK bytes from and into a live buffer; a pipe holds 64 KiB.
            let ok = unsafe {
                libc::write(w.as_raw_fd(), buf.as_ptr().cast(), BLOCK) == BLOCK as isize
                    && libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), BLOCK) == BLOCK as isize
            };
            if !ok {
                bail!("pipe: {}", std::io::Error::last_os_error());
            }
            ops += 1;
        }
    }
    Ok(Done { ops, secs: started.elapsed().as_secs_f64() })
}

/// `getaddrinfo("localhost")` in a loop: answered from /etc/hosts, so what
/// is timed is the C library's resolver and the probes on it.
pub fn lookups(secs: f64) -> Result<Done> {
    let node = CString::new("localhost")?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut ops = 0u64;
    while Instant::now() < deadline {
        for _ in 0..16 {
            let mut res = std::ptr::null_mut();
            // SAFETY: a valid name; the result is freed at once.
            if unsafe { libc::getaddrinfo(node.as_ptr(), std::ptr::null(), std::ptr::null(), &mut res) } != 0 {
                bail!("getaddrinfo(localhost) failed");
            }
            unsafe { libc::freeaddrinfo(res) };
            ops += 1;
        }
    }
    Ok(Done { ops, secs: started.elapsed().as_secs_f64() })
}

/// Processes that each sleep `every` in a loop, for a series each in the
/// exporter's per-process family; killed on drop (or when xtask dies).
pub struct Sleepers(Vec<libc::pid_t>);

impl Sleepers {
    pub fn start(n: usize, every: Duration) -> Result<Sleepers> {
        let mut sleepers = Sleepers(Vec::with_capacity(n));
        let nap = libc::timespec { tv_sec: every.as_secs() as libc::time_t, tv_nsec: every.subsec_nanos() as _ };
        for _ in 0..n {
            sleepers.0.push(fork(|| {
                // SAFETY: async-signal-safe calls only, in the forked child.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    loop {
                        libc::nanosleep(&nap, std::ptr::null_mut());
                    }
                }
            })?);
        }
        Ok(sleepers)
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: signals and reaps our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}
