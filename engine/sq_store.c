/* sq_store.c — SQLite results store: open/schema, statements, metric value
 * encoding, shard merge and the pivoted `flat` view (see sq_store.h). */
#include "sq_store.h"

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sq_store {
    sqlite3 *db;
    int flags;
};

struct sq_store_stmt {
    sqlite3_stmt *st;
    sqlite3 *db;   /* for error messages */
};

/* Schema version 1.  Times are unix seconds (REAL).  Every table a shard
 * writes has the same columns in main, in the same order, because the merge
 * copies rows with SELECT *. */
static const char SCHEMA_V1[] =
    "CREATE TABLE provenance("
    " id TEXT PRIMARY KEY,"          /* FNV-1a 64 (hex) of the record's canonical JSON */
    " created REAL NOT NULL,"
    " git_commit TEXT, git_branch TEXT, git_dirty INTEGER, git_diff TEXT,"
    " squeeze_version TEXT, host TEXT, os TEXT, cpu TEXT, ncpu INTEGER,"
    " gpu TEXT, driver TEXT, cuda TEXT,"
    " lua_version TEXT, sqlite_version TEXT, hdf5_version TEXT, openblas_version TEXT,"
    " command TEXT, cwd TEXT, user TEXT, extra TEXT);"
    "CREATE TABLE sweeps("
    " name TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL,"
    " script TEXT NOT NULL, folder TEXT NOT NULL, base_config TEXT NOT NULL,"
    " n_points INTEGER NOT NULL);"
    "CREATE TABLE submissions("
    " id INTEGER PRIMARY KEY, sweep TEXT NOT NULL, time REAL NOT NULL, mode TEXT NOT NULL,"
    " provenance TEXT, argv TEXT, script_text TEXT, n_points INTEGER, n_scheduled INTEGER,"
    " slurm_jobs TEXT);"
    "CREATE TABLE runs("
    " id TEXT PRIMARY KEY, sweep TEXT NOT NULL, idx INTEGER, config_hash TEXT NOT NULL,"
    " config TEXT NOT NULL, seed INTEGER, submission INTEGER,"
    " status TEXT NOT NULL DEFAULT 'pending', attempt INTEGER NOT NULL DEFAULT 0,"
    " created REAL NOT NULL, started REAL, ended REAL, heartbeat REAL, host TEXT, pid INTEGER,"
    " slurm_job_id TEXT, slurm_array_job_id TEXT, slurm_task_id INTEGER, error TEXT);"
    "CREATE INDEX runs_sweep_status ON runs(sweep, status);"
    "CREATE TABLE attempts("
    " run_id TEXT NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL,"
    " started REAL, ended REAL, heartbeat REAL, host TEXT, pid INTEGER,"
    " slurm_job_id TEXT, slurm_array_job_id TEXT, slurm_task_id INTEGER,"
    " exit_code INTEGER, signal INTEGER, error TEXT, traceback TEXT, provenance TEXT,"
    " PRIMARY KEY(run_id, attempt));"
    "CREATE TABLE params("
    " run_id TEXT NOT NULL, key TEXT NOT NULL, type TEXT NOT NULL, value,"
    " PRIMARY KEY(run_id, key));"
    "CREATE INDEX params_key ON params(key, value);"
    "CREATE TABLE metrics("
    " run_id TEXT NOT NULL, attempt INTEGER NOT NULL, key TEXT NOT NULL, step INTEGER NOT NULL,"
    " time REAL NOT NULL, value REAL,"
    " special TEXT CHECK (special IS NULL OR special IN ('nan','inf','-inf')),"
    " PRIMARY KEY(run_id, attempt, key, step)) WITHOUT ROWID;"
    "CREATE TABLE summary("
    " run_id TEXT NOT NULL, attempt INTEGER NOT NULL, key TEXT NOT NULL, value REAL,"
    " special TEXT CHECK (special IS NULL OR special IN ('nan','inf','-inf')),"
    " PRIMARY KEY(run_id, attempt, key)) WITHOUT ROWID;"
    "CREATE TABLE tags("
    " run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT, PRIMARY KEY(run_id, key));"
    "CREATE TABLE artifacts("
    " run_id TEXT NOT NULL, attempt INTEGER NOT NULL, name TEXT NOT NULL, file TEXT NOT NULL,"
    " dataset TEXT NOT NULL, kind TEXT NOT NULL, dtype TEXT, shape TEXT, bytes INTEGER,"
    " created REAL NOT NULL, PRIMARY KEY(run_id, attempt, name));"
    "CREATE TABLE merged_shards("
    " path TEXT PRIMARY KEY, size INTEGER, mtime REAL, merged REAL);"
    "CREATE TABLE slurm_arrays("
    " job_id TEXT PRIMARY KEY, submission INTEGER, sweep TEXT NOT NULL, chunk INTEGER,"
    " n_tasks INTEGER, tasks_file TEXT, script_file TEXT, throttle INTEGER, submitted REAL);"
    "CREATE VIEW metrics_decoded AS SELECT run_id, attempt, key, step, time,"
    " CASE special WHEN 'inf' THEN 9e999 WHEN '-inf' THEN -9e999 ELSE value END AS value,"
    " special FROM metrics;"
    "CREATE VIEW final_metrics AS SELECT r.id AS run_id, r.sweep AS sweep, r.status AS status,"
    " s.key AS key,"
    " CASE s.special WHEN 'inf' THEN 9e999 WHEN '-inf' THEN -9e999 ELSE s.value END AS value,"
    " s.special AS special FROM runs r JOIN summary s ON s.run_id = r.id AND s.attempt = r.attempt;"
    "CREATE VIEW flat AS SELECT id AS run_id, sweep, status, attempt, started, ended, host"
    " FROM runs;";

static sq_status db_fail(sq_ctx *ctx, sqlite3 *db, const char *what) {
    int code = db ? sqlite3_extended_errcode(db) : SQLITE_ERROR;
    sq_status st = SQ_ERR_IO;
    if ((code & 0xff) == SQLITE_CORRUPT || (code & 0xff) == SQLITE_NOTADB) st = SQ_ERR_FORMAT;
    if ((code & 0xff) == SQLITE_NOMEM) st = SQ_ERR_NOMEM;
    if ((code & 0xff) == SQLITE_ERROR || (code & 0xff) == SQLITE_RANGE ||
        (code & 0xff) == SQLITE_MISMATCH || (code & 0xff) == SQLITE_CONSTRAINT)
        st = SQ_ERR_ARG;
    if ((code & 0xff) == SQLITE_READONLY) st = SQ_ERR_STATE;
    return sq_fail(ctx, st, "%s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
}

static double now_unix(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

sq_status sq_store_exec(sq_ctx *ctx, sq_store *s, const char *sql) {
    if (!s || !s->db) return sq_fail(ctx, SQ_ERR_STATE, "store is closed");
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        sq_status st = db_fail(ctx, s->db, "sql");
        sqlite3_free(msg);
        return st;
    }
    return SQ_OK;
}

static sq_status query_int(sq_ctx *ctx, sqlite3 *db, const char *sql, int64_t *out, int *found) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return db_fail(ctx, db, sql);
    int rc = sqlite3_step(st);
    *found = 0;
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        *out = sqlite3_column_int64(st, 0);
        *found = 1;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        sq_status e = db_fail(ctx, db, sql);
        sqlite3_finalize(st);
        return e;
    }
    sqlite3_finalize(st);
    return SQ_OK;
}

/* Creates or checks the schema inside BEGIN IMMEDIATE: concurrent openers
 * serialize on the write lock, and the second one finds the version row. */
static sq_status ensure_schema(sq_ctx *ctx, sq_store *s) {
    sq_status st;
    SQ_TRY(sq_store_exec(ctx, s, "BEGIN IMMEDIATE"));
    st = sq_store_exec(ctx, s,
                       "CREATE TABLE IF NOT EXISTS schema_version("
                       " version INTEGER PRIMARY KEY, applied REAL NOT NULL,"
                       " squeeze_version TEXT NOT NULL)");
    int64_t v = 0;
    int found = 0;
    if (st == SQ_OK) st = query_int(ctx, s->db, "SELECT max(version) FROM schema_version", &v, &found);
    if (st == SQ_OK && !found) {
        st = sq_store_exec(ctx, s, SCHEMA_V1);
        if (st == SQ_OK) {
            char sql[256];
            snprintf(sql, sizeof sql,
                     "INSERT INTO schema_version VALUES(%d, %.6f, '%s')",
                     SQ_STORE_SCHEMA_VERSION, now_unix(), SQ_VERSION);
            st = sq_store_exec(ctx, s, sql);
        }
    } else if (st == SQ_OK && v > SQ_STORE_SCHEMA_VERSION) {
        st = sq_fail(ctx, SQ_ERR_FORMAT,
                     "results database schema version %lld is newer than this squeeze "
                     "understands (%d): upgrade squeeze", (long long)v, SQ_STORE_SCHEMA_VERSION);
    }
    /* (v < SQ_STORE_SCHEMA_VERSION: migrations go here, in this transaction.) */
    if (st != SQ_OK) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return st;
    }
    return sq_store_exec(ctx, s, "COMMIT");
}

sq_status sq_store_open(sq_ctx *ctx, const char *path, int flags, int busy_ms, sq_store **out) {
    *out = NULL;
    if (!path || !*path) return sq_fail(ctx, SQ_ERR_ARG, "store path is empty");
    sq_store *s = calloc(1, sizeof *s);
    if (!s) return sq_fail(ctx, SQ_ERR_NOMEM, "store: out of memory");
    s->flags = flags;
    int ro = (flags & SQ_STORE_READONLY) != 0;
    int oflags = ro ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    oflags |= SQLITE_OPEN_URI;
    sq_status st = SQ_OK;
    if (sqlite3_open_v2(path, &s->db, oflags, NULL) != SQLITE_OK) {
        st = s->db ? sq_fail(ctx, SQ_ERR_IO, "cannot open results database '%s': %s", path,
                             sqlite3_errmsg(s->db))
                   : sq_fail(ctx, SQ_ERR_NOMEM, "store: out of memory");
        goto done;
    }
    sqlite3_busy_timeout(s->db, busy_ms > 0 ? busy_ms : 0);
    sqlite3_extended_result_codes(s->db, 1);
    if (ro) {
        SQ_CHECK(sq_store_exec(ctx, s, "PRAGMA query_only=1"));
        int v = 0;
        SQ_CHECK(sq_store_schema_version(ctx, s, &v));
        if (v == 0) {
            st = sq_fail(ctx, SQ_ERR_FORMAT, "'%s' is not a squeeze results database", path);
            goto done;
        }
        if (v > SQ_STORE_SCHEMA_VERSION) {
            st = sq_fail(ctx, SQ_ERR_FORMAT,
                         "results database schema version %d is newer than this squeeze (%d)",
                         v, SQ_STORE_SCHEMA_VERSION);
            goto done;
        }
    } else {
        /* Switching a new file to WAL takes an exclusive lock and SQLite
         * answers SQLITE_BUSY at once, without the busy handler, when other
         * openers race it (seen on a 16-core machine): retry within the
         * busy timeout. */
        const char *jm = (flags & SQ_STORE_SHARD) ? "PRAGMA journal_mode=DELETE" : "PRAGMA journal_mode=WAL";
        int waited = 0;
        while (sqlite3_exec(s->db, jm, NULL, NULL, NULL) != SQLITE_OK) {
            int rc = sqlite3_errcode(s->db);
            if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || waited >= (busy_ms > 0 ? busy_ms : 0)) {
                st = db_fail(ctx, s->db, jm);
                goto done;
            }
            sqlite3_sleep(10);
            waited += 10;
        }
        SQ_CHECK(sq_store_exec(ctx, s, "PRAGMA synchronous=NORMAL"));
        SQ_CHECK(ensure_schema(ctx, s));
    }
done:
    if (st != SQ_OK) {
        sq_store_close(s);
        return st;
    }
    *out = s;
    return SQ_OK;
}

void sq_store_close(sq_store *s) {
    if (!s) return;
    if (s->db) sqlite3_close_v2(s->db);
    free(s);
}

sq_status sq_store_schema_version(sq_ctx *ctx, sq_store *s, int *version) {
    *version = 0;
    int64_t has = 0, v = 0;
    int found = 0;
    SQ_TRY(query_int(ctx, s->db,
                     "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='schema_version'",
                     &has, &found));
    if (!has) return SQ_OK;
    SQ_TRY(query_int(ctx, s->db, "SELECT max(version) FROM schema_version", &v, &found));
    *version = found ? (int)v : 0;
    return SQ_OK;
}

int64_t sq_store_changes(const sq_store *s) { return s && s->db ? sqlite3_changes64(s->db) : 0; }
int64_t sq_store_last_rowid(const sq_store *s) {
    return s && s->db ? sqlite3_last_insert_rowid(s->db) : 0;
}
int sq_store_in_transaction(const sq_store *s) {
    return s && s->db ? !sqlite3_get_autocommit(s->db) : 0;
}

/* ---- statements ---------------------------------------------------------- */

sq_status sq_store_prepare(sq_ctx *ctx, sq_store *s, const char *sql, sq_store_stmt **out) {
    *out = NULL;
    if (!s || !s->db) return sq_fail(ctx, SQ_ERR_STATE, "store is closed");
    sq_store_stmt *w = calloc(1, sizeof *w);
    if (!w) return sq_fail(ctx, SQ_ERR_NOMEM, "store: out of memory");
    const char *tail = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &w->st, &tail) != SQLITE_OK) {
        free(w);
        return db_fail(ctx, s->db, "sql");
    }
    if (!w->st) {
        free(w);
        return sq_fail(ctx, SQ_ERR_ARG, "sql: empty statement");
    }
    while (tail && (*tail == ' ' || *tail == '\n' || *tail == '\t' || *tail == ';' || *tail == '\r'))
        tail++;
    if (tail && *tail) {
        sqlite3_finalize(w->st);
        free(w);
        return sq_fail(ctx, SQ_ERR_ARG, "sql: one statement at a time (extra text: '%.40s')", tail);
    }
    w->db = s->db;
    *out = w;
    return SQ_OK;
}

void sq_store_finalize(sq_store_stmt *st) {
    if (!st) return;
    sqlite3_finalize(st->st);
    free(st);
}

int sq_store_param_count(const sq_store_stmt *st) { return sqlite3_bind_parameter_count(st->st); }
int sq_store_param_index(const sq_store_stmt *st, const char *name) {
    return sqlite3_bind_parameter_index(st->st, name);
}

const char *sq_store_param_name(const sq_store_stmt *st, int i) {
    return sqlite3_bind_parameter_name(st->st, i);
}

static sq_status bind_rc(sq_ctx *ctx, sq_store_stmt *st, int rc, int i) {
    if (rc == SQLITE_OK) return SQ_OK;
    if (rc == SQLITE_RANGE)
        return sq_fail(ctx, SQ_ERR_ARG, "sql: parameter %d out of range (statement has %d)", i,
                       sqlite3_bind_parameter_count(st->st));
    return db_fail(ctx, st->db, "sql bind");
}

sq_status sq_store_bind_null(sq_ctx *ctx, sq_store_stmt *st, int i) {
    return bind_rc(ctx, st, sqlite3_bind_null(st->st, i), i);
}
sq_status sq_store_bind_int(sq_ctx *ctx, sq_store_stmt *st, int i, int64_t v) {
    return bind_rc(ctx, st, sqlite3_bind_int64(st->st, i, v), i);
}
sq_status sq_store_bind_real(sq_ctx *ctx, sq_store_stmt *st, int i, double v) {
    if (!isfinite(v))
        return sq_fail(ctx, SQ_ERR_ARG,
                       "sql: parameter %d is %s; SQLite cannot store it faithfully "
                       "(encode with value + special)", i, sq_store_encode(v));
    return bind_rc(ctx, st, sqlite3_bind_double(st->st, i, v), i);
}
sq_status sq_store_bind_text(sq_ctx *ctx, sq_store_stmt *st, int i, const char *s, size_t n) {
    return bind_rc(ctx, st, sqlite3_bind_text64(st->st, i, s, n, SQLITE_TRANSIENT, SQLITE_UTF8), i);
}
sq_status sq_store_bind_blob(sq_ctx *ctx, sq_store_stmt *st, int i, const void *p, size_t n) {
    return bind_rc(ctx, st, sqlite3_bind_blob64(st->st, i, p, n, SQLITE_TRANSIENT), i);
}

sq_status sq_store_step(sq_ctx *ctx, sq_store_stmt *st, int *row) {
    *row = 0;
    int rc = sqlite3_step(st->st);
    if (rc == SQLITE_ROW) {
        *row = 1;
        return SQ_OK;
    }
    if (rc == SQLITE_DONE) return SQ_OK;
    sq_status e = db_fail(ctx, st->db, "sql");
    sqlite3_reset(st->st);
    return e;
}

void sq_store_reset(sq_store_stmt *st) {
    sqlite3_reset(st->st);
    sqlite3_clear_bindings(st->st);
}

int sq_store_column_count(const sq_store_stmt *st) { return sqlite3_column_count(st->st); }
const char *sq_store_column_name(const sq_store_stmt *st, int i) {
    return sqlite3_column_name(st->st, i);
}
sq_val_type sq_store_column_type(const sq_store_stmt *st, int i) {
    switch (sqlite3_column_type(st->st, i)) {
    case SQLITE_INTEGER: return SQ_VAL_INT;
    case SQLITE_FLOAT: return SQ_VAL_REAL;
    case SQLITE_TEXT: return SQ_VAL_TEXT;
    case SQLITE_BLOB: return SQ_VAL_BLOB;
    default: return SQ_VAL_NULL;
    }
}
int64_t sq_store_column_int(const sq_store_stmt *st, int i) {
    return sqlite3_column_int64(st->st, i);
}
double sq_store_column_real(const sq_store_stmt *st, int i) {
    return sqlite3_column_double(st->st, i);
}
const char *sq_store_column_text(const sq_store_stmt *st, int i, size_t *n) {
    const unsigned char *p = sqlite3_column_type(st->st, i) == SQLITE_BLOB
                                 ? sqlite3_column_blob(st->st, i)
                                 : sqlite3_column_text(st->st, i);
    *n = (size_t)sqlite3_column_bytes(st->st, i);
    return p ? (const char *)p : "";
}

/* ---- metric values --------------------------------------------------------- */

const char *sq_store_encode(double v) {
    if (isnan(v)) return "nan";
    if (isinf(v)) return v > 0 ? "inf" : "-inf";
    return NULL;
}

double sq_store_decode(double value, const char *special) {
    if (!special) return value;
    if (strcmp(special, "inf") == 0) return INFINITY;
    if (strcmp(special, "-inf") == 0) return -INFINITY;
    return NAN;
}

const char *sq_store_sqlite_version(void) { return sqlite3_libversion(); }

/* ---- merge --------------------------------------------------------------- */

#define TERMINAL "('finished','failed','killed','preempted')"

/* Statements run in order inside one transaction; they read `shard.*`. */
static const char *const MERGE_SQL[] = {
    "INSERT OR IGNORE INTO main.provenance SELECT * FROM shard.provenance",
    "INSERT OR IGNORE INTO main.runs SELECT * FROM shard.runs",
    "INSERT OR IGNORE INTO main.params SELECT * FROM shard.params",
    /* An attempt main already holds as terminal (the parent saw its worker
     * die) is not turned back into 'running' by the dead worker's shard. */
    "INSERT INTO main.attempts SELECT * FROM shard.attempts WHERE true "
    "ON CONFLICT(run_id, attempt) DO UPDATE SET status=excluded.status,"
    " started=coalesce(excluded.started, attempts.started),"
    " ended=coalesce(excluded.ended, attempts.ended),"
    " heartbeat=max(coalesce(excluded.heartbeat,0), coalesce(attempts.heartbeat,0)),"
    " host=coalesce(excluded.host, attempts.host), pid=coalesce(excluded.pid, attempts.pid),"
    " slurm_job_id=coalesce(excluded.slurm_job_id, attempts.slurm_job_id),"
    " slurm_array_job_id=coalesce(excluded.slurm_array_job_id, attempts.slurm_array_job_id),"
    " slurm_task_id=coalesce(excluded.slurm_task_id, attempts.slurm_task_id),"
    " exit_code=coalesce(excluded.exit_code, attempts.exit_code),"
    " signal=coalesce(excluded.signal, attempts.signal),"
    " error=coalesce(excluded.error, attempts.error),"
    " traceback=coalesce(excluded.traceback, attempts.traceback),"
    " provenance=coalesce(excluded.provenance, attempts.provenance)"
    " WHERE NOT (attempts.status IN " TERMINAL " AND excluded.status NOT IN " TERMINAL ")",
    "INSERT OR REPLACE INTO main.metrics SELECT * FROM shard.metrics",
    "INSERT OR REPLACE INTO main.summary SELECT * FROM shard.summary",
    "INSERT OR REPLACE INTO main.tags SELECT * FROM shard.tags",
    "INSERT OR REPLACE INTO main.artifacts SELECT * FROM shard.artifacts",
    /* Status cache: the latest attempt, unless main already scheduled a newer
     * one ('queued' with the same attempt number means "next one queued"). */
    "UPDATE main.runs SET status=a.status, attempt=a.attempt, started=a.started, ended=a.ended,"
    " heartbeat=a.heartbeat, host=a.host, pid=a.pid, slurm_job_id=a.slurm_job_id,"
    " slurm_array_job_id=a.slurm_array_job_id, slurm_task_id=a.slurm_task_id, error=a.error"
    " FROM main.attempts a"
    " WHERE a.run_id = runs.id AND runs.id IN (SELECT run_id FROM shard.attempts)"
    " AND a.attempt = (SELECT max(m.attempt) FROM main.attempts m WHERE m.run_id = runs.id)"
    " AND (a.attempt > runs.attempt OR (a.attempt = runs.attempt AND runs.status <> 'queued'))",
};

static sq_status count_rows(sq_ctx *ctx, sqlite3 *db, const char *sql, int64_t *n) {
    int found = 0;
    *n = 0;
    return query_int(ctx, db, sql, n, &found);
}

sq_status sq_store_merge_shard(sq_ctx *ctx, sq_store *m, const char *shard_path,
                               sq_store_merge_info *info) {
    if (info) memset(info, 0, sizeof *info);
    if (!m || !m->db) return sq_fail(ctx, SQ_ERR_STATE, "store is closed");
    if (m->flags & SQ_STORE_READONLY)
        return sq_fail(ctx, SQ_ERR_STATE, "merge: the main store is open read-only");
    if (sq_store_in_transaction(m))
        return sq_fail(ctx, SQ_ERR_STATE, "merge: a transaction is open (ATTACH needs none)");
    sq_status st = SQ_OK;
    sqlite3_stmt *att = NULL;
    if (sqlite3_prepare_v2(m->db, "ATTACH DATABASE ? AS shard", -1, &att, NULL) != SQLITE_OK)
        return db_fail(ctx, m->db, "merge: attach");
    sqlite3_bind_text(att, 1, shard_path, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(att);
    sqlite3_finalize(att);
    if (rc != SQLITE_DONE) return db_fail(ctx, m->db, "merge: attach");

    int64_t sv = 0, has = 0;
    int found = 0, in_tx = 0;
    SQ_CHECK(query_int(ctx, m->db,
                       "SELECT count(*) FROM shard.sqlite_master WHERE name='schema_version'",
                       &has, &found));
    if (!has) {
        st = sq_fail(ctx, SQ_ERR_FORMAT, "merge: '%s' is not a squeeze shard", shard_path);
        goto done;
    }
    SQ_CHECK(query_int(ctx, m->db, "SELECT max(version) FROM shard.schema_version", &sv, &found));
    if (sv != SQ_STORE_SCHEMA_VERSION) {
        st = sq_fail(ctx, SQ_ERR_FORMAT, "merge: shard '%s' has schema version %lld, main has %d",
                     shard_path, (long long)sv, SQ_STORE_SCHEMA_VERSION);
        goto done;
    }
    SQ_CHECK(sq_store_exec(ctx, m, "BEGIN IMMEDIATE"));
    in_tx = 1;
    for (size_t i = 0; i < sizeof MERGE_SQL / sizeof MERGE_SQL[0]; i++) {
        SQ_CHECK(sq_store_exec(ctx, m, MERGE_SQL[i]));
        if (i == 3 && info) info->attempts = sqlite3_changes64(m->db);
    }
    if (info) {
        SQ_CHECK(count_rows(ctx, m->db, "SELECT count(*) FROM shard.metrics", &info->metrics));
        SQ_CHECK(count_rows(ctx, m->db, "SELECT count(*) FROM shard.artifacts", &info->artifacts));
    }
    SQ_CHECK(sq_store_exec(ctx, m, "COMMIT"));
    in_tx = 0;
done:
    if (in_tx) sqlite3_exec(m->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_exec(m->db, "DETACH DATABASE shard", NULL, NULL, NULL);
    return st;
}

/* ---- the pivoted flat view --------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->buf, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->buf = p;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = 0;
}
static void sb_str(strbuf *b, const char *s) { sb_add(b, s, strlen(s)); }
/* Appends c as a quoted SQL identifier ("...") or string literal ('...'). */
static void sb_quoted(strbuf *b, const char *s, char q) {
    sb_add(b, &q, 1);
    for (; *s; s++) {
        sb_add(b, s, 1);
        if (*s == q) sb_add(b, s, 1);
    }
    sb_add(b, &q, 1);
}

static const char *const FLAT_FIXED[] = {"run_id", "sweep", "status", "attempt",
                                         "started", "ended", "host"};

/* SQLite identifiers are case-insensitive: "LR" and "lr" are one column
 * name, and a clash is silently renamed to "lr:1" -- so compare that way. */
static int is_fixed(const char *k) {
    for (size_t i = 0; i < sizeof FLAT_FIXED / sizeof FLAT_FIXED[0]; i++)
        if (sqlite3_stricmp(k, FLAT_FIXED[i]) == 0) return 1;
    return 0;
}

/* Column names already used in the view being built. */
typedef struct { char **v; size_t n, cap; } name_set;

static int name_taken(const name_set *ns, const char *k) {
    for (size_t i = 0; i < ns->n; i++)
        if (sqlite3_stricmp(ns->v[i], k) == 0) return 1;
    return 0;
}

static int name_add(name_set *ns, const char *k) {
    if (ns->n == ns->cap) {
        size_t nc = ns->cap ? 2 * ns->cap : 32;
        char **nv = realloc(ns->v, nc * sizeof *nv);
        if (!nv) return 0;
        ns->v = nv;
        ns->cap = nc;
    }
    char *c = strdup(k);
    if (!c) return 0;
    ns->v[ns->n++] = c;
    return 1;
}

/* Appends base as a quoted column name, made unique case-insensitively with
 * "#2", "#3", ... (deterministic, since keys come in a fixed order). */
static void emit_unique(strbuf *b, name_set *ns, const char *base) {
    strbuf name = {0};
    sb_str(&name, base);
    for (int i = 2; !name.oom && name_taken(ns, name.buf); i++) {
        free(name.buf);
        name = (strbuf){0};
        char suffix[16];
        snprintf(suffix, sizeof suffix, "#%d", i);
        sb_str(&name, base);
        sb_str(&name, suffix);
    }
    if (name.oom || !name_add(ns, name.buf)) b->oom = 1;
    else sb_quoted(b, name.buf, '"');
    free(name.buf);
}

static void name_set_free(name_set *ns) {
    for (size_t i = 0; i < ns->n; i++) free(ns->v[i]);
    free(ns->v);
}

sq_status sq_store_refresh_flat(sq_ctx *ctx, sq_store *s) {
    if (!s || !s->db) return sq_fail(ctx, SQ_ERR_STATE, "store is closed");
    sq_status st = SQ_OK;
    strbuf b = {0};
    sqlite3_stmt *q = NULL;
    name_set names = {0};
    /* Keys are read inside the write transaction so the view matches them. */
    int outer = !sq_store_in_transaction(s);
    if (outer) SQ_TRY(sq_store_exec(ctx, s, "BEGIN IMMEDIATE"));
    sb_str(&b, "DROP VIEW IF EXISTS flat; CREATE VIEW flat AS SELECT r.id AS run_id,"
               " r.sweep AS sweep, r.status AS status, r.attempt AS attempt,"
               " r.started AS started, r.ended AS ended, r.host AS host");
    /* params first; a param named like a fixed column becomes "param.<key>" */
    if (sqlite3_prepare_v2(s->db, "SELECT DISTINCT key FROM params ORDER BY lower(key), key DESC", -1, &q, NULL) !=
        SQLITE_OK) {
        st = db_fail(ctx, s->db, "flat view");
        goto done;
    }
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(q, 0);
        if (!k) continue;
        sb_str(&b, ", (SELECT p.value FROM params p WHERE p.run_id = r.id AND p.key = ");
        sb_quoted(&b, k, '\'');
        sb_str(&b, ") AS ");
        if (is_fixed(k) || name_taken(&names, k)) {
            strbuf name = {0};
            sb_str(&name, "param.");
            sb_str(&name, k);
            if (name.oom) b.oom = 1; else emit_unique(&b, &names, name.buf);
            free(name.buf);
        } else {
            emit_unique(&b, &names, k);
        }
    }
    sqlite3_finalize(q);
    q = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT DISTINCT s.key, (SELECT count(*) FROM params p WHERE p.key = s.key)"
                           " FROM summary s ORDER BY s.key", -1, &q, NULL) != SQLITE_OK) {
        st = db_fail(ctx, s->db, "flat view");
        goto done;
    }
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(q, 0);
        if (!k) continue;
        int clash = sqlite3_column_int64(q, 1) > 0 || is_fixed(k) || name_taken(&names, k);
        sb_str(&b, ", (SELECT CASE m.special WHEN 'inf' THEN 9e999 WHEN '-inf' THEN -9e999"
                   " ELSE m.value END FROM summary m WHERE m.run_id = r.id"
                   " AND m.attempt = r.attempt AND m.key = ");
        sb_quoted(&b, k, '\'');
        sb_str(&b, ") AS ");
        if (clash) {
            strbuf name = {0};
            sb_str(&name, "final.");
            sb_str(&name, k);
            if (name.oom) b.oom = 1; else emit_unique(&b, &names, name.buf);
            free(name.buf);
        } else {
            emit_unique(&b, &names, k);
        }
    }
    sqlite3_finalize(q);
    q = NULL;
    sb_str(&b, " FROM runs r");
    if (b.oom) {
        st = sq_fail(ctx, SQ_ERR_NOMEM, "flat view: out of memory");
        goto done;
    }
    SQ_CHECK(sq_store_exec(ctx, s, b.buf));
    if (outer) {
        SQ_CHECK(sq_store_exec(ctx, s, "COMMIT"));
        outer = 0;
    }
done:
    if (q) sqlite3_finalize(q);
    if (outer) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    free(b.buf);
    name_set_free(&names);
    return st;
}
