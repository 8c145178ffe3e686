// faultline-host: runs memory-management system calls and memory accesses on the host
// kernel for the differential tester. It walls off all free address space outside a fixed
// window with PROT_NONE plugs (leaving room after the heap for brk), so that wherever the
// kernel's top-down search starts, a mapping whose address it chooses lands in the window.
// It reports its layout, then reads one command per line from stdin ("syscall NR ARGS…",
// "load"/"store", "pmq" (a PROCMAP_QUERY ioctl on /proc/self/maps), "fork", and
// "parent"/"child", which hand the sequence to another process of the sequence) and answers
// with the
// result (or the signal a load or store raised), the maps lines that intersect the window
// or the heap area, each window VMA's pagemap entries and smaps Rss/Anonymous/LazyFree/Locked/Swap, and the
// pagemap entries of the heap above its initial break.
//
// No malloc after start-up: every buffer is static, so the helper's own allocations never
// change the layout under test.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define WINDOW_START 0x600000000000ULL
#define WINDOW_SIZE (64ULL << 30)
#define BRK_ROOM (64ULL << 20)
#define TASK_SIZE ((1ULL << 47) - 4096)
#define MAX_FILES 8
#define SYS_MSEAL 462

static char outbuf[1 << 16];
static char mapsbuf[4 << 20];
static char line[4096];
static unsigned long long plug_start[256], plug_end[256];
static int nplugs;
static unsigned long long pagemap_buf[1 << 16];
static char pages_line[(1 << 17) + 64];
// The lowest heap page the helper itself never touched: pages from here up are compared.
static unsigned long long heap_cmp;
// Never touched: MADV_PAGEOUT on it only drains this CPU's LRU batches (lru_add_drain()).
static char drain_page[4096] __attribute__((aligned(4096)));

// Processes after fork: each waits on its own resume pipe while another one runs the
// sequence ("parent" and "child" hand it over); the descriptors sit at PIPE_FDS and up so the
// numbers the calls name (3 + file, and the closed ones after) stay as they were.
#define PIPE_FDS 900
static int next_pipe_fd = PIPE_FDS;
static int resume_fd = -1, self_wake = -1, parent_wake = -1, child_wake = -1;
// The processes this one forked, and the pipes that wake them.
static pid_t kids[8];
static int kid_wake[8], nkids;

static int high_fd(int fd) {
    int h = fcntl(fd, F_DUPFD, next_pipe_fd);
    close(fd);
    next_pipe_fd = h + 1;
    return h;
}

static int make_pipe(int *rd, int *wr) {
    int p[2];
    if (pipe(p) != 0) return -errno;
    *rd = high_fd(p[0]);
    *wr = high_fd(p[1]);
    return 0;
}

// The end of a sequence: the word "q" goes to every neighbour in the process tree, and each
// process waits for the ones it forked before it exits, so the first helper (the one the
// tester waits for) goes last and nothing is left unreaped. SIGPIPE is ignored: a neighbour
// may be gone already.
static void quit_all(void) {
    fflush(stdout);
    for (int i = 0; i < nkids; i++) (void)!write(kid_wake[i], "q", 1);
    if (parent_wake >= 0) (void)!write(parent_wake, "q", 1);
    for (int i = 0; i < nkids; i++) waitpid(kids[i], NULL, 0);
    _exit(0);
}

// Blocks until another process hands the sequence back ("x") or the sequence ends ("q").
static void wait_resumed(void) {
    fflush(stdout);
    char c = 0;
    ssize_t n;
    while ((n = read(resume_fd, &c, 1)) < 0 && errno == EINTR) {}
    if (n != 1 || c != 'x') quit_all();
}

// A load or store that faults jumps back here with the signal and its si_code.
static sigjmp_buf access_env;
static volatile sig_atomic_t access_signo, access_code;

static void on_fault(int signo, siginfo_t *info, void *ctx) {
    (void)ctx;
    access_signo = signo;
    access_code = info->si_code;
    siglongjmp(access_env, 1);
}

static size_t read_proc(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, mapsbuf + n, sizeof(mapsbuf) - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    mapsbuf[n] = 0;
    return n;
}

static size_t read_maps(void) { return read_proc("/proc/self/maps"); }

// Prints "anon START" for every VMA with anonymous pages (it has an anon_vma).
static void print_anon(void) {
    read_proc("/proc/self/smaps");
    char *p = mapsbuf;
    unsigned long long cur = 0;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')) {
            if (strchr(p, '-') && strchr(p, ' ') > strchr(p, '-')) cur = strtoull(p, NULL, 16);
        }
        if (!strncmp(p, "Anonymous:", 10) && strtoull(p + 10, NULL, 10) > 0) printf("anon %llu\n", cur);
        if (!nl) break;
        p = nl + 1;
    }
}

static unsigned long long start_brk(void) {
    // /proc/self/stat field 47 is start_brk.
    static char st[4096];
    int fd = open("/proc/self/stat", O_RDONLY);
    if (fd < 0) return 0;
    ssize_t r = read(fd, st, sizeof(st) - 1);
    close(fd);
    if (r <= 0) return 0;
    st[r] = 0;
    char *p = strrchr(st, ')');
    if (!p) return 0;
    int field = 2;
    for (; *p; p++) {
        if (*p == ' ') {
            field++;
            if (field == 47) return strtoull(p + 1, NULL, 10);
        }
    }
    return 0;
}

// Prints the maps lines intersecting [lo, hi) or [hlo, hhi) and keeps up to `max` of their
// ranges in vs/ve; returns how many it kept.
static int print_maps_lines(unsigned long long lo, unsigned long long hi, unsigned long long hlo, unsigned long long hhi,
                            unsigned long long *vs, unsigned long long *ve, int max) {
    read_maps();
    int n = 0;
    char *p = mapsbuf;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        unsigned long long s = strtoull(p, NULL, 16);
        char *dash = strchr(p, '-');
        unsigned long long e = dash ? strtoull(dash + 1, NULL, 16) : 0;
        if ((s < hi && e > lo) || (s < hhi && e > hlo)) {
            printf("map %s\n", p);
            if (n < max) { vs[n] = s; ve[n] = e; n++; }
        }
        if (!nl) break;
        p = nl + 1;
    }
    return n;
}

// Prints the maps lines intersecting [lo, hi) or [hlo, hhi), then "end".
static void print_maps(unsigned long long lo, unsigned long long hi, unsigned long long hlo, unsigned long long hhi) {
    print_maps_lines(lo, hi, hlo, hhi, NULL, NULL, 0);
    printf("end\n");
    fflush(stdout);
}

// "pages START HEX": the pagemap entries of [s, e), two hex digits per page: the top byte
// (present 0x80, swapped 0x40, file/shmem 0x20, guard region 0x04, uffd-wp 0x02, mapped
// exclusively 0x01; soft-dirty, bit 55, and the PFN are left out).
static void print_pages(int pm, unsigned long long s, unsigned long long e) {
    static const char hex[] = "0123456789abcdef";
    while (s < e) {
        unsigned long long n = (e - s) / 4096;
        if (n > sizeof(pagemap_buf) / 8) n = sizeof(pagemap_buf) / 8;
        ssize_t r = pread(pm, pagemap_buf, n * 8, (off_t)(s / 4096 * 8));
        if (r != (ssize_t)(n * 8)) { printf("pages %llu error\n", s); return; }
        char *o = pages_line;
        for (unsigned long long i = 0; i < n; i++) {
            unsigned b = (unsigned)(pagemap_buf[i] >> 56) & 0xe7;
            *o++ = hex[b >> 4];
            *o++ = hex[b & 15];
        }
        *o = 0;
        printf("pages %llu %s\n", s, pages_line);
        s += n * 4096;
    }
}

// After every command: the maps lines intersecting the window or the heap area, the
// pagemap of each window VMA and of the heap above heap_cmp, each window VMA's smaps Rss,
// Anonymous, LazyFree, Locked, Swap and AnonHugePages in kB, then "end".
static void print_state(unsigned long long hlo, unsigned long long hhi) {
    const unsigned long long lo = WINDOW_START, hi = WINDOW_START + WINDOW_SIZE;
    static unsigned long long vs[4096], ve[4096];
    int n = print_maps_lines(lo, hi, hlo, hhi, vs, ve, 4096);
    int pm = open("/proc/self/pagemap", O_RDONLY);
    for (int i = 0; i < n && pm >= 0; i++) {
        // Pages only inside the window: a wall merged into a window VMA spans terabytes.
        if (vs[i] < hi && ve[i] > lo) print_pages(pm, vs[i] > lo ? vs[i] : lo, ve[i] < hi ? ve[i] : hi);
        // Heap-area VMAs only inside the heap area: a wall merged into one spans terabytes.
        else if (ve[i] > heap_cmp && vs[i] < hhi) print_pages(pm, vs[i] > heap_cmp ? vs[i] : heap_cmp, ve[i] < hhi ? ve[i] : hhi);
    }
    if (pm >= 0) close(pm);
    // MADV_FREE clears a page's swap-backed bit (smaps LazyFree) only when its per-CPU batch
    // (lru_lazyfree) drains, at 31 folios or at lru_add_drain(); the model has no batches, so
    // drain ours (the helper stays on one CPU) before reading what the model shows drained.
    madvise(drain_page, sizeof drain_page, MADV_PAGEOUT);
    read_proc("/proc/self/smaps");
    char *p = mapsbuf;
    unsigned long long cur = 0, rss = 0, anon = 0, lazy = 0, swap = 0, ahp = 0;
    int in_window = 0;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')) {
            char *dash = strchr(p, '-');
            if (dash && strchr(p, ' ') > dash) {
                cur = strtoull(p, NULL, 16);
                in_window = cur >= lo && cur < hi;
            }
        }
        if (in_window && !strncmp(p, "Rss:", 4)) rss = strtoull(p + 4, NULL, 10);
        if (in_window && !strncmp(p, "Anonymous:", 10)) anon = strtoull(p + 10, NULL, 10);
        if (in_window && !strncmp(p, "LazyFree:", 9)) lazy = strtoull(p + 9, NULL, 10);
        if (in_window && !strncmp(p, "AnonHugePages:", 14)) ahp = strtoull(p + 14, NULL, 10);
        if (in_window && !strncmp(p, "Swap:", 5)) swap = strtoull(p + 5, NULL, 10);
        if (in_window && !strncmp(p, "Locked:", 7)) printf("smaps %llu %llu %llu %llu %llu %llu %llu\n", cur, rss, anon, lazy, strtoull(p + 7, NULL, 10), swap, ahp);
        if (!nl) break;
        p = nl + 1;
    }
    printf("end\n");
    fflush(stdout);
}

// "load ADDR" / "store ADDR VALUE": one byte, through the MMU. A fault that the kernel
// turns into a signal is caught and reported as "signal SIGNO CODE".
// struct procmap_query (Linux 6.11, include/uapi/linux/fs.h), defined here: the C library's
// headers on this machine predate it.
struct procmap_query {
    uint64_t size, query_flags, query_addr, vma_start, vma_end, vma_flags, vma_page_size, vma_offset, inode;
    uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
    uint64_t vma_name_addr, build_id_addr;
};
#define PROCMAP_QUERY _IOWR('f', 17, struct procmap_query)

// "pmq ADDR FLAGS SIZE NAMESIZE": one PROCMAP_QUERY on a descriptor of /proc/self/maps opened
// for it (and closed, so descriptor numbers stay as the calls expect). The struct is zeroed
// up to a page (bytes past the kernel's struct must be zero), with a name buffer of NAMESIZE
// bytes. Answers "result -ERRNO" or
// "result 0 START END FLAGS PAGESIZE OFFSET NAMESIZE [NAME]".
static union { struct procmap_query q; char page[4096]; } pmq_arg;
static char pmq_name[4096];

static void do_procmap_query(char *args) {
    unsigned long long addr = 0, flags = 0, size = 0;
    unsigned namesz = 0;
    if (sscanf(args, "%llu %llu %llu %u", &addr, &flags, &size, &namesz) != 4) {
        printf("error pmq %s\n", args);
        return;
    }
    memset(&pmq_arg, 0, sizeof pmq_arg);
    pmq_arg.q.size = size;
    pmq_arg.q.query_flags = flags;
    pmq_arg.q.query_addr = addr;
    if (namesz > sizeof pmq_name) namesz = sizeof pmq_name;
    pmq_arg.q.vma_name_size = namesz;
    pmq_arg.q.vma_name_addr = namesz ? (uint64_t)(uintptr_t)pmq_name : 0;
    memset(pmq_name, 0, sizeof pmq_name);
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        printf("error open maps %d\n", errno);
        return;
    }
    int r = ioctl(fd, PROCMAP_QUERY, &pmq_arg);
    int e = errno;
    close(fd);
    if (r < 0) {
        printf("result %d\n", -e);
        return;
    }
    struct procmap_query *q = &pmq_arg.q;
    printf("result 0 %llu %llu %llu %llu %llu %u%s%s\n", (unsigned long long)q->vma_start, (unsigned long long)q->vma_end,
           (unsigned long long)q->vma_flags, (unsigned long long)q->vma_page_size, (unsigned long long)q->vma_offset,
           q->vma_name_size, q->vma_name_size ? " " : "", q->vma_name_size ? pmq_name : "");
}

static void do_access(int store, char *args) {
    char *end = NULL;
    volatile unsigned char *a = (volatile unsigned char *)(uintptr_t)strtoull(args, &end, 0);
    unsigned v = end ? (unsigned)strtoul(end, NULL, 0) : 0;
    if (sigsetjmp(access_env, 1)) {
        printf("signal %d %d\n", (int)access_signo, (int)access_code);
        return;
    }
    if (store) { *a = (unsigned char)v; printf("result 0\n"); }
    else { unsigned char b = *a; printf("result %u\n", b); }
}

static void plug_gaps(void) {
    // Collect the layout first (the plugs themselves change it).
    read_maps();
    static unsigned long long vs[4096], ve[4096];
    int n = 0;
    char *p = mapsbuf;
    while (*p && n < 4096) {
        char *nl = strchr(p, '\n');
        vs[n] = strtoull(p, NULL, 16);
        char *dash = strchr(p, '-');
        ve[n] = dash ? strtoull(dash + 1, NULL, 16) : 0;
        if (vs[n] < TASK_SIZE) n++;
        if (!nl) break;
        p = nl + 1;
    }
    unsigned long long brk_end = ((unsigned long long)sbrk(0) + 4095) & ~4095ULL;
    unsigned long long cursor = 0x10000;
    for (int i = 0; i <= n; i++) {
        unsigned long long gap_end = i < n ? vs[i] : TASK_SIZE;
        unsigned long long a = cursor;
        while (a < gap_end) {
            unsigned long long b = gap_end;
            // Leave the window and the room after the heap free.
            if (a < WINDOW_START + WINDOW_SIZE && b > WINDOW_START) {
                if (a < WINDOW_START) b = WINDOW_START;
                else { a = WINDOW_START + WINDOW_SIZE; continue; }
            }
            if (a < brk_end + BRK_ROOM && b > brk_end) {
                if (a < brk_end) b = brk_end;
                else { a = brk_end + BRK_ROOM; continue; }
            }
            if (b > a && nplugs < 256) {
                void *r = mmap((void *)a, b - a, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
                if (r != MAP_FAILED) {
                    plug_start[nplugs] = a;
                    plug_end[nplugs] = b;
                    nplugs++;
                }
            }
            a = b;
        }
        if (i < n && ve[i] > cursor) cursor = ve[i];
    }
}

// "syscall NR A0 ... A5": a raw system call, as MemoryCall.registers encodes it. Only the
// memory calls the differential tester speaks are allowed.
static long do_call(const char *cmd, char *args) {
    if (strcmp(cmd, "syscall")) return -100000;
    unsigned long long a[7] = {0};
    int k = 0;
    char *save = NULL;
    for (char *t = strtok_r(args, " ", &save); t && k < 7; t = strtok_r(NULL, " ", &save)) a[k++] = strtoull(t, NULL, 0);
    switch ((long)a[0]) {
    case SYS_mmap: case SYS_mprotect: case SYS_munmap: case SYS_brk: case SYS_mremap: case SYS_madvise: case SYS_MSEAL:
    case SYS_ftruncate: case SYS_mlock: case SYS_munlock: case SYS_mlockall: case SYS_munlockall: case SYS_mlock2: break;
    default: return -ENOSYS;
    }
    errno = 0;
    long r = syscall((long)a[0], a[1], a[2], a[3], a[4], a[5], a[6]);
    // These calls return addresses below TASK_SIZE or 0: -1 is only ever a failure.
    return r == -1 ? -errno : r;
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--norandom") != 0) {
        // Re-exec without address randomisation so runs are reproducible.
        personality(ADDR_NO_RANDOMIZE);
        char *args[] = {argv[0], "--norandom", NULL};
        execv("/proc/self/exe", args);
    }
    setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));
    // One CPU, so the LRU batches that print_state() drains are the ones its calls filled.
    int cpu = sched_getcpu();
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        sched_setaffinity(0, sizeof set, &set);
    }
    // Nothing inherited above stderr: file i is then opened as descriptor 3 + i, the numbers
    // the calls name, and every number after the last file is closed (EBADF).
    for (int fd = 3; fd < 1024; fd++) close(fd);
    // Files are created before the window is walled off (open() may allocate).
    int nfiles = 0;
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "ready", 5)) break;
        char path[1024];
        unsigned long long size;
        if (sscanf(line, "file %1023s %llu", path, &size) == 2 && nfiles < MAX_FILES) {
            int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
            if (fd != 3 + nfiles) { printf("error file %s opened as descriptor %d, not %d\n", path, fd, 3 + nfiles); fflush(stdout); return 2; }
            if (ftruncate(fd, (off_t)size) != 0) { printf("error file %s %d\n", path, errno); fflush(stdout); return 2; }
            static unsigned char chunk[4096];
            for (unsigned long long off = 0; off < size; off += sizeof chunk) {
                for (size_t j = 0; j < sizeof chunk; j++) chunk[j] = (unsigned char)((off + j) * 7 + (unsigned)nfiles);
                size_t len = size - off < sizeof chunk ? (size_t)(size - off) : sizeof chunk;
                if (pwrite(fd, chunk, len, (off_t)off) != (ssize_t)len) { printf("error write\n"); fflush(stdout); return 2; }
            }
            nfiles++;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (make_pipe(&resume_fd, &self_wake) != 0) { printf("error pipe %d\n", errno); fflush(stdout); return 2; }
    unsigned long long sb = start_brk();
    unsigned long long brk0 = (unsigned long long)sbrk(0);
    plug_gaps();
    // Layout report: the model mirrors all of it.
    read_maps();
    printf("start_brk %llu\nbrk %llu\nwindow %llu %llu\n", sb, brk0, WINDOW_START, WINDOW_SIZE);
    for (int i = 0; i < nplugs; i++) printf("plug %llu %llu\n", plug_start[i], plug_end[i]);
    char *p = mapsbuf;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        printf("layout %s\n", p);
        if (!nl) break;
        p = nl + 1;
    }
    print_anon();
    printf("end\n");
    fflush(stdout);

    unsigned long long heap_lo = sb, heap_hi = ((brk0 + 4095) & ~4095ULL) + BRK_ROOM;
    heap_cmp = (brk0 + 4095) & ~4095ULL;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        char *sp = strchr(line, ' ');
        char *args = sp ? sp + 1 : line + strlen(line);
        if (sp) *sp = 0;
        if (!strcmp(line, "exit")) break;
        if (!strcmp(line, "fork")) {
            int rd, wr, e = make_pipe(&rd, &wr);
            if (e != 0 || nkids == 8) { printf("error pipe %d\n", -e); fflush(stdout); quit_all(); }
            fflush(stdout);
            pid_t pid = fork();
            if (pid < 0) { printf("result %d\n", -errno); print_state(heap_lo, heap_hi); continue; }
            if (pid > 0) {
                // The parent steps aside until the sequence is handed back to it.
                close(rd);
                child_wake = wr;
                kids[nkids] = pid;
                kid_wake[nkids++] = wr;
                wait_resumed();
                printf("result 0\n");
                print_state(heap_lo, heap_hi);
                continue;
            }
            parent_wake = self_wake;
            close(resume_fd);
            resume_fd = rd;
            self_wake = wr;
            child_wake = -1;
            nkids = 0;
            printf("result 0\n");
            print_state(heap_lo, heap_hi);
            continue;
        }
        if (!strcmp(line, "parent") || !strcmp(line, "child")) {
            // Hand the sequence to the process that forked this one, or to the last one this
            // one forked; it answers. ESRCH where there is none.
            int to = line[0] == 'p' ? parent_wake : child_wake;
            if (to < 0) { printf("result %d\n", -ESRCH); print_state(heap_lo, heap_hi); continue; }
            fflush(stdout);
            if (write(to, "x", 1) != 1) { printf("error wake %d\n", errno); fflush(stdout); quit_all(); }
            wait_resumed();
            printf("result 0\n");
            print_state(heap_lo, heap_hi);
            continue;
        }
        if (!strcmp(line, "maps")) {
            print_maps(0, TASK_SIZE, 0, 0);
            continue;
        }
        if (!strcmp(line, "pmq")) {
            do_procmap_query(args);
            print_state(heap_lo, heap_hi);
            continue;
        }
        if (!strcmp(line, "load") || !strcmp(line, "store")) {
            do_access(line[0] == 's', args);
            print_state(heap_lo, heap_hi);
            continue;
        }
        long r = do_call(line, args);
        printf("result %ld\n", r);
        print_state(heap_lo, heap_hi);
    }
    quit_all();
}
