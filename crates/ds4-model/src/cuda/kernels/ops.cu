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
extern "C" __global__ void hc_pre_finish(const float* mix, const float* base, const float* scale,
                                         const float* x, int n, int d, int iters, float eps,
                                         float* y, float* post, float* comb) {
    __shared__ float pre_s[16];
    __shared__ float c[256];
    int t = blockIdx.x;
    int m = (2 + n) * n;
    const float* mx = mix + (long long)t * m;
    // blockIdx.y splits the d outputs; block y == 0 also writes post and comb
    bool head = blockIdx.y == 0;
    if (n == 4) {
        // 16 lanes of warp 0, one matrix element each; sums gathered by
        // shuffles in the sequential loop's order (bit-identical to it)
        if (threadIdx.x < 32) {
            int ln = threadIdx.x, e = ln & 15, j = e >> 2, k = e & 3;
            if (ln < 4) pre_s[ln] = sigmoidf_(mx[ln] * scale[0] + base[ln]) + eps;
            else if (ln < 8 && head) post[t * 4 + ln - 4] = 2.f * sigmoidf_(mx[ln] * scale[1] + base[ln]);
            if (!head) goto mix_done;
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
        for (int s = 0; s < n; s++) pre_s[s] = sigmoidf_(mx[s] * scale[0] + base[s]) + eps;
        if (!head) goto mix_done;
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
mix_done:
    __syncthreads();
    int per = (d + gridDim.y - 1) / gridDim.y;
    int hi = min(d, (int)(blockIdx.y + 1) * per);
    for (int i = blockIdx.y * per + threadIdx.x; i < hi; i += blockDim.x) {
        float acc = 0.f;
        for (int s = 0; s < n; s++) acc += pre_s[s] * x[((long long)t * n + s) * d + i];
        y[(long long)t * d + i] = acc;
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
    __shared__ float sh[4][2048];
    int wq = threadIdx.x >> 5;
    int t = blockIdx.x * 4 + wq;
    int lane = threadIdx.x & 31;
    if (t >= rows) return;
    const float* l = logits + (long long)t * n_exp;
    float* sc = sh[wq];
    int sel[16];
    if (table) {
        for (int j = 0; j < k; j++) sel[j] = table[(long long)tokens[t] * k + j];
    } else {
        for (int e = lane; e < n_exp; e += 32) sc[e] = sqrtf(softplusf_(l[e])) + (bias ? bias[e] : 0.f);
        __syncwarp();
        for (int j = 0; j < 16; j++) {
            if (j >= k) break;
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
            sel[j] = bi;
            __syncwarp();
            if (lane == 0) sc[bi] = -INFINITY;
            __syncwarp();
        }
    }
    if (lane == 0) {
        float sum = 0.f;
        for (int j = 0; j < k; j++) sum += sqrtf(softplusf_(l[sel[j]]));
        for (int j = 0; j < k; j++) {
            ids[(long long)t * k + j] = sel[j];
            weights[(long long)t * k + j] = scale * sqrtf(softplusf_(l[sel[j]])) / sum;
        }
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

// out[t] = sum_{i<k} slots[t*k + i] in slot order.
extern "C" __global__ void sum_slots(const float* slots, int k, int d, int rows, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * d) return;
    int t = (int)(i / d), c = (int)(i % d);
    float acc = 0.f;
    for (int j = 0; j < k; j++) acc += slots[((long long)t * k + j) * d + c];
    out[i] = acc;
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

