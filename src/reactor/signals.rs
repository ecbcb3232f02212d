//! Signals reach the proxy as messages, never as handlers: SIGHUP, SIGUSR1,
//! SIGTERM and SIGINT are blocked in the starting thread before any other
//! thread exists (threads inherit the mask, so no worker is ever
//! interrupted), and one thread takes them with `sigwait` and passes each
//! to the supervising thread (`Workers::wait`). Nothing runs in signal
//! context, so what a signal leads to may lock, allocate and log.

use std::io;
use std::sync::mpsc::Sender;
use std::thread;

/// The signals the supervisor acts on.
const HANDLED: [libc::c_int; 4] = [libc::SIGHUP, libc::SIGUSR1, libc::SIGTERM, libc::SIGINT];

/// Blocks the handled signals in the calling thread (and so in every
/// thread it starts from now on) and starts the thread that waits for
/// them; each one received is sent as `wrap(signal)`.
pub(super) fn start<E: Send + 'static>(
    tx: Sender<E>,
    wrap: fn(libc::c_int) -> E,
) -> io::Result<()> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before
    // use; pthread_sigmask only changes this thread's mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in HANDLED {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        set
    };
    thread::Builder::new()
        .name("swiftiply-signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is an initialised signal set; `sig` is written
            // by sigwait.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc != 0 {
                continue;
            }
            if tx.send(wrap(sig)).is_err() {
                return;
            }
        })?;
    Ok(())
}
