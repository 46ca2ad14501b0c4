//! A thin layer over the CUDA driver API (loaded at run time through
//! cudarc's dynamic loading): one context and stream, stream-ordered device
//! allocations from the device's memory pool, kernel launches by name.

use anyhow::{bail, Context, Result};
use cudarc::driver::{result as cu, sys};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::Arc;

fn derr(what: &str, e: cu::DriverError) -> anyhow::Error {
    anyhow::anyhow!("CUDA {what}: {e:?}")
}

/// Whether a CUDA driver library can be loaded here.
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { sys::is_culib_present() }
}

/// Number of CUDA devices (0 when there is no driver or no device).
pub fn device_count() -> usize {
    if !driver_available() {
        return 0;
    }
    if cu::init().is_err() {
        return 0;
    }
    cu::device::get_count()
        .map(|n| n.max(0) as usize)
        .unwrap_or(0)
}

pub struct Device {
    pub ctx: sys::CUcontext,
    pub stream: sys::CUstream,
    pub name: String,
    pub sm: (i32, i32),
    pub n_sm: i32,
    funcs: HashMap<String, sys::CUfunction>,
    pub(crate) module: sys::CUmodule,
    /// Kernel timings (`DS4_CUDA_PROFILE`): name and the events around it.
    profile: Option<std::sync::Mutex<Vec<(String, sys::CUevent, sys::CUevent)>>>,
    /// Host nanoseconds spent waiting for the stream (downloads, syncs): the
    /// rest of a forward's wall time is the host enqueueing work.
    pub sync_wait_ns: std::sync::atomic::AtomicU64,
    /// Freed activation buffers by exact size, reused by later allocations
    /// of that size (one stream, so reuse is ordered after every earlier use);
    /// a decode step allocates the same sizes every step, so after the first
    /// step no allocation reaches the driver.
    cache: std::sync::Mutex<BufCache>,
    /// Host nanoseconds inside cuLaunchKernel, and launches (see `host_stats`).
    launch_ns: std::sync::atomic::AtomicU64,
    launches: std::sync::atomic::AtomicU64,
    /// Launches by host time inside cuLaunchKernel: < 2, 4, 8, 16, 64 µs, more.
    launch_hist: [std::sync::atomic::AtomicU64; 6],
    /// Host nanoseconds inside memset and device-to-device copy calls.
    other_ns: std::sync::atomic::AtomicU64,
    /// `DS4_CUDA_HOST_STATS`: time every launch (two clock reads per launch).
    host_stats_on: bool,
}

/// See [`Device::cache`].
#[derive(Default)]
struct BufCache {
    free: HashMap<usize, Vec<sys::CUdeviceptr>>,
    bytes: usize,
}

/// Buffers up to this size are cached when freed ...
const CACHE_MAX_BUF: usize = 256 << 20;
/// ... while the cache holds less than this.
const CACHE_MAX_TOTAL: usize = 4 << 30;

// SAFETY: the context, stream and module handles are used only through the
// driver API, which is thread-safe; every call makes the context current first.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

thread_local! {
    static CURRENT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Device {
    pub fn open(ordinal: usize) -> Result<Arc<Device>> {
        if !driver_available() {
            bail!("no CUDA driver (libcuda) on this machine");
        }
        cu::init().map_err(|e| derr("init", e))?;
        let n = cu::device::get_count().map_err(|e| derr("device count", e))?;
        if n <= 0 {
            bail!("the CUDA driver sees no GPU");
        }
        if ordinal >= n as usize {
            bail!("GPU {ordinal} requested, the driver sees {n}");
        }
        let dev = cu::device::get(ordinal as i32).map_err(|e| derr("device", e))?;
        // SAFETY: dev comes from device::get.
        let ctx = unsafe { cu::primary_ctx::retain(dev) }.map_err(|e| derr("context", e))?;
        // SAFETY: ctx was just retained.
        unsafe { cu::ctx::set_current(ctx) }.map_err(|e| derr("set context", e))?;
        let name = cu::device::get_name(dev).unwrap_or_else(|_| "CUDA device".into());
        // SAFETY: valid device and attribute enums.
        let (ma, mi, nsm) = unsafe {
            (
                cu::device::get_attribute(
                    dev,
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                )
                .map_err(|e| derr("attribute", e))?,
                cu::device::get_attribute(
                    dev,
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                )
                .map_err(|e| derr("attribute", e))?,
                cu::device::get_attribute(
                    dev,
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                )
                .map_err(|e| derr("attribute", e))?,
            )
        };
        let stream = cu::stream::create(cu::stream::StreamKind::NonBlocking)
            .map_err(|e| derr("stream", e))?;
        // keep freed pool memory cached (stream-ordered allocations stay cheap)
        // SAFETY: valid device; the attribute takes a u64.
        unsafe {
            if let Ok(pool) = cu::device::get_default_mem_pool(dev) {
                let mut thr: u64 = u64::MAX;
                let _ = cu::mem_pool::set_attribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    &mut thr as *mut u64 as *mut c_void,
                );
            }
        }
        let arch = format!("sm_{ma}{mi}");
        let cubin = super::compile::cubin_cached(&arch)?;
        // SAFETY: cubin is a complete image for this device's architecture.
        let module = unsafe { cu::module::load_data(cubin.as_ptr() as *const c_void) }
            .map_err(|e| derr("loading the kernel module", e))?;
        let mut d = Device {
            ctx,
            stream,
            name,
            sm: (ma, mi),
            n_sm: nsm,
            funcs: HashMap::new(),
            module,
            profile: std::env::var_os("DS4_CUDA_PROFILE")
                .map(|_| std::sync::Mutex::new(Vec::new())),
            sync_wait_ns: std::sync::atomic::AtomicU64::new(0),
            cache: std::sync::Mutex::new(BufCache::default()),
            launch_ns: std::sync::atomic::AtomicU64::new(0),
            launches: std::sync::atomic::AtomicU64::new(0),
            launch_hist: Default::default(),
            other_ns: std::sync::atomic::AtomicU64::new(0),
            host_stats_on: std::env::var_os("DS4_CUDA_HOST_STATS").is_some(),
        };
        for f in super::KERNELS {
            let c = CString::new(*f).unwrap();
            // SAFETY: module is loaded; the name is a NUL-terminated string.
            let func = unsafe { cu::module::get_function(d.module, c) }
                .map_err(|e| derr(&format!("kernel {f}"), e))?;
            d.funcs.insert(f.to_string(), func);
        }
        Ok(Arc::new(d))
    }

    /// Make this device's context current on the calling thread.
    pub fn bind(&self) -> Result<()> {
        let c = self.ctx as usize;
        if CURRENT.with(|x| x.get()) != c {
            // SAFETY: the context lives as long as the device.
            unsafe { cu::ctx::set_current(self.ctx) }.map_err(|e| derr("set context", e))?;
            CURRENT.with(|x| x.set(c));
        }
        Ok(())
    }

    pub fn alloc(&self, bytes: usize) -> Result<sys::CUdeviceptr> {
        let bytes = bytes.max(4);
        if bytes <= CACHE_MAX_BUF {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = c.free.get_mut(&bytes).and_then(|v| v.pop()) {
                c.bytes -= bytes;
                return Ok(p);
            }
        }
        self.bind()?;
        // SAFETY: stream is valid; memory is uninitialised (callers write or zero it).
        match unsafe { cu::malloc_async(self.stream, bytes) } {
            Ok(p) => Ok(p),
            Err(_) => {
                // give the cached buffers back and try once more
                self.trim_cache();
                // SAFETY: as above.
                unsafe { cu::malloc_async(self.stream, bytes) }.map_err(|e| {
                    let (free, total) = cu::mem_get_info().unwrap_or((0, 0));
                    anyhow::anyhow!(
                        "GPU out of memory allocating {bytes} bytes ({} MiB free of {} MiB): {e:?}",
                        free >> 20,
                        total >> 20
                    )
                })
            }
        }
    }

    pub fn free(&self, p: sys::CUdeviceptr, bytes: usize) {
        let bytes = bytes.max(4);
        if bytes <= CACHE_MAX_BUF {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if c.bytes + bytes <= CACHE_MAX_TOTAL {
                c.bytes += bytes;
                c.free.entry(bytes).or_default().push(p);
                return;
            }
        }
        self.free_now(p);
    }

    fn free_now(&self, p: sys::CUdeviceptr) {
        if self.bind().is_ok() {
            // SAFETY: p came from alloc on this stream and is freed once.
            unsafe {
                let _ = cu::free_async(p, self.stream);
            }
        }
    }

    /// Free every cached buffer (stream-ordered).
    pub fn trim_cache(&self) {
        let list = {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            c.bytes = 0;
            std::mem::take(&mut c.free)
        };
        for p in list.into_values().flatten() {
            self.free_now(p);
        }
    }

    /// Launch counts by host time inside cuLaunchKernel (< 2, 4, 8, 16, 64 µs,
    /// more) and host seconds inside memset / device copy calls, so far.
    pub fn host_detail(&self) -> ([u64; 6], f64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            std::array::from_fn(|i| self.launch_hist[i].load(Relaxed)),
            self.other_ns.load(Relaxed) as f64 / 1e9,
        )
    }

    /// `(launches, host seconds inside cuLaunchKernel)` so far.
    pub fn host_stats(&self) -> (u64, f64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.launches.load(Relaxed),
            self.launch_ns.load(Relaxed) as f64 / 1e9,
        )
    }

    pub fn memset0(&self, p: sys::CUdeviceptr, bytes: usize) -> Result<()> {
        self.bind()?;
        let t = std::time::Instant::now();
        // SAFETY: p holds at least `bytes` bytes.
        let r =
            unsafe { cu::memset_d8_async(p, 0, bytes, self.stream) }.map_err(|e| derr("memset", e));
        self.count_other(t);
        r
    }

    pub fn htod<T: Copy>(&self, dst: sys::CUdeviceptr, src: &[T]) -> Result<()> {
        self.bind()?;
        // SAFETY: dst holds size_of_val(src) bytes; the copy completes before
        // the stream synchronisation below, so `src` outlives it.
        unsafe {
            // a copy from pageable memory can itself wait for the stream, so
            // the wait is timed from before the copy
            let t = std::time::Instant::now();
            cu::memcpy_htod_async(dst, src, self.stream).map_err(|e| derr("upload", e))?;
            cu::stream::synchronize(self.stream).map_err(|e| derr("upload sync", e))?;
            self.count_wait(t);
            Ok(())
        }
    }

    pub fn dtoh<T: Copy + Default>(&self, src: sys::CUdeviceptr, n: usize) -> Result<Vec<T>> {
        self.bind()?;
        let mut v = vec![T::default(); n];
        // SAFETY: src holds n values of T; synchronised before returning.
        unsafe {
            let t = std::time::Instant::now();
            cu::memcpy_dtoh_async(&mut v, src, self.stream).map_err(|e| derr("download", e))?;
            cu::stream::synchronize(self.stream).map_err(|e| derr("download sync", e))?;
            self.count_wait(t);
        }
        Ok(v)
    }

    pub fn dtod(&self, dst: sys::CUdeviceptr, src: sys::CUdeviceptr, bytes: usize) -> Result<()> {
        self.bind()?;
        let t = std::time::Instant::now();
        // SAFETY: both regions hold `bytes` bytes.
        let r = unsafe { cu::memcpy_dtod_async(dst, src, bytes, self.stream) }
            .map_err(|e| derr("device copy", e));
        self.count_other(t);
        r
    }

    pub fn sync(&self) -> Result<()> {
        self.bind()?;
        let t = std::time::Instant::now();
        // SAFETY: valid stream.
        unsafe { cu::stream::synchronize(self.stream) }.map_err(|e| derr("kernel execution", e))?;
        self.count_wait(t);
        Ok(())
    }

    fn count_other(&self, since: std::time::Instant) {
        self.other_ns.fetch_add(
            since.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn count_wait(&self, since: std::time::Instant) {
        self.sync_wait_ns.fetch_add(
            since.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Start (`true`) or stop the range an external profiler (`ncu
    /// --profile-from-start off`) records.
    pub fn profiler_range(&self, on: bool) -> Result<()> {
        self.bind()?;
        // SAFETY: plain driver calls on the current context.
        let r = unsafe {
            if on {
                sys::cuProfilerStart()
            } else {
                sys::cuProfilerStop()
            }
        };
        r.result().map_err(|e| derr("profiler range", e))
    }

    /// Launch kernel `name` with the packed arguments.
    pub fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        smem: u32,
        args: &mut Args,
    ) -> Result<()> {
        self.bind()?;
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let f = *self
            .funcs
            .get(name)
            .with_context(|| format!("kernel {name} is not in the module"))?;
        let mut ptrs = args.ptrs();
        let prof = self.profile.as_ref();
        let ev0 = match prof {
            Some(_) => Some(self.event_now()?),
            None => None,
        };
        let t = self.host_stats_on.then(std::time::Instant::now);
        // SAFETY: the argument list matches the kernel's parameters (each
        // value in its own 8-byte slot, read at its parameter's size).
        unsafe { cu::launch_kernel(f, grid, block, smem, self.stream, &mut ptrs) }
            .map_err(|e| derr(&format!("launching {name}"), e))?;
        self.launches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = t {
            let ns = t.elapsed().as_nanos() as u64;
            self.launch_ns
                .fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
            let b = [2_000, 4_000, 8_000, 16_000, 64_000]
                .iter()
                .position(|&lim| ns < lim)
                .unwrap_or(5);
            self.launch_hist[b].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let (Some(p), Some(e0)) = (prof, ev0) {
            let e1 = self.event_now()?;
            p.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((name.to_string(), e0, e1));
        }
        Ok(())
    }

    fn event_now(&self) -> Result<sys::CUevent> {
        let e = cu::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map_err(|e| derr("event", e))?;
        // SAFETY: valid event and stream.
        unsafe { cu::event::record(e, self.stream) }.map_err(|e| derr("event record", e))?;
        Ok(e)
    }

    /// With `DS4_CUDA_PROFILE` set: GPU time per kernel name since the last
    /// report, `(name, launches, ms)` sorted by time.
    pub fn profile_report(&self) -> Result<Vec<(String, usize, f64)>> {
        let Some(p) = &self.profile else {
            return Ok(Vec::new());
        };
        self.sync()?;
        let list = std::mem::take(&mut *p.lock().unwrap_or_else(|e| e.into_inner()));
        let mut acc: HashMap<String, (usize, f64)> = HashMap::new();
        for (n, a, b) in list {
            // SAFETY: both events were recorded and have completed (synced).
            let ms = unsafe { cu::event::elapsed(a, b) }.unwrap_or(0.0) as f64;
            unsafe {
                let _ = cu::event::destroy(a);
                let _ = cu::event::destroy(b);
            }
            let e = acc.entry(n).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += ms;
        }
        let mut v: Vec<(String, usize, f64)> =
            acc.into_iter().map(|(n, (c, t))| (n, c, t)).collect();
        v.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap_or(std::cmp::Ordering::Equal));
        Ok(v)
    }

    /// Allow a kernel more than 48 KB of dynamic shared memory.
    pub fn set_max_smem(&self, name: &str, bytes: i32) -> Result<()> {
        self.bind()?;
        let f = *self.funcs.get(name).context("unknown kernel")?;
        // SAFETY: valid function handle and attribute.
        unsafe {
            cu::function::set_function_attribute(
                f,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes,
            )
        }
        .map_err(|e| derr("kernel attribute", e))
    }

    /// Record a timing event now (see [`Device::elapsed_ms`]).
    pub fn mark(&self) -> Result<GpuMark> {
        self.bind()?;
        Ok(GpuMark(self.event_now()?))
    }

    /// GPU milliseconds from `start` to now (synchronises; frees `start`).
    pub fn elapsed_ms(&self, start: GpuMark) -> Result<f64> {
        let start = start.0;
        let end = self.event_now()?;
        self.sync()?;
        // SAFETY: both events recorded on this stream and complete.
        let ms = unsafe { cu::event::elapsed(start, end) }.map_err(|e| derr("event time", e))?;
        unsafe {
            let _ = cu::event::destroy(start);
            let _ = cu::event::destroy(end);
        }
        Ok(ms as f64)
    }

    pub fn mem_info(&self) -> (usize, usize) {
        if self.bind().is_err() {
            return (0, 0);
        }
        let (free, total) = cu::mem_get_info().unwrap_or((0, 0));
        let cached = self.cache.lock().map_or(0, |c| c.bytes);
        (free + cached, total)
    }
}

/// A recorded timing event of the device's stream.
pub struct GpuMark(sys::CUevent);

/// Kernel arguments, each in an 8-byte slot (little-endian: an i32 or f32
/// parameter reads the slot's first 4 bytes).
#[derive(Default)]
pub struct Args {
    /// Parameter values, each starting on an 8-byte slot.
    vals: Vec<u64>,
    /// Slot index of each parameter.
    starts: Vec<usize>,
}

impl Args {
    pub fn new() -> Args {
        Args {
            vals: Vec::with_capacity(24),
            starts: Vec::with_capacity(24),
        }
    }
    fn push(&mut self, v: u64) -> &mut Self {
        self.starts.push(self.vals.len());
        self.vals.push(v);
        self
    }
    pub fn p(&mut self, ptr: sys::CUdeviceptr) -> &mut Self {
        self.push(ptr)
    }
    pub fn i(&mut self, v: i32) -> &mut Self {
        self.push(v as u32 as u64)
    }
    pub fn l(&mut self, v: i64) -> &mut Self {
        self.push(v as u64)
    }
    pub fn f(&mut self, v: f32) -> &mut Self {
        self.push(v.to_bits() as u64)
    }
    /// A struct passed by value: its bytes (C layout, at most 8-byte alignment).
    pub fn blob(&mut self, bytes: &[u8]) -> &mut Self {
        self.starts.push(self.vals.len());
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.vals.push(u64::from_le_bytes(w));
        }
        self
    }
    fn ptrs(&mut self) -> Vec<*mut c_void> {
        let base = self.vals.as_mut_ptr();
        self.starts
            .iter()
            // SAFETY: every start indexes into vals, which outlives the launch
            .map(|&i| unsafe { base.add(i) } as *mut c_void)
            .collect()
    }
}

/// A device allocation freed (stream-ordered) on drop.
pub struct DevMem {
    pub dev: Arc<Device>,
    pub ptr: sys::CUdeviceptr,
    pub bytes: usize,
}

impl DevMem {
    pub fn new(dev: &Arc<Device>, bytes: usize) -> Result<DevMem> {
        Ok(DevMem {
            dev: dev.clone(),
            ptr: dev.alloc(bytes)?,
            bytes,
        })
    }
    pub fn zeroed(dev: &Arc<Device>, bytes: usize) -> Result<DevMem> {
        let m = DevMem::new(dev, bytes)?;
        dev.memset0(m.ptr, bytes.max(4))?;
        Ok(m)
    }
}

impl Drop for DevMem {
    fn drop(&mut self) {
        self.dev.free(self.ptr, self.bytes);
    }
}
