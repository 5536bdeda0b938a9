//! Workloads with known answers, started by the tests. Each waits for a
//! byte on stdin before it starts, so the tool under test can be attached
//! (and given the workload's PID) first.
//!
//!   workload spin CPU             burn CPU pinned to CPU until killed
//!   workload sleep CPU N MS       pinned to CPU, sleep MS milliseconds N times, then exit

use std::{io::Read as _, time::Duration};

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; the call only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set), 0, "sched_setaffinity");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> u64 { args.get(i).and_then(|a| a.parse().ok()).expect("usage: see workload.rs") };
    pin(num(1) as usize);
    let mut go = [0u8; 1];
    let _ = std::io::stdin().read(&mut go);
    match args[0].as_str() {
        "spin" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "sleep" => {
            for _ in 0..num(2) {
                std::thread::sleep(Duration::from_millis(num(3)));
            }
        }
        other => panic!("unknown workload {other}"),
    }
}
