//! A throttling proxy in front of the Docker engine: listens on 127.0.0.1 (point the binary at
//! it with `DOCKER_HOST=tcp://127.0.0.1:PORT`, plain HTTP as the engine speaks on its socket)
//! and forwards every connection to `/var/run/docker.sock`, byte for byte, except on the
//! connections that carried a request whose request line a [`Rule`] matches:
//!
//! - [`Rule::Trickle`]: from that request on, the connection moves `bytes` per `every` (both
//!   ways together: one slow link that keeps moving);
//! - [`Rule::Stall`]: after `after` bytes (counted from that request, both ways together),
//!   nothing moves any more until the client closes the connection (then the engine side is
//!   closed too, as a broken link would be);
//! - [`Rule::Hold`]: the first `times` matching requests are held `hold` before they are
//!   forwarded (an engine slow to act on them).
//!
//! The proxy's accepted sockets get a small receive buffer, so that the client's writes block
//! as soon as the proxy stops reading, like on a slow network, instead of filling megabytes
//! of loopback buffers. Runs on its own Tokio runtime; stopped on drop.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UnixStream};

pub const ENGINE_SOCKET: &str = "/var/run/docker.sock";

/// Which request lines a rule applies to.
pub type Matcher = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What happens to the connections whose request line `matches`.
#[derive(Clone)]
pub enum Rule {
    Trickle {
        matches: Matcher,
        bytes: usize,
        every: Duration,
    },
    Stall {
        matches: Matcher,
        after: u64,
    },
    Hold {
        matches: Matcher,
        hold: Duration,
        times: usize,
    },
}

impl Rule {
    fn matches(&self, line: &str) -> bool {
        match self {
            Rule::Trickle { matches, .. } | Rule::Stall { matches, .. } => matches(line),
            Rule::Hold { matches, .. } => matches(line),
        }
    }
}

/// A request line that uploads into a container (`PUT /v1.x/containers/ID/archive?path=...`).
pub fn archive_upload() -> Matcher {
    Arc::new(|line| line.starts_with("PUT ") && line.contains("/archive"))
}

/// A request line that moves a container's files either way (`GET`/`PUT .../archive`).
pub fn archive_transfer() -> Matcher {
    Arc::new(|line| {
        (line.starts_with("PUT ") || line.starts_with("GET ")) && line.contains("/archive")
    })
}

/// A request line that starts the container `name` (`POST /v1.x/containers/NAME/start`).
pub fn container_start(name: &str) -> Matcher {
    let needle = format!("/containers/{name}/start");
    Arc::new(move |line| line.starts_with("POST ") && line.contains(&needle))
}

/// What the proxy saw.
#[derive(Default)]
pub struct Seen {
    /// Requests a rule matched.
    pub matched: AtomicUsize,
    /// Requests being held right now.
    pub holding: AtomicUsize,
    /// Connections that stalled.
    pub stalled: AtomicUsize,
    /// Bytes that moved on matched connections.
    pub bytes: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicUsize,
}

pub struct DockerProxy {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DockerProxy {
    pub fn start(rule: Rule) -> DockerProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Seen::default());
        let socket = TcpSocket::new_v4().unwrap();
        // Accepted sockets inherit it: the client's writes block when we stop reading.
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        socket.set_reuseaddr(true).unwrap();
        let listener = runtime.block_on(async {
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            socket.listen(64).unwrap()
        });
        let addr = listener.local_addr().unwrap();
        let (s, r) = (seen.clone(), Arc::new(rule));
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                let (s, r) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    if let Ok(engine) = UnixStream::connect(ENGINE_SOCKET).await {
                        connection(client, engine, r, s).await;
                    }
                });
            }
        });
        DockerProxy {
            addr,
            seen,
            runtime: Some(runtime),
        }
    }

    /// The value for `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("tcp://{}", self.addr)
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// State shared by the two directions of one connection.
struct Conn {
    rule: Arc<Rule>,
    seen: Arc<Seen>,
    /// A request on this connection matched the rule.
    triggered: AtomicBool,
    /// Bytes moved since then (both ways).
    moved: AtomicU64,
    /// Nothing moves any more.
    stalled: AtomicBool,
    /// The client closed its side (or an error ended a direction).
    done: AtomicBool,
    /// When the trickle may send its next bytes (both ways share the link).
    next: std::sync::Mutex<tokio::time::Instant>,
}

async fn connection(client: TcpStream, engine: UnixStream, rule: Arc<Rule>, seen: Arc<Seen>) {
    let conn = Arc::new(Conn {
        rule,
        seen,
        triggered: AtomicBool::new(false),
        moved: AtomicU64::new(0),
        stalled: AtomicBool::new(false),
        done: AtomicBool::new(false),
        next: std::sync::Mutex::new(tokio::time::Instant::now()),
    });
    let client = Arc::new(client);
    let (er, ew) = engine.into_split();
    let up = pump_up(client.clone(), ew, conn.clone());
    let down = pump_down(er, client.clone(), conn.clone());
    // Either direction ending (or the client closing while stalled) ends the connection.
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = watch_close(client, conn.clone()) => {}
    }
}

/// Resolves when the client has closed its side of a stalled connection (no reads happen
/// then, so a closed read side is watched for instead).
async fn watch_close(client: Arc<TcpStream>, conn: Arc<Conn>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if conn.done.load(Ordering::SeqCst) {
            return;
        }
        if conn.stalled.load(Ordering::SeqCst) {
            if let Ok(r) = client.ready(tokio::io::Interest::READABLE).await {
                if r.is_read_closed() || r.is_error() {
                    return;
                }
            }
        }
    }
}

/// Client to engine: request lines are checked against the rule here.
async fn pump_up(
    client: Arc<TcpStream>,
    mut engine: tokio::net::unix::OwnedWriteHalf,
    conn: Arc<Conn>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match read_some(&client, &mut buf, &conn).await {
            Some(n) => n,
            None => break,
        };
        let chunk = &buf[..n];
        let mut hold = None;
        for line in String::from_utf8_lossy(chunk).split("\r\n") {
            if line.ends_with(" HTTP/1.1") && conn.rule.matches(line) {
                let k = conn.seen.matched.fetch_add(1, Ordering::SeqCst);
                match &*conn.rule {
                    Rule::Hold { hold: h, times, .. } if k < *times => hold = Some(*h),
                    Rule::Hold { .. } => {}
                    _ => conn.triggered.store(true, Ordering::SeqCst),
                }
            }
        }
        if let Some(h) = hold {
            conn.seen.holding.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(h).await;
            conn.seen.holding.fetch_sub(1, Ordering::SeqCst);
        }
        if forward(chunk, &mut engine, &conn).await.is_err() {
            break;
        }
    }
    conn.done.store(true, Ordering::SeqCst);
}

/// Engine to client.
async fn pump_down(
    mut engine: tokio::net::unix::OwnedReadHalf,
    client: Arc<TcpStream>,
    conn: Arc<Conn>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut w = ClientWriter(client);
    loop {
        let n = match engine.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if forward(&buf[..n], &mut w, &conn).await.is_err() {
            break;
        }
    }
    conn.done.store(true, Ordering::SeqCst);
}

async fn read_some(client: &TcpStream, buf: &mut [u8], conn: &Conn) -> Option<usize> {
    loop {
        if conn.stalled.load(Ordering::SeqCst) {
            // Nothing is read any more: the client's writes block.
            std::future::pending::<()>().await;
        }
        client.readable().await.ok()?;
        match client.try_read(buf) {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
    }
}

/// Writes `chunk` the way the rule says, once the connection is triggered.
async fn forward<W: AsyncWrite + Unpin>(
    mut chunk: &[u8],
    w: &mut W,
    conn: &Conn,
) -> std::io::Result<()> {
    if !conn.triggered.load(Ordering::SeqCst) {
        return w.write_all(chunk).await;
    }
    match &*conn.rule {
        Rule::Trickle { bytes, every, .. } => {
            // A steady rate of `bytes` per `every`, however the reads come in.
            while !chunk.is_empty() {
                let k = (*bytes).min(chunk.len());
                let at = {
                    let mut next = conn.next.lock().unwrap();
                    let now = tokio::time::Instant::now();
                    let at = (*next).max(now);
                    *next = at + every.mul_f64(k as f64 / *bytes as f64);
                    at
                };
                tokio::time::sleep_until(at).await;
                w.write_all(&chunk[..k]).await?;
                conn.seen.bytes.fetch_add(k as u64, Ordering::SeqCst);
                chunk = &chunk[k..];
            }
            Ok(())
        }
        Rule::Stall { after, .. } => {
            let moved = conn.moved.load(Ordering::SeqCst);
            let allowed = after.saturating_sub(moved).min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..allowed]).await?;
            conn.moved.fetch_add(allowed as u64, Ordering::SeqCst);
            conn.seen.bytes.fetch_add(allowed as u64, Ordering::SeqCst);
            if allowed < chunk.len() {
                if !conn.stalled.swap(true, Ordering::SeqCst) {
                    conn.seen.stalled.fetch_add(1, Ordering::SeqCst);
                }
                std::future::pending::<()>().await;
            }
            Ok(())
        }
        Rule::Hold { .. } => w.write_all(chunk).await,
    }
}

/// Writes to a shared client stream.
struct ClientWriter(Arc<TcpStream>);

impl AsyncWrite for ClientWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            match self.0.poll_write_ready(cx) {
                std::task::Poll::Ready(Ok(())) => {}
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
            match self.0.try_write(buf) {
                Ok(n) => return std::task::Poll::Ready(Ok(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
