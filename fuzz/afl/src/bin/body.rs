//! AFL++ harness for `swiftiply::fuzzing::check_body` (the cargo-fuzz target
//! `fuzz/fuzz_targets/body.rs` calls the same check).

fn main() {
    afl::fuzz!(|data: &[u8]| swiftiply::fuzzing::check_body(data));
}
