//! AFL++ harness for `swiftiply::fuzzing::check_packets` (the cargo-fuzz target
//! `fuzz/fuzz_targets/packets.rs` calls the same check).

fn main() {
    afl::fuzz!(|data: &[u8]| swiftiply::fuzzing::check_packets(data));
}
