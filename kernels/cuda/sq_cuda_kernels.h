/* sq_cuda_kernels.h — GPU compute kernels on raw device buffers.
 *
 * The GPU counterpart of what the engine's ops compute (kernels/sq_cpu.h
 * and the loops inside engine/ops_*.c and engine/sq_optim.c).  No tensors,
 * no autograd, no allocation visible to the caller: device pointers and
 * sizes in, results written into caller-owned device buffers, outputs
 * first (gemm keeps BLAS order, like sq_cpu_gemm).  Float kernels take
 * dt = SQ_F32 or SQ_F64; index arguments are int64 on the device.
 *
 * Every call launches on the context stream (asynchronous) and checks the
 * launch; a failure returns SQ_ERR_DEVICE with the kernel's name and sizes
 * in ctx->err.  Bad sizes and dtypes are rejected before any launch
 * (SQ_ERR_ARG / SQ_ERR_DTYPE).  An index out of range cannot be seen on the
 * host without waiting, so index kernels never touch memory outside the
 * buffers: they write NaN (or skip the update) and record the first bad
 * index in the context; the next sq_cuda_sync / sq_cuda_copy_d2h returns
 * SQ_ERR_ARG naming the kernel, the index and the valid range.
 *
 * Shapes are written (outer, len, inner) etc.; "contiguous" means row-major
 * with no gaps.  Strides are in elements; a stride of 0 broadcasts. */
#ifndef SQ_CUDA_KERNELS_H
#define SQ_CUDA_KERNELS_H

#include "sq_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

#include "sq_ops.h" /* sq_binop, sq_unop: one definition for CPU and GPU */

/* ---- BLAS (cuBLAS) --------------------------------------------------------- */
/* Row-major C (M,N) = alpha * op(A) op(B) + beta * C, the same meaning and
 * argument order as sq_cpu_gemm: op(A) is (M,K), A is (M,K) with lda, or
 * (K,M) when transA.  float32 is exact fp32 unless sq_cuda_set_tf32(ctx,1).
 * Counts the call in ctx->stats. */
sq_status sq_cuda_gemm(sq_ctx *ctx, sq_dtype dt, int transA, int transB, int64_t M, int64_t N,
                       int64_t K, double alpha, const void *A, int64_t lda, const void *B,
                       int64_t ldb, double beta, void *C, int64_t ldc);
/* batch independent GEMMs; matrix i of A starts at A + i*strideA elements
 * (strideA/strideB 0 reuse one matrix for every batch). */
sq_status sq_cuda_gemm_batched(sq_ctx *ctx, sq_dtype dt, int transA, int transB, int64_t batch,
                               int64_t M, int64_t N, int64_t K, double alpha, const void *A,
                               int64_t lda, int64_t strideA, const void *B, int64_t ldb,
                               int64_t strideB, double beta, void *C, int64_t ldc,
                               int64_t strideC);

/* The linear layer's forward: y (R,M) = x (R,K) W^T + b, all row-major and
 * contiguous, W (M,K), b (M) or NULL.  float32: one cuBLASLt call with the
 * bias added in the GEMM's epilogue (y is written once, never read); the
 * plan is made once per shape.  float64, or a shape Lt has no algorithm
 * for: b broadcast into y, then a GEMM accumulating onto it.  Counts one
 * GEMM in ctx->stats. */
sq_status sq_cuda_linear(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, const void *w,
                         const void *b, int64_t R, int64_t K, int64_t M);

/* ---- fill, copy, convert (any dtype) --------------------------------------- */
/* out (n) = v (v converted to dt) */
sq_status sq_cuda_fill(sq_ctx *ctx, sq_dtype dt, void *out, int64_t n, double v);
/* out (shape) <- src (shape): N-d strided copy, ndim <= SQ_MAX_DIMS.
 * out_stride NULL = contiguous (make-contiguous); out must not overlap src. */
sq_status sq_cuda_copy_strided(sq_ctx *ctx, sq_dtype dt, void *out, const int64_t *out_stride,
                               const void *src, const int64_t *src_stride, int ndim,
                               const int64_t *shape);
/* out (n) of out_dt <- src (n) of src_dt, contiguous (C casts). */
sq_status sq_cuda_convert(sq_ctx *ctx, sq_dtype out_dt, void *out, sq_dtype src_dt,
                          const void *src, int64_t n);

/* ---- elementwise ------------------------------------------------------------- */
/* out (shape, contiguous) = a op b with per-operand strides (0 = broadcast). */
sq_status sq_cuda_binary(sq_ctx *ctx, sq_binop op, sq_dtype dt, void *out, const void *a,
                         const int64_t *a_stride, const void *b, const int64_t *b_stride,
                         int ndim, const int64_t *shape);
/* Elementwise gradients at the full broadcast shape (contiguous):
 * da = dy * d(a op b)/da, db = dy * d(a op b)/db; either output may be NULL
 * (a and b may be NULL for add/sub).  Reduce them to the operand shapes
 * with sq_cuda_sum_to. */
sq_status sq_cuda_binary_bwd(sq_ctx *ctx, sq_binop op, sq_dtype dt, void *da, void *db,
                             const void *dy, const void *a, const int64_t *a_stride,
                             const void *b, const int64_t *b_stride, int ndim,
                             const int64_t *shape);
/* Sums `in` (shape, contiguous) over the dims where out_stride is 0:
 * out[sum_d i_d*out_stride[d]] = sum of in over the zero-stride dims
 * (deterministic, no atomics; the reverse of a broadcast). */
sq_status sq_cuda_sum_to(sq_ctx *ctx, sq_dtype dt, void *out, const int64_t *out_stride,
                         const void *in, int ndim, const int64_t *shape);
/* y (n) = x*mul + add */
sq_status sq_cuda_scale_shift(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, int64_t n,
                              double mul, double add);
/* y = x^p;  dx = dy * p * x^(p-1) */
sq_status sq_cuda_pow_scalar(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, int64_t n, double p);
sq_status sq_cuda_pow_scalar_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dy,
                                 const void *x, int64_t n, double p);
/* y (n) = f(x); GELU is the exact erf form. */
sq_status sq_cuda_unary(sq_ctx *ctx, sq_unop op, sq_dtype dt, void *y, const void *x, int64_t n);
/* dx = dy * f'(.) computed from s, the value the engine saves: the output y
 * for exp, sqrt, sigmoid, tanh (sq_cuda_unary_bwd_uses_output true), the
 * input x for the others. */
sq_status sq_cuda_unary_bwd(sq_ctx *ctx, sq_unop op, sq_dtype dt, void *dx, const void *dy,
                            const void *s, int64_t n);
int sq_cuda_unary_bwd_uses_output(sq_unop op);

/* ---- reductions ------------------------------------------------------------ */
typedef enum { SQ_CUDA_RED_SUM = 0, SQ_CUDA_RED_MEAN, SQ_CUDA_RED_MAX } sq_cuda_red;
/* x viewed as (outer, len, inner) with element strides xs[0..2];
 * out (outer, inner) contiguous.  For MAX, argmax (outer, inner) int64 gets
 * the position along len of the first maximum (a NaN counts as the
 * largest, as on the CPU); argmax may be NULL.  len 0: sum 0, mean NaN,
 * max rejected. */
sq_status sq_cuda_reduce_dim(sq_ctx *ctx, sq_cuda_red op, sq_dtype dt, void *out, int64_t *argmax,
                             const void *x, int64_t outer, int64_t len, int64_t inner,
                             const int64_t xs[3]);
/* Over n contiguous elements into out (1) [and argmax (1)]; deterministic
 * two-pass reduction through a workspace from the cache. */
sq_status sq_cuda_reduce_all(sq_ctx *ctx, sq_cuda_red op, sq_dtype dt, void *out, int64_t *argmax,
                             const void *x, int64_t n);
/* dx (outer, len, inner) contiguous, written whole: sum: dy broadcast;
 * mean: dy/len; max: dy at argmax, 0 elsewhere.  dy (outer, inner). */
sq_status sq_cuda_reduce_dim_bwd(sq_ctx *ctx, sq_cuda_red op, sq_dtype dt, void *dx, const void *dy,
                                 const int64_t *argmax, int64_t outer, int64_t len, int64_t inner);

/* ---- softmax, cross-entropy ---------------------------------------------- */
/* Rows (rows, len) contiguous; log selects log-softmax.  causal: the rows
 * come from (..., T, T) with T == len, and row r masks the columns
 * j > r % T (softmax 0, log-softmax -inf). */
sq_status sq_cuda_softmax(sq_ctx *ctx, sq_dtype dt, int log, void *y, const void *x, int64_t rows,
                          int64_t len, int causal);
/* dx from dy and the saved output y.  Masked entries get 0 and do not
 * enter the row sums (they are constants of the function). */
sq_status sq_cuda_softmax_bwd(sq_ctx *ctx, sq_dtype dt, int log, void *dx, const void *dy,
                              const void *y, int64_t rows, int64_t len, int causal);
/* logits (N,C), targets int64 (N) in [0,C): loss (1) = mean over n of
 * -log softmax(logits)[n, t_n]; probs (N,C) = softmax (for backward; may be
 * NULL).  A bad target makes the loss NaN and is reported at the next sync. */
sq_status sq_cuda_cross_entropy(sq_ctx *ctx, sq_dtype dt, void *loss, void *probs,
                                const void *logits, const int64_t *targets, int64_t N, int64_t C);
/* dlogits (N,C) = dloss * (probs - onehot(t)) / N; dloss is a device scalar. */
sq_status sq_cuda_cross_entropy_bwd(sq_ctx *ctx, sq_dtype dt, void *dlogits, const void *dloss,
                                    const void *probs, const int64_t *targets, int64_t N,
                                    int64_t C);

/* ---- normalisation and per-channel affine -------------------------------------- */
/* Over the last dim: x (rows, D) contiguous; w, b (D) or NULL.
 * y = xhat*w + b with xhat = (x - mean) * rstd, rstd = 1/sqrt(var + eps)
 * (biased variance).  xhat (rows, D) and rstd (rows) are what backward
 * needs; either may be NULL. */
sq_status sq_cuda_layer_norm(sq_ctx *ctx, sq_dtype dt, void *y, void *xhat, void *rstd,
                             const void *x, const void *w, const void *b, int64_t rows, int64_t D,
                             double eps);
/* dx (rows, D), dw (D), db (D); any output may be NULL; w NULL means 1. */
sq_status sq_cuda_layer_norm_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, void *dw, void *db,
                                 const void *dy, const void *xhat, const void *rstd, const void *w,
                                 int64_t rows, int64_t D);
/* y (rows, D) = x*alpha + beta on the last dim; beta may be NULL. */
sq_status sq_cuda_affine(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, const void *alpha,
                         const void *beta, int64_t rows, int64_t D);
/* dx = dy*alpha, dalpha = sum_rows dy*x, dbeta = sum_rows dy; any may be NULL. */
sq_status sq_cuda_affine_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, void *dalpha, void *dbeta,
                             const void *dy, const void *x, const void *alpha, int64_t rows,
                             int64_t D);

/* ---- embedding, dropout ---------------------------------------------------- */
/* idx int64 (n) into W (V, D): out (n, D). */
sq_status sq_cuda_embedding(sq_ctx *ctx, sq_dtype dt, void *out, const int64_t *idx, const void *w,
                            int64_t n, int64_t V, int64_t D);
/* dW (V, D) += dy (n, D) rows scattered by idx (atomicAdd; the caller zeroes dW). */
sq_status sq_cuda_embedding_bwd(sq_ctx *ctx, sq_dtype dt, void *dw, const void *dy,
                                const int64_t *idx, int64_t n, int64_t V, int64_t D);
/* Inverted dropout: mask (n) uint8 0/1, y = x * mask / (1-p), p in [0,1]
 * (p == 1 drops everything).  The mask comes from Philox4x32-10 with key
 * = the context seed and counter = (element/4, call offset); the offset
 * advances by one per call, so the same seed gives the same masks. */
sq_status sq_cuda_dropout(sq_ctx *ctx, sq_dtype dt, void *y, uint8_t *mask, const void *x,
                          int64_t n, double p);
sq_status sq_cuda_dropout_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dy,
                              const uint8_t *mask, int64_t n, double p);

/* ---- convolution helpers and pooling (NCHW) --------------------------------- */
/* x (N,C,H,W) -> cols (N, C*kh*kw, Ho*Wo); N == 1 is sq_cpu_im2col. */
sq_status sq_cuda_im2col(sq_ctx *ctx, sq_dtype dt, void *cols, const void *x, int64_t N, int64_t C,
                         int64_t H, int64_t W, int kh, int kw, int stride, int pad, int64_t Ho,
                         int64_t Wo);
/* dx (N,C,H,W) += col2im(cols): accumulates like sq_cpu_col2im (no atomics). */
sq_status sq_cuda_col2im(sq_ctx *ctx, sq_dtype dt, void *dx, const void *cols, int64_t N, int64_t C,
                         int64_t H, int64_t W, int kh, int kw, int stride, int pad, int64_t Ho,
                         int64_t Wo);
/* y (N,C,Ho,Wo) = max over each k x k window (padding never wins);
 * argmax (N,C,Ho,Wo) int64 = h*W + w of the first maximum in its plane. */
sq_status sq_cuda_max_pool2d(sq_ctx *ctx, sq_dtype dt, void *y, int64_t *argmax, const void *x,
                             int64_t N, int64_t C, int64_t H, int64_t W, int k, int stride,
                             int pad, int64_t Ho, int64_t Wo);
/* dx (N,C,H,W) written whole: the sum of dy over the windows whose argmax is that element. */
sq_status sq_cuda_max_pool2d_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dy,
                                 const int64_t *argmax, int64_t N, int64_t C, int64_t H, int64_t W,
                                 int k, int stride, int pad, int64_t Ho, int64_t Wo);
/* Average with padding counted as zero, divisor k*k (count_include_pad). */
sq_status sq_cuda_avg_pool2d(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, int64_t N, int64_t C,
                             int64_t H, int64_t W, int k, int stride, int pad, int64_t Ho,
                             int64_t Wo);
/* dx (N,C,H,W) written whole. */
sq_status sq_cuda_avg_pool2d_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dy, int64_t N,
                                 int64_t C, int64_t H, int64_t W, int k, int stride, int pad,
                                 int64_t Ho, int64_t Wo);

/* ---- joining and indexing ------------------------------------------------------ */
/* out (outer, sum lens, inner) <- srcs[i] (outer, lens[i], inner), contiguous.
 * srcs is a host array of n device pointers. */
sq_status sq_cuda_concat(sq_ctx *ctx, sq_dtype dt, void *out, int n, const void *const *srcs,
                         const int64_t *lens, int64_t outer, int64_t inner);
/* dsrcs[i] (outer, lens[i], inner) <- its slice of dout; NULL entries are skipped. */
sq_status sq_cuda_concat_bwd(sq_ctx *ctx, sq_dtype dt, void *const *dsrcs, const void *dout, int n,
                             const int64_t *lens, int64_t outer, int64_t inner);
/* x (outer, len, inner) contiguous, idx (m) in [0, len): out (outer, m, inner). */
sq_status sq_cuda_index_select(sq_ctx *ctx, sq_dtype dt, void *out, const void *x,
                               const int64_t *idx, int64_t outer, int64_t len, int64_t inner,
                               int64_t m);
/* dx (outer, len, inner) += dout (outer, m, inner) scattered by idx (atomicAdd;
 * the caller zeroes dx). */
sq_status sq_cuda_index_select_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dout,
                                   const int64_t *idx, int64_t outer, int64_t len, int64_t inner,
                                   int64_t m);
/* torch.gather: out (shape, contiguous)[p] = x[p with p[dim] = idx[p]];
 * idx (shape) contiguous, in [0, x_dim_len); x addressed by xs (strides). */
sq_status sq_cuda_gather(sq_ctx *ctx, sq_dtype dt, void *out, const void *x, const int64_t *xs,
                         int64_t x_dim_len, const int64_t *idx, int ndim, const int64_t *shape,
                         int dim);
/* dx[p with p[dim] = idx[p]] += dout[p] (atomicAdd; dx addressed by dxs; the caller zeroes dx). */
sq_status sq_cuda_gather_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const int64_t *dxs,
                             int64_t x_dim_len, const void *dout, const int64_t *idx, int ndim,
                             const int64_t *shape, int dim);

/* ---- optimizer steps (fused; same arithmetic as engine/sq_optim.c) ---------- */
/* p, buf, g (n) contiguous; buf NULL when momentum == 0; first != 0 on the
 * parameter's first update (buffer starts at d, as in PyTorch). */
sq_status sq_cuda_sgd_step(sq_ctx *ctx, sq_dtype dt, void *p, void *buf, const void *g, int64_t n,
                           double lr, double momentum, double dampening, double weight_decay,
                           int nesterov, int first);
/* p, m, v, g (n) contiguous; t = this parameter's 1-based step number. */
sq_status sq_cuda_adamw_step(sq_ctx *ctx, sq_dtype dt, void *p, void *m, void *v, const void *g,
                             int64_t n, double lr, double beta1, double beta2, double eps,
                             double weight_decay, int64_t t);

#ifdef __cplusplus
}
#endif

#endif
