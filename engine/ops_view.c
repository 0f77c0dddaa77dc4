/* ops_view.c — differentiable views: reshape, transpose, permute, narrow,
 * expand, contiguous.  Views share the input's storage; gradients are
 * mapped back to the input's shape. */
#include "sq_ops_internal.h"

#include <string.h>

/* The gradient of a view is gout laid back onto the input's shape. */
static sq_status reshape_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    int nd = node->in_ndim[0];
    sq_tensor *gc;
    SQ_TRY(sq_tensor_contiguous_raw(ctx, gout, &gc));
    int64_t shape[SQ_MAX_DIMS], stride[SQ_MAX_DIMS];
    const int64_t *in_shape = node->in_shape[0];
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        shape[i] = in_shape[i];
        stride[i] = s;
        s *= shape[i];
    }
    sq_status st = sq_view_raw(ctx, gc, nd, shape, stride, gc->offset, &gin[0]);
    sq_tensor_release(gc);
    return st;
}

/* The node records the input's shape itself (node->in_shape[0]). */
static sq_status attach_shape_node(sq_ctx *ctx, sq_tensor *in, sq_tensor *out, const char *name,
                                   sq_backward_fn bw, sq_node **node)
{
    return sq_ag_attach(ctx, out, name, bw, 1, &in, node);
}

sq_status sq_reshape(sq_ctx *ctx, sq_tensor *t, int ndim, const int64_t *shape, sq_tensor **out)
{
    *out = NULL;
    SQ_TRY(sq_need_tensor(ctx, "reshape", "tensor", t));
    if (ndim < 0 || ndim > SQ_MAX_DIMS)
        return sq_fail(ctx, SQ_ERR_ARG, "reshape: rank %d outside 0..%d", ndim, SQ_MAX_DIMS);
    int64_t sh[SQ_MAX_DIMS], known = 1, n = sq_tensor_numel(t);
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        sh[i] = shape[i];
        if (sh[i] == -1) {
            if (infer >= 0) return sq_fail(ctx, SQ_ERR_ARG, "reshape: more than one -1 in the new shape");
            infer = i;
        } else if (sh[i] < 0) {
            return sq_fail(ctx, SQ_ERR_ARG, "reshape: negative size %lld", (long long)sh[i]);
        } else {
            if (sh[i] > 0 && known > INT64_MAX / sh[i])
                return sq_fail(ctx, SQ_ERR_ARG, "reshape: the new shape has more than 2^63 elements");
            known *= sh[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || n % known != 0) goto bad;
        sh[infer] = n / known;
        known = n;
    }
    if (known != n) goto bad;
    sq_tensor *c = NULL, *v = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, t, &c));
    int64_t stride[SQ_MAX_DIMS], s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= sh[i];
    }
    SQ_CHECK(sq_view_raw(ctx, c, ndim, sh, stride, c->offset, &v));
    if (sq_ag_needs_grad(ctx, 1, &t)) {
        sq_node *node;
        SQ_CHECK(attach_shape_node(ctx, t, v, "reshape", reshape_backward, &node));
    }
    *out = v;
    v = NULL;
done:
    sq_tensor_release(c);
    sq_tensor_release(v);
    return st;
bad:;
    char b[64];
    return sq_fail(ctx, SQ_ERR_SHAPE, "reshape: cannot view %s (%lld elements) with the requested shape",
                   SQ_SHAPE(t, b), (long long)n);
}

/* permute: iarg[1..nd] holds the permutation; backward applies its inverse */
static sq_status permute_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    int nd = (int)node->iarg[0];
    int inv[SQ_MAX_DIMS];
    for (int i = 0; i < nd; i++) inv[node->iarg[1 + i]] = i;
    int64_t shape[SQ_MAX_DIMS], stride[SQ_MAX_DIMS];
    for (int i = 0; i < nd; i++) {
        shape[i] = gout->shape[inv[i]];
        stride[i] = gout->stride[inv[i]];
    }
    return sq_view_raw(ctx, gout, nd, shape, stride, gout->offset, &gin[0]);
}

sq_status sq_permute(sq_ctx *ctx, sq_tensor *t, const int *perm, sq_tensor **out)
{
    *out = NULL;
    SQ_TRY(sq_need_tensor(ctx, "permute", "tensor", t));
    int nd = t->ndim, seen[SQ_MAX_DIMS] = {0};
    int64_t shape[SQ_MAX_DIMS], stride[SQ_MAX_DIMS];
    for (int i = 0; i < nd; i++) {
        int p = perm[i];
        if (p < 0) p += nd;
        if (p < 0 || p >= nd || seen[p])
            return sq_fail(ctx, SQ_ERR_ARG, "permute: entry %d (%d) is not a permutation of 0..%d", i,
                           perm[i], nd - 1);
        seen[p] = 1;
        shape[i] = t->shape[p];
        stride[i] = t->stride[p];
    }
    SQ_TRY(sq_view_raw(ctx, t, nd, shape, stride, t->offset, out));
    if (sq_ag_needs_grad(ctx, 1, &t)) {
        sq_node *node;
        sq_status st = sq_ag_attach(ctx, *out, "permute", permute_backward, 1, &t, &node);
        if (st != SQ_OK) {
            sq_tensor_release(*out);
            *out = NULL;
            return st;
        }
        node->iarg[0] = nd;
        for (int i = 0; i < nd; i++) node->iarg[1 + i] = perm[i] < 0 ? perm[i] + nd : perm[i];
    }
    return SQ_OK;
}

sq_status sq_transpose(sq_ctx *ctx, sq_tensor *t, int d0, int d1, sq_tensor **out)
{
    *out = NULL;
    SQ_TRY(sq_need_tensor(ctx, "transpose", "tensor", t));
    SQ_TRY(sq_norm_dim(ctx, "transpose", t->ndim, &d0));
    SQ_TRY(sq_norm_dim(ctx, "transpose", t->ndim, &d1));
    int perm[SQ_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return sq_permute(ctx, t, perm, out);
}

/* narrow: iarg[0]=dim, iarg[1]=start; gradient scattered into zeros */
static sq_status narrow_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    int dim = (int)node->iarg[0];
    const int64_t *in_shape = node->in_shape[0];
    int nd = gout->ndim;
    sq_tensor *g = NULL, *slice = NULL;
    sq_status st;
    SQ_CHECK(sq_zeros_on(ctx, gout, gout->dtype, nd, in_shape, &g));
    int64_t shape[SQ_MAX_DIMS];
    memcpy(shape, g->shape, sizeof shape);
    shape[dim] = gout->shape[dim];
    SQ_CHECK(sq_view_raw(ctx, g, nd, shape, g->stride, node->iarg[1] * g->stride[dim], &slice));
    SQ_CHECK(sq_tensor_copy_(ctx, slice, gout));
    gin[0] = g;
    g = NULL;
done:
    sq_tensor_release(slice);
    sq_tensor_release(g);
    return st;
}

sq_status sq_narrow(sq_ctx *ctx, sq_tensor *t, int dim, int64_t start, int64_t len, sq_tensor **out)
{
    *out = NULL;
    SQ_TRY(sq_need_tensor(ctx, "narrow", "tensor", t));
    SQ_TRY(sq_norm_dim(ctx, "narrow", t->ndim, &dim));
    if (start < 0 || len < 0 || start + len > t->shape[dim])
        return sq_fail(ctx, SQ_ERR_ARG, "narrow: range [%lld, %lld) outside dim %d of size %lld",
                       (long long)start, (long long)(start + len), dim, (long long)t->shape[dim]);
    int64_t shape[SQ_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[dim] = len;
    SQ_TRY(sq_view_raw(ctx, t, t->ndim, shape, t->stride, t->offset + start * t->stride[dim], out));
    if (sq_ag_needs_grad(ctx, 1, &t)) {
        sq_node *node;
        sq_status st = attach_shape_node(ctx, t, *out, "narrow", narrow_backward, &node);
        if (st != SQ_OK) {
            sq_tensor_release(*out);
            *out = NULL;
            return st;
        }
        node->iarg[0] = dim;
        node->iarg[1] = start;
    }
    return SQ_OK;
}

static sq_status expand_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    return sq_ag_unbroadcast(ctx, gout, node->in_ndim[0], node->in_shape[0], &gin[0]);
}

sq_status sq_expand(sq_ctx *ctx, sq_tensor *t, int ndim, const int64_t *shape, sq_tensor **out)
{
    *out = NULL;
    SQ_TRY(sq_need_tensor(ctx, "expand", "tensor", t));
    if (ndim < t->ndim || ndim > SQ_MAX_DIMS)
        return sq_fail(ctx, SQ_ERR_ARG, "expand: cannot expand a %d-d tensor to %d dims", t->ndim, ndim);
    int64_t sh[SQ_MAX_DIMS], stride[SQ_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        int j = i - (ndim - t->ndim);
        int64_t cur = j >= 0 ? t->shape[j] : 1;
        int64_t want = shape[i] == -1 ? cur : shape[i];
        if (cur != want && cur != 1) {
            char b[64];
            return sq_fail(ctx, SQ_ERR_SHAPE, "expand: dim %d of %s has size %lld, cannot expand to %lld",
                           i, SQ_SHAPE(t, b), (long long)cur, (long long)want);
        }
        sh[i] = want;
        stride[i] = (j >= 0 && cur == want) ? t->stride[j] : 0;
    }
    SQ_TRY(sq_view_raw(ctx, t, ndim, sh, stride, t->offset, out));
    if (sq_ag_needs_grad(ctx, 1, &t)) {
        sq_node *node;
        sq_status st = attach_shape_node(ctx, t, *out, "expand", expand_backward, &node);
        if (st != SQ_OK) {
            sq_tensor_release(*out);
            *out = NULL;
            return st;
        }
    }
    return SQ_OK;
}

static sq_status contiguous_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    (void)ctx;
    (void)node;
    sq_tensor_retain(gout);
    gin[0] = gout;
    return SQ_OK;
}

sq_status sq_contiguous(sq_ctx *ctx, sq_tensor *t, sq_tensor **out)
{
    *out = NULL;
    SQ_TRY(sq_need_tensor(ctx, "contiguous", "tensor", t));
    if (sq_tensor_is_contiguous(t)) {
        sq_tensor_retain(t);
        *out = t;
        return SQ_OK;
    }
    SQ_TRY(sq_tensor_clone(ctx, t, out));
    if (sq_ag_needs_grad(ctx, 1, &t)) {
        sq_node *node;
        sq_status st = sq_ag_attach(ctx, *out, "contiguous", contiguous_backward, 1, &t, &node);
        if (st != SQ_OK) {
            sq_tensor_release(*out);
            *out = NULL;
            return st;
        }
    }
    return SQ_OK;
}
