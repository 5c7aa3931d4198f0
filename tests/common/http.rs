//! A real HTTP server for download tests, and a fault-injecting proxy in front of it.
//!
//! - [`Nginx`]: `scripts/sandbox http DIR ROOT [--tls]` — nginx on 127.0.0.1 serving a
//!   directory (byte ranges, optionally HTTPS with a private CA), stopped on drop.
//! - [`Proxy`]: a TCP proxy on 127.0.0.1:0 that forwards to nginx, one thread per
//!   connection, with a scripted [`Fault`] per connection, and counts every response byte it
//!   gets into the client's socket.
//!
//! The proxy speaks just enough HTTP/1.1 for this: it reads the request head, forwards it with
//! `Connection: close` (so each connection carries exactly one exchange and faults map to
//! requests) followed by the request body (`Content-Length` bytes: POSTed reports), reads the
//! response head, then pumps the body.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::repo_root;

/// nginx from `scripts/sandbox http`, under its own temporary directory.
pub struct Nginx {
    dir: tempfile::TempDir,
    url: String,
}

impl Nginx {
    /// Serves `root` over plain HTTP.
    pub fn start(root: &Path) -> Nginx {
        Nginx::start_with(root, false)
    }

    /// Serves `root` over HTTPS with a certificate from a private CA ([`Nginx::ca_pem`]).
    pub fn start_tls(root: &Path) -> Nginx {
        Nginx::start_with(root, true)
    }

    /// Serves `root` over HTTPS and passes requests under `path` to `http://upstream`: TLS in
    /// front of a plain-HTTP service (the report receiver).
    pub fn start_tls_proxy(root: &Path, path: &str, upstream: &str) -> Nginx {
        Nginx::start_args(root, &["--tls", "--proxy", &format!("{path}={upstream}")])
    }

    /// Serves `root` over HTTPS and answers requests for `path` with a 307 redirect to `to`.
    pub fn start_tls_redirect(root: &Path, path: &str, to: &str) -> Nginx {
        Nginx::start_args(root, &["--tls", "--redirect", &format!("{path}={to}")])
    }

    fn start_with(root: &Path, tls: bool) -> Nginx {
        Nginx::start_args(root, if tls { &["--tls"] } else { &[] })
    }

    fn start_args(root: &Path, args: &[&str]) -> Nginx {
        let dir = tempfile::Builder::new()
            .prefix("ssu-http.")
            .tempdir()
            .expect("create http dir");
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/sandbox"))
            .arg("http")
            .arg(dir.path())
            .arg(root)
            .args(args);
        let out = cmd.output().expect("run scripts/sandbox http");
        let nginx = Nginx {
            url: std::fs::read_to_string(dir.path().join("http/url"))
                .unwrap_or_default()
                .trim()
                .to_string(),
            dir,
        };
        assert!(
            out.status.success() && !nginx.url.is_empty(),
            "scripts/sandbox http failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        nginx
    }

    /// The base URL, ending in `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        let rest = self.url.split_once("://").expect("scheme").1;
        rest.trim_end_matches('/').parse().expect("host:port")
    }

    /// The private CA's certificate (with `start_tls`).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("http/ca.pem")
    }

    /// nginx's access log: one line per request with `$bytes_sent`.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("http/access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/sandbox"))
            .arg("down")
            .arg(self.dir.path())
            .output();
    }
}

/// What the proxy does to one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward faithfully.
    None,
    /// Close the connection after this many response bytes (head included).
    DropAfter(u64),
    /// After this many response bytes, forward nothing for `pause`, then go on (if the client
    /// is still there).
    Stall { after: u64, pause: Duration },
    /// "Endless data": drop `Content-Length` (the body then ends at connection close) and,
    /// after the real body, keep sending garbage until the client hangs up (at most
    /// [`GARBAGE_CAP`] bytes), paced in [`GARBAGE_PIECE`]-byte writes.
    Endless,
    /// Replace the `Content-Length` value.
    ContentLength(u64),
    /// Flip the body byte that is at this offset of the served file.
    CorruptAt(u64),
    /// Remove `Range` from the request, so the server answers 200 with the whole file.
    IgnoreRange,
    /// Answer with this status and an empty body, without asking the server.
    Status(u16),
    /// Answer with bytes that are not HTTP, then close, without asking the server.
    Garbage,
}

/// The most garbage [`Fault::Endless`] sends on one connection.
pub const GARBAGE_CAP: u64 = 64 << 20;
/// Garbage goes out in pieces of this size, 1 ms apart, so the kernel's socket buffers do not
/// fill up and the count at the proxy stays close to what the client actually read.
pub const GARBAGE_PIECE: usize = 16 * 1024;

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The client's `Range` header, if any (before any fault removed it).
    pub range: Option<String>,
    /// The status sent to the client (0 if the exchange failed before a response).
    pub status: u16,
    /// Response bytes (head and body) that went into the client's socket.
    pub sent: u64,
    pub fault: Fault,
}

#[derive(Default)]
struct Plan {
    next: VecDeque<Fault>,
    then: Option<Fault>,
}

struct Shared {
    upstream: SocketAddr,
    plan: Mutex<Plan>,
    sent: AtomicU64,
    exchanges: Mutex<Vec<Exchange>>,
    /// Connections being served; the condvar signals when it drops.
    active: Mutex<usize>,
    idle: Condvar,
}

/// The fault-injecting proxy.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            plan: Mutex::new(Plan::default()),
            sent: AtomicU64::new(0),
            exchanges: Mutex::new(Vec::new()),
            active: Mutex::new(0),
            idle: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (shared, stop) = (shared.clone(), stop.clone());
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let shared = shared.clone();
                    *shared.active.lock().unwrap() += 1;
                    thread::spawn(move || {
                        serve(&shared, client);
                        *shared.active.lock().unwrap() -= 1;
                        shared.idle.notify_all();
                    });
                }
            })
        };
        Proxy {
            addr,
            shared,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// The base URL of the proxy, ending in `/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The next connections get these faults, one each, in order; after them, `then`.
    pub fn script(&self, next: impl IntoIterator<Item = Fault>, then: Fault) {
        let mut plan = self.shared.plan.lock().unwrap();
        plan.next = next.into_iter().collect();
        plan.then = Some(then);
    }

    /// Every following connection gets `fault`.
    pub fn always(&self, fault: Fault) {
        self.script([], fault);
    }

    /// Response bytes sent to clients so far, over all connections.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.sent.load(Ordering::SeqCst)
    }

    /// Every exchange so far, as it stands (a connection still being served may send more).
    pub fn exchanges_now(&self) -> Vec<Exchange> {
        self.shared.exchanges.lock().unwrap().clone()
    }

    /// Waits until no connection is being served (their threads notice a client that went
    /// away at their next write), then returns every exchange so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut active = self.shared.active.lock().unwrap();
        while *active > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "proxy connections still busy after 30 s");
            active = self.shared.idle.wait_timeout(active, left).unwrap().0;
        }
        drop(active);
        self.exchanges_now()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Reads an HTTP head (through the blank line) and whatever body bytes came with it.
fn read_head(stream: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("head larger than 64 KiB"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The value of header `name` in `head`.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `head` without the headers in `drop`, with `extra` lines added at the end.
fn rewrite(head: &str, drop: &[&str], extra: &[String]) -> String {
    let mut out = String::new();
    for (i, line) in head.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        let name = line.split_once(':').map(|(k, _)| k.trim());
        if i > 0 && name.is_some_and(|n| drop.iter().any(|d| d.eq_ignore_ascii_case(n))) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    for line in extra {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out
}

/// Writes response bytes to the client, counting them and applying drop/stall faults.
struct Sender<'a> {
    client: &'a TcpStream,
    shared: &'a Shared,
    /// This exchange's index in `shared.exchanges`.
    index: usize,
    fault: &'a Fault,
    sent: u64,
    stalled: bool,
}

impl Sender<'_> {
    /// Sends `data`; `Ok(false)` when the fault ended the connection.
    fn send(&mut self, mut data: &[u8]) -> io::Result<bool> {
        match *self.fault {
            Fault::DropAfter(limit) => {
                let room = limit.saturating_sub(self.sent);
                if (data.len() as u64) >= room {
                    self.write(&data[..room as usize])?;
                    let _ = self.client.shutdown(Shutdown::Both);
                    return Ok(false);
                }
            }
            Fault::Stall { after, pause } if !self.stalled => {
                let room = after.saturating_sub(self.sent);
                if (data.len() as u64) > room {
                    self.write(&data[..room as usize])?;
                    data = &data[room as usize..];
                    self.stalled = true;
                    thread::sleep(pause);
                }
            }
            _ => {}
        }
        self.write(data)?;
        Ok(true)
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        // Write piece by piece so the count only holds what the socket took.
        let mut stream = self.client;
        let mut rest = data;
        while !rest.is_empty() {
            let n = stream.write(rest)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.sent += n as u64;
            self.shared.sent.fetch_add(n as u64, Ordering::SeqCst);
            self.shared.exchanges.lock().unwrap()[self.index].sent += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }
}

fn serve(shared: &Shared, mut client: TcpStream) {
    let Ok((request, mut body)) = read_head(&mut client) else {
        return;
    };
    // The rest of a request body (a POST), so that it can be forwarded whole.
    let length = header(&request, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    while body.len() < length {
        let mut chunk = vec![0u8; (length - body.len()).min(64 * 1024)];
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let fault = {
        let mut plan = shared.plan.lock().unwrap();
        plan.next
            .pop_front()
            .or_else(|| plan.then.clone())
            .unwrap_or(Fault::None)
    };
    let index = {
        let mut exchanges = shared.exchanges.lock().unwrap();
        exchanges.push(Exchange {
            range: header(&request, "range").map(str::to_string),
            status: 0,
            sent: 0,
            fault: fault.clone(),
        });
        exchanges.len() - 1
    };
    let mut out = Sender {
        client: &client,
        shared,
        index,
        fault: &fault,
        sent: 0,
        stalled: false,
    };
    // Errors end the exchange; a client hanging up is how most of them end.
    let _ = pump(shared, &request, &body, &fault, &mut out);
}

fn pump(
    shared: &Shared,
    request: &str,
    request_body: &[u8],
    fault: &Fault,
    out: &mut Sender<'_>,
) -> io::Result<()> {
    let index = out.index;
    let set_status = |status| shared.exchanges.lock().unwrap()[index].status = status;
    if let Fault::Status(status) = *fault {
        set_status(status);
        let head =
            format!("HTTP/1.1 {status} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        out.send(head.as_bytes())?;
        return Ok(());
    }
    if *fault == Fault::Garbage {
        out.send(b"\x16\x03\x01 this is not HTTP \xff\xfe\r\n\r\n")?;
        return Ok(());
    }

    let mut drop_request = vec!["connection", "keep-alive"];
    if *fault == Fault::IgnoreRange {
        drop_request.push("range");
    }
    let request = rewrite(request, &drop_request, &["Connection: close".to_string()]);
    let mut upstream = TcpStream::connect(shared.upstream)?;
    upstream.write_all(request.as_bytes())?;
    upstream.write_all(request_body)?;

    let (head, mut body) = read_head(&mut upstream)?;
    set_status(
        head.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    );
    // Where the body starts in the served file: a 206 says so, anything else is from 0.
    let file_offset = header(&head, "content-range")
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let mut drop_response = vec!["connection", "keep-alive"];
    let mut extra = vec!["Connection: close".to_string()];
    match fault {
        Fault::Endless => drop_response.push("content-length"),
        Fault::ContentLength(n) => {
            drop_response.push("content-length");
            extra.push(format!("Content-Length: {n}"));
        }
        _ => {}
    }
    let head = rewrite(&head, &drop_response, &extra);
    if !out.send(head.as_bytes())? {
        return Ok(());
    }

    let mut pos = file_offset;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if body.is_empty() {
            let n = upstream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
        if let Fault::CorruptAt(at) = *fault
            && (pos..pos + body.len() as u64).contains(&at)
        {
            body[(at - pos) as usize] ^= 0xff;
        }
        pos += body.len() as u64;
        if !out.send(&body)? {
            return Ok(());
        }
        body.clear();
    }

    if *fault == Fault::Endless {
        let piece = vec![0x5au8; GARBAGE_PIECE];
        let mut garbage = 0u64;
        while garbage < GARBAGE_CAP {
            out.send(&piece)?;
            garbage += piece.len() as u64;
            thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}
