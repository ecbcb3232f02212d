//! AFL++ harness for `swiftiply::fuzzing::check_static_path` (the cargo-fuzz target
//! `fuzz/fuzz_targets/static_path.rs` calls the same check).

fn main() {
    afl::fuzz!(|data: &[u8]| swiftiply::fuzzing::check_static_path(data));
}
