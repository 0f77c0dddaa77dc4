/* sq_cuda_elementwise.cu — fill, strided copy, dtype conversion, broadcasting
 * binary ops, sum-to-shape, unary ops and their derivatives, dropout and the
 * fused optimizer steps.  One thread per element, grid-stride loops. */
#include "sq_cuda_internal.h"

#include <math.h>
#include <string.h>

#define THREADS 256

/* ---- strided geometry -------------------------------------------------------------
 * Up to 3 stride arrays over one shape.  Dims of size 1 are dropped and
 * neighbours that are contiguous with each other in every array are merged,
 * so a contiguous tensor becomes one dim and the index arithmetic shrinks. */
struct Geom {
    int nd;
    int64_t size[SQ_MAX_DIMS];
    int64_t st[3][SQ_MAX_DIMS];
};

static sq_status make_geom(sq_ctx *ctx, const char *k, int ndim, const int64_t *shape, int narr,
                           const int64_t *const *strides, Geom *g, int64_t *numel)
{
    if (ndim < 0 || ndim > SQ_MAX_DIMS)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: rank %d outside 0..%d", k, ndim, SQ_MAX_DIMS);
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return sq_fail(ctx, SQ_ERR_ARG, "%s: negative size %lld in dim %d", k, (long long)shape[d], d);
        n *= shape[d];
    }
    *numel = n;
    memset(g, 0, sizeof *g);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1) continue;
        int j = g->nd;
        if (j > 0) {
            int merge = 1;
            for (int a = 0; a < narr; a++)
                if (g->st[a][j - 1] != strides[a][d] * shape[d]) merge = 0;
            if (merge) {
                g->size[j - 1] *= shape[d];
                for (int a = 0; a < narr; a++) g->st[a][j - 1] = strides[a][d];
                continue;
            }
        }
        g->size[j] = shape[d];
        for (int a = 0; a < narr; a++) g->st[a][j] = strides[a][d];
        g->nd++;
    }
    return SQ_OK;
}

static void contiguous_strides(int ndim, const int64_t *shape, int64_t *st)
{
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        st[d] = s;
        s *= shape[d];
    }
}

/* offsets of linear index i (row-major over g.size) in the first NA arrays */
template <int NA>
__device__ static inline void geom_offsets(const Geom &g, int64_t i, int64_t *off)
{
    if (g.nd <= 1) { /* contiguous after merging: no division */
        for (int a = 0; a < NA; a++) off[a] = g.nd ? i * g.st[a][0] : 0;
        return;
    }
    for (int a = 0; a < NA; a++) off[a] = 0;
    for (int d = g.nd - 1; d >= 0; d--) {
        int64_t c = i % g.size[d];
        i /= g.size[d];
        for (int a = 0; a < NA; a++) off[a] += c * g.st[a][d];
    }
}

/* ---- float32, four at a time ---------------------------------------------------------
 * Contiguous float32 buffers that all start on 16 bytes move as float4: one
 * 16-byte load or store per four elements (a scalar kernel reaches about
 * two thirds of the copy bandwidth).  The n % 4 trailing elements are done
 * by the first threads of the grid. */
static inline bool al16(const void *p) { return ((uintptr_t)p & 15u) == 0; }
static inline unsigned grid4(int64_t n) { return sq_cuda_grid((n >> 2) > 0 ? (n >> 2) : 1, THREADS); }
#define SQ_TAIL4(j, n)                                                                       \
    for (int64_t j = ((n) & ~(int64_t)3) + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; \
         j < (n); j += (int64_t)gridDim.x * blockDim.x)
#define SQ_V4(v, OP) do { v.x = OP(v.x); v.y = OP(v.y); v.z = OP(v.z); v.w = OP(v.w); } while (0)

/* ---- fill, copy, convert ---------------------------------------------------------- */

template <typename T> __global__ void k_fill(T *out, int64_t n, T v)
{
    SQ_GRID_LOOP(i, n) out[i] = v;
}

sq_status sq_cuda_fill(sq_ctx *ctx, sq_dtype dt, void *out, int64_t n, double v)
{
    SQ_CUDA_ENTER(ctx, "fill");
    SQ_CUDA_NONNEG(ctx, "fill", n);
    if (n == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    switch (dt) {
    case SQ_F32: k_fill<float><<<gr, THREADS, 0, s>>>((float *)out, n, (float)v); break;
    case SQ_F64: k_fill<double><<<gr, THREADS, 0, s>>>((double *)out, n, v); break;
    case SQ_I32: k_fill<int32_t><<<gr, THREADS, 0, s>>>((int32_t *)out, n, (int32_t)v); break;
    case SQ_I64: k_fill<int64_t><<<gr, THREADS, 0, s>>>((int64_t *)out, n, (int64_t)v); break;
    default: return sq_fail(ctx, SQ_ERR_DTYPE, "fill: unknown dtype %d", (int)dt);
    }
    return sq_cuda_launched(ctx, "fill", "n %lld, %s", (long long)n, sq_dtype_name(dt));
}

template <typename T> __global__ void k_copy_strided(T *out, const T *src, Geom g, int64_t n)
{
    SQ_GRID_LOOP(i, n) {
        int64_t off[2];
        geom_offsets<2>(g, i, off);
        out[off[0]] = src[off[1]];
    }
}

sq_status sq_cuda_copy_strided(sq_ctx *ctx, sq_dtype dt, void *out, const int64_t *out_stride,
                               const void *src, const int64_t *src_stride, int ndim,
                               const int64_t *shape)
{
    const char *k = "copy_strided";
    SQ_CUDA_ENTER(ctx, k);
    size_t es = sq_dtype_size(dt);
    if (es == 0) return sq_fail(ctx, SQ_ERR_DTYPE, "%s: unknown dtype %d", k, (int)dt);
    int64_t cst[SQ_MAX_DIMS];
    if (ndim >= 0 && ndim <= SQ_MAX_DIMS) contiguous_strides(ndim, shape, cst);
    const int64_t *arr[2] = {out_stride ? out_stride : cst, src_stride ? src_stride : cst};
    Geom g;
    int64_t n = 0;
    SQ_TRY(make_geom(ctx, k, ndim, shape, 2, arr, &g, &n));
    if (n == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (es == 4) k_copy_strided<uint32_t><<<gr, THREADS, 0, s>>>((uint32_t *)out, (const uint32_t *)src, g, n);
    else k_copy_strided<uint64_t><<<gr, THREADS, 0, s>>>((uint64_t *)out, (const uint64_t *)src, g, n);
    return sq_cuda_launched(ctx, k, "n %lld, rank %d (merged %d), %s", (long long)n, ndim, g.nd,
                            sq_dtype_name(dt));
}

template <typename O, typename I> __global__ void k_convert(O *out, const I *src, int64_t n)
{
    SQ_GRID_LOOP(i, n) out[i] = (O)src[i];
}

template <typename O>
static void launch_convert(cudaStream_t s, unsigned gr, O *out, sq_dtype src_dt, const void *src, int64_t n)
{
    switch (src_dt) {
    case SQ_F32: k_convert<O, float><<<gr, THREADS, 0, s>>>(out, (const float *)src, n); break;
    case SQ_F64: k_convert<O, double><<<gr, THREADS, 0, s>>>(out, (const double *)src, n); break;
    case SQ_I32: k_convert<O, int32_t><<<gr, THREADS, 0, s>>>(out, (const int32_t *)src, n); break;
    default: k_convert<O, int64_t><<<gr, THREADS, 0, s>>>(out, (const int64_t *)src, n); break;
    }
}

sq_status sq_cuda_convert(sq_ctx *ctx, sq_dtype out_dt, void *out, sq_dtype src_dt,
                          const void *src, int64_t n)
{
    SQ_CUDA_ENTER(ctx, "convert");
    SQ_CUDA_NONNEG(ctx, "convert", n);
    if ((unsigned)out_dt >= SQ_NDTYPE || (unsigned)src_dt >= SQ_NDTYPE)
        return sq_fail(ctx, SQ_ERR_DTYPE, "convert: unknown dtype");
    if (n == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    switch (out_dt) {
    case SQ_F32: launch_convert<float>(s, gr, (float *)out, src_dt, src, n); break;
    case SQ_F64: launch_convert<double>(s, gr, (double *)out, src_dt, src, n); break;
    case SQ_I32: launch_convert<int32_t>(s, gr, (int32_t *)out, src_dt, src, n); break;
    default: launch_convert<int64_t>(s, gr, (int64_t *)out, src_dt, src, n); break;
    }
    return sq_cuda_launched(ctx, "convert", "n %lld, %s -> %s", (long long)n, sq_dtype_name(src_dt),
                            sq_dtype_name(out_dt));
}

/* ---- binary ------------------------------------------------------------------------ */

template <typename T> __device__ static inline T binop(int op, T a, T b)
{
    switch (op) {
    case SQ_BIN_ADD: return a + b;
    case SQ_BIN_SUB: return a - b;
    case SQ_BIN_MUL: return a * b;
    default: return a / b;
    }
}

/* g: arrays 0 = a, 1 = b; out contiguous */
template <typename T>
__global__ void k_binary(int op, T *out, const T *a, const T *b, Geom g, int64_t n)
{
    SQ_GRID_LOOP(i, n) {
        int64_t off[2];
        geom_offsets<2>(g, i, off);
        out[i] = binop(op, a[off[0]], b[off[1]]);
    }
}

/* all three contiguous float32 on 16 bytes */
__global__ void k_binary4(int op, float *out, const float *a, const float *b, int64_t n)
{
    SQ_GRID_LOOP(i, n >> 2) {
        float4 x = ((const float4 *)a)[i], y = ((const float4 *)b)[i];
        x.x = binop(op, x.x, y.x);
        x.y = binop(op, x.y, y.y);
        x.z = binop(op, x.z, y.z);
        x.w = binop(op, x.w, y.w);
        ((float4 *)out)[i] = x;
    }
    SQ_TAIL4(j, n) out[j] = binop(op, a[j], b[j]);
}

/* arrays 0 = out (contiguous), 1 = a, 2 = b: out index is not i after merging */
template <typename T>
__global__ void k_binary_bwd(int op, T *da, T *db, const T *dy, const T *a, const T *b, Geom g,
                             int64_t n)
{
    SQ_GRID_LOOP(i, n) {
        T d = dy[i];
        int64_t off[3] = {i, 0, 0};
        if (op == SQ_BIN_MUL || op == SQ_BIN_DIV) geom_offsets<3>(g, i, off);
        T ga, gb;
        switch (op) {
        case SQ_BIN_ADD: ga = d; gb = d; break;
        case SQ_BIN_SUB: ga = d; gb = -d; break;
        case SQ_BIN_MUL: ga = d * b[off[2]]; gb = d * a[off[1]]; break;
        default: {
            T bv = b[off[2]];
            ga = d / bv;
            gb = -d * a[off[1]] / (bv * bv);
        }
        }
        if (da) da[i] = ga;
        if (db) db[i] = gb;
    }
}

static const char *binop_name(sq_binop op)
{
    static const char *const n[] = {"add", "sub", "mul", "div"};
    return (unsigned)op < 4 ? n[op] : "?";
}

sq_status sq_cuda_binary(sq_ctx *ctx, sq_binop op, sq_dtype dt, void *out, const void *a,
                         const int64_t *a_stride, const void *b, const int64_t *b_stride,
                         int ndim, const int64_t *shape)
{
    const char *k = "binary";
    SQ_CUDA_ENTER(ctx, k);
    SQ_TRY(sq_cuda_need_float(ctx, k, dt));
    if ((unsigned)op > SQ_BIN_DIV) return sq_fail(ctx, SQ_ERR_ARG, "%s: unknown op %d", k, (int)op);
    /* merging needs out's strides too: keep out contiguous by merging over (out, a, b) */
    int64_t cst[SQ_MAX_DIMS];
    if (ndim >= 0 && ndim <= SQ_MAX_DIMS) contiguous_strides(ndim, shape, cst);
    const int64_t *arr[3] = {cst, a_stride, b_stride};
    Geom g3, g;
    int64_t n = 0;
    SQ_TRY(make_geom(ctx, k, ndim, shape, 3, arr, &g3, &n));
    if (n == 0) return SQ_OK;
    g.nd = g3.nd;
    for (int d = 0; d < g3.nd; d++) {
        g.size[d] = g3.size[d];
        g.st[0][d] = g3.st[1][d];
        g.st[1][d] = g3.st[2][d];
        g.st[2][d] = 0;
    }
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    int flat = g.nd == 0 || (g.nd == 1 && g.st[0][0] == 1 && g.st[1][0] == 1);
    if (dt == SQ_F32 && flat && g.nd == 1 && al16(out) && al16(a) && al16(b))
        k_binary4<<<grid4(n), THREADS, 0, s>>>(op, (float *)out, (const float *)a, (const float *)b, n);
    else if (dt == SQ_F32)
        k_binary<float><<<gr, THREADS, 0, s>>>(op, (float *)out, (const float *)a, (const float *)b, g, n);
    else
        k_binary<double><<<gr, THREADS, 0, s>>>(op, (double *)out, (const double *)a, (const double *)b, g, n);
    return sq_cuda_launched(ctx, k, "%s, n %lld, rank %d, %s", binop_name(op), (long long)n, ndim,
                            sq_dtype_name(dt));
}

sq_status sq_cuda_binary_bwd(sq_ctx *ctx, sq_binop op, sq_dtype dt, void *da, void *db,
                             const void *dy, const void *a, const int64_t *a_stride,
                             const void *b, const int64_t *b_stride, int ndim,
                             const int64_t *shape)
{
    const char *k = "binary_bwd";
    SQ_CUDA_ENTER(ctx, k);
    SQ_TRY(sq_cuda_need_float(ctx, k, dt));
    if ((unsigned)op > SQ_BIN_DIV) return sq_fail(ctx, SQ_ERR_ARG, "%s: unknown op %d", k, (int)op);
    int needs_ab = op == SQ_BIN_MUL || op == SQ_BIN_DIV;
    if (needs_ab && (!a || !b || !a_stride || !b_stride))
        return sq_fail(ctx, SQ_ERR_ARG, "%s: %s needs both operands", k, binop_name(op));
    int64_t cst[SQ_MAX_DIMS];
    if (ndim >= 0 && ndim <= SQ_MAX_DIMS) contiguous_strides(ndim, shape, cst);
    const int64_t *arr[3] = {cst, needs_ab ? a_stride : cst, needs_ab ? b_stride : cst};
    Geom g;
    int64_t n = 0;
    SQ_TRY(make_geom(ctx, k, ndim, shape, 3, arr, &g, &n));
    if (n == 0 || (!da && !db)) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32)
        k_binary_bwd<float><<<gr, THREADS, 0, s>>>(op, (float *)da, (float *)db, (const float *)dy,
                                                   (const float *)a, (const float *)b, g, n);
    else
        k_binary_bwd<double><<<gr, THREADS, 0, s>>>(op, (double *)da, (double *)db, (const double *)dy,
                                                    (const double *)a, (const double *)b, g, n);
    return sq_cuda_launched(ctx, k, "%s, n %lld, rank %d, %s", binop_name(op), (long long)n, ndim,
                            sq_dtype_name(dt));
}

/* ---- sum to shape --------------------------------------------------------------------- */

struct SumTo {
    int nk, nr;
    int64_t ksize[SQ_MAX_DIMS], kin[SQ_MAX_DIMS], kout[SQ_MAX_DIMS];
    int64_t rsize[SQ_MAX_DIMS], rin[SQ_MAX_DIMS];
    int64_t rcount;
};

/* one thread per output element; sums its reduced positions in a fixed order */
template <typename T> __global__ void k_sum_to(T *out, const T *in, SumTo g, int64_t nout)
{
    SQ_GRID_LOOP(j, nout) {
        int64_t t = j, base = 0, ooff = 0;
        for (int d = g.nk - 1; d >= 0; d--) {
            int64_t c = t % g.ksize[d];
            t /= g.ksize[d];
            base += c * g.kin[d];
            ooff += c * g.kout[d];
        }
        T acc = 0;
        for (int64_t r = 0; r < g.rcount; r++) {
            int64_t u = r, off = base;
            for (int d = g.nr - 1; d >= 0; d--) {
                int64_t c = u % g.rsize[d];
                u /= g.rsize[d];
                off += c * g.rin[d];
            }
            acc += in[off];
        }
        out[ooff] = acc;
    }
}

sq_status sq_cuda_sum_to(sq_ctx *ctx, sq_dtype dt, void *out, const int64_t *out_stride,
                         const void *in, int ndim, const int64_t *shape)
{
    const char *k = "sum_to";
    SQ_CUDA_ENTER(ctx, k);
    SQ_TRY(sq_cuda_need_float(ctx, k, dt));
    if (ndim < 0 || ndim > SQ_MAX_DIMS)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: rank %d outside 0..%d", k, ndim, SQ_MAX_DIMS);
    int64_t ist[SQ_MAX_DIMS];
    contiguous_strides(ndim, shape, ist);
    SumTo g;
    memset(&g, 0, sizeof g);
    int64_t nout = 1, nin = 1;
    g.rcount = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return sq_fail(ctx, SQ_ERR_ARG, "%s: negative size in dim %d", k, d);
        nin *= shape[d];
        if (out_stride[d] == 0 && shape[d] != 1) {
            g.rsize[g.nr] = shape[d];
            g.rin[g.nr++] = ist[d];
            g.rcount *= shape[d];
        } else {
            g.ksize[g.nk] = shape[d];
            g.kin[g.nk] = ist[d];
            g.kout[g.nk++] = out_stride[d];
            nout *= shape[d];
        }
    }
    if (nout == 0) return SQ_OK;
    /* The common case -- the summed dims form one block, kept dims around it
     * laid out row-major in out (bias and broadcast gradients) -- is a
     * column sum (outer, rows, inner), done in parallel over the rows. */
    int64_t outer = 1, rows = 1, inner = 1, expect = 1;
    int phase = 0, block = 1; /* 0: before the summed block, 1: in it, 2: after it */
    for (int d = ndim - 1; d >= 0 && block; d--) { /* out must be row-major over kept dims */
        if (shape[d] == 1 || (out_stride[d] == 0)) continue;
        if (out_stride[d] != expect) block = 0;
        expect *= shape[d];
    }
    for (int d = 0; d < ndim && block; d++) {
        if (shape[d] == 1) continue;
        int red = out_stride[d] == 0;
        if (red && phase == 2) block = 0;
        else if (red) { phase = 1; rows *= shape[d]; }
        else if (phase == 0) outer *= shape[d];
        else { phase = 2; inner *= shape[d]; }
    }
    if (block && g.nr > 0) {
        if (inner == 1) {
            int64_t xs[3] = {rows, 1, 1};
            return sq_cuda_reduce_dim(ctx, SQ_CUDA_RED_SUM, dt, out, NULL, in, outer, rows, 1, xs);
        }
        SQ_TRY(sq_cuda_colsum(ctx, dt, out, NULL, in, NULL, outer, rows, inner, 1.0));
        return sq_cuda_launched(ctx, k, "in %lld -> out %lld as colsum (%lld, %lld, %lld), %s",
                                (long long)nin, (long long)nout, (long long)outer, (long long)rows,
                                (long long)inner, sq_dtype_name(dt));
    }
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(nout, THREADS);
    if (dt == SQ_F32) k_sum_to<float><<<gr, THREADS, 0, s>>>((float *)out, (const float *)in, g, nout);
    else k_sum_to<double><<<gr, THREADS, 0, s>>>((double *)out, (const double *)in, g, nout);
    return sq_cuda_launched(ctx, k, "in %lld -> out %lld, rank %d, %s", (long long)nin,
                            (long long)nout, ndim, sq_dtype_name(dt));
}

/* ---- scalar maps ------------------------------------------------------------------------ */

__device__ static inline float f_exp(float x) { return expf(x); }
__device__ static inline double f_exp(double x) { return exp(x); }
__device__ static inline float f_log(float x) { return logf(x); }
__device__ static inline double f_log(double x) { return log(x); }
__device__ static inline float f_sqrt(float x) { return sqrtf(x); }
__device__ static inline double f_sqrt(double x) { return sqrt(x); }
__device__ static inline float f_abs(float x) { return fabsf(x); }
__device__ static inline double f_abs(double x) { return fabs(x); }
__device__ static inline float f_tanh(float x) { return tanhf(x); }
__device__ static inline double f_tanh(double x) { return tanh(x); }
__device__ static inline float f_erf(float x) { return erff(x); }
__device__ static inline double f_erf(double x) { return erf(x); }
__device__ static inline float f_pow(float x, float p) { return powf(x, p); }
__device__ static inline double f_pow(double x, double p) { return pow(x, p); }

template <typename T> __global__ void k_scale_shift(T *y, const T *x, int64_t n, T mul, T add)
{
    SQ_GRID_LOOP(i, n) y[i] = x[i] * mul + add;
}

__global__ void k_scale_shift4(float *y, const float *x, int64_t n, float mul, float add)
{
    SQ_GRID_LOOP(i, n >> 2) {
        float4 v = ((const float4 *)x)[i];
#define SS_(e) ((e) * mul + add)
        SQ_V4(v, SS_);
#undef SS_
        ((float4 *)y)[i] = v;
    }
    SQ_TAIL4(j, n) y[j] = x[j] * mul + add;
}

sq_status sq_cuda_scale_shift(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, int64_t n,
                              double mul, double add)
{
    SQ_CUDA_ENTER(ctx, "scale_shift");
    SQ_TRY(sq_cuda_need_float(ctx, "scale_shift", dt));
    SQ_CUDA_NONNEG(ctx, "scale_shift", n);
    if (n == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32 && al16(y) && al16(x))
        k_scale_shift4<<<grid4(n), THREADS, 0, s>>>((float *)y, (const float *)x, n, (float)mul, (float)add);
    else if (dt == SQ_F32)
        k_scale_shift<float><<<gr, THREADS, 0, s>>>((float *)y, (const float *)x, n, (float)mul, (float)add);
    else
        k_scale_shift<double><<<gr, THREADS, 0, s>>>((double *)y, (const double *)x, n, mul, add);
    return sq_cuda_launched(ctx, "scale_shift", "n %lld, %s", (long long)n, sq_dtype_name(dt));
}

template <typename T> __global__ void k_pow(T *y, const T *x, int64_t n, T p)
{
    SQ_GRID_LOOP(i, n) y[i] = f_pow(x[i], p);
}
template <typename T> __global__ void k_pow_bwd(T *dx, const T *dy, const T *x, int64_t n, T p)
{
    SQ_GRID_LOOP(i, n) dx[i] = dy[i] * p * f_pow(x[i], p - (T)1);
}

sq_status sq_cuda_pow_scalar(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, int64_t n, double p)
{
    SQ_CUDA_ENTER(ctx, "pow_scalar");
    SQ_TRY(sq_cuda_need_float(ctx, "pow_scalar", dt));
    SQ_CUDA_NONNEG(ctx, "pow_scalar", n);
    if (n == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32) k_pow<float><<<gr, THREADS, 0, s>>>((float *)y, (const float *)x, n, (float)p);
    else k_pow<double><<<gr, THREADS, 0, s>>>((double *)y, (const double *)x, n, p);
    return sq_cuda_launched(ctx, "pow_scalar", "n %lld, p %g, %s", (long long)n, p, sq_dtype_name(dt));
}

sq_status sq_cuda_pow_scalar_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dy,
                                 const void *x, int64_t n, double p)
{
    SQ_CUDA_ENTER(ctx, "pow_scalar_bwd");
    SQ_TRY(sq_cuda_need_float(ctx, "pow_scalar_bwd", dt));
    SQ_CUDA_NONNEG(ctx, "pow_scalar_bwd", n);
    if (n == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32)
        k_pow_bwd<float><<<gr, THREADS, 0, s>>>((float *)dx, (const float *)dy, (const float *)x, n, (float)p);
    else
        k_pow_bwd<double><<<gr, THREADS, 0, s>>>((double *)dx, (const double *)dy, (const double *)x, n, p);
    return sq_cuda_launched(ctx, "pow_scalar_bwd", "n %lld, p %g, %s", (long long)n, p, sq_dtype_name(dt));
}

/* ---- unary ------------------------------------------------------------------------------ */

#define SQ_RSQRT2 0.70710678118654752440
#define SQ_RSQRT2PI 0.39894228040143267794

template <typename T> __device__ static inline T unary_f(int op, T x)
{
    switch (op) {
    case SQ_UN_NEG: return -x;
    case SQ_UN_EXP: return f_exp(x);
    case SQ_UN_LOG: return f_log(x);
    case SQ_UN_SQRT: return f_sqrt(x);
    case SQ_UN_ABS: return f_abs(x);
    case SQ_UN_RELU: return x > 0 ? x : (T)0;
    case SQ_UN_GELU: return (T)0.5 * x * ((T)1 + f_erf(x * (T)SQ_RSQRT2));
    case SQ_UN_SIGMOID: return (T)1 / ((T)1 + f_exp(-x));
    default: return f_tanh(x);
    }
}

/* derivative from the saved value s (input or output, see the header) */
template <typename T> __device__ static inline T unary_d(int op, T s)
{
    switch (op) {
    case SQ_UN_NEG: return (T)-1;
    case SQ_UN_EXP: return s;
    case SQ_UN_LOG: return (T)1 / s;
    case SQ_UN_SQRT: return (T)0.5 / s;
    case SQ_UN_ABS: return s > 0 ? (T)1 : s < 0 ? (T)-1 : (T)0;
    case SQ_UN_RELU: return s > 0 ? (T)1 : (T)0;
    case SQ_UN_GELU:
        return (T)0.5 * ((T)1 + f_erf(s * (T)SQ_RSQRT2)) + s * (T)SQ_RSQRT2PI * f_exp((T)-0.5 * s * s);
    case SQ_UN_SIGMOID: return s * ((T)1 - s);
    default: return (T)1 - s * s;
    }
}

template <typename T> __global__ void k_unary(int op, T *y, const T *x, int64_t n)
{
    SQ_GRID_LOOP(i, n) y[i] = unary_f(op, x[i]);
}
template <typename T> __global__ void k_unary_bwd(int op, T *dx, const T *dy, const T *s, int64_t n)
{
    SQ_GRID_LOOP(i, n) dx[i] = dy[i] * unary_d(op, s[i]);
}

__global__ void k_unary4(int op, float *y, const float *x, int64_t n)
{
    SQ_GRID_LOOP(i, n >> 2) {
        float4 v = ((const float4 *)x)[i];
#define UF_(e) unary_f<float>(op, (e))
        SQ_V4(v, UF_);
#undef UF_
        ((float4 *)y)[i] = v;
    }
    SQ_TAIL4(j, n) y[j] = unary_f<float>(op, x[j]);
}

__global__ void k_unary_bwd4(int op, float *dx, const float *dy, const float *s, int64_t n)
{
    SQ_GRID_LOOP(i, n >> 2) {
        float4 g = ((const float4 *)dy)[i], v = ((const float4 *)s)[i];
        g.x *= unary_d<float>(op, v.x);
        g.y *= unary_d<float>(op, v.y);
        g.z *= unary_d<float>(op, v.z);
        g.w *= unary_d<float>(op, v.w);
        ((float4 *)dx)[i] = g;
    }
    SQ_TAIL4(j, n) dx[j] = dy[j] * unary_d<float>(op, s[j]);
}

int sq_cuda_unary_bwd_uses_output(sq_unop op)
{
    return op == SQ_UN_EXP || op == SQ_UN_SQRT || op == SQ_UN_SIGMOID || op == SQ_UN_TANH;
}

sq_status sq_cuda_unary(sq_ctx *ctx, sq_unop op, sq_dtype dt, void *y, const void *x, int64_t n)
{
    SQ_CUDA_ENTER(ctx, "unary");
    SQ_TRY(sq_cuda_need_float(ctx, "unary", dt));
    SQ_CUDA_NONNEG(ctx, "unary", n);
    if ((unsigned)op >= SQ_UN_COUNT) return sq_fail(ctx, SQ_ERR_ARG, "unary: unknown op %d", (int)op);
    if (n == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32 && al16(y) && al16(x)) k_unary4<<<grid4(n), THREADS, 0, s>>>(op, (float *)y, (const float *)x, n);
    else if (dt == SQ_F32) k_unary<float><<<gr, THREADS, 0, s>>>(op, (float *)y, (const float *)x, n);
    else k_unary<double><<<gr, THREADS, 0, s>>>(op, (double *)y, (const double *)x, n);
    return sq_cuda_launched(ctx, "unary", "%s, n %lld, %s", sq_unop_name(op), (long long)n,
                            sq_dtype_name(dt));
}

sq_status sq_cuda_unary_bwd(sq_ctx *ctx, sq_unop op, sq_dtype dt, void *dx, const void *dy,
                            const void *sv, int64_t n)
{
    SQ_CUDA_ENTER(ctx, "unary_bwd");
    SQ_TRY(sq_cuda_need_float(ctx, "unary_bwd", dt));
    SQ_CUDA_NONNEG(ctx, "unary_bwd", n);
    if ((unsigned)op >= SQ_UN_COUNT) return sq_fail(ctx, SQ_ERR_ARG, "unary_bwd: unknown op %d", (int)op);
    if (n == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32 && al16(dx) && al16(dy) && al16(sv))
        k_unary_bwd4<<<grid4(n), THREADS, 0, s>>>(op, (float *)dx, (const float *)dy, (const float *)sv, n);
    else if (dt == SQ_F32)
        k_unary_bwd<float><<<gr, THREADS, 0, s>>>(op, (float *)dx, (const float *)dy, (const float *)sv, n);
    else
        k_unary_bwd<double><<<gr, THREADS, 0, s>>>(op, (double *)dx, (const double *)dy, (const double *)sv, n);
    return sq_cuda_launched(ctx, "unary_bwd", "%s, n %lld, %s", sq_unop_name(op), (long long)n,
                            sq_dtype_name(dt));
}

/* ---- dropout ------------------------------------------------------------------------------ */

/* one thread per Philox block of 4 elements; keep iff the 32-bit draw >= thresh */
template <typename T>
__global__ void k_dropout(T *y, uint8_t *mask, const T *x, int64_t n, unsigned k0, unsigned k1,
                          unsigned o0, unsigned o1, unsigned thresh, int drop_all, T scale)
{
    int64_t nq = (n + 3) / 4;
    SQ_GRID_LOOP(q, nq) {
        unsigned ctr[4] = {(unsigned)q, (unsigned)((uint64_t)q >> 32), o0, o1}, key[2] = {k0, k1}, r[4];
        sq_philox4x32_10(ctr, key, r);
        for (int l = 0; l < 4; l++) {
            int64_t i = q * 4 + l;
            if (i >= n) break;
            int keep = !drop_all && r[l] >= thresh;
            mask[i] = (uint8_t)keep;
            y[i] = keep ? x[i] * scale : (T)0;
        }
    }
}

template <typename T>
__global__ void k_dropout_bwd(T *dx, const T *dy, const uint8_t *mask, int64_t n, T scale)
{
    SQ_GRID_LOOP(i, n) dx[i] = mask[i] ? dy[i] * scale : (T)0;
}

sq_status sq_cuda_dropout(sq_ctx *ctx, sq_dtype dt, void *y, uint8_t *mask, const void *x,
                          int64_t n, double p)
{
    SQ_CUDA_ENTER(ctx, "dropout");
    SQ_TRY(sq_cuda_need_float(ctx, "dropout", dt));
    SQ_CUDA_NONNEG(ctx, "dropout", n);
    if (!(p >= 0 && p <= 1)) return sq_fail(ctx, SQ_ERR_ARG, "dropout: p = %g must be in [0, 1]", p);
    sq_cuda_ctx *cu = ctx->cuda;
    uint64_t seed = cu->rng_seed, off = cu->rng_offset++;
    if (n == 0) return SQ_OK;
    int drop_all = p >= 1;
    unsigned thresh = drop_all ? 0u : (unsigned)floor(p * 4294967296.0);
    double scale = drop_all ? 0.0 : 1.0 / (1.0 - p);
    cudaStream_t s = cu->stream;
    unsigned gr = sq_cuda_grid((n + 3) / 4, THREADS);
    unsigned k0 = (unsigned)seed, k1 = (unsigned)(seed >> 32), o0 = (unsigned)off, o1 = (unsigned)(off >> 32);
    if (dt == SQ_F32)
        k_dropout<float><<<gr, THREADS, 0, s>>>((float *)y, mask, (const float *)x, n, k0, k1, o0, o1,
                                                thresh, drop_all, (float)scale);
    else
        k_dropout<double><<<gr, THREADS, 0, s>>>((double *)y, mask, (const double *)x, n, k0, k1, o0,
                                                 o1, thresh, drop_all, scale);
    return sq_cuda_launched(ctx, "dropout", "n %lld, p %g, %s", (long long)n, p, sq_dtype_name(dt));
}

sq_status sq_cuda_dropout_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dy,
                              const uint8_t *mask, int64_t n, double p)
{
    SQ_CUDA_ENTER(ctx, "dropout_bwd");
    SQ_TRY(sq_cuda_need_float(ctx, "dropout_bwd", dt));
    SQ_CUDA_NONNEG(ctx, "dropout_bwd", n);
    if (!(p >= 0 && p <= 1)) return sq_fail(ctx, SQ_ERR_ARG, "dropout_bwd: p = %g must be in [0, 1]", p);
    if (n == 0) return SQ_OK;
    double scale = p >= 1 ? 0.0 : 1.0 / (1.0 - p);
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32)
        k_dropout_bwd<float><<<gr, THREADS, 0, s>>>((float *)dx, (const float *)dy, mask, n, (float)scale);
    else
        k_dropout_bwd<double><<<gr, THREADS, 0, s>>>((double *)dx, (const double *)dy, mask, n, scale);
    return sq_cuda_launched(ctx, "dropout_bwd", "n %lld, p %g, %s", (long long)n, p, sq_dtype_name(dt));
}

/* ---- optimizers ---------------------------------------------------------------------------- */

/* Same expression order as engine/sq_optim.c: (bm, bk) = (0, 1) on the first update. */
template <typename T>
__global__ void k_sgd(T *p, T *buf, const T *g, int64_t n, T lr, T wd, T mu, T bm, T bk, int nesterov)
{
    SQ_GRID_LOOP(i, n) {
        if (!buf) {
            p[i] -= lr * (g[i] + wd * p[i]);
        } else if (nesterov) {
            T d = g[i] + wd * p[i];
            T b = bm * buf[i] + bk * d;
            buf[i] = b;
            p[i] -= lr * (d + mu * b);
        } else {
            T b = bm * buf[i] + bk * (g[i] + wd * p[i]);
            buf[i] = b;
            p[i] -= lr * b;
        }
    }
}

template <typename T>
__global__ void k_adamw(T *p, T *m, T *v, const T *g, int64_t n, T a1, T b2, T a2, T eps, T dec,
                        T st, T r2)
{
    SQ_GRID_LOOP(i, n) {
        T gi = g[i];
        T mi = m[i] + a1 * (gi - m[i]);
        T vi = b2 * v[i] + a2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * dec - st * mi / (f_sqrt(vi) * r2 + eps);
    }
}

sq_status sq_cuda_sgd_step(sq_ctx *ctx, sq_dtype dt, void *p, void *buf, const void *g, int64_t n,
                           double lr, double momentum, double dampening, double weight_decay,
                           int nesterov, int first)
{
    SQ_CUDA_ENTER(ctx, "sgd_step");
    SQ_TRY(sq_cuda_need_float(ctx, "sgd_step", dt));
    SQ_CUDA_NONNEG(ctx, "sgd_step", n);
    if (momentum != 0 && !buf)
        return sq_fail(ctx, SQ_ERR_ARG, "sgd_step: momentum %g needs a buffer", momentum);
    if (momentum == 0) buf = NULL;
    if (n == 0) return SQ_OK;
    double bm = first ? 0.0 : momentum, bk = first ? 1.0 : 1.0 - dampening;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32)
        k_sgd<float><<<gr, THREADS, 0, s>>>((float *)p, (float *)buf, (const float *)g, n, (float)lr,
                                            (float)weight_decay, (float)momentum, (float)bm, (float)bk,
                                            nesterov);
    else
        k_sgd<double><<<gr, THREADS, 0, s>>>((double *)p, (double *)buf, (const double *)g, n, lr,
                                             weight_decay, momentum, bm, bk, nesterov);
    return sq_cuda_launched(ctx, "sgd_step", "n %lld, %s", (long long)n, sq_dtype_name(dt));
}

sq_status sq_cuda_adamw_step(sq_ctx *ctx, sq_dtype dt, void *p, void *m, void *v, const void *g,
                             int64_t n, double lr, double beta1, double beta2, double eps,
                             double weight_decay, int64_t t)
{
    SQ_CUDA_ENTER(ctx, "adamw_step");
    SQ_TRY(sq_cuda_need_float(ctx, "adamw_step", dt));
    SQ_CUDA_NONNEG(ctx, "adamw_step", n);
    if (t < 1) return sq_fail(ctx, SQ_ERR_ARG, "adamw_step: step number %lld must be >= 1", (long long)t);
    if (n == 0) return SQ_OK;
    /* bias corrections in double once per call, as on the CPU */
    double decay = 1.0 - lr * weight_decay;
    double step = lr / (1.0 - pow(beta1, (double)t));
    double rbc2 = 1.0 / sqrt(1.0 - pow(beta2, (double)t));
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32)
        k_adamw<float><<<gr, THREADS, 0, s>>>((float *)p, (float *)m, (float *)v, (const float *)g, n,
                                              (float)(1.0 - beta1), (float)beta2, (float)(1.0 - beta2),
                                              (float)eps, (float)decay, (float)step, (float)rbc2);
    else
        k_adamw<double><<<gr, THREADS, 0, s>>>((double *)p, (double *)m, (double *)v, (const double *)g,
                                               n, 1.0 - beta1, beta2, 1.0 - beta2, eps, decay, step, rbc2);
    return sq_cuda_launched(ctx, "adamw_step", "n %lld, t %lld, %s", (long long)n, (long long)t,
                            sq_dtype_name(dt));
}
