//! Every CUDA kernel compiles for sm_90 with NVRTC, on any machine: no GPU
//! is needed (test.sh installs a pinned `nvidia-cuda-nvrtc` and points
//! LD_LIBRARY_PATH at it). Without NVRTC the test says so and passes.

use ds4_model::cuda::{compile, KERNELS};

#[test]
fn all_kernels_compile_for_sm_90() {
    if !compile::nvrtc_available() {
        println!("skipped: no NVRTC library (libnvrtc.so.13) on this machine");
        return;
    }
    let (ma, mi) = compile::nvrtc_version().unwrap();
    let (cubin, log) = compile::compile("sm_90", true).unwrap();
    println!("NVRTC {ma}.{mi}: cubin of {} bytes\n{log}", cubin.len());
    assert!(cubin.len() > 1000, "cubin of {} bytes", cubin.len());
    // the ELF holds every kernel the backend looks up
    for k in KERNELS {
        let needle = k.as_bytes();
        assert!(
            cubin.windows(needle.len()).any(|w| w == needle),
            "kernel {k} missing from the cubin"
        );
    }
    // no kernel spills registers to local memory
    for line in log.lines() {
        if let Some(rest) = line.split("bytes spill stores").next() {
            let n: Option<u64> = rest.split_whitespace().last().and_then(|v| v.parse().ok());
            if let Some(n) = n {
                assert_eq!(n, 0, "spill stores: {line}");
            }
        }
    }
}
