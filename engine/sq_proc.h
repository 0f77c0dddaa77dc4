/* sq_proc.h — the operating-system services the experiment runner needs and
 * Lua lacks: spawn a worker process and reap it without blocking, signals,
 * a heartbeat thread, clocks, host facts and a few file-system calls
 * (mkdir -p, list a folder, atomic rename, stat).  POSIX only.
 *
 * Signals: a handler may only set a flag.  The flags live in an
 * sq_proc_signals struct the caller owns; the handler reaches it through one
 * file-static pointer in sq_proc.c — the single mutable static of the
 * engine, because a POSIX signal handler receives no user argument.  Only
 * one sq_proc_signals can be installed at a time per process. */
#ifndef SQ_PROC_H
#define SQ_PROC_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "sq_base.h"

/* ---- processes ----------------------------------------------------------- */

typedef struct {
    const char *const *argv;     /* argv[0] is the program path; NULL-terminated */
    const char *const *env;      /* extra "KEY=VALUE" entries (NULL-terminated) or NULL */
    const char *log_path;        /* stdout+stderr appended here; NULL inherits */
    const char *cwd;             /* NULL: inherit */
    int new_group;               /* child leads its own process group: a terminal's
                                    Ctrl-C reaches only the parent, which decides */
    int die_with_parent;         /* Linux: the child gets SIGTERM when the parent dies */
} sq_proc_spawn_opts;

/* Starts a child (fork + execv).  *pid gets its id.  An exec failure shows as
 * the child exiting with status 127 and a message in its log. */
sq_status sq_proc_spawn(sq_ctx *ctx, const sq_proc_spawn_opts *o, int *pid);

typedef enum { SQ_PROC_RUNNING = 0, SQ_PROC_EXITED, SQ_PROC_SIGNALED } sq_proc_state;
typedef struct {
    sq_proc_state state;
    int code;         /* exit status when EXITED */
    int signal;       /* signal number when SIGNALED */
    int core_dumped;
} sq_proc_exit;

/* Reaps pid (a child of this process).  nohang: return RUNNING at once if it
 * has not ended.  pid = -1 waits for any child; *which (may be NULL) gets the pid reaped. */
sq_status sq_proc_wait(sq_ctx *ctx, int pid, int nohang, int *which, sq_proc_exit *out);
/* Sends sig to pid (or to the process group -pid when group is set). */
sq_status sq_proc_kill(sq_ctx *ctx, int pid, int sig, int group);
/* 1 when a live process with this id exists (it may belong to another user;
 * a zombie counts as dead). */
int sq_proc_alive(int pid);
int sq_proc_getpid(void);
/* Signal number from a name ("TERM", "SIGUSR1", "15"); 0 if unknown. */
int sq_proc_signum(const char *name);
/* "SIGTERM" etc. into buf; returns buf. */
const char *sq_proc_signame(int sig, char *buf, size_t n);

/* ---- signals --------------------------------------------------------------- */

#define SQ_PROC_MAX_SIGNALS 8
typedef struct {
    volatile sig_atomic_t pending;              /* count of signals caught */
    volatile sig_atomic_t last;                 /* the last one */
    int nsig;
    int sig[SQ_PROC_MAX_SIGNALS];
    struct sigaction old[SQ_PROC_MAX_SIGNALS];  /* restored by _restore */
} sq_proc_signals;

/* Installs flag-only handlers for sigs into *s (caller-owned; it must stay
 * valid until sq_proc_signals_restore).  Fails if another set is installed. */
sq_status sq_proc_signals_install(sq_ctx *ctx, sq_proc_signals *s, const int *sigs, int n);
/* Puts the previous handlers back (idempotent). */
void sq_proc_signals_restore(sq_proc_signals *s);
/* Returns the last signal caught since the previous call (0 if none) and clears it. */
int sq_proc_signals_take(sq_proc_signals *s);

/* ---- heartbeat ------------------------------------------------------------- */

/* A thread that rewrites the small text file `path` every interval_s seconds
 * ("pid host unix_time\n", through a temporary name and rename) so a run
 * whose process died is detectable even while the run sits in one long C
 * call.  The thread touches nothing else. */
typedef struct sq_proc_heartbeat sq_proc_heartbeat;
/* *out: allocated; the caller stops and frees it with sq_proc_heartbeat_stop. */
sq_status sq_proc_heartbeat_start(sq_ctx *ctx, const char *path, double interval_s,
                                  sq_proc_heartbeat **out);
/* Stops the thread and frees hb (NULL-safe); the file stays. */
void sq_proc_heartbeat_stop(sq_proc_heartbeat *hb);

/* ---- clocks, host ------------------------------------------------------------ */

double sq_proc_monotonic(void);   /* seconds, CLOCK_MONOTONIC */
double sq_proc_walltime(void);    /* unix seconds with sub-second resolution */
void sq_proc_sleep(double seconds);
int sq_proc_isatty(int fd);
/* Terminal width of fd, or 0 when not a terminal. */
int sq_proc_term_width(int fd);
sq_status sq_proc_hostname(sq_ctx *ctx, char *buf, size_t n);
/* Absolute path of the running executable (/proc/self/exe). */
sq_status sq_proc_self_exe(sq_ctx *ctx, char *buf, size_t n);
/* The working directory (getcwd: $PWD may be stale in a child). */
sq_status sq_proc_getcwd(sq_ctx *ctx, char *buf, size_t n);

/* ---- files --------------------------------------------------------------------- */

/* mkdir -p (mode 0777 before umask). */
sq_status sq_proc_mkdir_p(sq_ctx *ctx, const char *path);
/* rename(2): atomic within one file system. */
sq_status sq_proc_rename(sq_ctx *ctx, const char *from, const char *to);
typedef struct {
    int exists;
    int is_dir;
    int64_t size;
    double mtime;   /* unix seconds */
} sq_proc_stat;
sq_status sq_proc_stat_path(sq_ctx *ctx, const char *path, sq_proc_stat *out);
/* Calls fn(name, ud) for each entry of dir except "." and ".."; a non-zero
 * return from fn stops the listing.  SQ_ERR_IO if dir cannot be read. */
sq_status sq_proc_listdir(sq_ctx *ctx, const char *dir, int (*fn)(const char *name, void *ud),
                          void *ud);
/* Writes data to path atomically: path.tmp.<pid>, fsync, rename. */
sq_status sq_proc_write_atomic(sq_ctx *ctx, const char *path, const void *data, size_t n);

#endif
