//! AFL++ harness for `swiftiply::fuzzing::check_config` (the cargo-fuzz target
//! `fuzz/fuzz_targets/config.rs` calls the same check).

fn main() {
    afl::fuzz!(|data: &[u8]| swiftiply::fuzzing::check_config(data));
}
