/* sq_cuda_actprune.h — the GPU kernels of structured activation pruning
 * (methods.md §1): a fused prune-and-pack of a dense float32 activation
 * into the BSR layout of engine/sq_bsr.h (criterion l2, the method, and the
 * controls random and topk_unstructured), the BSR weight gradient
 * dW = dyᵀ·x̂ on tensor cores and the CSR one for the unstructured control.
 * CPU references: sq_bsr_prune_pack and sq_bsr_dw;
 * tests/cuda/test_cuda_actprune.c compares them.
 *
 * Raw device buffers, like sq_cuda_kernels.h: no tensors and no autograd.
 * The BSR lives in a caller-owned sq_cuda_bsr whose buffers the caller
 * allocates (sq_cuda_bsr_alloc does it from the context's cache) and frees.
 * Everything runs asynchronously on the context stream; the number of kept
 * blocks is known on the host before any launch (it depends only on the
 * sizes), so nothing waits for the device.
 *
 * Prune-and-pack (sq_cuda_bsr_prune_pack), two passes over x:
 *   1. score every b x b block (squared Frobenius norm, float64 accumulation;
 *      one thread per column of a block row, so reads are coalesced);
 *   2. radix-select the k best scores (8-bit digits of the order-preserving
 *      float64 key of sq_select.h; whole tensor: one histogram launch per
 *      digit over the scores, which are b² times fewer than x's entries and
 *      sit in L2, the digit picked by the last CTA so the host never waits;
 *      per block row: one CTA per row), then prefix sums over the kept flags
 *      in block order give each kept block its slot, row_ptr and col_idx,
 *      and a scan per block column the transposed index;
 *   3. copy the kept blocks into their slots (16-byte loads and stores).
 * The kept set is the CPU's: ties go to the lower block index, NaN scores
 * rank lowest.  The scores are summed in a different order from the CPU's,
 * so two blocks whose float64 scores differ by a few ulps (about 1e-16
 * relative) could rank the other way; blocks with equal contents always
 * score equally.
 *
 * The controls (sq_cuda_bsr_prune_pack_crit) run through the same selection:
 *   random: step 1 draws one uniform float64 in [0,1) per block from the
 *     context's Philox4x32-10 stream (key = seed, counter = (block, offset);
 *     each call takes one offset and advances it, as dropout does) and x is
 *     read only by the pack.  Exactly k blocks (k per block row in scope
 *     row), the same ones for the same (seed, offset), uniformly chosen.
 *     It is NOT the CPU's stream: sq_bsr_prune_pack draws from ctx->rng
 *     (xoshiro), so a GPU run and a CPU run of one seed keep different
 *     blocks.
 *   topk_unstructured: the blocks are single entries (a CSR: b = 1,
 *     nbr = R, nbc = K) scored by x² in float64, which is exact for float32
 *     x and ranks exactly as the CPU's float32 |x| does (ties to the lower
 *     row-major index, NaN lowest), so the kept entries are the CPU's
 *     exactly.  Scope tensor: the tile pipeline over R*K scores; scope
 *     row: one CTA per block row of x (b*K entries, budget kr*b*b).
 *     Scratch is then per entry, not per block: about 12 bytes per entry of
 *     x (three times the dense activation) of WORKSPACE during the call.
 *
 * BSR dW (sq_cuda_bsr_dw): one CTA computes an MT x 128 tile of dW (MT =
 * 128, 192 or 256 rows of M, chosen from M), i.e. MT
 * rows of M times a group of 128/b adjacent block columns, and walks the
 * union of those columns' kept blocks (merging their transposed-index
 * lists, rows ascending), so that each slice of dy it stages in shared
 * memory serves every kept block of the group in that block row.  Only the
 * warps whose columns hold a kept block issue MMAs.  No atomics: when the
 * grid is too small to fill the GPU the block rows are split into S ranges
 * whose partial tiles a second kernel sums in a fixed order, so results are
 * bit-for-bit reproducible.  Arithmetic: mma.sync m16n8k8 on tensor cores,
 * either TF32 (inputs rounded to 10-bit mantissas, fp32 accumulation;
 * relative error ~1e-4..1e-3) or 3xTF32 (each operand split into a TF32 high
 * part and a TF32 low part, three MMAs: close to fp32 accuracy, ~1e-6). */
#ifndef SQ_CUDA_ACTPRUNE_H
#define SQ_CUDA_ACTPRUNE_H

#include "sq_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

#include "sq_bsr.h" /* sq_prune_scope: one definition for CPU and GPU */

/* A float32 BSR matrix on the device, laid out as sq_bsr (see sq_bsr.h).
 * The transposed index (col_ptr, t_row, t_blk) is needed by sq_cuda_bsr_dw;
 * prune-and-pack builds it when its buffers are there and skips it when all
 * three are NULL (the engine's default: SAVED then holds only the minimal
 * BSR, and backward rebuilds the index as workspace with
 * sq_cuda_bsr_build_transpose). */
typedef struct {
    int64_t rows, cols; /* true sizes (R,K) */
    int64_t b;          /* block edge */
    int64_t nbr, nbc;   /* ceil(R/b), ceil(K/b) */
    int64_t nnzb;       /* stored blocks */
    int64_t *row_ptr;   /* (nbr+1) */
    int32_t *col_idx;   /* (nnzb), ascending within a block row */
    float *values;      /* (nnzb,b,b), row-major blocks, zero padding */
    int64_t *col_ptr;   /* (nbc+1) */
    int32_t *t_row;     /* (nnzb), ascending within a block column */
    int32_t *t_blk;     /* (nnzb), position of the block in values */
    sq_mem_cat cat;     /* category the buffers are charged to (sq_cuda_bsr_alloc) */
} sq_cuda_bsr;

/* Sizes of the BSR that prune-and-pack of an (R,K) matrix in b x b blocks
 * at `keep` makes: k = sq_select_count(keep, nbr*nbc) blocks (scope tensor)
 * or nbr * sq_select_count(keep, nbc) (scope row), as sq_bsr_prune_pack.
 * Fills the sizes of *m and sets its pointers to NULL.  SQ_ERR_ARG for
 * b < 1, keep outside (0,1], a grid over 2^31-1 blocks. */
sq_status sq_cuda_bsr_shape(sq_ctx *ctx, int64_t R, int64_t K, int64_t b, double keep,
                            sq_prune_scope scope, sq_cuda_bsr *m);
/* The same for any criterion: l2 and random as sq_cuda_bsr_shape;
 * topk_unstructured gives a CSR (b = 1, nbr = R, nbc = K) of
 * nnzb = min(k*b*b, R*K) entries (scope tensor, k the block count above)
 * or sq_select_segments_total(R*K, b*K, kr*b*b) (scope row): the entry
 * budget of sq_bsr_prune_pack.  SQ_ERR_ARG as above, an unknown criterion,
 * or (CSR) R*K over 2^31-1. */
sq_status sq_cuda_bsr_shape_crit(sq_ctx *ctx, int64_t R, int64_t K, int64_t b, double keep,
                                 sq_prune_criterion crit, sq_prune_scope scope, sq_cuda_bsr *m);
/* Allocates the six buffers of a shaped *m from the context's cache and
 * charges them to `cat`.  The caller owns them: sq_cuda_bsr_free. */
sq_status sq_cuda_bsr_alloc(sq_ctx *ctx, sq_cuda_bsr *m, sq_mem_cat cat);
/* Frees what sq_cuda_bsr_alloc allocated; pointers become NULL.  NULL-safe. */
void sq_cuda_bsr_free(sq_ctx *ctx, sq_cuda_bsr *m);
/* Bytes of the six buffers (what the pruned activation costs on the device). */
int64_t sq_cuda_bsr_bytes(const sq_cuda_bsr *m);

/* Fused prune-and-pack, criterion l2: m (shaped for x, keep and scope by
 * sq_cuda_bsr_shape, buffers caller-owned) <- the kept blocks of x, and the
 * transposed index when m has its buffers (all three, or none).
 * x (R,K) float32 on the device with element strides s0 (rows), s1
 * (columns); s1 == 1 is the fast path (coalesced, 16-byte copies when x and
 * s0 allow).  Scratch (scores, flags: about 13 bytes per block) comes from
 * the cache as WORKSPACE and is released before returning. */
sq_status sq_cuda_bsr_prune_pack(sq_ctx *ctx, sq_cuda_bsr *m, const float *x, int64_t s0,
                                 int64_t s1, double keep, sq_prune_scope scope);

/* Prune-and-pack with criterion crit: m shaped by sq_cuda_bsr_shape_crit
 * (R, K, block, keep, crit, scope), buffers caller-owned; block is the edge
 * the budget counts in (m->b itself for l2 and random; for
 * topk_unstructured m->b is 1 and block sets the entry budget and, in
 * scope row, the segments).  x, strides, transposed index and scratch as
 * sq_cuda_bsr_prune_pack, which is this call with crit l2 and block m->b.
 * random advances the context's Philox offset by one. */
sq_status sq_cuda_bsr_prune_pack_crit(sq_ctx *ctx, sq_cuda_bsr *m, const float *x, int64_t s0, int64_t s1,
                                      int64_t block, double keep, sq_prune_criterion crit,
                                      sq_prune_scope scope);

/* m's transposed index (col_ptr, t_row, t_blk: caller-allocated) from its
 * row_ptr and col_idx; the same index the fused prune-and-pack builds.
 * Scratch (4 bytes per block of the grid) is WORKSPACE for the call. */
sq_status sq_cuda_bsr_build_transpose(sq_ctx *ctx, sq_cuda_bsr *m);

/* *entries = the real entries of m's stored blocks (padding of the last
 * block row / column left out): what sq_bsr_dw_flops counts on the CPU.
 * Without padded blocks it is nnzb*b*b and reads nothing; otherwise one
 * small kernel and a wait for the stream (the count comes back to the host). */
sq_status sq_cuda_bsr_entries(sq_ctx *ctx, const sq_cuda_bsr *m, int64_t *entries);

/* Arithmetic of sq_cuda_bsr_dw. */
typedef enum {
    SQ_CUDA_DW_TF32 = 0, /* one TF32 MMA per product: fastest, ~1e-3 relative */
    SQ_CUDA_DW_3XTF32    /* hi/lo split, three MMAs: ~fp32 accuracy */
} sq_cuda_dw_prec;

/* dw (M,K) = dyᵀ (M,R) · x̂ (R,K), x̂ = m.  dy (R,M) with row stride ldy >= M;
 * dw (M,K) with row stride ldw >= K, overwritten (columns with no kept
 * block become 0).  b must be 8, 16, 32 or 64.  dy loads are 16-byte wide
 * when M and ldy are multiples of 4 and dy is 16-byte aligned.
 * splits: how many block-row ranges the grid is split into (their partial
 * tiles, in WORKSPACE for the call, are summed in a fixed order); 0 chooses
 * from the grid size (whole waves of CTAs against the partial tiles' memory
 * traffic), > 0 forces it (tests,
 * tuning).  Counts the call and its FLOPs (2*M*nnzb*b*b) in ctx->stats. */
sq_status sq_cuda_bsr_dw(sq_ctx *ctx, float *dw, int64_t ldw, const float *dy, int64_t ldy,
                         int64_t M, const sq_cuda_bsr *m, sq_cuda_dw_prec prec, int splits);
/* Which BSR dW kernel: mma.sync (every b, both precisions, any alignment;
 * the automatic choice) or the Hopper wgmma kernel (TF32, b 32 or 64,
 * 16-byte dy loads, when sq_cuda_bsr_dw_has_wgmma): a first version that is
 * slower than mma.sync on the H100 today, kept as the base for the
 * TMA/larger-tile work and measured by experiments/bench/actprune_dw.sh. */
typedef enum { SQ_CUDA_DW_AUTO = 0, SQ_CUDA_DW_MMA, SQ_CUDA_DW_WGMMA } sq_cuda_dw_kernel;
/* 1 when the wgmma kernel can run: the library was built for sm_90a
 * (CMAKE_CUDA_ARCHITECTURES 90a, the default) and the device is sm_90. */
int sq_cuda_bsr_dw_has_wgmma(const sq_ctx *ctx);
/* sq_cuda_bsr_dw with its choices forced (tests, tuning): mtile 128, 192 or
 * 256 rows per CTA tile (0 = from M; odd M or strides always 128) and the
 * kernel (asking for wgmma where it cannot run is SQ_ERR_ARG). */
sq_status sq_cuda_bsr_dw_tile(sq_ctx *ctx, float *dw, int64_t ldw, const float *dy, int64_t ldy,
                              int64_t M, const sq_cuda_bsr *m, sq_cuda_dw_prec prec, int splits, int mtile,
                              sq_cuda_dw_kernel kernel);

/* CSR weight gradient (m->b == 1, the topk_unstructured control):
 * dw (M,K) = dyᵀ (M,R) · x̂ (R,K), strides as sq_cuda_bsr_dw, dw overwritten.
 * Needs m's transposed index (sq_cuda_bsr_build_transpose: its scratch is
 * then 4 bytes per entry of x).  One CTA per 32 columns x 128 rows of dW
 * walks each column's kept entries in ascending row order; products and
 * sums in float64, rounded once: within about one float32 rounding of the
 * exact result, deterministic, no atomics.  Counts one GEMM and its FLOPs
 * (2*M*nnz) in ctx->stats. */
sq_status sq_cuda_csr_dw(sq_ctx *ctx, float *dw, int64_t ldw, const float *dy, int64_t ldy, int64_t M,
                         const sq_cuda_bsr *m);

/* x (R,K) contiguous <- the dense matrix m stands for (dropped blocks 0). */
sq_status sq_cuda_bsr_to_dense(sq_ctx *ctx, float *x, const sq_cuda_bsr *m);

#ifdef __cplusplus
}
#endif

#endif
