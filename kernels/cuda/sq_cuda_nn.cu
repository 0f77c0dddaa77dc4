/* sq_cuda_nn.cu — softmax / log-softmax (causal mask), cross-entropy, layer
 * norm, per-channel affine, embedding, im2col / col2im and 2-d pooling.
 * Row operations use one block per row with warp-shuffle reductions;
 * everything else is one thread per output element, gathering its inputs
 * (no atomics) except the embedding backward. */
#include "sq_cuda_internal.h"

#define THREADS 256

__device__ static inline float f_exp(float x) { return expf(x); }
__device__ static inline double f_exp(double x) { return exp(x); }
__device__ static inline float f_log(float x) { return logf(x); }
__device__ static inline double f_log(double x) { return log(x); }
__device__ static inline float f_rsqrt(float x) { return 1.0f / sqrtf(x); }
__device__ static inline double f_rsqrt(double x) { return 1.0 / sqrt(x); }

static unsigned row_threads(int64_t len)
{
    int64_t t = (len + 31) / 32 * 32;
    return (unsigned)(t < 32 ? 32 : t > THREADS ? THREADS : t);
}

static unsigned row_grid(int64_t rows) { return (unsigned)(rows < (1 << 20) ? (rows < 1 ? 1 : rows) : (1 << 20)); }

#define ROW_LOOP(r, rows) for (int64_t r = blockIdx.x; r < (rows); r += gridDim.x)

/* ---- softmax ------------------------------------------------------------------------------- */

template <typename T>
__global__ void k_softmax(int lg, T *y, const T *x, int64_t rows, int64_t len, int causal)
{
    __shared__ T sh[32];
    ROW_LOOP(r, rows) {
        const T *xr = x + r * len;
        T *yr = y + r * len;
        int64_t valid = causal ? (r % len) + 1 : len;
        T m = -sq_inf<T>();
        for (int64_t j = threadIdx.x; j < valid; j += blockDim.x) m = fmax(m, xr[j]);
        m = sq_block_max(m, sh);
        T sum = 0;
        for (int64_t j = threadIdx.x; j < valid; j += blockDim.x) sum += f_exp(xr[j] - m);
        sum = sq_block_sum(sum, sh);
        if (lg) {
            T lse = m + f_log(sum);
            for (int64_t j = threadIdx.x; j < len; j += blockDim.x)
                yr[j] = j < valid ? xr[j] - lse : -sq_inf<T>();
        } else {
            T inv = (T)1 / sum;
            for (int64_t j = threadIdx.x; j < len; j += blockDim.x)
                yr[j] = j < valid ? f_exp(xr[j] - m) * inv : (T)0;
        }
    }
}

template <typename T>
__global__ void k_softmax_bwd(int lg, T *dx, const T *dy, const T *y, int64_t rows, int64_t len,
                              int causal)
{
    __shared__ T sh[32];
    ROW_LOOP(r, rows) {
        const T *dyr = dy + r * len, *yr = y + r * len;
        T *dxr = dx + r * len;
        int64_t valid = causal ? (r % len) + 1 : len;
        T acc = 0;
        for (int64_t j = threadIdx.x; j < valid; j += blockDim.x) acc += lg ? dyr[j] : dyr[j] * yr[j];
        acc = sq_block_sum(acc, sh);
        for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
            T g = 0;
            if (j < valid) g = lg ? dyr[j] - f_exp(yr[j]) * acc : yr[j] * (dyr[j] - acc);
            dxr[j] = g;
        }
    }
}

sq_status sq_cuda_softmax(sq_ctx *ctx, sq_dtype dt, int log, void *y, const void *x, int64_t rows,
                          int64_t len, int causal)
{
    const char *k = log ? "log_softmax" : "softmax";
    SQ_CUDA_ENTER(ctx, k);
    SQ_TRY(sq_cuda_need_float(ctx, k, dt));
    SQ_CUDA_NONNEG(ctx, k, rows);
    SQ_CUDA_NONNEG(ctx, k, len);
    if (rows == 0 || len == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = row_grid(rows), th = row_threads(len);
    if (dt == SQ_F32) k_softmax<float><<<gr, th, 0, s>>>(log, (float *)y, (const float *)x, rows, len, causal);
    else k_softmax<double><<<gr, th, 0, s>>>(log, (double *)y, (const double *)x, rows, len, causal);
    return sq_cuda_launched(ctx, k, "rows %lld, len %lld, causal %d, %s", (long long)rows,
                            (long long)len, causal, sq_dtype_name(dt));
}

sq_status sq_cuda_softmax_bwd(sq_ctx *ctx, sq_dtype dt, int log, void *dx, const void *dy,
                              const void *y, int64_t rows, int64_t len, int causal)
{
    const char *k = log ? "log_softmax_bwd" : "softmax_bwd";
    SQ_CUDA_ENTER(ctx, k);
    SQ_TRY(sq_cuda_need_float(ctx, k, dt));
    SQ_CUDA_NONNEG(ctx, k, rows);
    SQ_CUDA_NONNEG(ctx, k, len);
    if (rows == 0 || len == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = row_grid(rows), th = row_threads(len);
    if (dt == SQ_F32)
        k_softmax_bwd<float><<<gr, th, 0, s>>>(log, (float *)dx, (const float *)dy, (const float *)y,
                                               rows, len, causal);
    else
        k_softmax_bwd<double><<<gr, th, 0, s>>>(log, (double *)dx, (const double *)dy,
                                                (const double *)y, rows, len, causal);
    return sq_cuda_launched(ctx, k, "rows %lld, len %lld, causal %d, %s", (long long)rows,
                            (long long)len, causal, sq_dtype_name(dt));
}

/* ---- cross-entropy -------------------------------------------------------------------------- */

/* per-row loss into rl (N); probs optional */
template <typename T>
__global__ void k_xent(T *rl, T *probs, const T *logits, const int64_t *tg, int64_t N, int64_t C,
                       sq_cuda_devflag *flag)
{
    __shared__ T sh[32];
    ROW_LOOP(r, N) {
        const T *xr = logits + r * C;
        T m = -sq_inf<T>();
        for (int64_t j = threadIdx.x; j < C; j += blockDim.x) m = fmax(m, xr[j]);
        m = sq_block_max(m, sh);
        T sum = 0;
        for (int64_t j = threadIdx.x; j < C; j += blockDim.x) sum += f_exp(xr[j] - m);
        sum = sq_block_sum(sum, sh);
        T lse = m + f_log(sum);
        if (probs)
            for (int64_t j = threadIdx.x; j < C; j += blockDim.x) probs[r * C + j] = f_exp(xr[j] - lse);
        if (threadIdx.x == 0) {
            int64_t t = tg[r];
            if (t < 0 || t >= C) {
                sq_cuda_report_index(flag, SQ_CK_CROSS_ENTROPY, t, C);
                rl[r] = sq_nan<T>();
            } else {
                rl[r] = lse - xr[t];
            }
        }
    }
}

template <typename T>
__global__ void k_xent_bwd(T *dl, const T *dloss, const T *probs, const int64_t *tg, int64_t N,
                           int64_t C, sq_cuda_devflag *flag)
{
    SQ_GRID_LOOP(j, N * C) {
        int64_t r = j / C, c = j % C, t = tg[r];
        if (c == 0 && (t < 0 || t >= C)) sq_cuda_report_index(flag, SQ_CK_CROSS_ENTROPY_BWD, t, C);
        T coef = dloss[0] / (T)N;
        dl[j] = coef * (probs[j] - (c == t ? (T)1 : (T)0));
    }
}

sq_status sq_cuda_cross_entropy(sq_ctx *ctx, sq_dtype dt, void *loss, void *probs,
                                const void *logits, const int64_t *targets, int64_t N, int64_t C)
{
    const char *k = "cross_entropy";
    SQ_CUDA_ENTER(ctx, k);
    SQ_TRY(sq_cuda_need_float(ctx, k, dt));
    SQ_CUDA_NONNEG(ctx, k, N);
    if (C < 1) return sq_fail(ctx, SQ_ERR_ARG, "%s: C = %lld classes must be >= 1", k, (long long)C);
    if (N == 0) return sq_cuda_fill(ctx, dt, loss, 1, NAN); /* mean over nothing */
    size_t wsb = (size_t)N * sq_dtype_size(dt);
    void *rl = NULL;
    SQ_TRY(sq_cuda_ws_alloc(ctx, wsb, &rl));
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = row_grid(N), th = row_threads(C);
    if (dt == SQ_F32)
        k_xent<float><<<gr, th, 0, s>>>((float *)rl, (float *)probs, (const float *)logits, targets, N,
                                        C, ctx->cuda->flag);
    else
        k_xent<double><<<gr, th, 0, s>>>((double *)rl, (double *)probs, (const double *)logits,
                                         targets, N, C, ctx->cuda->flag);
    sq_status st = sq_cuda_launched(ctx, k, "N %lld, C %lld, %s", (long long)N, (long long)C,
                                    sq_dtype_name(dt));
    if (st == SQ_OK) st = sq_cuda_reduce_all(ctx, SQ_CUDA_RED_MEAN, dt, loss, NULL, rl, N);
    sq_cuda_ws_free(ctx, rl, wsb);
    return st;
}

sq_status sq_cuda_cross_entropy_bwd(sq_ctx *ctx, sq_dtype dt, void *dlogits, const void *dloss,
                                    const void *probs, const int64_t *targets, int64_t N,
                                    int64_t C)
{
    const char *k = "cross_entropy_bwd";
    SQ_CUDA_ENTER(ctx, k);
    SQ_TRY(sq_cuda_need_float(ctx, k, dt));
    SQ_CUDA_NONNEG(ctx, k, N);
    SQ_CUDA_NONNEG(ctx, k, C);
    if (N * C == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(N * C, THREADS);
    if (dt == SQ_F32)
        k_xent_bwd<float><<<gr, THREADS, 0, s>>>((float *)dlogits, (const float *)dloss,
                                                 (const float *)probs, targets, N, C, ctx->cuda->flag);
    else
        k_xent_bwd<double><<<gr, THREADS, 0, s>>>((double *)dlogits, (const double *)dloss,
                                                  (const double *)probs, targets, N, C, ctx->cuda->flag);
    return sq_cuda_launched(ctx, k, "N %lld, C %lld, %s", (long long)N, (long long)C, sq_dtype_name(dt));
}

/* ---- layer norm ------------------------------------------------------------------------------ */

template <typename T>
__global__ void k_layer_norm(T *y, T *xhat, T *rstd, const T *x, const T *w, const T *b, int64_t rows,
                             int64_t D, T eps)
{
    __shared__ T sh[32];
    ROW_LOOP(r, rows) {
        const T *xr = x + r * D;
        T acc = 0;
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) acc += xr[j];
        T mean = sq_block_sum(acc, sh) / (T)D;
        acc = 0;
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
            T c = xr[j] - mean;
            acc += c * c;
        }
        T var = sq_block_sum(acc, sh) / (T)D;
        T rs = f_rsqrt(var + eps);
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
            T h = (xr[j] - mean) * rs;
            if (xhat) xhat[r * D + j] = h;
            y[r * D + j] = h * (w ? w[j] : (T)1) + (b ? b[j] : (T)0);
        }
        if (rstd && threadIdx.x == 0) rstd[r] = rs;
    }
}

template <typename T>
__global__ void k_layer_norm_bwd(T *dx, const T *dy, const T *xhat, const T *rstd, const T *w,
                                 int64_t rows, int64_t D)
{
    __shared__ T sh[32];
    ROW_LOOP(r, rows) {
        const T *dyr = dy + r * D, *hr = xhat + r * D;
        T a1 = 0, a2 = 0;
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
            T g = dyr[j] * (w ? w[j] : (T)1);
            a1 += g;
            a2 += g * hr[j];
        }
        T m1 = sq_block_sum(a1, sh) / (T)D;
        T m2 = sq_block_sum(a2, sh) / (T)D;
        T rs = rstd[r];
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
            T g = dyr[j] * (w ? w[j] : (T)1);
            dx[r * D + j] = rs * (g - m1 - hr[j] * m2);
        }
    }
}

sq_status sq_cuda_layer_norm(sq_ctx *ctx, sq_dtype dt, void *y, void *xhat, void *rstd,
                             const void *x, const void *w, const void *b, int64_t rows, int64_t D,
                             double eps)
{
    const char *k = "layer_norm";
    SQ_CUDA_ENTER(ctx, k);
    SQ_TRY(sq_cuda_need_float(ctx, k, dt));
    SQ_CUDA_NONNEG(ctx, k, rows);
    SQ_CUDA_NONNEG(ctx, k, D);
    if (!(eps >= 0)) return sq_fail(ctx, SQ_ERR_ARG, "%s: eps %g must be >= 0", k, eps);
    if (rows == 0 || D == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = row_grid(rows), th = row_threads(D);
    if (dt == SQ_F32)
        k_layer_norm<float><<<gr, th, 0, s>>>((float *)y, (float *)xhat, (float *)rstd, (const float *)x,
                                              (const float *)w, (const float *)b, rows, D, (float)eps);
    else
        k_layer_norm<double><<<gr, th, 0, s>>>((double *)y, (double *)xhat, (double *)rstd,
                                               (const double *)x, (const double *)w,
                                               (const double *)b, rows, D, eps);
    return sq_cuda_launched(ctx, k, "rows %lld, D %lld, %s", (long long)rows, (long long)D, sq_dtype_name(dt));
}

sq_status sq_cuda_layer_norm_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, void *dw, void *db,
                                 const void *dy, const void *xhat, const void *rstd, const void *w,
                                 int64_t rows, int64_t D)
{
    const char *k = "layer_norm_bwd";
    SQ_CUDA_ENTER(ctx, k);
    SQ_TRY(sq_cuda_need_float(ctx, k, dt));
    SQ_CUDA_NONNEG(ctx, k, rows);
    SQ_CUDA_NONNEG(ctx, k, D);
    if (D == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = row_grid(rows), th = row_threads(D);
    if (dt == SQ_F32) {
        if (dx && rows)
            k_layer_norm_bwd<float><<<gr, th, 0, s>>>((float *)dx, (const float *)dy, (const float *)xhat,
                                                      (const float *)rstd, (const float *)w, rows, D);
    } else {
        if (dx && rows)
            k_layer_norm_bwd<double><<<gr, th, 0, s>>>((double *)dx, (const double *)dy,
                                                       (const double *)xhat, (const double *)rstd,
                                                       (const double *)w, rows, D);
    }
    /* dw = sum dy*xhat and db = sum dy in one pass over dy */
    if (dw && !xhat) return sq_fail(ctx, SQ_ERR_ARG, "%s: dw needs xhat", k);
    SQ_TRY(sq_cuda_colsum(ctx, dt, db, dw, dy, xhat, 1, rows, D, 1.0));
    return sq_cuda_launched(ctx, k, "rows %lld, D %lld, %s", (long long)rows, (long long)D, sq_dtype_name(dt));
}

/* ---- per-channel affine ----------------------------------------------------------------------- */

template <typename T>
__global__ void k_affine(T *y, const T *x, const T *al, const T *be, int64_t rows, int64_t D)
{
    SQ_GRID_LOOP(i, rows * D) {
        int64_t d = i % D;
        y[i] = x[i] * al[d] + (be ? be[d] : (T)0);
    }
}

template <typename T> __global__ void k_affine_dx(T *dx, const T *dy, const T *al, int64_t rows, int64_t D)
{
    SQ_GRID_LOOP(i, rows * D) dx[i] = dy[i] * al[i % D];
}

/* float32 rows of D % 4 == 0 on 16 bytes: four channels at a time */
__global__ void k_affine4(float *y, const float *x, const float *al, const float *be, int64_t rows, int64_t D)
{
    int64_t D4 = D >> 2;
    SQ_GRID_LOOP(i, rows * D4) {
        int64_t d = i % D4;
        float4 v = ((const float4 *)x)[i], a = ((const float4 *)al)[d];
        float4 b = be ? ((const float4 *)be)[d] : make_float4(0.f, 0.f, 0.f, 0.f);
        v.x = v.x * a.x + b.x;
        v.y = v.y * a.y + b.y;
        v.z = v.z * a.z + b.z;
        v.w = v.w * a.w + b.w;
        ((float4 *)y)[i] = v;
    }
}

__global__ void k_affine_dx4(float *dx, const float *dy, const float *al, int64_t rows, int64_t D)
{
    int64_t D4 = D >> 2;
    SQ_GRID_LOOP(i, rows * D4) {
        float4 g = ((const float4 *)dy)[i], a = ((const float4 *)al)[i % D4];
        g.x *= a.x;
        g.y *= a.y;
        g.z *= a.z;
        g.w *= a.w;
        ((float4 *)dx)[i] = g;
    }
}

static inline bool al16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

sq_status sq_cuda_affine(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, const void *alpha,
                         const void *beta, int64_t rows, int64_t D)
{
    SQ_CUDA_ENTER(ctx, "affine");
    SQ_TRY(sq_cuda_need_float(ctx, "affine", dt));
    SQ_CUDA_NONNEG(ctx, "affine", rows);
    SQ_CUDA_NONNEG(ctx, "affine", D);
    if (rows * D == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(rows * D, THREADS);
    if (dt == SQ_F32 && D % 4 == 0 && al16(y) && al16(x) && al16(alpha) && al16(beta))
        k_affine4<<<sq_cuda_grid(rows * D / 4, THREADS), THREADS, 0, s>>>(
            (float *)y, (const float *)x, (const float *)alpha, (const float *)beta, rows, D);
    else if (dt == SQ_F32)
        k_affine<float><<<gr, THREADS, 0, s>>>((float *)y, (const float *)x, (const float *)alpha,
                                               (const float *)beta, rows, D);
    else
        k_affine<double><<<gr, THREADS, 0, s>>>((double *)y, (const double *)x, (const double *)alpha,
                                                (const double *)beta, rows, D);
    return sq_cuda_launched(ctx, "affine", "rows %lld, D %lld, %s", (long long)rows, (long long)D,
                            sq_dtype_name(dt));
}

sq_status sq_cuda_affine_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, void *dalpha, void *dbeta,
                             const void *dy, const void *x, const void *alpha, int64_t rows,
                             int64_t D)
{
    SQ_CUDA_ENTER(ctx, "affine_bwd");
    SQ_TRY(sq_cuda_need_float(ctx, "affine_bwd", dt));
    SQ_CUDA_NONNEG(ctx, "affine_bwd", rows);
    SQ_CUDA_NONNEG(ctx, "affine_bwd", D);
    if (D == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(rows * D, THREADS);
    if (dt == SQ_F32) {
        if (dx && rows && D % 4 == 0 && al16(dx) && al16(dy) && al16(alpha))
            k_affine_dx4<<<sq_cuda_grid(rows * D / 4, THREADS), THREADS, 0, s>>>(
                (float *)dx, (const float *)dy, (const float *)alpha, rows, D);
        else if (dx && rows)
            k_affine_dx<float><<<gr, THREADS, 0, s>>>((float *)dx, (const float *)dy, (const float *)alpha, rows, D);
    } else {
        if (dx && rows)
            k_affine_dx<double><<<gr, THREADS, 0, s>>>((double *)dx, (const double *)dy,
                                                       (const double *)alpha, rows, D);
    }
    if (dalpha && !x) return sq_fail(ctx, SQ_ERR_ARG, "affine_bwd: dalpha needs x");
    SQ_TRY(sq_cuda_colsum(ctx, dt, dbeta, dalpha, dy, x, 1, rows, D, 1.0));
    return sq_cuda_launched(ctx, "affine_bwd", "rows %lld, D %lld, %s", (long long)rows, (long long)D,
                            sq_dtype_name(dt));
}

/* ---- embedding ------------------------------------------------------------------------------------ */

template <typename T>
__global__ void k_embedding(T *out, const int64_t *idx, const T *w, int64_t n, int64_t V, int64_t D,
                            sq_cuda_devflag *flag)
{
    SQ_GRID_LOOP(i, n * D) {
        int64_t r = i / D, d = i % D, v = idx[r];
        if (v < 0 || v >= V) {
            if (d == 0) sq_cuda_report_index(flag, SQ_CK_EMBEDDING, v, V);
            out[i] = sq_nan<T>();
        } else {
            out[i] = w[v * D + d];
        }
    }
}

template <typename T>
__global__ void k_embedding_bwd(T *dw, const T *dy, const int64_t *idx, int64_t n, int64_t V,
                                int64_t D, sq_cuda_devflag *flag)
{
    SQ_GRID_LOOP(i, n * D) {
        int64_t r = i / D, d = i % D, v = idx[r];
        if (v < 0 || v >= V) {
            if (d == 0) sq_cuda_report_index(flag, SQ_CK_EMBEDDING_BWD, v, V);
        } else {
            atomicAdd(&dw[v * D + d], dy[i]);
        }
    }
}

sq_status sq_cuda_embedding(sq_ctx *ctx, sq_dtype dt, void *out, const int64_t *idx, const void *w,
                            int64_t n, int64_t V, int64_t D)
{
    SQ_CUDA_ENTER(ctx, "embedding");
    SQ_TRY(sq_cuda_need_float(ctx, "embedding", dt));
    SQ_CUDA_NONNEG(ctx, "embedding", n);
    SQ_CUDA_NONNEG(ctx, "embedding", V);
    SQ_CUDA_NONNEG(ctx, "embedding", D);
    if (n * D == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n * D, THREADS);
    if (dt == SQ_F32)
        k_embedding<float><<<gr, THREADS, 0, s>>>((float *)out, idx, (const float *)w, n, V, D, ctx->cuda->flag);
    else
        k_embedding<double><<<gr, THREADS, 0, s>>>((double *)out, idx, (const double *)w, n, V, D, ctx->cuda->flag);
    return sq_cuda_launched(ctx, "embedding", "n %lld, V %lld, D %lld, %s", (long long)n, (long long)V,
                            (long long)D, sq_dtype_name(dt));
}

sq_status sq_cuda_embedding_bwd(sq_ctx *ctx, sq_dtype dt, void *dw, const void *dy,
                                const int64_t *idx, int64_t n, int64_t V, int64_t D)
{
    SQ_CUDA_ENTER(ctx, "embedding_bwd");
    SQ_TRY(sq_cuda_need_float(ctx, "embedding_bwd", dt));
    SQ_CUDA_NONNEG(ctx, "embedding_bwd", n);
    SQ_CUDA_NONNEG(ctx, "embedding_bwd", V);
    SQ_CUDA_NONNEG(ctx, "embedding_bwd", D);
    if (n * D == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n * D, THREADS);
    if (dt == SQ_F32)
        k_embedding_bwd<float><<<gr, THREADS, 0, s>>>((float *)dw, (const float *)dy, idx, n, V, D, ctx->cuda->flag);
    else
        k_embedding_bwd<double><<<gr, THREADS, 0, s>>>((double *)dw, (const double *)dy, idx, n, V, D, ctx->cuda->flag);
    return sq_cuda_launched(ctx, "embedding_bwd", "n %lld, V %lld, D %lld, %s", (long long)n,
                            (long long)V, (long long)D, sq_dtype_name(dt));
}

/* ---- im2col / col2im ---------------------------------------------------------------------------------- */

struct ConvGeom {
    int64_t N, C, H, W, Ho, Wo;
    int kh, kw, stride, pad;
};

static sq_status check_conv(sq_ctx *ctx, const char *k, const ConvGeom &g)
{
    if (g.N < 0 || g.C < 0 || g.H < 0 || g.W < 0 || g.Ho < 0 || g.Wo < 0 || g.kh < 1 || g.kw < 1 ||
        g.stride < 1 || g.pad < 0)
        return sq_fail(ctx, SQ_ERR_ARG,
                       "%s: bad geometry (N %lld, C %lld, H %lld, W %lld, k %dx%d, stride %d, pad %d, "
                       "out %lldx%lld)",
                       k, (long long)g.N, (long long)g.C, (long long)g.H, (long long)g.W, g.kh, g.kw,
                       g.stride, g.pad, (long long)g.Ho, (long long)g.Wo);
    return SQ_OK;
}

/* cols index ((n*C + c)*kh*kw + i*kw + j)*Ho*Wo + oy*Wo + ox */
template <typename T> __global__ void k_im2col(T *cols, const T *x, ConvGeom g, int64_t total)
{
    SQ_GRID_LOOP(t, total) {
        int64_t ox = t % g.Wo, u = t / g.Wo;
        int64_t oy = u % g.Ho;
        u /= g.Ho;
        int j = (int)(u % g.kw);
        u /= g.kw;
        int i = (int)(u % g.kh);
        int64_t nc = u / g.kh;
        int64_t y = oy * g.stride - g.pad + i, xx = ox * g.stride - g.pad + j;
        cols[t] = (y >= 0 && y < g.H && xx >= 0 && xx < g.W) ? x[(nc * g.H + y) * g.W + xx] : (T)0;
    }
}

/* each dx element sums its contributions in the CPU loop's (i, j) order */
template <typename T> __global__ void k_col2im(T *dx, const T *cols, ConvGeom g, int64_t total)
{
    SQ_GRID_LOOP(t, total) {
        int64_t xx = t % g.W, u = t / g.W;
        int64_t y = u % g.H, nc = u / g.H;
        T acc = 0;
        for (int i = 0; i < g.kh; i++) {
            int64_t ty = y + g.pad - i;
            if (ty < 0 || ty % g.stride) continue;
            int64_t oy = ty / g.stride;
            if (oy >= g.Ho) continue;
            for (int j = 0; j < g.kw; j++) {
                int64_t tx = xx + g.pad - j;
                if (tx < 0 || tx % g.stride) continue;
                int64_t ox = tx / g.stride;
                if (ox >= g.Wo) continue;
                acc += cols[((nc * g.kh + i) * g.kw + j) * g.Ho * g.Wo + oy * g.Wo + ox];
            }
        }
        dx[t] += acc;
    }
}

sq_status sq_cuda_im2col(sq_ctx *ctx, sq_dtype dt, void *cols, const void *x, int64_t N, int64_t C,
                         int64_t H, int64_t W, int kh, int kw, int stride, int pad, int64_t Ho,
                         int64_t Wo)
{
    ConvGeom g = {N, C, H, W, Ho, Wo, kh, kw, stride, pad};
    SQ_CUDA_ENTER(ctx, "im2col");
    SQ_TRY(sq_cuda_need_float(ctx, "im2col", dt));
    SQ_TRY(check_conv(ctx, "im2col", g));
    int64_t total = N * C * kh * kw * Ho * Wo;
    if (total == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(total, THREADS);
    if (dt == SQ_F32) k_im2col<float><<<gr, THREADS, 0, s>>>((float *)cols, (const float *)x, g, total);
    else k_im2col<double><<<gr, THREADS, 0, s>>>((double *)cols, (const double *)x, g, total);
    return sq_cuda_launched(ctx, "im2col", "N %lld, C %lld, %lldx%lld, k %dx%d, stride %d, pad %d, %s",
                            (long long)N, (long long)C, (long long)H, (long long)W, kh, kw, stride,
                            pad, sq_dtype_name(dt));
}

sq_status sq_cuda_col2im(sq_ctx *ctx, sq_dtype dt, void *dx, const void *cols, int64_t N, int64_t C,
                         int64_t H, int64_t W, int kh, int kw, int stride, int pad, int64_t Ho,
                         int64_t Wo)
{
    ConvGeom g = {N, C, H, W, Ho, Wo, kh, kw, stride, pad};
    SQ_CUDA_ENTER(ctx, "col2im");
    SQ_TRY(sq_cuda_need_float(ctx, "col2im", dt));
    SQ_TRY(check_conv(ctx, "col2im", g));
    int64_t total = N * C * H * W;
    if (total == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(total, THREADS);
    if (dt == SQ_F32) k_col2im<float><<<gr, THREADS, 0, s>>>((float *)dx, (const float *)cols, g, total);
    else k_col2im<double><<<gr, THREADS, 0, s>>>((double *)dx, (const double *)cols, g, total);
    return sq_cuda_launched(ctx, "col2im", "N %lld, C %lld, %lldx%lld, k %dx%d, stride %d, pad %d, %s",
                            (long long)N, (long long)C, (long long)H, (long long)W, kh, kw, stride,
                            pad, sq_dtype_name(dt));
}

/* ---- pooling ---------------------------------------------------------------------------------------------- */

/* first maximum in (ky, kx) order; a NaN wins over numbers, as on the CPU */
template <typename T>
__global__ void k_max_pool(T *y, int64_t *am, const T *x, ConvGeom g, int64_t total)
{
    SQ_GRID_LOOP(t, total) {
        int64_t ox = t % g.Wo, u = t / g.Wo;
        int64_t oy = u % g.Ho, nc = u / g.Ho;
        const T *xp = x + nc * g.H * g.W;
        T best = -sq_inf<T>();
        int64_t bi = -1;
        for (int i = 0; i < g.kh; i++) {
            int64_t yy = oy * g.stride - g.pad + i;
            if (yy < 0 || yy >= g.H) continue;
            for (int j = 0; j < g.kw; j++) {
                int64_t xx = ox * g.stride - g.pad + j;
                if (xx < 0 || xx >= g.W) continue;
                T v = xp[yy * g.W + xx];
                if (bi < 0 || v > best || (v != v && best == best)) {
                    best = v;
                    bi = yy * g.W + xx;
                }
            }
        }
        y[t] = best;
        am[t] = bi;
    }
}

/* windows containing input row h: oy in [lo, hi] */
__device__ static inline void win_range(int64_t h, int k, int stride, int pad, int64_t Ho, int64_t *lo,
                                        int64_t *hi)
{
    int64_t a = h + pad - k + 1;
    *lo = a <= 0 ? 0 : (a + stride - 1) / stride;
    int64_t b = (h + pad) / stride;
    *hi = b < Ho - 1 ? b : Ho - 1;
}

template <typename T>
__global__ void k_max_pool_bwd(T *dx, const T *dy, const int64_t *am, ConvGeom g, int64_t total,
                               sq_cuda_devflag *flag)
{
    SQ_GRID_LOOP(t, total) {
        int64_t w = t % g.W, u = t / g.W;
        int64_t h = u % g.H, nc = u / g.H;
        int64_t ylo, yhi, xlo, xhi, me = h * g.W + w;
        win_range(h, g.kh, g.stride, g.pad, g.Ho, &ylo, &yhi);
        win_range(w, g.kw, g.stride, g.pad, g.Wo, &xlo, &xhi);
        T acc = 0;
        for (int64_t oy = ylo; oy <= yhi; oy++)
            for (int64_t ox = xlo; ox <= xhi; ox++) {
                int64_t o = (nc * g.Ho + oy) * g.Wo + ox, a = am[o];
                if (a < -1 || a >= g.H * g.W) sq_cuda_report_index(flag, SQ_CK_MAX_POOL_BWD, a, g.H * g.W);
                if (a == me) acc += dy[o];
            }
        dx[t] = acc;
    }
}

template <typename T> __global__ void k_avg_pool(T *y, const T *x, ConvGeom g, int64_t total, T inv)
{
    SQ_GRID_LOOP(t, total) {
        int64_t ox = t % g.Wo, u = t / g.Wo;
        int64_t oy = u % g.Ho, nc = u / g.Ho;
        const T *xp = x + nc * g.H * g.W;
        T acc = 0;
        for (int i = 0; i < g.kh; i++) {
            int64_t yy = oy * g.stride - g.pad + i;
            if (yy < 0 || yy >= g.H) continue;
            for (int j = 0; j < g.kw; j++) {
                int64_t xx = ox * g.stride - g.pad + j;
                if (xx >= 0 && xx < g.W) acc += xp[yy * g.W + xx];
            }
        }
        y[t] = acc * inv;
    }
}

template <typename T> __global__ void k_avg_pool_bwd(T *dx, const T *dy, ConvGeom g, int64_t total, T inv)
{
    SQ_GRID_LOOP(t, total) {
        int64_t w = t % g.W, u = t / g.W;
        int64_t h = u % g.H, nc = u / g.H;
        int64_t ylo, yhi, xlo, xhi;
        win_range(h, g.kh, g.stride, g.pad, g.Ho, &ylo, &yhi);
        win_range(w, g.kw, g.stride, g.pad, g.Wo, &xlo, &xhi);
        T acc = 0;
        for (int64_t oy = ylo; oy <= yhi; oy++)
            for (int64_t ox = xlo; ox <= xhi; ox++) acc += dy[(nc * g.Ho + oy) * g.Wo + ox];
        dx[t] = acc * inv;
    }
}

#define POOL_CHECK(name)                                                                     \
    SQ_CUDA_ENTER(ctx, name);                                                                \
    SQ_TRY(sq_cuda_need_float(ctx, name, dt));                                               \
    SQ_TRY(check_conv(ctx, name, g))

#define POOL_SIZES(name)                                                                     \
    sq_cuda_launched(ctx, name, "N %lld, C %lld, %lldx%lld -> %lldx%lld, k %d, stride %d, pad %d, %s", \
                     (long long)N, (long long)C, (long long)H, (long long)W, (long long)Ho,   \
                     (long long)Wo, k, stride, pad, sq_dtype_name(dt))

sq_status sq_cuda_max_pool2d(sq_ctx *ctx, sq_dtype dt, void *y, int64_t *argmax, const void *x,
                             int64_t N, int64_t C, int64_t H, int64_t W, int k, int stride,
                             int pad, int64_t Ho, int64_t Wo)
{
    ConvGeom g = {N, C, H, W, Ho, Wo, k, k, stride, pad};
    POOL_CHECK("max_pool2d");
    int64_t total = N * C * Ho * Wo;
    if (total == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(total, THREADS);
    if (dt == SQ_F32) k_max_pool<float><<<gr, THREADS, 0, s>>>((float *)y, argmax, (const float *)x, g, total);
    else k_max_pool<double><<<gr, THREADS, 0, s>>>((double *)y, argmax, (const double *)x, g, total);
    return POOL_SIZES("max_pool2d");
}

sq_status sq_cuda_max_pool2d_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dy,
                                 const int64_t *argmax, int64_t N, int64_t C, int64_t H, int64_t W,
                                 int k, int stride, int pad, int64_t Ho, int64_t Wo)
{
    ConvGeom g = {N, C, H, W, Ho, Wo, k, k, stride, pad};
    POOL_CHECK("max_pool2d_bwd");
    int64_t total = N * C * H * W;
    if (total == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(total, THREADS);
    if (dt == SQ_F32)
        k_max_pool_bwd<float><<<gr, THREADS, 0, s>>>((float *)dx, (const float *)dy, argmax, g, total, ctx->cuda->flag);
    else
        k_max_pool_bwd<double><<<gr, THREADS, 0, s>>>((double *)dx, (const double *)dy, argmax, g, total, ctx->cuda->flag);
    return POOL_SIZES("max_pool2d_bwd");
}

sq_status sq_cuda_avg_pool2d(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, int64_t N, int64_t C,
                             int64_t H, int64_t W, int k, int stride, int pad, int64_t Ho,
                             int64_t Wo)
{
    ConvGeom g = {N, C, H, W, Ho, Wo, k, k, stride, pad};
    POOL_CHECK("avg_pool2d");
    int64_t total = N * C * Ho * Wo;
    if (total == 0) return SQ_OK;
    double inv = 1.0 / ((double)k * (double)k);
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(total, THREADS);
    if (dt == SQ_F32) k_avg_pool<float><<<gr, THREADS, 0, s>>>((float *)y, (const float *)x, g, total, (float)inv);
    else k_avg_pool<double><<<gr, THREADS, 0, s>>>((double *)y, (const double *)x, g, total, inv);
    return POOL_SIZES("avg_pool2d");
}

sq_status sq_cuda_avg_pool2d_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dy, int64_t N,
                                 int64_t C, int64_t H, int64_t W, int k, int stride, int pad,
                                 int64_t Ho, int64_t Wo)
{
    ConvGeom g = {N, C, H, W, Ho, Wo, k, k, stride, pad};
    POOL_CHECK("avg_pool2d_bwd");
    int64_t total = N * C * H * W;
    if (total == 0) return SQ_OK;
    double inv = 1.0 / ((double)k * (double)k);
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(total, THREADS);
    if (dt == SQ_F32)
        k_avg_pool_bwd<float><<<gr, THREADS, 0, s>>>((float *)dx, (const float *)dy, g, total, (float)inv);
    else
        k_avg_pool_bwd<double><<<gr, THREADS, 0, s>>>((double *)dx, (const double *)dy, g, total, inv);
    return POOL_SIZES("avg_pool2d_bwd");
}
