/* sq_ops.h — differentiable tensor ops (forward + backward, CPU).
 *
 * Convention: sq_<op>(ctx, inputs..., params..., &out).  Each op checks all
 * preconditions first and fails with a message naming the op and the
 * problem (shapes printed as 3x4).  On success *out holds a new reference.
 * Inputs may be non-contiguous views.  Float ops accept float32 and float64
 * (mixed dtypes are an error); index arguments are int64 (int32 accepted
 * where noted).  When grad mode is on and an input requires a gradient the
 * op records an autograd node; what it saves for backward is listed here. */
#ifndef SQ_OPS_H
#define SQ_OPS_H

#include "sq_autograd.h"

#define SQ_ALL_DIMS (-100)   /* reduce over every dim */

/* ---- views (share storage; differentiable) ---------------------------- */
/* shape may hold one -1 (inferred).  Copies only when t cannot be viewed. */
sq_status sq_reshape(sq_ctx *ctx, sq_tensor *t, int ndim, const int64_t *shape, sq_tensor **out);
sq_status sq_transpose(sq_ctx *ctx, sq_tensor *t, int d0, int d1, sq_tensor **out);
sq_status sq_permute(sq_ctx *ctx, sq_tensor *t, const int *perm, sq_tensor **out);
/* dims of t: [start, start+len) along dim */
sq_status sq_narrow(sq_ctx *ctx, sq_tensor *t, int dim, int64_t start, int64_t len, sq_tensor **out);
/* size-1 dims (and new leading dims) broadcast to shape; stride 0 */
sq_status sq_expand(sq_ctx *ctx, sq_tensor *t, int ndim, const int64_t *shape, sq_tensor **out);
/* differentiable contiguous copy (returns t retained if already contiguous) */
sq_status sq_contiguous(sq_ctx *ctx, sq_tensor *t, sq_tensor **out);

/* ---- elementwise (broadcasting) -------------------------------------- */
typedef enum { SQ_BIN_ADD, SQ_BIN_SUB, SQ_BIN_MUL, SQ_BIN_DIV } sq_binop;
/* saves: mul: a,b; div: a,b; add/sub: nothing */
sq_status sq_binary(sq_ctx *ctx, sq_binop op, sq_tensor *a, sq_tensor *b, sq_tensor **out);
sq_status sq_add(sq_ctx *ctx, sq_tensor *a, sq_tensor *b, sq_tensor **out);
sq_status sq_sub(sq_ctx *ctx, sq_tensor *a, sq_tensor *b, sq_tensor **out);
sq_status sq_mul(sq_ctx *ctx, sq_tensor *a, sq_tensor *b, sq_tensor **out);
sq_status sq_div(sq_ctx *ctx, sq_tensor *a, sq_tensor *b, sq_tensor **out);
/* out = t*mul + add (saves nothing) */
sq_status sq_scale_shift(sq_ctx *ctx, sq_tensor *t, double mul, double add, sq_tensor **out);
/* out = t^p (saves t) */
sq_status sq_pow_scalar(sq_ctx *ctx, sq_tensor *t, double p, sq_tensor **out);

typedef enum {
    SQ_UN_NEG, SQ_UN_EXP, SQ_UN_LOG, SQ_UN_SQRT, SQ_UN_ABS,
    SQ_UN_RELU, SQ_UN_GELU, SQ_UN_SIGMOID, SQ_UN_TANH, SQ_UN_COUNT
} sq_unop;
const char *sq_unop_name(sq_unop op);
/* saves the input (relu, gelu, log, abs) or the output (exp, sqrt, sigmoid, tanh).
 * GELU is the exact erf form. */
sq_status sq_unary(sq_ctx *ctx, sq_unop op, sq_tensor *t, sq_tensor **out);

/* ---- reductions --------------------------------------------------------- */
/* dim in [-ndim, ndim) or SQ_ALL_DIMS; saves nothing (sum, mean) */
sq_status sq_sum(sq_ctx *ctx, sq_tensor *t, int dim, int keepdim, sq_tensor **out);
sq_status sq_mean(sq_ctx *ctx, sq_tensor *t, int dim, int keepdim, sq_tensor **out);
/* max values along dim; gradient flows to the first argmax (saves indices) */
sq_status sq_max(sq_ctx *ctx, sq_tensor *t, int dim, int keepdim, sq_tensor **out);
/* argmax along dim as int64 (not differentiable) */
sq_status sq_argmax(sq_ctx *ctx, sq_tensor *t, int dim, sq_tensor **out);

/* ---- linear algebra ----------------------------------------------------- */
/* a (M,K) @ b (K,N); or batched a (B,M,K) @ b (B,K,N) or b (K,N).
 * saves a, b (only the ones the other's gradient needs) */
sq_status sq_matmul(sq_ctx *ctx, sq_tensor *a, sq_tensor *b, sq_tensor **out);
/* alpha * (a @ b) with alpha inside the GEMM (attention's 1/sqrt(d): one
 * pass over the scores instead of two); backward scales the same way.
 * A b that is the transpose of a contiguous buffer (k^T) is read in place. */
sq_status sq_matmul_scaled(sq_ctx *ctx, sq_tensor *a, sq_tensor *b, double alpha, sq_tensor **out);
/* y = x W^T + b.  x (...,K), W (M,K), b (M) or NULL; y (...,M).
 * saves x (for dW; slot 0, may be replaced by a compressed copy) and W (for dx).
 * A frozen W (requires_grad 0) skips the dW GEMM entirely. */
sq_status sq_linear(sq_ctx *ctx, sq_tensor *x, sq_tensor *w, sq_tensor *b, sq_tensor **out);

/* ---- neural-network ops ------------------------------------------------ */
/* along the last dim; causal: x (...,T,T) and entries j > i are masked out.
 * saves the output */
sq_status sq_softmax(sq_ctx *ctx, sq_tensor *x, int causal, sq_tensor **out);
sq_status sq_log_softmax(sq_ctx *ctx, sq_tensor *x, int causal, sq_tensor **out);
/* logits (N,C), targets int64/int32 (N) in [0,C); mean over N.
 * saves softmax probabilities and targets */
sq_status sq_cross_entropy(sq_ctx *ctx, sq_tensor *logits, sq_tensor *targets, sq_tensor **out);
/* over the last dim; w, b (D) or NULL.  saves x-hat and 1/std */
sq_status sq_layer_norm(sq_ctx *ctx, sq_tensor *x, sq_tensor *w, sq_tensor *b, double eps,
                        sq_tensor **out);
/* per-channel y = x*alpha + beta, alpha/beta (D) on the last dim (ResMLP Affine).
 * saves x (for dalpha) and alpha (for dx) */
sq_status sq_affine(sq_ctx *ctx, sq_tensor *x, sq_tensor *alpha, sq_tensor *beta, sq_tensor **out);
/* idx int64/int32 (...) into W (V,D) -> (...,D).  saves idx */
sq_status sq_embedding(sq_ctx *ctx, sq_tensor *idx, sq_tensor *w, sq_tensor **out);
/* inverted dropout from the context RNG; training 0 returns x.  saves the mask */
sq_status sq_dropout(sq_ctx *ctx, sq_tensor *x, double p, int training, sq_tensor **out);

/* ---- convolution and pooling (NCHW) ------------------------------------- */
/* x (N,C,H,W), w (O,C,kh,kw), b (O) or NULL -> (N,O,Ho,Wo).  im2col + GEMM.
 * saves x and w */
sq_status sq_conv2d(sq_ctx *ctx, sq_tensor *x, sq_tensor *w, sq_tensor *b, int stride, int pad,
                    sq_tensor **out);
/* saves argmax indices */
sq_status sq_max_pool2d(sq_ctx *ctx, sq_tensor *x, int k, int stride, int pad, sq_tensor **out);
/* padding counts as zero, divisor k*k (count_include_pad) */
sq_status sq_avg_pool2d(sq_ctx *ctx, sq_tensor *x, int k, int stride, int pad, sq_tensor **out);

/* ---- joining and indexing ------------------------------------------------ */
sq_status sq_concat(sq_ctx *ctx, int n, sq_tensor *const *ts, int dim, sq_tensor **out);
/* rows of x along dim picked by idx (1-d int64/int32).  saves idx */
sq_status sq_index_select(sq_ctx *ctx, sq_tensor *x, int dim, sq_tensor *idx, sq_tensor **out);
/* out[i][j] = x[i][idx[i][j]] for dim = 1 (general N-d, like torch.gather).  saves idx */
sq_status sq_gather(sq_ctx *ctx, sq_tensor *x, int dim, sq_tensor *idx, sq_tensor **out);

#endif
