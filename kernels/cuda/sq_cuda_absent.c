/* sq_cuda_absent.c — the CUDA backend's interface in a build without CUDA
 * (-DSQUEEZE_CUDA=OFF or no toolkit): every call fails with a message that
 * says so, sq_cuda_available() is 0, and the harmless ones (free, options,
 * queries) do nothing.  The engine's ops call the kernel layer only for
 * tensors on the GPU, which such a build can never create: this file keeps
 * them linkable without an #ifdef in every op. */
#include "sq_cuda_kernels.h"
#include "sq_cuda_linalg.h"
#include "sq_cuda_actprune.h"

#include <stdio.h>
#include <string.h>

static sq_status absent(sq_ctx *ctx, const char *fn)
{
    return sq_fail(ctx, SQ_ERR_DEVICE, "%s: this build has no CUDA backend (configure with -DSQUEEZE_CUDA=ON "
                   "on a machine with the CUDA toolkit)", fn);
}

int sq_cuda_available(void)
{
    return 0;
}

sq_status sq_cuda_init(sq_ctx *ctx, int device)
{
    return sq_fail(ctx, SQ_ERR_DEVICE, "cuda: this build of squeeze has no CUDA backend (configure "
                   "with -DSQUEEZE_CUDA=ON on a machine with the CUDA toolkit)");
}

void sq_cuda_free(sq_ctx *ctx)
{
    (void)ctx;
}

const char *sq_cuda_device_str(const sq_ctx *ctx, char *buf, size_t n)
{
    (void)ctx;
    snprintf(buf, n, "no CUDA backend in this build");
    return buf;
}

void sq_cuda_set_tf32(sq_ctx *ctx, int on)
{
    if (ctx) ctx->cuda_tf32 = on != 0;
}

int sq_cuda_get_tf32(const sq_ctx *ctx)
{
    return ctx ? ctx->cuda_tf32 : 0;
}

void sq_cuda_set_sync_launches(sq_ctx *ctx, int on)
{
    (void)ctx;
    (void)on;
}

void sq_cuda_rng_seed(sq_ctx *ctx, uint64_t seed)
{
    (void)ctx;
    (void)seed;
}

void sq_cuda_rng_state(const sq_ctx *ctx, uint64_t *seed, uint64_t *offset)
{
    (void)ctx;
    *seed = 0;
    *offset = 0;
}

sq_status sq_cuda_alloc(sq_ctx *ctx, size_t nbytes, void **out)
{
    *out = NULL;
    return absent(ctx, __func__);
}

void sq_cuda_free_block(sq_ctx *ctx, void *p)
{
    (void)ctx;
    (void)p;
}

void sq_cuda_empty_cache(sq_ctx *ctx)
{
    (void)ctx;
}

void sq_cuda_mem_reset_peak(sq_ctx *ctx)
{
    (void)ctx;
}

void sq_cuda_mem_get(const sq_ctx *ctx, sq_cuda_mem_stats *out)
{
    (void)ctx;
    memset(out, 0, sizeof *out);
}

sq_status sq_cuda_copy_h2d(sq_ctx *ctx, void *dst_dev, const void *src_host, size_t nbytes)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_copy_d2h(sq_ctx *ctx, void *dst_host, const void *src_dev, size_t nbytes)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_copy_d2d(sq_ctx *ctx, void *dst_dev, const void *src_dev, size_t nbytes)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_sync(sq_ctx *ctx)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_event_new(sq_ctx *ctx, sq_cuda_event **out)
{
    *out = NULL;
    return absent(ctx, __func__);
}

sq_status sq_cuda_event_record(sq_ctx *ctx, sq_cuda_event *ev)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_event_elapsed(sq_ctx *ctx, sq_cuda_event *start, sq_cuda_event *stop, double *ms)
{
    *ms = 0;
    return absent(ctx, __func__);
}

void sq_cuda_event_free(sq_cuda_event *ev)
{
    (void)ev;
}

sq_status sq_cuda_gemm(sq_ctx *ctx, sq_dtype dt, int transA, int transB, int64_t M, int64_t N, int64_t K, double alpha, const void *A, int64_t lda, const void *B, int64_t ldb, double beta, void *C, int64_t ldc)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_linear(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, const void *w,
                         const void *b, int64_t R, int64_t K, int64_t M)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_gemm_batched(sq_ctx *ctx, sq_dtype dt, int transA, int transB, int64_t batch, int64_t M, int64_t N, int64_t K, double alpha, const void *A, int64_t lda, int64_t strideA, const void *B, int64_t ldb, int64_t strideB, double beta, void *C, int64_t ldc, int64_t strideC)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_fill(sq_ctx *ctx, sq_dtype dt, void *out, int64_t n, double v)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_copy_strided(sq_ctx *ctx, sq_dtype dt, void *out, const int64_t *out_stride, const void *src, const int64_t *src_stride, int ndim, const int64_t *shape)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_convert(sq_ctx *ctx, sq_dtype out_dt, void *out, sq_dtype src_dt, const void *src, int64_t n)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_binary(sq_ctx *ctx, sq_binop op, sq_dtype dt, void *out, const void *a, const int64_t *a_stride, const void *b, const int64_t *b_stride, int ndim, const int64_t *shape)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_binary_bwd(sq_ctx *ctx, sq_binop op, sq_dtype dt, void *da, void *db, const void *dy, const void *a, const int64_t *a_stride, const void *b, const int64_t *b_stride, int ndim, const int64_t *shape)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_sum_to(sq_ctx *ctx, sq_dtype dt, void *out, const int64_t *out_stride, const void *in, int ndim, const int64_t *shape)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_scale_shift(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, int64_t n, double mul, double add)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_pow_scalar(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, int64_t n, double p)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_pow_scalar_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dy, const void *x, int64_t n, double p)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_unary(sq_ctx *ctx, sq_unop op, sq_dtype dt, void *y, const void *x, int64_t n)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_unary_bwd(sq_ctx *ctx, sq_unop op, sq_dtype dt, void *dx, const void *dy, const void *s, int64_t n)
{
    return absent(ctx, __func__);
}

int sq_cuda_unary_bwd_uses_output(sq_unop op)
{
    return op == SQ_UN_EXP || op == SQ_UN_SQRT || op == SQ_UN_SIGMOID || op == SQ_UN_TANH;
}

sq_status sq_cuda_reduce_dim(sq_ctx *ctx, sq_cuda_red op, sq_dtype dt, void *out, int64_t *argmax, const void *x, int64_t outer, int64_t len, int64_t inner, const int64_t xs[3])
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_reduce_all(sq_ctx *ctx, sq_cuda_red op, sq_dtype dt, void *out, int64_t *argmax, const void *x, int64_t n)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_reduce_dim_bwd(sq_ctx *ctx, sq_cuda_red op, sq_dtype dt, void *dx, const void *dy, const int64_t *argmax, int64_t outer, int64_t len, int64_t inner)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_softmax(sq_ctx *ctx, sq_dtype dt, int log, void *y, const void *x, int64_t rows, int64_t len, int causal)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_softmax_bwd(sq_ctx *ctx, sq_dtype dt, int log, void *dx, const void *dy, const void *y, int64_t rows, int64_t len, int causal)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_cross_entropy(sq_ctx *ctx, sq_dtype dt, void *loss, void *probs, const void *logits, const int64_t *targets, int64_t N, int64_t C)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_cross_entropy_bwd(sq_ctx *ctx, sq_dtype dt, void *dlogits, const void *dloss, const void *probs, const int64_t *targets, int64_t N, int64_t C)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_layer_norm(sq_ctx *ctx, sq_dtype dt, void *y, void *xhat, void *rstd, const void *x, const void *w, const void *b, int64_t rows, int64_t D, double eps)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_layer_norm_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, void *dw, void *db, const void *dy, const void *xhat, const void *rstd, const void *w, int64_t rows, int64_t D)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_affine(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, const void *alpha, const void *beta, int64_t rows, int64_t D)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_affine_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, void *dalpha, void *dbeta, const void *dy, const void *x, const void *alpha, int64_t rows, int64_t D)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_embedding(sq_ctx *ctx, sq_dtype dt, void *out, const int64_t *idx, const void *w, int64_t n, int64_t V, int64_t D)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_embedding_bwd(sq_ctx *ctx, sq_dtype dt, void *dw, const void *dy, const int64_t *idx, int64_t n, int64_t V, int64_t D)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_dropout(sq_ctx *ctx, sq_dtype dt, void *y, uint8_t *mask, const void *x, int64_t n, double p)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_dropout_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dy, const uint8_t *mask, int64_t n, double p)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_im2col(sq_ctx *ctx, sq_dtype dt, void *cols, const void *x, int64_t N, int64_t C, int64_t H, int64_t W, int kh, int kw, int stride, int pad, int64_t Ho, int64_t Wo)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_col2im(sq_ctx *ctx, sq_dtype dt, void *dx, const void *cols, int64_t N, int64_t C, int64_t H, int64_t W, int kh, int kw, int stride, int pad, int64_t Ho, int64_t Wo)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_max_pool2d(sq_ctx *ctx, sq_dtype dt, void *y, int64_t *argmax, const void *x, int64_t N, int64_t C, int64_t H, int64_t W, int k, int stride, int pad, int64_t Ho, int64_t Wo)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_max_pool2d_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dy, const int64_t *argmax, int64_t N, int64_t C, int64_t H, int64_t W, int k, int stride, int pad, int64_t Ho, int64_t Wo)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_avg_pool2d(sq_ctx *ctx, sq_dtype dt, void *y, const void *x, int64_t N, int64_t C, int64_t H, int64_t W, int k, int stride, int pad, int64_t Ho, int64_t Wo)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_avg_pool2d_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dy, int64_t N, int64_t C, int64_t H, int64_t W, int k, int stride, int pad, int64_t Ho, int64_t Wo)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_concat(sq_ctx *ctx, sq_dtype dt, void *out, int n, const void *const *srcs, const int64_t *lens, int64_t outer, int64_t inner)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_concat_bwd(sq_ctx *ctx, sq_dtype dt, void *const *dsrcs, const void *dout, int n, const int64_t *lens, int64_t outer, int64_t inner)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_index_select(sq_ctx *ctx, sq_dtype dt, void *out, const void *x, const int64_t *idx, int64_t outer, int64_t len, int64_t inner, int64_t m)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_index_select_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const void *dout, const int64_t *idx, int64_t outer, int64_t len, int64_t inner, int64_t m)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_gather(sq_ctx *ctx, sq_dtype dt, void *out, const void *x, const int64_t *xs, int64_t x_dim_len, const int64_t *idx, int ndim, const int64_t *shape, int dim)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_gather_bwd(sq_ctx *ctx, sq_dtype dt, void *dx, const int64_t *dxs, int64_t x_dim_len, const void *dout, const int64_t *idx, int ndim, const int64_t *shape, int dim)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_sgd_step(sq_ctx *ctx, sq_dtype dt, void *p, void *buf, const void *g, int64_t n, double lr, double momentum, double dampening, double weight_decay, int nesterov, int first)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_adamw_step(sq_ctx *ctx, sq_dtype dt, void *p, void *m, void *v, const void *g, int64_t n, double lr, double beta1, double beta2, double eps, double weight_decay, int64_t t)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_profile_begin(sq_ctx *ctx, int cap)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_profile_end(sq_ctx *ctx, char *buf, size_t n)
{
    if (n) buf[0] = 0;
    return absent(ctx, __func__);
}

const char *sq_cuda_svd_driver_name(sq_cuda_svd_driver d)
{
    return d == SQ_CUDA_SVD_GESVDJ ? "gesvdj" : d == SQ_CUDA_SVD_GESVD ? "gesvd" : "auto";
}

sq_status sq_cuda_svd(sq_ctx *ctx, sq_dtype dt, int64_t M, int64_t K, const void *W, void *U, void *S, void *Vt, sq_cuda_svd_driver driver, int fake_fail, sq_cuda_svd_info *info)
{
    if (info) memset(info, 0, sizeof *info);
    return absent(ctx, __func__);
}

/* activation pruning (sq_cuda_actprune.h): what the engine's linear_pruned calls */
sq_status sq_cuda_bsr_prune_pack(sq_ctx *ctx, sq_cuda_bsr *m, const float *x, int64_t s0, int64_t s1,
                                 double keep, sq_prune_scope scope)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_bsr_build_transpose(sq_ctx *ctx, sq_cuda_bsr *m)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_bsr_entries(sq_ctx *ctx, const sq_cuda_bsr *m, int64_t *entries)
{
    *entries = 0;
    return absent(ctx, __func__);
}

sq_status sq_cuda_bsr_dw(sq_ctx *ctx, float *dw, int64_t ldw, const float *dy, int64_t ldy, int64_t M,
                         const sq_cuda_bsr *m, sq_cuda_dw_prec prec, int splits)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_bsr_dw_tile(sq_ctx *ctx, float *dw, int64_t ldw, const float *dy, int64_t ldy, int64_t M,
                              const sq_cuda_bsr *m, sq_cuda_dw_prec prec, int splits, int mtile,
                              sq_cuda_dw_kernel kernel)
{
    return absent(ctx, __func__);
}

int sq_cuda_bsr_dw_has_wgmma(const sq_ctx *ctx) { return 0; }

sq_status sq_cuda_bsr_shape_crit(sq_ctx *ctx, int64_t R, int64_t K, int64_t b, double keep,
                                 sq_prune_criterion crit, sq_prune_scope scope, sq_cuda_bsr *m)
{
    memset(m, 0, sizeof *m);
    return absent(ctx, __func__);
}

sq_status sq_cuda_bsr_prune_pack_crit(sq_ctx *ctx, sq_cuda_bsr *m, const float *x, int64_t s0, int64_t s1,
                                      int64_t block, double keep, sq_prune_criterion crit,
                                      sq_prune_scope scope)
{
    return absent(ctx, __func__);
}

sq_status sq_cuda_csr_dw(sq_ctx *ctx, float *dw, int64_t ldw, const float *dy, int64_t ldy, int64_t M,
                         const sq_cuda_bsr *m)
{
    return absent(ctx, __func__);
}
