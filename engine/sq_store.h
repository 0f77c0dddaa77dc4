/* sq_store.h — the experiment results store: one SQLite file per results
 * folder (the "main" database) plus one shard file per run.
 *
 * Why shards: many processes writing one SQLite file is what gives other
 * harnesses "database is locked", and SQLite over NFS corrupts.  So every run
 * (local worker or Slurm array task) writes only its OWN shard, and exactly
 * one process (the one that submits or merges) writes the main database,
 * folding finished shards in with sq_store_merge_shard.  Main and shard have
 * the same schema, so a merge is INSERT ... SELECT per table.
 *
 *  - main database: journal_mode=WAL, synchronous=NORMAL, busy_timeout.
 *  - shard: journal_mode=DELETE (WAL needs shared memory on one host; a shard
 *    may live on a cluster filesystem), synchronous=NORMAL, busy_timeout.
 *  - schema creation / migration runs inside BEGIN IMMEDIATE and records its
 *    version in schema_version, so jobs starting together cannot both migrate.
 *
 * Metric values: SQLite turns a NaN into NULL and cannot tell it from a
 * missing value, so every float that may be non-finite is stored as two
 * columns (value REAL, special TEXT):
 *     finite x -> (x, NULL)   NaN -> (NULL, 'nan')   +inf -> (NULL, 'inf')
 *     -inf -> (NULL, '-inf')
 * The views `metrics_decoded` and `flat` turn them back into REAL (+/-inf as
 * 9e999/-9e999 literals, NaN as NULL which pandas reads as NaN).
 *
 * Ownership: sq_store_open allocates the store (caller frees it with
 * sq_store_close); sq_store_prepare allocates a statement (caller frees it with
 * sq_store_finalize).  A statement may outlive its store's close: the
 * connection then lingers until the last statement is finalized
 * (sqlite3_close_v2), but using such a statement is the caller's bug. */
#ifndef SQ_STORE_H
#define SQ_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "sq_base.h"

#define SQ_STORE_SCHEMA_VERSION 1

typedef struct sq_store sq_store;
typedef struct sq_store_stmt sq_store_stmt;

enum {
    SQ_STORE_MAIN = 0,            /* read-write, WAL, creates the schema */
    SQ_STORE_SHARD = 1 << 0,      /* read-write, rollback journal, creates the schema */
    SQ_STORE_READONLY = 1 << 1,   /* no writes at all (query_only); never creates */
};

typedef enum {
    SQ_VAL_NULL = 0,
    SQ_VAL_INT,
    SQ_VAL_REAL,
    SQ_VAL_TEXT,
    SQ_VAL_BLOB
} sq_val_type;

/* Opens (creating the file and schema unless READONLY) the database at path.
 * busy_ms: how long a writer waits for a lock before SQLITE_BUSY.
 * On success *out is a new store the caller closes with sq_store_close. */
sq_status sq_store_open(sq_ctx *ctx, const char *path, int flags, int busy_ms, sq_store **out);
/* Closes and frees s (NULL-safe). */
void sq_store_close(sq_store *s);
/* Schema version found in the file (0 if none). */
sq_status sq_store_schema_version(sq_ctx *ctx, sq_store *s, int *version);

/* Runs one or more ;-separated statements without parameters. */
sq_status sq_store_exec(sq_ctx *ctx, sq_store *s, const char *sql);
int64_t sq_store_changes(const sq_store *s);
int64_t sq_store_last_rowid(const sq_store *s);
int sq_store_in_transaction(const sq_store *s);

/* Prepared statements.  Bind indexes start at 1, columns at 0. */
sq_status sq_store_prepare(sq_ctx *ctx, sq_store *s, const char *sql, sq_store_stmt **out);
void sq_store_finalize(sq_store_stmt *st);            /* NULL-safe */
int sq_store_param_count(const sq_store_stmt *st);
/* 1-based index of a named parameter (":name", "@name", "$name"), 0 if absent. */
int sq_store_param_index(const sq_store_stmt *st, const char *name);
/* Name of parameter i (":name", "?3") or NULL for a bare "?". */
const char *sq_store_param_name(const sq_store_stmt *st, int i);
sq_status sq_store_bind_null(sq_ctx *ctx, sq_store_stmt *st, int i);
sq_status sq_store_bind_int(sq_ctx *ctx, sq_store_stmt *st, int i, int64_t v);
/* A non-finite v is refused (SQ_ERR_ARG): encode it first (sq_store_encode). */
sq_status sq_store_bind_real(sq_ctx *ctx, sq_store_stmt *st, int i, double v);
sq_status sq_store_bind_text(sq_ctx *ctx, sq_store_stmt *st, int i, const char *s, size_t n);
sq_status sq_store_bind_blob(sq_ctx *ctx, sq_store_stmt *st, int i, const void *p, size_t n);
/* *row = 1 when a row is ready, 0 when the statement is done. */
sq_status sq_store_step(sq_ctx *ctx, sq_store_stmt *st, int *row);
/* Resets to run again and clears the bindings. */
void sq_store_reset(sq_store_stmt *st);
int sq_store_column_count(const sq_store_stmt *st);
const char *sq_store_column_name(const sq_store_stmt *st, int i);
sq_val_type sq_store_column_type(const sq_store_stmt *st, int i);
int64_t sq_store_column_int(const sq_store_stmt *st, int i);
double sq_store_column_real(const sq_store_stmt *st, int i);
/* Pointer valid until the next step/reset/finalize; *n gets the byte count. */
const char *sq_store_column_text(const sq_store_stmt *st, int i, size_t *n);

/* Metric value encoding (see the header comment).  Returns the special tag
 * ("nan", "inf", "-inf") or NULL for a finite v. */
const char *sq_store_encode(double v);
/* Inverse: special NULL -> value; otherwise NaN / +inf / -inf. */
double sq_store_decode(double value, const char *special);

typedef struct {
    int64_t attempts;    /* attempt rows folded in (new or updated) */
    int64_t metrics;     /* metric rows in the shard */
    int64_t artifacts;   /* artifact rows in the shard */
} sq_store_merge_info;

/* Folds the shard at shard_path into main in one transaction (ATTACH,
 * BEGIN IMMEDIATE, INSERT OR REPLACE / upsert per table, COMMIT, DETACH).
 * Idempotent: rows are keyed by (run id, attempt [, key, step]); merging the
 * same shard twice changes nothing.  An attempt already terminal in main
 * (finished / failed / killed / preempted) is never turned back into
 * 'running' by a stale shard.  The runs table's status cache is refreshed
 * from each merged run's latest attempt.  Fails with SQ_ERR_FORMAT when the
 * shard's schema version differs from main's. */
sq_status sq_store_merge_shard(sq_ctx *ctx, sq_store *main_db, const char *shard_path,
                               sq_store_merge_info *info);

/* Recreates the `flat` view of main: one row per run with every param and
 * every final metric of the database as a column (pivoted from the tall
 * tables; column names are the keys, a metric whose key is also a param key
 * is named "final.<key>").  Call after new keys may have appeared. */
sq_status sq_store_refresh_flat(sq_ctx *ctx, sq_store *s);

const char *sq_store_sqlite_version(void);

#endif
