//! `ds4 download` against an in-test HTTP server that can drop connections,
//! ignore Range, lie about sizes and require a token.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

const Q2_FILE: &str = "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2.gguf";
const MTP_FILE: &str = "DeepSeek-V4-Flash-MTP-Q4K-Q8_0-F32.gguf";

/// Deterministic pseudo-random content.
fn content(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// How the server behaves.
#[derive(Clone)]
struct Behaviour {
    body: Arc<Vec<u8>>,
    path: String,
    honour_range: bool,
    /// Per connection (in order): body bytes to send before dropping it.
    drops: Vec<usize>,
    /// Announce this many more bytes than exist (never completes).
    extra_length: usize,
    token: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Seen {
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn serve(b: Behaviour) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(conn) = conn else { continue };
            let b = b.clone();
            let seen = seen2.clone();
            std::thread::spawn(move || {
                let _ = handle(conn, &b, b.drops.get(i).copied(), &seen);
            });
        }
    });
    Server { port, seen }
}

fn handle(
    mut conn: TcpStream,
    b: &Behaviour,
    drop_after: Option<usize>,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut s = Seen {
        path: path.clone(),
        ..Default::default()
    };
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((&h, ""));
        let v = v.trim().to_string();
        match k.to_ascii_lowercase().as_str() {
            "range" => s.range = Some(v),
            "authorization" => s.auth = Some(v),
            _ => {}
        }
    }
    seen.lock().unwrap().push(s.clone());
    if path != b.path {
        return conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    if let Some(t) = &b.token {
        if s.auth.as_deref() != Some(&format!("Bearer {t}")) {
            return conn.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    }
    let total = b.body.len() + b.extra_length;
    let start = match (&s.range, b.honour_range) {
        (Some(r), true) => r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok()),
        _ => None,
    };
    let (head, from) = match start {
        Some(n) if n >= total => {
            conn.write_all(
                format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )?;
            return Ok(());
        }
        Some(n) => (
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{}/{total}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                total - 1,
                total - n
            ),
            n,
        ),
        None => (
            format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"),
            0,
        ),
    };
    conn.write_all(head.as_bytes())?;
    let body = &b.body[from.min(b.body.len())..];
    let n = drop_after.map_or(body.len(), |d| d.min(body.len()));
    conn.write_all(&body[..n])?;
    conn.flush()?;
    conn.shutdown(std::net::Shutdown::Both)
}

fn download(home: &Path, port: u16, args: &[&str]) -> std::process::Output {
    common::ds4(home)
        .env("DS4_HF_BASE_URL", format!("http://127.0.0.1:{port}"))
        .arg("download")
        .args(args)
        .output()
        .unwrap()
}

fn file_path(target: &str) -> String {
    format!("/antirez/deepseek-v4-gguf/resolve/main/{target}")
}

#[test]
fn resume_after_dropped_connection_completes_with_right_bytes() {
    let home = tempfile::tempdir().unwrap();
    let body = Arc::new(content(3_000_000, 1));
    let srv = serve(Behaviour {
        body: body.clone(),
        path: file_path(Q2_FILE),
        honour_range: true,
        drops: vec![1_234_567, 500_000],
        extra_length: 0,
        token: None,
    });
    let part = home.path().join("gguf").join(format!("{Q2_FILE}.part"));
    let fin = home.path().join("gguf").join(Q2_FILE);

    // No automatic retry: the run fails and keeps a .part that does not look complete.
    let out = download(home.path(), srv.port, &["q2", "--retries", "0"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("run the same command again"));
    assert_eq!(std::fs::read(&part).unwrap(), body[..1_234_567]);
    assert!(!fin.exists());
    assert!(!home.path().join("ds4flash.gguf").exists());

    // Re-running resumes; the second connection drops too and is retried.
    let out = download(home.path(), srv.port, &["q2", "--retries", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&fin).unwrap(), *body);
    assert!(!part.exists());
    let seen = srv.seen.lock().unwrap().clone();
    let ranges: Vec<Option<String>> = seen.iter().map(|s| s.range.clone()).collect();
    assert_eq!(
        ranges,
        vec![
            None,
            Some("bytes=1234567-".to_string()),
            Some(format!("bytes={}-", 1_234_567 + 500_000)),
        ]
    );
    assert!(seen.iter().all(|s| s.auth.is_none()));
    assert!(seen.iter().all(|s| s.path == file_path(Q2_FILE)));
    // ./ds4flash.gguf points at the file.
    let link = home.path().join("ds4flash.gguf");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        fin.canonicalize().unwrap()
    );
    assert_eq!(std::fs::read(&link).unwrap(), *body);

    // A third run finds it and only refreshes the link.
    let out = download(home.path(), srv.port, &["q2"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Already downloaded"));
    assert_eq!(srv.seen.lock().unwrap().len(), 3);
}

#[test]
fn server_without_range_restarts_cleanly() {
    let home = tempfile::tempdir().unwrap();
    let body = Arc::new(content(2_500_000, 2));
    let srv = serve(Behaviour {
        body: body.clone(),
        path: file_path(MTP_FILE),
        honour_range: false,
        drops: vec![1_000_000],
        extra_length: 0,
        token: None,
    });
    let out = download(home.path(), srv.port, &["mtp", "--retries", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fin = home.path().join("gguf").join(MTP_FILE);
    assert_eq!(std::fs::read(&fin).unwrap(), *body);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not support resuming"), "{err}");
    assert!(err.contains("--mtp"), "{err}");
    // MTP does not touch the model link.
    assert!(std::fs::symlink_metadata(home.path().join("ds4flash.gguf")).is_err());
    let seen = srv.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].range.as_deref(), Some("bytes=1000000-"));
}

#[test]
fn part_is_never_renamed_unless_the_size_matches() {
    let home = tempfile::tempdir().unwrap();
    let body = Arc::new(content(300_000, 3));
    // Announces 10 bytes more than it ever sends.
    let srv = serve(Behaviour {
        body: body.clone(),
        path: file_path(Q2_FILE),
        honour_range: true,
        drops: vec![],
        extra_length: 10,
        token: None,
    });
    let out = download(home.path(), srv.port, &["q2", "--retries", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("300000 of 300010"), "{err}");
    let dir = home.path().join("gguf");
    assert!(!dir.join(Q2_FILE).exists());
    assert_eq!(
        std::fs::read(dir.join(format!("{Q2_FILE}.part"))).unwrap(),
        *body
    );
    assert!(std::fs::symlink_metadata(home.path().join("ds4flash.gguf")).is_err());
}

#[test]
fn stale_part_larger_than_remote_is_discarded() {
    let home = tempfile::tempdir().unwrap();
    let body = Arc::new(content(200_000, 4));
    let srv = serve(Behaviour {
        body: body.clone(),
        path: file_path(Q2_FILE),
        honour_range: true,
        drops: vec![],
        extra_length: 0,
        token: None,
    });
    let dir = home.path().join("gguf");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{Q2_FILE}.part")), content(250_000, 9)).unwrap();
    let out = download(home.path(), srv.port, &["q2", "--retries", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dir.join(Q2_FILE)).unwrap(), *body);
}

#[test]
fn token_precedence_and_auth_errors() {
    let home = tempfile::tempdir().unwrap();
    let body = Arc::new(content(100_000, 5));
    let srv = serve(Behaviour {
        body: body.clone(),
        path: file_path(Q2_FILE),
        honour_range: true,
        drops: vec![],
        extra_length: 0,
        token: Some("good".into()),
    });
    // No token: 401 explained, nothing written.
    let out = download(home.path(), srv.port, &["q2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"));
    assert!(!home.path().join("gguf").join(Q2_FILE).exists());
    // The HF token cache is used when nothing else is given...
    let cache = home.path().join(".cache/huggingface");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("token"), "bad\n").unwrap();
    // ...HF_TOKEN wins over it, --token wins over both.
    let out = common::ds4(home.path())
        .env("DS4_HF_BASE_URL", format!("http://127.0.0.1:{}", srv.port))
        .env("HF_TOKEN", "alsobad")
        .args(["download", "q2", "--token", "good"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let auths: Vec<Option<String>> = srv
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.auth.clone())
        .collect();
    assert_eq!(auths, vec![None, Some("Bearer good".into())]);
    std::fs::remove_file(home.path().join("gguf").join(Q2_FILE)).unwrap();
    let out = common::ds4(home.path())
        .env("DS4_HF_BASE_URL", format!("http://127.0.0.1:{}", srv.port))
        .env("HF_TOKEN", "alsobad")
        .args(["download", "q2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = download(home.path(), srv.port, &["q2"]);
    assert_eq!(out.status.code(), Some(1));
    let auths: Vec<Option<String>> = srv
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.auth.clone())
        .collect();
    assert_eq!(
        auths[2..],
        [Some("Bearer alsobad".into()), Some("Bearer bad".into())]
    );
}

#[test]
fn output_dir_env_link_safety_and_usage() {
    let home = tempfile::tempdir().unwrap();
    let body = Arc::new(content(50_000, 6));
    let srv = serve(Behaviour {
        body: body.clone(),
        path: file_path(Q2_FILE),
        honour_range: true,
        drops: vec![],
        extra_length: 0,
        token: None,
    });
    // A regular ./ds4flash.gguf is never replaced.
    std::fs::write(home.path().join("ds4flash.gguf"), b"my own file").unwrap();
    let out = common::ds4(home.path())
        .env("DS4_HF_BASE_URL", format!("http://127.0.0.1:{}", srv.port))
        .env("DS4_GGUF_DIR", "models/x")
        .args(["download", "q2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a symbolic link"));
    assert_eq!(
        std::fs::read(home.path().join("ds4flash.gguf")).unwrap(),
        b"my own file"
    );
    assert_eq!(
        std::fs::read(home.path().join("models/x").join(Q2_FILE)).unwrap(),
        *body
    );
    // An aria2 sidecar blocks the download.
    let out = download(home.path(), srv.port, &["q4"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "404 for a file the server lacks"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let q4 = "DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2.gguf";
    std::fs::write(home.path().join("gguf").join(format!("{q4}.aria2")), b"").unwrap();
    let out = download(home.path(), srv.port, &["q4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("aria2"));
    // Usage: unknown target 1, help 0.
    let out = download(home.path(), srv.port, &["q8"]);
    assert_eq!(out.status.code(), Some(1));
    let out = download(home.path(), srv.port, &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("q2-imatrix"));
}

#[test]
fn refuses_a_file_larger_than_the_free_disk_space() {
    let home = tempfile::tempdir().unwrap();
    let srv = serve(Behaviour {
        body: Arc::new(content(1000, 7)),
        path: file_path(Q2_FILE),
        honour_range: true,
        drops: vec![],
        // Announce about 1 EiB.
        extra_length: 1 << 60,
        token: None,
    });
    let out = download(home.path(), srv.port, &["q2", "--retries", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not enough disk space"), "{err}");
    let dir = home.path().join("gguf");
    assert!(!dir.join(Q2_FILE).exists());
    assert!(!dir.join(format!("{Q2_FILE}.part")).exists());
}
