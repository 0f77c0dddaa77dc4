/* sq_actprune.h — structured activation pruning of the backward pass
 * (methods.md §1, Barley & Fröning): a linear layer whose forward is exactly
 * sq_linear's, but which keeps its saved input only as a block-sparse (BSR)
 * copy of the highest-scoring b x b blocks.  dx = dy·W and db = Σ dy stay
 * exact (bit-identical to sq_linear); dW = dyᵀ·x̂ uses the pruned x̂ and is
 * the only place error enters.  The dense x is no longer referenced by the
 * autograd node, so its bytes are freed as soon as the caller drops it too. */
#ifndef SQ_ACTPRUNE_H
#define SQ_ACTPRUNE_H

#include "sq_bsr.h"
#include "sq_ops.h"

typedef struct {
    int64_t block;                 /* b: 8, 16, 32 or 64 */
    double keep;                   /* fraction of blocks kept, in (0,1] */
    sq_prune_criterion criterion;  /* l2 (the method) | random | topk_unstructured (controls) */
    sq_prune_scope scope;          /* top-k over the whole tensor (default) or per block row */
    int transpose_at_pack;         /* 1: build the BSR's transposed index during the
                                    * compress step and hold it (SAVED, +8 bytes a block);
                                    * 0 (default): the dW kernel builds it in backward as
                                    * WORKSPACE, so SAVED holds only the minimal BSR.
                                    * Ignored for topk_unstructured (CSR, row-wise kernel) */
    int time_compress;             /* 1 (default): compress_s is measured; on the GPU that
                                    * drains the stream before and after the pack, which
                                    * stalls the pipeline once per pruned layer and step,
                                    * and dw_flops counts real entries exactly (a device
                                    * read when a block row or column is partial).
                                    * 0: on the GPU nothing waits: compress_s = 0 and
                                    * dw_flops includes the kept blocks' padding (an
                                    * experiment times a sample of steps); the CPU always
                                    * times and counts exactly (it costs nothing there) */
} sq_actprune_cfg;

/* Defaults: block 32, keep 0.5, l2, scope tensor, transpose in backward, timed.
 * (The experiment sweeps block and keep; record the cfg with every run.) */
void sq_actprune_cfg_default(sq_actprune_cfg *cfg);
/* Checks cfg; on failure a message prefixed with fn names the bad field. */
sq_status sq_actprune_cfg_check(sq_ctx *ctx, const char *fn, const sq_actprune_cfg *cfg);

/* What one sq_linear_pruned call did (filled at forward time). */
typedef struct {
    int pruned;             /* 1 when x was saved (W needs a gradient) and compressed */
    int64_t kept_blocks;    /* stored blocks (entries for topk_unstructured) */
    int64_t total_blocks;   /* ceil(R/b)*ceil(K/b) (R*K for topk_unstructured) */
    int64_t saved_bytes;    /* bytes the node holds for x: sq_bsr_bytes of the BSR */
    int64_t value_bytes;    /* of which values */
    int64_t dense_bytes;    /* R*K*sizeof(dtype): what sq_linear would hold for x */
    double compress_s;      /* prune-and-pack wall time (sq_proc_monotonic); 0 when not timed */
    int compress_timed;     /* 1 when compress_s was measured (see cfg.time_compress) */
    double dw_flops;        /* FLOPs of the BSR dW (2*M*kept entries; see time_compress) */
    double dense_dw_flops;  /* 2*M*R*K */
} sq_actprune_stats;

/* y = x Wᵀ + b, x (...,K), W (M,K), b (M) or NULL -> y (...,M), new reference.
 * Output bit-identical to sq_linear.  When W needs a gradient the node
 * saves x as a BSR (prune-and-pack of x viewed as (R,K), buffers charged to
 * SAVED) instead of x, and W (for dx) as sq_linear does.  stats may be NULL.
 * On failure *y is NULL and nothing stays allocated.
 *
 * On the GPU (x, W, b on cuda): the forward, dx and db are sq_linear's on
 * the device (cuBLASLt with the bias in the epilogue; cuBLAS; a column-sum
 * kernel); x is pruned and packed by the fused kernel of
 * cuda/sq_cuda_actprune.h into a BSR of CUDA tensors of the CPU's sizes (so
 * saved_bytes and the SAVED category are the CPU's to the byte); dW is the
 * BSR tensor-core kernel, in TF32 when the context's TF32 flag is on (the
 * precision the dense GEMMs then use too) and in 3xTF32 otherwise (about
 * fp32-accurate).  Every criterion; float32 only (float64 is SQ_ERR_DTYPE
 * there).  compress_s on the GPU is the prune-and-pack's own GPU time: the
 * stream is synchronised before and after it, unless cfg.time_compress is 0
 * (then nothing waits, compress_s is 0 and compress_timed 0). */
sq_status sq_linear_pruned(sq_ctx *ctx, sq_tensor *x, sq_tensor *w, sq_tensor *b,
                           const sq_actprune_cfg *cfg, sq_tensor **y, sq_actprune_stats *stats);

/* Per-layer weight-gradient error of the method on one batch:
 * ‖dW − dŴ‖_F / ‖dW‖_F with dW = dyᵀ·x (dense GEMM) and dŴ = dyᵀ·x̂ (x
 * pruned and packed with cfg, BSR kernel).  x (...,K), dy (...,M) with the
 * same leading element count, on one device.  The random criterion draws
 * from ctx->rng.  On the GPU (l2, float32): both dW on the device, in the
 * precision the TF32 flag gives (see sq_linear_pruned), the norms on the host.
 * *rel: 0 when both are 0, +inf when only dW is 0.  Frees what it allocates. */
sq_status sq_actprune_dw_error(sq_ctx *ctx, sq_tensor *x, sq_tensor *dy,
                               const sq_actprune_cfg *cfg, double *rel);

#endif
