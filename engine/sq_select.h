/* sq_select.h — top-k selection, shared by every method that keeps "the k
 * largest" of something (activation-pruning blocks, unstructured controls,
 * N:M terms, expert picking).  One implementation, so every method breaks
 * ties and treats NaN the same way.
 *
 * Order: scores are ranked by value; every NaN ranks below every number
 * (-inf included); -0 and +0 are equal; among equal scores the lower index
 * wins.  So the selection is a pure function of the scores: deterministic,
 * and the same as "stable sort descending, take the first k".
 *
 * Algorithm: MSB-first radix select on order-preserving integer keys of the
 * float bit patterns (8-bit digits: at most 4 histogram passes for float32,
 * 8 for float64, stopping early once the boundary bucket is exactly what is
 * still needed), then one pass in index order that writes the kept indices
 * already sorted.  O(n) time, no allocation, no sort. */
#ifndef SQ_SELECT_H
#define SQ_SELECT_H

#include "sq_base.h"

/* How many of n to keep for a fraction in (0,1]: ceil(frac * n), computed
 * so that a product that is an integer up to rounding (0.3 * 10) is not
 * bumped to the next one; at least 1 when n > 0 and frac > 0, at most n. */
int64_t sq_select_count(double frac, int64_t n);

/* Order-preserving keys: a > b  <=>  key(a) > key(b) (NaN -> 0, the lowest). */
uint32_t sq_select_key_f32(float v);
uint64_t sq_select_key_f64(double v);

/* The k largest of n scores (dt float32 or float64, contiguous).
 * idx:  caller-owned, room for k; receives the kept indices in ascending
 *       order (NULL: not wanted).
 * mask: caller-owned, n bytes; receives 1 for kept, 0 otherwise (NULL: not
 *       wanted).
 * Fails (SQ_ERR_ARG / SQ_ERR_DTYPE) on k outside [0,n] or a non-float dtype. */
sq_status sq_select_topk(sq_ctx *ctx, sq_dtype dt, const void *scores, int64_t n, int64_t k,
                         int64_t *idx, uint8_t *mask);

/* Per-segment top-k: the n scores are consecutive segments of seglen (the
 * last one may be shorter); each segment keeps its min(k, length) largest.
 * idx receives global indices, ascending (segments in order), room for
 * sq_select_segments_total(n, seglen, k); *nsel (may be NULL) the count.
 * mask as in sq_select_topk. */
sq_status sq_select_topk_segments(sq_ctx *ctx, sq_dtype dt, const void *scores, int64_t n,
                                  int64_t seglen, int64_t k, int64_t *idx, int64_t *nsel,
                                  uint8_t *mask);
/* Number of indices sq_select_topk_segments writes. */
int64_t sq_select_segments_total(int64_t n, int64_t seglen, int64_t k);

#endif
