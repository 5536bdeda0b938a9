#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tools_parse::fuzz::cgroup_path(data));
