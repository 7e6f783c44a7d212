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
/* A job of n tasks is cut into up to this many parts per thread, claimed one at
 * a time: a worker that starts late, or is descheduled, holds back at most one
 * small part, and the others take the rest. */
#define PARTS_PER_THREAD 4
#define MAX_PARTS 0xffff

struct job {
    fbp_task_fn fn;
    void *ctx;
    fbp_idx ntasks;
    int nparts;
    long t_pub; /* when the caller published it (ns) */
};

static struct job g_job;                 /* read by a worker only while it holds a part */
static _Atomic unsigned long g_word;     /* changes once per job: (epoch << NT_BITS) | nt */
/* The parts still to claim: (epoch << 32) | (nparts << 16) | next. A claim is a
 * compare-and-swap that also checks the epoch, so a worker that wakes for a job
 * that has ended claims nothing of the next one. */
static _Atomic uint64_t g_claim;
static _Atomic int g_done;               /* parts of the current job finished */
static _Atomic long g_first_ns;          /* a worker's first claim in the job, 0 if none */
static _Atomic int g_nsleeping;          /* workers blocked on g_wake */
static _Atomic long g_wait_ns = 50000;   /* the spin window; see fbp_set_wait_us */
/* The caller's rhythm: the longest recent gap, under SEQ_GAP_MAX_NS, from the end
 * of one job to the start of the next (a user's own work between two steps, a
 * serial kernel between two parallel ones). An idle worker spins through twice
 * it (and at least g_wait_ns, at most SEQ_GAP_MAX_NS), so that a sequence with
 * such gaps keeps finding it awake instead of paying a wake-up per step. */
#define SEQ_GAP_MAX_NS 1000000L
static _Atomic long g_seq_gap_ns;
static long g_last_end_ns; /* the last job's end; the caller that owns the pool writes it */
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

/* ---- what going parallel costs, measured on this machine as jobs run -------------
 * Written by the caller that owns the pool, read by anyone deciding whether to
 * use it. Latencies are from publishing a job to a worker's first claim, for
 * workers that were all asleep (a wake-up through the kernel) or spinning. */
static _Atomic long g_lat_wake_ns = 20000;
static _Atomic long g_lat_spin_ns = 2000;
static _Atomic long g_pass_ps = 0;       /* one element of a memory pass, picoseconds */
static _Atomic long g_gemm_ps[2];        /* one multiply-add of sgemm, dgemm (0: unknown) */
static _Atomic long g_gather_ps;         /* one byte of a batch's row gather (0: unknown) */
/* Backoff: when jobs have recently cost more than the workers brought (a busy
 * neighbour took their cores, or they woke too late), everything runs on the
 * caller until g_serial_until, and the workers sleep; each failed try after it
 * doubles the next backoff, up to BACKOFF_MAX_NS; a job that pays resets it. */
#define BACKOFF_MIN_NS 2000000L
#define BACKOFF_LOSS 0.05 /* the mean loss, as a fraction of a job's time, that backs off */
#define BACKOFF_MAX_NS 200000000L
static _Atomic long g_serial_until;
static long g_backoff_ns = BACKOFF_MIN_NS;
static double g_gain;                    /* running mean of a job's (gain - cost) / time */
/* Set by a backoff, cleared by the next job: that job finds the workers asleep
 * because of the backoff itself, so its wake-up is not weighed against the
 * split (else one late wake-up backs off again, doubled: a quiet machine then
 * stayed serial, the workers asleep, for as long as a process ran). */
static int g_resuming;
static _Atomic long g_jobs, g_jobs_backoff, g_jobs_woke; /* counters for fbp_pool_stats */
/* Probes of a latency that keeps jobs on the caller (fbp_threads_for_ns): every
 * PROBE_EVERY_NS at most, jobs are decided for PROBE_LEN_NS as on a quiet machine. */
#define PROBE_EVERY_NS 100000000L
#define PROBE_LEN_NS 2000000L
static _Atomic long g_probe_until, g_next_probe;
/* Tests: split every loop that has parts to split, whatever it costs, so that the
 * thread-count tests run the parallel paths at any size (fbp_set_force_parallel). */
static _Atomic int g_force;

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static long ewma(long old, long sample) { return old + (sample - old) / 4; }

/* Claim and run parts of job `epoch` until none is left; returns how many this
 * thread ran, and adds the time it spent in them to *busy. */
static int run_parts(uint32_t epoch, int worker, long *busy)
{
    int mine = 0;
    uint64_t c = atomic_load_explicit(&g_claim, memory_order_acquire);
    for (;;) {
        uint32_t next = (uint32_t)(c & 0xffff), np = (uint32_t)((c >> 16) & 0xffff);
        if ((uint32_t)(c >> 32) != epoch || next >= np)
            return mine;
        if (!atomic_compare_exchange_weak_explicit(&g_claim, &c, c + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        /* the caller waits for this part, so g_job stays as published */
        long t0 = now_ns();
        if (worker && mine == 0) {
            long zero = 0;
            atomic_compare_exchange_strong(&g_first_ns, &zero, t0);
        }
        fbp_idx t0_ = g_job.ntasks * next / np, t1_ = g_job.ntasks * (next + 1) / np;
        if (t1_ > t0_)
            g_job.fn(g_job.ctx, t0_, t1_);
        if (busy)
            *busy += now_ns() - t0;
        mine++;
        atomic_fetch_add_explicit(&g_done, 1, memory_order_release);
        c = atomic_load_explicit(&g_claim, memory_order_acquire);
    }
}

/* Wait until g_word differs from seen: spin for the window, then sleep. */
#define SPIN_PURE_NS 10000L /* pure spinning (pauses) before the spin starts to yield */
static unsigned long wait_for_job(unsigned long seen)
{
    unsigned long w;
    long window = atomic_load_explicit(&g_wait_ns, memory_order_relaxed);
    long rhythm = 2 * atomic_load_explicit(&g_seq_gap_ns, memory_order_relaxed);
    if (window > 0 && rhythm > window)
        window = rhythm < SEQ_GAP_MAX_NS ? rhythm : SEQ_GAP_MAX_NS;
    if (window > 0) {
        long t0 = now_ns();
        int polite = 0;
        for (unsigned k = 0;; k++) {
            w = atomic_load_explicit(&g_word, memory_order_acquire);
            if (w != seen)
                return w;
            if ((k & 63) == 63) {
                long dt = now_ns() - t0;
                if (dt > window)
                    break;
                polite = dt > SPIN_PURE_NS;
            }
            /* past the gaps between a step's kernels, spin politely: on a busy
             * machine the core goes to whoever else is ready (the caller's own
             * serial work, a neighbour), on a quiet one the yield returns at once.
             * In time, not pauses: a pause takes 10 to 140 cycles by CPU. */
            if (polite && (k & 15) == 15)
                sched_yield();
            else
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
        if (a.id < nt)
            run_parts((uint32_t)(seen >> NT_BITS), 1, NULL);
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

/* After a job: what the workers brought against what the job cost the caller,
 * folded into the running mean that decides the backoff. busy: the caller's
 * time in its own parts; wait: its time waiting for the others' parts. */
static void account(int nparts, int mine, long busy, long wait, long t_pub, long t_end,
                    int all_asleep, int fresh)
{
    atomic_fetch_add_explicit(&g_jobs, 1, memory_order_relaxed);
    long first = atomic_load(&g_first_ns), span = t_end - t_pub;
    if (fresh)
        return; /* a worker started for this job: its start-up is paid once, not per job */
    if (first > 0) {
        _Atomic long *lat = all_asleep ? &g_lat_wake_ns : &g_lat_spin_ns;
        atomic_store(lat, ewma(atomic_load(lat), first - t_pub));
    } else if (all_asleep && span > atomic_load(&g_lat_wake_ns)) {
        /* no worker came within the whole job: the wake-up takes at least that */
        atomic_store(&g_lat_wake_ns, ewma(atomic_load(&g_lat_wake_ns), span));
    }
    int resuming = g_resuming;
    g_resuming = 0;
    if (mine == 0 || (resuming && all_asleep))
        return; /* nothing to weigh the workers against, or a wake-up the backoff caused */
    double per_part = (double)busy / mine;
    double gain = (double)(nparts - mine) * per_part - (double)wait - (double)(span - busy - wait);
    g_gain += (gain / (double)(span > 0 ? span : 1) - g_gain) / 4.0;
    if (g_gain < -BACKOFF_LOSS) {
        atomic_store(&g_serial_until, t_end + g_backoff_ns);
        g_backoff_ns = g_backoff_ns * 2 < BACKOFF_MAX_NS ? g_backoff_ns * 2 : BACKOFF_MAX_NS;
        g_gain = 0.0;
        g_resuming = 1;
    } else if (g_gain > 0.1) {
        g_backoff_ns = BACKOFF_MIN_NS;
    }
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
    int before = g_nworkers;
    nt = ensure_workers(nt);
    int fresh = g_nworkers != before;
    if (nt <= 1) {
        pthread_mutex_unlock(&g_owner);
        fn(ctx, 0, ntasks);
        return;
    }
    fbp_idx np = ntasks < (fbp_idx)nt * PARTS_PER_THREAD ? ntasks : (fbp_idx)nt * PARTS_PER_THREAD;
    np = np < MAX_PARTS ? np : MAX_PARTS;
    int all_asleep = atomic_load(&g_nsleeping) >= g_nworkers;
    if (all_asleep)
        atomic_fetch_add_explicit(&g_jobs_woke, 1, memory_order_relaxed);
    g_job.fn = fn;
    g_job.ctx = ctx;
    g_job.ntasks = ntasks;
    g_job.nparts = (int)np;
    atomic_store(&g_done, 0);
    atomic_store(&g_first_ns, 0);
    unsigned long w = atomic_load(&g_word);
    unsigned long epoch = (w >> NT_BITS) + 1;
    long t_pub = now_ns(), gap = t_pub - g_last_end_ns,
         seq = atomic_load_explicit(&g_seq_gap_ns, memory_order_relaxed);
    /* the longest recent gap: a longer one replaces it, each job decays it by 1/8 */
    seq = gap < SEQ_GAP_MAX_NS && gap > seq ? gap : seq - seq / 8;
    atomic_store_explicit(&g_seq_gap_ns, seq, memory_order_relaxed);
    g_job.t_pub = t_pub;
    atomic_store_explicit(&g_claim, ((uint64_t)(uint32_t)epoch << 32) | ((uint64_t)np << 16),
                          memory_order_release);
    atomic_store_explicit(&g_word, (epoch << NT_BITS) | (unsigned long)nt, memory_order_release);
    if (atomic_load(&g_nsleeping) > 0) {
        pthread_mutex_lock(&g_sleep_mu);
        pthread_cond_broadcast(&g_wake);
        pthread_mutex_unlock(&g_sleep_mu);
    }
    long busy = 0;
    int mine = run_parts((uint32_t)epoch, 0, &busy);
    long t_idle = now_ns();
    for (unsigned k = 0; atomic_load_explicit(&g_done, memory_order_acquire) != (int)np; k++) {
        if (k < 2000)
            FBP_CPU_RELAX();
        else
            sched_yield();
    }
    long t_end = now_ns();
    g_last_end_ns = t_end;
    account((int)np, mine, busy, t_end - t_idle, t_pub, t_end, all_asleep, fresh);
    pthread_mutex_unlock(&g_owner);
}

/* ---- deciding: threads for a piece of work of known cost --------------------------- */

/* Threads for work_ns of work that splits in up to `most` parts: each added thread
 * must get at least twice what it takes a spinning worker to join, so that it
 * brings more than it costs; none while backing off. The decision assumes the
 * workers spin: a sleeping one costs the caller only the wake-up call, since the
 * caller claims the parts it has not reached, and it then spins, ready for the
 * next job of the sequence; when jobs keep finding it asleep and it keeps
 * arriving too late to help, their accounts show it and the pool backs off. */
int fbp_threads_for_ns(double work_ns, int most)
{
    if (fbp_serial)
        return 1;
    int nt = fbp_get_num_threads();
    nt = nt < most ? nt : most;
    if (nt <= 1 || atomic_load_explicit(&g_force, memory_order_relaxed))
        return nt < 1 ? 1 : nt;
    if (work_ns <= 0.0)
        return 1;
    double lat = (double)atomic_load_explicit(&g_lat_spin_ns, memory_order_relaxed);
    if (lat > FBP_PART_MIN_NS && work_ns >= 4.0 * FBP_PART_MIN_NS && work_ns < 4.0 * lat) {
        /* The latency alone keeps this work on the caller. It is measured only
         * by jobs that run, so a spell of load that raised it would keep it
         * (and every such job on the caller) for good: now and then the pool
         * decides as a quiet machine would for a short while, and the jobs of
         * that probe measure the latency again. */
        long now = now_ns(), until = atomic_load_explicit(&g_serial_until, memory_order_relaxed);
        if (now < atomic_load_explicit(&g_probe_until, memory_order_relaxed)) {
            lat = FBP_PART_MIN_NS;
        } else if (now >= atomic_load_explicit(&g_next_probe, memory_order_relaxed) &&
                   !(until && now < until)) { /* not while the backoff holds */
            atomic_store_explicit(&g_probe_until, now + PROBE_LEN_NS, memory_order_relaxed);
            atomic_store_explicit(&g_next_probe, now + PROBE_EVERY_NS, memory_order_relaxed);
            lat = FBP_PART_MIN_NS;
        }
    }
    double floor_ns = 2.0 * (lat > FBP_PART_MIN_NS ? lat : FBP_PART_MIN_NS);
    if (work_ns < 2.0 * floor_ns)
        return 1;
    long until = atomic_load_explicit(&g_serial_until, memory_order_relaxed);
    if (until && now_ns() < until) {
        atomic_fetch_add_explicit(&g_jobs_backoff, 1, memory_order_relaxed);
        return 1;
    }
    double cap = work_ns / floor_ns;
    return cap < nt ? (int)cap : nt;
}

/* The cost of one element of a memory pass, measured once: a scaled copy over a
 * buffer that fits in L2, as the passes between a step's GEMMs mostly do; the
 * best of 64 passes (about 0.1 ms), since the best of 8 varied by process
 * between the sustained rate and about 1.6 times it. */
static void measure_pass(void)
{
    enum { NE = 16384, REPS = 64 };
    static float a[NE], b[NE];
    long best = 0;
    /* written first: untouched, a's pages would all map the kernel's one zero
     * page, read from L1, and the pass would measure about half its cost */
    for (int i = 0; i < NE; i++)
        a[i] = (float)i, b[i] = 0.0f;
    for (int r = 0; r < REPS; r++) {
        long t0 = now_ns();
        for (int i = 0; i < NE; i++)
            b[i] = a[i] * 0.5f + b[i];
        long dt = now_ns() - t0;
        best = r == 0 || dt < best ? dt : best;
    }
    __asm__ __volatile__("" : : "r"(b) : "memory");
    long ps = best * 1000 / NE;
    atomic_store(&g_pass_ps, ps > 10 ? ps : 10);
}

double fbp_pass_ns(void)
{
    if (!atomic_load_explicit(&g_pass_ps, memory_order_relaxed))
        measure_pass();
    return (double)atomic_load_explicit(&g_pass_ps, memory_order_relaxed) / 1000.0;
}

double fbp_gemm_ns(int dsize)
{
    long ps = atomic_load_explicit(&g_gemm_ps[dsize == 8], memory_order_relaxed);
    return ps ? (double)ps / 1000.0 : -1.0;
}

double fbp_gather_ns(void)
{
    long ps = atomic_load_explicit(&g_gather_ps, memory_order_relaxed);
    return ps ? (double)ps / 1000.0 : -1.0;
}

void fbp_note_gather(double bytes, long ns)
{
    if (bytes < 4096.0 || ns <= 0)
        return;
    long ps = (long)((double)ns * 1000.0 / bytes), old = atomic_load(&g_gather_ps);
    atomic_store(&g_gather_ps, old ? ewma(old, ps) : ps);
}

void fbp_note_gemm(int dsize, double madds, long ns)
{
    if (madds < 1e5 || ns <= 0)
        return;
    _Atomic long *g = &g_gemm_ps[dsize == 8];
    long ps = (long)((double)ns * 1000.0 / madds), old = atomic_load(g);
    atomic_store(g, old ? ewma(old, ps) : ps);
}

long fbp_now_ns(void) { return now_ns(); }

int fbp_set_force_parallel(int on) { return atomic_exchange(&g_force, on != 0); }

void fbp_pool_stats(double out[7])
{
    out[0] = (double)atomic_load(&g_lat_wake_ns) / 1000.0;
    out[1] = (double)atomic_load(&g_lat_spin_ns) / 1000.0;
    out[2] = fbp_pass_ns();
    out[3] = (double)atomic_load(&g_jobs);
    out[4] = (double)atomic_load(&g_jobs_backoff);
    long until = atomic_load(&g_serial_until);
    out[5] = until > now_ns() ? (double)(until - now_ns()) / 1e6 : 0.0;
    out[6] = (double)atomic_load(&g_jobs_woke);
}

/* ---- fork: the child has the caller's thread only ------------------------------ */

static void atfork_prepare(void) { pthread_mutex_lock(&g_owner); }
static void atfork_parent(void) { pthread_mutex_unlock(&g_owner); }
static void atfork_child(void)
{
    g_nworkers = 0; /* the workers were not copied; new ones start on demand */
    atomic_store(&g_done, 0);
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

void fbp_set_handoff_us(double us)
{
    atomic_store(&g_lat_spin_ns, us <= 0 ? 0L : (long)(us * 1000.0));
}
