/* sq_autograd.c — graph construction, backward traversal, graph release. */
#include "sq_autograd.h"
#include "cuda/sq_cuda_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sq_ag_needs_grad(const sq_ctx *ctx, int n, sq_tensor *const *inputs)
{
    if (!ctx->grad_enabled) return 0;
    for (int i = 0; i < n; i++)
        if (inputs[i] && inputs[i]->requires_grad) return 1;
    return 0;
}

sq_status sq_ag_attach(sq_ctx *ctx, sq_tensor *out, const char *name, sq_backward_fn bw,
                       int n_in, sq_tensor *const *inputs, sq_node **node)
{
    *node = NULL;
    if (n_in > SQ_NODE_MAX_IN) return sq_fail(ctx, SQ_ERR_ARG, "%s: too many autograd inputs", name);
    sq_node *n = calloc(1, sizeof *n);
    if (!n) return sq_fail(ctx, SQ_ERR_NOMEM, "%s: out of host memory for an autograd node", name);
    n->refcount = 1;
    n->name = name;
    n->backward = bw;
    n->n_in = n_in;
    for (int i = 0; i < n_in; i++) {
        sq_tensor *t = inputs[i];
        if (t && i < 2) {
            n->in_ndim[i] = t->ndim;
            memcpy(n->in_shape[i], t->shape, sizeof t->shape);
        }
        if (!t || !t->requires_grad) continue;
        n->need[i] = 1;
        if (t->grad_fn) {
            n->in_node[i] = t->grad_fn;
            sq_node_retain(t->grad_fn);
        } else {
            n->in_leaf[i] = t;
            sq_tensor_retain(t);
        }
    }
    n->out_dtype = out->dtype;
    n->out_ndim = out->ndim;
    memcpy(n->out_shape, out->shape, sizeof n->out_shape);
    if (out->grad_fn) sq_node_release(ctx, out->grad_fn);
    out->grad_fn = n;
    out->requires_grad = 1;
    *node = n;
    return SQ_OK;
}

void sq_node_save(sq_node *node, sq_tensor *t)
{
    if (node->n_saved >= SQ_NODE_MAX_SAVED) return; /* programming error; ops save <= 4 */
    node->saved_version[node->n_saved] = t ? t->storage->version : 0;
    node->saved[node->n_saved++] = t;
    if (t) {
        sq_tensor_retain(t);
        sq_storage_hold_saved(t->storage);
    }
}

sq_status sq_node_save_output(sq_ctx *ctx, sq_node *node, sq_tensor *out)
{
    sq_tensor *alias;
    sq_status st = sq_view_raw(ctx, out, out->ndim, out->shape, out->stride, out->offset, &alias);
    if (st != SQ_OK) return st;
    sq_node_save(node, alias);
    sq_tensor_release(alias);
    return SQ_OK;
}

static void drop_saved_tensor(sq_tensor *t)
{
    if (!t) return;
    sq_storage_drop_saved(t->storage);
    sq_tensor_release(t);
}

void sq_node_replace_saved(sq_node *node, int i, sq_tensor *t)
{
    if (i < 0 || i >= node->n_saved) return;
    if (t) {
        sq_tensor_retain(t);
        sq_storage_hold_saved(t->storage);
    }
    drop_saved_tensor(node->saved[i]);
    node->saved[i] = t;
    node->saved_version[i] = t ? t->storage->version : 0;
}

void sq_node_set_extra(sq_ctx *ctx, sq_node *node, void *extra, void (*free_extra)(void *),
                       int64_t bytes)
{
    node->extra = extra;
    node->free_extra = free_extra;
    node->extra_bytes = bytes;
    sq_mem_add(ctx, SQ_CPU, SQ_MEM_SAVED, bytes);
}

static void free_saved_state(sq_ctx *ctx, sq_node *n)
{
    for (int i = 0; i < n->n_saved; i++) {
        drop_saved_tensor(n->saved[i]);
        n->saved[i] = NULL;
    }
    if (n->extra) {
        if (n->free_extra) n->free_extra(n->extra);
        if (ctx) sq_mem_sub(ctx, SQ_CPU, SQ_MEM_SAVED, n->extra_bytes);
        n->extra = NULL;
        n->extra_bytes = 0;
    }
    n->freed = 1;
}

void sq_node_retain(sq_node *n) { n->refcount++; }

/* Iterative, so a deep graph cannot overflow the C stack. */
void sq_node_release(sq_ctx *ctx, sq_node *n)
{
    if (!n) return;
    size_t cap = 64, len = 0;
    sq_node **stack = malloc(cap * sizeof *stack);
    sq_node *cur = n;
    for (;;) {
        if (--cur->refcount == 0) {
            free_saved_state(ctx, cur);
            sq_tensor_release(cur->gacc);
            for (int i = 0; i < cur->n_in; i++) {
                sq_tensor_release(cur->in_leaf[i]);
                if (cur->in_node[i]) {
                    if (stack && len == cap) {
                        sq_node **ns = realloc(stack, 2 * cap * sizeof *stack);
                        if (ns) {
                            stack = ns;
                            cap *= 2;
                        }
                    }
                    if (stack && len < cap) stack[len++] = cur->in_node[i];
                    else sq_node_release(ctx, cur->in_node[i]); /* no memory: recurse */
                }
            }
            free(cur);
        }
        if (!stack || len == 0) break;
        cur = stack[--len];
    }
    free(stack);
}

/* dst += src (same shape; dst contiguous and exclusively ours). */
static sq_status add_into(sq_ctx *ctx, sq_tensor *dst, const sq_tensor *src)
{
    int64_t n = sq_tensor_numel(dst);
    if (n != sq_tensor_numel(src))
        return sq_fail(ctx, SQ_ERR_SHAPE, "autograd: gradient of %lld elements where %lld expected",
                       (long long)sq_tensor_numel(src), (long long)n);
    if (sq_tensor_device(dst) != sq_tensor_device(src))
        return sq_fail(ctx, SQ_ERR_DEVICE, "autograd: a gradient on %s for a tensor on %s",
                       sq_device_name(sq_tensor_device(src)), sq_device_name(sq_tensor_device(dst)));
    if (sq_tensor_device(dst) == SQ_CUDA) { /* dst = dst + src in place, src through its strides */
        if (dst->dtype != src->dtype || !sq_is_float(dst->dtype))
            return sq_fail(ctx, SQ_ERR_DTYPE, "autograd: gradient of %s for a %s tensor",
                           sq_dtype_name(src->dtype), sq_dtype_name(dst->dtype));
        const sq_tensor *s2 = src;
        sq_tensor *view = NULL;
        if (!sq_shape_equal(dst, src)) { /* same numel, other shape: view src as dst (contiguous) */
            sq_tensor *c = NULL;
            SQ_TRY(sq_tensor_contiguous_raw(ctx, (sq_tensor *)src, &c));
            sq_status vs = sq_view_raw(ctx, c, dst->ndim, dst->shape, dst->stride, c->offset, &view);
            sq_tensor_release(c);
            if (vs != SQ_OK) return vs;
            s2 = view;
        }
        sq_status st = sq_cuda_binary(ctx, SQ_BIN_ADD, dst->dtype, sq_tensor_data(dst), sq_tensor_data(dst),
                                      dst->stride, sq_tensor_data(s2), s2->stride, dst->ndim, dst->shape);
        sq_tensor_release(view);
        return st;
    }
    if (dst->dtype == src->dtype && sq_tensor_is_contiguous(src)) {
        if (dst->dtype == SQ_F32) {
            float *d = sq_tensor_data(dst);
            const float *s = sq_tensor_data(src);
            for (int64_t i = 0; i < n; i++) d[i] += s[i];
            return SQ_OK;
        }
        if (dst->dtype == SQ_F64) {
            double *d = sq_tensor_data(dst);
            const double *s = sq_tensor_data(src);
            for (int64_t i = 0; i < n; i++) d[i] += s[i];
            return SQ_OK;
        }
    }
    for (int64_t i = 0; i < n; i++)
        sq_tensor_set_flat(dst, i, sq_tensor_get_flat(dst, i) + sq_tensor_get_flat(src, i));
    return SQ_OK;
}

/* slot + g into a new tensor of slot's shape (category cat). */
static sq_status add_new(sq_ctx *ctx, const sq_tensor *slot, sq_tensor *g, sq_mem_cat cat, sq_tensor **out)
{
    SQ_TRY(sq_tensor_empty_dev(ctx, sq_tensor_device(slot), slot->dtype, slot->ndim, slot->shape, cat, out));
    sq_status st;
    if (sq_tensor_device(slot) == SQ_CUDA && sq_shape_equal(slot, g) && slot->dtype == g->dtype)
        st = sq_cuda_binary(ctx, SQ_BIN_ADD, slot->dtype, sq_tensor_data(*out), sq_tensor_data(slot),
                            slot->stride, sq_tensor_data(g), g->stride, slot->ndim, slot->shape);
    else {
        st = sq_tensor_copy_(ctx, *out, slot);
        if (st == SQ_OK) st = add_into(ctx, *out, g);
    }
    if (st != SQ_OK) {
        sq_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

/* Takes ownership of g (one reference).  A node's incoming gradient (OTHER)
 * is only read by its backward, so the first one is adopted as it is --
 * even when it shares memory with another node's (both operands of an add
 * get the same gradient; a view's gradient is a view) -- and a second one is
 * added out of place while the slot shares memory, in place once it owns
 * it.  A leaf's .grad (GRAD) must own contiguous memory charged to GRAD: it
 * adopts only a gradient nobody else holds, and accumulates in place. */
static sq_status accumulate(sq_ctx *ctx, sq_tensor **slot, sq_tensor *g, sq_mem_cat cat)
{
    sq_status st = SQ_OK;
    if (!*slot) {
        int exclusive = g->refcount == 1 && g->storage->refcount == 1 && g->grad_fn == NULL &&
                        sq_tensor_is_contiguous(g) && g->offset == 0 &&
                        g->storage->nbytes == (size_t)sq_tensor_numel(g) * sq_dtype_size(g->dtype);
        if (exclusive) {
            sq_storage_set_category(g->storage, cat);
            *slot = g;
            return SQ_OK;
        }
        if (cat == SQ_MEM_OTHER && g->grad_fn == NULL && sq_tensor_is_contiguous(g)) {
            *slot = g; /* shared, read-only: no copy */
            return SQ_OK;
        }
        sq_tensor *c;
        st = sq_tensor_empty_dev(ctx, sq_tensor_device(g), g->dtype, g->ndim, g->shape, cat, &c);
        if (st == SQ_OK) st = sq_tensor_copy_(ctx, c, g);
        if (st == SQ_OK) *slot = c;
        else sq_tensor_release(c);
    } else if (cat == SQ_MEM_OTHER &&
               ((*slot)->refcount != 1 || (*slot)->storage->refcount != 1 || !sq_tensor_is_contiguous(*slot))) {
        sq_tensor *sum = NULL;
        st = add_new(ctx, *slot, g, cat, &sum);
        if (st == SQ_OK) {
            sq_tensor_release(*slot);
            *slot = sum;
        }
    } else {
        st = add_into(ctx, *slot, g);
    }
    sq_tensor_release(g);
    return st;
}

sq_status sq_ag_accumulate_leaf(sq_ctx *ctx, sq_tensor *leaf, sq_tensor *g)
{
    sq_tensor_retain(g);
    return accumulate(ctx, &leaf->grad, g, SQ_MEM_GRAD);
}

typedef struct { sq_node **v; size_t n, cap; } node_vec;

static int vec_push(node_vec *s, sq_node *n)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 64;
        sq_node **nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) return 0;
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n++] = n;
    return 1;
}

sq_status sq_backward(sq_ctx *ctx, sq_tensor *root, sq_tensor *grad)
{
    if (!root->requires_grad)
        return sq_fail(ctx, SQ_ERR_STATE, "backward: the tensor does not require a gradient "
                                          "(no parameter or input feeding it requires one)");
    if (!grad && sq_tensor_numel(root) != 1) {
        char b[64];
        return sq_fail(ctx, SQ_ERR_SHAPE, "backward: a gradient is needed for a non-scalar output of shape %s",
                       sq_shape_str(root, b, sizeof b));
    }
    if (grad && sq_tensor_numel(grad) != sq_tensor_numel(root))
        return sq_fail(ctx, SQ_ERR_SHAPE, "backward: gradient has %lld elements, output has %lld",
                       (long long)sq_tensor_numel(grad), (long long)sq_tensor_numel(root));
    if (grad && sq_tensor_device(grad) != sq_tensor_device(root))
        return sq_fail(ctx, SQ_ERR_DEVICE, "backward: the gradient is on %s, the output on %s",
                       sq_device_name(sq_tensor_device(grad)), sq_device_name(sq_tensor_device(root)));
    sq_tensor *g0;
    sq_status st = grad ? sq_tensor_clone(ctx, grad, &g0)
                        : sq_tensor_full_dev(ctx, sq_tensor_device(root), root->dtype, root->ndim,
                                             root->shape, 1.0, &g0);
    if (st != SQ_OK) return st;
    if (!root->grad_fn) { /* a leaf: its gradient is the seed */
        return accumulate(ctx, &root->grad, g0, SQ_MEM_GRAD);
    }
    if (root->grad_fn->freed) {
        sq_tensor_release(g0);
        return sq_fail(ctx, SQ_ERR_STATE, "backward: the graph behind this tensor was already used "
                                          "by a backward pass and freed");
    }
    int saved_mode = ctx->grad_enabled;
    ctx->grad_enabled = 0;
    node_vec all = {0}, stack = {0}, ready = {0};
    /* 1. discover reachable nodes and count each one's consumers */
    sq_node *r = root->grad_fn;
    int ok = vec_push(&all, r) && vec_push(&stack, r);
    r->mark = 1;
    while (ok && stack.n) {
        sq_node *n = stack.v[--stack.n];
        for (int i = 0; i < n->n_in && ok; i++) {
            sq_node *m = n->in_node[i];
            if (!m) continue;
            m->pending++;
            if (!m->mark) {
                m->mark = 1;
                ok = vec_push(&all, m) && vec_push(&stack, m);
            }
        }
    }
    if (!ok) st = sq_fail(ctx, SQ_ERR_NOMEM, "backward: out of host memory walking the graph");
    /* 2. run nodes once all their consumers have sent their gradient */
    if (st == SQ_OK) {
        r->gacc = g0;
        g0 = NULL;
        if (!vec_push(&ready, r)) st = sq_fail(ctx, SQ_ERR_NOMEM, "backward: out of host memory");
    }
    while (st == SQ_OK && ready.n) {
        sq_node *n = ready.v[--ready.n];
        sq_tensor *gin[SQ_NODE_MAX_IN] = {0};
        if (n->freed) {
            st = sq_fail(ctx, SQ_ERR_STATE, "backward: node '%s' was already used by a backward pass and freed", n->name);
            break;
        }
        if (n->gacc) {
            /* a saved tensor written in place since it was saved would give
             * silently wrong gradients: refuse, naming the op */
            for (int i = 0; i < n->n_saved && st == SQ_OK; i++)
                if (n->saved[i] && n->saved[i]->storage->version != n->saved_version[i])
                    st = sq_fail(ctx, SQ_ERR_STATE,
                                 "backward: a tensor saved by '%s' was modified in place after it was "
                                 "saved (fill_, copy_, set, add_ ...); clone it before modifying it",
                                 n->name);
            if (st != SQ_OK) break;
            st = n->backward(ctx, n, n->gacc, gin);
            if (st != SQ_OK) {
                char msg[sizeof ctx->err];
                memcpy(msg, ctx->err, sizeof msg);
                snprintf(ctx->err, sizeof ctx->err, "backward of %s: %.900s", n->name, msg);
            }
        }
        for (int i = 0; i < n->n_in; i++) {
            if (st == SQ_OK && gin[i]) {
                if (n->in_node[i]) {
                    st = accumulate(ctx, &n->in_node[i]->gacc, gin[i], SQ_MEM_OTHER);
                    gin[i] = NULL;
                } else if (n->in_leaf[i]) {
                    st = accumulate(ctx, &n->in_leaf[i]->grad, gin[i], SQ_MEM_GRAD);
                    gin[i] = NULL;
                }
            }
            sq_tensor_release(gin[i]);
            sq_node *m = n->in_node[i];
            if (m && --m->pending == 0 && st == SQ_OK && !vec_push(&ready, m))
                st = sq_fail(ctx, SQ_ERR_NOMEM, "backward: out of host memory");
        }
        sq_tensor_release(n->gacc);
        n->gacc = NULL;
        free_saved_state(ctx, n);
    }
    for (size_t i = 0; i < all.n; i++) {
        sq_node *n = all.v[i];
        n->mark = 0;
        n->pending = 0;
        sq_tensor_release(n->gacc);
        n->gacc = NULL;
    }
    sq_tensor_release(g0);
    free(all.v);
    free(stack.v);
    free(ready.v);
    ctx->grad_enabled = saved_mode;
    return st;
}

sq_status sq_ag_unbroadcast(sq_ctx *ctx, sq_tensor *g, int ndim, const int64_t *shape,
                            sq_tensor **out)
{
    *out = NULL;
    int same = g->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = g->shape[i] == shape[i];
    if (same) {
        sq_tensor_retain(g);
        *out = g;
        return SQ_OK;
    }
    sq_tensor *r;
    sq_status st = sq_tensor_device(g) == SQ_CUDA
                       ? sq_tensor_empty_dev(ctx, SQ_CUDA, g->dtype, ndim, shape, SQ_MEM_OTHER, &r)
                       : sq_tensor_zeros(ctx, g->dtype, ndim, shape, &r);
    if (st != SQ_OK) return st;
    /* map every element of g onto r: broadcast dims of r have stride 0 */
    int nd = g->ndim;
    int64_t rstride[SQ_MAX_DIMS] = {0};
    for (int i = 0; i < nd; i++) {
        int ir = ndim - nd + i;
        rstride[i] = (ir >= 0 && shape[ir] != 1) ? r->stride[ir] : 0;
    }
    if (sq_tensor_device(g) == SQ_CUDA) { /* sums over the zero-stride dims, every output written */
        sq_tensor *gc = NULL;
        st = sq_tensor_contiguous_raw(ctx, g, &gc);
        if (st == SQ_OK)
            st = sq_cuda_sum_to(ctx, g->dtype, sq_tensor_data(r), rstride, sq_tensor_data(gc), nd, g->shape);
        sq_tensor_release(gc);
        if (st != SQ_OK) {
            sq_tensor_release(r);
            return st;
        }
        *out = r;
        return SQ_OK;
    }
    int64_t total = sq_tensor_numel(g), idx[SQ_MAX_DIMS] = {0};
    for (int64_t k = 0; k < total; k++) {
        int64_t goff = g->offset, roff = 0;
        for (int d = 0; d < nd; d++) {
            goff += idx[d] * g->stride[d];
            roff += idx[d] * rstride[d];
        }
        if (g->dtype == SQ_F32) ((float *)r->storage->data)[roff] += ((float *)g->storage->data)[goff];
        else ((double *)r->storage->data)[roff] += ((double *)g->storage->data)[goff];
        for (int d = nd - 1; d >= 0; d--) {
            if (++idx[d] < g->shape[d]) break;
            idx[d] = 0;
        }
    }
    *out = r;
    return SQ_OK;
}
