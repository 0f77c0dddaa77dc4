/* sq_cuda_reduce.cu — sum, mean, max(+argmax) over one dim of an
 * (outer, len, inner) view or over all elements, and their backward.
 *
 * inner == 1: one block per row, a block reduction with warp shuffles.
 * inner > 1: one thread per output, walking len (coalesced over inner).
 * All elements: two passes through a workspace, so the result does not
 * depend on scheduling (no atomics). */
#include "sq_cuda_internal.h"

#include <limits.h>

#define THREADS 256

/* Total order for max: NaN above everything, ties to the lower index, so
 * the parallel result is the CPU loop's "first maximum, first NaN". */
template <typename T> __device__ static inline bool better(T v2, int64_t i2, T v1, int64_t i1)
{
    bool n1 = v1 != v1, n2 = v2 != v2;
    if (n1 || n2) return (n1 && n2) ? i2 < i1 : n2;
    return v2 > v1 || (v2 == v1 && i2 < i1);
}

template <typename T> __device__ static inline void warp_argmax(T &v, int64_t &i)
{
    for (int o = 16; o > 0; o >>= 1) {
        T v2 = __shfl_xor_sync(0xffffffffu, v, o);
        int64_t i2 = __shfl_xor_sync(0xffffffffu, i, o);
        if (better(v2, i2, v, i)) {
            v = v2;
            i = i2;
        }
    }
}

/* every thread ends with the block's best (v, i) */
template <typename T> __device__ static inline void block_argmax(T &v, int64_t &i)
{
    __shared__ T sv[32];
    __shared__ int64_t si[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    warp_argmax(v, i);
    __syncthreads();
    if (lane == 0) {
        sv[w] = v;
        si[w] = i;
    }
    __syncthreads();
    v = lane < nw ? sv[lane] : -sq_inf<T>();
    i = lane < nw ? si[lane] : LLONG_MAX;
    warp_argmax(v, i);
}

template <typename T> __device__ static inline T finish_mean(T acc, double scale)
{
    return (T)((double)acc * scale); /* as the CPU: (float)(q * scale) */
}

/* one block per row (inner == 1) */
template <typename T>
__global__ void k_reduce_rows(int op, T *out, int64_t *am, const T *x, int64_t outer, int64_t len,
                              int64_t s0, int64_t s1, double scale)
{
    __shared__ T sh[32];
    for (int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
        const T *row = x + o * s0;
        if (op == SQ_CUDA_RED_MAX) {
            T v = -sq_inf<T>();
            int64_t bi = LLONG_MAX;
            for (int64_t l = threadIdx.x; l < len; l += blockDim.x)
                if (better(row[l * s1], l, v, bi)) {
                    v = row[l * s1];
                    bi = l;
                }
            block_argmax(v, bi);
            if (threadIdx.x == 0) {
                out[o] = v;
                if (am) am[o] = bi;
            }
        } else {
            T acc = 0;
            for (int64_t l = threadIdx.x; l < len; l += blockDim.x) acc += row[l * s1];
            acc = sq_block_sum(acc, sh);
            if (threadIdx.x == 0) out[o] = op == SQ_CUDA_RED_MEAN ? finish_mean(acc, scale) : acc;
        }
        __syncthreads();
    }
}

/* one thread per (o, i) output (inner > 1) */
template <typename T>
__global__ void k_reduce_cols(int op, T *out, int64_t *am, const T *x, int64_t outer, int64_t len,
                              int64_t inner, int64_t s0, int64_t s1, int64_t s2, double scale)
{
    SQ_GRID_LOOP(j, outer * inner) {
        int64_t o = j / inner, i = j % inner;
        const T *p = x + o * s0 + i * s2;
        if (op == SQ_CUDA_RED_MAX) {
            T v = -sq_inf<T>();
            int64_t bi = LLONG_MAX;
            for (int64_t l = 0; l < len; l++)
                if (better(p[l * s1], l, v, bi)) {
                    v = p[l * s1];
                    bi = l;
                }
            out[j] = v;
            if (am) am[j] = bi;
        } else {
            T acc = 0;
            for (int64_t l = 0; l < len; l++) acc += p[l * s1];
            out[j] = op == SQ_CUDA_RED_MEAN ? finish_mean(acc, scale) : acc;
        }
    }
}

/* ---- column sums ----------------------------------------------------------------------
 * Block (32, 8): 32 neighbouring columns (coalesced) times 8 row lanes; grid
 * (column tiles, row chunks, outer).  Each block writes one partial per
 * column and chunk; a second kernel adds the chunks in order. */
#define CS_X 32
#define CS_Y 8

template <typename T>
__global__ void k_colsum_part(T *pa, T *pab, const T *a, const T *b, int64_t outer, int64_t rows,
                              int64_t D, int64_t chunk, int nchunk, double scale, int final)
{
    __shared__ T sa[CS_Y][CS_X + 1], sab[CS_Y][CS_X + 1];
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t d = (int64_t)blockIdx.x * CS_X + tx;
    int c = blockIdx.y;
    for (int64_t o = blockIdx.z; o < outer; o += gridDim.z) {
        int64_t r0 = (int64_t)c * chunk, r1 = r0 + chunk < rows ? r0 + chunk : rows;
        T acc_a = 0, acc_ab = 0;
        if (d < D) {
            const T *ap = a + o * rows * D + d;
            const T *bp = b ? b + o * rows * D + d : NULL;
            for (int64_t r = r0 + ty; r < r1; r += CS_Y) {
                T v = ap[r * D];
                acc_a += v;
                if (bp) acc_ab += v * bp[r * D];
            }
        }
        sa[ty][tx] = acc_a;
        sab[ty][tx] = acc_ab;
        __syncthreads();
        if (ty == 0 && d < D) {
            T ta = 0, tab = 0;
            for (int y = 0; y < CS_Y; y++) {
                ta += sa[y][tx];
                tab += sab[y][tx];
            }
            int64_t q = final ? o * D + d : (o * nchunk + c) * D + d;
            if (final) {
                ta = (T)((double)ta * scale);
                tab = (T)((double)tab * scale);
            }
            if (pa) pa[q] = ta;
            if (pab) pab[q] = tab;
        }
        __syncthreads();
    }
}

template <typename T>
__global__ void k_colsum_fin(T *out, const T *part, int64_t outer, int64_t D, int nchunk, double scale)
{
    SQ_GRID_LOOP(j, outer * D) {
        int64_t o = j / D, d = j % D;
        const T *p = part + o * nchunk * D + d;
        T acc = 0;
        for (int c = 0; c < nchunk; c++) acc += p[(int64_t)c * D];
        out[j] = (T)((double)acc * scale);
    }
}

template <typename T>
static void colsum_launch(cudaStream_t s, T *sa, T *sab, T *wa, T *wab, const T *a, const T *b,
                          int64_t outer, int64_t rows, int64_t D, int64_t chunk, int nchunk,
                          double scale)
{
    unsigned tiles = (unsigned)((D + CS_X - 1) / CS_X);
    unsigned gz = (unsigned)(outer < 65535 ? outer : 65535);
    dim3 grid(tiles, (unsigned)nchunk, gz), block(CS_X, CS_Y);
    if (nchunk == 1) {
        k_colsum_part<T><<<grid, block, 0, s>>>(sa, sab, a, sab ? b : NULL, outer, rows, D, chunk, 1, scale, 1);
        return;
    }
    k_colsum_part<T><<<grid, block, 0, s>>>(sa ? wa : NULL, sab ? wab : NULL, a, sab ? b : NULL, outer,
                                            rows, D, chunk, nchunk, scale, 0);
    unsigned gr = sq_cuda_grid(outer * D, THREADS);
    if (sa) k_colsum_fin<T><<<gr, THREADS, 0, s>>>(sa, wa, outer, D, nchunk, scale);
    if (sab) k_colsum_fin<T><<<gr, THREADS, 0, s>>>(sab, wab, outer, D, nchunk, scale);
}

sq_status sq_cuda_colsum(sq_ctx *ctx, sq_dtype dt, void *sum_a, void *sum_ab, const void *a,
                         const void *b, int64_t outer, int64_t rows, int64_t D, double scale)
{
    if (outer * D == 0 || (!sum_a && !sum_ab)) return SQ_OK;
    if (sum_ab && !b) return sq_fail(ctx, SQ_ERR_ARG, "colsum: a product sum needs b");
    int64_t tiles = (D + CS_X - 1) / CS_X, want = 4 * (int64_t)ctx->cuda->sm_count;
    int64_t nchunk = 1;
    if (tiles * outer < want) {
        nchunk = (want + tiles * outer - 1) / (tiles * outer);
        int64_t maxc = (rows + 4 * CS_Y - 1) / (4 * CS_Y); /* at least 4 rows per lane */
        if (nchunk > maxc) nchunk = maxc;
        if (nchunk > 1024) nchunk = 1024;
        if (nchunk < 1) nchunk = 1;
    }
    int64_t chunk = nchunk > 0 ? (rows + nchunk - 1) / nchunk : rows;
    if (chunk < 1) chunk = 1;
    nchunk = rows > 0 ? (rows + chunk - 1) / chunk : 1;
    size_t es = sq_dtype_size(dt), one = (size_t)(outer * nchunk * D) * es;
    void *ws = NULL;
    size_t wsb = nchunk > 1 ? one * ((sum_a ? 1 : 0) + (sum_ab ? 1 : 0)) : 0;
    if (wsb) SQ_TRY(sq_cuda_ws_alloc(ctx, wsb, &ws));
    char *wa = (char *)ws, *wab = (char *)ws + (sum_a ? one : 0);
    cudaStream_t s = ctx->cuda->stream;
    if (dt == SQ_F32)
        colsum_launch<float>(s, (float *)sum_a, (float *)sum_ab, (float *)wa, (float *)wab,
                             (const float *)a, (const float *)b, outer, rows, D, chunk, (int)nchunk, scale);
    else
        colsum_launch<double>(s, (double *)sum_a, (double *)sum_ab, (double *)wa, (double *)wab,
                              (const double *)a, (const double *)b, outer, rows, D, chunk, (int)nchunk,
                              scale);
    if (ws) sq_cuda_ws_free(ctx, ws, wsb); /* stream-ordered: reuse waits behind these kernels */
    return SQ_OK;
}

static const char *red_name(sq_cuda_red op)
{
    return op == SQ_CUDA_RED_SUM ? "sum" : op == SQ_CUDA_RED_MEAN ? "mean" : "max";
}

static unsigned row_threads(int64_t len)
{
    int64_t t = (len + 31) / 32 * 32;
    return (unsigned)(t < 32 ? 32 : t > THREADS ? THREADS : t);
}

sq_status sq_cuda_reduce_dim(sq_ctx *ctx, sq_cuda_red op, sq_dtype dt, void *out, int64_t *argmax,
                             const void *x, int64_t outer, int64_t len, int64_t inner,
                             const int64_t xs[3])
{
    const char *k = "reduce_dim";
    SQ_CUDA_ENTER(ctx, k);
    SQ_TRY(sq_cuda_need_float(ctx, k, dt));
    SQ_CUDA_NONNEG(ctx, k, outer);
    SQ_CUDA_NONNEG(ctx, k, len);
    SQ_CUDA_NONNEG(ctx, k, inner);
    if ((unsigned)op > SQ_CUDA_RED_MAX) return sq_fail(ctx, SQ_ERR_ARG, "%s: unknown op %d", k, (int)op);
    if (op == SQ_CUDA_RED_MAX && len == 0)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: max over an empty dim", k);
    if (outer * inner == 0) return SQ_OK;
    double scale = len ? 1.0 / (double)len : (double)NAN;
    cudaStream_t s = ctx->cuda->stream;
    if (inner == 1) {
        unsigned gr = (unsigned)(outer < (1 << 20) ? outer : (1 << 20)), th = row_threads(len);
        if (dt == SQ_F32)
            k_reduce_rows<float><<<gr, th, 0, s>>>(op, (float *)out, argmax, (const float *)x, outer,
                                                   len, xs[0], xs[1], scale);
        else
            k_reduce_rows<double><<<gr, th, 0, s>>>(op, (double *)out, argmax, (const double *)x,
                                                    outer, len, xs[0], xs[1], scale);
    } else if (op != SQ_CUDA_RED_MAX && xs[2] == 1 && xs[1] == inner && xs[0] == len * inner) {
        /* contiguous (outer, len, inner): tiled column sums, rows split over blocks */
        SQ_TRY(sq_cuda_colsum(ctx, dt, out, NULL, x, NULL, outer, len, inner,
                              op == SQ_CUDA_RED_MEAN ? scale : 1.0));
    } else {
        unsigned gr = sq_cuda_grid(outer * inner, THREADS);
        if (dt == SQ_F32)
            k_reduce_cols<float><<<gr, THREADS, 0, s>>>(op, (float *)out, argmax, (const float *)x,
                                                        outer, len, inner, xs[0], xs[1], xs[2], scale);
        else
            k_reduce_cols<double><<<gr, THREADS, 0, s>>>(op, (double *)out, argmax, (const double *)x,
                                                         outer, len, inner, xs[0], xs[1], xs[2], scale);
    }
    return sq_cuda_launched(ctx, k, "%s, outer %lld, len %lld, inner %lld, %s", red_name(op),
                            (long long)outer, (long long)len, (long long)inner, sq_dtype_name(dt));
}

/* ---- all elements ------------------------------------------------------------------------ */

/* pass 1: block b reduces its grid-stride slice into part[b] (pidx[b]) */
template <typename T>
__global__ void k_reduce_all_1(int op, T *part, int64_t *pidx, const T *x, int64_t n)
{
    __shared__ T sh[32];
    if (op == SQ_CUDA_RED_MAX) {
        T v = -sq_inf<T>();
        int64_t bi = LLONG_MAX;
        SQ_GRID_LOOP(i, n) if (better(x[i], i, v, bi)) {
            v = x[i];
            bi = i;
        }
        block_argmax(v, bi);
        if (threadIdx.x == 0) {
            part[blockIdx.x] = v;
            pidx[blockIdx.x] = bi;
        }
    } else {
        T acc = 0;
        SQ_GRID_LOOP(i, n) acc += x[i];
        acc = sq_block_sum(acc, sh);
        if (threadIdx.x == 0) part[blockIdx.x] = acc;
    }
}

/* pass 2: one block over the partials */
template <typename T>
__global__ void k_reduce_all_2(int op, T *out, int64_t *am, const T *part, const int64_t *pidx,
                               int nb, double scale)
{
    __shared__ T sh[32];
    if (op == SQ_CUDA_RED_MAX) {
        T v = -sq_inf<T>();
        int64_t bi = LLONG_MAX;
        for (int b = threadIdx.x; b < nb; b += blockDim.x)
            if (better(part[b], pidx[b], v, bi)) {
                v = part[b];
                bi = pidx[b];
            }
        block_argmax(v, bi);
        if (threadIdx.x == 0) {
            out[0] = v;
            if (am) am[0] = bi;
        }
    } else {
        T acc = 0;
        for (int b = threadIdx.x; b < nb; b += blockDim.x) acc += part[b];
        acc = sq_block_sum(acc, sh);
        if (threadIdx.x == 0) out[0] = op == SQ_CUDA_RED_MEAN ? finish_mean(acc, scale) : acc;
    }
}

sq_status sq_cuda_reduce_all(sq_ctx *ctx, sq_cuda_red op, sq_dtype dt, void *out, int64_t *argmax,
                             const void *x, int64_t n)
{
    const char *k = "reduce_all";
    SQ_CUDA_ENTER(ctx, k);
    SQ_TRY(sq_cuda_need_float(ctx, k, dt));
    SQ_CUDA_NONNEG(ctx, k, n);
    if ((unsigned)op > SQ_CUDA_RED_MAX) return sq_fail(ctx, SQ_ERR_ARG, "%s: unknown op %d", k, (int)op);
    if (op == SQ_CUDA_RED_MAX && n == 0) return sq_fail(ctx, SQ_ERR_ARG, "%s: max of an empty tensor", k);
    int64_t nb64 = (n + THREADS * 8 - 1) / (THREADS * 8);
    int nb = (int)(nb64 < 1 ? 1 : nb64 > 1024 ? 1024 : nb64);
    size_t es = sq_dtype_size(dt);
    size_t wsb = (size_t)nb * (es + sizeof(int64_t));
    void *ws = NULL;
    SQ_TRY(sq_cuda_ws_alloc(ctx, wsb, &ws));
    int64_t *pidx = (int64_t *)ws;
    void *part = (char *)ws + (size_t)nb * sizeof(int64_t);
    double scale = n ? 1.0 / (double)n : (double)NAN;
    cudaStream_t s = ctx->cuda->stream;
    if (dt == SQ_F32) {
        k_reduce_all_1<float><<<nb, THREADS, 0, s>>>(op, (float *)part, pidx, (const float *)x, n);
        k_reduce_all_2<float><<<1, 1024, 0, s>>>(op, (float *)out, argmax, (const float *)part, pidx, nb, scale);
    } else {
        k_reduce_all_1<double><<<nb, THREADS, 0, s>>>(op, (double *)part, pidx, (const double *)x, n);
        k_reduce_all_2<double><<<1, 1024, 0, s>>>(op, (double *)out, argmax, (const double *)part, pidx, nb, scale);
    }
    sq_status st = sq_cuda_launched(ctx, k, "%s, n %lld, %d blocks, %s", red_name(op), (long long)n,
                                    nb, sq_dtype_name(dt));
    sq_cuda_ws_free(ctx, ws, wsb); /* stream-ordered: reuse waits behind these kernels */
    return st;
}

/* ---- backward ------------------------------------------------------------------------------ */

template <typename T>
__global__ void k_reduce_bwd(int op, T *dx, const T *dy, const int64_t *am, int64_t outer,
                             int64_t len, int64_t inner, T scale, sq_cuda_devflag *flag)
{
    SQ_GRID_LOOP(j, outer * len * inner) {
        int64_t i = j % inner, t = j / inner, l = t % len, o = t / len;
        int64_t q = o * inner + i;
        T g = dy[q];
        if (op == SQ_CUDA_RED_SUM) dx[j] = g;
        else if (op == SQ_CUDA_RED_MEAN) dx[j] = g * scale;
        else {
            int64_t a = am[q];
            if (l == 0 && (a < 0 || a >= len)) sq_cuda_report_index(flag, SQ_CK_REDUCE_BWD, a, len);
            dx[j] = a == l ? g : (T)0;
        }
    }
}

sq_status sq_cuda_reduce_dim_bwd(sq_ctx *ctx, sq_cuda_red op, sq_dtype dt, void *dx, const void *dy,
                                 const int64_t *argmax, int64_t outer, int64_t len, int64_t inner)
{
    const char *k = "reduce_dim_bwd";
    SQ_CUDA_ENTER(ctx, k);
    SQ_TRY(sq_cuda_need_float(ctx, k, dt));
    SQ_CUDA_NONNEG(ctx, k, outer);
    SQ_CUDA_NONNEG(ctx, k, len);
    SQ_CUDA_NONNEG(ctx, k, inner);
    if ((unsigned)op > SQ_CUDA_RED_MAX) return sq_fail(ctx, SQ_ERR_ARG, "%s: unknown op %d", k, (int)op);
    if (op == SQ_CUDA_RED_MAX && !argmax) return sq_fail(ctx, SQ_ERR_ARG, "%s: max needs argmax", k);
    int64_t n = outer * len * inner;
    if (n == 0) return SQ_OK;
    double scale = 1.0 / (double)len;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32)
        k_reduce_bwd<float><<<gr, THREADS, 0, s>>>(op, (float *)dx, (const float *)dy, argmax, outer,
                                                   len, inner, (float)scale, ctx->cuda->flag);
    else
        k_reduce_bwd<double><<<gr, THREADS, 0, s>>>(op, (double *)dx, (const double *)dy, argmax,
                                                    outer, len, inner, scale, ctx->cuda->flag);
    return sq_cuda_launched(ctx, k, "%s, outer %lld, len %lld, inner %lld, %s", red_name(op),
                            (long long)outer, (long long)len, (long long)inner, sq_dtype_name(dt));
}
