//! The fuzz target's entry point (see `fuzz/`), shared with the regression
//! test: arbitrary bytes read as a capture and drawn, as
//! `ebpf-tools-heatmap` would with each of its ways to choose a series.
//! Whatever the bytes, it must return: no panic, no hang, no allocation
//! beyond what the input's size allows.

use crate::{draw, Options};

pub fn capture(data: &[u8]) {
    let choices = [
        Options::default(),
        Options { key: Some("pid=1".into()), ..Options::default() },
        Options { tool: Some("tcplife".into()), bin: Some(0.001), ..Options::default() },
    ];
    for options in &choices {
        let _ = draw(data, options);
    }
}

#[cfg(test)]
mod tests {
    /// Every input a fuzz run ever found a fault with stays a test:
    /// `fuzz/regressions/capture/`.
    #[test]
    fn regressions_found_by_fuzzing() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/capture");
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries {
            super::capture(&std::fs::read(entry.unwrap().path()).unwrap());
        }
    }

    /// The seed the fuzz run starts from draws (a mutation of a capture
    /// that cannot be read explores nothing past the first line).
    #[test]
    fn the_seed_capture_draws() {
        let seed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/heatmap-runqlat.jsonl")).unwrap();
        crate::draw(&seed[..], &crate::Options::default()).unwrap();
    }
}
