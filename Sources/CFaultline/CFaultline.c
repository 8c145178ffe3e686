#define _GNU_SOURCE
#include "CFaultline.h"

#include <errno.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

uint64_t fl_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// ---- thread indices -------------------------------------------------------

__thread int fl_tls_thread_index = -1;

static pthread_mutex_t index_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t index_once = PTHREAD_ONCE_INIT;
static pthread_key_t index_key;
static unsigned char index_used[FL_MAX_THREADS];
static int index_high_water;

static void index_release(void *value) {
    int idx = (int)(intptr_t)value - 1;
    pthread_mutex_lock(&index_lock);
    if (idx >= 0 && idx < FL_MAX_THREADS) index_used[idx] = 0;
    pthread_mutex_unlock(&index_lock);
    fl_tls_thread_index = -1;
}

static void index_init(void) { pthread_key_create(&index_key, index_release); }

int fl_thread_index_slow(void) {
    pthread_once(&index_once, index_init);
    pthread_mutex_lock(&index_lock);
    int idx = -1;
    for (int i = 0; i < FL_MAX_THREADS; i++) {
        if (!index_used[i]) { idx = i; break; }
    }
    if (idx < 0) {
        pthread_mutex_unlock(&index_lock);
        fprintf(stderr, "faultline: more than %d live threads use Faultline\n", FL_MAX_THREADS);
        abort();
    }
    index_used[idx] = 1;
    if (idx + 1 > index_high_water) __atomic_store_n(&index_high_water, idx + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&index_lock);
    pthread_setspecific(index_key, (void *)(intptr_t)(idx + 1));
    fl_tls_thread_index = idx;
    return idx;
}

int fl_thread_index_high_water(void) { return __atomic_load_n(&index_high_water, __ATOMIC_ACQUIRE); }

// ---- CPUs --------------------------------------------------------------------

int fl_pin_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

// The affinity the process started with, taken before main() runs (before any pinning).
static cpu_set_t process_cpus;
static int process_cpus_known;

__attribute__((constructor)) static void fl_record_process_cpus(void) {
    CPU_ZERO(&process_cpus);
    process_cpus_known = sched_getaffinity(0, sizeof(process_cpus), &process_cpus) == 0;
}

int fl_unpin_to_process_cpus(void) {
    if (!process_cpus_known) return ENOSYS;
    return pthread_setaffinity_np(pthread_self(), sizeof(process_cpus), &process_cpus);
}

int fl_current_cpu(void) { return sched_getcpu(); }

int fl_available_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return (int)sysconf(_SC_NPROCESSORS_ONLN);
    return CPU_COUNT(&set);
}

int fl_gettid(void) { return (int)syscall(SYS_gettid); }

// ---- CPU-to-CPU round trip ------------------------------------------------------

// Two threads, pinned to two CPUs, hand one cache line back and forth; each hand-off is a
// line transfer between the CPUs' caches, the cost every shared lock word, counter and tree
// node pays when two CPUs take turns at it.
struct fl_ping { long word __attribute__((aligned(64))); int far_cpu; int near_cpu; int rounds; int far_state; double ns; };

static void *fl_ping_far(void *arg) {
    struct fl_ping *p = arg;
    if (fl_pin_to_cpu(p->far_cpu) != 0) { __atomic_store_n(&p->far_state, -1, __ATOMIC_RELEASE); return NULL; }
    __atomic_store_n(&p->far_state, 1, __ATOMIC_RELEASE);
    for (long i = 0; i < p->rounds; i++) {
        long w;
        while ((w = __atomic_load_n(&p->word, __ATOMIC_ACQUIRE)) != 2 * i + 1) {
            if (w < 0) return NULL;  // the near side stopped early
            fl_cpu_relax();
        }
        __atomic_store_n(&p->word, 2 * i + 2, __ATOMIC_RELEASE);
    }
    return NULL;
}

// The near side: times the rounds once the far thread is pinned; -1 if a CPU could not be
// pinned (it still plays the rounds, so the far thread finishes).
static double fl_ping_near_rounds(struct fl_ping *p, int pinned) {
    int far;
    while ((far = __atomic_load_n(&p->far_state, __ATOMIC_ACQUIRE)) == 0) fl_cpu_relax();
    if (far < 0) return -1;
    // At most 20 ms: under a tool that runs one thread at a time (valgrind) every hand-off
    // waits for a thread switch, and the rounds would take minutes.
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    long done = 0;
    double ns = 0;
    for (long i = 0; i < p->rounds; i++) {
        __atomic_store_n(&p->word, 2 * i + 1, __ATOMIC_RELEASE);
        while (__atomic_load_n(&p->word, __ATOMIC_ACQUIRE) != 2 * i + 2) fl_cpu_relax();
        done = i + 1;
        if ((done & 255) == 0 || done == p->rounds) {
            clock_gettime(CLOCK_MONOTONIC, &b);
            ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
            if (ns > 20e6 && done < p->rounds) { __atomic_store_n(&p->word, -1, __ATOMIC_RELEASE); break; }
        }
    }
    if (!pinned || done <= 0) return -1;
    return ns / done;
}

static void *fl_ping_near(void *arg) {
    struct fl_ping *p = arg;
    int pinned = fl_pin_to_cpu(p->near_cpu) == 0;
    p->ns = fl_ping_near_rounds(p, pinned);
    return NULL;
}

double fl_cpu_round_trip_ns(int cpu_a, int cpu_b, int rounds) {
    struct fl_ping *p = aligned_alloc(64, sizeof(struct fl_ping));
    if (!p) return -1;
    memset(p, 0, sizeof(struct fl_ping));
    p->near_cpu = cpu_a;
    p->far_cpu = cpu_b;
    p->rounds = rounds;
    pthread_t far, near;
    if (pthread_create(&far, NULL, fl_ping_far, p) != 0) { free(p); return -1; }
    double ns;
    if (pthread_create(&near, NULL, fl_ping_near, p) != 0) {
        // Play the near side here, unpinned, so the far thread finishes; no measurement.
        (void)fl_ping_near_rounds(p, 0);
        ns = -1;
    } else {
        pthread_join(near, NULL);
        ns = p->ns;
    }
    pthread_join(far, NULL);
    free(p);
    return ns;
}

// ---- futex -------------------------------------------------------------------

int fl_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000ll;
        ts.tv_nsec = timeout_ns % 1000000000ll;
        tsp = &ts;
    }
    long r = syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, tsp, NULL, 0);
    return r == 0 ? 0 : errno;
}

int fl_futex_wake(uint32_t *addr, int n) {
    long r = syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
    return r < 0 ? 0 : (int)r;
}

// ---- membarrier ------------------------------------------------------------

int fl_membarrier_register(void) {
    long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (q < 0 || !(q & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) return -1;
    return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 ? 0 : -1;
}

int fl_membarrier(void) {
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return 0;
    int err = errno;
    // Readers that skip their fence rely on this barrier reaching them: when the expedited
    // command fails, the global one (no registration; waits for a scheduler pass on every
    // CPU) still orders every thread, and failing that, changing a page's protection makes
    // the kernel interrupt every CPU running this mm for a TLB flush (the mprotect fallback
    // user-space RCU used before membarrier existed).
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) == 0) return 0;
    static char *shared_page;
    char *page = __atomic_load_n(&shared_page, __ATOMIC_ACQUIRE);
    if (!page) {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return err;
        char *expected = NULL;
        if (__atomic_compare_exchange_n(&shared_page, &expected, (char *)p, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            page = p;
        } else {
            munmap(p, 4096);
            page = expected;
        }
    }
    *(volatile char *)page = 1;
    if (mprotect(page, 4096, PROT_READ) != 0) return err;
    if (mprotect(page, 4096, PROT_READ | PROT_WRITE) != 0) return err;
    return 0;
}

void fl_yield(void) { sched_yield(); }

void fl_sleep_ns(uint64_t ns) {
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull), .tv_nsec = (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

uint64_t fl_commit_limit_pages(void) {
    struct sysinfo si;
    if (sysinfo(&si) != 0) return UINT64_MAX;
    return ((uint64_t)si.totalram + (uint64_t)si.totalswap) * (uint64_t)si.mem_unit / 4096;
}

uint64_t fl_stack_limit(void) {
    struct rlimit r;
    if (getrlimit(RLIMIT_STACK, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return UINT64_MAX;
    return (uint64_t)r.rlim_cur;
}

uint64_t fl_memlock_limit(void) {
    struct rlimit r;
    if (getrlimit(RLIMIT_MEMLOCK, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return UINT64_MAX;
    return (uint64_t)r.rlim_cur;
}

int fl_cap_ipc_lock(void) {
    // /proc/self/status CapEff, bit 14 (CAP_IPC_LOCK): no libcap needed.
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long eff = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "CapEff:", 7)) { eff = strtoull(line + 7, NULL, 16); break; }
    }
    fclose(f);
    return (eff >> 14) & 1;
}

int fl_cpu_has_ospke(void) {
#if defined(__x86_64__)
    unsigned int a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (c >> 4) & 1;
#else
    return 0;
#endif
}

int64_t fl_syscall6(int64_t number, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5) {
    long r = syscall(number, a0, a1, a2, a3, a4, a5);
    // The memory calls return addresses below TASK_SIZE or 0: -1 is only ever a failure.
    return r == -1 ? -(int64_t)errno : (int64_t)r;
}

const char *fl_errno_name(int e) { return strerrorname_np(e); }

const char *fl_errno_text(int e) { return strerror(e); }

#include <sys/syscall.h>
static __thread unsigned long kernel_entries;
long fl_kernel_entry(void) { kernel_entries++; return syscall(SYS_getppid); }
unsigned long fl_kernel_entries(void) { return kernel_entries; }

/* The vsyscall page's time(): in the kernel's default execute-only mode (vsyscall=xonly) the
 * page is not mapped for user execution, so a call to it raises a page-fault exception, which
 * do_user_addr_fault() hands to emulate_vsyscall() after the fault's entry and preamble and
 * before any memory-management work: a page-fault exception's entry and exit, nothing else. */
#define FL_VSYSCALL_TIME 0xffffffffff600400UL

int fl_exception_entry_available(void) {
#if !defined(__x86_64__)
    return 0;
#endif
    static int known = -1;
    int k = __atomic_load_n(&known, __ATOMIC_ACQUIRE);
    if (k >= 0) return k;
    int found = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            /* Execute-only ("--xp"): calling it faults. A readable page ("r-xp", the legacy
             * emulate mode) would run as ordinary code, and none means no page at all. */
            if (strstr(line, "[vsyscall]") && strncmp(line, "ffffffffff600000-ffffffffff601000 --xp", 38) == 0) found = 1;
        }
        fclose(f);
    }
    __atomic_store_n(&known, found, __ATOMIC_RELEASE);
    return found;
}

long fl_exception_entry(void) {
    kernel_entries++;
    return ((long (*)(long *))FL_VSYSCALL_TIME)(NULL);
}

double fl_exception_entry_ns(int n) {
    if (!fl_exception_entry_available()) return -1;
    uint64_t t0 = fl_now_ns();
    for (int i = 0; i < n; i++) ((long (*)(long *))FL_VSYSCALL_TIME)(NULL);
    return (double)(fl_now_ns() - t0) / (n > 0 ? n : 1);
}

#include <linux/perf_event.h>

int fl_page_fault_events_open(void) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.size = sizeof attr;
    attr.config = PERF_COUNT_SW_PAGE_FAULTS;
    attr.exclude_hv = 1;
    long fd = syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
    return fd < 0 ? -errno : (int)fd;
}

int64_t fl_counter_read(int fd) {
    uint64_t v = 0;
    if (read(fd, &v, sizeof v) != (ssize_t)sizeof v) return -1;
    return (int64_t)v;
}

double fl_kernel_entry_ns(int n) {
    uint64_t t0 = fl_now_ns();
    for (int i = 0; i < n; i++) syscall(SYS_getppid);
    return (double)(fl_now_ns() - t0) / (n > 0 ? n : 1);
}

double fl_zero_page_fault_ns(int pages) {
    size_t len = (size_t)pages * 4096;
    volatile char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -1;
    madvise((void *)p, len, MADV_NOHUGEPAGE);
    char sink = 0;
    uint64_t t0 = fl_now_ns();
    for (int i = 0; i < pages; i++) sink ^= p[(size_t)i * 4096];
    uint64_t t1 = fl_now_ns();
    (void)sink;
    munmap((void *)p, len);
    return (double)(t1 - t0) / (pages > 0 ? pages : 1);
}
