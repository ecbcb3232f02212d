//! AFL++ harness for `swiftiply::fuzzing::check_request_head` (the cargo-fuzz target
//! `fuzz/fuzz_targets/request_head.rs` calls the same check).

fn main() {
    afl::fuzz!(|data: &[u8]| swiftiply::fuzzing::check_request_head(data));
}
