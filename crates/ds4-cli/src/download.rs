//! `ds4 download TARGET`: the model downloader (spec server-and-cli.md §6,
//! the behaviour of ds4's `download_model.sh`).
//!
//! The file is fetched from the Hugging Face repo `antirez/deepseek-v4-gguf`
//! into `<dir>/<file>.part`, resuming an existing `.part` with an HTTP Range
//! request, and renamed to its final name only when its size equals the size
//! the server announced. A model target then points `./ds4flash.gguf` at it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// The Hugging Face repository holding the ds4 GGUF files.
pub const REPO: &str = "antirez/deepseek-v4-gguf";
/// Default server (overridable with `DS4_HF_BASE_URL`).
pub const DEFAULT_BASE_URL: &str = "https://huggingface.co";
/// Name of the default model link (`-m` default of ds4).
pub const MODEL_LINK: &str = "ds4flash.gguf";

/// What `ds4 download` can fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Q2Imatrix,
    Q4Imatrix,
    Q2,
    Q4,
    Mtp,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Q2Imatrix,
        Target::Q4Imatrix,
        Target::Q2,
        Target::Q4,
        Target::Mtp,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Q2Imatrix => "q2-imatrix",
            Target::Q4Imatrix => "q4-imatrix",
            Target::Q2 => "q2",
            Target::Q4 => "q4",
            Target::Mtp => "mtp",
        }
    }

    /// The file name in the repository.
    pub fn file_name(self) -> &'static str {
        match self {
            Target::Q2Imatrix => {
                "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2-imatrix.gguf"
            }
            Target::Q4Imatrix => "DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2-imatrix.gguf",
            Target::Q2 => "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2.gguf",
            Target::Q4 => "DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2.gguf",
            Target::Mtp => "DeepSeek-V4-Flash-MTP-Q4K-Q8_0-F32.gguf",
        }
    }

    /// Main-model targets update the `./ds4flash.gguf` link; MTP does not.
    pub fn is_model(self) -> bool {
        self != Target::Mtp
    }

    /// One line for the usage text.
    pub fn description(self) -> &'static str {
        match self {
            Target::Q2Imatrix => "2-bit routed experts, ~81 GB (preferred for 96-128 GB RAM)",
            Target::Q4Imatrix => "4-bit routed experts, ~153 GB (preferred for >= 256 GB RAM)",
            Target::Q2 => "legacy 2-bit (non-imatrix), ~81 GB",
            Target::Q4 => "legacy 4-bit (non-imatrix), ~153 GB",
            Target::Mtp => "optional MTP speculative-decoding file, ~3.5 GB",
        }
    }
}

impl std::str::FromStr for Target {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Target> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                anyhow!(
                    "unknown download target {s:?} (expected one of: {})",
                    Target::ALL.map(|t| t.name()).join(", ")
                )
            })
    }
}

/// Where a token came from (reported, never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Flag,
    Env,
    Cache(PathBuf),
}

/// Token precedence of `download_model.sh`: `--token` > `HF_TOKEN` > the
/// Hugging Face token cache (`$HF_TOKEN_PATH`, else `$HF_HOME/token`, else
/// `$HOME/.cache/huggingface/token`), empty values skipped.
pub fn resolve_token(
    flag: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(String, TokenSource)> {
    if let Some(t) = flag.map(str::trim).filter(|t| !t.is_empty()) {
        return Some((t.to_string(), TokenSource::Flag));
    }
    if let Some(t) = env("HF_TOKEN")
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
    {
        return Some((t, TokenSource::Env));
    }
    let path = if let Some(p) = env("HF_TOKEN_PATH").filter(|p| !p.is_empty()) {
        PathBuf::from(p)
    } else if let Some(h) = env("HF_HOME").filter(|p| !p.is_empty()) {
        Path::new(&h).join("token")
    } else {
        Path::new(&env("HOME")?).join(".cache/huggingface/token")
    };
    let t = fs::read_to_string(&path).ok()?;
    let t = t.trim();
    if t.is_empty() {
        None
    } else {
        Some((t.to_string(), TokenSource::Cache(path)))
    }
}

/// Everything a download needs.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub target: Target,
    pub token: Option<String>,
    /// Directory of the GGUF files (created if missing).
    pub out_dir: PathBuf,
    /// Directory where `ds4flash.gguf` is (re)linked for model targets.
    pub link_dir: PathBuf,
    /// Server root; the URL is `<base>/<REPO>/resolve/main/<file>`.
    pub base_url: String,
    /// Extra attempts after a dropped connection (each resumes the `.part`).
    pub retries: u32,
    /// Pause before a retry.
    pub retry_delay: Duration,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

/// What a finished download did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadReport {
    /// The final file.
    pub path: PathBuf,
    /// Bytes transferred by this run (0 when the file was already there).
    pub transferred: u64,
    pub already_present: bool,
    /// The link that now points at `path` (model targets).
    pub link: Option<PathBuf>,
}

/// The URL of a repository file.
pub fn file_url(base_url: &str, file: &str) -> String {
    format!(
        "{}/{REPO}/resolve/main/{file}",
        base_url.trim_end_matches('/')
    )
}

fn part_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

fn sidecar_path(out: &Path, ext: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", U[i])
    }
}

/// Outcome of one HTTP attempt.
enum Attempt {
    /// The `.part` now holds the whole file of this many bytes.
    Complete(u64),
    /// The transfer broke after some progress; `.part` keeps what arrived.
    Broken(anyhow::Error),
}

/// Parses `Content-Range: bytes START-END/TOTAL` (or `bytes */TOTAL`).
/// A parsed `Content-Range`: the byte range (if any) and the total (if known).
type ContentRange = (Option<(u64, u64)>, Option<u64>);

fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let range = match range.trim() {
        "*" => None,
        r => {
            let (a, b) = r.split_once('-')?;
            let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            if b < a {
                return None;
            }
            Some((a, b))
        }
    };
    Some((range, total))
}

fn agent() -> ureq::Agent {
    // The system's trust store (what curl uses), so that TLS-inspecting
    // proxies with a locally installed CA keep working.
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .timeout_per_read(Some(Duration::from_secs(120)))
        .max_redirects(10)
        .user_agent(concat!("ds4-rs/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn status_error(status: u16, url: &str, has_token: bool) -> anyhow::Error {
    match status {
        401 | 403 if has_token => anyhow!(
            "HTTP {status} from {url}: the Hugging Face token was refused (check --token / HF_TOKEN)"
        ),
        401 | 403 => anyhow!(
            "HTTP {status} from {url}: access denied; pass a Hugging Face token with --token or HF_TOKEN"
        ),
        404 => anyhow!("HTTP 404 from {url}: file not found"),
        s => anyhow!("HTTP {s} from {url}"),
    }
}

/// One GET of `url` into `part` (resuming at its current length).
fn attempt(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    part: &Path,
    progress: bool,
) -> Result<Attempt> {
    let have = match fs::metadata(part) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("reading {}", part.display())),
    };
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let mut resp = match req.call() {
        Ok(r) => r,
        Err(e) => {
            return Ok(Attempt::Broken(
                anyhow!(e).context(format!("requesting {url}")),
            ))
        }
    };
    let status = resp.status().as_u16();
    let content_range = resp
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Where the body starts in the file and how big the file is.
    let (start, total) = match status {
        206 => {
            let cr = content_range
                .as_deref()
                .and_then(parse_content_range)
                .ok_or_else(|| anyhow!("HTTP 206 from {url} without a valid Content-Range"))?;
            match cr {
                (Some((a, _)), total) if a == have => (a, total),
                (Some((a, _)), _) => bail!(
                    "server resumed at byte {a}, but {} has {have} bytes",
                    part.display()
                ),
                (None, _) => bail!("HTTP 206 from {url} with Content-Range {:?}", content_range),
            }
        }
        200 => {
            if have > 0 {
                eprintln!("ds4: the server does not support resuming; restarting the download");
            }
            (0, resp.body().content_length())
        }
        416 if have > 0 => {
            // Nothing left to send from `have`: complete only if the server
            // says the file has exactly that size.
            let total = content_range
                .as_deref()
                .and_then(parse_content_range)
                .and_then(|(_, t)| t);
            if total == Some(have) {
                return Ok(Attempt::Complete(have));
            }
            eprintln!(
                "ds4: {} ({} bytes) does not match the remote file{}; restarting",
                part.display(),
                have,
                total.map(|t| format!(" ({t} bytes)")).unwrap_or_default()
            );
            fs::remove_file(part).with_context(|| format!("removing {}", part.display()))?;
            return Ok(Attempt::Broken(anyhow!("stale partial file discarded")));
        }
        s if (500..600).contains(&s) || s == 408 || s == 429 => {
            return Ok(Attempt::Broken(status_error(s, url, token.is_some())))
        }
        s => return Err(status_error(s, url, token.is_some())),
    };
    let total = match total {
        Some(t) => t,
        None => {
            // Without a size there is no way to tell a complete file from a
            // cut one.
            bail!("the server did not announce the file size for {url}; refusing to download")
        }
    };
    check_free_space(part, total - start)?;
    let mut file = if start == 0 {
        File::create(part)
    } else {
        OpenOptions::new().append(true).open(part)
    }
    .with_context(|| format!("opening {}", part.display()))?;

    let bar = if progress {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bytes:>10}/{total_bytes:10} [{wide_bar}] {binary_bytes_per_sec:>12} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_position(start);
        bar.reset_eta();
        Some(bar)
    } else {
        None
    };

    // Without a terminal, a line every 10%.
    let mut next_report = if progress { u64::MAX } else { start };
    let mut reader = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = start;
    let mut overflow = false;
    let mut read_error: Option<std::io::Error> = None;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        // Never write past the announced size.
        let keep = n.min((total - pos) as usize);
        file.write_all(&buf[..keep])
            .with_context(|| format!("writing {}", part.display()))?;
        pos += keep as u64;
        if let Some(b) = &bar {
            b.set_position(pos);
        }
        if pos >= next_report {
            eprintln!(
                "ds4: {} of {} ({:.0}%)",
                human(pos),
                human(total),
                100.0 * pos as f64 / total.max(1) as f64
            );
            next_report = pos + (total / 10).max(1);
        }
        if keep < n {
            overflow = true;
            break;
        }
    }
    file.flush()
        .with_context(|| format!("writing {}", part.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", part.display()))?;
    drop(file);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if overflow {
        fs::remove_file(part).with_context(|| format!("removing {}", part.display()))?;
        bail!(
            "the server sent more than the announced {total} bytes for {url}; partial file removed"
        );
    }
    match read_error {
        None if pos == total => Ok(Attempt::Complete(total)),
        None => Ok(Attempt::Broken(anyhow!(
            "connection closed at {pos} of {total} bytes"
        ))),
        Some(e) => Ok(Attempt::Broken(
            anyhow!(e).context(format!("transfer interrupted at {pos} of {total} bytes")),
        )),
    }
}

/// Free bytes for an unprivileged writer on the file system holding `path`'s directory.
#[cfg(unix)]
fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    (st.f_bavail as u64).checked_mul(st.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_space(_dir: &Path) -> Option<u64> {
    None
}

/// Refuses to start a transfer that cannot fit on the disk.
fn check_free_space(part: &Path, need: u64) -> Result<()> {
    let dir = part.parent().unwrap_or(Path::new("."));
    if let Some(free) = free_space(dir) {
        if free < need {
            bail!(
                "not enough disk space in {}: {} more needed, {} free",
                dir.display(),
                human(need),
                human(free)
            );
        }
    }
    Ok(())
}

/// Points `link_dir/ds4flash.gguf` at `target`, replacing an older link
/// atomically. A regular file of that name is never replaced.
pub fn update_link(link_dir: &Path, target: &Path) -> Result<PathBuf> {
    let link = link_dir.join(MODEL_LINK);
    match fs::symlink_metadata(&link) {
        Ok(m) if !m.file_type().is_symlink() => bail!(
            "{} exists and is not a symbolic link; not replacing it (move it away, or run with -m {})",
            link.display(),
            target.display()
        ),
        _ => {}
    }
    let tmp = link_dir.join(format!(".{MODEL_LINK}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    symlink(target, &tmp).with_context(|| format!("creating link {}", tmp.display()))?;
    if let Err(e) = fs::rename(&tmp, &link) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("replacing {}", link.display()));
    }
    Ok(link)
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

/// Downloads `opts.target`. Messages go to stderr.
pub fn download(opts: &DownloadOptions) -> Result<DownloadReport> {
    let file = opts.target.file_name();
    fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let out_dir = fs::canonicalize(&opts.out_dir)
        .with_context(|| format!("resolving {}", opts.out_dir.display()))?;
    let out = out_dir.join(file);
    let part = part_path(&out);
    let aria2 = sidecar_path(&out, ".aria2");
    if aria2.exists() {
        bail!(
            "found an incomplete aria2 download sidecar {}: finish or remove that download first",
            aria2.display()
        );
    }

    let mut report = DownloadReport {
        path: out.clone(),
        transferred: 0,
        already_present: false,
        link: None,
    };
    let present = fs::metadata(&out).map(|m| m.len() > 0).unwrap_or(false);
    if present {
        eprintln!("Already downloaded: {}", out.display());
        report.already_present = true;
    } else {
        let url = file_url(&opts.base_url, file);
        eprintln!("Downloading {file}");
        eprintln!("from {}", url);
        eprintln!("If the download stops, run the same command again to resume it.");
        let agent = agent();
        let show = opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let before = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let mut tries = 0u32;
        let size = loop {
            match attempt(&agent, &url, opts.token.as_deref(), &part, show)? {
                Attempt::Complete(n) => break n,
                Attempt::Broken(e) => {
                    let have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
                    if tries >= opts.retries {
                        return Err(e.context(format!(
                            "download incomplete ({} kept in {}); run the same command again to resume",
                            human(have),
                            part.display()
                        )));
                    }
                    tries += 1;
                    eprintln!(
                        "ds4: {e:#}; retrying ({tries}/{}) from byte {have}",
                        opts.retries
                    );
                    std::thread::sleep(opts.retry_delay);
                }
            }
        };
        let got = fs::metadata(&part)
            .with_context(|| format!("reading {}", part.display()))?
            .len();
        if got != size {
            bail!(
                "{} has {got} bytes but the file has {size}; not renaming it",
                part.display()
            );
        }
        fs::rename(&part, &out)
            .with_context(|| format!("renaming {} to {}", part.display(), out.display()))?;
        report.transferred = size.saturating_sub(before.min(size));
        eprintln!("Saved {} ({})", out.display(), human(size));
    }

    if opts.target.is_model() {
        let link = update_link(&opts.link_dir, &out)?;
        eprintln!("Linked {} -> {}", link.display(), out.display());
        report.link = Some(link);
    } else {
        eprintln!();
        eprintln!("MTP is an optional component for q2-imatrix, q4-imatrix, q2 and q4.");
        eprintln!("Enable it explicitly, for example:");
        eprintln!("  ds4 --mtp {} --mtp-draft 2", out.display());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((Some((100, 199)), Some(1000)))
        );
        assert_eq!(
            parse_content_range("bytes */1000"),
            Some((None, Some(1000)))
        );
        assert_eq!(
            parse_content_range("bytes 0-9/*"),
            Some((Some((0, 9)), None))
        );
        assert_eq!(parse_content_range("bytes 9-0/10"), None);
        assert_eq!(parse_content_range("items 0-9/10"), None);
        assert_eq!(parse_content_range("bytes x-9/10"), None);
    }

    #[test]
    fn targets_round_trip() {
        for t in Target::ALL {
            assert_eq!(t.name().parse::<Target>().unwrap(), t);
            assert!(t.file_name().starts_with("DeepSeek-V4-Flash-"));
            assert!(t.file_name().ends_with(".gguf"));
        }
        assert!("q8".parse::<Target>().is_err());
        assert_eq!(
            file_url("http://h:1/", "f.gguf"),
            "http://h:1/antirez/deepseek-v4-gguf/resolve/main/f.gguf"
        );
    }

    #[test]
    fn token_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap().to_string();
        fs::create_dir_all(dir.path().join(".cache/huggingface")).unwrap();
        fs::write(dir.path().join(".cache/huggingface/token"), "cached\n").unwrap();
        let env_with = |hf: Option<&'static str>| {
            let home = home.clone();
            move |k: &str| match k {
                "HF_TOKEN" => hf.map(str::to_string),
                "HOME" => Some(home.clone()),
                _ => None,
            }
        };
        let e = env_with(Some("fromenv"));
        assert_eq!(
            resolve_token(Some("flag"), &e),
            Some(("flag".into(), TokenSource::Flag))
        );
        assert_eq!(
            resolve_token(None, &e),
            Some(("fromenv".into(), TokenSource::Env))
        );
        let e = env_with(Some(""));
        assert_eq!(
            resolve_token(Some(""), &e),
            Some((
                "cached".into(),
                TokenSource::Cache(dir.path().join(".cache/huggingface/token"))
            ))
        );
        fs::write(dir.path().join(".cache/huggingface/token"), "  \n").unwrap();
        assert_eq!(resolve_token(None, &env_with(None)), None);
    }
}
