/* sq_cuda_index.cu — concat and its backward (strided copies), index_select
 * and gather with their scatter-add backward. */
#include "sq_cuda_internal.h"

#define THREADS 256

/* ---- concat ----------------------------------------------------------------------------------- */

static sq_status check_concat(sq_ctx *ctx, const char *k, sq_dtype dt, int n, const int64_t *lens,
                              int64_t outer, int64_t inner, int64_t *total)
{
    SQ_CUDA_ENTER(ctx, k);
    if (sq_dtype_size(dt) == 0) return sq_fail(ctx, SQ_ERR_DTYPE, "%s: unknown dtype %d", k, (int)dt);
    if (n < 0 || outer < 0 || inner < 0)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: negative size (n %d, outer %lld, inner %lld)", k, n,
                       (long long)outer, (long long)inner);
    int64_t t = 0;
    for (int i = 0; i < n; i++) {
        if (lens[i] < 0) return sq_fail(ctx, SQ_ERR_ARG, "%s: input %d has length %lld", k, i, (long long)lens[i]);
        t += lens[i];
    }
    *total = t;
    return SQ_OK;
}

sq_status sq_cuda_concat(sq_ctx *ctx, sq_dtype dt, void *out, int n, const void *const *srcs,
                         const int64_t *lens, int64_t outer, int64_t inner)
{
    int64_t L = 0;
    SQ_TRY(check_concat(ctx, "concat", dt, n, lens, outer, inner, &L));
    size_t es = sq_dtype_size(dt);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t shape[3] = {outer, lens[i], inner}, os[3] = {L * inner, inner, 1};
        SQ_TRY(sq_cuda_copy_strided(ctx, dt, (char *)out + (size_t)(off * inner) * es, os, srcs[i],
                                    NULL, 3, shape));
        off += lens[i];
    }
    return SQ_OK;
}

sq_status sq_cuda_concat_bwd(sq_ctx *ctx, sq_dtype dt, void *const *dsrcs, const void *dout, int n,
                             const int64_t *lens, int64_t outer, int64_t inner)
{
    int64_t L = 0;
    SQ_TRY(check_concat(ctx, "concat_bwd", dt, n, lens, outer, inner, &L));
    size_t es = sq_dtype_size(dt);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t shape[3] = {outer, lens[i], inner}, ss[3] = {L * inner, inner, 1};
        if (dsrcs[i])
            SQ_TRY(sq_cuda_copy_strided(ctx, dt, dsrcs[i], NULL,
                                        (const char *)dout + (size_t)(off * inner) * es, ss, 3, shape));
        off += lens[i];
    }
    return SQ_OK;
}

/* ---- index_select -------------------------------------------------------------------------------- */

template <typename T>
__global__ void k_index_select(T *out, const T *x, const int64_t *idx, int64_t outer, int64_t len,
                               int64_t inner, int64_t m, sq_cuda_devflag *flag)
{
    SQ_GRID_LOOP(t, outer * m * inner) {
        int64_t i = t % inner, u = t / inner, j = u % m, o = u / m, v = idx[j];
        if (v < 0 || v >= len) {
            if (o == 0 && i == 0) sq_cuda_report_index(flag, SQ_CK_INDEX_SELECT, v, len);
            out[t] = sq_nan<T>();
        } else {
            out[t] = x[(o * len + v) * inner + i];
        }
    }
}

template <typename T>
__global__ void k_index_select_bwd(T *dx, const T *dout, const int64_t *idx, int64_t outer,
                                   int64_t len, int64_t inner, int64_t m, sq_cuda_devflag *flag)
{
    SQ_GRID_LOOP(t, outer * m * inner) {
        int64_t i = t % inner, u = t / inner, j = u % m, o = u / m, v = idx[j];
        if (v < 0 || v >= len) {
            if (o == 0 && i == 0) sq_cuda_report_index(flag, SQ_CK_INDEX_SELECT_BWD, v, len);
        } else {
            atomicAdd(&dx[(o * len + v) * inner + i], dout[t]);
        }
    }
}

#define IS_CHECK(name)                                                                       \
    SQ_CUDA_ENTER(ctx, name);                                                                \
    SQ_TRY(sq_cuda_need_float(ctx, name, dt));                                               \
    SQ_CUDA_NONNEG(ctx, name, outer);                                                        \
    SQ_CUDA_NONNEG(ctx, name, len);                                                          \
    SQ_CUDA_NONNEG(ctx, name, inner);                                                        \
    SQ_CUDA_NONNEG(ctx, name, m)

sq_status sq_cuda_index_select(sq_ctx *ctx, sq_dtype dt, void *out, const void *x,
                               const int64_t *idx, int64_t outer, int64_t len, int64_t inner,
                               int64_t m)
{
    IS_CHECK("index_select");
    int64_t n = outer * m * inner;
    if (n == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32)
        k_index_select<float><<<gr, THREADS, 0, s>>>((float *)out, (const float *)x, idx, outer, len,
                                                     inner, m, ctx->cuda->flag);
    else
        k_index_select<double><<<gr, THREADS, 0, s>>>((double *)out, (const double *)x, idx, outer,
                                                      len, inner, m, ctx->cuda->flag);
    return sq_cuda_launched(ctx, "index_select", "outer %lld, len %lld, inner %lld, m %lld, %s",
                            (long long)outer, (long long)len, (long long)inner, (long long)m,
                            sq_dtype_name(dt));
}

sq_status sq_cuda_index_select_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dout,
                                   const int64_t *idx, int64_t outer, int64_t len, int64_t inner,
                                   int64_t m)
{
    IS_CHECK("index_select_bwd");
    int64_t n = outer * m * inner;
    if (n == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32)
        k_index_select_bwd<float><<<gr, THREADS, 0, s>>>((float *)dx, (const float *)dout, idx, outer,
                                                         len, inner, m, ctx->cuda->flag);
    else
        k_index_select_bwd<double><<<gr, THREADS, 0, s>>>((double *)dx, (const double *)dout, idx,
                                                          outer, len, inner, m, ctx->cuda->flag);
    return sq_cuda_launched(ctx, "index_select_bwd", "outer %lld, len %lld, inner %lld, m %lld, %s",
                            (long long)outer, (long long)len, (long long)inner, (long long)m,
                            sq_dtype_name(dt));
}

/* ---- gather ---------------------------------------------------------------------------------------- */

struct GatherGeom {
    int nd, dim;
    int64_t size[SQ_MAX_DIMS], xs[SQ_MAX_DIMS];
    int64_t xlen;
};

/* offset in x of output position t, with idx value v along dim */
__device__ static inline int64_t gather_off(const GatherGeom &g, int64_t t, int64_t v)
{
    int64_t off = 0;
    for (int d = g.nd - 1; d >= 0; d--) {
        int64_t c = t % g.size[d];
        t /= g.size[d];
        off += (d == g.dim ? v : c) * g.xs[d];
    }
    return off;
}

template <typename T>
__global__ void k_gather(T *out, const T *x, const int64_t *idx, GatherGeom g, int64_t n,
                         sq_cuda_devflag *flag)
{
    SQ_GRID_LOOP(t, n) {
        int64_t v = idx[t];
        if (v < 0 || v >= g.xlen) {
            sq_cuda_report_index(flag, SQ_CK_GATHER, v, g.xlen);
            out[t] = sq_nan<T>();
        } else {
            out[t] = x[gather_off(g, t, v)];
        }
    }
}

template <typename T>
__global__ void k_gather_bwd(T *dx, const T *dout, const int64_t *idx, GatherGeom g, int64_t n,
                             sq_cuda_devflag *flag)
{
    SQ_GRID_LOOP(t, n) {
        int64_t v = idx[t];
        if (v < 0 || v >= g.xlen) sq_cuda_report_index(flag, SQ_CK_GATHER_BWD, v, g.xlen);
        else atomicAdd(&dx[gather_off(g, t, v)], dout[t]);
    }
}

static sq_status gather_geom(sq_ctx *ctx, const char *k, sq_dtype dt, const int64_t *xs,
                             int64_t xlen, int ndim, const int64_t *shape, int dim, GatherGeom *g,
                             int64_t *n)
{
    SQ_CUDA_ENTER(ctx, k);
    SQ_TRY(sq_cuda_need_float(ctx, k, dt));
    if (ndim < 1 || ndim > SQ_MAX_DIMS)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: rank %d outside 1..%d", k, ndim, SQ_MAX_DIMS);
    if (dim < 0 || dim >= ndim) return sq_fail(ctx, SQ_ERR_ARG, "%s: dim %d out of range for rank %d", k, dim, ndim);
    SQ_CUDA_NONNEG(ctx, k, xlen);
    g->nd = ndim;
    g->dim = dim;
    g->xlen = xlen;
    int64_t t = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return sq_fail(ctx, SQ_ERR_ARG, "%s: negative size in dim %d", k, d);
        g->size[d] = shape[d];
        g->xs[d] = xs[d];
        t *= shape[d];
    }
    *n = t;
    return SQ_OK;
}

sq_status sq_cuda_gather(sq_ctx *ctx, sq_dtype dt, void *out, const void *x, const int64_t *xs,
                         int64_t x_dim_len, const int64_t *idx, int ndim, const int64_t *shape,
                         int dim)
{
    GatherGeom g;
    int64_t n = 0;
    SQ_TRY(gather_geom(ctx, "gather", dt, xs, x_dim_len, ndim, shape, dim, &g, &n));
    if (n == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32)
        k_gather<float><<<gr, THREADS, 0, s>>>((float *)out, (const float *)x, idx, g, n, ctx->cuda->flag);
    else
        k_gather<double><<<gr, THREADS, 0, s>>>((double *)out, (const double *)x, idx, g, n, ctx->cuda->flag);
    return sq_cuda_launched(ctx, "gather", "n %lld, rank %d, dim %d, %s", (long long)n, ndim, dim,
                            sq_dtype_name(dt));
}

sq_status sq_cuda_gather_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const int64_t *dxs,
                             int64_t x_dim_len, const void *dout, const int64_t *idx, int ndim,
                             const int64_t *shape, int dim)
{
    GatherGeom g;
    int64_t n = 0;
    SQ_TRY(gather_geom(ctx, "gather_bwd", dt, dxs, x_dim_len, ndim, shape, dim, &g, &n));
    if (n == 0) return SQ_OK;
    cudaStream_t s = ctx->cuda->stream;
    unsigned gr = sq_cuda_grid(n, THREADS);
    if (dt == SQ_F32)
        k_gather_bwd<float><<<gr, THREADS, 0, s>>>((float *)dx, (const float *)dout, idx, g, n, ctx->cuda->flag);
    else
        k_gather_bwd<double><<<gr, THREADS, 0, s>>>((double *)dx, (const double *)dout, idx, g, n, ctx->cuda->flag);
    return sq_cuda_launched(ctx, "gather_bwd", "n %lld, rank %d, dim %d, %s", (long long)n, ndim, dim,
                            sq_dtype_name(dt));
}
