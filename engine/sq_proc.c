/* sq_proc.c — processes, signals, heartbeat thread, clocks, host facts and
 * file-system helpers for the experiment runner (see sq_proc.h). */
#include "sq_proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

extern char **environ;

/* ---- processes ----------------------------------------------------------- */

/* Writes a message with only async-signal-safe calls (child after fork). */
static void child_say(const char *a, const char *b) {
    ssize_t r;
    r = write(2, a, strlen(a));
    r = write(2, b, strlen(b));
    r = write(2, "\n", 1);
    (void)r;
}

sq_status sq_proc_spawn(sq_ctx *ctx, const sq_proc_spawn_opts *o, int *pid) {
    *pid = -1;
    if (!o || !o->argv || !o->argv[0]) return sq_fail(ctx, SQ_ERR_ARG, "spawn: empty argv");
    /* Build the environment in the parent: nothing but exec after fork. */
    size_t nenv = 0, nextra = 0;
    while (environ && environ[nenv]) nenv++;
    while (o->env && o->env[nextra]) nextra++;
    char **envp = calloc(nenv + nextra + 1, sizeof *envp);
    if (!envp) return sq_fail(ctx, SQ_ERR_NOMEM, "spawn: out of memory");
    size_t k = 0;
    for (size_t i = 0; i < nenv; i++) {
        /* an extra entry replaces an inherited one of the same name */
        const char *eq = strchr(environ[i], '=');
        size_t klen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int replaced = 0;
        for (size_t j = 0; j < nextra; j++)
            if (strncmp(o->env[j], environ[i], klen) == 0 && o->env[j][klen] == '=') replaced = 1;
        if (!replaced) envp[k++] = environ[i];
    }
    for (size_t j = 0; j < nextra; j++) envp[k++] = (char *)o->env[j];
    envp[k] = NULL;
    int log_fd = -1;
    if (o->log_path) {
        log_fd = open(o->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log_fd < 0) {
            free(envp);
            return sq_fail(ctx, SQ_ERR_IO, "spawn: cannot open log '%s': %s", o->log_path,
                           strerror(errno));
        }
    }
#ifdef __linux__
    pid_t parent = getpid();
#endif
    pid_t p = fork();
    if (p < 0) {
        int e = errno;
        free(envp);
        if (log_fd >= 0) close(log_fd);
        return sq_fail(ctx, e == ENOMEM || e == EAGAIN ? SQ_ERR_NOMEM : SQ_ERR_IO,
                       "spawn: fork failed: %s", strerror(e));
    }
    if (p == 0) {
        if (o->new_group) setpgid(0, 0);
#ifdef __linux__
        if (o->die_with_parent) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent) _exit(127);   /* parent already gone */
        }
#endif
        /* Signals the parent blocks or handles must not leak into the child. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (log_fd >= 0) {
            dup2(log_fd, 1);
            dup2(log_fd, 2);
        }
        if (o->cwd && chdir(o->cwd) != 0) {
            child_say("spawn: cannot chdir to ", o->cwd);
            _exit(127);
        }
        execve(o->argv[0], (char *const *)o->argv, envp);
        child_say("spawn: cannot execute ", o->argv[0]);
        _exit(127);
    }
    /* also in the parent, so a group kill right after spawn cannot miss it */
    if (o->new_group) setpgid(p, p);
    free(envp);
    if (log_fd >= 0) close(log_fd);
    *pid = (int)p;
    return SQ_OK;
}

sq_status sq_proc_wait(sq_ctx *ctx, int pid, int nohang, int *which, sq_proc_exit *out) {
    memset(out, 0, sizeof *out);
    if (which) *which = 0;
    int status = 0;
    pid_t r;
    do {
        r = waitpid((pid_t)pid, &status, nohang ? WNOHANG : 0);
    } while (r < 0 && errno == EINTR && !nohang);
    if (r < 0) {
        if (errno == EINTR) return SQ_OK;   /* interrupted by a signal: still running */
        return sq_fail(ctx, errno == ECHILD ? SQ_ERR_ARG : SQ_ERR_IO, "wait %d: %s", pid,
                       strerror(errno));
    }
    if (r == 0) {
        out->state = SQ_PROC_RUNNING;
        return SQ_OK;
    }
    if (which) *which = (int)r;
    if (WIFEXITED(status)) {
        out->state = SQ_PROC_EXITED;
        out->code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        out->state = SQ_PROC_SIGNALED;
        out->signal = WTERMSIG(status);
#ifdef WCOREDUMP
        out->core_dumped = WCOREDUMP(status) ? 1 : 0;
#endif
    }
    return SQ_OK;
}

sq_status sq_proc_kill(sq_ctx *ctx, int pid, int sig, int group) {
    if (pid <= 0) return sq_fail(ctx, SQ_ERR_ARG, "kill: bad pid %d", pid);
    if (kill(group ? -pid : pid, sig) != 0) {
        if (errno == ESRCH) return SQ_OK;   /* already gone: nothing to do */
        return sq_fail(ctx, SQ_ERR_IO, "kill %d: %s", pid, strerror(errno));
    }
    return SQ_OK;
}

int sq_proc_alive(int pid) {
    if (pid <= 0) return 0;
    if (kill(pid, 0) != 0 && errno != EPERM) return 0;
#ifdef __linux__
    /* A zombie (dead, not yet reaped by its new parent) answers kill(0). */
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *rp = strrchr(buf, ')');   /* the state follows "(comm)" */
        if (rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X')) return 0;
    }
#endif
    return 1;
}

int sq_proc_getpid(void) { return (int)getpid(); }

static const struct { const char *name; int sig; } SIGNAMES[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"ILL", SIGILL},
    {"ABRT", SIGABRT}, {"FPE", SIGFPE},   {"KILL", SIGKILL}, {"SEGV", SIGSEGV},
    {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM}, {"USR1", SIGUSR1},
    {"USR2", SIGUSR2}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT}, {"STOP", SIGSTOP},
    {"TSTP", SIGTSTP}, {"BUS", SIGBUS},   {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ},
};

int sq_proc_signum(const char *name) {
    if (!name || !*name) return 0;
    char *end = NULL;
    long v = strtol(name, &end, 10);
    if (end && *end == 0) return (v > 0 && v < 65) ? (int)v : 0;
    if (strncmp(name, "SIG", 3) == 0) name += 3;
    for (size_t i = 0; i < sizeof SIGNAMES / sizeof SIGNAMES[0]; i++)
        if (strcmp(name, SIGNAMES[i].name) == 0) return SIGNAMES[i].sig;
    return 0;
}

const char *sq_proc_signame(int sig, char *buf, size_t n) {
    for (size_t i = 0; i < sizeof SIGNAMES / sizeof SIGNAMES[0]; i++)
        if (SIGNAMES[i].sig == sig) {
            snprintf(buf, n, "SIG%s", SIGNAMES[i].name);
            return buf;
        }
    snprintf(buf, n, "signal %d", sig);
    return buf;
}

/* ---- signals --------------------------------------------------------------- */

/* The single mutable file-static of the engine: a POSIX signal handler gets
 * no user pointer, so it finds the caller-owned flag struct through this. */
static sq_proc_signals *volatile g_installed;

static void on_signal(int sig) {
    sq_proc_signals *s = g_installed;
    if (!s) return;
    s->last = sig;
    s->pending = s->pending + 1;
}

sq_status sq_proc_signals_install(sq_ctx *ctx, sq_proc_signals *s, const int *sigs, int n) {
    if (g_installed && g_installed != s)
        return sq_fail(ctx, SQ_ERR_STATE, "signals: another handler set is installed");
    if (g_installed == s) sq_proc_signals_restore(s);
    if (n < 0 || n > SQ_PROC_MAX_SIGNALS)
        return sq_fail(ctx, SQ_ERR_ARG, "signals: %d signals (at most %d)", n, SQ_PROC_MAX_SIGNALS);
    memset(s, 0, sizeof *s);
    g_installed = s;
    for (int i = 0; i < n; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;   /* no SA_RESTART: a blocking wait returns EINTR */
        if (sigaction(sigs[i], &sa, &s->old[i]) != 0) {
            int e = errno;
            sq_proc_signals_restore(s);
            return sq_fail(ctx, SQ_ERR_ARG, "signals: cannot handle signal %d: %s", sigs[i],
                           strerror(e));
        }
        s->sig[i] = sigs[i];
        s->nsig = i + 1;
    }
    return SQ_OK;
}

void sq_proc_signals_restore(sq_proc_signals *s) {
    if (!s) return;
    /* reverse order, so a signal listed twice ends with its original handler */
    for (int i = s->nsig - 1; i >= 0; i--) sigaction(s->sig[i], &s->old[i], NULL);
    s->nsig = 0;
    if (g_installed == s) g_installed = NULL;
}

int sq_proc_signals_take(sq_proc_signals *s) {
    int sig = s->last;
    s->last = 0;
    s->pending = 0;
    return sig;
}

/* ---- heartbeat ------------------------------------------------------------- */

struct sq_proc_heartbeat {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    double interval;
    char *path;
    char host[256];
    int pid;
};

static void heartbeat_write(struct sq_proc_heartbeat *hb) {
    char line[400], tmp[4200];
    int n = snprintf(line, sizeof line, "%d %s %.3f\n", hb->pid, hb->host, sq_proc_walltime());
    if (snprintf(tmp, sizeof tmp, "%s.tmp", hb->path) >= (int)sizeof tmp) return;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;   /* best effort: a missed beat only ages the file */
    ssize_t w = write(fd, line, (size_t)n);
    close(fd);
    if (w == n) rename(tmp, hb->path);
}

static void *heartbeat_main(void *arg) {
    struct sq_proc_heartbeat *hb = arg;
    pthread_mutex_lock(&hb->mu);
    while (!hb->stop) {
        pthread_mutex_unlock(&hb->mu);
        heartbeat_write(hb);
        pthread_mutex_lock(&hb->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec + hb->interval;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        while (!hb->stop && pthread_cond_timedwait(&hb->cv, &hb->mu, &ts) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&hb->mu);
    return NULL;
}

sq_status sq_proc_heartbeat_start(sq_ctx *ctx, const char *path, double interval_s,
                                  sq_proc_heartbeat **out) {
    *out = NULL;
    if (!(interval_s > 0)) return sq_fail(ctx, SQ_ERR_ARG, "heartbeat: interval must be > 0");
    struct sq_proc_heartbeat *hb = calloc(1, sizeof *hb);
    if (!hb) return sq_fail(ctx, SQ_ERR_NOMEM, "heartbeat: out of memory");
    hb->path = strdup(path);
    if (!hb->path) {
        free(hb);
        return sq_fail(ctx, SQ_ERR_NOMEM, "heartbeat: out of memory");
    }
    hb->interval = interval_s;
    hb->pid = (int)getpid();
    if (gethostname(hb->host, sizeof hb->host - 1) != 0) strcpy(hb->host, "unknown");
    pthread_mutex_init(&hb->mu, NULL);
    pthread_cond_init(&hb->cv, NULL);
    /* The thread must not take the signals the main thread handles. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&hb->thread, NULL, heartbeat_main, hb);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&hb->mu);
        pthread_cond_destroy(&hb->cv);
        free(hb->path);
        free(hb);
        return sq_fail(ctx, SQ_ERR_IO, "heartbeat: cannot start thread: %s", strerror(rc));
    }
    *out = hb;
    return SQ_OK;
}

void sq_proc_heartbeat_stop(sq_proc_heartbeat *hb) {
    if (!hb) return;
    pthread_mutex_lock(&hb->mu);
    hb->stop = 1;
    pthread_cond_signal(&hb->cv);
    pthread_mutex_unlock(&hb->mu);
    pthread_join(hb->thread, NULL);
    pthread_mutex_destroy(&hb->mu);
    pthread_cond_destroy(&hb->cv);
    free(hb->path);
    free(hb);
}

/* ---- clocks, host ------------------------------------------------------------ */

double sq_proc_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double sq_proc_walltime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void sq_proc_sleep(double seconds) {
    if (!(seconds > 0)) return;
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);   /* an interrupting signal ends the sleep early, on purpose */
}

int sq_proc_isatty(int fd) { return isatty(fd); }

int sq_proc_term_width(int fd) {
    if (!isatty(fd)) return 0;
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    return 80;
}

sq_status sq_proc_hostname(sq_ctx *ctx, char *buf, size_t n) {
    if (n == 0) return sq_fail(ctx, SQ_ERR_ARG, "hostname: empty buffer");
    if (gethostname(buf, n - 1) != 0)
        return sq_fail(ctx, SQ_ERR_IO, "hostname: %s", strerror(errno));
    buf[n - 1] = 0;
    return SQ_OK;
}

sq_status sq_proc_self_exe(sq_ctx *ctx, char *buf, size_t n) {
    ssize_t r = readlink("/proc/self/exe", buf, n - 1);
    if (r < 0) return sq_fail(ctx, SQ_ERR_IO, "self_exe: %s", strerror(errno));
    if ((size_t)r >= n - 1) return sq_fail(ctx, SQ_ERR_ARG, "self_exe: path too long");
    buf[r] = 0;
    return SQ_OK;
}

sq_status sq_proc_getcwd(sq_ctx *ctx, char *buf, size_t n) {
    if (!getcwd(buf, n)) return sq_fail(ctx, SQ_ERR_IO, "getcwd: %s", strerror(errno));
    return SQ_OK;
}

/* ---- files --------------------------------------------------------------------- */

sq_status sq_proc_mkdir_p(sq_ctx *ctx, const char *path) {
    size_t len = strlen(path);
    if (len == 0) return sq_fail(ctx, SQ_ERR_ARG, "mkdir: empty path");
    char *p = strdup(path);
    if (!p) return sq_fail(ctx, SQ_ERR_NOMEM, "mkdir: out of memory");
    for (char *c = p + 1; ; c++) {
        if (*c == '/' || *c == 0) {
            char save = *c;
            *c = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                sq_status st = sq_fail(ctx, SQ_ERR_IO, "mkdir '%s': %s", p, strerror(errno));
                free(p);
                return st;
            }
            *c = save;
            if (save == 0) break;
        }
    }
    free(p);
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return sq_fail(ctx, SQ_ERR_IO, "mkdir '%s': exists and is not a directory", path);
    return SQ_OK;
}

sq_status sq_proc_rename(sq_ctx *ctx, const char *from, const char *to) {
    if (rename(from, to) != 0)
        return sq_fail(ctx, SQ_ERR_IO, "rename '%s' -> '%s': %s", from, to, strerror(errno));
    return SQ_OK;
}

sq_status sq_proc_stat_path(sq_ctx *ctx, const char *path, sq_proc_stat *out) {
    memset(out, 0, sizeof *out);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) return SQ_OK;
        return sq_fail(ctx, SQ_ERR_IO, "stat '%s': %s", path, strerror(errno));
    }
    out->exists = 1;
    out->is_dir = S_ISDIR(sb.st_mode) ? 1 : 0;
    out->size = (int64_t)sb.st_size;
    out->mtime = (double)sb.st_mtim.tv_sec + 1e-9 * (double)sb.st_mtim.tv_nsec;
    return SQ_OK;
}

sq_status sq_proc_listdir(sq_ctx *ctx, const char *dir, int (*fn)(const char *name, void *ud),
                          void *ud) {
    DIR *d = opendir(dir);
    if (!d) return sq_fail(ctx, SQ_ERR_IO, "list '%s': %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (fn(e->d_name, ud)) break;
    }
    closedir(d);
    return SQ_OK;
}

sq_status sq_proc_write_atomic(sq_ctx *ctx, const char *path, const void *data, size_t n) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) return sq_fail(ctx, SQ_ERR_NOMEM, "write: out of memory");
    snprintf(tmp, plen + 32, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        sq_status st = sq_fail(ctx, SQ_ERR_IO, "write '%s': %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    const char *p = data;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            sq_status st = sq_fail(ctx, SQ_ERR_IO, "write '%s': %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            free(tmp);
            return st;
        }
        p += w;
        left -= (size_t)w;
    }
    int bad = fsync(fd) != 0;
    if (close(fd) != 0) bad = 1;
    if (bad) {
        sq_status st = sq_fail(ctx, SQ_ERR_IO, "write '%s': %s", tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    if (rename(tmp, path) != 0) {
        sq_status st = sq_fail(ctx, SQ_ERR_IO, "rename '%s' -> '%s': %s", tmp, path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    free(tmp);
    return SQ_OK;
}
