/* test_store.c — the results store (schema, racing openers, NaN/inf
 * encoding, idempotent shard merge, read-only refusal) and the runner's
 * process helpers (spawn / wait / signals / heartbeat / atomic writes). */
#include "sq_proc.h"
#include "sq_store.h"
#include "sq_test.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_dir[256];   /* test scratch folder (set once in main) */

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", g_dir, name); }

static int64_t scalar(sq_ctx *ctx, sq_store *s, const char *sql) {
    sq_store_stmt *st = NULL;
    int64_t v = -1;
    int row = 0;
    if (sq_store_prepare(ctx, s, sql, &st) != SQ_OK) return -999;
    if (sq_store_step(ctx, st, &row) == SQ_OK && row) v = sq_store_column_int(st, 0);
    sq_store_finalize(st);
    return v;
}

TEST(schema_created_once_by_racing_openers) {
    sq_ctx ctx;
    sq_ctx_init(&ctx, 0);
    char p[512];
    path_in(p, sizeof p, "race.db");
    enum { N = 8 };
    pid_t kids[N];
    for (int i = 0; i < N; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            sq_ctx c;
            sq_ctx_init(&c, 0);
            sq_store *s = NULL;
            int ok = sq_store_open(&c, p, SQ_STORE_MAIN, 20000, &s) == SQ_OK;
            if (ok) ok = sq_store_exec(&c, s, "INSERT INTO tags VALUES('r', hex(randomblob(4)), 'v')") == SQ_OK;
            if (!ok) fprintf(stderr, "child: %s\n", c.err);
            sq_store_close(s);
            _exit(ok ? 0 : 1);
        }
    }
    int bad = 0;
    for (int i = 0; i < N; i++) {
        int status = 0;
        waitpid(kids[i], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) bad++;
    }
    CHECK(bad == 0);
    sq_store *s = NULL;
    CHECK_OK(&ctx, sq_store_open(&ctx, p, SQ_STORE_READONLY, 1000, &s));
    if (s) {
        CHECK(scalar(&ctx, s, "SELECT count(*) FROM schema_version") == 1);
        CHECK(scalar(&ctx, s, "SELECT count(*) FROM tags") == N);
        int v = 0;
        CHECK_OK(&ctx, sq_store_schema_version(&ctx, s, &v));
        CHECK(v == SQ_STORE_SCHEMA_VERSION);
        /* read-only means read-only */
        CHECK(sq_store_exec(&ctx, s, "DELETE FROM tags") != SQ_OK);
    }
    sq_store_close(s);
}

TEST(special_values_round_trip) {
    double xs[] = {1.25, -0.0, NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 5; i++) {
        const char *sp = sq_store_encode(xs[i]);
        double back = sq_store_decode(sp ? 0.0 : xs[i], sp);
        if (isnan(xs[i])) CHECK(isnan(back) && sp && strcmp(sp, "nan") == 0);
        else CHECK(back == xs[i]);
    }
    CHECK(sq_store_encode(1.0) == NULL);
    CHECK(strcmp(sq_store_encode(-INFINITY), "-inf") == 0);
}

static void insert_run(sq_ctx *ctx, sq_store *s, const char *status, double value,
                       sq_test_state *T_) {
    CHECK_OK(ctx, sq_store_exec(ctx, s,
                                "INSERT OR IGNORE INTO runs(id, sweep, config_hash, config, created)"
                                " VALUES('r1', 'sw', 'h', '{}', 0)"));
    sq_store_stmt *st = NULL;
    CHECK_OK(ctx, sq_store_prepare(ctx, s,
                                   "INSERT OR REPLACE INTO attempts(run_id, attempt, status) VALUES('r1', 1, ?)",
                                   &st));
    int row;
    CHECK_OK(ctx, sq_store_bind_text(ctx, st, 1, status, strlen(status)));
    CHECK_OK(ctx, sq_store_step(ctx, st, &row));
    sq_store_finalize(st);
    CHECK_OK(ctx, sq_store_prepare(ctx, s,
                                   "INSERT OR REPLACE INTO metrics VALUES('r1', 1, 'loss', ?, 0, ?, ?)", &st));
    for (int step = 0; step < 3; step++) {
        double v = step == 2 ? value : 0.5 * step;
        const char *sp = sq_store_encode(v);
        sq_store_reset(st);
        CHECK_OK(ctx, sq_store_bind_int(ctx, st, 1, step));
        if (sp) CHECK_OK(ctx, sq_store_bind_null(ctx, st, 2));
        else CHECK_OK(ctx, sq_store_bind_real(ctx, st, 2, v));
        if (sp) CHECK_OK(ctx, sq_store_bind_text(ctx, st, 3, sp, strlen(sp)));
        else CHECK_OK(ctx, sq_store_bind_null(ctx, st, 3));
        CHECK_OK(ctx, sq_store_step(ctx, st, &row));
    }
    sq_store_finalize(st);
    CHECK_OK(ctx, sq_store_exec(ctx, s,
                                "INSERT OR REPLACE INTO summary SELECT run_id, attempt, key, value, special"
                                " FROM metrics WHERE step = 2"));
}

TEST(merge_is_idempotent_and_keeps_verdicts) {
    sq_ctx ctx;
    sq_ctx_init(&ctx, 0);
    char mp[512], sp[512];
    path_in(mp, sizeof mp, "main.db");
    path_in(sp, sizeof sp, "shard.db");
    sq_store *m = NULL, *s = NULL;
    CHECK_OK(&ctx, sq_store_open(&ctx, mp, SQ_STORE_MAIN, 1000, &m));
    CHECK_OK(&ctx, sq_store_open(&ctx, sp, SQ_STORE_SHARD, 1000, &s));
    if (!m || !s) return;
    insert_run(&ctx, s, "running", INFINITY, T_);
    sq_store_merge_info info;
    CHECK_OK(&ctx, sq_store_merge_shard(&ctx, m, sp, &info));
    CHECK(info.metrics == 3);
    CHECK_OK(&ctx, sq_store_merge_shard(&ctx, m, sp, &info));   /* again: no change */
    CHECK(scalar(&ctx, m, "SELECT count(*) FROM metrics") == 3);
    CHECK(scalar(&ctx, m, "SELECT count(*) FROM attempts") == 1);
    CHECK(scalar(&ctx, m, "SELECT count(*) FROM runs WHERE status='running' AND attempt=1") == 1);
    /* the parent decides the worker died: a stale 'running' shard must not undo it */
    CHECK_OK(&ctx, sq_store_exec(&ctx, m, "UPDATE attempts SET status='failed', error='SIGKILL'"));
    CHECK_OK(&ctx, sq_store_merge_shard(&ctx, m, sp, &info));
    CHECK(scalar(&ctx, m, "SELECT count(*) FROM attempts WHERE status='failed' AND error='SIGKILL'") == 1);
    /* a later finished shard wins over a failed verdict */
    insert_run(&ctx, s, "finished", NAN, T_);
    CHECK_OK(&ctx, sq_store_merge_shard(&ctx, m, sp, &info));
    CHECK(scalar(&ctx, m, "SELECT count(*) FROM runs WHERE status='finished'") == 1);
    CHECK(scalar(&ctx, m, "SELECT count(*) FROM metrics WHERE special='nan' AND value IS NULL") == 1);
    CHECK(scalar(&ctx, m, "SELECT count(*) FROM metrics_decoded WHERE value > 1e308") == 0);
    /* the flat view pivots params and final metrics */
    CHECK_OK(&ctx, sq_store_exec(&ctx, m, "INSERT INTO params VALUES('r1','lr','real',0.1),"
                                          "('r1','status','text','x')"));
    CHECK_OK(&ctx, sq_store_refresh_flat(&ctx, m));
    CHECK(scalar(&ctx, m, "SELECT count(*) FROM flat WHERE lr = 0.1 AND loss IS NULL"
                          " AND \"param.status\" = 'x'") == 1);
    /* SQLite column names are case-insensitive: LR must not take lr's column */
    CHECK_OK(&ctx, sq_store_exec(&ctx, m, "INSERT INTO params VALUES('r1','LR','real',7.0),"
                                          "('r1','Status','text','y')"));
    CHECK_OK(&ctx, sq_store_refresh_flat(&ctx, m));
    CHECK(scalar(&ctx, m, "SELECT count(*) FROM flat WHERE lr = 0.1 AND \"param.LR\" = 7.0"
                          " AND \"param.status\" = 'x' AND \"param.Status#2\" = 'y'") == 1);
    CHECK(sq_store_in_transaction(m) == 0);
    /* a file that is not a shard */
    char bad[512];
    path_in(bad, sizeof bad, "notashard.db");
    sq_store *b = NULL;
    CHECK_OK(&ctx, sq_store_open(&ctx, bad, SQ_STORE_MAIN, 1000, &b));
    if (b) {
        CHECK_OK(&ctx, sq_store_exec(&ctx, b, "DROP TABLE schema_version"));
        sq_store_close(b);
    }
    CHECK_FAIL(&ctx, SQ_ERR_FORMAT, "not a squeeze shard", sq_store_merge_shard(&ctx, m, bad, &info));
    sq_store_close(s);
    sq_store_close(m);
}

TEST(bind_refuses_non_finite) {
    sq_ctx ctx;
    sq_ctx_init(&ctx, 0);
    char p[512];
    path_in(p, sizeof p, "bind.db");
    sq_store *s = NULL;
    CHECK_OK(&ctx, sq_store_open(&ctx, p, SQ_STORE_SHARD, 1000, &s));
    if (!s) return;
    sq_store_stmt *st = NULL;
    CHECK_OK(&ctx, sq_store_prepare(&ctx, s, "SELECT ?", &st));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "nan", sq_store_bind_real(&ctx, st, 1, NAN));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "out of range", sq_store_bind_int(&ctx, st, 2, 1));
    sq_store_finalize(st);
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "one statement", sq_store_prepare(&ctx, s, "SELECT 1; SELECT 2", &st));
    sq_store_close(s);
}

TEST(spawn_wait_kill) {
    sq_ctx ctx;
    sq_ctx_init(&ctx, 0);
    char log[512];
    path_in(log, sizeof log, "child.log");
    const char *argv[] = {"/bin/sh", "-c", "echo \"hi $SQ_TEST_X\"; exit 7", NULL};
    const char *env[] = {"SQ_TEST_X=there", NULL};
    sq_proc_spawn_opts o = {argv, env, log, NULL, 1, 1};
    int pid = 0, which = 0;
    CHECK_OK(&ctx, sq_proc_spawn(&ctx, &o, &pid));
    sq_proc_exit e;
    CHECK_OK(&ctx, sq_proc_wait(&ctx, pid, 0, &which, &e));
    CHECK(which == pid && e.state == SQ_PROC_EXITED && e.code == 7);
    FILE *f = fopen(log, "r");
    char line[64] = {0};
    if (f) {
        if (!fgets(line, sizeof line, f)) line[0] = 0;
        fclose(f);
    }
    CHECK(strcmp(line, "hi there\n") == 0);
    const char *argv2[] = {"/bin/sleep", "10", NULL};
    sq_proc_spawn_opts o2 = {argv2, NULL, NULL, NULL, 1, 1};
    CHECK_OK(&ctx, sq_proc_spawn(&ctx, &o2, &pid));
    CHECK_OK(&ctx, sq_proc_wait(&ctx, pid, 1, &which, &e));
    CHECK(e.state == SQ_PROC_RUNNING && sq_proc_alive(pid));
    CHECK_OK(&ctx, sq_proc_kill(&ctx, pid, SIGKILL, 1));
    CHECK_OK(&ctx, sq_proc_wait(&ctx, pid, 0, &which, &e));
    CHECK(e.state == SQ_PROC_SIGNALED && e.signal == SIGKILL);
    const char *argv3[] = {"/nonexistent/prog", NULL};
    sq_proc_spawn_opts o3 = {argv3, NULL, log, NULL, 0, 0};
    CHECK_OK(&ctx, sq_proc_spawn(&ctx, &o3, &pid));
    CHECK_OK(&ctx, sq_proc_wait(&ctx, pid, 0, &which, &e));
    CHECK(e.state == SQ_PROC_EXITED && e.code == 127);
}

TEST(signals_set_flags_only) {
    sq_ctx ctx;
    sq_ctx_init(&ctx, 0);
    sq_proc_signals s, other;
    int sigs[] = {SIGUSR1, SIGUSR2};
    CHECK_OK(&ctx, sq_proc_signals_install(&ctx, &s, sigs, 2));
    CHECK_FAIL(&ctx, SQ_ERR_STATE, "another", sq_proc_signals_install(&ctx, &other, sigs, 1));
    CHECK(sq_proc_signals_take(&s) == 0);
    raise(SIGUSR2);
    CHECK(sq_proc_signals_take(&s) == SIGUSR2);
    CHECK(sq_proc_signals_take(&s) == 0);
    sq_proc_signals_restore(&s);
    sq_proc_signals_restore(&s);   /* idempotent */
    CHECK(sq_proc_signum("SIGTERM") == SIGTERM && sq_proc_signum("USR1") == SIGUSR1 &&
          sq_proc_signum("9") == 9 && sq_proc_signum("BOGUS") == 0);
}

TEST(heartbeat_and_files) {
    sq_ctx ctx;
    sq_ctx_init(&ctx, 0);
    char p[512], d[512];
    path_in(p, sizeof p, "hb");
    path_in(d, sizeof d, "x/y/z");
    sq_proc_heartbeat *hb = NULL;
    CHECK_OK(&ctx, sq_proc_heartbeat_start(&ctx, p, 0.02, &hb));
    sq_proc_sleep(0.05);
    sq_proc_stat a, b;
    CHECK_OK(&ctx, sq_proc_stat_path(&ctx, p, &a));
    sq_proc_sleep(0.06);
    CHECK_OK(&ctx, sq_proc_stat_path(&ctx, p, &b));
    sq_proc_heartbeat_stop(hb);
    CHECK(a.exists && b.exists && b.mtime > a.mtime);
    CHECK_OK(&ctx, sq_proc_mkdir_p(&ctx, d));
    CHECK_OK(&ctx, sq_proc_mkdir_p(&ctx, d));
    CHECK_OK(&ctx, sq_proc_stat_path(&ctx, d, &a));
    CHECK(a.exists && a.is_dir);
    path_in(p, sizeof p, "x/file.txt");
    CHECK_OK(&ctx, sq_proc_write_atomic(&ctx, p, "abc", 3));
    CHECK_OK(&ctx, sq_proc_stat_path(&ctx, p, &a));
    CHECK(a.exists && a.size == 3 && !a.is_dir);
    CHECK_FAIL(&ctx, SQ_ERR_IO, "mkdir", sq_proc_mkdir_p(&ctx, p));   /* a file, not a dir */
}

SQ_TEST_MAIN_BEGIN
    snprintf(g_dir, sizeof g_dir, "/tmp/sq_test_store.%d", (int)getpid());
    sq_ctx c0;
    sq_ctx_init(&c0, 0);
    if (sq_proc_mkdir_p(&c0, g_dir) != SQ_OK) {
        printf("cannot create %s: %s\n", g_dir, c0.err);
        return 1;
    }
    RUN(schema_created_once_by_racing_openers);
    RUN(special_values_round_trip);
    RUN(merge_is_idempotent_and_keeps_verdicts);
    RUN(bind_refuses_non_finite);
    RUN(spawn_wait_kill);
    RUN(signals_set_flags_only);
    RUN(heartbeat_and_files);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (T_.failed == 0 && system(cmd) != 0) printf("(could not remove %s)\n", g_dir);
SQ_TEST_MAIN_END
