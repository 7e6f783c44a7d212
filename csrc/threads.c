/* threads.c - fastbp's own fork-join pool: the workers behind every parallel kernel.
 *
 * Why not OpenMP: between parallel regions libgomp's workers spin for
 * milliseconds, so the BLAS threads that need the same cores for the caller's
 * next GEMM (ours, NumPy's) wait for the spin to end: a dense_forward took 15x
 * its GEMM. A passive libgomp pays a full wake-up on every region, and can be
 * set only through the environment before the runtime loads. libgomp also hangs
 * a child made by fork and exits the process when it cannot create a thread.
 * (Yielding while idle is no cure: the Linux scheduler, EEVDF, still gives a
 * yielding thread its fair share of the core.) The GEMMs run on this pool too,
 * each split into independent single-threaded BLAS calls, so no other pool of
 * ours exists. This pool:
 *   - idle workers spin for a short window (fbp_wait_us), then sleep: the
 *     GEMMs and epilogues of one call, and calls made back to back, hand over
 *     without a wake-up, and a worker takes a core from someone else's next
 *     call for at most that window;
 *   - one caller owns the workers at a time; a second concurrent caller (another
 *     Python thread) runs its kernel on its own thread instead of waiting;
 *   - a forked child starts with no workers and creates its own on demand;
 *   - a thread that cannot be created leaves the pool smaller, never an exit.
 * Work is split by task index only, so results never depend on the thread count.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "fbp_internal.h"

#define MAX_THREADS 4096
#define NT_BITS 13 /* the job word holds (epoch << NT_BITS) | nt, nt <= 4096 */
#define NT_MASK ((1ul << NT_BITS) - 1)
#define WORKER_STACK ((size_t)1 << 20)

struct job {
    fbp_task_fn fn;
    void *ctx;
    fbp_idx ntasks;
};

static struct job g_job;                 /* read by a worker only while it has a part */
static _Atomic unsigned long g_word;     /* changes once per job: (epoch << NT_BITS) | nt */
static _Atomic int g_pending;            /* parts of the current job still running */
static _Atomic int g_nsleeping;          /* workers blocked on g_wake */
static _Atomic long g_wait_ns = 50000;   /* the spin window; see fbp_set_wait_us */
static pthread_mutex_t g_sleep_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wake = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t g_owner = PTHREAD_MUTEX_INITIALIZER; /* held by the dispatching caller */
static int g_nworkers;                   /* threads started (ids 1..g_nworkers) */
static int g_create_error;               /* errno of the last failed pthread_create */
static int g_requested;                  /* fbp_set_num_threads; 0: the default */
static int g_default;                    /* OMP_NUM_THREADS, else the CPUs we may run on */
static int g_machine;                    /* the machine's online CPUs */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static _Thread_local int t_worker;       /* nonzero on a pool thread: no nested jobs */
static _Thread_local int t_requested;    /* fbp_set_local_threads: this thread's count */

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void run_part(const struct job *j, int part, int nt)
{
    fbp_idx t0 = j->ntasks * part / nt, t1 = j->ntasks * (part + 1) / nt;
    if (t1 > t0)
        j->fn(j->ctx, t0, t1);
}

/* Wait until g_word differs from seen: spin for the window, then sleep. */
static unsigned long wait_for_job(unsigned long seen)
{
    unsigned long w;
    long window = atomic_load_explicit(&g_wait_ns, memory_order_relaxed);
    if (window > 0) {
        long t0 = now_ns();
        for (unsigned k = 0;; k++) {
            w = atomic_load_explicit(&g_word, memory_order_acquire);
            if (w != seen)
                return w;
            if ((k & 63) == 63 && now_ns() - t0 > window)
                break;
            FBP_CPU_RELAX();
        }
    }
    pthread_mutex_lock(&g_sleep_mu);
    atomic_fetch_add(&g_nsleeping, 1);
    while ((w = atomic_load(&g_word)) == seen)
        pthread_cond_wait(&g_wake, &g_sleep_mu);
    atomic_fetch_sub(&g_nsleeping, 1);
    pthread_mutex_unlock(&g_sleep_mu);
    return w;
}

struct worker_arg {
    int id;
    unsigned long seen; /* g_word when the worker was made: its first job is the next one */
};

static void *worker_main(void *p)
{
    struct worker_arg a = *(struct worker_arg *)p;
    free(p);
    t_worker = 1;
    fbp_serial = 1;
    unsigned long seen = a.seen;
    for (;;) {
        seen = wait_for_job(seen);
        int nt = (int)(seen & NT_MASK);
        if (a.id < nt) { /* the caller waits for this part, so g_job is stable */
            run_part(&g_job, a.id, nt);
            atomic_fetch_sub_explicit(&g_pending, 1, memory_order_release);
        }
    }
    return NULL;
}

/* With g_owner held: start workers until nt - 1 exist; returns how many parts
 * can run (1 + workers), which is less than nt if a thread could not start. */
static int ensure_workers(int nt)
{
    if (nt - 1 <= g_nworkers)
        return nt;
    pthread_attr_t attr;
    sigset_t all, old;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, WORKER_STACK);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all); /* workers inherit a full mask: signals go to the caller's threads */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (g_nworkers < nt - 1) {
        struct worker_arg *a = malloc(sizeof *a);
        if (!a) {
            g_create_error = ENOMEM;
            break;
        }
        a->id = g_nworkers + 1;
        a->seen = atomic_load(&g_word);
        pthread_t th;
        int rc = pthread_create(&th, &attr, worker_main, a);
        if (rc != 0) {
            free(a);
            g_create_error = rc;
            break;
        }
        g_nworkers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return 1 + g_nworkers < nt ? 1 + g_nworkers : nt;
}

void fbp_parallel(int nt, fbp_idx ntasks, fbp_task_fn fn, void *ctx)
{
    if (ntasks <= 0)
        return;
    if (nt > ntasks)
        nt = (int)ntasks;
    if (nt > MAX_THREADS)
        nt = MAX_THREADS;
    if (nt <= 1 || t_worker || pthread_mutex_trylock(&g_owner) != 0) {
        fn(ctx, 0, ntasks); /* serial, or another caller owns the workers */
        return;
    }
    nt = ensure_workers(nt);
    if (nt <= 1) {
        pthread_mutex_unlock(&g_owner);
        fn(ctx, 0, ntasks);
        return;
    }
    g_job.fn = fn;
    g_job.ctx = ctx;
    g_job.ntasks = ntasks;
    atomic_store(&g_pending, nt - 1);
    unsigned long w = atomic_load(&g_word);
    atomic_store(&g_word, (((w >> NT_BITS) + 1) << NT_BITS) | (unsigned long)nt);
    if (atomic_load(&g_nsleeping) > 0) {
        pthread_mutex_lock(&g_sleep_mu);
        pthread_cond_broadcast(&g_wake);
        pthread_mutex_unlock(&g_sleep_mu);
    }
    run_part(&g_job, 0, nt);
    for (unsigned k = 0; atomic_load_explicit(&g_pending, memory_order_acquire) != 0; k++) {
        if (k < 2000)
            FBP_CPU_RELAX();
        else
            sched_yield();
    }
    pthread_mutex_unlock(&g_owner);
}

/* ---- fork: the child has the caller's thread only ------------------------------ */

static void atfork_prepare(void) { pthread_mutex_lock(&g_owner); }
static void atfork_parent(void) { pthread_mutex_unlock(&g_owner); }
static void atfork_child(void)
{
    g_nworkers = 0; /* the workers were not copied; new ones start on demand */
    atomic_store(&g_pending, 0);
    atomic_store(&g_nsleeping, 0);
    pthread_mutex_init(&g_sleep_mu, NULL);
    pthread_cond_init(&g_wake, NULL);
    pthread_mutex_init(&g_owner, NULL);
}

static int parse_threads(const char *s)
{
    if (!s)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10); /* OMP_NUM_THREADS may be a list: its first entry */
    if (errno || end == s || v < 1)
        return 0;
    return v > MAX_THREADS ? MAX_THREADS : (int)v;
}

static int cpus_available(void)
{
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > MAX_THREADS ? MAX_THREADS : (int)n);
}

static void init_once(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    int n = parse_threads(getenv("OMP_NUM_THREADS"));
    g_default = n ? n : cpus_available();
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    g_machine = online < 1 ? 1 : (online > MAX_THREADS ? MAX_THREADS : (int)online);
}

void fbp_init_threads(void) { pthread_once(&g_once, init_once); }

void fbp_set_num_threads(int n)
{
    fbp_init_threads();
    g_requested = n < 1 ? 0 : (n > MAX_THREADS ? MAX_THREADS : n);
}

int fbp_get_num_threads(void)
{
    fbp_init_threads();
    if (t_requested)
        return t_requested;
    return g_requested ? g_requested : g_default;
}

void fbp_set_local_threads(int n)
{
    t_requested = n < 1 ? 0 : (n > MAX_THREADS ? MAX_THREADS : n);
}

int fbp_get_local_threads(void) { return t_requested; }

int fbp_cpu_count(void) { return cpus_available(); }

int fbp_machine_cpus(void)
{
    fbp_init_threads();
    return g_machine;
}

int fbp_pool_workers(int *create_error)
{
    if (create_error)
        *create_error = g_create_error;
    return g_nworkers;
}

void fbp_set_wait_us(double us)
{
    atomic_store(&g_wait_ns, us <= 0 ? 0L : (long)(us * 1000.0));
}

double fbp_get_wait_us(void) { return (double)atomic_load(&g_wait_ns) / 1000.0; }
