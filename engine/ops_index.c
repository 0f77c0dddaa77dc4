/* ops_index.c — joining and indexing: concat, index_select, gather.
 *
 * The forward passes move whole elements (any dtype); gradients exist for
 * float inputs only.  An autograd node has at most SQ_NODE_MAX_IN inputs,
 * so a differentiable concat of more tensors is built as a tree of concats
 * (each level copies the data once more; without gradients it is one copy). */
#include "sq_ops_internal.h"

#include <string.h>

static sq_status need_known_device(sq_ctx *ctx, const char *op, const char *what, const sq_tensor *t)
{
    SQ_TRY(sq_need_tensor(ctx, op, what, t));
    if (t->storage->device != SQ_CPU && t->storage->device != SQ_CUDA)
        return sq_fail(ctx, SQ_ERR_DEVICE, "%s: %s is on an unknown device", op, what);
    return SQ_OK;
}

/* A tensor that is to receive a gradient must be float. */
static sq_status need_float_for_grad(sq_ctx *ctx, const char *op, const sq_tensor *t)
{
    if (t->requires_grad && ctx->grad_enabled && !sq_is_float(t->dtype))
        return sq_fail(ctx, SQ_ERR_DTYPE, "%s: a %s input cannot require a gradient", op,
                       sq_dtype_name(t->dtype));
    return SQ_OK;
}

/* The GPU's forward index kernels move floats; integer tensors travel as
 * floats of their size (a load and a store move the bits unchanged). */
static sq_dtype move_dtype(sq_dtype dt) { return sq_dtype_size(dt) == 4 ? SQ_F32 : SQ_F64; }

/* (outer, len, inner) around dim of a shape */
static void split_at(int ndim, const int64_t *shape, int dim, int64_t *outer, int64_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < dim; i++) *outer *= shape[i];
    for (int i = dim + 1; i < ndim; i++) *inner *= shape[i];
}

/* dst[o, j] += src[o, j] over n elements of a float dtype */
static void add_elems(sq_dtype dt, void *dst, const void *src, int64_t n)
{
    if (dt == SQ_F32) {
        float *d = dst;
        const float *s = src;
        for (int64_t i = 0; i < n; i++) d[i] += s[i];
    } else {
        double *d = dst;
        const double *s = src;
        for (int64_t i = 0; i < n; i++) d[i] += s[i];
    }
}

/* ---- concat ------------------------------------------------------------------- */

/* iarg[0] = dim, iarg[1 + i] = size of input i along dim */
static sq_status concat_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    int dim = (int)node->iarg[0], nd = node->out_ndim;
    sq_tensor *g;
    SQ_TRY(sq_tensor_contiguous_raw(ctx, gout, &g));
    int64_t outer, inner, total = node->out_shape[dim], start = 0;
    split_at(nd, node->out_shape, dim, &outer, &inner);
    size_t es = sq_dtype_size(g->dtype);
    sq_status st = SQ_OK;
    if (sq_on_cuda(g)) {
        void *ds[SQ_NODE_MAX_IN] = {NULL};
        int64_t lens[SQ_NODE_MAX_IN];
        for (int i = 0; i < node->n_in; i++) {
            lens[i] = node->iarg[1 + i];
            if (!node->need[i]) continue;
            int64_t sh[SQ_MAX_DIMS];
            memcpy(sh, node->out_shape, sizeof sh);
            sh[dim] = lens[i];
            SQ_CHECK(sq_new_on(ctx, g, g->dtype, nd, sh, &gin[i]));
            ds[i] = sq_tensor_data(gin[i]);
        }
        SQ_CHECK(sq_cuda_concat_bwd(ctx, g->dtype, ds, sq_tensor_data(g), node->n_in, lens, outer, inner));
        goto done;
    }
    for (int i = 0; i < node->n_in; i++) {
        int64_t len = node->iarg[1 + i];
        if (node->need[i]) {
            int64_t sh[SQ_MAX_DIMS];
            memcpy(sh, node->out_shape, sizeof sh);
            sh[dim] = len;
            SQ_CHECK(sq_tensor_empty(ctx, g->dtype, nd, sh, &gin[i]));
            size_t blk = (size_t)(len * inner) * es;
            for (int64_t o = 0; o < outer && blk; o++)
                memcpy((char *)sq_tensor_data(gin[i]) + (size_t)o * blk,
                       (const char *)sq_tensor_data(g) + (size_t)((o * total + start) * inner) * es, blk);
        }
        start += len;
    }
done:
    sq_tensor_release(g);
    return st;
}

sq_status sq_concat(sq_ctx *ctx, int n, sq_tensor *const *ts, int dim, sq_tensor **out)
{
    *out = NULL;
    char s1[64], s2[64];
    if (n < 1 || !ts) return sq_fail(ctx, SQ_ERR_ARG, "concat: need at least one tensor, got %d", n);
    for (int i = 0; i < n; i++) {
        if (!ts[i]) return sq_fail(ctx, SQ_ERR_ARG, "concat: tensor #%d is missing", i + 1);
        SQ_TRY(need_known_device(ctx, "concat", "a tensor", ts[i]));
        SQ_TRY(need_float_for_grad(ctx, "concat", ts[i]));
    }
    sq_tensor *t0 = ts[0];
    if (t0->ndim < 1) return sq_fail(ctx, SQ_ERR_SHAPE, "concat: cannot concatenate scalars");
    SQ_TRY(sq_norm_dim(ctx, "concat", t0->ndim, &dim));
    int64_t sh[SQ_MAX_DIMS];
    memcpy(sh, t0->shape, sizeof sh);
    sh[dim] = 0;
    for (int i = 0; i < n; i++) {
        sq_tensor *t = ts[i];
        if (t->dtype != t0->dtype)
            return sq_fail(ctx, SQ_ERR_DTYPE, "concat: tensor #%d is %s, tensor #1 is %s", i + 1,
                           sq_dtype_name(t->dtype), sq_dtype_name(t0->dtype));
        int ok = t->ndim == t0->ndim;
        for (int d = 0; ok && d < t->ndim; d++) ok = d == dim || t->shape[d] == t0->shape[d];
        if (!ok)
            return sq_fail(ctx, SQ_ERR_SHAPE, "concat: tensor #%d is %s, tensor #1 is %s (must agree except dim %d)",
                           i + 1, SQ_SHAPE(t, s1), SQ_SHAPE(t0, s2), dim);
        sh[dim] += t->shape[dim];
        SQ_TRY(sq_need_same_device(ctx, "concat", "tensor #1", t0, "another tensor", t));
    }
    int grad = sq_ag_needs_grad(ctx, n, ts);
    if (grad && n > SQ_NODE_MAX_IN) { /* a tree: <= 4 groups, each concatenated recursively */
        sq_tensor *parts[SQ_NODE_MAX_IN] = {NULL};
        int gs = (n + SQ_NODE_MAX_IN - 1) / SQ_NODE_MAX_IN, np = 0;
        sq_status st = SQ_OK;
        for (int i = 0; i < n && st == SQ_OK; i += gs, np++)
            st = sq_concat(ctx, n - i < gs ? n - i : gs, ts + i, dim, &parts[np]);
        if (st == SQ_OK) st = sq_concat(ctx, np, parts, dim, out);
        for (int i = 0; i < np; i++) sq_tensor_release(parts[i]);
        return st;
    }
    sq_tensor *y = NULL, *c = NULL;
    sq_status st;
    SQ_CHECK(sq_new_on(ctx, t0, t0->dtype, t0->ndim, sh, &y));
    int64_t outer, inner, total = sh[dim], start = 0;
    split_at(t0->ndim, sh, dim, &outer, &inner);
    size_t es = sq_dtype_size(t0->dtype);
    for (int i = 0; i < n && sq_on_cuda(t0); i++) { /* strided copy of each block into place */
        int64_t len = ts[i]->shape[dim], bs[3] = {outer, len, inner}, os[3] = {total * inner, inner, 1};
        SQ_CHECK(sq_tensor_contiguous_raw(ctx, ts[i], &c));
        SQ_CHECK(sq_cuda_copy_strided(ctx, t0->dtype, (char *)sq_tensor_data(y) + (size_t)(start * inner) * es,
                                      os, sq_tensor_data(c), NULL, 3, bs));
        sq_tensor_release(c);
        c = NULL;
        start += len;
    }
    for (int i = 0; i < n && !sq_on_cuda(t0); i++) { /* each input's block of len*inner per outer index */
        int64_t len = ts[i]->shape[dim];
        size_t blk = (size_t)(len * inner) * es;
        SQ_CHECK(sq_tensor_contiguous_raw(ctx, ts[i], &c));
        for (int64_t o = 0; o < outer && blk; o++)
            memcpy((char *)sq_tensor_data(y) + (size_t)((o * total + start) * inner) * es,
                   (const char *)sq_tensor_data(c) + (size_t)o * blk, blk);
        sq_tensor_release(c);
        c = NULL;
        start += len;
    }
    if (grad) {
        sq_node *node;
        SQ_CHECK(sq_ag_attach(ctx, y, "concat", concat_backward, n, ts, &node));
        node->iarg[0] = dim;
        for (int i = 0; i < n; i++) node->iarg[1 + i] = ts[i]->shape[dim];
    }
    *out = y;
    y = NULL;
done:
    sq_tensor_release(c);
    sq_tensor_release(y);
    return st;
}

/* ---- index_select --------------------------------------------------------------- */

/* saved[0] = idx contiguous; iarg[0] = dim */
static sq_status index_select_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    sq_tensor *idx = node->saved[0], *g = NULL;
    int dim = (int)node->iarg[0], nd = node->in_ndim[0];
    const int64_t *in = node->in_shape[0];
    int64_t outer, inner, S = in[dim], L = sq_tensor_numel(idx);
    split_at(nd, in, dim, &outer, &inner);
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, gout, &g));
    SQ_CHECK(sq_zeros_on(ctx, g, g->dtype, nd, in, &gin[0]));
    if (sq_on_cuda(g)) {
        SQ_CHECK(sq_cuda_index_select_bwd(ctx, g->dtype, sq_tensor_data(gin[0]), sq_tensor_data(g),
                                          sq_tensor_data(idx), outer, S, inner, L));
        goto done;
    }
    size_t es = sq_dtype_size(g->dtype);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < L; j++)
            add_elems(g->dtype, (char *)sq_tensor_data(gin[0]) + (size_t)((o * S + sq_index_at(idx, j)) * inner) * es,
                      (const char *)sq_tensor_data(g) + (size_t)((o * L + j) * inner) * es, inner);
done:
    sq_tensor_release(g);
    return st;
}

/* Preconditions shared by index_select and gather; normalises *dim. */
static sq_status check_indexing(sq_ctx *ctx, const char *name, sq_tensor *x, sq_tensor *idx, int *dim)
{
    SQ_TRY(need_known_device(ctx, name, "input", x));
    SQ_TRY(sq_need_index(ctx, name, "index", idx));
    SQ_TRY(need_known_device(ctx, name, "index", idx));
    SQ_TRY(need_float_for_grad(ctx, name, x));
    if (x->ndim < 1) return sq_fail(ctx, SQ_ERR_SHAPE, "%s: input is a scalar", name);
    return sq_norm_dim(ctx, name, x->ndim, dim);
}

sq_status sq_index_select(sq_ctx *ctx, sq_tensor *x, int dim, sq_tensor *idx, sq_tensor **out)
{
    *out = NULL;
    char s1[64], s2[64];
    SQ_TRY(check_indexing(ctx, "index_select", x, idx, &dim));
    if (idx->ndim != 1)
        return sq_fail(ctx, SQ_ERR_SHAPE, "index_select: index %s must be 1-d", SQ_SHAPE(idx, s1));
    int64_t S = x->shape[dim], L = idx->shape[0], outer, inner;
    SQ_TRY(sq_need_same_device(ctx, "index_select", "input", x, "index", idx));
    sq_tensor *ic = NULL, *xc = NULL, *y = NULL;
    sq_status st;
    if (sq_on_cuda(x)) { /* indices checked on the device, reported at the next sync */
        int64_t sh[SQ_MAX_DIMS];
        memcpy(sh, x->shape, sizeof sh);
        sh[dim] = L;
        split_at(x->ndim, x->shape, dim, &outer, &inner);
        SQ_CHECK(sq_index_i64(ctx, idx, &ic));
        SQ_CHECK(sq_tensor_contiguous_raw(ctx, x, &xc));
        SQ_CHECK(sq_new_on(ctx, x, x->dtype, x->ndim, sh, &y));
        SQ_CHECK(sq_cuda_index_select(ctx, move_dtype(x->dtype), sq_tensor_data(y), sq_tensor_data(xc),
                                      sq_tensor_data(ic), outer, S, inner, L));
        goto record;
    }
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, idx, &ic));
    for (int64_t j = 0; j < L; j++) {
        int64_t v = sq_index_at(ic, j);
        if (v < 0 || v >= S) {
            st = sq_fail(ctx, SQ_ERR_ARG, "index_select: index %lld at position %lld outside [0, %lld) "
                         "for dim %d of %s", (long long)v, (long long)j, (long long)S, dim, SQ_SHAPE(x, s2));
            goto done;
        }
    }
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, x, &xc));
    int64_t sh[SQ_MAX_DIMS];
    memcpy(sh, x->shape, sizeof sh);
    sh[dim] = L;
    SQ_CHECK(sq_tensor_empty(ctx, x->dtype, x->ndim, sh, &y));
    split_at(x->ndim, x->shape, dim, &outer, &inner);
    size_t es = sq_dtype_size(x->dtype), blk = (size_t)inner * es;
    for (int64_t o = 0; o < outer && blk; o++)
        for (int64_t j = 0; j < L; j++)
            memcpy((char *)sq_tensor_data(y) + (size_t)(o * L + j) * blk,
                   (const char *)sq_tensor_data(xc) + (size_t)(o * S + sq_index_at(ic, j)) * blk, blk);
record:
    if (sq_ag_needs_grad(ctx, 1, &x)) {
        sq_node *node;
        SQ_CHECK(sq_ag_attach(ctx, y, "index_select", index_select_backward, 1, &x, &node));
        sq_node_save(node, ic);
        node->iarg[0] = dim;
    }
    *out = y;
    y = NULL;
done:
    sq_tensor_release(ic);
    sq_tensor_release(xc);
    sq_tensor_release(y);
    return st;
}

/* ---- gather ------------------------------------------------------------------------ */

/* Offset in contiguous x (shape xs) of each element of idx (shape is, same
 * ndim), with dim replaced by the index value: calls per element k. */
#define GATHER_WALK(BODY)                                                                     \
    do {                                                                                      \
        int64_t pos[SQ_MAX_DIMS] = {0}, xstr[SQ_MAX_DIMS], s_ = 1;                            \
        for (int d_ = nd - 1; d_ >= 0; d_--) {                                                \
            xstr[d_] = s_;                                                                    \
            s_ *= xs[d_];                                                                     \
        }                                                                                     \
        int64_t base = 0; /* offset of pos with pos[dim] = 0 */                               \
        for (int64_t k = 0; k < total; k++) {                                                 \
            int64_t off = base + sq_index_at(ic, k) * xstr[dim];                              \
            BODY;                                                                             \
            for (int d_ = nd - 1; d_ >= 0; d_--) {                                            \
                if (d_ != dim) base += xstr[d_];                                              \
                if (++pos[d_] < is[d_]) break;                                                \
                if (d_ != dim) base -= pos[d_] * xstr[d_];                                    \
                pos[d_] = 0;                                                                  \
            }                                                                                 \
        }                                                                                     \
    } while (0)

/* saved[0] = idx contiguous; iarg[0] = dim.  dx = scatter-add of g. */
static sq_status gather_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    sq_tensor *ic = node->saved[0], *g = NULL;
    int dim = (int)node->iarg[0], nd = node->in_ndim[0];
    const int64_t *xs = node->in_shape[0], *is = ic->shape;
    int64_t total = sq_tensor_numel(ic);
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, gout, &g));
    SQ_CHECK(sq_zeros_on(ctx, g, g->dtype, nd, xs, &gin[0]));
    if (sq_on_cuda(g)) {
        SQ_CHECK(sq_cuda_gather_bwd(ctx, g->dtype, sq_tensor_data(gin[0]), gin[0]->stride, xs[dim],
                                    sq_tensor_data(g), sq_tensor_data(ic), nd, is, dim));
    } else if (g->dtype == SQ_F32) {
        float *d = sq_tensor_data(gin[0]);
        const float *gp = sq_tensor_data(g);
        GATHER_WALK(d[off] += gp[k]);
    } else {
        double *d = sq_tensor_data(gin[0]);
        const double *gp = sq_tensor_data(g);
        GATHER_WALK(d[off] += gp[k]);
    }
done:
    sq_tensor_release(g);
    return st;
}

sq_status sq_gather(sq_ctx *ctx, sq_tensor *x, int dim, sq_tensor *idx, sq_tensor **out)
{
    *out = NULL;
    char s1[64], s2[64];
    SQ_TRY(check_indexing(ctx, "gather", x, idx, &dim));
    int nd = x->ndim;
    int ok = idx->ndim == nd;
    for (int d = 0; ok && d < nd; d++) ok = d == dim || idx->shape[d] <= x->shape[d];
    if (!ok)
        return sq_fail(ctx, SQ_ERR_SHAPE, "gather: index %s does not fit input %s along dim %d "
                       "(same rank, no larger except in dim)", SQ_SHAPE(idx, s1), SQ_SHAPE(x, s2), dim);
    const int64_t *xs = x->shape, *is = idx->shape;
    int64_t total = sq_tensor_numel(idx), S = x->shape[dim];
    SQ_TRY(sq_need_same_device(ctx, "gather", "input", x, "index", idx));
    sq_tensor *ic = NULL, *xc = NULL, *y = NULL;
    sq_status st;
    if (sq_on_cuda(x)) { /* x read through its strides; indices checked on the device */
        SQ_CHECK(sq_index_i64(ctx, idx, &ic));
        SQ_CHECK(sq_new_on(ctx, x, x->dtype, nd, is, &y));
        SQ_CHECK(sq_cuda_gather(ctx, move_dtype(x->dtype), sq_tensor_data(y), sq_tensor_data(x), x->stride, S,
                                sq_tensor_data(ic), nd, is, dim));
        goto record;
    }
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, idx, &ic));
    for (int64_t k = 0; k < total; k++) {
        int64_t v = sq_index_at(ic, k);
        if (v < 0 || v >= S) {
            st = sq_fail(ctx, SQ_ERR_ARG, "gather: index %lld at position %lld outside [0, %lld) "
                         "for dim %d of %s", (long long)v, (long long)k, (long long)S, dim, SQ_SHAPE(x, s2));
            goto done;
        }
    }
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, x, &xc));
    SQ_CHECK(sq_tensor_empty(ctx, x->dtype, nd, is, &y));
    if (sq_dtype_size(x->dtype) == 4) {
        uint32_t *o = sq_tensor_data(y);
        const uint32_t *xp = sq_tensor_data(xc);
        GATHER_WALK(o[k] = xp[off]);
    } else {
        uint64_t *o = sq_tensor_data(y);
        const uint64_t *xp = sq_tensor_data(xc);
        GATHER_WALK(o[k] = xp[off]);
    }
record:
    if (sq_ag_needs_grad(ctx, 1, &x)) {
        sq_node *node;
        SQ_CHECK(sq_ag_attach(ctx, y, "gather", gather_backward, 1, &x, &node));
        sq_node_save(node, ic);
        node->iarg[0] = dim;
    }
    *out = y;
    y = NULL;
done:
    sq_tensor_release(ic);
    sq_tensor_release(xc);
    sq_tensor_release(y);
    return st;
}
