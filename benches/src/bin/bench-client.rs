//! A deterministic load generator for the instruction-count benchmark.
//!
//! `bench-client PORT N [WARMUP]` opens one keep-alive connection to 127.0.0.1:PORT, sends
//! WARMUP requests and then N requests `GET /`, one at a time, the k-th carrying the k-th
//! client address (cycling over 10,000) in the client-address header, then `GET /shutdown`
//! (`Connection: close`) and waits for the server to close. Two runs differing only in N
//! let the caller subtract the server's start-up and shut-down costs.
//!
//! Prints `requests=.. ok=.. refused=.. other=..` on stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use floodgate_bench::{client_ip, DISTINCT_IPS, IP_HEADER};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = (
        args.first().and_then(|a| a.parse::<u16>().ok()),
        args.get(1).and_then(|a| a.parse::<u32>().ok()),
        args.get(2).map_or(Some(0), |a| a.parse::<u32>().ok()),
    );
    let (Some(port), Some(n), Some(warmup)) = parsed else {
        eprintln!("usage: bench-client PORT N [WARMUP]");
        return ExitCode::from(2);
    };
    match run(port, n, warmup) {
        Ok(counts) => {
            println!(
                "requests={} ok={} refused={} other={}",
                n + warmup,
                counts[0],
                counts[1],
                counts[2]
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench-client: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Connects, retrying for a minute: a server under valgrind takes a while to listen.
fn connect(port: u16) -> std::io::Result<TcpStream> {
    let start = Instant::now();
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() > Duration::from_secs(60) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// [2xx, 429/403, anything else]
fn run(port: u16, n: u32, warmup: u32) -> std::io::Result<[u64; 3]> {
    let stream = connect(port)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut counts = [0u64; 3];
    let mut request = String::with_capacity(128);
    for k in 0..warmup + n {
        request.clear();
        request.push_str("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        request.push_str(IP_HEADER);
        request.push_str(": ");
        request.push_str(&client_ip(k % DISTINCT_IPS).to_string());
        request.push_str("\r\n\r\n");
        writer.write_all(request.as_bytes())?;
        let status = read_response(&mut reader)?;
        let slot = match status {
            200..=299 => 0,
            403 | 429 => 1,
            _ => 2,
        };
        counts[slot] += 1;
    }
    writer.write_all(b"GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut rest = Vec::new();
    // The server closes the connection once it answered; a reset is as good as a close.
    let _ = reader.read_to_end(&mut rest);
    Ok(counts)
}

/// Reads one response (status line, headers, a `Content-Length` body); returns the status.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(bad("connection closed"));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("connection closed in headers"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value
                    .trim()
                    .parse()
                    .map_err(|_| bad("bad content-length"))?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(status)
}
