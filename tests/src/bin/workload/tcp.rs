//! TCP sessions with known answers, for tcplife. Each runs in a network
//! namespace of its own (loopback only), so its ports are its own; its
//! server listens on port 7, which no client of the machine's own
//! namespace uses as its ephemeral port, so nothing else matches it.

use std::{
    io::{Read, Write},
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    time::Duration,
};

/// Moves this process into a new network namespace and brings its
/// loopback up.
pub fn private_network() {
    // SAFETY: plain syscalls on valid arguments.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWNET), 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req), 0);
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut req), 0, "bringing lo up");
        libc::close(fd);
    }
}

/// Names the calling process (its COMM), as `prctl(PR_SET_NAME)`.
pub fn set_comm(comm: &str) {
    let name = std::ffi::CString::new(comm).unwrap();
    // SAFETY: a valid NUL-terminated string (the kernel keeps 15 bytes).
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// Runs `body` in a forked child, which waits for a byte on the gate pipe
/// first (and dies with its parent: a test that fails leaves nothing).
/// Returns the child's PID.
fn fork_waiting(gate: [i32; 2], body: impl FnOnce()) -> i32 {
    // SAFETY: the workload is single-threaded here; the child runs `body`
    // and exits without returning.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let mut byte = 0u8;
        // SAFETY: plain syscalls on our own descriptors and a valid buffer.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::close(gate[1]);
            if libc::read(gate[0], (&mut byte as *mut u8).cast(), 1) != 1 {
                libc::_exit(1);
            }
        }
        body();
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    pid
}

fn read_exactly(stream: &mut TcpStream, n: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < n {
        let r = stream.read(&mut buf).expect("read");
        assert!(r > 0, "peer closed after {got} of {n} bytes");
        got += r;
    }
}

fn read_to_eof(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while stream.read(&mut buf).expect("read") > 0 {}
}

/// `tcp-session FAMILY N M CLOSER CLIENT_COMM SERVER_COMM [pre]`: a server
/// and a client process (named by `prctl`); the client sends N bytes, the
/// server M; CLOSER (`client` or `server`) closes first, 300 ms after the
/// exchange, the other when it sees the end. FAMILY is 4, 6 or `mapped`
/// (IPv6 sockets on `::ffff:127.0.0.1`). CLOSER `refused` connects to a
/// closed port instead; CLOSER `reset` has the client reset the connection
/// (SO_LINGER 0) 300 ms after the exchange: the server's socket closes in
/// softirq, and no process ever closes it. With `pre`, the connection is made before the
/// go byte (a session open before the tool starts). Prints
/// `server PID client PID port PORT`, then waits for the go byte on stdin.
pub fn session(args: &[String], go: impl FnOnce()) {
    private_network();
    let (family, n, m, closer) = (&args[0], args[1].parse().unwrap(), args[2].parse().unwrap(), args[3].as_str());
    let (client_comm, server_comm) = (args[4].clone(), args[5].clone());
    let pre = args.get(6).is_some_and(|a| a == "pre");
    let (bind, connect_to): (SocketAddr, fn(u16) -> SocketAddr) = match family.as_str() {
        "4" => ("127.0.0.1:7".parse().unwrap(), |p| SocketAddr::from(([127, 0, 0, 1], p))),
        "6" => ("[::1]:7".parse().unwrap(), |p| SocketAddr::from((Ipv6Addr::LOCALHOST, p))),
        "mapped" => {
            ("[::]:7".parse().unwrap(), |p| SocketAddr::from((Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x7f00, 1), p)))
        }
        other => panic!("family {other}"),
    };
    let listener = TcpListener::bind(bind).expect("bind");
    let port = listener.local_addr().unwrap().port();
    let mut gate = [0i32; 2];
    // SAFETY: a valid array for the two descriptors.
    assert_eq!(unsafe { libc::pipe(gate.as_mut_ptr()) }, 0);
    let pause = || std::thread::sleep(Duration::from_millis(300));
    let server_closes = closer == "server";
    let refused = closer == "refused";
    let reset = closer == "reset";
    let early = pre.then(|| TcpStream::connect(connect_to(port)).expect("connect"));
    let accepted = early.as_ref().map(|_| listener.accept().expect("accept").0);
    // The server must not hold the client's end: it would keep it open.
    let client_end = early.as_ref().map(|s| s.as_raw_fd());
    let server = if refused {
        drop(listener);
        0
    } else {
        fork_waiting(gate, move || {
            if let Some(fd) = client_end {
                // SAFETY: closing this process's copy of the client's descriptor.
                unsafe { libc::close(fd) };
            }
            set_comm(&server_comm);
            let mut conn = accepted.unwrap_or_else(|| listener.accept().expect("accept").0);
            read_exactly(&mut conn, n);
            conn.write_all(&vec![b's'; m]).unwrap();
            if server_closes {
                pause();
            } else if reset {
                let mut byte = [0u8; 1];
                let got = conn.read(&mut byte);
                assert!(got.is_err(), "the client did not reset the connection: {got:?}");
            } else {
                read_to_eof(&mut conn);
            }
        })
    };
    let client = fork_waiting(gate, move || {
        set_comm(&client_comm);
        if refused {
            assert!(TcpStream::connect(connect_to(port)).is_err(), "the closed port accepted");
            return;
        }
        let mut conn = early.unwrap_or_else(|| TcpStream::connect(connect_to(port)).expect("connect"));
        conn.write_all(&vec![b'c'; n]).unwrap();
        read_exactly(&mut conn, m);
        if server_closes {
            read_to_eof(&mut conn);
        } else {
            pause();
        }
        if reset {
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: a valid option of the size passed, on our own socket.
            let set = unsafe {
                libc::setsockopt(
                    conn.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as u32,
                )
            };
            assert_eq!(set, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
        }
    });
    println!("server {server} client {client} port {port}");
    std::io::stdout().flush().unwrap();
    go();
    // SAFETY: two bytes open the gate for both children.
    unsafe { libc::write(gate[1], b"gg".as_ptr().cast(), 2) };
    for pid in [server, client].into_iter().filter(|&p| p > 0) {
        let mut status = 0;
        // SAFETY: waiting for our own children.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child {pid} failed: {status:#x}");
    }
}

/// `tcp-storm COUNT`: COUNT connections to a local server, one after the
/// other, each shut down at once by the client; the server closes its end
/// when it sees the client's, and the client waits for that before the
/// next (else a new connection may reuse the 4-tuple of one the server has
/// not closed yet, and the kernel resets it: a session more). Prints
/// `port PORT`, then waits for the go byte.
pub fn storm(args: &[String], go: impl FnOnce()) {
    private_network();
    let count: usize = args[0].parse().unwrap();
    let listener = TcpListener::bind("127.0.0.1:7").expect("bind");
    let port = listener.local_addr().unwrap().port();
    println!("port {port}");
    std::io::stdout().flush().unwrap();
    go();
    let server = std::thread::spawn(move || {
        for _ in 0..count {
            let (mut conn, _) = listener.accept().expect("accept");
            read_to_eof(&mut conn);
        }
    });
    for _ in 0..count {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        conn.shutdown(std::net::Shutdown::Write).expect("shutdown");
        read_to_eof(&mut conn);
    }
    server.join().unwrap();
}
