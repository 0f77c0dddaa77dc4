/* sq_bsr.h — block-sparse row (BSR) matrices: the storage format of pruned
 * activations (methods.md §1), with conversion to and from dense, the
 * prune-and-pack step (score -> select -> pack) and the BSR weight-gradient
 * kernel dW = dyᵀ·x̂.  These are the CPU references the CUDA kernels are
 * validated against.
 *
 * Layout of a (rows x cols) matrix in b x b blocks:
 *   nbr = ceil(rows/b) block rows, nbc = ceil(cols/b) block columns; when
 *   rows or cols is not a multiple of b the last block row / column is padded
 *   with zeros and the true sizes are kept in rows / cols.
 *   row_ptr  int64 (nbr+1)      blocks of block row i: [row_ptr[i], row_ptr[i+1])
 *   col_idx  int32 (nnzb)       block column of each block, ascending in a row
 *   values   dtype (nnzb, b, b) each block row-major; padding entries are 0
 * Optional transposed index (blocks grouped by block column, so that a
 * kernel writing dW block-column by block-column visits only its own blocks
 * and needs no atomics):
 *   col_ptr  int64 (nbc+1)      blocks of block column j: [col_ptr[j], col_ptr[j+1])
 *   t_row    int32 (nnzb)       their block rows, ascending in a column
 *   t_blk    int32 (nnzb)       their positions in `values` (values are not duplicated)
 * Indices are int32 (a block grid beyond 2^31 columns or blocks is refused)
 * and row / column pointers int64.
 *
 * Memory: every buffer is an engine tensor allocated in the category the
 * caller names (SAVED when autograd holds the matrix), so accounting is
 * exact; sq_bsr_bytes returns the sum of the buffers.  The struct itself is
 * a small malloc'd header, like a tensor header, and is not counted. */
#ifndef SQ_BSR_H
#define SQ_BSR_H

#include "sq_tensor.h"

typedef struct sq_bsr {
    int64_t rows, cols;      /* true (unpadded) sizes */
    int64_t b;               /* block edge */
    int64_t nbr, nbc;        /* block rows, block columns */
    int64_t nnzb;            /* stored blocks */
    sq_dtype dtype;          /* of values: float32 or float64 */
    sq_mem_cat cat;          /* category of every buffer */
    sq_tensor *row_ptr;      /* int64 (nbr+1) */
    sq_tensor *col_idx;      /* int32 (nnzb) */
    sq_tensor *values;       /* (nnzb, b, b) */
    sq_tensor *col_ptr;      /* int64 (nbc+1) or NULL: transposed index */
    sq_tensor *t_row;        /* int32 (nnzb) or NULL */
    sq_tensor *t_blk;        /* int32 (nnzb) or NULL */
} sq_bsr;

/* Which blocks prune-and-pack keeps. */
typedef enum {
    SQ_PRUNE_L2 = 0,           /* largest squared Frobenius norm (the method) */
    SQ_PRUNE_RANDOM,           /* uniformly random blocks from ctx->rng (control) */
    SQ_PRUNE_TOPK_UNSTRUCTURED,/* largest-|x| single entries, same entry budget (control) */
    SQ_PRUNE_NCRITERIA
} sq_prune_criterion;

/* Over what the top-k runs. */
typedef enum {
    SQ_PRUNE_SCOPE_TENSOR = 0, /* k = ceil(keep * nblocks) over the whole matrix (default) */
    SQ_PRUNE_SCOPE_ROW,        /* ceil(keep * nbc) in every block row */
    SQ_PRUNE_NSCOPES
} sq_prune_scope;

const char *sq_prune_criterion_name(sq_prune_criterion c);  /* "l2", "random", "topk_unstructured" */
const char *sq_prune_scope_name(sq_prune_scope s);          /* "tensor", "row" */
/* Name -> enum; -1 when unknown. */
int sq_prune_criterion_parse(const char *name);
int sq_prune_scope_parse(const char *name);

/* A BSR with room for nnzb blocks; buffers uninitialised except row_ptr[0] = 0.
 * *out: caller owns, free with sq_bsr_free. */
sq_status sq_bsr_new(sq_ctx *ctx, sq_dtype dt, int64_t rows, int64_t cols, int64_t b,
                     int64_t nnzb, sq_mem_cat cat, sq_bsr **out);
/* Releases every buffer (their bytes leave their category) and the header. NULL-safe. */
void sq_bsr_free(sq_bsr *m);
/* Total bytes of the buffers: values + row/column pointers + indices
 * (the transposed index included when it is built). */
int64_t sq_bsr_bytes(const sq_bsr *m);
/* Bytes of values alone: nnzb * b * b * sizeof(dtype). */
int64_t sq_bsr_value_bytes(const sq_bsr *m);

/* x (rows, cols), any strides, float -> BSR holding every block that has a
 * nonzero entry (a NaN counts as nonzero).  *out: caller owns. */
sq_status sq_bsr_from_dense(sq_ctx *ctx, const sq_tensor *x, int64_t b, sq_mem_cat cat,
                            sq_bsr **out);
/* BSR -> new contiguous (rows, cols) tensor (category OTHER); dropped blocks are 0. */
sq_status sq_bsr_to_dense(sq_ctx *ctx, const sq_bsr *m, sq_tensor **out);
/* Builds the transposed index (no-op when present), buffers in category cat. */
sq_status sq_bsr_build_transpose(sq_ctx *ctx, sq_bsr *m, sq_mem_cat cat);

/* Prune-and-pack: one pass scoring x's b x b blocks, a top-k selection
 * (sq_select), one pass copying the kept blocks.  x (R,K) float, any strides.
 *   keep in (0,1]; k = sq_select_count(keep, nblocks) (scope tensor) or
 *   sq_select_count(keep, nbc) per block row (scope row).
 *   L2:     score = squared Frobenius norm of the block, accumulated in
 *           float64 in row-major order inside the block.
 *   random: score = uniform draw from ctx->rng per block in block order, so
 *           exactly k blocks, the same ones for the same seed.
 *   topk_unstructured: keeps the k*b*b largest |x| entries (per block row:
 *           k_row*b*b within the block row's b*K entries), clamped to the
 *           entries there are.  It is returned as CSR, i.e. a BSR with b = 1
 *           (values, int32 column indices, int64 row pointers), so it stores
 *           what it keeps and every BSR function applies to it; its bytes are
 *           nnz*(sizeof(dtype)+4) + (R+1)*8 — an accuracy control, not a
 *           memory-efficient format (at keep 0.5 in float32 it is as large
 *           as dense).
 * Buffers are allocated in `cat`; scratch (scores, indices) is WORKSPACE and
 * freed before returning.  *out: caller owns. */
sq_status sq_bsr_prune_pack(sq_ctx *ctx, const sq_tensor *x, int64_t b, double keep,
                            sq_prune_criterion crit, sq_prune_scope scope, sq_mem_cat cat,
                            sq_bsr **out);

/* Block scores of x (R,K) for the L2 criterion: scores (nbr*nbc) float64,
 * caller-owned, block (i,j) at i*nbc + j.  x contiguous. Exposed for tests
 * and for CUDA kernels to compare against. */
void sq_bsr_block_scores_l2(sq_dtype dt, const void *x, int64_t R, int64_t K, int64_t b,
                            double *scores);

/* BSR weight gradient: dw (M,K) = dyᵀ (M,R) · x̂ (R,K), x̂ = m (rows R, cols K).
 * dy (R,M) and dw (M,K) contiguous, same dtype as m; dw is overwritten.
 * b > 1: walks the transposed index block column by block column (built in
 * WORKSPACE for the call when absent); per kept block one GEMM on the b-row
 * slice of dy, the first block of a column with beta 0, so each output
 * column block is written by one sequence only.  b = 1 (CSR): a row-wise
 * axpy into dWᵀ (WORKSPACE) and one transpose.  FLOPs: 2*M*(real entries of
 * the kept blocks), i.e. keep x the dense 2*M*R*K. */
sq_status sq_bsr_dw(sq_ctx *ctx, const sq_tensor *dy, sq_bsr *m, sq_tensor *dw);
/* The multiply-adds sq_bsr_dw issues, as FLOPs (2 per multiply-add). */
double sq_bsr_dw_flops(const sq_bsr *m, int64_t M);

#endif
