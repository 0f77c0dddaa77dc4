/* ops_actprune.c — linear layer whose saved input is a pruned BSR copy
 * (structured activation pruning, methods.md §1; see sq_actprune.h).
 *
 * The forward and the exact parts of the backward are sq_linear's own code
 * (sq_linear_record / sq_linear_backward_with in ops_linalg.c); this file
 * only swaps what the node keeps for dW and how dW is computed.
 *
 * On the GPU the node's BSR is an sq_bsr whose buffers are CUDA tensors
 * (same layout, same sq_bsr_bytes and sq_bsr_free as on the CPU); the
 * kernels of cuda/sq_cuda_actprune.h see it through a sq_cuda_bsr view of
 * its raw pointers.  Such a BSR never reaches the CPU functions of sq_bsr.c.
 * Every criterion runs on the GPU: l2 and topk_unstructured keep what the
 * CPU keeps; random draws from the context's GPU (Philox) stream, not from
 * ctx->rng, so it keeps other blocks than a CPU run of the same seed. */
#include "sq_actprune.h"
#include "sq_ops_internal.h"
#include "sq_proc.h" /* sq_proc_monotonic: the engine's one monotonic clock */
#include "cuda/sq_cuda_actprune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void sq_actprune_cfg_default(sq_actprune_cfg *cfg)
{
    cfg->block = 32;
    cfg->keep = 0.5;
    cfg->criterion = SQ_PRUNE_L2;
    cfg->scope = SQ_PRUNE_SCOPE_TENSOR;
    cfg->transpose_at_pack = 0;
    cfg->time_compress = 1;
}

sq_status sq_actprune_cfg_check(sq_ctx *ctx, const char *fn, const sq_actprune_cfg *cfg)
{
    if (!cfg) return sq_fail(ctx, SQ_ERR_ARG, "%s: config is missing", fn);
    int64_t b = cfg->block;
    if (b != 8 && b != 16 && b != 32 && b != 64)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: block size %lld is not one of 8, 16, 32, 64", fn,
                       (long long)b);
    if (!(cfg->keep > 0 && cfg->keep <= 1))
        return sq_fail(ctx, SQ_ERR_ARG, "%s: keep ratio %g must be in (0,1]", fn, cfg->keep);
    if ((unsigned)cfg->criterion >= SQ_PRUNE_NCRITERIA)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: unknown criterion %d (l2, random, topk_unstructured)",
                       fn, (int)cfg->criterion);
    if ((unsigned)cfg->scope >= SQ_PRUNE_NSCOPES)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: unknown scope %d (tensor, row)", fn, (int)cfg->scope);
    return SQ_OK;
}

static void free_bsr_extra(void *p) { sq_bsr_free(p); }

/* ---- the device BSR ----------------------------------------------------------- */

static int bsr_on_cuda(const sq_bsr *m)
{
    return m->row_ptr && sq_tensor_device(m->row_ptr) == SQ_CUDA;
}

/* The kernels' view of m; the transposed index from (cp, tr, tb) when given,
 * else from m (NULL when m has none). */
static void cuda_view(const sq_bsr *m, sq_tensor *cp, sq_tensor *tr, sq_tensor *tb, sq_cuda_bsr *v)
{
    memset(v, 0, sizeof *v);
    v->rows = m->rows;
    v->cols = m->cols;
    v->b = m->b;
    v->nbr = m->nbr;
    v->nbc = m->nbc;
    v->nnzb = m->nnzb;
    v->cat = m->cat;
    v->row_ptr = sq_tensor_data(m->row_ptr);
    v->col_idx = sq_tensor_data(m->col_idx);
    v->values = sq_tensor_data(m->values);
    if (!cp) {
        cp = m->col_ptr;
        tr = m->t_row;
        tb = m->t_blk;
    }
    if (cp) {
        v->col_ptr = sq_tensor_data(cp);
        v->t_row = sq_tensor_data(tr);
        v->t_blk = sq_tensor_data(tb);
    }
}

/* The three buffers of a transposed index on the GPU, in category cat. */
static sq_status cuda_transpose_bufs(sq_ctx *ctx, const sq_bsr *m, sq_mem_cat cat, sq_tensor **cp,
                                     sq_tensor **tr, sq_tensor **tb)
{
    int64_t np = m->nbc + 1, nz = m->nnzb;
    sq_status st;
    SQ_CHECK(sq_tensor_empty_dev(ctx, SQ_CUDA, SQ_I64, 1, &np, cat, cp));
    SQ_CHECK(sq_tensor_empty_dev(ctx, SQ_CUDA, SQ_I32, 1, &nz, cat, tr));
    SQ_CHECK(sq_tensor_empty_dev(ctx, SQ_CUDA, SQ_I32, 1, &nz, cat, tb));
    return SQ_OK;
done:
    sq_tensor_release(*cp);
    sq_tensor_release(*tr);
    sq_tensor_release(*tb);
    *cp = *tr = *tb = NULL;
    return st;
}

/* Fused prune-and-pack of x (R,K) float32 on the GPU, any strides, with the
 * config's criterion, into a new device BSR (a CSR, b = 1, for
 * topk_unstructured) whose buffers are CUDA tensors of category cat; with_t:
 * the transposed index too (built by the same call).  The kept set is the
 * CPU's sq_bsr_prune_pack's for l2 and topk_unstructured
 * (sq_cuda_actprune.h says how far that holds), and the buffers are the
 * CPU's sizes, so sq_bsr_bytes agrees.  *out: caller owns. */
static sq_status cuda_prune_pack(sq_ctx *ctx, const sq_tensor *x, const sq_actprune_cfg *cfg,
                                 sq_mem_cat cat, int with_t, sq_bsr **out)
{
    *out = NULL;
    int64_t R = x->shape[0], K = x->shape[1];
    sq_cuda_bsr v; /* the sizes first: grid limits checked, CSR's b = 1 */
    SQ_TRY(sq_cuda_bsr_shape_crit(ctx, R, K, cfg->block, cfg->keep, cfg->criterion, cfg->scope, &v));
    int64_t b = v.b;
    sq_bsr *m = calloc(1, sizeof *m);
    if (!m) return sq_fail(ctx, SQ_ERR_NOMEM, "bsr: out of host memory for the header");
    m->rows = R;
    m->cols = K;
    m->b = b;
    m->nbr = v.nbr;
    m->nbc = v.nbc;
    m->nnzb = v.nnzb;
    m->dtype = SQ_F32;
    m->cat = cat;
    int64_t np = m->nbr + 1, nz = m->nnzb, vs[3] = {m->nnzb, b, b};
    sq_status st;
    SQ_CHECK(sq_tensor_empty_dev(ctx, SQ_CUDA, SQ_I64, 1, &np, cat, &m->row_ptr));
    SQ_CHECK(sq_tensor_empty_dev(ctx, SQ_CUDA, SQ_I32, 1, &nz, cat, &m->col_idx));
    SQ_CHECK(sq_tensor_empty_dev(ctx, SQ_CUDA, SQ_F32, 3, vs, cat, &m->values));
    if (with_t) SQ_CHECK(cuda_transpose_bufs(ctx, m, cat, &m->col_ptr, &m->t_row, &m->t_blk));
    cuda_view(m, NULL, NULL, NULL, &v);
    SQ_CHECK(sq_cuda_bsr_prune_pack_crit(ctx, &v, sq_tensor_data(x), x->stride[0], x->stride[1], cfg->block,
                                         cfg->keep, cfg->criterion, cfg->scope));
    *out = m;
    return SQ_OK;
done:
    sq_bsr_free(m);
    return st;
}

/* dw (M,K) = dyᵀ (M,R) · x̂, x̂ = m on the GPU; g (R,M) contiguous.  A missing
 * transposed index is built as WORKSPACE for the call.  Arithmetic: TF32
 * when the context's TF32 flag is on (as the dense GEMMs then are), else
 * 3xTF32, which is about as accurate as fp32 (sq_cuda_actprune.h); a CSR
 * (topk_unstructured) takes sq_cuda_csr_dw, float64 sums, whatever the flag. */
static sq_status cuda_bsr_dw(sq_ctx *ctx, sq_bsr *m, const sq_tensor *g, int64_t M, sq_tensor *dw)
{
    sq_tensor *cp = NULL, *tr = NULL, *tb = NULL;
    sq_cuda_bsr v;
    sq_status st;
    if (!m->col_ptr) {
        SQ_CHECK(cuda_transpose_bufs(ctx, m, SQ_MEM_WORKSPACE, &cp, &tr, &tb));
        cuda_view(m, cp, tr, tb, &v);
        SQ_CHECK(sq_cuda_bsr_build_transpose(ctx, &v));
    } else {
        cuda_view(m, NULL, NULL, NULL, &v);
    }
    sq_cuda_dw_prec prec = sq_cuda_get_tf32(ctx) ? SQ_CUDA_DW_TF32 : SQ_CUDA_DW_3XTF32;
    if (m->b == 1) SQ_CHECK(sq_cuda_csr_dw(ctx, sq_tensor_data(dw), m->cols, sq_tensor_data(g), M, M, &v));
    else SQ_CHECK(sq_cuda_bsr_dw(ctx, sq_tensor_data(dw), m->cols, sq_tensor_data(g), M, M, &v, prec, 0));
done:
    /* stream-ordered: the cache hands these out again only to later work */
    sq_tensor_release(cp);
    sq_tensor_release(tr);
    sq_tensor_release(tb);
    return st;
}

/* What only the CPU runs: float64 (every criterion runs on the GPU). */
static sq_status need_gpu_cfg(sq_ctx *ctx, const char *fn, const sq_tensor *x)
{
    if (x->dtype != SQ_F32)
        return sq_fail(ctx, SQ_ERR_DTYPE, "%s: on the GPU the pruning kernels take float32, got %s", fn,
                       sq_dtype_name(x->dtype));
    return SQ_OK;
}

/* ---- the layer ------------------------------------------------------------------ */

/* dW (M,K) = dyᵀ · x̂ from the BSR the node holds as extra. */
static sq_status pruned_dw(sq_ctx *ctx, sq_node *node, sq_tensor *g, sq_tensor **dw)
{
    sq_bsr *m = node->extra;
    int64_t R = node->iarg[0], K = node->iarg[1], M = node->iarg[2];
    if (!m)
        return sq_fail(ctx, SQ_ERR_STATE, "linear_pruned: saved input was released before backward");
    if (bsr_on_cuda(m)) {
        int64_t ws[2] = {M, K};
        SQ_TRY(sq_new_on(ctx, g, g->dtype, 2, ws, dw));
        sq_status st = cuda_bsr_dw(ctx, m, g, M, *dw);
        if (st != SQ_OK) {
            sq_tensor_release(*dw);
            *dw = NULL;
        }
        return st;
    }
    sq_tensor *g2 = NULL;
    int64_t gs[2] = {R, M}, gst[2] = {M, 1}, ws[2] = {M, K};
    sq_status st;
    SQ_CHECK(sq_view_raw(ctx, g, 2, gs, gst, g->offset, &g2)); /* g is contiguous (...,M) */
    SQ_CHECK(sq_tensor_empty(ctx, g->dtype, 2, ws, dw));
    st = sq_bsr_dw(ctx, g2, m, *dw);
    if (st != SQ_OK) {
        sq_tensor_release(*dw);
        *dw = NULL;
    }
done:
    sq_tensor_release(g2);
    return st;
}

static sq_status linear_pruned_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout,
                                        sq_tensor **gin)
{
    return sq_linear_backward_with(ctx, node, gout, gin, pruned_dw);
}

sq_status sq_linear_pruned(sq_ctx *ctx, sq_tensor *x, sq_tensor *w, sq_tensor *b,
                           const sq_actprune_cfg *cfg, sq_tensor **y, sq_actprune_stats *stats)
{
    *y = NULL;
    if (stats) *stats = (sq_actprune_stats){0};
    SQ_TRY(sq_actprune_cfg_check(ctx, "linear_pruned", cfg));
    if (x && sq_on_cuda(x)) SQ_TRY(need_gpu_cfg(ctx, "linear_pruned", x));
    sq_tensor *out = NULL;
    sq_bsr *m = NULL;
    sq_status st;
    SQ_CHECK(sq_linear_record(ctx, "linear_pruned", linear_pruned_backward, x, w, b, &out));
    sq_node *n = out->grad_fn; /* out is new: a grad_fn is the node just recorded */
    if (n && n->need[1] && n->saved[0]) {
        sq_tensor *xs = n->saved[0]; /* x as (R,K), contiguous */
        double t0, t1, dw_flops;
        if (sq_on_cuda(xs)) {
            /* With cfg->time_compress the stream is drained before and
             * after, so compress_s is the prune-and-pack's own GPU time (not
             * the host's launch time) and a kernel error is blamed here; it
             * costs two pipeline drains per pruned layer and step.  Without
             * it nothing waits: compress_s is 0, a kernel error surfaces at
             * the next synchronisation, and dw_flops counts the kept blocks'
             * padding too (the exact count of real entries needs a device
             * read when a block row or column is partial). */
            int64_t entries = 0;
            if (cfg->time_compress) SQ_CHECK(sq_cuda_sync(ctx));
            t0 = sq_proc_monotonic();
            /* as on the CPU, a CSR keeps no transposed index in SAVED (its
             * dW builds one as workspace), so saved bytes agree */
            SQ_CHECK(cuda_prune_pack(ctx, xs, cfg, SQ_MEM_SAVED,
                                     cfg->transpose_at_pack && cfg->criterion != SQ_PRUNE_TOPK_UNSTRUCTURED, &m));
            if (cfg->time_compress) SQ_CHECK(sq_cuda_sync(ctx));
            t1 = cfg->time_compress ? sq_proc_monotonic() : t0;
            if (stats && cfg->time_compress) {
                sq_cuda_bsr v;
                cuda_view(m, NULL, NULL, NULL, &v);
                SQ_CHECK(sq_cuda_bsr_entries(ctx, &v, &entries));
            } else if (stats) {
                entries = m->nnzb * m->b * m->b; /* an upper bound: padding included */
            }
            dw_flops = 2.0 * (double)w->shape[0] * (double)entries;
        } else {
            t0 = sq_proc_monotonic();
            SQ_CHECK(sq_bsr_prune_pack(ctx, xs, cfg->block, cfg->keep, cfg->criterion, cfg->scope,
                                       SQ_MEM_SAVED, &m));
            /* CSR (topk_unstructured) has a row-wise kernel and needs no transposed index */
            if (cfg->transpose_at_pack && m->b > 1) SQ_CHECK(sq_bsr_build_transpose(ctx, m, SQ_MEM_SAVED));
            t1 = sq_proc_monotonic();
            dw_flops = stats ? sq_bsr_dw_flops(m, w->shape[0]) : 0;
        }
        if (stats) {
            int64_t R = xs->shape[0], K = xs->shape[1], bb = cfg->block;
            int unstructured = cfg->criterion == SQ_PRUNE_TOPK_UNSTRUCTURED;
            stats->pruned = 1;
            stats->kept_blocks = m->nnzb;
            stats->total_blocks = unstructured ? R * K : ((R + bb - 1) / bb) * ((K + bb - 1) / bb);
            stats->saved_bytes = sq_bsr_bytes(m);
            stats->value_bytes = sq_bsr_value_bytes(m);
            stats->dense_bytes = R * K * (int64_t)sq_dtype_size(xs->dtype);
            stats->compress_s = t1 - t0;
            stats->compress_timed = !sq_on_cuda(xs) || cfg->time_compress;
            stats->dw_flops = dw_flops;
            stats->dense_dw_flops = 2.0 * (double)w->shape[0] * (double)R * (double)K;
        }
        /* The node lets go of the dense x; the BSR's buffers are SAVED tensors
         * of their own, so the extra is charged 0 bytes (no double count). */
        sq_node_replace_saved(n, 0, NULL);
        sq_node_set_extra(ctx, n, m, free_bsr_extra, 0);
        m = NULL;
    }
    *y = out;
    out = NULL;
done:
    sq_bsr_free(m);
    sq_tensor_release(out);
    return st;
}

/* ‖a − h‖_F / ‖a‖_F of two host float tensors of the same size. */
static double rel_frobenius(const sq_tensor *a, const sq_tensor *h)
{
    double num = 0, den = 0;
    int64_t n = sq_tensor_numel(a);
    for (int64_t i = 0; i < n; i++) {
        double u = a->dtype == SQ_F32 ? ((const float *)sq_tensor_data(a))[i]
                                      : ((const double *)sq_tensor_data(a))[i];
        double v = h->dtype == SQ_F32 ? ((const float *)sq_tensor_data(h))[i]
                                      : ((const double *)sq_tensor_data(h))[i];
        num += (u - v) * (u - v);
        den += u * u;
    }
    return den > 0 ? sqrt(num / den) : (num > 0 ? INFINITY : 0.0);
}

sq_status sq_actprune_dw_error(sq_ctx *ctx, sq_tensor *x, sq_tensor *dy,
                               const sq_actprune_cfg *cfg, double *rel)
{
    *rel = NAN;
    SQ_TRY(sq_actprune_cfg_check(ctx, "actprune_dw_error", cfg));
    SQ_TRY(sq_need_float(ctx, "actprune_dw_error", "x", x));
    SQ_TRY(sq_need_float(ctx, "actprune_dw_error", "dy", dy));
    SQ_TRY(sq_need_same_dtype(ctx, "actprune_dw_error", x, dy));
    SQ_TRY(sq_need_same_device(ctx, "actprune_dw_error", "x", x, "dy", dy));
    int gpu = sq_on_cuda(x);
    if (gpu) SQ_TRY(need_gpu_cfg(ctx, "actprune_dw_error", x));
    char s1[64], s2[64];
    int64_t K = x->ndim ? x->shape[x->ndim - 1] : 0, M = dy->ndim ? dy->shape[dy->ndim - 1] : 0;
    int64_t R = K ? sq_tensor_numel(x) / K : 0;
    if (x->ndim < 1 || dy->ndim < 1 || K == 0 || M == 0 || sq_tensor_numel(dy) != R * M)
        return sq_fail(ctx, SQ_ERR_SHAPE, "actprune_dw_error: x %s and dy %s do not have the same "
                       "leading elements (need ...xK and ...xM)", SQ_SHAPE(x, s1), SQ_SHAPE(dy, s2));
    sq_tensor *xc = NULL, *gc = NULL, *x2 = NULL, *g2 = NULL, *dw = NULL, *dwh = NULL;
    sq_tensor *hdw = NULL, *hdwh = NULL;
    sq_bsr *m = NULL;
    sq_status st;
    int64_t xs[2] = {R, K}, xst[2] = {K, 1}, gs[2] = {R, M}, gst[2] = {M, 1}, ws[2] = {M, K};
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, x, &xc));
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, dy, &gc));
    SQ_CHECK(sq_view_raw(ctx, xc, 2, xs, xst, xc->offset, &x2));
    SQ_CHECK(sq_view_raw(ctx, gc, 2, gs, gst, gc->offset, &g2));
    SQ_CHECK(sq_new_on(ctx, x, x->dtype, 2, ws, &dw));
    SQ_CHECK(sq_new_on(ctx, x, x->dtype, 2, ws, &dwh));
    /* the dense reference: on the GPU cuBLAS, in the precision the context's
     * TF32 flag gives every float32 GEMM (the BSR dW follows the same flag) */
    SQ_CHECK(sq_gemm_on(ctx, sq_tensor_device(x), x->dtype, 1, 0, M, K, R, 1.0, sq_tensor_data(g2), M,
                        sq_tensor_data(x2), K, 0.0, sq_tensor_data(dw), K));
    if (gpu) {
        SQ_CHECK(cuda_prune_pack(ctx, x2, cfg, SQ_MEM_WORKSPACE, 1, &m));
        SQ_CHECK(cuda_bsr_dw(ctx, m, g2, M, dwh));
        SQ_CHECK(sq_tensor_to_device(ctx, dw, SQ_CPU, &hdw));
        SQ_CHECK(sq_tensor_to_device(ctx, dwh, SQ_CPU, &hdwh));
        *rel = rel_frobenius(hdw, hdwh);
    } else {
        SQ_CHECK(sq_bsr_prune_pack(ctx, x2, cfg->block, cfg->keep, cfg->criterion, cfg->scope,
                                   SQ_MEM_WORKSPACE, &m));
        SQ_CHECK(sq_bsr_dw(ctx, g2, m, dwh));
        *rel = rel_frobenius(dw, dwh);
    }
done:
    sq_bsr_free(m);
    sq_tensor_release(xc);
    sq_tensor_release(gc);
    sq_tensor_release(x2);
    sq_tensor_release(g2);
    sq_tensor_release(dw);
    sq_tensor_release(dwh);
    sq_tensor_release(hdw);
    sq_tensor_release(hdwh);
    return st;
}
