// ---------------------------------------------------------------------------
// Norms and elementwise ops
// ---------------------------------------------------------------------------

__device__ double block_sum_d(double v, double* sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    double t = 0;
    int nw = (blockDim.x + 31) / 32;
    for (int i = 0; i < nw; i++) t += sh[i];
    return t;
}

// In place; out may equal x. One block per row.
extern "C" __global__ void rms_norm(const float* x, float* out, int width, const float* w,
                                    float eps) {
    __shared__ double sh[32];
    const float* xr = x + (long long)blockIdx.x * width;
    float* orow = out + (long long)blockIdx.x * width;
    double ss = 0;
    for (int i = threadIdx.x; i < width; i += blockDim.x) ss += (double)xr[i] * (double)xr[i];
    ss = block_sum_d(ss, sh);
    float r = 1.0f / sqrtf((float)(ss / width) + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v = xr[i] * r;
        orow[i] = w ? v * w[i] : v;
    }
}

extern "C" __global__ void add_inplace(float* a, const float* b, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] += b[i];
}
extern "C" __global__ void add_row_bcast(float* a, const float* row, int width, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] += row[i % width];
}
extern "C" __global__ void scale_inplace(float* a, float s, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] *= s;
}
extern "C" __global__ void f16_round(float* a, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] = h2f(f2h(a[i]));
}
extern "C" __global__ void add_position_rows(float* x, int width, const float* table,
                                             int table_rows, const int* pos, int rows) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * width) return;
    int r = (int)(i / width), c = (int)(i % width);
    x[i] += table[(long long)(pos[r] % table_rows) * width + c];
}
extern "C" __global__ void gather_rows(const float* src, int width, const int* rows, int n,
                                       float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * width) return;
    int r = (int)(i / width), c = (int)(i % width);
    out[i] = src[(long long)rows[r] * width + c];
}

// RoPE on the last 2*npairs dims of every head. pos: per row (dpos) or start + row*step.
extern "C" __global__ void rope(float* x, int rows, int heads, int head_dim, int npairs,
                                const int* pos, int start, int step, const float* inv32,
                                const double* inv64, int inverse, int precise) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long total = (long long)rows * heads * npairs;
    if (i >= total) return;
    int j = (int)(i % npairs);
    long long rh = i / npairs;
    int row = (int)(rh / heads), h = (int)(rh % heads);
    int p = pos ? pos[row] : start + row * step;
    double a;
    if (precise) a = (double)p * inv64[j];
    else a = (double)((float)p * inv32[j]);
    float c = (float)cos(a), s = (float)sin(a);
    if (inverse) s = -s;
    float* t = x + ((long long)row * heads + h) * head_dim + head_dim - 2 * npairs;
    float u = t[2 * j], v = t[2 * j + 1];
    t[2 * j] = u * c - v * s;
    t[2 * j + 1] = v * c + u * s;
}

// FP8 e4m3fn round trip of dims 0..nope of each `width` row, blocks of 64.
__device__ float e4m3_round(float x) {
    float s = x < 0 ? -1.f : 1.f;
    float a = fminf(fabsf(x), 448.f);
    if (a == 0.f || a != a) return 0.f * s;
    float step;
    if (a < 0.015625f) {
        step = 0.001953125f;
    } else {
        int e;
        frexpf(a, &e);  // a = m * 2^e, m in [0.5, 1): floor(log2 a) = e - 1
        step = ldexpf(1.f, e - 1 - 3);
    }
    return s * rintf(a / step) * step;
}
// One warp per 64-value block: lane holds values lane and lane + 32.
extern "C" __global__ void fp8_sim(float* x, int rows, int width, int nope) {
    int nb = nope / 64;
    long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (i >= (long long)rows * nb) return;
    float* b = x + (i / nb) * width + (i % nb) * 64;
    float v0 = b[lane], v1 = b[lane + 32];
    float amax = warp_max(fmaxf(fabsf(v0), fabsf(v1)));
    amax = fmaxf(amax, 1e-4f);
    float sc = ldexpf(1.f, (int)ceilf(log2f(amax / 448.f)));
    b[lane] = e4m3_round(fminf(fmaxf(v0 / sc, -448.f), 448.f)) * sc;
    b[lane + 32] = e4m3_round(fminf(fmaxf(v1 / sc, -448.f), 448.f)) * sc;
}

// Per-head RMSNorm + RoPE (+ the KV store's FP8 / f16 rounding) in one pass:
// the `rms_norm`, `rope`, `fp8_sim` and `f16_round` kernels' arithmetic on one
// head of head_dim values per warp, lane holding head_dim/32 (<= 16, even)
// consecutive dims. nope > 0: FP8 round trip of dims 0..nope in blocks of 64,
// then f16 rounding of the head. npairs <= 64.
extern "C" __global__ void __launch_bounds__(128) norm_rope(
    float* x, int nheads, int heads, int hd, const float* w, float eps, int npairs,
    const int* pos, int start, int step, const float* inv32, const double* inv64, int precise,
    int nope) {
    __shared__ float cs_sh[4][2][64];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int gw = blockIdx.x * 4 + warp;
    if (gw >= nheads) return;
    int row = gw / heads, per = hd / 32, d0 = lane * per;
    float* xr = x + (long long)gw * hd;
    float v[16];
#pragma unroll
    for (int e = 0; e < 16; e++) v[e] = e < per ? xr[d0 + e] : 0.f;
    // the angles while the loads are in flight
    int p = pos ? pos[row] : start + row * step;
    for (int j = lane; j < npairs; j += 32) {
        double a;
        if (precise) a = (double)p * inv64[j];
        else a = (double)((float)p * inv32[j]);
        double sa, ca;
        sincos(a, &sa, &ca);
        cs_sh[warp][0][j] = (float)ca;
        cs_sh[warp][1][j] = (float)sa;
    }
    double ss = 0;
#pragma unroll
    for (int e = 0; e < 16; e++)
        if (e < per) ss += (double)v[e] * (double)v[e];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    float r = 1.0f / sqrtf((float)(ss / hd) + eps);
#pragma unroll
    for (int e = 0; e < 16; e++) {
        float t = v[e] * r;
        v[e] = (w && e < per) ? t * w[d0 + e] : t;
    }
    __syncwarp();
    int r0 = hd - 2 * npairs;
#pragma unroll
    for (int e = 0; e < 16; e += 2) {
        int d = d0 + e;
        if (e < per && d >= r0) {
            int j = (d - r0) >> 1;
            float c = cs_sh[warp][0][j], sn = cs_sh[warp][1][j];
            float u = v[e], vv = v[e + 1];
            v[e] = u * c - vv * sn;
            v[e + 1] = vv * c + u * sn;
        }
    }
    if (nope > 0) {
        // 64-value blocks span 64/per lanes (aligned groups)
        float amax = 0.f;
#pragma unroll
        for (int e = 0; e < 16; e++)
            if (e < per) amax = fmaxf(amax, fabsf(v[e]));
        for (int o = 1; o < 64 / per; o <<= 1)
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        amax = fmaxf(amax, 1e-4f);
        float sc = ldexpf(1.f, (int)ceilf(log2f(amax / 448.f)));
#pragma unroll
        for (int e = 0; e < 16; e++)
            if (e < per && d0 + e < nope)
                v[e] = e4m3_round(fminf(fmaxf(v[e] / sc, -448.f), 448.f)) * sc;
#pragma unroll
        for (int e = 0; e < 16; e++) v[e] = h2f(f2h(v[e]));
    }
#pragma unroll
    for (int e = 0; e < 16; e++)
        if (e < per) xr[d0 + e] = v[e];
}

__device__ float e2m1_round(float x) {
    const float vals[8] = {0.f, 0.5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f};
    float s = x < 0 ? -1.f : 1.f;
    float a = fminf(fabsf(x), 6.f);
    if (a != a) return 0.f;
    int best = 0;
    for (int i = 1; i < 8; i++) {
        float db = fabsf(a - vals[best]), d = fabsf(a - vals[i]);
        if (d < db || (d == db && (i % 2) == 0)) best = i;
    }
    return s * vals[best];
}
// Hadamard (Sylvester, natural order) + FP4 round trip of each `width` row
// (width a power of two, <= 1024). One block of `width` threads per row.
extern "C" __global__ void hadamard_fp4(float* x, int width, float scale) {
    extern __shared__ float hs[];
    float* r = x + (long long)blockIdx.x * width;
    int i = threadIdx.x;
    hs[i] = r[i];
    __syncthreads();
    for (int s = 1; s < width; s <<= 1) {
        float a = hs[i], b = hs[i ^ s];
        __syncthreads();
        hs[i] = (i & s) ? b - a : a + b;
        __syncthreads();
    }
    float v = hs[i] * scale;
    __syncthreads();
    hs[i] = v;
    __syncthreads();
    int b0 = i & ~31;
    float amax = 0.f;
    for (int k = 0; k < 32; k++) amax = fmaxf(amax, fabsf(hs[b0 + k]));
    amax = fmaxf(amax, 6.f * 1.1754943508222875e-38f);
    float sc = ldexpf(1.f, (int)ceilf(log2f(amax / 6.f)));
    r[i] = e2m1_round(fminf(fmaxf(v / sc, -6.f), 6.f)) * sc;
}

// ---------------------------------------------------------------------------
// Hyper-connections (spec §2.2, §2.3, §2.5)
// ---------------------------------------------------------------------------
__device__ __forceinline__ float sigmoidf_(float z) { return 1.f / (1.f + expf(-z)); }

// mix: [rows, (2+n)n]; x: [rows, n, d]. Writes y [rows, d], post [rows, n], comb [rows, n, n].
// One block per token. mix_raw: mix = fn · x of the raw HC state (the
// unweighted RMSNorm of x is a scalar, applied here: mix · r, from ss_in, the
// mix kernel's sum of x^2 per token, when given); else mix is of the normed state. out_norm: y then takes the `rms_norm` kernel's RMSNorm
// with weight nw (null: unweighted).
extern "C" __global__ void hc_pre_finish(const float* mix, const float* base, const float* scale,
                                         const float* x, int n, int d, int iters, float eps,
                                         float rms_eps, int mix_raw, const double* ss_in,
                                         int out_norm, const float* nw, float* y, float* post,
                                         float* comb) {
    __shared__ float pre_s[16];
    __shared__ float c[256];
    __shared__ float mx[256];
    __shared__ double sh[32];
    int t = blockIdx.x;
    int m = (2 + n) * n;
    const float* xr = x + (long long)t * n * d;
    float rr = 1.f;
    if (mix_raw && ss_in) {
        rr = 1.0f / sqrtf((float)(ss_in[t] / (n * d)) + rms_eps);
    } else if (mix_raw) {
        double ss = 0;
        if ((n * d) % 4 == 0) {
            const float4* x4 = (const float4*)xr;
            for (int i = threadIdx.x; i < n * d / 4; i += blockDim.x) {
                float4 v = x4[i];
                ss += (double)v.x * (double)v.x + (double)v.y * (double)v.y +
                      (double)v.z * (double)v.z + (double)v.w * (double)v.w;
            }
        } else {
            for (int i = threadIdx.x; i < n * d; i += blockDim.x) ss += (double)xr[i] * (double)xr[i];
        }
        ss = block_sum_d(ss, sh);
        rr = 1.0f / sqrtf((float)(ss / (n * d)) + rms_eps);
    }
    for (int i = threadIdx.x; i < m; i += blockDim.x) mx[i] = mix[(long long)t * m + i] * rr;
    __syncthreads();
    // pre (all that y needs) first; then warp 0 forms post and comb while the
    // other warps form y (blockDim > 32)
    if (threadIdx.x < n) pre_s[threadIdx.x] = sigmoidf_(mx[threadIdx.x] * scale[0] + base[threadIdx.x]) + eps;
    __syncthreads();
    float* yr = y + (long long)t * d;
    double s2 = 0;
    if (threadIdx.x >= 32) {
        for (int i = threadIdx.x - 32; i < d; i += blockDim.x - 32) {
            float acc = 0.f;
            for (int s = 0; s < n; s++) acc += pre_s[s] * xr[(long long)s * d + i];
            yr[i] = acc;
            s2 += (double)acc * (double)acc;
        }
    } else if (n == 4) {
        // 16 lanes of warp 0, one matrix element each; sums gathered by
        // shuffles in the sequential loop's order (bit-identical to it)
        {
            int ln = threadIdx.x, e = ln & 15, j = e >> 2, k = e & 3;
            if (ln >= 4 && ln < 8) post[t * 4 + ln - 4] = 2.f * sigmoidf_(mx[ln] * scale[1] + base[ln]);
            float r = mx[8 + e] * scale[2] + base[8 + e];
#define SH(v, l) __shfl_sync(0xffffffffu, v, l)
            float mm = fmaxf(fmaxf(fmaxf(-INFINITY, SH(r, 4 * j)), SH(r, 4 * j + 1)),
                             fmaxf(SH(r, 4 * j + 2), SH(r, 4 * j + 3)));
            r = expf(r - mm);
            float sm = ((SH(r, 4 * j) + SH(r, 4 * j + 1)) + SH(r, 4 * j + 2)) + SH(r, 4 * j + 3);
            r = r / sm + eps;
            for (int it = 0; it < iters; it++) {
                if (it > 0) {
                    sm = ((SH(r, 4 * j) + SH(r, 4 * j + 1)) + SH(r, 4 * j + 2)) + SH(r, 4 * j + 3);
                    r /= sm + eps;
                }
                sm = ((SH(r, k) + SH(r, 4 + k)) + SH(r, 8 + k)) + SH(r, 12 + k);
                r /= sm + eps;
            }
#undef SH
            if (ln < 16) comb[(long long)t * 16 + e] = r;
        }
    } else if (threadIdx.x == 0) {
        for (int s = 0; s < n; s++) post[t * n + s] = 2.f * sigmoidf_(mx[n + s] * scale[1] + base[n + s]);
        for (int i = 0; i < n * n; i++) c[i] = mx[2 * n + i] * scale[2] + base[2 * n + i];
        {
            for (int j = 0; j < n; j++) {
                float* rw = c + j * n;
                float mm = -INFINITY;
                for (int k = 0; k < n; k++) mm = fmaxf(mm, rw[k]);
                float sm = 0.f;
                for (int k = 0; k < n; k++) { rw[k] = expf(rw[k] - mm); sm += rw[k]; }
                for (int k = 0; k < n; k++) rw[k] = rw[k] / sm + eps;
            }
            for (int it = 0; it < iters; it++) {
                if (it > 0) {
                    for (int j = 0; j < n; j++) {
                        float sm = 0.f;
                        for (int k = 0; k < n; k++) sm += c[j * n + k];
                        for (int k = 0; k < n; k++) c[j * n + k] /= sm + eps;
                    }
                }
                for (int k = 0; k < n; k++) {
                    float sm = 0.f;
                    for (int j = 0; j < n; j++) sm += c[j * n + k];
                    for (int j = 0; j < n; j++) c[j * n + k] /= sm + eps;
                }
            }
        }
        for (int i = 0; i < n * n; i++) comb[(long long)t * n * n + i] = c[i];
    }
    if (!out_norm) return;
    s2 = block_sum_d(s2, sh);
    float r = 1.0f / sqrtf((float)(s2 / d) + rms_eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float v = yr[i] * r;
        yr[i] = nw ? v * nw[i] : v;
    }
}

extern "C" __global__ void hc_head_finish(const float* mix, const float* base, const float* scale,
                                          const float* x, int n, int d, float eps, float* y) {
    __shared__ float w_s[16];
    int t = blockIdx.x;
    if (threadIdx.x < n) {
        int s = threadIdx.x;
        w_s[s] = sigmoidf_(mix[(long long)t * n + s] * scale[0] + base[s]) + eps;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float acc = 0.f;
        for (int s = 0; s < n; s++) acc += w_s[s] * x[((long long)t * n + s) * d + i];
        y[(long long)t * d + i] = acc;
    }
}

// X'_k = post_k o + sum_j C_jk X_j, in place.
extern "C" __global__ void hc_post(float* x, const float* o, const float* post, const float* comb,
                                   int n, int d, int rows) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * d) return;
    int t = (int)(i / d), c = (int)(i % d);
    float old[16];
#pragma unroll
    for (int j = 0; j < 16; j++) old[j] = j < n ? x[((long long)t * n + j) * d + c] : 0.f;
    float ov = o[(long long)t * d + c];
#pragma unroll
    for (int k = 0; k < 16; k++) {
        if (k >= n) break;
        float acc = post[t * n + k] * ov;
#pragma unroll
        for (int j = 0; j < 16; j++)
            if (j < n) acc += comb[(long long)t * n * n + j * n + k] * old[j];
        x[((long long)t * n + k) * d + c] = acc;
    }
}

// ---------------------------------------------------------------------------
// Routing and experts (spec §4)
// ---------------------------------------------------------------------------
__device__ __forceinline__ float softplusf_(float z) {
    if (z > 20.f) return z;
    if (z < -20.f) return expf(z);
    return log1pf(expf(z));
}
// One warp per token (4 per block); scores staged in shared memory.
// logits [rows, n_exp] (n_exp <= 2048); table/tokens for hash routing.
extern "C" __global__ void route(const float* logits, int rows, int n_exp, int k,
                                 const float* bias, const int* table, const int* tokens,
                                 float scale, int* ids, float* weights) {
    __shared__ float sh[4][1024];
    __shared__ float uh[4][1024];
    int wq = threadIdx.x >> 5;
    int t = blockIdx.x * 4 + wq;
    int lane = threadIdx.x & 31;
    if (t >= rows) return;
    const float* l = logits + (long long)t * n_exp;
    float* sc = sh[wq];
    float* u = uh[wq];
    // lane j < k ends up holding the j-th selected expert
    int mine = 0;
    if (table) {
        if (lane < k) mine = table[(long long)tokens[t] * k + lane];
        __syncwarp();
        if (lane < k) u[lane] = sqrtf(softplusf_(l[mine]));
        __syncwarp();
        if (lane < k) sc[lane] = u[lane];
    } else {
        for (int e = lane; e < n_exp; e += 32) {
            float v = sqrtf(softplusf_(l[e]));
            u[e] = v;
            sc[e] = v + (bias ? bias[e] : 0.f);
        }
        __syncwarp();
        for (int j = 0; j < k; j++) {
            float best = -INFINITY;
            int bi = 0x7fffffff;
            for (int e = lane; e < n_exp; e += 32) {
                float v = sc[e];
                if (v > best || (v == best && e < bi)) { best = v; bi = e; }
            }
            for (int o = 16; o > 0; o >>= 1) {
                float ov = __shfl_xor_sync(0xffffffffu, best, o);
                int oi = __shfl_xor_sync(0xffffffffu, bi, o);
                if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
            }
            if (bi == 0x7fffffff) bi = 0;
            if (lane == j) mine = bi;
            __syncwarp();
            if (lane == 0) sc[bi] = -INFINITY;
            __syncwarp();
        }
    }
    // weights: u of the selection over its sum, summed in selection order
    float uj = 0.f;
    if (lane < k) uj = table ? sc[lane] : u[mine];
    float sum = 0.f;
    for (int j = 0; j < k; j++) sum += __shfl_sync(0xffffffffu, uj, j);
    if (lane < k) {
        ids[(long long)t * k + lane] = mine;
        weights[(long long)t * k + lane] = scale * uj / sum;
    }
}

// out = w * silu(min(g, limit)) * clamp(u, -limit, limit); w per row (slot) or 1.
extern "C" __global__ void swiglu(const float* g, const float* u, const float* w, int width,
                                  long long n, float limit, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gc = fminf(g[i], limit);
    float uc = fminf(fmaxf(u[i], -limit), limit);
    float s = gc / (1.f + expf(-gc));
    float wt = w ? w[i / width] : 1.f;
    out[i] = wt * (s * uc);
}

// out[t] = sum_{i<k} slots[t*k + i] in slot order (+ addend[t]).
extern "C" __global__ void sum_slots(const float* slots, int k, int d, int rows,
                                     const float* addend, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * d) return;
    int t = (int)(i / d), c = (int)(i % d);
    float acc = 0.f;
    for (int j = 0; j < k; j++) acc += slots[((long long)t * k + j) * d + c];
    out[i] = addend ? acc + addend[i] : acc;
}

// argmax of each row, ties to the lower index. One block per row.
extern "C" __global__ void argmax_rows(const float* x, int width, int* out) {
    __shared__ float bv[32];
    __shared__ int bi[32];
    const float* r = x + (long long)blockIdx.x * width;
    float best = -INFINITY;
    int idx = 0x7fffffff;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v = r[i];
        if (v > best || (v == best && i < idx)) { best = v; idx = i; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (ov > best || (ov == best && oi < idx)) { best = ov; idx = oi; }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { bv[warp] = best; bi[warp] = idx; }
    __syncthreads();
    if (threadIdx.x == 0) {
        int nw = blockDim.x / 32;
        for (int w = 1; w < nw; w++)
            if (bv[w] > best || (bv[w] == best && bi[w] < idx)) { best = bv[w]; idx = bi[w]; }
        out[blockIdx.x] = idx == 0x7fffffff ? 0 : idx;
    }
}

