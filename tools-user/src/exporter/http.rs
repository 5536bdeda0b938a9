//! The exporter's HTTP/1.1 server: `GET` (and `HEAD`) of the metrics path
//! and of a small index page, nothing else.
//!
//! Written on tokio with httparse (hyper's request parser) rather than on
//! a general server: a GET-only endpoint needs no request bodies, and every
//! bound is then explicit here. A request head is at most 8 KiB and must
//! arrive within 10 s of its first byte (a connection idle between
//! requests is closed after 2 min); a response that the client does not
//! read within 10 s ends the connection; at most 256 connections are open,
//! each holding one small buffer. When all are taken, the one that has
//! waited longest for a request (or a TLS handshake) is closed to make room
//! for the new one, so clients that connect and stall, however often they
//! reconnect, cannot keep a scrape out. A stalled client therefore holds
//! one connection and a few KiB until its timeout or its eviction, and
//! blocks nobody: every connection is its own task.

use std::{cell::RefCell, collections::BTreeMap, io, rc::Rc, sync::Arc, time::Duration};

use anyhow::Result;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpListener,
    sync::{Notify, Semaphore},
    time::{timeout, timeout_at, Instant},
};

use super::{metrics::TextFormat, web_config::WebConfig, Exporter};

const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 48;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_CONNECTIONS: usize = 256;

/// A password to check, and where its answer goes.
type Check = (Arc<WebConfig>, Option<String>, tokio::sync::oneshot::Sender<bool>);

/// Checks that may wait for the checker at once: past them a request gets
/// 503 at once, so connections held by guesses stay few, and the others
/// can be closed to make room (see `Waiting`).
const MAX_PENDING_CHECKS: usize = 32;

/// A request's place among the checks waiting (given back when dropped,
/// also by a connection closed while it waits).
struct PendingCheck;

thread_local!(static PENDING_CHECKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });

impl PendingCheck {
    /// None when MAX_PENDING_CHECKS are waiting.
    fn take() -> Option<PendingCheck> {
        let pending = PENDING_CHECKS.get();
        (pending < MAX_PENDING_CHECKS).then(|| {
            PENDING_CHECKS.set(pending + 1);
            PendingCheck
        })
    }
}

impl Drop for PendingCheck {
    fn drop(&mut self) {
        PENDING_CHECKS.set(PENDING_CHECKS.get() - 1);
    }
}

/// The thread that checks passwords, one at a time, started at the first
/// check. bcrypt takes tens of milliseconds a check, by design: off the
/// serving thread, and never more than one core, however many clients
/// guess at once.
fn password_checker() -> &'static std::sync::mpsc::Sender<Check> {
    static CHECKER: std::sync::OnceLock<std::sync::mpsc::Sender<Check>> = std::sync::OnceLock::new();
    CHECKER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Check>();
        std::thread::spawn(move || {
            for (web, authorization, answer) in rx {
                let _ = answer.send(web.authorized(authorization.as_deref()));
            }
        });
        tx
    })
}

/// Connections waiting for a request or a TLS handshake, by when they
/// began to wait: when every slot is taken, the one waiting longest is
/// closed.
#[derive(Default)]
struct Waiting {
    by_age: RefCell<BTreeMap<u64, Rc<Notify>>>,
    /// Orders the waits: each gets the next number.
    waits: std::cell::Cell<u64>,
    /// Connections closed to make room since the log last said so, and when it did.
    closed: RefCell<(u64, Option<Instant>)>,
}

impl Waiting {
    /// Closes the connection that has waited longest; false if none waits.
    fn close_oldest(&self) -> bool {
        let Some((_, close)) = self.by_age.borrow_mut().pop_first() else { return false };
        close.notify_one();
        true
    }

    /// Says what was closed at most once a minute, however many were.
    fn say(&self, what: &str) {
        let (count, said) = &mut *self.closed.borrow_mut();
        *count += 1;
        if said.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            log::warn!("{MAX_CONNECTIONS} connections open: {what} ({count} since this was last said)");
            (*count, *said) = (0, Some(Instant::now()));
        }
    }
}

/// One connection's place in [`Waiting`].
struct Turn<'a> {
    /// Its place in the order of waits, while it waits.
    wait: std::cell::Cell<u64>,
    close: Rc<Notify>,
    waiting: &'a Waiting,
}

impl<'a> Turn<'a> {
    fn new(waiting: &'a Waiting) -> Turn<'a> {
        let turn = Turn { wait: Default::default(), close: Rc::new(Notify::new()), waiting };
        turn.idle();
        turn
    }

    /// Waiting for a request, from now: may be closed to make room.
    fn idle(&self) {
        let wait = self.waiting.waits.get();
        self.waiting.waits.set(wait + 1);
        self.wait.set(wait);
        self.waiting.by_age.borrow_mut().insert(wait, self.close.clone());
    }

    /// Serving a request: kept.
    fn busy(&self) {
        self.waiting.by_age.borrow_mut().remove(&self.wait.get());
    }
}

/// Serves every listener until the future is dropped. Runs on a `LocalSet`:
/// connections share the exporter through an `Rc`.
pub async fn serve(listeners: Vec<TcpListener>, web: Arc<WebConfig>, exporter: Rc<RefCell<Exporter>>) -> Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tls = web.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let waiting = Rc::new(Waiting::default());
    let mut accepting = Vec::new();
    for listener in listeners {
        let (slots, web, exporter, tls, waiting) =
            (slots.clone(), web.clone(), exporter.clone(), tls.clone(), waiting.clone());
        accepting.push(tokio::task::spawn_local(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    // EMFILE and the like: wait rather than spin.
                    Err(err) => {
                        log::warn!("accepting a connection: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let slot = match slots.clone().try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(_) if waiting.close_oldest() => {
                        waiting.say("closed the one waiting longest for a request, to make room");
                        // Its task ends at once, and gives back its slot.
                        match slots.clone().acquire_owned().await {
                            Ok(slot) => slot,
                            Err(_) => continue,
                        }
                    }
                    Err(_) => {
                        waiting.say(&format!("every one busy: closed a new one (from {peer})"));
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (web, exporter, tls, waiting) = (web.clone(), exporter.clone(), tls.clone(), waiting.clone());
                tokio::task::spawn_local(async move {
                    let _slot = slot;
                    let turn = Turn::new(&waiting);
                    let close = turn.close.clone();
                    let result = tokio::select! {
                        result = async {
                            match tls {
                                Some(tls) => tls_connection(stream, &tls, &web, &exporter, &turn).await,
                                None => connection(stream, &web, &exporter, &turn).await,
                            }
                        } => result,
                        _ = close.notified() => Err(io::Error::other("closed to make room for a new connection")),
                    };
                    turn.busy();
                    if let Err(err) = result {
                        log::info!("connection from {peer}: {err}");
                    }
                });
            }
        }));
    }
    for task in accepting {
        task.await?;
    }
    Ok(())
}

/// A connection to a TLS listener: the handshake, then its requests. A
/// client speaking plain HTTP is told so in plain HTTP, as Go's servers do,
/// not sent a TLS alert it cannot read.
async fn tls_connection(
    mut stream: tokio::net::TcpStream,
    tls: &tokio_rustls::TlsAcceptor,
    web: &Arc<WebConfig>,
    exporter: &Rc<RefCell<Exporter>>,
    turn: &Turn<'_>,
) -> io::Result<()> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut first = [0u8; 1];
    match timeout_at(deadline, stream.peek(&mut first)).await {
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
        // A TLS record starts with its type (22, a handshake); a request with its method.
        Ok(Ok(1)) if first[0].is_ascii_uppercase() => {
            let response = Response::error(400, "Client sent an HTTP request to an HTTPS server.");
            return write(&mut stream, &response, false, false, web).await;
        }
        Ok(_) => {}
    }
    // The handshake within what is left of the same 10 s.
    match timeout_at(deadline, tls.accept(stream)).await {
        Ok(Ok(stream)) => connection(stream, web, exporter, turn).await,
        Ok(Err(err)) => Err(err),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
    }
}

/// One request, as far as the server cares.
struct Request {
    method: String,
    path: String,
    accept: Option<String>,
    authorization: Option<String>,
    keep_alive: bool,
    has_body: bool,
}

/// Serves requests on one connection until it closes, misbehaves or times out.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    web: &Arc<WebConfig>,
    exporter: &Rc<RefCell<Exporter>>,
    turn: &Turn<'_>,
) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut served = 0u64;
    loop {
        // Wait for the next request: its head must be complete within
        // HEAD_TIMEOUT of its first byte, and the first byte may take
        // IDLE_TIMEOUT on a kept-alive connection.
        let mut deadline = Instant::now() + if served == 0 { HEAD_TIMEOUT } else { IDLE_TIMEOUT };
        let request = loop {
            if !buf.is_empty() {
                deadline = deadline.min(Instant::now() + HEAD_TIMEOUT);
            }
            match parse(&buf) {
                Ok(Some((request, used))) => {
                    buf.drain(..used);
                    break request;
                }
                Ok(None) if buf.len() >= MAX_HEAD => {
                    let response = Response::error(431, "request head too large");
                    return write(&mut stream, &response, false, false, web).await;
                }
                Ok(None) => {}
                Err(message) => {
                    let response = Response::error(400, message);
                    return write(&mut stream, &response, false, false, web).await;
                }
            }
            let mut chunk = [0u8; 2048];
            let room = (MAX_HEAD - buf.len()).min(chunk.len());
            let n = match timeout_at(deadline, stream.read(&mut chunk[..room])).await {
                Ok(read) => read?,
                Err(_) if buf.is_empty() => return Ok(()),
                Err(_) => {
                    let response = Response::error(408, "request head not received in time");
                    return write(&mut stream, &response, false, false, web).await;
                }
            };
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        served += 1;
        turn.busy();
        let head_only = request.method == "HEAD";
        let response = respond(&request, web, exporter).await;
        // A body is never read: the connection cannot be reused after one.
        // Nor after an error: a client that asks for what is not served
        // gets no connection to hold.
        let keep_alive = request.keep_alive && !request.has_body && response.status < 400;
        write(&mut stream, &response, head_only, keep_alive, web).await?;
        if !keep_alive {
            return Ok(());
        }
        turn.idle();
    }
}

fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err("too many headers"),
        Err(_) => return Err("malformed request"),
    };
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::to_owned)
    };
    let connection = header("connection").unwrap_or_default().to_ascii_lowercase();
    let http11 = parsed.version == Some(1);
    let keep_alive = if http11 { !connection.contains("close") } else { connection.contains("keep-alive") };
    let has_body = header("transfer-encoding").is_some()
        || header("content-length").is_some_and(|l| l.trim().parse::<u64>().map_or(true, |n| n > 0));
    Ok(Some((
        Request {
            method: parsed.method.unwrap_or_default().to_owned(),
            path: parsed.path.unwrap_or_default().to_owned(),
            accept: header("accept"),
            authorization: header("authorization"),
            keep_alive,
            has_body,
        },
        used,
    )))
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Extra headers: `Allow`, `WWW-Authenticate`.
    headers: Vec<(&'static str, &'static str)>,
}

impl Response {
    fn error(status: u16, message: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{message}\n").into_bytes(),
            headers: vec![],
        }
    }
}

async fn respond(request: &Request, web: &Arc<WebConfig>, exporter: &Rc<RefCell<Exporter>>) -> Response {
    let path = request.path.split('?').next().unwrap_or_default();
    let metrics_path = exporter.borrow().metrics_path.clone();
    let known = path == metrics_path || path == "/";
    if !known {
        return Response::error(404, "not found");
    }
    if request.method != "GET" && request.method != "HEAD" {
        let mut response = Response::error(405, "method not allowed: only GET and HEAD");
        response.headers.push(("Allow", "GET, HEAD"));
        return response;
    }
    if request.has_body {
        return Response::error(400, "a GET carries no body");
    }
    if web.needs_auth() {
        // Credentials already verified never wait behind the checks.
        let ok = match web.verified_before(request.authorization.as_deref()) {
            true => true,
            false => {
                let Some(_pending) = PendingCheck::take() else {
                    let mut response = Response::error(503, "too many password checks waiting: try again");
                    response.headers.push(("Retry-After", "1"));
                    return response;
                };
                let (answer, answered) = tokio::sync::oneshot::channel();
                let check = (web.clone(), request.authorization.clone(), answer);
                password_checker().send(check).is_ok() && answered.await.unwrap_or(false)
            }
        };
        if !ok {
            let mut response = Response::error(401, "unauthorized");
            response.headers.push(("WWW-Authenticate", "Basic"));
            return response;
        }
    }
    if path == "/" {
        let body = exporter.borrow().index_page();
        return Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: body.into_bytes(),
            headers: vec![],
        };
    }
    let format = negotiate(request.accept.as_deref());
    let mut exporter = exporter.borrow_mut();
    let scrape = exporter.scrape();
    match format {
        Negotiated::Protobuf => Response {
            status: 200,
            content_type:
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
            body: scrape.protobuf(exporter.schema),
            headers: vec![],
        },
        Negotiated::Text(format) => Response {
            status: 200,
            content_type: match format {
                TextFormat::Classic => "text/plain; version=0.0.4; charset=utf-8",
                TextFormat::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            },
            body: scrape.text(format).into_bytes(),
            headers: vec![],
        },
    }
}

async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: &Response,
    head_only: bool,
    keep_alive: bool,
    web: &WebConfig,
) -> io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head += &format!("{name}: {value}\r\n");
    }
    for (name, value) in &web.headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += if keep_alive { "\r\n" } else { "Connection: close\r\n\r\n" };
    let send = async {
        stream.write_all(head.as_bytes()).await?;
        if !head_only {
            stream.write_all(&response.body).await?;
        }
        stream.flush().await?;
        if !keep_alive {
            stream.shutdown().await?;
        }
        io::Result::Ok(())
    };
    match timeout(WRITE_TIMEOUT, send).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the client did not read the response in time")),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Negotiated {
    Protobuf,
    Text(TextFormat),
}

/// The format an `Accept` header asks for, by its q values: the protobuf
/// stream (which carries native histograms), OpenMetrics, or the classic
/// text (also for no header, or nothing this serves).
fn negotiate(accept: Option<&str>) -> Negotiated {
    let mut best = (0.0f64, Negotiated::Text(TextFormat::Classic));
    for entry in accept.unwrap_or_default().split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let (mut q, mut proto, mut delimited) = (1.0f64, false, false);
        for param in parts {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            match (name.trim().to_ascii_lowercase().as_str(), value.trim()) {
                ("q", v) => q = v.parse().unwrap_or(0.0),
                ("proto", "io.prometheus.client.MetricFamily") => proto = true,
                ("encoding", "delimited") => delimited = true,
                _ => {}
            }
        }
        let format = match media.as_str() {
            "application/vnd.google.protobuf" if proto && delimited => Negotiated::Protobuf,
            "application/openmetrics-text" => Negotiated::Text(TextFormat::OpenMetrics),
            "text/plain" | "text/*" | "*/*" => Negotiated::Text(TextFormat::Classic),
            _ => continue,
        };
        if q > best.0 {
            best = (q, format);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_prometheus_accept_headers() {
        // Prometheus 2.42 with native histograms, then without.
        let native =
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,\
                      application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";
        let classic = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                       text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(native)), Negotiated::Protobuf);
        assert_eq!(negotiate(Some(classic)), Negotiated::Text(TextFormat::OpenMetrics));
        assert_eq!(negotiate(None), Negotiated::Text(TextFormat::Classic));
        assert_eq!(negotiate(Some("text/html")), Negotiated::Text(TextFormat::Classic));
        assert_eq!(
            negotiate(Some("application/vnd.google.protobuf;proto=x;encoding=delimited")),
            Negotiated::Text(TextFormat::Classic)
        );
    }

    #[test]
    fn requests_are_parsed_with_their_connection_and_body() {
        let (r, used) = parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\nGET").unwrap().unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.keep_alive, r.has_body), ("GET", "/metrics", true, false));
        assert_eq!(used, 54);
        let (r, _) = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive);
        let (r, _) = parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").unwrap().unwrap();
        assert!(r.has_body);
        assert!(parse(b"GET /metrics HTTP/1.1\r\nHost").unwrap().is_none());
        assert!(parse(b"\x01\x02 nonsense\r\n\r\n").is_err());
    }
}
