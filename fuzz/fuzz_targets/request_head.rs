#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| swiftiply::fuzzing::check_request_head(data));
