//! bench-floor (the benchmarks' floor) attaches its hooks as one rung of
//! the loader's ladder (`loader::attach_rung`): a rung that fails halfway
//! is unloaded whole, so the next rung a tool tries never runs beside it
//! (everything would be counted twice).

use std::{
    thread,
    time::{Duration, Instant},
};

use integration_tests::*;

const READY: &str = "bench-floor: empty programs on";
const MISSING: &str = "tracepoint/no_such_category/no_such_event";

/// How many programs named `name` are loaded once the count is `expected`,
/// or after 5 s: the kernel frees a program after an RCU grace period.
fn settled_count(name: &str, expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let count = loaded_programs_named(name).len();
        if count == expected || Instant::now() > deadline {
            return count;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The ids of the programs `running` said it attached, once it said `n`
/// (its stderr is read on a thread of its own: it may lag its stdout).
fn attached(running: &mut Running, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids = attached_program_ids(running.stderr_so_far());
        if ids.len() >= n || Instant::now() > deadline {
            return ids;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_rung_that_fails_halfway_leaves_nothing_attached() {
    let _serial = serial();
    let before = (loaded_programs_named("floor_raw_tp").len(), loaded_programs_named("floor_tp").len());
    let out = run("bench-floor", &["raw_tp/sched_switch", MISSING]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    let error = out.stderr.lines().find(|l| l.starts_with("bench-floor: error: ")).unwrap_or_default();
    assert!(error.contains(&format!("floor_tp -> {MISSING}")), "the failed hook is not named:\n{}", out.stderr);
    // The raw tracepoint attached before the tracepoint failed.
    let ids = attached_program_ids(&out.stderr);
    assert_eq!(ids.len(), 1, "{}", out.stderr);
    assert_unloaded(&ids);
    assert_eq!(settled_count("floor_raw_tp", before.0), before.0, "floor_raw_tp programs left loaded");
    assert_eq!(settled_count("floor_tp", before.1), before.1, "floor_tp programs left loaded");
}

/// The check that cannot pass by the process exiting: bench-floor lives on
/// with its next rung, which loads the same program anew (a program left
/// loaded would be reused, under the same id).
#[test]
fn the_next_rung_starts_clean() {
    let _serial = serial();
    let before = (loaded_programs_named("floor_raw_tp").len(), loaded_programs_named("floor_tp").len());
    let mut running =
        Running::start("bench-floor", &["raw_tp/sched_switch", MISSING, "--or", "raw_tp/sched_switch"], READY);
    let ids = attached(&mut running, 2);
    let said = running.stderr_so_far().to_owned();
    let [failed, kept] = ids[..] else { panic!("not two programs attached:\n{said}") };
    assert!(said.contains(&format!("rung 1: failed: floor_tp -> {MISSING}")), "{said}");
    assert_ne!(failed, kept, "the failed rung's program was never unloaded: the next rung reused it\n{said}");
    assert_unloaded(&[failed]);
    assert!(running.is_running(), "{said}");
    assert_eq!(settled_count("floor_raw_tp", before.0 + 1), before.0 + 1, "{said}");
    assert_eq!(settled_count("floor_tp", before.1), before.1, "the failed tracepoint's program is still loaded");
    let out = running.interrupt();
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_unloaded(&[kept]);
}

#[test]
fn a_rung_that_attaches_stays_until_interrupted() {
    let _serial = serial();
    let before = loaded_programs_named("floor_raw_tp").len();
    let mut running = Running::start("bench-floor", &["raw_tp/sched_switch"], READY);
    let ids = attached(&mut running, 1);
    assert_eq!(ids.len(), 1, "{}", running.stderr_so_far());
    assert!(loaded_programs_named("floor_raw_tp").contains(&ids[0]));
    assert_eq!(loaded_programs_named("floor_raw_tp").len(), before + 1);
    let out = running.interrupt();
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains(&format!("{READY} raw_tp/sched_switch")), "{out:?}");
    assert_unloaded(&ids);
    assert_eq!(settled_count("floor_raw_tp", before), before);
}
