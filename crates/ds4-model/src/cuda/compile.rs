//! Run-time kernel compilation: the CUDA C sources of this crate compiled by
//! NVRTC (loaded dynamically, no toolkit needed at build time) to a cubin for
//! the device's architecture, cached on disk keyed by source hash + arch.

use anyhow::{bail, Context, Result};
use cudarc::nvrtc::sys as nv;
use std::ffi::CString;
use std::path::PathBuf;

/// The kernel sources (one translation unit).
pub const SOURCE: &str = concat!(
    include_str!("kernels/common.cu"),
    include_str!("kernels/matvec.cu"),
    include_str!("kernels/ops.cu"),
    include_str!("kernels/attention.cu"),
    include_str!("kernels/gemm.cu"),
);

/// Whether an NVRTC library can be loaded on this machine.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { nv::is_culib_present() }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf29ce484222325u64;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// NVRTC version `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    if !nvrtc_available() {
        bail!(
            "NVRTC (libnvrtc) not found: install the CUDA runtime libraries or set LD_LIBRARY_PATH"
        );
    }
    let (mut a, mut b) = (0, 0);
    // SAFETY: plain out-parameters.
    unsafe { nv::nvrtcVersion(&mut a, &mut b) }
        .result()
        .map_err(|e| anyhow::anyhow!("nvrtcVersion: {e:?}"))?;
    Ok((a, b))
}

/// Compile [`SOURCE`] for `arch` (e.g. `sm_90`); returns the cubin and the
/// compiler log (with `verbose`, ptxas' register / spill report).
pub fn compile(arch: &str, verbose: bool) -> Result<(Vec<u8>, String)> {
    if !nvrtc_available() {
        bail!(
            "NVRTC (libnvrtc) not found: install the CUDA runtime libraries or set LD_LIBRARY_PATH"
        );
    }
    let src = CString::new(SOURCE).expect("kernel source has no NUL");
    let name = CString::new("ds4_kernels.cu").unwrap();
    let mut opts = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        "-default-device".to_string(),
    ];
    if verbose {
        opts.push("--ptxas-options=-v".to_string());
    }
    // SAFETY: the program handle is created, used and destroyed here only.
    unsafe {
        let prog = cudarc::nvrtc::result::create_program(&src, Some(&name))
            .map_err(|e| anyhow::anyhow!("nvrtcCreateProgram: {e:?}"))?;
        let res = cudarc::nvrtc::result::compile_program(prog, &opts);
        let log = cudarc::nvrtc::result::get_program_log(prog)
            .map(|l| {
                let b: Vec<u8> = l.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
                String::from_utf8_lossy(&b).into_owned()
            })
            .unwrap_or_default();
        if let Err(e) = res {
            let _ = cudarc::nvrtc::result::destroy_program(prog);
            bail!("compiling the CUDA kernels for {arch} failed ({e:?}):\n{log}");
        }
        let mut size = 0usize;
        nv::nvrtcGetCUBINSize(prog, &mut size)
            .result()
            .map_err(|e| anyhow::anyhow!("nvrtcGetCUBINSize: {e:?}"))?;
        let mut bin = vec![0u8; size];
        nv::nvrtcGetCUBIN(prog, bin.as_mut_ptr() as *mut _)
            .result()
            .map_err(|e| anyhow::anyhow!("nvrtcGetCUBIN: {e:?}"))?;
        let _ = cudarc::nvrtc::result::destroy_program(prog);
        Ok((bin, log))
    }
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DS4_KERNEL_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("ds4-rs");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("ds4-rs");
    }
    std::env::temp_dir().join("ds4-rs-cache")
}

/// The cubin for `arch`, from the disk cache when its key matches, else
/// compiled (and cached; a cache that cannot be written is only a warning).
pub fn cubin_cached(arch: &str) -> Result<Vec<u8>> {
    let (ma, mi) = nvrtc_version()?;
    let key = fnv1a(format!("{SOURCE}\n{arch}\nnvrtc {ma}.{mi}").as_bytes());
    let path = cache_dir().join(format!("kernels-{arch}-{key:016x}.cubin"));
    if let Ok(b) = std::fs::read(&path) {
        if !b.is_empty() {
            return Ok(b);
        }
    }
    let (bin, _) = compile(arch, false).context("building the CUDA kernels")?;
    if let Some(dir) = path.parent() {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::create_dir_all(dir).is_ok() && std::fs::write(&tmp, &bin).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(bin)
}
