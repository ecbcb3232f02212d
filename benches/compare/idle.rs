//! Memory per idle keep-alive connection: the proxy's RSS with N used and
//! idle client connections, minus its RSS at rest, divided by N.
//!
//! Each connection is opened, sends one `GET /hello` and reads the whole
//! response (so it is established, has been used and is now idle), one
//! after the other. The RSS is read once it has stopped moving (unchanged
//! for a second); then every connection is closed.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::http::Client;
use crate::lab::{self, Lab, ProcId};

pub struct Idle {
    /// Connections actually held.
    pub held: usize,
    pub rest_bytes: u64,
    pub loaded_bytes: u64,
    /// Whether the RSS settled before the deadline (else the last reading).
    pub settled: bool,
    /// Why fewer connections than asked were held, if so.
    pub shortfall: Option<String>,
}

impl Idle {
    pub fn per_connection(&self) -> f64 {
        (self.loaded_bytes as f64 - self.rest_bytes as f64) / self.held.max(1) as f64
    }
}

/// Opens `want` idle connections to `addr` and measures `pid`'s RSS; `proc`
/// is the process to watch for an early exit (nginx's master for its
/// worker).
pub fn measure(
    lab: &Lab,
    proc: ProcId,
    pid: u32,
    addr: SocketAddr,
    want: usize,
) -> Result<Idle, String> {
    let (rest_bytes, _) = settled_rss(pid, 10.0)?;
    let mut held: Vec<TcpStream> = Vec::with_capacity(want);
    let mut shortfall = None;
    for i in 0..want {
        lab::check_interrupt()?;
        let opened = Client::connect(addr, Duration::from_secs(5)).and_then(|mut c| {
            let reply = c.get("/hello")?;
            if reply.status != 200 {
                return Err(std::io::Error::other(format!("status {}", reply.status)));
            }
            Ok(c.into_stream())
        });
        match opened {
            Ok(s) => held.push(s),
            Err(e) => {
                lab.check_alive(proc)?;
                if i == 0 {
                    return Err(format!("the first idle connection failed: {e}"));
                }
                shortfall = Some(format!("connection {} of {want} failed: {e}", i + 1));
                break;
            }
        }
    }
    let (loaded_bytes, settled) = settled_rss(pid, 15.0)?;
    lab.check_alive(proc)?;
    let result = Idle {
        held: held.len(),
        rest_bytes,
        loaded_bytes,
        settled,
        shortfall,
    };
    drop(held);
    Ok(result)
}

/// Reads VmRSS every 200 ms until five readings in a row agree, or
/// `patience` seconds pass (then the last reading, `false`).
fn settled_rss(pid: u32, patience: f64) -> Result<(u64, bool), String> {
    let until = lab::after(patience);
    let mut last = lab::rss_bytes(pid)?;
    let mut same = 0;
    loop {
        lab::sleep_until(lab::after(0.2))?;
        let now = lab::rss_bytes(pid)?;
        if now == last {
            same += 1;
            if same >= 5 {
                return Ok((now, true));
            }
        } else {
            same = 0;
            last = now;
        }
        if std::time::Instant::now() >= until {
            return Ok((last, false));
        }
    }
}
