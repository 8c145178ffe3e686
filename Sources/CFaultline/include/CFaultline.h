// C shim: the few things Glibc hides from Swift or that Swift cannot express.
// Everything hot is `static inline` so Swift's importer inlines it.
#ifndef CFAULTLINE_H
#define CFAULTLINE_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Upper bound on live threads that hold a Faultline thread index (per-thread slots are sized by it).
#define FL_MAX_THREADS 1024

/// `cpu_relax()`: the spin-wait hint (PAUSE on x86, YIELD on arm64).
static inline void fl_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/// `barrier()`: a compiler-only barrier; no instruction is emitted.
static inline void fl_compiler_barrier(void) { __asm__ __volatile__("" ::: "memory"); }

/// Keeps a value alive without the optimiser seeing a use it could delete (benchmark blackhole).
static inline void fl_blackhole_u64(uint64_t v) { __asm__ __volatile__("" : : "r"(v) : "memory"); }
static inline void fl_blackhole_ptr(const void *p) { __asm__ __volatile__("" : : "r"(p) : "memory"); }

/// `rdtsc()`: the time-stamp counter (0 where there is none).
static inline uint64_t fl_rdtsc(void) {
#if defined(__x86_64__)
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
#else
    return 0;
#endif
}

/// CLOCK_MONOTONIC in nanoseconds (vDSO; ~20 ns).
uint64_t fl_now_ns(void);

/// Thread index: a small dense integer per live thread, recycled at thread exit.
/// Per-thread slots (RCU readers, statistics) are indexed by it.
extern __thread int fl_tls_thread_index;
int fl_thread_index_slow(void);
static inline int fl_thread_index(void) {
    int i = fl_tls_thread_index;
    if (__builtin_expect(i >= 0, 1)) return i;
    return fl_thread_index_slow();
}
/// One past the highest thread index ever handed out (slots below it may be live).
int fl_thread_index_high_water(void);

/// One real round trip into the host kernel (`getppid`, a system call that does nothing):
/// what entering and leaving the kernel costs on this machine. Counted per thread.
long fl_kernel_entry(void);
/// Kernel entries `fl_kernel_entry` made on the calling thread.
unsigned long fl_kernel_entries(void);
/// Mean nanoseconds of `n` `fl_kernel_entry` round trips on this machine.
double fl_kernel_entry_ns(int n);
/// Whether `fl_exception_entry` can run here: the vsyscall page is mapped execute-only
/// (`vsyscall=xonly`, the default), so that calling it faults into the kernel's emulation.
int fl_exception_entry_available(void);
/// One real page-fault exception into the host kernel and back, with no memory-management
/// work: a call to the vsyscall page's `time()`, which the page-fault handler emulates.
/// Counted with `fl_kernel_entry`'s. Only where `fl_exception_entry_available()`.
long fl_exception_entry(void);
/// Mean nanoseconds of `n` `fl_exception_entry` round trips; -1 where unavailable.
double fl_exception_entry_ns(int n);
/// A counter of the calling thread's page-fault exceptions (`perf_event_open`,
/// PERF_COUNT_SW_PAGE_FAULTS): its fd, or -errno where perf events are not allowed.
int fl_page_fault_events_open(void);
/// A counter's value; -1 on failure.
int64_t fl_counter_read(int fd);
/// Mean nanoseconds of a read fault that maps the zero page (a fresh private anonymous
/// region of `pages` pages, no THP, one load per page): the page-fault exception's entry and
/// exit plus the least work a fault does. -1 if the region cannot be mapped.
double fl_zero_page_fault_ns(int pages);

/// Pins the calling thread to one CPU (`pthread_setaffinity_np`); 0 or an errno.
int fl_pin_to_cpu(int cpu);
/// Lets the calling thread run on every CPU the process started with (its affinity before
/// any thread pinned itself): for helper threads, which inherit their creator's pinning.
/// 0 or an errno.
int fl_unpin_to_process_cpus(void);
/// `sched_getcpu()`; -1 on error.
int fl_current_cpu(void);
/// Number of CPUs this process may run on (`sched_getaffinity`).
int fl_available_cpus(void);
/// Nanoseconds per round trip of one cache line between threads pinned to cpu_a and cpu_b
/// (`rounds` hand-offs each way, or as many as fit in 20 ms), or -1 if either CPU cannot be used.
double fl_cpu_round_trip_ns(int cpu_a, int cpu_b, int rounds);
/// `gettid()`.
int fl_gettid(void);

/// futex(FUTEX_WAIT_PRIVATE): sleeps while *addr == expected; timeout_ns < 0 means forever.
/// Returns 0 when woken (or spuriously), or an errno (EAGAIN, ETIMEDOUT, EINTR).
int fl_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns);
/// futex(FUTEX_WAKE_PRIVATE): wakes up to n sleepers on addr; returns how many.
int fl_futex_wake(uint32_t *addr, int n);

/// membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED); 0 on success.
int fl_membarrier_register(void);
/// membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED): a full barrier on every CPU running this process.
int fl_membarrier(void);

/// sched_yield().
void fl_yield(void);
/// Sleeps for ns nanoseconds.
void fl_sleep_ns(uint64_t ns);

/// totalram_pages() + total_swap_pages, in 4 KiB pages (sysinfo(2)); UINT64_MAX if unknown.
uint64_t fl_commit_limit_pages(void);
/// RLIMIT_STACK's soft limit in bytes (UINT64_MAX when unlimited).
uint64_t fl_stack_limit(void);
/// RLIMIT_MEMLOCK's soft limit in bytes (UINT64_MAX: unlimited).
uint64_t fl_memlock_limit(void);
/// Whether this process may lock memory beyond RLIMIT_MEMLOCK (CAP_IPC_LOCK in its effective set).
int fl_cap_ipc_lock(void);
/// CPUID.(EAX=7,ECX=0):ECX.OSPKE: the kernel enabled memory protection keys (x86 only; 0 elsewhere).
int fl_cpu_has_ospke(void);

/// A raw system call (no errno): the kernel's return register, -errno on failure.
int64_t fl_syscall6(int64_t number, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5);

/// `strerrorname_np(e)` ("ENOMEM"), or NULL for a number glibc does not name.
const char *fl_errno_name(int e);
/// `strerror(e)` ("Cannot allocate memory"), as strace prints it.
const char *fl_errno_text(int e);

#ifdef __cplusplus
}
#endif
#endif
