//! AFL++ harness for `swiftiply::fuzzing::check_handshake` (the cargo-fuzz target
//! `fuzz/fuzz_targets/handshake.rs` calls the same check).

fn main() {
    afl::fuzz!(|data: &[u8]| swiftiply::fuzzing::check_handshake(data));
}
