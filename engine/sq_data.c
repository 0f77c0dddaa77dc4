/* sq_data.c — Fashion-MNIST IDX loader (zlib), seeded permutations, row
 * gathering, and byte-level text corpora with fixed splits. */
#include "sq_data.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define IDX_IMAGES_MAGIC 0x00000803u
#define IDX_LABELS_MAGIC 0x00000801u
#define MNIST_SIDE 28
/* deflate never compresses better than about 1032:1, so a header promising
 * more bytes than that bound is a lie we can reject before allocating */
#define DEFLATE_MAX_RATIO 1100

/* ---- gzip reading --------------------------------------------------------- */

typedef struct {
    gzFile gz;
    const char *path;
    int64_t file_bytes;
} gz_in;

static sq_status gz_in_open(sq_ctx *ctx, const char *path, gz_in *in)
{
    memset(in, 0, sizeof *in);
    in->path = path;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        int e = errno;
        if (e == ENOENT)
            return sq_fail(ctx, SQ_ERR_IO, "%s: no such file (Fashion-MNIST comes with the Debian package "
                           "%s: apt-get install %s; its files go to %s)", path, SQ_FASHION_MNIST_PACKAGE,
                           SQ_FASHION_MNIST_PACKAGE, SQ_FASHION_MNIST_DIR);
        return sq_fail(ctx, SQ_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) return sq_fail(ctx, SQ_ERR_IO, "%s: not a regular file", path);
    if (sb.st_size == 0)
        return sq_fail(ctx, SQ_ERR_FORMAT, "%s: empty file: expected a gzip-compressed IDX file", path);
    in->file_bytes = (int64_t)sb.st_size;
    in->gz = gzopen(path, "rb");
    if (!in->gz) return sq_fail(ctx, SQ_ERR_IO, "%s: cannot open: %s", path, errno ? strerror(errno) : "gzopen failed");
    gzbuffer(in->gz, 1u << 17);
    if (gzdirect(in->gz)) {
        unsigned char m[2] = {0, 0};
        int got = gzread(in->gz, m, 2);
        gzclose(in->gz);
        in->gz = NULL;
        return sq_fail(ctx, SQ_ERR_FORMAT, "%s: not a gzip file: expected the gzip magic 1f 8b, found %02x %02x",
                       path, got > 0 ? m[0] : 0, got > 1 ? m[1] : 0);
    }
    return SQ_OK;
}

static void gz_in_close(gz_in *in)
{
    if (in->gz) gzclose(in->gz);
    in->gz = NULL;
}

/* zlib's message without the "path: " it puts in front. */
static const char *zmsg(gz_in *in, int *zerr)
{
    const char *m = gzerror(in->gz, zerr);
    if (!m || !*m) return "unknown zlib error";
    size_t pl = strlen(in->path);
    if (strncmp(m, in->path, pl) == 0 && m[pl] == ':' && m[pl + 1] == ' ') m += pl + 2;
    return m;
}

/* Reads up to n bytes; *got is what arrived.  Fails only on a zlib error
 * (corrupt deflate data, bad CRC); a short read is the caller's to judge. */
static sq_status gz_read(sq_ctx *ctx, gz_in *in, void *buf, int64_t n, const char *what, int64_t *got)
{
    *got = 0;
    while (*got < n) {
        int64_t want = n - *got;
        unsigned chunk = want > (1 << 30) ? (1u << 30) : (unsigned)want;
        int r = gzread(in->gz, (char *)buf + *got, chunk);
        if (r < 0) {
            int zerr;
            return sq_fail(ctx, SQ_ERR_FORMAT, "%s: corrupt gzip data while reading %s: %s", in->path, what,
                           zmsg(in, &zerr));
        }
        if (r == 0) break;
        *got += r;
    }
    return SQ_OK;
}

/* Short read: truncated.  Says whether the gzip stream itself was cut off. */
static sq_status truncated(sq_ctx *ctx, gz_in *in, const char *what, int64_t want, int64_t got)
{
    int zerr = Z_OK;
    gzerror(in->gz, &zerr);
    return sq_fail(ctx, SQ_ERR_FORMAT, "%s: truncated: expected %lld bytes of %s, found %lld%s", in->path,
                   (long long)want, what, (long long)got,
                   zerr == Z_BUF_ERROR ? " (the gzip stream is cut off)" : "");
}

/* After the payload: nothing may follow, and the gzip trailer (CRC) must check. */
static sq_status expect_end(sq_ctx *ctx, gz_in *in, const char *what, int64_t want)
{
    unsigned char extra[64];
    int64_t got;
    SQ_TRY(gz_read(ctx, in, extra, sizeof extra, what, &got));
    if (got > 0)
        return sq_fail(ctx, SQ_ERR_FORMAT, "%s: trailing data: expected exactly %lld bytes of %s after the header, "
                       "found more", in->path, (long long)want, what);
    int zerr = Z_OK;
    const char *msg = zmsg(in, &zerr);
    if (zerr != Z_OK)
        return sq_fail(ctx, SQ_ERR_FORMAT, "%s: gzip stream ends badly after %s: %s", in->path, what, msg);
    return SQ_OK;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Reads an IDX header of 4*(1+ndim) bytes: magic then ndim big-endian sizes. */
static sq_status idx_header(sq_ctx *ctx, gz_in *in, uint32_t magic, const char *kind, int ndim, uint32_t *dims)
{
    unsigned char h[16];
    int64_t hb = 4 * (1 + ndim), got;
    SQ_TRY(gz_read(ctx, in, h, hb, "header", &got));
    if (got < hb) {
        return sq_fail(ctx, SQ_ERR_FORMAT, "%s: truncated: expected a %lld-byte IDX header, found %lld bytes",
                       in->path, (long long)hb, (long long)got);
    }
    uint32_t m = be32(h);
    if (m != magic) {
        const char *hint = m == IDX_IMAGES_MAGIC ? " (an image file)" : m == IDX_LABELS_MAGIC ? " (a label file)" : "";
        return sq_fail(ctx, SQ_ERR_FORMAT, "%s: bad magic number: expected 0x%08x (%s), found 0x%08x%s", in->path,
                       magic, kind, m, hint);
    }
    for (int d = 0; d < ndim; d++) dims[d] = be32(h + 4 + 4 * d);
    return SQ_OK;
}

/* A count the file cannot possibly hold is rejected before allocating. */
static sq_status plausible(sq_ctx *ctx, gz_in *in, const char *what, int64_t payload)
{
    if (payload / DEFLATE_MAX_RATIO > in->file_bytes)
        return sq_fail(ctx, SQ_ERR_FORMAT, "%s: truncated or corrupt header: it promises %lld bytes of %s, more than "
                       "a %lld-byte gzip file can hold", in->path, (long long)payload, what,
                       (long long)in->file_bytes);
    return SQ_OK;
}

/* labels: int64 (N) in 0..9 */
static sq_status load_labels(sq_ctx *ctx, const char *path, sq_tensor **out)
{
    gz_in in;
    sq_tensor *t = NULL;
    sq_status st;
    uint32_t n32 = 0;
    int64_t got;
    SQ_TRY(gz_in_open(ctx, path, &in));
    SQ_CHECK(idx_header(ctx, &in, IDX_LABELS_MAGIC, "labels, idx1 ubyte", 1, &n32));
    int64_t n = n32;
    SQ_CHECK(plausible(ctx, &in, "labels", n));
    SQ_CHECK(sq_tensor_empty(ctx, SQ_I64, 1, &n, &t));
    /* bytes land in the tail of the int64 buffer and widen in place, front to
     * back: element i's 8 bytes end at 8i+7 < 7n+i+1, so no unread byte is hit */
    uint8_t *raw = (uint8_t *)t->storage->data + 7 * n;
    SQ_CHECK(gz_read(ctx, &in, raw, n, "labels", &got));
    if (got < n) {
        st = truncated(ctx, &in, "labels", n, got);
        goto done;
    }
    SQ_CHECK(expect_end(ctx, &in, "labels", n));
    for (int64_t i = 0; i < n; i++)
        if (raw[i] > 9) {
            st = sq_fail(ctx, SQ_ERR_FORMAT, "%s: label %u at index %lld is outside 0..9", path, raw[i],
                         (long long)i);
            goto done;
        }
    int64_t *lab = t->storage->data;
    for (int64_t i = 0; i < n; i++) lab[i] = raw[i];
    *out = t;
    t = NULL;
done:
    gz_in_close(&in);
    sq_tensor_release(t);
    return st;
}

sq_status sq_data_idx_load(sq_ctx *ctx, const char *images_path, const char *labels_path,
                           const sq_mnist_opts *opts, sq_tensor **images, sq_tensor **labels)
{
    *images = NULL;
    *labels = NULL;
    sq_mnist_opts def = {NULL, 1, 0, 0.0, 1.0};
    if (!opts) opts = &def;
    if (opts->normalize && !(opts->std > 0 && isfinite(opts->std) && isfinite(opts->mean)))
        return sq_fail(ctx, SQ_ERR_ARG, "fashion_mnist: normalisation needs a finite mean and std > 0, got mean %g std %g",
                       opts->mean, opts->std);
    sq_tensor *lab = NULL, *img = NULL;
    gz_in in = {0};
    sq_status st;
    SQ_CHECK(load_labels(ctx, labels_path, &lab));
    SQ_CHECK(gz_in_open(ctx, images_path, &in));
    uint32_t dims[3];
    SQ_CHECK(idx_header(ctx, &in, IDX_IMAGES_MAGIC, "images, idx3 ubyte", 3, dims));
    if (dims[1] != MNIST_SIDE || dims[2] != MNIST_SIDE) {
        st = sq_fail(ctx, SQ_ERR_FORMAT, "%s: expected %dx%d images, found %ux%u", images_path, MNIST_SIDE,
                     MNIST_SIDE, dims[1], dims[2]);
        goto done;
    }
    int64_t n = dims[0];
    if (n != lab->shape[0]) {
        st = sq_fail(ctx, SQ_ERR_FORMAT, "%s: count mismatch: %lld images, but %s has %lld labels", images_path,
                     (long long)n, labels_path, (long long)lab->shape[0]);
        goto done;
    }
    const int64_t px = MNIST_SIDE * MNIST_SIDE, M = n * px;
    SQ_CHECK(plausible(ctx, &in, "pixels", M));
    int64_t shape4[4] = {n, 1, MNIST_SIDE, MNIST_SIDE}, shape2[2] = {n, px};
    SQ_CHECK(opts->flatten ? sq_tensor_empty(ctx, SQ_F32, 2, shape2, &img)
                           : sq_tensor_empty(ctx, SQ_F32, 4, shape4, &img));
    /* pixels land in the last quarter of the float buffer and widen in place
     * (float i ends at byte 4i+3 < 3M+i+1: never past an unread pixel) */
    uint8_t *raw = (uint8_t *)img->storage->data + 3 * M;
    int64_t got;
    SQ_CHECK(gz_read(ctx, &in, raw, M, "pixels", &got));
    if (got < M) {
        st = truncated(ctx, &in, "pixels", M, got);
        goto done;
    }
    SQ_CHECK(expect_end(ctx, &in, "pixels", M));
    float lut[256];
    for (int v = 0; v < 256; v++) {
        double x = v / 255.0;
        lut[v] = (float)(opts->normalize ? (x - opts->mean) / opts->std : x);
    }
    float *f = img->storage->data;
    for (int64_t i = 0; i < M; i++) f[i] = lut[raw[i]];
    *images = img;
    *labels = lab;
    img = lab = NULL;
done:
    gz_in_close(&in);
    sq_tensor_release(img);
    sq_tensor_release(lab);
    return st;
}

sq_status sq_data_fashion_mnist(sq_ctx *ctx, const char *split, const sq_mnist_opts *opts,
                                sq_tensor **images, sq_tensor **labels)
{
    *images = NULL;
    *labels = NULL;
    const char *prefix;
    if (split && strcmp(split, "train") == 0) prefix = "train";
    else if (split && strcmp(split, "test") == 0) prefix = "t10k";
    else return sq_fail(ctx, SQ_ERR_ARG, "fashion_mnist: split must be 'train' or 'test', got '%s'", split ? split : "(null)");
    const char *dir = opts && opts->dir ? opts->dir : SQ_FASHION_MNIST_DIR;
    char ip[4096], lp[4096];
    int a = snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    int b = snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    if (a < 0 || b < 0 || (size_t)a >= sizeof ip || (size_t)b >= sizeof lp)
        return sq_fail(ctx, SQ_ERR_ARG, "fashion_mnist: directory name too long: %.200s...", dir);
    return sq_data_idx_load(ctx, ip, lp, opts, images, labels);
}

/* ---- shuffling and batching ------------------------------------------------ */

sq_status sq_data_permutation(sq_ctx *ctx, int64_t n, sq_tensor **out)
{
    *out = NULL;
    if (n < 0) return sq_fail(ctx, SQ_ERR_ARG, "permutation: n = %lld must be >= 0", (long long)n);
    SQ_TRY(sq_tensor_empty(ctx, SQ_I64, 1, &n, out));
    int64_t *p = (*out)->storage->data;
    for (int64_t i = 0; i < n; i++) p[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)sq_rng_below(&ctx->rng, (uint64_t)i + 1);
        int64_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    return SQ_OK;
}

sq_status sq_data_gather_rows_into(sq_ctx *ctx, sq_tensor *dst, const sq_tensor *src,
                                   const int64_t *idx, int64_t n)
{
    char a[64], b[64];
    if (!src || !dst) return sq_fail(ctx, SQ_ERR_ARG, "gather_rows: %s is missing", src ? "destination" : "source");
    if (n < 0 || (n > 0 && !idx)) return sq_fail(ctx, SQ_ERR_ARG, "gather_rows: index list missing (n = %lld)", (long long)n);
    if (src->ndim < 1) return sq_fail(ctx, SQ_ERR_SHAPE, "gather_rows: source is a scalar; need at least 1 dim");
    if (!sq_tensor_is_contiguous(src))
        return sq_fail(ctx, SQ_ERR_ARG, "gather_rows: source %s is not contiguous (make it contiguous once, before batching)",
                       sq_shape_str(src, a, sizeof a));
    if (src->storage->device != SQ_CPU || dst->storage->device != SQ_CPU)
        return sq_fail(ctx, SQ_ERR_DEVICE, "gather_rows: runs on the cpu");
    if (dst->dtype != src->dtype)
        return sq_fail(ctx, SQ_ERR_DTYPE, "gather_rows: destination is %s, source is %s", sq_dtype_name(dst->dtype),
                       sq_dtype_name(src->dtype));
    int ok = sq_tensor_is_contiguous(dst) && dst->ndim == src->ndim && dst->shape[0] == n;
    for (int d = 1; ok && d < src->ndim; d++) ok = dst->shape[d] == src->shape[d];
    if (!ok)
        return sq_fail(ctx, SQ_ERR_SHAPE, "gather_rows: destination %s must be contiguous with shape %lld x (rows of %s)",
                       sq_shape_str(dst, a, sizeof a), (long long)n, sq_shape_str(src, b, sizeof b));
    int64_t rows = src->shape[0];
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= rows)
            return sq_fail(ctx, SQ_ERR_ARG, "gather_rows: index %lld at position %lld is out of range for %lld rows",
                           (long long)idx[i], (long long)i, (long long)rows);
    size_t rb = rows ? (size_t)(sq_tensor_numel(src) / rows) * sq_dtype_size(src->dtype) : 0;
    const char *s = sq_tensor_data(src);
    char *d = sq_tensor_data(dst);
    for (int64_t i = 0; i < n; i++) memcpy(d + (size_t)i * rb, s + (size_t)idx[i] * rb, rb);
    return SQ_OK;
}

sq_status sq_data_gather_rows(sq_ctx *ctx, const sq_tensor *src, const int64_t *idx, int64_t n,
                              sq_tensor **out)
{
    *out = NULL;
    if (!src) return sq_fail(ctx, SQ_ERR_ARG, "gather_rows: source is missing");
    if (src->ndim < 1) return sq_fail(ctx, SQ_ERR_SHAPE, "gather_rows: source is a scalar; need at least 1 dim");
    if (n < 0) return sq_fail(ctx, SQ_ERR_ARG, "gather_rows: n = %lld must be >= 0", (long long)n);
    int64_t sh[SQ_MAX_DIMS];
    memcpy(sh, src->shape, sizeof sh);
    sh[0] = n;
    sq_tensor *t;
    SQ_TRY(sq_tensor_empty(ctx, src->dtype, src->ndim, sh, &t));
    sq_status st = sq_data_gather_rows_into(ctx, t, src, idx, n);
    if (st != SQ_OK) {
        sq_tensor_release(t);
        return st;
    }
    *out = t;
    return SQ_OK;
}

/* ---- text corpora ------------------------------------------------------------ */

static const char *const split_names[SQ_NSPLIT] = {"train", "val", "test"};

int sq_corpus_split_id(const char *name)
{
    if (!name) return -1;
    if (!strcmp(name, "train")) return SQ_SPLIT_TRAIN;
    if (!strcmp(name, "val") || !strcmp(name, "valid") || !strcmp(name, "validation")) return SQ_SPLIT_VAL;
    if (!strcmp(name, "test")) return SQ_SPLIT_TEST;
    return -1;
}

const char *sq_corpus_split_name(int split)
{
    return split >= 0 && split < SQ_NSPLIT ? split_names[split] : "?";
}

sq_status sq_corpus_load(sq_ctx *ctx, const char *path, const double *frac, sq_corpus **out)
{
    *out = NULL;
    static const double def[SQ_NSPLIT] = {0.9, 0.05, 0.05};
    if (!frac) frac = def;
    double sum = 0;
    for (int s = 0; s < SQ_NSPLIT; s++) {
        if (!(frac[s] >= 0 && frac[s] <= 1))
            return sq_fail(ctx, SQ_ERR_ARG, "text_corpus: split fraction %d is %g; need 0..1", s + 1, frac[s]);
        sum += frac[s];
    }
    if (fabs(sum - 1.0) > 1e-9)
        return sq_fail(ctx, SQ_ERR_ARG, "text_corpus: split fractions %g + %g + %g = %.12g; need 1", frac[0],
                       frac[1], frac[2], sum);
    if (!path) return sq_fail(ctx, SQ_ERR_ARG, "text_corpus: path is missing");
    FILE *f = fopen(path, "rb");
    if (!f) return sq_fail(ctx, SQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return sq_fail(ctx, SQ_ERR_IO, "%s: not a regular file", path);
    }
    int64_t n = (int64_t)sb.st_size;
    if (n == 0) {
        fclose(f);
        return sq_fail(ctx, SQ_ERR_FORMAT, "%s: empty file: expected text", path);
    }
    sq_corpus *c = calloc(1, sizeof *c);
    uint8_t *bytes = malloc((size_t)n);
    if (!c || !bytes) {
        fclose(f);
        free(c);
        free(bytes);
        return sq_fail(ctx, SQ_ERR_NOMEM, "%s: out of host memory for %lld bytes", path, (long long)n);
    }
    size_t got = fread(bytes, 1, (size_t)n, f);
    int err = ferror(f), more = fgetc(f) != EOF;
    fclose(f);
    if (err || got != (size_t)n || more) {
        free(c);
        free(bytes);
        return sq_fail(ctx, SQ_ERR_IO, "%s: read %zu bytes, expected %lld (file changed while reading?)", path, got,
                       (long long)n);
    }
    c->ctx = ctx;
    c->bytes = bytes;
    c->n = n;
    c->bounds[0] = 0;
    c->bounds[1] = (int64_t)floor((double)n * frac[0]);
    c->bounds[2] = (int64_t)floor((double)n * (frac[0] + frac[1]));
    if (c->bounds[2] > n) c->bounds[2] = n;
    c->bounds[3] = n;
    memcpy(c->frac, frac, sizeof c->frac);
    uint64_t h = 1469598103934665603ull;
    for (int64_t i = 0; i < n; i++) h = (h ^ bytes[i]) * 1099511628211ull;
    c->hash = h;
    sq_mem_add(ctx, SQ_CPU, SQ_MEM_OTHER, n);
    *out = c;
    return SQ_OK;
}

void sq_corpus_free(sq_corpus *c)
{
    if (!c) return;
    sq_mem_sub(c->ctx, SQ_CPU, SQ_MEM_OTHER, c->n);
    free(c->bytes);
    free(c);
}

static sq_status check_split(sq_ctx *ctx, const char *fn, int split)
{
    if (split < 0 || split >= SQ_NSPLIT)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: split %d is not train (0), val (1) or test (2)", fn, split);
    return SQ_OK;
}

sq_status sq_corpus_sample(sq_ctx *ctx, const sq_corpus *c, int split, int64_t B, int64_t T,
                           sq_tensor **x, sq_tensor **y)
{
    *x = *y = NULL;
    SQ_TRY(check_split(ctx, "sample", split));
    if (B < 1 || T < 1)
        return sq_fail(ctx, SQ_ERR_ARG, "sample: batch %lld and length %lld must be >= 1", (long long)B, (long long)T);
    int64_t lo = c->bounds[split], len = c->bounds[split + 1] - lo;
    if (len < T + 1)
        return sq_fail(ctx, SQ_ERR_ARG, "sample: the %s split has %lld bytes; a window of %lld needs at least %lld",
                       split_names[split], (long long)len, (long long)T, (long long)(T + 1));
    int64_t sh[2] = {B, T};
    SQ_TRY(sq_tensor_empty(ctx, SQ_I64, 2, sh, x));
    sq_status st = sq_tensor_empty(ctx, SQ_I64, 2, sh, y);
    if (st != SQ_OK) {
        sq_tensor_release(*x);
        *x = NULL;
        return st;
    }
    int64_t *xp = (*x)->storage->data, *yp = (*y)->storage->data;
    uint64_t starts = (uint64_t)(len - T); /* s in [lo, lo+len-T-1] keeps s+T inside the split */
    for (int64_t b = 0; b < B; b++) {
        const uint8_t *w = c->bytes + lo + (int64_t)sq_rng_below(&ctx->rng, starts);
        for (int64_t t = 0; t < T; t++) {
            xp[b * T + t] = w[t];
            yp[b * T + t] = w[t + 1];
        }
    }
    return SQ_OK;
}

sq_status sq_corpus_split_tokens(sq_ctx *ctx, const sq_corpus *c, int split, sq_tensor **out)
{
    *out = NULL;
    SQ_TRY(check_split(ctx, "split_tokens", split));
    int64_t lo = c->bounds[split], len = c->bounds[split + 1] - lo;
    SQ_TRY(sq_tensor_empty(ctx, SQ_I64, 1, &len, out));
    int64_t *p = (*out)->storage->data;
    for (int64_t i = 0; i < len; i++) p[i] = c->bytes[lo + i];
    return SQ_OK;
}
