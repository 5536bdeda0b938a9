//! Host-name lookups with known answers, for gethostlatency: a DNS server
//! of its own that answers after a fixed delay, and private /etc/hosts and
//! /etc/resolv.conf, all in network and mount namespaces of its own.

use std::{ffi::CString, net::UdpSocket, time::Duration};

use super::tcp::private_network;

unsafe extern "C" {
    fn gethostbyname(name: *const libc::c_char) -> *mut libc::c_void;
    fn gethostbyname2(name: *const libc::c_char, af: libc::c_int) -> *mut libc::c_void;
}

/// Replaces `target` (for this mount namespace only) with a file holding `text`.
fn private_file(target: &str, text: &str) {
    let source = std::env::temp_dir().join(format!("ebpf-tools-{}-{}", std::process::id(), target.replace('/', "_")));
    std::fs::write(&source, text).unwrap();
    let (src, dst) = (CString::new(source.to_str().unwrap()).unwrap(), CString::new(target).unwrap());
    // SAFETY: a bind mount of two valid paths, in our own mount namespace.
    let ret = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) };
    assert_eq!(ret, 0, "bind-mounting over {target}: {}", std::io::Error::last_os_error());
}

/// A DNS server on 127.0.0.1:53: names ending in `.test` get an A record
/// (192.0.2.1) after `delay`; names starting with `nx-` get NXDOMAIN.
fn dns_server(delay: Duration) {
    let socket = UdpSocket::bind("127.0.0.1:53").expect("binding 127.0.0.1:53");
    std::thread::spawn(move || loop {
        let mut query = [0u8; 512];
        let Ok((n, peer)) = socket.recv_from(&mut query) else { return };
        let socket = socket.try_clone().unwrap();
        let query = query[..n].to_vec();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            if let Some(answer) = answer(&query) {
                let _ = socket.send_to(&answer, peer);
            }
        });
    });
}

/// The response to one DNS query.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    // Header (12 bytes), then the question: labels, type, class.
    let mut at = 12;
    let mut name = Vec::new();
    while *query.get(at)? != 0 {
        let len = query[at] as usize;
        name.extend_from_slice(query.get(at + 1..at + 1 + len)?);
        name.push(b'.');
        at += 1 + len;
    }
    let question_end = at + 5;
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    let nx = name.starts_with(b"nx-");
    let a = qtype == 1 && !nx;
    let mut r = query.get(..question_end)?.to_vec();
    r[2] = 0x81; // response, recursion desired
    r[3] = if nx { 0x83 } else { 0x80 }; // recursion available; NXDOMAIN
    r[6..12].copy_from_slice(&[0, a as u8, 0, 0, 0, 0]); // answers; no authority, no additional
    if a {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    }
    Some(r)
}

/// `resolve DELAY_MS HOSTS CALL...`: in its own namespaces, with the DNS
/// server above (answers delayed DELAY_MS) as its only name server, and
/// HOSTS (comma-separated names of 127.0.0.1, or `-`) in its /etc/hosts.
/// Then, after the go byte, each CALL: `getaddrinfo:NAME`,
/// `gethostbyname:NAME`, `gethostbyname2:NAME`, or `getaddrinfo-null`.
/// Prints `ready` before it waits.
pub fn resolve(args: &[String], go: impl FnOnce()) {
    let delay = Duration::from_millis(args[0].parse().unwrap());
    // SAFETY: plain syscalls; the process is single-threaded here.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare(CLONE_NEWNS)");
        let root = CString::new("/").unwrap();
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
    }
    private_network();
    let hosts: String = args[1].split(',').filter(|h| *h != "-").map(|h| format!("127.0.0.1 {h}\n")).collect();
    private_file("/etc/hosts", &format!("127.0.0.1 localhost\n{hosts}"));
    private_file("/etc/resolv.conf", "nameserver 127.0.0.1\noptions timeout:5 attempts:1\n");
    dns_server(delay);
    println!("ready");
    use std::io::Write as _;
    std::io::stdout().flush().unwrap();
    go();
    for call in &args[2..] {
        let (function, name) = call.split_once(':').unwrap_or((call, ""));
        let name = CString::new(name).unwrap();
        // SAFETY: valid NUL-terminated strings; results freed or ignored.
        unsafe {
            match function {
                "getaddrinfo" | "getaddrinfo-null" => {
                    let node = if function == "getaddrinfo" { name.as_ptr() } else { std::ptr::null() };
                    let service = CString::new("80").unwrap();
                    let mut res = std::ptr::null_mut();
                    if libc::getaddrinfo(node, service.as_ptr(), std::ptr::null(), &mut res) == 0 {
                        libc::freeaddrinfo(res);
                    }
                }
                "gethostbyname" => {
                    gethostbyname(name.as_ptr());
                }
                "gethostbyname2" => {
                    gethostbyname2(name.as_ptr(), libc::AF_INET);
                }
                other => panic!("unknown call {other}"),
            }
        }
    }
}
