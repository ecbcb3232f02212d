//! SIGTERM / SIGINT → a stop flag, for backends and the bridge.
//!
//! The signal handler only stores to a static atomic (all a handler may
//! safely do); a small thread copies that into the caller's flag.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// Sets `stop` on the first SIGTERM or SIGINT; a second one exits at once
/// with status 1.
pub fn stop_on_termination(stop: Arc<AtomicBool>) {
    stop_on_termination_then(stop, || {});
}

/// Like `stop_on_termination`, but a second signal first runs `last_words`
/// (on an ordinary thread, not in signal context) and then exits with
/// status 1: a process that supervises children uses it to signal them
/// before it goes.
pub fn stop_on_termination_then<F>(stop: Arc<AtomicBool>, last_words: F)
where
    F: FnOnce() + Send + 'static,
{
    // SAFETY: installs a handler that only touches an atomic integer.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
    let mut last_words = Some(last_words);
    thread::spawn(move || loop {
        match SIGNALS.load(Ordering::Relaxed) {
            0 => {}
            1 => stop.store(true, Ordering::Relaxed),
            _ => {
                if let Some(f) = last_words.take() {
                    f();
                }
                std::process::exit(1)
            }
        }
        thread::sleep(Duration::from_millis(20));
    });
}
