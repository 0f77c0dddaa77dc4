/* test_h5.c — HDF5 save/load of named tensors: roundtrip of every dtype
 * (non-contiguous, scalar, empty and compressed inputs included), metadata,
 * save order, atomic replacement, and clear errors for corrupt, missing and
 * non-HDF5 files and missing dataset names. */
#include "sq_h5.h"
#include "sq_test.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static void tmp_path(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmpdir, name); }

/* Number of files in tmpdir whose name contains ".tmp-". */
static int leftover_tmp_files(void)
{
    DIR *d = opendir(tmpdir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp-") != NULL;
    if (d) closedir(d);
    return n;
}

static int same_values(const sq_tensor *a, const sq_tensor *b)
{
    if (!a || !b || a->dtype != b->dtype || !sq_shape_equal(a, b)) return 0;
    for (int64_t i = 0; i < sq_tensor_numel(a); i++)
        if (sq_tensor_get_flat(a, i) != sq_tensor_get_flat(b, i)) return 0;
    return 1;
}

#define NT 7
static const char *const NAMES[NT] = {"layers.0.weight", "layers.0.bias", "layers.10.weight", "embed",
                                      "step", "empty.x", "big"};

/* The test set: a transposed f32 view, f64, int64, int32, 0-d, empty, and a large f32. */
static void make_set(sq_ctx *ctx, sq_tensor **ts, sq_tensor **base)
{
    int64_t s34[2] = {4, 3}, s235[3] = {2, 3, 5}, s7[1] = {7}, s22[2] = {2, 2}, s03[2] = {0, 3},
            sbig[2] = {300, 301};
    sq_tensor_randn(ctx, SQ_F32, 2, s34, 0, 1, base);
    sq_view_raw(ctx, *base, 2, (int64_t[]){3, 4}, (int64_t[]){1, 3}, 0, &ts[0]); /* transposed */
    sq_tensor_randn(ctx, SQ_F64, 3, s235, 0, 1, &ts[1]);
    sq_tensor_empty(ctx, SQ_I64, 1, s7, &ts[2]);
    for (int i = 0; i < 7; i++) sq_tensor_set_flat(ts[2], i, (double)((int64_t)1 << (8 * i)) - 3);
    sq_tensor_empty(ctx, SQ_I32, 2, s22, &ts[3]);
    for (int i = 0; i < 4; i++) sq_tensor_set_flat(ts[3], i, -7 + 1000 * i);
    sq_tensor_full(ctx, SQ_F64, 0, NULL, 1234.5, &ts[4]);
    sq_tensor_empty(ctx, SQ_F32, 2, s03, &ts[5]);
    sq_tensor_randn(ctx, SQ_F32, 2, sbig, 0, 1, &ts[6]);
    for (int64_t i = 0; i < 300 * 301; i += 3) sq_tensor_set_flat(ts[6], i, 0); /* some redundancy */
}

TEST(roundtrip_all_dtypes)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 1);
    sq_tensor *ts[NT] = {0}, *base = NULL;
    make_set(&ctx, ts, &base);
    CHECK(!sq_tensor_is_contiguous(ts[0]));
    const char *keys[3] = {"method", "seed", "note"}, *vals[3] = {"lrd", "42", "r\xc3\xa9sum\xc3\xa9 = 1.5"};
    char p[512];
    tmp_path(p, sizeof p, "model.h5");
    CHECK_OK(&ctx, sq_h5_save(&ctx, p, NT, NAMES, ts, 3, keys, vals));
    CHECK(leftover_tmp_files() == 0);
    struct stat sb;
    CHECK(stat(p, &sb) == 0);
    /* the 360 KB tensor is compressed: 1/3 zeros make the file clearly smaller */
    CHECK_MSG(sb.st_size < 300 * 301 * 4, "file is %lld bytes", (long long)sb.st_size);
    sq_h5_set *s = NULL;
    CHECK_OK(&ctx, sq_h5_load(&ctx, p, &s));
    if (!s) return;
    CHECK(s->n == NT);
    for (int i = 0; i < NT && i < s->n; i++) {
        CHECK_MSG(strcmp(s->names[i], NAMES[i]) == 0, "name %d: '%s', saved '%s'", i, s->names[i], NAMES[i]);
        CHECK_MSG(same_values(s->tensors[i], ts[i]), "tensor '%s' differs after the roundtrip", NAMES[i]);
    }
    CHECK(s->tensors[4]->ndim == 0 && s->tensors[5]->shape[0] == 0 && s->tensors[5]->shape[1] == 3);
    CHECK(s->tensors[2]->dtype == SQ_I64 && s->tensors[3]->dtype == SQ_I32 && s->tensors[1]->dtype == SQ_F64);
    CHECK(sq_h5_set_get(s, "layers.10.weight") == s->tensors[2] && sq_h5_set_get(s, "layers") == NULL);
    CHECK(s->nattr == 3);
    for (int i = 0; i < 3; i++) {
        const char *v = sq_h5_set_attr(s, keys[i]);
        CHECK_MSG(v && strcmp(v, vals[i]) == 0, "attribute %s = '%s'", keys[i], v ? v : "(missing)");
    }
    sq_h5_set_free(s);
    /* one dataset by name */
    sq_tensor *one = NULL;
    CHECK_OK(&ctx, sq_h5_load_tensor(&ctx, p, "layers.0.weight", &one));
    CHECK(same_values(one, ts[0]));
    sq_tensor_release(one);
    /* saving again replaces the file whole */
    CHECK_OK(&ctx, sq_h5_save(&ctx, p, 1, &NAMES[3], &ts[3], 0, NULL, NULL));
    CHECK_OK(&ctx, sq_h5_load(&ctx, p, &s));
    CHECK(s && s->n == 1 && s->nattr == 0 && same_values(s->tensors[0], ts[3]));
    sq_h5_set_free(s);
    for (int i = 0; i < NT; i++) sq_tensor_release(ts[i]);
    sq_tensor_release(base);
    CHECK(leftover_tmp_files() == 0);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

static int copy_prefix(const char *from, const char *to, long n, long flip_at)
{
    FILE *f = fopen(from, "rb");
    if (!f) return 0;
    char *b = malloc((size_t)n);
    long got = b ? (long)fread(b, 1, (size_t)n, f) : 0;
    fclose(f);
    if (got != n) {
        free(b);
        return 0;
    }
    if (flip_at >= 0)
        for (long i = flip_at; i < flip_at + 16 && i < n; i++) b[i] ^= 0x55;
    FILE *g = fopen(to, "wb");
    int ok = g && fwrite(b, 1, (size_t)n, g) == (size_t)n;
    if (g) fclose(g);
    free(b);
    return ok;
}

TEST(bad_files_rejected)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 2);
    sq_tensor *ts[NT] = {0}, *base = NULL;
    make_set(&ctx, ts, &base);
    char p[512], q[512];
    tmp_path(p, sizeof p, "good.h5");
    CHECK_OK(&ctx, sq_h5_save(&ctx, p, NT, NAMES, ts, 0, NULL, NULL));
    struct stat sb;
    CHECK(stat(p, &sb) == 0);
    sq_h5_set *s = NULL;
    sq_tensor *t = NULL;
    /* missing file */
    tmp_path(q, sizeof q, "absent.h5");
    CHECK_FAIL(&ctx, SQ_ERR_IO, "absent.h5: cannot open: No such file or directory", sq_h5_load(&ctx, q, &s));
    CHECK_FAIL(&ctx, SQ_ERR_IO, "absent.h5: cannot open", sq_h5_load_tensor(&ctx, q, "x", &t));
    /* not HDF5 at all */
    tmp_path(q, sizeof q, "notes.h5");
    FILE *f = fopen(q, "w");
    if (f) {
        fputs("this is not an HDF5 file\n", f);
        fclose(f);
    }
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "notes.h5: not an HDF5 file (no HDF5 signature in its 25 bytes)", sq_h5_load(&ctx, q, &s));
    /* truncated to half: the superblock's end-of-file address no longer fits */
    tmp_path(q, sizeof q, "half.h5");
    CHECK(copy_prefix(p, q, (long)sb.st_size / 2, -1));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "half.h5: corrupt HDF5 file: truncated file", sq_h5_load(&ctx, q, &s));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "half.h5: corrupt HDF5 file", sq_h5_load_tensor(&ctx, q, "big", &t));
    /* bytes flipped inside the big dataset's chunks: the checksum / inflate catches it */
    tmp_path(q, sizeof q, "flipped.h5");
    CHECK(copy_prefix(p, q, (long)sb.st_size, (long)sb.st_size / 2));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "flipped.h5: dataset 'big': corrupt data", sq_h5_load(&ctx, q, &s));
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "flipped.h5: dataset 'big': corrupt data", sq_h5_load_tensor(&ctx, q, "big", &t));
    /* ...while the untouched datasets of that file still load */
    CHECK_OK(&ctx, sq_h5_load_tensor(&ctx, q, "layers.0.bias", &t));
    CHECK(same_values(t, ts[1]));
    sq_tensor_release(t);
    t = NULL;
    /* missing dataset names */
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "good.h5: no dataset 'layers.9.weight'; the file has 7: layers.0.weight, layers.0.bias,",
               sq_h5_load_tensor(&ctx, p, "layers.9.weight", &t));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "good.h5: no dataset 'layers'", sq_h5_load_tensor(&ctx, p, "layers", &t));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "good.h5: no dataset 'embed.x'", sq_h5_load_tensor(&ctx, p, "embed.x", &t));
    CHECK(s == NULL && t == NULL);
    for (int i = 0; i < NT; i++) sq_tensor_release(ts[i]);
    sq_tensor_release(base);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(bad_saves_leave_old_file)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 3);
    int64_t s3[1] = {3};
    sq_tensor *a, *b, *ip;
    CHECK_OK(&ctx, sq_tensor_full(&ctx, SQ_F32, 1, s3, 1.0, &a));
    CHECK_OK(&ctx, sq_tensor_full(&ctx, SQ_F32, 1, s3, 2.0, &b));
    char p[512], tmp[600];
    tmp_path(p, sizeof p, "keep.h5");
    const char *n1[1] = {"w"};
    CHECK_OK(&ctx, sq_h5_save(&ctx, p, 1, n1, &a, 0, NULL, NULL));
    sq_tensor *ab[2] = {a, b};
    const char *dup[2] = {"w", "w"}, *clash[2] = {"a.b", "a.b.c"}, *dd[1] = {"a..b"}, *lead[1] = {".a"},
               *sp[1] = {"a b"};
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "tensor name 'w' appears twice", sq_h5_save(&ctx, p, 2, dup, ab, 0, NULL, NULL));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "tensor names 'a.b' and 'a.b.c' clash", sq_h5_save(&ctx, p, 2, clash, ab, 0, NULL, NULL));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "tensor name 'a..b' has an empty part", sq_h5_save(&ctx, p, 1, dd, ab, 0, NULL, NULL));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "tensor name '.a' has an empty part", sq_h5_save(&ctx, p, 1, lead, ab, 0, NULL, NULL));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "tensor name 'a b': character ' ' not allowed", sq_h5_save(&ctx, p, 1, sp, ab, 0, NULL, NULL));
    const char *k2[2] = {"m", "m"}, *v2[2] = {"1", "2"};
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "attribute 'm' appears twice", sq_h5_save(&ctx, p, 1, n1, &b, 2, k2, v2));
    /* the temporary file cannot be created: the old file stays */
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", p, (long)getpid());
    CHECK(mkdir(tmp, 0700) == 0);
    CHECK_FAIL(&ctx, SQ_ERR_IO, "keep.h5: cannot create", sq_h5_save(&ctx, p, 1, n1, &b, 0, NULL, NULL));
    rmdir(tmp);
    CHECK_FAIL(&ctx, SQ_ERR_IO, "cannot create /nonexistent-dir/x.h5.tmp-",
               sq_h5_save(&ctx, "/nonexistent-dir/x.h5", 1, n1, &b, 0, NULL, NULL));
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_I64, 1, s3, &ip));
    sq_h5_set *s = NULL;
    CHECK_OK(&ctx, sq_h5_load(&ctx, p, &s));
    CHECK(s && s->n == 1 && sq_tensor_get_flat(s->tensors[0], 0) == 1.0);
    sq_h5_set_free(s);
    CHECK(leftover_tmp_files() == 0);
    sq_tensor_release(a);
    sq_tensor_release(b);
    sq_tensor_release(ip);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

int main(void)
{
    sq_test_state T_ = {0, 0, 0, NULL};
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sq_test_h5_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(roundtrip_all_dtypes);
    RUN(bad_files_rejected);
    RUN(bad_saves_leave_old_file);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("  (could not remove %s)\n", tmpdir);
    printf("%d passed, %d failed\n", T_.passed, T_.failed);
    return T_.failed ? 1 : 0;
}
