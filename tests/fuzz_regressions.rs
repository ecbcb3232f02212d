//! Replays the fuzzers' committed inputs with stable cargo, so every test
//! run re-checks them: `fuzz/corpus/<target>/` (the minimized corpus, which
//! must exist and hold files, or this test would pass on nothing) and
//! `fuzz/regressions/<target>/` (inputs that once broke an invariant; the
//! folder is optional). Each input goes through the same
//! `swiftiply::fuzzing::check_<target>` the fuzz target calls; a failure
//! names the file.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use swiftiply::fuzzing;

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` over every input of `target`; panics naming each file that
/// broke an invariant.
fn replay(target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = fuzz.join("corpus").join(target);
    let mut inputs = files_in(&corpus);
    assert!(
        !inputs.is_empty(),
        "{} holds no inputs: the fuzz corpus is missing",
        corpus.display()
    );
    let regressions = fuzz.join("regressions").join(target);
    if regressions.exists() {
        inputs.extend(files_in(&regressions));
    }
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = fs::read(path).expect("read an input");
            panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs broke an invariant (the panic above names it):\n  {}",
        failed.len(),
        inputs.len(),
        failed.join("\n  ")
    );
}

#[test]
fn request_head() {
    replay("request_head", fuzzing::check_request_head);
}

#[test]
fn body() {
    replay("body", fuzzing::check_body);
}

#[test]
fn packets() {
    replay("packets", fuzzing::check_packets);
}

#[test]
fn response_head() {
    replay("response_head", fuzzing::check_response_head);
}

#[test]
fn handshake() {
    replay("handshake", fuzzing::check_handshake);
}

#[test]
fn static_path() {
    replay("static_path", fuzzing::check_static_path);
}

#[test]
fn config() {
    replay("config", fuzzing::check_config);
}
