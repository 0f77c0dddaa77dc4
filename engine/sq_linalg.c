/* sq_linalg.c — SVD through LAPACKE (gesdd with a gesvd fallback) and the
 * Gram matrix XᵀX.  The one place the engine talks to LAPACK. */
#include "sq_linalg.h"
#include "sq_ops_internal.h"
#include "cuda/sq_cuda_linalg.h"

#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <string.h>

const char *sq_svd_driver_name(sq_svd_driver d)
{
    switch (d) {
    case SQ_SVD_AUTO: return "auto";
    case SQ_SVD_GESDD: return "gesdd";
    case SQ_SVD_GESVD: return "gesvd";
    }
    return "?";
}

/* First non-finite entry of a contiguous float buffer, or -1. */
static int64_t first_nonfinite(sq_dtype dt, const void *p, int64_t n)
{
    if (dt == SQ_F32) {
        const float *f = p;
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(f[i])) return i;
    } else {
        const double *d = p;
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(d[i])) return i;
    }
    return -1;
}

/* The LAPACK calls.  Row-major W (M,K) is column-major Wᵀ (K,M) with lda = K;
 * factoring Wᵀ = U' Σ V'ᵀ gives W = V' Σ U'ᵀ, and the column-major buffers
 * LAPACK writes are then exactly row-major W factors:
 *   u  (K x k col-major, ldu = K)  == Vt (k,K) row-major,
 *   vt (k x M col-major, ldvt = k) == U  (M,k) row-major.
 * So no transposes are needed.  a is destroyed.  lwork = -1 queries. */
static lapack_int run_gesdd(sq_dtype dt, lapack_int m, lapack_int n, void *a, void *s, void *u,
                            void *vt, void *work, lapack_int lwork, lapack_int *iwork)
{
    lapack_int k = m < n ? m : n;
    if (dt == SQ_F32)
        return LAPACKE_sgesdd_work(LAPACK_COL_MAJOR, 'S', m, n, a, m, s, u, m, vt, k, work, lwork,
                                   iwork);
    return LAPACKE_dgesdd_work(LAPACK_COL_MAJOR, 'S', m, n, a, m, s, u, m, vt, k, work, lwork,
                               iwork);
}

static lapack_int run_gesvd(sq_dtype dt, lapack_int m, lapack_int n, void *a, void *s, void *u,
                            void *vt, void *work, lapack_int lwork)
{
    lapack_int k = m < n ? m : n;
    if (dt == SQ_F32)
        return LAPACKE_sgesvd_work(LAPACK_COL_MAJOR, 'S', 'S', m, n, a, m, s, u, m, vt, k, work,
                                   lwork);
    return LAPACKE_dgesvd_work(LAPACK_COL_MAJOR, 'S', 'S', m, n, a, m, s, u, m, vt, k, work, lwork);
}

/* Allocates a 1-d workspace tensor of n elements of dt. */
static sq_status workspace(sq_ctx *ctx, sq_dtype dt, int64_t n, sq_tensor **out)
{
    int64_t sh[1] = {n > 0 ? n : 1};
    return sq_tensor_empty_cat(ctx, dt, 1, sh, SQ_MEM_WORKSPACE, out);
}

/* LAPACK's optimal lwork comes back as a float; round it up safely. */
static lapack_int lwork_from(sq_dtype dt, const void *q)
{
    double v = dt == SQ_F32 ? (double)*(const float *)q : *(const double *)q;
    v = ceil(v * (1.0 + 1e-6)) + 1.0;
    return v > (double)INT_MAX ? INT_MAX : (lapack_int)v;
}

/* One driver: query, allocate work, run on a fresh copy of W.  Returns the
 * LAPACK info (or sets *st on an allocation failure). */
static lapack_int svd_driver(sq_ctx *ctx, sq_svd_driver drv, sq_tensor *Wc, sq_tensor *a,
                             lapack_int m, lapack_int n, void *s, void *u, void *vt, int fake,
                             sq_status *st)
{
    sq_dtype dt = Wc->dtype;
    sq_tensor *work = NULL, *iwork = NULL;
    lapack_int info;
    double q[2] = {0, 0}; /* room for one float or double */
    lapack_int k = m < n ? m : n;
    *st = SQ_OK;
    memcpy(sq_tensor_data(a), sq_tensor_data(Wc), (size_t)m * (size_t)n * sq_dtype_size(dt));
    if (drv == SQ_SVD_GESDD) {
        *st = workspace(ctx, SQ_I32, 8 * (int64_t)k, &iwork);
        if (*st != SQ_OK) return 0;
        info = run_gesdd(dt, m, n, sq_tensor_data(a), s, u, vt, q, -1, sq_tensor_data(iwork));
    } else {
        info = run_gesvd(dt, m, n, sq_tensor_data(a), s, u, vt, q, -1);
    }
    if (info != 0) goto done;
    lapack_int lwork = lwork_from(dt, q);
    *st = workspace(ctx, dt, lwork, &work);
    if (*st != SQ_OK) goto done;
    if (drv == SQ_SVD_GESDD)
        info = run_gesdd(dt, m, n, sq_tensor_data(a), s, u, vt, sq_tensor_data(work), lwork,
                         sq_tensor_data(iwork));
    else
        info = run_gesvd(dt, m, n, sq_tensor_data(a), s, u, vt, sq_tensor_data(work), lwork);
    if (info == 0 && fake) info = 1;
done:
    sq_tensor_release(work);
    sq_tensor_release(iwork);
    return info;
}

/* Copies the leading r columns of a row-major (rows, ld) buffer. */
static void copy_cols(size_t es, void *dst, const void *src, int64_t rows, int64_t ld, int64_t r)
{
    for (int64_t i = 0; i < rows; i++)
        memcpy((char *)dst + (size_t)(i * r) * es, (const char *)src + (size_t)(i * ld) * es,
               (size_t)r * es);
}

/* W on the GPU: cuSOLVER (kernels/cuda/sq_cuda_linalg.h), factors left on
 * the GPU.  cuSOLVER has no gesdd: its Jacobi driver gesvdj takes gesdd's
 * place in opts, info and the fake-failure bits (SQ_SVD_GESDD: gesvdj only;
 * gesdd_info: gesvdj's info); SQ_SVD_AUTO there is gesvd first, gesvdj when
 * gesvd does not converge (fell_back), because gesvdj's float32 error grows
 * with the size.  Sizes and rank are checked by sq_svd. */
static sq_status svd_cuda(sq_ctx *ctx, sq_tensor *W, int64_t rank, const sq_svd_opts *o,
                          sq_tensor **U, sq_tensor **S, sq_tensor **Vt, sq_svd_info *info)
{
    int64_t M = W->shape[0], K = W->shape[1], k = M < K ? M : K;
    sq_dtype dt = W->dtype;
    sq_cuda_svd_driver drv = o->driver == SQ_SVD_GESVD   ? SQ_CUDA_SVD_GESVD
                             : o->driver == SQ_SVD_GESDD ? SQ_CUDA_SVD_GESVDJ
                                                         : SQ_CUDA_SVD_AUTO;
    sq_cuda_svd_info ci;
    sq_status st = SQ_OK;
    sq_tensor *Wc = NULL, *uf = NULL, *s = NULL, *vtf = NULL, *v = NULL;
    int64_t sh_u[2] = {M, k}, sh_s[1] = {k}, sh_vt[2] = {k, K};
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, W, &Wc));
    SQ_CHECK(sq_tensor_empty_dev(ctx, SQ_CUDA, dt, 2, sh_u, SQ_MEM_OTHER, &uf));
    SQ_CHECK(sq_tensor_empty_dev(ctx, SQ_CUDA, dt, 1, sh_s, SQ_MEM_OTHER, &s));
    SQ_CHECK(sq_tensor_empty_dev(ctx, SQ_CUDA, dt, 2, sh_vt, SQ_MEM_OTHER, &vtf));
    st = sq_cuda_svd(ctx, dt, M, K, sq_tensor_data(Wc), sq_tensor_data(uf), sq_tensor_data(s),
                     sq_tensor_data(vtf), drv, o->fake_fail, &ci);
    if (info) {
        info->used = ci.used == SQ_CUDA_SVD_GESVD ? SQ_SVD_GESVD : SQ_SVD_GESDD;
        info->fell_back = ci.fell_back;
        info->gesdd_info = ci.gesvdj_info;
    }
    if (st != SQ_OK) goto done;
    if (rank < k) { /* truncate: U keeps its leading columns, S and Vt their leading rows */
        int64_t su[2] = {M, rank}, ssu[2] = {k, 1}, ss[1] = {rank}, sss[1] = {1};
        int64_t sv[2] = {rank, K}, ssv[2] = {K, 1};
        SQ_CHECK(sq_view_raw(ctx, uf, 2, su, ssu, 0, &v));
        SQ_CHECK(sq_tensor_clone(ctx, v, U));
        sq_tensor_release(v);
        v = NULL;
        SQ_CHECK(sq_view_raw(ctx, s, 1, ss, sss, 0, &v));
        SQ_CHECK(sq_tensor_clone(ctx, v, S));
        sq_tensor_release(v);
        v = NULL;
        SQ_CHECK(sq_view_raw(ctx, vtf, 2, sv, ssv, 0, &v));
        SQ_CHECK(sq_tensor_clone(ctx, v, Vt));
    } else {
        *U = uf;
        *S = s;
        *Vt = vtf;
        uf = s = vtf = NULL;
    }
done:
    if (st != SQ_OK) { /* never partial factors */
        sq_tensor_release(*U);
        sq_tensor_release(*S);
        sq_tensor_release(*Vt);
        *U = *S = *Vt = NULL;
    }
    sq_tensor_release(v);
    sq_tensor_release(Wc);
    sq_tensor_release(uf);
    sq_tensor_release(s);
    sq_tensor_release(vtf);
    return st;
}

sq_status sq_svd(sq_ctx *ctx, sq_tensor *W, int64_t rank, const sq_svd_opts *opts, sq_tensor **U,
                 sq_tensor **S, sq_tensor **Vt, sq_svd_info *info)
{
    *U = *S = *Vt = NULL;
    sq_svd_opts o = {SQ_SVD_AUTO, 0};
    if (opts) o = *opts;
    sq_svd_info inf = {SQ_SVD_GESDD, 0, 0};
    if (info) *info = inf;
    char sb[64];
    SQ_TRY(sq_need_float(ctx, "svd", "matrix", W));
    if (W->ndim != 2 || W->shape[0] < 1 || W->shape[1] < 1)
        return sq_fail(ctx, SQ_ERR_SHAPE, "svd: need a non-empty 2-d matrix, got %s",
                       SQ_SHAPE(W, sb));
    if (o.driver != SQ_SVD_AUTO && o.driver != SQ_SVD_GESDD && o.driver != SQ_SVD_GESVD)
        return sq_fail(ctx, SQ_ERR_ARG, "svd: unknown driver %d", (int)o.driver);
    int64_t M = W->shape[0], K = W->shape[1], k = M < K ? M : K;
    if (M > INT_MAX || K > INT_MAX || M * K > INT_MAX)
        return sq_fail(ctx, SQ_ERR_ARG, "svd: %s is too large for 32-bit LAPACK indices",
                       SQ_SHAPE(W, sb));
    if (rank == 0) rank = k;
    if (rank < 0)
        return sq_fail(ctx, SQ_ERR_ARG, "svd: rank %lld < 1", (long long)rank);
    if (rank > k)
        return sq_fail(ctx, SQ_ERR_ARG, "svd: rank %lld > min(%lld,%lld)", (long long)rank,
                       (long long)M, (long long)K);
    if (sq_on_cuda(W)) return svd_cuda(ctx, W, rank, &o, U, S, Vt, info);

    sq_status st = SQ_OK;
    sq_tensor *Wc = NULL, *a = NULL, *s = NULL, *uf = NULL, *vtf = NULL, *u = NULL, *vt = NULL;
    sq_dtype dt = W->dtype;
    size_t es = sq_dtype_size(dt);
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, W, &Wc));
    int64_t bad = first_nonfinite(dt, sq_tensor_data(Wc), M * K);
    if (bad >= 0) {
        double v = sq_tensor_get_flat(Wc, bad);
        st = sq_fail(ctx, SQ_ERR_NUMERIC, "svd: matrix %s has a non-finite entry (%s at [%lld,%lld], 0-based)",
                     SQ_SHAPE(W, sb), isnan(v) ? "NaN" : (v > 0 ? "Inf" : "-Inf"),
                     (long long)(bad / K), (long long)(bad % K));
        goto done;
    }
    int64_t sh_a[1] = {M * K}, sh_s[1] = {k}, sh_u[2] = {M, k}, sh_vt[2] = {k, K};
    SQ_CHECK(sq_tensor_empty_cat(ctx, dt, 1, sh_a, SQ_MEM_WORKSPACE, &a));
    SQ_CHECK(sq_tensor_empty(ctx, dt, 1, sh_s, &s));
    SQ_CHECK(sq_tensor_empty(ctx, dt, 2, sh_u, &uf));
    SQ_CHECK(sq_tensor_empty(ctx, dt, 2, sh_vt, &vtf));

    /* column-major view: m = K rows, n = M columns (see run_gesdd) */
    lapack_int m = (lapack_int)K, n = (lapack_int)M, lapinfo = 0;
    if (o.driver != SQ_SVD_GESVD) {
        lapinfo = svd_driver(ctx, SQ_SVD_GESDD, Wc, a, m, n, sq_tensor_data(s),
                             sq_tensor_data(vtf), sq_tensor_data(uf),
                             o.fake_fail & SQ_SVD_FAKE_GESDD_FAIL, &st);
        if (st != SQ_OK) goto done;
        inf.used = SQ_SVD_GESDD;
        inf.gesdd_info = (int)lapinfo;
        if (lapinfo < 0) {
            st = sq_fail(ctx, SQ_ERR_NUMERIC, "svd: gesdd rejected argument %d (LAPACK error)",
                         (int)-lapinfo);
            goto done;
        }
        if (lapinfo > 0 && o.driver == SQ_SVD_GESDD) {
            st = sq_fail(ctx, SQ_ERR_NUMERIC, "svd: gesdd did not converge on %s (info %d)",
                         SQ_SHAPE(W, sb), (int)lapinfo);
            goto done;
        }
    }
    if (o.driver == SQ_SVD_GESVD || lapinfo > 0) {
        int gesdd_failed = lapinfo > 0;
        lapinfo = svd_driver(ctx, SQ_SVD_GESVD, Wc, a, m, n, sq_tensor_data(s), sq_tensor_data(vtf),
                             sq_tensor_data(uf), o.fake_fail & SQ_SVD_FAKE_GESVD_FAIL, &st);
        if (st != SQ_OK) goto done;
        inf.used = SQ_SVD_GESVD;
        inf.fell_back = gesdd_failed;
        if (lapinfo < 0) {
            st = sq_fail(ctx, SQ_ERR_NUMERIC, "svd: gesvd rejected argument %d (LAPACK error)",
                         (int)-lapinfo);
            goto done;
        }
        if (lapinfo > 0) {
            st = sq_fail(ctx, SQ_ERR_NUMERIC, "svd: %sgesvd did not converge on %s (%d superdiagonals left)",
                         gesdd_failed ? "gesdd and " : "", SQ_SHAPE(W, sb), (int)lapinfo);
            goto done;
        }
    }
    /* Converged with finite input: a non-finite factor would mean overflow;
     * never pass it on. */
    if (first_nonfinite(dt, sq_tensor_data(s), k) >= 0 ||
        first_nonfinite(dt, sq_tensor_data(uf), M * k) >= 0 ||
        first_nonfinite(dt, sq_tensor_data(vtf), k * K) >= 0) {
        st = sq_fail(ctx, SQ_ERR_NUMERIC, "svd: %s produced non-finite factors for %s",
                     sq_svd_driver_name(inf.used), SQ_SHAPE(W, sb));
        goto done;
    }
    if (rank < k) { /* truncate: U keeps its leading columns, S and Vt their leading rows */
        int64_t su[2] = {M, rank}, ss[1] = {rank}, sv[2] = {rank, K};
        sq_tensor *s2 = NULL;
        SQ_CHECK(sq_tensor_empty(ctx, dt, 2, su, &u));
        SQ_CHECK(sq_tensor_empty(ctx, dt, 1, ss, &s2));
        copy_cols(es, sq_tensor_data(u), sq_tensor_data(uf), M, k, rank);
        memcpy(sq_tensor_data(s2), sq_tensor_data(s), (size_t)rank * es);
        sq_tensor_release(s);
        s = s2;
        SQ_CHECK(sq_tensor_empty(ctx, dt, 2, sv, &vt));
        memcpy(sq_tensor_data(vt), sq_tensor_data(vtf), (size_t)(rank * K) * es);
    } else {
        u = uf;
        vt = vtf;
        uf = vtf = NULL;
    }
    *U = u;
    *S = s;
    *Vt = vt;
    u = s = vt = NULL;
    if (info) *info = inf;
done:
    sq_tensor_release(Wc);
    sq_tensor_release(a);
    sq_tensor_release(s);
    sq_tensor_release(uf);
    sq_tensor_release(vtf);
    sq_tensor_release(u);
    sq_tensor_release(vt);
    return st;
}

/* ---- Gram matrix ------------------------------------------------------------ */

/* Rows per converted block when X and H differ in dtype: bounds the
 * workspace at about 16 MiB whatever n is. */
#define SQ_GRAM_BLOCK_BYTES ((int64_t)16 << 20)

static void symmetrize(sq_dtype dt, void *h, int64_t p)
{
    if (dt == SQ_F32) {
        float *f = h;
        for (int64_t i = 0; i < p; i++)
            for (int64_t j = i + 1; j < p; j++) {
                float v = 0.5f * (f[i * p + j] + f[j * p + i]);
                f[i * p + j] = f[j * p + i] = v;
            }
    } else {
        double *d = h;
        for (int64_t i = 0; i < p; i++)
            for (int64_t j = i + 1; j < p; j++) {
                double v = 0.5 * (d[i * p + j] + d[j * p + i]);
                d[i * p + j] = d[j * p + i] = v;
            }
    }
}

sq_status sq_gram(sq_ctx *ctx, sq_tensor *X, sq_tensor *H)
{
    char s1[64], s2[64];
    SQ_TRY(sq_need_float_cpu(ctx, "gram", "X", X));
    SQ_TRY(sq_need_float_cpu(ctx, "gram", "H", H));
    if (X->ndim != 2 || H->ndim != 2 || H->shape[0] != X->shape[1] || H->shape[1] != X->shape[1])
        return sq_fail(ctx, SQ_ERR_SHAPE, "gram: X %s and H %s do not fit (need n x p and p x p)",
                       SQ_SHAPE(X, s1), SQ_SHAPE(H, s2));
    if (!sq_tensor_is_contiguous(H))
        return sq_fail(ctx, SQ_ERR_ARG, "gram: H must be contiguous (it is accumulated in place)");
    int64_t n = X->shape[0], p = X->shape[1];
    if (n == 0 || p == 0) return SQ_OK;
    sq_status st = SQ_OK;
    sq_tensor *Xc = NULL, *blk = NULL;
    sq_dtype dt = H->dtype;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, X, &Xc));
    if (Xc->dtype == dt) {
        /* H (p,p) += Xᵀ (p,n) X (n,p) */
        sq_cpu_gemm(&ctx->stats, dt, 1, 0, p, p, n, 1.0, sq_tensor_data(Xc), p, sq_tensor_data(Xc),
                    p, 1.0, sq_tensor_data(H), p);
    } else {
        int64_t rows = SQ_GRAM_BLOCK_BYTES / (p * (int64_t)sq_dtype_size(dt));
        if (rows < 1) rows = 1;
        if (rows > n) rows = n;
        int64_t sh[2] = {rows, p};
        SQ_CHECK(sq_tensor_empty_cat(ctx, dt, 2, sh, SQ_MEM_WORKSPACE, &blk));
        for (int64_t r0 = 0; r0 < n; r0 += rows) {
            int64_t nr = n - r0 < rows ? n - r0 : rows, cnt = nr * p;
            if (dt == SQ_F64) {
                const float *sp = (const float *)sq_tensor_data(Xc) + r0 * p;
                double *dp = sq_tensor_data(blk);
                for (int64_t i = 0; i < cnt; i++) dp[i] = (double)sp[i];
            } else {
                const double *sp = (const double *)sq_tensor_data(Xc) + r0 * p;
                float *dp = sq_tensor_data(blk);
                for (int64_t i = 0; i < cnt; i++) dp[i] = (float)sp[i];
            }
            sq_cpu_gemm(&ctx->stats, dt, 1, 0, p, p, nr, 1.0, sq_tensor_data(blk), p,
                        sq_tensor_data(blk), p, 1.0, sq_tensor_data(H), p);
        }
    }
    symmetrize(dt, sq_tensor_data(H), p);
done:
    sq_tensor_release(Xc);
    sq_tensor_release(blk);
    return st;
}
