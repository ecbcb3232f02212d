//! A minimal Swiftiply backend: dials in to the proxy and answers every
//! request with a short text that echoes the request line.
//!
//! ```text
//! cargo run --example echo_backend -- 127.0.0.1:30000 [CONNECTIONS] [KEY]
//! ```
//!
//! It speaks the backend protocol of docs/protocol.md with nothing but the standard
//! library: send the handshake, then read one request at a time (head, then
//! a Content-Length or chunked body) and write one response. Each connection
//! reconnects after a short pause if the proxy goes away.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:30000".into());
    let conns: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(4);
    let key = args.next().unwrap_or_default();
    if key.len() > 255 {
        eprintln!("echo_backend: the key must be at most 255 bytes");
        std::process::exit(2);
    }
    eprintln!("echo_backend: {conns} connections to {addr}");
    let workers: Vec<_> = (0..conns)
        .map(|i| {
            let (addr, key) = (addr.clone(), key.clone());
            thread::spawn(move || loop {
                match serve(&addr, &key, i) {
                    Ok(()) => eprintln!("echo_backend[{i}]: proxy closed the connection"),
                    Err(e) => eprintln!("echo_backend[{i}]: {e}"),
                }
                thread::sleep(Duration::from_millis(500));
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

fn serve(addr: &str, key: &str, n: usize) -> io::Result<()> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    // 12-character id: 8 hex digits of our pid, 4 of the connection number.
    let id = format!("{:08x}{:04x}", std::process::id(), n & 0xffff);
    write!(sock, "swiftclient{id}{:02x}{key}", key.len())?;
    let mut reader = BufReader::new(sock.try_clone()?);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                }
            }
        }
        let body_len = if chunked {
            read_chunked(&mut reader)?
        } else {
            discard(&mut reader, length)?
        };
        let text = format!(
            "Hello from backend {id}: {} ({body_len} body bytes)\n",
            request_line.trim_end()
        );
        write!(
            sock,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )?;
    }
}

fn discard(r: &mut impl Read, n: usize) -> io::Result<usize> {
    io::copy(&mut r.take(n as u64), &mut io::sink()).map(|n| n as usize)
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers until the empty line.
            loop {
                line.clear();
                r.read_line(&mut line)?;
                if line.trim_end().is_empty() {
                    return Ok(total);
                }
            }
        }
        total += discard(r, size)?;
        discard(r, 2)?;
    }
}
