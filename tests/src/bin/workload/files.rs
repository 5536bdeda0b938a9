//! File operations with known answers, for ext4slower.

use std::{
    ffi::CString,
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    time::Duration,
};

fn open(path: &str, flags: i32) -> i32 {
    let c = CString::new(path).unwrap();
    // SAFETY: a valid path; the descriptor is closed by the caller.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    assert!(fd >= 0, "open {path}: {}", std::io::Error::last_os_error());
    fd
}

fn check(what: &str, ret: isize, want: usize) {
    assert_eq!(ret, want as isize, "{what}: {}", std::io::Error::last_os_error());
}

/// `file-ops PATH N K`: open (create), write N bytes at offset K, read them
/// back, fsync, close; open again and close. Five operations: O W R S O.
pub fn ops(args: &[String]) {
    let (path, n, k): (&str, usize, i64) = (&args[0], args[1].parse().unwrap(), args[2].parse().unwrap());
    let buf = vec![b'e'; n];
    let mut back = vec![0u8; n];
    let fd = open(path, libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC);
    // SAFETY: buffers of n bytes on a descriptor of ours.
    unsafe {
        check("pwrite", libc::pwrite(fd, buf.as_ptr().cast(), n, k), n);
        check("pread", libc::pread(fd, back.as_mut_ptr().cast(), n, k), n);
        assert_eq!(libc::fsync(fd), 0);
        libc::close(fd);
        libc::close(open(path, libc::O_RDONLY));
    }
}

/// `osync-write PATH`: one write of 4096 bytes to a file opened O_SYNC (the
/// kernel syncs it before the write returns).
pub fn osync_write(args: &[String]) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_SYNC)
        .open(&args[0])
        .expect("open O_SYNC");
    std::io::Write::write_all(&mut file, &[b's'; 4096]).unwrap();
}

/// `direct-reads PATH N`: N reads of the first 4 KiB of PATH (a block
/// device) with O_DIRECT, so each is one request to the device, issued by
/// this process.
pub fn direct_reads(args: &[String]) {
    let (path, n): (&str, u64) = (&args[0], args[1].parse().unwrap());
    const BLOCK: usize = 4096;
    let layout = std::alloc::Layout::from_size_align(BLOCK, BLOCK).unwrap();
    let fd = open(path, libc::O_RDONLY | libc::O_DIRECT);
    // SAFETY: an aligned buffer of BLOCK bytes, freed after the reads, on a descriptor of ours.
    unsafe {
        let buf = std::alloc::alloc(layout);
        assert!(!buf.is_null());
        for _ in 0..n {
            check("pread O_DIRECT", libc::pread(fd, buf.cast(), BLOCK, 0), BLOCK);
        }
        std::alloc::dealloc(buf, layout);
        libc::close(fd);
    }
}

// userfaultfd(2) ioctls (linux/userfaultfd.h): _IOWR(0xAA, nr, struct).
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
const UFFD_API: u64 = 0xaa;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

/// `slow-read PATH DELAY_MS`: three reads of the first 4 KiB of PATH: into
/// an ordinary buffer, into a page registered with userfaultfd whose fault
/// is resolved only after DELAY_MS (so that read takes at least as long),
/// and into the ordinary buffer again.
pub fn slow_read(args: &[String]) {
    let (path, delay): (&str, u64) = (&args[0], args[1].parse().unwrap());
    const PAGE: usize = 4096;
    // SAFETY: userfaultfd setup on an anonymous page of our own; the
    // handler thread resolves the one fault with a page it owns.
    unsafe {
        let uffd = libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) as i32;
        assert!(uffd >= 0, "userfaultfd: {}", std::io::Error::last_os_error());
        let mut api = [UFFD_API, 0, 0];
        assert_eq!(libc::ioctl(uffd, UFFDIO_API, api.as_mut_ptr()), 0, "UFFDIO_API");
        let page = libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        let mut register = [page as u64, PAGE as u64, UFFDIO_REGISTER_MODE_MISSING, 0];
        assert_eq!(libc::ioctl(uffd, UFFDIO_REGISTER, register.as_mut_ptr()), 0, "UFFDIO_REGISTER");
        let dst = page as u64;
        let handler = std::thread::spawn(move || {
            let mut msg = [0u8; 32];
            let n = libc::read(uffd, msg.as_mut_ptr().cast(), msg.len());
            assert_eq!(n, 32, "reading the fault");
            std::thread::sleep(Duration::from_millis(delay));
            let source = vec![b'u'; PAGE];
            let mut copy = [dst, source.as_ptr() as u64, PAGE as u64, 0, 0];
            assert_eq!(libc::ioctl(uffd, UFFDIO_COPY, copy.as_mut_ptr()), 0, "UFFDIO_COPY");
        });
        let file = std::fs::File::open(path).expect("open");
        let mut plain = vec![0u8; PAGE];
        check("pread", libc::pread(file.as_raw_fd(), plain.as_mut_ptr().cast(), PAGE, 0), PAGE);
        check("slow pread", libc::pread(file.as_raw_fd(), page, PAGE, 0), PAGE);
        check("pread", libc::pread(file.as_raw_fd(), plain.as_mut_ptr().cast(), PAGE, 0), PAGE);
        handler.join().unwrap();
    }
}
