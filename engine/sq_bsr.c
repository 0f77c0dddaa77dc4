/* sq_bsr.c — BSR matrices: allocation with exact accounting, dense
 * conversion, prune-and-pack and the BSR weight-gradient kernel (CPU
 * references for the CUDA kernels; see sq_bsr.h). */
#include "sq_bsr.h"
#include "sq_cpu.h"
#include "sq_select.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const crit_names[SQ_PRUNE_NCRITERIA] = {"l2", "random", "topk_unstructured"};
static const char *const scope_names[SQ_PRUNE_NSCOPES] = {"tensor", "row"};

const char *sq_prune_criterion_name(sq_prune_criterion c)
{
    return (unsigned)c < SQ_PRUNE_NCRITERIA ? crit_names[c] : "?";
}

const char *sq_prune_scope_name(sq_prune_scope s)
{
    return (unsigned)s < SQ_PRUNE_NSCOPES ? scope_names[s] : "?";
}

int sq_prune_criterion_parse(const char *name)
{
    for (int i = 0; name && i < SQ_PRUNE_NCRITERIA; i++)
        if (strcmp(name, crit_names[i]) == 0) return i;
    return -1;
}

int sq_prune_scope_parse(const char *name)
{
    for (int i = 0; name && i < SQ_PRUNE_NSCOPES; i++)
        if (strcmp(name, scope_names[i]) == 0) return i;
    return -1;
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* A 1-d scratch tensor (caller releases). */
static sq_status scratch(sq_ctx *ctx, sq_dtype dt, int64_t n, sq_tensor **out)
{
    return sq_tensor_empty_cat(ctx, dt, 1, &n, SQ_MEM_WORKSPACE, out);
}

/* ---- allocation ------------------------------------------------------------ */

sq_status sq_bsr_new(sq_ctx *ctx, sq_dtype dt, int64_t rows, int64_t cols, int64_t b,
                     int64_t nnzb, sq_mem_cat cat, sq_bsr **out)
{
    *out = NULL;
    if (!sq_is_float(dt))
        return sq_fail(ctx, SQ_ERR_DTYPE, "bsr: values must be float32 or float64, got %s",
                       sq_dtype_name(dt));
    if (b < 1) return sq_fail(ctx, SQ_ERR_ARG, "bsr: block size %lld must be >= 1", (long long)b);
    if (rows < 0 || cols < 0)
        return sq_fail(ctx, SQ_ERR_ARG, "bsr: negative size %lldx%lld", (long long)rows,
                       (long long)cols);
    int64_t nbr = ceil_div(rows, b), nbc = ceil_div(cols, b);
    if (nbc > INT32_MAX || nbr > INT32_MAX || nnzb < 0 || nnzb > INT32_MAX ||
        (nbr > 0 && nnzb / nbr > nbc) || (nbr == 0 && nnzb > 0))
        return sq_fail(ctx, SQ_ERR_ARG, "bsr: %lld blocks do not fit a %lldx%lld block grid with "
                       "int32 block indices", (long long)nnzb, (long long)nbr, (long long)nbc);
    sq_bsr *m = calloc(1, sizeof *m);
    if (!m) return sq_fail(ctx, SQ_ERR_NOMEM, "bsr: out of host memory for the header");
    m->rows = rows;
    m->cols = cols;
    m->b = b;
    m->nbr = nbr;
    m->nbc = nbc;
    m->nnzb = nnzb;
    m->dtype = dt;
    m->cat = cat;
    int64_t np = nbr + 1, vs[3] = {nnzb, b, b};
    sq_status st;
    SQ_CHECK(sq_tensor_empty_cat(ctx, SQ_I64, 1, &np, cat, &m->row_ptr));
    SQ_CHECK(sq_tensor_empty_cat(ctx, SQ_I32, 1, &nnzb, cat, &m->col_idx));
    SQ_CHECK(sq_tensor_empty_cat(ctx, dt, 3, vs, cat, &m->values));
    ((int64_t *)sq_tensor_data(m->row_ptr))[0] = 0;
    *out = m;
    return SQ_OK;
done:
    sq_bsr_free(m);
    return st;
}

static void free_transpose(sq_bsr *m)
{
    sq_tensor_release(m->col_ptr);
    sq_tensor_release(m->t_row);
    sq_tensor_release(m->t_blk);
    m->col_ptr = m->t_row = m->t_blk = NULL;
}

void sq_bsr_free(sq_bsr *m)
{
    if (!m) return;
    sq_tensor_release(m->row_ptr);
    sq_tensor_release(m->col_idx);
    sq_tensor_release(m->values);
    free_transpose(m);
    free(m);
}

static int64_t tensor_bytes(const sq_tensor *t)
{
    return t ? (int64_t)t->storage->nbytes : 0;
}

int64_t sq_bsr_bytes(const sq_bsr *m)
{
    if (!m) return 0;
    return tensor_bytes(m->row_ptr) + tensor_bytes(m->col_idx) + tensor_bytes(m->values) +
           tensor_bytes(m->col_ptr) + tensor_bytes(m->t_row) + tensor_bytes(m->t_blk);
}

int64_t sq_bsr_value_bytes(const sq_bsr *m)
{
    return m ? m->nnzb * m->b * m->b * (int64_t)sq_dtype_size(m->dtype) : 0;
}

/* ---- strided block access (x need not be contiguous) ----------------------- */

/* x (R,K) with element strides s0, s1. */
typedef struct {
    sq_dtype dt;
    const char *p;
    int64_t R, K, s0, s1;
} view2;

static sq_status need_matrix(sq_ctx *ctx, const char *fn, const sq_tensor *x, view2 *v)
{
    if (!x) return sq_fail(ctx, SQ_ERR_ARG, "%s: input is missing", fn);
    if (!sq_is_float(x->dtype))
        return sq_fail(ctx, SQ_ERR_DTYPE, "%s: input must be float32 or float64, got %s", fn,
                       sq_dtype_name(x->dtype));
    if (x->storage->device != SQ_CPU)
        return sq_fail(ctx, SQ_ERR_DEVICE, "%s: input is on %s; this function runs on the cpu", fn,
                       sq_device_name(x->storage->device));
    if (x->ndim != 2) {
        char s[64];
        return sq_fail(ctx, SQ_ERR_SHAPE, "%s: input must be 2-d (R,K), got %s", fn,
                       sq_shape_str(x, s, sizeof s));
    }
    v->dt = x->dtype;
    v->p = sq_tensor_data(x);
    v->R = x->shape[0];
    v->K = x->shape[1];
    v->s0 = x->stride[0];
    v->s1 = x->stride[1];
    return SQ_OK;
}

static inline double view_get(const view2 *v, int64_t r, int64_t c)
{
    int64_t o = r * v->s0 + c * v->s1;
    return v->dt == SQ_F32 ? (double)((const float *)v->p)[o] : ((const double *)v->p)[o];
}

/* Squared norm of block (i,j), float64 accumulation in row-major order. */
static double block_sq(const view2 *v, int64_t b, int64_t i, int64_t j)
{
    int64_t r0 = i * b, c0 = j * b, bh = min64(b, v->R - r0), bw = min64(b, v->K - c0);
    double s = 0;
    if (v->dt == SQ_F32) {
        const float *p = (const float *)v->p;
        for (int64_t r = 0; r < bh; r++)
            for (int64_t c = 0; c < bw; c++) {
                double e = p[(r0 + r) * v->s0 + (c0 + c) * v->s1];
                s += e * e;
            }
    } else {
        const double *p = (const double *)v->p;
        for (int64_t r = 0; r < bh; r++)
            for (int64_t c = 0; c < bw; c++) {
                double e = p[(r0 + r) * v->s0 + (c0 + c) * v->s1];
                s += e * e;
            }
    }
    return s;
}

static int block_nonzero(const view2 *v, int64_t b, int64_t i, int64_t j)
{
    int64_t r0 = i * b, c0 = j * b, bh = min64(b, v->R - r0), bw = min64(b, v->K - c0);
    for (int64_t r = 0; r < bh; r++)
        for (int64_t c = 0; c < bw; c++)
            if (view_get(v, r0 + r, c0 + c) != 0) return 1; /* NaN != 0 */
    return 0;
}

/* Copies block (i,j) into dst (b,b) row-major, zero padding outside x. */
static void block_copy(const view2 *v, int64_t b, int64_t i, int64_t j, void *dst)
{
    int64_t r0 = i * b, c0 = j * b, bh = min64(b, v->R - r0), bw = min64(b, v->K - c0);
    size_t es = sq_dtype_size(v->dt);
    if (bh < b || bw < b) memset(dst, 0, (size_t)(b * b) * es);
    if (v->dt == SQ_F32) {
        const float *p = (const float *)v->p;
        float *d = dst;
        for (int64_t r = 0; r < bh; r++)
            for (int64_t c = 0; c < bw; c++) d[r * b + c] = p[(r0 + r) * v->s0 + (c0 + c) * v->s1];
    } else {
        const double *p = (const double *)v->p;
        double *d = dst;
        for (int64_t r = 0; r < bh; r++)
            for (int64_t c = 0; c < bw; c++) d[r * b + c] = p[(r0 + r) * v->s0 + (c0 + c) * v->s1];
    }
}

void sq_bsr_block_scores_l2(sq_dtype dt, const void *x, int64_t R, int64_t K, int64_t b,
                            double *scores)
{
    view2 v = {dt, x, R, K, K, 1};
    int64_t nbr = ceil_div(R, b), nbc = ceil_div(K, b);
    for (int64_t i = 0; i < nbr; i++)
        for (int64_t j = 0; j < nbc; j++) scores[i * nbc + j] = block_sq(&v, b, i, j);
}

/* Packs the blocks with ascending flat ids (i*nbc + j) from v into a new BSR. */
static sq_status pack_blocks(sq_ctx *ctx, const view2 *v, int64_t b, const int64_t *ids,
                             int64_t n, sq_mem_cat cat, sq_bsr **out)
{
    SQ_TRY(sq_bsr_new(ctx, v->dt, v->R, v->K, b, n, cat, out));
    sq_bsr *m = *out;
    int64_t *rp = sq_tensor_data(m->row_ptr);
    int32_t *ci = sq_tensor_data(m->col_idx);
    char *vals = sq_tensor_data(m->values);
    size_t bb = (size_t)(b * b) * sq_dtype_size(v->dt);
    memset(rp, 0, (size_t)(m->nbr + 1) * sizeof *rp);
    for (int64_t p = 0; p < n; p++) {
        int64_t i = ids[p] / m->nbc, j = ids[p] % m->nbc;
        rp[i + 1]++;
        ci[p] = (int32_t)j;
        block_copy(v, b, i, j, vals + (size_t)p * bb);
    }
    for (int64_t i = 0; i < m->nbr; i++) rp[i + 1] += rp[i];
    return SQ_OK;
}

/* ---- dense conversion ------------------------------------------------------- */

sq_status sq_bsr_from_dense(sq_ctx *ctx, const sq_tensor *x, int64_t b, sq_mem_cat cat,
                            sq_bsr **out)
{
    *out = NULL;
    view2 v;
    SQ_TRY(need_matrix(ctx, "bsr_from_dense", x, &v));
    if (b < 1) return sq_fail(ctx, SQ_ERR_ARG, "bsr_from_dense: block size %lld must be >= 1", (long long)b);
    int64_t nbr = ceil_div(v.R, b), nbc = ceil_div(v.K, b), n = 0;
    sq_tensor *ids = NULL;
    sq_status st;
    SQ_CHECK(scratch(ctx, SQ_I64, nbr * nbc, &ids));
    int64_t *id = sq_tensor_data(ids);
    for (int64_t i = 0; i < nbr; i++)
        for (int64_t j = 0; j < nbc; j++)
            if (block_nonzero(&v, b, i, j)) id[n++] = i * nbc + j;
    st = pack_blocks(ctx, &v, b, id, n, cat, out);
done:
    sq_tensor_release(ids);
    return st;
}

sq_status sq_bsr_to_dense(sq_ctx *ctx, const sq_bsr *m, sq_tensor **out)
{
    *out = NULL;
    if (!m) return sq_fail(ctx, SQ_ERR_ARG, "bsr_to_dense: matrix is missing");
    int64_t sh[2] = {m->rows, m->cols}, b = m->b;
    SQ_TRY(sq_tensor_zeros(ctx, m->dtype, 2, sh, out));
    const int64_t *rp = sq_tensor_data(m->row_ptr);
    const int32_t *ci = sq_tensor_data(m->col_idx);
    size_t es = sq_dtype_size(m->dtype);
    const char *vals = sq_tensor_data(m->values);
    char *d = sq_tensor_data(*out);
    for (int64_t i = 0; i < m->nbr; i++) {
        int64_t r0 = i * b, bh = min64(b, m->rows - r0);
        for (int64_t p = rp[i]; p < rp[i + 1]; p++) {
            int64_t c0 = (int64_t)ci[p] * b, bw = min64(b, m->cols - c0);
            const char *blk = vals + (size_t)(p * b * b) * es;
            for (int64_t r = 0; r < bh; r++)
                memcpy(d + (size_t)((r0 + r) * m->cols + c0) * es, blk + (size_t)(r * b) * es,
                       (size_t)bw * es);
        }
    }
    return SQ_OK;
}

sq_status sq_bsr_build_transpose(sq_ctx *ctx, sq_bsr *m, sq_mem_cat cat)
{
    if (!m) return sq_fail(ctx, SQ_ERR_ARG, "bsr_build_transpose: matrix is missing");
    if (m->col_ptr) return SQ_OK;
    int64_t np = m->nbc + 1, nz = m->nnzb;
    sq_status st;
    SQ_CHECK(sq_tensor_empty_cat(ctx, SQ_I64, 1, &np, cat, &m->col_ptr));
    SQ_CHECK(sq_tensor_empty_cat(ctx, SQ_I32, 1, &nz, cat, &m->t_row));
    SQ_CHECK(sq_tensor_empty_cat(ctx, SQ_I32, 1, &nz, cat, &m->t_blk));
    int64_t *cp = sq_tensor_data(m->col_ptr);
    int32_t *tr = sq_tensor_data(m->t_row), *tb = sq_tensor_data(m->t_blk);
    const int64_t *rp = sq_tensor_data(m->row_ptr);
    const int32_t *ci = sq_tensor_data(m->col_idx);
    memset(cp, 0, (size_t)np * sizeof *cp);
    for (int64_t p = 0; p < nz; p++) cp[ci[p] + 1]++;
    for (int64_t j = 0; j < m->nbc; j++) cp[j + 1] += cp[j];
    /* scatter in block-row order (rows ascend within a column), using
     * cp[j] as the cursor of column j, then shift the pointers back */
    for (int64_t i = 0; i < m->nbr; i++)
        for (int64_t p = rp[i]; p < rp[i + 1]; p++) {
            int64_t q = cp[ci[p]]++;
            tr[q] = (int32_t)i;
            tb[q] = (int32_t)p;
        }
    for (int64_t j = m->nbc; j > 0; j--) cp[j] = cp[j - 1];
    cp[0] = 0;
    return SQ_OK;
done:
    free_transpose(m);
    return st;
}

/* ---- prune and pack --------------------------------------------------------- */

/* topk_unstructured: keeps entries, packed as CSR (a BSR with b = 1). */
static sq_status prune_unstructured(sq_ctx *ctx, const view2 *v, int64_t b, double keep,
                                    sq_prune_scope scope, sq_mem_cat cat, sq_bsr **out)
{
    int64_t R = v->R, K = v->K, n = R * K, nbr = ceil_div(R, b), nbc = ceil_div(K, b);
    sq_tensor *sc = NULL, *ids = NULL;
    sq_status st;
    SQ_CHECK(scratch(ctx, v->dt, n, &sc));
    if (v->dt == SQ_F32) {
        float *s = sq_tensor_data(sc);
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < K; c++) s[r * K + c] = fabsf((float)view_get(v, r, c));
    } else {
        double *s = sq_tensor_data(sc);
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < K; c++) s[r * K + c] = fabs(view_get(v, r, c));
    }
    int64_t nsel = 0;
    if (scope == SQ_PRUNE_SCOPE_TENSOR) {
        nsel = min64(sq_select_count(keep, nbr * nbc) * b * b, n);
        SQ_CHECK(scratch(ctx, SQ_I64, nsel, &ids));
        SQ_CHECK(sq_select_topk(ctx, v->dt, sq_tensor_data(sc), n, nsel, sq_tensor_data(ids), NULL));
    } else { /* a block row is b consecutive rows: b*K consecutive entries */
        int64_t kr = sq_select_count(keep, nbc) * b * b, seg = b * K;
        SQ_CHECK(scratch(ctx, SQ_I64, sq_select_segments_total(n, seg, kr), &ids));
        SQ_CHECK(sq_select_topk_segments(ctx, v->dt, sq_tensor_data(sc), n, seg, kr,
                                         sq_tensor_data(ids), &nsel, NULL));
    }
    /* entries are the 1x1 blocks of the same matrix */
    st = pack_blocks(ctx, v, 1, sq_tensor_data(ids), nsel, cat, out);
done:
    sq_tensor_release(sc);
    sq_tensor_release(ids);
    return st;
}

sq_status sq_bsr_prune_pack(sq_ctx *ctx, const sq_tensor *x, int64_t b, double keep,
                            sq_prune_criterion crit, sq_prune_scope scope, sq_mem_cat cat,
                            sq_bsr **out)
{
    *out = NULL;
    view2 v;
    SQ_TRY(need_matrix(ctx, "bsr_prune_pack", x, &v));
    if (b < 1) return sq_fail(ctx, SQ_ERR_ARG, "bsr_prune_pack: block size %lld must be >= 1", (long long)b);
    if (!(keep > 0 && keep <= 1))
        return sq_fail(ctx, SQ_ERR_ARG, "bsr_prune_pack: keep ratio %g must be in (0,1]", keep);
    if ((unsigned)crit >= SQ_PRUNE_NCRITERIA)
        return sq_fail(ctx, SQ_ERR_ARG, "bsr_prune_pack: unknown criterion %d", (int)crit);
    if ((unsigned)scope >= SQ_PRUNE_NSCOPES)
        return sq_fail(ctx, SQ_ERR_ARG, "bsr_prune_pack: unknown scope %d", (int)scope);
    if (crit == SQ_PRUNE_TOPK_UNSTRUCTURED) return prune_unstructured(ctx, &v, b, keep, scope, cat, out);

    int64_t nbr = ceil_div(v.R, b), nbc = ceil_div(v.K, b), nb = nbr * nbc;
    sq_tensor *sc = NULL, *ids = NULL;
    sq_status st;
    /* 1. score every block once */
    SQ_CHECK(scratch(ctx, SQ_F64, nb, &sc));
    double *s = sq_tensor_data(sc);
    if (crit == SQ_PRUNE_L2) {
        for (int64_t i = 0; i < nbr; i++)
            for (int64_t j = 0; j < nbc; j++) s[i * nbc + j] = block_sq(&v, b, i, j);
    } else {
        for (int64_t p = 0; p < nb; p++) s[p] = sq_rng_uniform(&ctx->rng);
    }
    /* 2. select (indices come out ascending = block-row order) */
    int64_t nsel = 0;
    if (scope == SQ_PRUNE_SCOPE_TENSOR) {
        nsel = sq_select_count(keep, nb);
        SQ_CHECK(scratch(ctx, SQ_I64, nsel, &ids));
        SQ_CHECK(sq_select_topk(ctx, SQ_F64, s, nb, nsel, sq_tensor_data(ids), NULL));
    } else {
        int64_t kr = sq_select_count(keep, nbc);
        SQ_CHECK(scratch(ctx, SQ_I64, sq_select_segments_total(nb, nbc, kr), &ids));
        SQ_CHECK(sq_select_topk_segments(ctx, SQ_F64, s, nb, nbc, kr, sq_tensor_data(ids), &nsel,
                                         NULL));
    }
    /* 3. pack */
    st = pack_blocks(ctx, &v, b, sq_tensor_data(ids), nsel, cat, out);
done:
    sq_tensor_release(sc);
    sq_tensor_release(ids);
    return st;
}

/* ---- weight gradient ---------------------------------------------------------- */

double sq_bsr_dw_flops(const sq_bsr *m, int64_t M)
{
    if (!m) return 0;
    const int64_t *rp = sq_tensor_data(m->row_ptr);
    const int32_t *ci = sq_tensor_data(m->col_idx);
    double entries = 0;
    for (int64_t i = 0; i < m->nbr; i++) {
        int64_t bh = min64(m->b, m->rows - i * m->b);
        for (int64_t p = rp[i]; p < rp[i + 1]; p++)
            entries += (double)(bh * min64(m->b, m->cols - (int64_t)ci[p] * m->b));
    }
    return 2.0 * (double)M * entries;
}

/* b = 1 (CSR): dWᵀ[j,:] += x[i,j] * dy[i,:] row by row (contiguous axpys), then transpose. */
#define CSR_DW(T)                                                                         \
    do {                                                                                  \
        const T *g = sq_tensor_data(dy), *val = sq_tensor_data(m->values);               \
        T *t = sq_tensor_data(dwt), *o = sq_tensor_data(dw);                              \
        memset(t, 0, (size_t)(K * M) * sizeof(T));                                        \
        for (int64_t i = 0; i < m->nbr; i++)                                              \
            for (int64_t p = rp[i]; p < rp[i + 1]; p++) {                                 \
                T xv = val[p], *tj = t + (int64_t)ci[p] * M;                              \
                const T *gi = g + i * M;                                                  \
                for (int64_t q = 0; q < M; q++) tj[q] += xv * gi[q];                      \
            }                                                                             \
        for (int64_t q = 0; q < M; q++)                                                   \
            for (int64_t j = 0; j < K; j++) o[q * K + j] = t[j * M + q];                  \
    } while (0)

sq_status sq_bsr_dw(sq_ctx *ctx, const sq_tensor *dy, sq_bsr *m, sq_tensor *dw)
{
    char s1[64], s2[64];
    if (!m || !dy || !dw) return sq_fail(ctx, SQ_ERR_ARG, "bsr_dw: an argument is missing");
    if (dy->dtype != m->dtype || dw->dtype != m->dtype)
        return sq_fail(ctx, SQ_ERR_DTYPE, "bsr_dw: dy %s, dw %s and the matrix %s must share a dtype",
                       sq_dtype_name(dy->dtype), sq_dtype_name(dw->dtype), sq_dtype_name(m->dtype));
    if (dy->ndim != 2 || dy->shape[0] != m->rows || dw->ndim != 2 || dw->shape[0] != dy->shape[1] ||
        dw->shape[1] != m->cols)
        return sq_fail(ctx, SQ_ERR_SHAPE, "bsr_dw: dy %s and dw %s do not fit a %lldx%lld matrix "
                       "(need dy RxM, dw MxK)", sq_shape_str(dy, s1, sizeof s1),
                       sq_shape_str(dw, s2, sizeof s2), (long long)m->rows, (long long)m->cols);
    if (!sq_tensor_is_contiguous(dy) || !sq_tensor_is_contiguous(dw))
        return sq_fail(ctx, SQ_ERR_ARG, "bsr_dw: dy and dw must be contiguous");
    int64_t M = dy->shape[1], K = m->cols, R = m->rows, b = m->b;
    size_t es = sq_dtype_size(m->dtype);
    if (b == 1) {
        const int64_t *rp = sq_tensor_data(m->row_ptr);
        const int32_t *ci = sq_tensor_data(m->col_idx);
        sq_tensor *dwt = NULL;
        SQ_TRY(scratch(ctx, m->dtype, K * M, &dwt));
        if (m->dtype == SQ_F32) CSR_DW(float);
        else CSR_DW(double);
        sq_tensor_release(dwt);
        ctx->stats.gemm_calls++; /* one SpMM, counted like the GEMM it replaces */
        ctx->stats.gemm_flops += sq_bsr_dw_flops(m, M);
        return SQ_OK;
    }
    int temp = m->col_ptr == NULL;
    if (temp) SQ_TRY(sq_bsr_build_transpose(ctx, m, SQ_MEM_WORKSPACE));
    const int64_t *cp = sq_tensor_data(m->col_ptr);
    const int32_t *tr = sq_tensor_data(m->t_row), *tb = sq_tensor_data(m->t_blk);
    const char *g = sq_tensor_data(dy), *vals = sq_tensor_data(m->values);
    char *o = sq_tensor_data(dw);
    for (int64_t j = 0; j < m->nbc; j++) {
        int64_t c0 = j * b, bw = min64(b, K - c0);
        char *C = o + (size_t)c0 * es; /* dW[:, c0:c0+bw], (M,bw) with ldc K */
        if (cp[j] == cp[j + 1]) {      /* no kept block in this column: dW there is 0 */
            for (int64_t q = 0; q < M; q++) memset(C + (size_t)(q * K) * es, 0, (size_t)bw * es);
            continue;
        }
        for (int64_t p = cp[j]; p < cp[j + 1]; p++) {
            int64_t r0 = (int64_t)tr[p] * b, bh = min64(b, R - r0);
            /* (M,bw) (+)= dy[r0:r0+bh, :]ᵀ (M,bh) · block (bh,bw) */
            sq_cpu_gemm(&ctx->stats, m->dtype, 1, 0, M, bw, bh, 1.0, g + (size_t)(r0 * M) * es, M,
                        vals + (size_t)((int64_t)tb[p] * b * b) * es, b, p == cp[j] ? 0.0 : 1.0, C,
                        K);
        }
    }
    if (temp) free_transpose(m);
    return SQ_OK;
}
