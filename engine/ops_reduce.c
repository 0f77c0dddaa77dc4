/* ops_reduce.c — sum, mean, max, argmax over one dim or all dims. */
#include "sq_ops_internal.h"

#include <math.h>
#include <string.h>

/* View the contiguous input as (outer, len, inner) around `dim`. */
typedef struct { int64_t outer, len, inner; } red_geom;

static red_geom geom_of(const sq_tensor *t, int dim)
{
    red_geom g = {1, 1, 1};
    for (int i = 0; i < t->ndim; i++) {
        if (i < dim) g.outer *= t->shape[i];
        else if (i == dim) g.len = t->shape[i];
        else g.inner *= t->shape[i];
    }
    return g;
}

static void reduced_shape(const sq_tensor *t, int dim, int keepdim, int *nd, int64_t *shape)
{
    int k = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (dim == SQ_ALL_DIMS || i == dim) {
            if (keepdim) shape[k++] = 1;
        } else {
            shape[k++] = t->shape[i];
        }
    }
    *nd = k;
}

static sq_status sum_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    /* broadcast g back over the reduced dim: reshape to keepdim form, expand */
    const int64_t *in_shape = node->in_shape[0];
    int nd = node->in_ndim[0], dim = (int)node->iarg[1];
    double scale = node->darg[0];
    int64_t ks[SQ_MAX_DIMS];
    for (int i = 0; i < nd; i++) ks[i] = (dim == SQ_ALL_DIMS || i == dim) ? 1 : in_shape[i];
    sq_tensor *g = NULL, *k = NULL, *e = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, gout, &g));
    SQ_CHECK(sq_reshape(ctx, g, nd, ks, &k));
    SQ_CHECK(sq_expand(ctx, k, nd, in_shape, &e));
    SQ_CHECK(sq_scale_shift(ctx, e, scale, 0.0, &gin[0])); /* materialises contiguous */
done:
    sq_tensor_release(g);
    sq_tensor_release(k);
    sq_tensor_release(e);
    return st;
}

static sq_status sum_impl(sq_ctx *ctx, const char *name, sq_tensor *t, int dim, int keepdim,
                          int mean, sq_tensor **out)
{
    *out = NULL;
    SQ_TRY(sq_need_float(ctx, name, "tensor", t));
    if (dim != SQ_ALL_DIMS) SQ_TRY(sq_norm_dim(ctx, name, t->ndim, &dim));
    int nd;
    int64_t shape[SQ_MAX_DIMS];
    reduced_shape(t, dim, keepdim, &nd, shape);
    sq_tensor *c, *o;
    SQ_TRY(sq_tensor_contiguous_raw(ctx, t, &c));
    /* the GPU reduction writes every output; the CPU loops accumulate into zeros */
    sq_status st = sq_on_cuda(t) ? sq_new_on(ctx, t, t->dtype, nd, shape, &o)
                                 : sq_tensor_zeros(ctx, t->dtype, nd, shape, &o);
    if (st != SQ_OK) {
        sq_tensor_release(c);
        return st;
    }
    red_geom g = dim == SQ_ALL_DIMS ? (red_geom){1, sq_tensor_numel(t), 1} : geom_of(t, dim);
    double scale = mean ? 1.0 / (double)(g.len ? g.len : 1) : 1.0;
    if (mean && g.len == 0) scale = NAN;
    if (sq_on_cuda(t)) {
        sq_cuda_red op = mean ? SQ_CUDA_RED_MEAN : SQ_CUDA_RED_SUM;
        int64_t xs[3] = {g.len * g.inner, g.inner, 1};
        st = dim == SQ_ALL_DIMS
                 ? sq_cuda_reduce_all(ctx, op, t->dtype, sq_tensor_data(o), NULL, sq_tensor_data(c), g.len)
                 : sq_cuda_reduce_dim(ctx, op, t->dtype, sq_tensor_data(o), NULL, sq_tensor_data(c),
                                      g.outer, g.len, g.inner, xs);
        if (st != SQ_OK) {
            sq_tensor_release(c);
            sq_tensor_release(o);
            return st;
        }
    } else if (t->dtype == SQ_F32) {
        const float *p = sq_tensor_data(c);
        float *q = sq_tensor_data(o);
        for (int64_t a = 0; a < g.outer; a++)
            for (int64_t l = 0; l < g.len; l++)
                for (int64_t i = 0; i < g.inner; i++) q[a * g.inner + i] += p[(a * g.len + l) * g.inner + i];
        if (mean)
            for (int64_t i = 0; i < g.outer * g.inner; i++) q[i] = (float)(q[i] * scale);
    } else {
        const double *p = sq_tensor_data(c);
        double *q = sq_tensor_data(o);
        for (int64_t a = 0; a < g.outer; a++)
            for (int64_t l = 0; l < g.len; l++)
                for (int64_t i = 0; i < g.inner; i++) q[a * g.inner + i] += p[(a * g.len + l) * g.inner + i];
        if (mean)
            for (int64_t i = 0; i < g.outer * g.inner; i++) q[i] *= scale;
    }
    sq_tensor_release(c);
    if (sq_ag_needs_grad(ctx, 1, &t)) {
        sq_node *node;
        st = sq_ag_attach(ctx, o, name, sum_backward, 1, &t, &node);
        if (st != SQ_OK) {
            sq_tensor_release(o);
            return st;
        }
        node->iarg[0] = t->ndim;
        node->iarg[1] = dim;
        node->darg[0] = scale;
    }
    *out = o;
    return SQ_OK;
}

sq_status sq_sum(sq_ctx *ctx, sq_tensor *t, int dim, int keepdim, sq_tensor **out)
{
    return sum_impl(ctx, "sum", t, dim, keepdim, 0, out);
}

sq_status sq_mean(sq_ctx *ctx, sq_tensor *t, int dim, int keepdim, sq_tensor **out)
{
    return sum_impl(ctx, "mean", t, dim, keepdim, 1, out);
}

/* argmax positions (flat index into the reduced dim) as int64 (outer*inner) */
static sq_status argmax_raw(sq_ctx *ctx, sq_tensor *c, red_geom g, int nd, const int64_t *shape,
                            sq_tensor **idx)
{
    SQ_TRY(sq_new_on(ctx, c, SQ_I64, nd, shape, idx));
    if (sq_on_cuda(c)) { /* the values come along; a scratch tensor takes them */
        sq_tensor *v = NULL;
        int64_t xs[3] = {g.len * g.inner, g.inner, 1};
        sq_status st = sq_tensor_empty_dev(ctx, SQ_CUDA, c->dtype, nd, shape, SQ_MEM_WORKSPACE, &v);
        if (st == SQ_OK)
            st = sq_cuda_reduce_dim(ctx, SQ_CUDA_RED_MAX, c->dtype, sq_tensor_data(v), sq_tensor_data(*idx),
                                    sq_tensor_data(c), g.outer, g.len, g.inner, xs);
        sq_tensor_release(v);
        if (st != SQ_OK) {
            sq_tensor_release(*idx);
            *idx = NULL;
        }
        return st;
    }
    int64_t *ip = sq_tensor_data(*idx);
    for (int64_t a = 0; a < g.outer; a++)
        for (int64_t i = 0; i < g.inner; i++) {
            int64_t best = 0;
            double bv = -INFINITY;
            for (int64_t l = 0; l < g.len; l++) {
                int64_t off = (a * g.len + l) * g.inner + i;
                double v = c->dtype == SQ_F32 ? ((const float *)sq_tensor_data(c))[off]
                                              : ((const double *)sq_tensor_data(c))[off];
                if (v > bv || (l == 0) || isnan(v)) {
                    if (l == 0 || v > bv || (isnan(v) && !isnan(bv))) {
                        bv = v;
                        best = l;
                    }
                }
            }
            ip[a * g.inner + i] = best;
        }
    return SQ_OK;
}

static sq_status max_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    const int64_t *in_shape = node->in_shape[0];
    int nd = node->in_ndim[0];
    red_geom g = {node->iarg[1], node->iarg[2], node->iarg[3]};
    sq_tensor *gc, *idx = node->saved[0];
    SQ_TRY(sq_tensor_contiguous_raw(ctx, gout, &gc));
    if (sq_on_cuda(gc)) { /* dx written whole: dy at the argmax, 0 elsewhere */
        sq_status st = sq_new_on(ctx, gc, gout->dtype, nd, in_shape, &gin[0]);
        if (st == SQ_OK)
            st = sq_cuda_reduce_dim_bwd(ctx, SQ_CUDA_RED_MAX, gc->dtype, sq_tensor_data(gin[0]),
                                        sq_tensor_data(gc), sq_tensor_data(idx), g.outer, g.len, g.inner);
        sq_tensor_release(gc);
        return st;
    }
    sq_status st = sq_tensor_zeros(ctx, gout->dtype, nd, in_shape, &gin[0]);
    if (st == SQ_OK) {
        const int64_t *ip = sq_tensor_data(idx);
        for (int64_t a = 0; a < g.outer; a++)
            for (int64_t i = 0; i < g.inner; i++) {
                int64_t o = a * g.inner + i, off = (a * g.len + ip[o]) * g.inner + i;
                if (gout->dtype == SQ_F32)
                    ((float *)sq_tensor_data(gin[0]))[off] = ((const float *)sq_tensor_data(gc))[o];
                else
                    ((double *)sq_tensor_data(gin[0]))[off] = ((const double *)sq_tensor_data(gc))[o];
            }
    }
    sq_tensor_release(gc);
    return st;
}

sq_status sq_max(sq_ctx *ctx, sq_tensor *t, int dim, int keepdim, sq_tensor **out)
{
    *out = NULL;
    SQ_TRY(sq_need_float(ctx, "max", "tensor", t));
    if (dim != SQ_ALL_DIMS) SQ_TRY(sq_norm_dim(ctx, "max", t->ndim, &dim));
    if (sq_tensor_numel(t) == 0) return sq_fail(ctx, SQ_ERR_ARG, "max: empty tensor");
    int nd;
    int64_t shape[SQ_MAX_DIMS];
    reduced_shape(t, dim, keepdim, &nd, shape);
    red_geom g = dim == SQ_ALL_DIMS ? (red_geom){1, sq_tensor_numel(t), 1} : geom_of(t, dim);
    sq_tensor *c = NULL, *idx = NULL, *o = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, t, &c));
    if (sq_on_cuda(t)) { /* values and positions in one pass */
        int64_t xs[3] = {g.len * g.inner, g.inner, 1};
        SQ_CHECK(sq_new_on(ctx, t, SQ_I64, nd, shape, &idx));
        SQ_CHECK(sq_new_on(ctx, t, t->dtype, nd, shape, &o));
        SQ_CHECK(sq_cuda_reduce_dim(ctx, SQ_CUDA_RED_MAX, t->dtype, sq_tensor_data(o), sq_tensor_data(idx),
                                    sq_tensor_data(c), g.outer, g.len, g.inner, xs));
        goto record;
    }
    SQ_CHECK(argmax_raw(ctx, c, g, nd, shape, &idx));
    SQ_CHECK(sq_tensor_empty(ctx, t->dtype, nd, shape, &o));
    const int64_t *ip = sq_tensor_data(idx);
    for (int64_t a = 0; a < g.outer; a++)
        for (int64_t i = 0; i < g.inner; i++) {
            int64_t k = a * g.inner + i, off = (a * g.len + ip[k]) * g.inner + i;
            if (t->dtype == SQ_F32) ((float *)sq_tensor_data(o))[k] = ((const float *)sq_tensor_data(c))[off];
            else ((double *)sq_tensor_data(o))[k] = ((const double *)sq_tensor_data(c))[off];
        }
record:
    if (sq_ag_needs_grad(ctx, 1, &t)) {
        sq_node *node;
        SQ_CHECK(sq_ag_attach(ctx, o, "max", max_backward, 1, &t, &node));
        node->iarg[0] = t->ndim;
        node->iarg[1] = g.outer;
        node->iarg[2] = g.len;
        node->iarg[3] = g.inner;
        sq_node_save(node, idx);
    }
    *out = o;
    o = NULL;
done:
    sq_tensor_release(c);
    sq_tensor_release(idx);
    sq_tensor_release(o);
    return st;
}

sq_status sq_argmax(sq_ctx *ctx, sq_tensor *t, int dim, sq_tensor **out)
{
    *out = NULL;
    SQ_TRY(sq_need_float(ctx, "argmax", "tensor", t));
    SQ_TRY(sq_norm_dim(ctx, "argmax", t->ndim, &dim));
    if (sq_tensor_numel(t) == 0) return sq_fail(ctx, SQ_ERR_ARG, "argmax: empty tensor");
    int nd;
    int64_t shape[SQ_MAX_DIMS];
    reduced_shape(t, dim, 0, &nd, shape);
    sq_tensor *c;
    SQ_TRY(sq_tensor_contiguous_raw(ctx, t, &c));
    sq_status st = argmax_raw(ctx, c, geom_of(t, dim), nd, shape, out);
    sq_tensor_release(c);
    return st;
}
