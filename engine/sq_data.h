/* sq_data.h — datasets: Fashion-MNIST from its gzip IDX files, seeded
 * shuffling and row batching, and byte-level text corpora with a fixed
 * train/validation/test split by byte offset.
 *
 * Loaders never trust a file: every header field, count and byte is checked
 * and a failure names the file, what was expected and what was found
 * (SQ_ERR_IO when the file cannot be opened or read, SQ_ERR_FORMAT when it
 * is there but wrong).  Randomness comes only from ctx->rng, so a seed
 * reproduces every permutation and every sampled window. */
#ifndef SQ_DATA_H
#define SQ_DATA_H

#include "sq_tensor.h"

/* ---- Fashion-MNIST ------------------------------------------------------ */

/* Where Debian's dataset-fashion-mnist package puts the four .gz files. */
#define SQ_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#define SQ_FASHION_MNIST_PACKAGE "dataset-fashion-mnist"

typedef struct {
    const char *dir;   /* NULL: SQ_FASHION_MNIST_DIR */
    int flatten;       /* 1: images (N,784); 0: (N,1,28,28) */
    int normalize;     /* 1: x = (pixel/255 - mean) / std; 0: x = pixel/255 in [0,1] */
    double mean, std;  /* used when normalize; std > 0 */
} sq_mnist_opts;

/* split: "train" (train-*-ubyte.gz) or "test" (t10k-*-ubyte.gz).
 * images: float32 (N,784) or (N,1,28,28); labels: int64 (N) in 0..9.
 * Both new references (category OTHER), set only on success.
 * opts NULL: the defaults (flatten, no normalisation). */
sq_status sq_data_fashion_mnist(sq_ctx *ctx, const char *split, const sq_mnist_opts *opts,
                                sq_tensor **images, sq_tensor **labels);
/* The same from two explicit IDX .gz paths (28x28 images, labels 0..9). */
sq_status sq_data_idx_load(sq_ctx *ctx, const char *images_path, const char *labels_path,
                           const sq_mnist_opts *opts, sq_tensor **images, sq_tensor **labels);

/* ---- shuffling and batching -------------------------------------------- */

/* A uniform random permutation of 0..n-1 (Fisher-Yates on ctx->rng).
 * out: int64 (n), new reference. */
sq_status sq_data_permutation(sq_ctx *ctx, int64_t n, sq_tensor **out);
/* dst[i] = src[idx[i]] for i < n, whole rows along dim 0 (one memcpy each).
 * src: any dtype, rows contiguous (a non-contiguous src is rejected: make it
 * contiguous once, not every batch).  dst: caller-owned, contiguous, same
 * dtype, shape (n, src.shape[1:]...).  Indices are checked against
 * src.shape[0] before anything is written. */
sq_status sq_data_gather_rows_into(sq_ctx *ctx, sq_tensor *dst, const sq_tensor *src,
                                   const int64_t *idx, int64_t n);
/* As above into a new contiguous tensor (n, src.shape[1:]...); *out new reference. */
sq_status sq_data_gather_rows(sq_ctx *ctx, const sq_tensor *src, const int64_t *idx, int64_t n,
                              sq_tensor **out);

/* ---- byte-level text corpora --------------------------------------------- */

enum { SQ_SPLIT_TRAIN = 0, SQ_SPLIT_VAL = 1, SQ_SPLIT_TEST = 2, SQ_NSPLIT = 3 };

typedef struct {
    sq_ctx *ctx;          /* charged for the bytes (category OTHER) */
    uint8_t *bytes;       /* owned; n bytes */
    int64_t n;
    int64_t bounds[SQ_NSPLIT + 1]; /* split s is bytes [bounds[s], bounds[s+1]); bounds[0]=0, bounds[3]=n */
    double frac[SQ_NSPLIT];        /* the fractions the bounds came from */
    uint64_t hash;                 /* FNV-1a 64 of all bytes: records which text a run saw */
} sq_corpus;

/* Reads the whole file at path.  frac: the three split fractions (each >= 0,
 * summing to 1 within 1e-9); NULL means 0.9/0.05/0.05.  The bounds are
 * bounds[1] = floor(n*frac[0]), bounds[2] = floor(n*(frac[0]+frac[1])): a
 * pure function of the file size, so the split is the same on every run.
 * *out: caller owns, free with sq_corpus_free. */
sq_status sq_corpus_load(sq_ctx *ctx, const char *path, const double *frac, sq_corpus **out);
void sq_corpus_free(sq_corpus *c); /* NULL-safe */
/* "train", "val"/"valid"/"validation", "test" -> SQ_SPLIT_*; -1 if unknown. */
int sq_corpus_split_id(const char *name);
const char *sq_corpus_split_name(int split);
/* B windows of T bytes, each wholly inside the split, start uniform on
 * ctx->rng.  x: int64 (B,T) bytes at s..s+T-1; y: int64 (B,T) bytes at
 * s+1..s+T (next-byte targets).  Fails if the split is shorter than T+1. */
sq_status sq_corpus_sample(sq_ctx *ctx, const sq_corpus *c, int split, int64_t B, int64_t T,
                           sq_tensor **x, sq_tensor **y);
/* The whole split as int64 (len) tokens (for a deterministic evaluation pass). */
sq_status sq_corpus_split_tokens(sq_ctx *ctx, const sq_corpus *c, int split, sq_tensor **out);

#endif
