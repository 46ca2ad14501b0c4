//! In-process test server on a free port with the echo test double, and a
//! minimal HTTP/1.1 client (one request per connection).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use ds4_engine::testing::{EchoModel, TestTokenizer};
use ds4_engine::{Engine, EngineConfig};
use ds4_server::{router, AppState, ServerConfig};

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub model: EchoModel,
}

pub fn start(cfg: ServerConfig) -> TestServer {
    start_with(cfg, 2048)
}

pub fn start_with(cfg: ServerConfig, prefill_chunk: usize) -> TestServer {
    start_rt(cfg, prefill_chunk, 4)
}

/// [`start_with`] on a tokio runtime with `workers` async worker threads
/// (1 makes any blocking work on an async thread visible as a stall).
pub fn start_rt(cfg: ServerConfig, prefill_chunk: usize, workers: usize) -> TestServer {
    let ecfg = EngineConfig {
        ctx: cfg.ctx,
        prefill_chunk,
        ..EngineConfig::default()
    };
    start_engine(cfg, ecfg, workers)
}

/// A server whose engine has `slots` session slots (`--batched-session`).
pub fn start_slots(cfg: ServerConfig, slots: usize) -> TestServer {
    let ecfg = EngineConfig {
        ctx: cfg.ctx,
        slots,
        ..EngineConfig::default()
    };
    start_engine(cfg, ecfg, 4)
}

pub fn start_engine(cfg: ServerConfig, ecfg: EngineConfig, workers: usize) -> TestServer {
    let model = EchoModel::default();
    let engine = Engine::start(Box::new(model.clone()), Arc::new(TestTokenizer), ecfg).unwrap();
    let state = AppState::new(engine, cfg).unwrap();
    let app = router(state.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    TestServer { addr, state, model }
}

pub fn cfg(ctx: usize) -> ServerConfig {
    ServerConfig {
        ctx,
        ..ServerConfig::default()
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn write_request(
    s: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" || !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
}

pub fn read_head(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (status, headers)
}

fn decode_chunked(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = raw.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&raw[..nl]).unwrap().trim(), 16).unwrap();
        raw = &raw[nl + 2..];
        if n == 0 {
            break;
        }
        out.extend_from_slice(&raw[..n]);
        raw = &raw[n + 2..];
    }
    out
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write_request(&mut s, method, path, headers, body);
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    let mut raw = Vec::new();
    r.read_to_end(&mut raw).unwrap();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { decode_chunked(&raw) } else { raw };
    Resp {
        status,
        headers,
        body,
    }
}

pub fn post(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Resp {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"")
}

/// SSE events of a finished stream: (event name or "", data) pairs; comments as ("comment", text).
pub fn sse_events(body: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for block in body.split("\n\n") {
        if block.trim().is_empty() {
            continue;
        }
        let mut name = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(c) = line.strip_prefix(':') {
                out.push(("comment".to_string(), c.trim().to_string()));
            } else if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        if !data.is_empty() {
            out.push((name, data));
        }
    }
    out
}

/// JSON payloads of the data events (skips `[DONE]` and comments).
pub fn sse_json(body: &str) -> Vec<serde_json::Value> {
    sse_events(body)
        .into_iter()
        .filter(|(n, d)| n != "comment" && d != "[DONE]")
        .map(|(_, d)| {
            serde_json::from_str(&d).unwrap_or_else(|e| panic!("bad SSE JSON {d:?}: {e}"))
        })
        .collect()
}

/// Open a streaming request and return the reader positioned at the body.
pub fn open_stream(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> (u16, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write_request(
        &mut s,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    let mut r = BufReader::new(s);
    let (status, _h) = read_head(&mut r);
    (status, r)
}

/// Wait (by polling /health, no time assertion) until `pred` holds.
pub fn wait_health(
    addr: SocketAddr,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..20_000 {
        let h = get(addr, "/health").json();
        if pred(&h) {
            return h;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!(
        "health condition never became true: {}",
        get(addr, "/health").text()
    );
}

/// The official DSML block for one call with string parameters.
pub fn dsml_call(name: &str, params: &[(&str, &str, bool)]) -> String {
    let mut s = String::from("\n\n<｜DSML｜tool_calls>\n");
    s.push_str(&format!("<｜DSML｜invoke name=\"{name}\">\n"));
    for (k, v, is_str) in params {
        s.push_str(&format!(
            "<｜DSML｜parameter name=\"{k}\" string=\"{}\">{v}</｜DSML｜parameter>\n",
            if *is_str { "true" } else { "false" }
        ));
    }
    s.push_str("</｜DSML｜invoke>\n</｜DSML｜tool_calls>");
    s
}
