//! Up-front memory check: a model whose weights plus context buffers do not
//! fit in the memory the kernel reports as available is refused, with the
//! numbers, before any weight page is touched. A file that lives in a tmpfs
//! (`/dev/shm`) is already in memory and not part of `MemAvailable`, so its
//! resident bytes (`mincore`) are not needed again; page-cache pages of a file
//! on disk are counted by `MemAvailable` already and are only reported.

use std::path::Path;

use anyhow::{bail, Context, Result};

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

/// Memory a model needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemEstimate {
    /// Bytes of all tensors of the file (mapped, read while generating).
    pub weights: u64,
    /// Session state for `ctx` tokens (raw SWA windows, compressed KV and
    /// indexer rows, frontiers) plus working buffers.
    pub context: u64,
    pub ctx: u64,
    /// Bytes of the file already in memory (resident pages, `mincore`).
    pub resident: u64,
    /// Whether the file is on a tmpfs (its resident pages are shared memory,
    /// outside `MemAvailable`).
    pub tmpfs: bool,
}

impl MemEstimate {
    pub fn total(&self) -> u64 {
        self.weights.saturating_add(self.context)
    }

    /// Bytes that loading adds to what is in memory now.
    pub fn needed(&self) -> u64 {
        let have = if self.tmpfs {
            self.resident.min(self.weights)
        } else {
            0
        };
        self.total() - have
    }
}

/// Bytes of `path` resident in memory (page cache or tmpfs) by `mincore` over
/// a read-only mapping, and whether it is on a tmpfs; `None` where it cannot
/// be known.
pub fn resident_bytes(path: &Path) -> Option<(u64, bool)> {
    let f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let tmpfs = on_tmpfs(path);
    if len == 0 {
        return Some((0, tmpfs));
    }
    // SAFETY: a read-only mapping of a file we opened; no byte of it is read
    // (mincore only asks which of its pages are resident).
    let map = unsafe { memmap2::Mmap::map(&f) }.ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page <= 0 {
        return None;
    }
    let page = page as usize;
    let mut vec = vec![0u8; map.len().div_ceil(page)];
    // SAFETY: the mapping starts page-aligned and spans map.len() bytes; vec
    // holds one byte per page of it, as mincore writes.
    let r = unsafe {
        libc::mincore(
            map.as_ptr() as *mut libc::c_void,
            map.len(),
            vec.as_mut_ptr() as *mut _,
        )
    };
    if r != 0 {
        return None;
    }
    let pages = vec.iter().filter(|&&b| b & 1 != 0).count() as u64;
    Some(((pages * page as u64).min(len), tmpfs))
}

fn on_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is NUL-terminated; st is written by statfs before it is read.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == TMPFS_MAGIC
    }
}

/// Context buffers of a session of `ctx` tokens (f32 state on the CPU
/// backend): every layer's raw window, the compressed rows
/// ([`ds4_model::state_values_per_token`] values per token), the
/// compressor frontiers and the vocab-sized logits.
pub fn context_bytes(cfg: &ds4_model::Config, ctx: u64) -> u64 {
    let per_token = ds4_model::state_values_per_token(cfg);
    let rows = (per_token * ctx as f64).ceil() as u64;
    let window = (cfg.n_layers * cfg.window * cfg.head_dim) as u64;
    // Frontiers: at most 2 * ratio slots of 2 * width values, kv + score,
    // for the attention and the indexer compressor of each layer.
    let frontiers: u64 = cfg
        .compress_ratios
        .iter()
        .filter(|&&r| r > 0)
        .map(|&r| (2 * 2 * r * 2 * (cfg.head_dim + cfg.idx_dim)) as u64)
        .sum();
    let logits = cfg.vocab as u64;
    (rows + window + frontiers + logits) * 4
}

/// Weights and context needs of a GGUF model file (reads only its header).
pub fn estimate(path: &Path, ctx: u64) -> Result<MemEstimate> {
    let f =
        ds4_gguf::GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?;
    let weights: u64 = f.tensors().iter().map(|t| t.n_bytes).sum();
    let mc = ds4_gguf::layout::ModelConfig::from_gguf(&f)
        .with_context(|| format!("{}: reading the model config", path.display()))?;
    let cfg = ds4_model::gguf::config_from_layout(&mc)
        .with_context(|| format!("{}: model config", path.display()))?;
    let (resident, tmpfs) = resident_bytes(path).unwrap_or((0, false));
    Ok(MemEstimate {
        weights,
        context: context_bytes(&cfg, ctx),
        ctx,
        resident,
        tmpfs,
    })
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemAvailable:")?;
        let mut it = rest.split_whitespace();
        let n: u64 = it.next()?.parse().ok()?;
        match it.next() {
            Some("kB") | None => n.checked_mul(1024),
            _ => None,
        }
    })
}

/// Reads the available memory (`/proc/meminfo`, or the file named by
/// `DS4_MEMINFO`); `None` where it cannot be known.
pub fn read_available() -> Option<u64> {
    let path = std::env::var_os("DS4_MEMINFO").unwrap_or_else(|| "/proc/meminfo".into());
    mem_available(&std::fs::read_to_string(path).ok()?)
}

/// Refuses when what loading adds exceeds `available`.
pub fn check(est: &MemEstimate, available: u64) -> Result<()> {
    if est.needed() > available {
        let held = if est.tmpfs && est.resident > 0 {
            format!(
                "; {:.2} GiB of the file is already in memory (tmpfs), so loading adds {:.2} GiB",
                est.resident.min(est.weights) as f64 / GIB,
                est.needed() as f64 / GIB
            )
        } else {
            String::new()
        };
        bail!(
            "the model does not fit in memory: it needs {:.2} GiB (weights {:.2} GiB + context buffers {:.2} GiB at ctx={}){held}, \
             but only {:.2} GiB is available (MemAvailable). Use a smaller --ctx or a smaller quant \
             (ds4 download q2-imatrix), free memory, or pass --no-mem-check to load it anyway",
            est.total() as f64 / GIB,
            est.weights as f64 / GIB,
            est.context as f64 / GIB,
            est.ctx,
            available as f64 / GIB
        );
    }
    Ok(())
}

/// The numbers the check uses, for the log.
pub fn describe_check(est: &MemEstimate, available: u64) -> String {
    format!(
        "ds4: memory check: weights {:.2} GiB ({:.2} GiB already resident{}), context {:.2} GiB, \
         loading adds {:.2} GiB, {:.2} GiB available",
        est.weights as f64 / GIB,
        est.resident.min(est.weights) as f64 / GIB,
        if est.tmpfs { ", tmpfs" } else { ", page cache" },
        est.context as f64 / GIB,
        est.needed() as f64 / GIB,
        available as f64 / GIB
    )
}

/// `ds4: context buffers X MiB (…)` line of ds4.c.
pub fn describe_context(est: &MemEstimate, backend: &str) -> String {
    format!(
        "ds4: context buffers {:.2} MiB (ctx={}, backend={backend}), weights {:.2} GiB",
        est.context as f64 / MIB,
        est.ctx,
        est.weights as f64 / GIB
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parse() {
        let t =
            "MemTotal:       16318412 kB\nMemFree:         1234 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(mem_available(t), Some(8_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: x kB\n"), None);
    }

    #[test]
    fn check_refuses_with_numbers() {
        let est = MemEstimate {
            weights: 80 << 30,
            context: 2 << 30,
            ctx: 32768,
            resident: 0,
            tmpfs: false,
        };
        assert!(check(&est, 90 << 30).is_ok());
        let e = check(&est, 64 << 30).unwrap_err().to_string();
        assert!(e.contains("82.00 GiB"), "{e}");
        assert!(e.contains("weights 80.00 GiB"), "{e}");
        assert!(e.contains("64.00 GiB is available"), "{e}");
        assert!(e.contains("--no-mem-check"), "{e}");
    }

    #[test]
    fn tmpfs_resident_bytes_are_not_needed_twice() {
        let base = MemEstimate {
            weights: 80 << 30,
            context: 2 << 30,
            ctx: 32768,
            resident: 80 << 30,
            tmpfs: true,
        };
        // the file already in shared memory: loading adds only the context
        assert_eq!(base.needed(), 2 << 30);
        assert!(check(&base, 4 << 30).is_ok());
        // a context that really does not fit is still refused, with the numbers
        let e = check(&base, 1 << 30).unwrap_err().to_string();
        assert!(
            e.contains("80.00 GiB of the file is already in memory"),
            "{e}"
        );
        assert!(e.contains("loading adds 2.00 GiB"), "{e}");
        assert!(e.contains("1.00 GiB is available"), "{e}");
        // page-cache pages are part of MemAvailable: nothing is subtracted
        let disk = MemEstimate {
            tmpfs: false,
            ..base
        };
        assert_eq!(disk.needed(), 82 << 30);
        assert!(check(&disk, 64 << 30).is_err());
    }

    #[test]
    fn mincore_sees_a_tmpfs_file() {
        // /dev/shm is a tmpfs on Linux machines (CI included); skip elsewhere
        let dir = std::path::Path::new("/dev/shm");
        if !dir.is_dir() || !on_tmpfs(dir) {
            eprintln!("skipped: /dev/shm is not a tmpfs here");
            return;
        }
        let f = tempfile::NamedTempFile::new_in(dir).unwrap();
        let n = 3 << 20;
        std::fs::write(f.path(), vec![7u8; n]).unwrap();
        let (resident, tmpfs) = resident_bytes(f.path()).unwrap();
        assert!(tmpfs);
        assert_eq!(resident, n as u64);
    }

    #[test]
    fn context_grows_linearly_with_ctx() {
        let cfg = ds4_model::Config::flash();
        let a = context_bytes(&cfg, 1 << 16);
        let b = context_bytes(&cfg, 1 << 17);
        let c = context_bytes(&cfg, 1 << 18);
        assert!(b > a && c > b);
        // Doubling ctx adds the same compressed-row bytes each time.
        let per = ds4_model::state_values_per_token(&cfg);
        let step = ((per * (1u64 << 16) as f64).ceil() as u64) * 4;
        assert_eq!(b - a, step);
    }
}
