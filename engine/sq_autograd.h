/* sq_autograd.h — reverse-mode autograd graph.
 *
 * A differentiable op that has an input needing a gradient creates one
 * sq_node.  The node keeps, explicitly: an edge per input (the input's own
 * grad_fn, or the leaf tensor whose .grad receives the gradient, or nothing
 * when that input needs no gradient), and the tensors it saved for backward
 * (counted in the SAVED memory category).  A layer may swap a saved tensor
 * for a compressed stand-in with sq_node_replace_saved; the backward
 * function then sees the stand-in.
 *
 * Frozen parameters (requires_grad = 0) produce no edge, so the op's
 * backward never computes that gradient: the GEMM is skipped, not masked.
 * Backward frees saved tensors node by node as it goes. */
#ifndef SQ_AUTOGRAD_H
#define SQ_AUTOGRAD_H

#include "sq_tensor.h"

#define SQ_NODE_MAX_IN 4
#define SQ_NODE_MAX_SAVED 6

typedef struct sq_node sq_node;

/* Computes input gradients from gout (the gradient of the node's output).
 * gin[i] is only to be set where node->need[i]; set it to a new reference of
 * the input's shape (the caller releases it). */
typedef sq_status (*sq_backward_fn)(sq_ctx *ctx, sq_node *node, sq_tensor *gout,
                                    sq_tensor **gin);

struct sq_node {
    int refcount;
    const char *name;                 /* op name, static string */
    sq_backward_fn backward;
    int n_in;
    int need[SQ_NODE_MAX_IN];         /* 1 if input i needs a gradient */
    sq_node *in_node[SQ_NODE_MAX_IN]; /* owned ref: input's grad_fn */
    sq_tensor *in_leaf[SQ_NODE_MAX_IN]; /* owned ref: leaf accumulating .grad */
    int n_saved;
    sq_tensor *saved[SQ_NODE_MAX_SAVED]; /* owned refs; NULL once freed */
    int64_t saved_version[SQ_NODE_MAX_SAVED]; /* storage version when saved */
    int64_t iarg[8];                  /* op parameters */
    double darg[4];
    void *extra;                      /* op-owned state, freed by free_extra */
    void (*free_extra)(void *extra);
    int64_t extra_bytes;              /* bytes of extra charged to SAVED */
    /* shapes of the first two inputs, recorded by sq_ag_attach (metadata,
     * not charged to memory accounting) */
    int in_ndim[2];
    int64_t in_shape[2][SQ_MAX_DIMS];
    /* output metadata (for shape checks and zero grads) */
    sq_dtype out_dtype;
    int out_ndim;
    int64_t out_shape[SQ_MAX_DIMS];
    int freed;                        /* backward ran and released saved state */
    /* used during backward */
    sq_tensor *gacc;
    int pending;
    int mark;
};

/* True when grad mode is on and any of the inputs requires a gradient. */
int sq_ag_needs_grad(const sq_ctx *ctx, int n, sq_tensor *const *inputs);

/* Creates a node for `out` with the given inputs (NULL inputs allowed: they
 * get no edge).  Sets out->grad_fn and out->requires_grad.  Returns the node
 * (borrowed; owned by out) through *node.  Call only when sq_ag_needs_grad. */
sq_status sq_ag_attach(sq_ctx *ctx, sq_tensor *out, const char *name, sq_backward_fn bw,
                       int n_in, sq_tensor *const *inputs, sq_node **node);
/* Saves t for backward (retains it; storage counted as SAVED). */
void sq_node_save(sq_node *node, sq_tensor *t);
/* Saves the op's own output: a fresh view of its storage is saved, never
 * `out` itself (out -> node -> out would be a reference cycle). */
sq_status sq_node_save_output(sq_ctx *ctx, sq_node *node, sq_tensor *out);
/* Replaces saved slot i with t (or NULL); the old one is released. */
void sq_node_replace_saved(sq_node *node, int i, sq_tensor *t);
/* Charges op-owned extra state to SAVED memory so it is counted exactly. */
void sq_node_set_extra(sq_ctx *ctx, sq_node *node, void *extra, void (*free_extra)(void *),
                       int64_t bytes);

void sq_node_retain(sq_node *n);
void sq_node_release(sq_ctx *ctx, sq_node *n);

/* Runs backward from root.  grad: gradient of root (NULL means ones; root
 * must then have one element).  Gradients accumulate into leaves' .grad. */
sq_status sq_backward(sq_ctx *ctx, sq_tensor *root, sq_tensor *grad);

/* Accumulates g into leaf->grad (allocating it in the GRAD category). */
sq_status sq_ag_accumulate_leaf(sq_ctx *ctx, sq_tensor *leaf, sq_tensor *g);

/* Reduces a broadcast gradient g back to `shape` (sums broadcast dims).
 * Returns a new reference. */
sq_status sq_ag_unbroadcast(sq_ctx *ctx, sq_tensor *g, int ndim, const int64_t *shape,
                            sq_tensor **out);

#endif
