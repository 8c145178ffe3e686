// faultline-host: runs memory-management system calls on the host kernel for the
// differential tester. It walls off all free address space outside a fixed window with
// PROT_NONE plugs (leaving room after the heap for brk), so that wherever the kernel's
// top-down search starts, a mapping whose address it chooses lands in the window. It
// reports its layout, then reads one command per line from stdin and answers with the
// result and the maps lines that intersect the window or the heap area.
//
// No malloc after start-up: every buffer is static, so the helper's own allocations never
// change the layout under test.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

// Prints the maps lines intersecting [lo, hi) or [hlo, hhi), then "end".
static void print_maps(unsigned long long lo, unsigned long long hi, unsigned long long hlo, unsigned long long hhi) {
    read_maps();
    char *p = mapsbuf;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        unsigned long long s = strtoull(p, NULL, 16);
        char *dash = strchr(p, '-');
        unsigned long long e = dash ? strtoull(dash + 1, NULL, 16) : 0;
        if ((s < hi && e > lo) || (s < hhi && e > hlo)) printf("map %s\n", p);
        if (!nl) break;
        p = nl + 1;
    }
    printf("end\n");
    fflush(stdout);
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
    case SYS_mmap: case SYS_mprotect: case SYS_munmap: case SYS_brk: case SYS_mremap: case SYS_madvise: case SYS_MSEAL: break;
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
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        char *sp = strchr(line, ' ');
        char *args = sp ? sp + 1 : line + strlen(line);
        if (sp) *sp = 0;
        if (!strcmp(line, "exit")) break;
        if (!strcmp(line, "fork")) {
            fflush(stdout);
            pid_t pid = fork();
            if (pid < 0) { printf("result %d\n", -errno); print_maps(WINDOW_START, WINDOW_START + WINDOW_SIZE, heap_lo, heap_hi); continue; }
            if (pid > 0) {
                // The parent steps aside; the sequence goes on in the child.
                int status = 0;
                waitpid(pid, &status, 0);
                _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 3);
            }
            printf("result 0\n");
            print_maps(WINDOW_START, WINDOW_START + WINDOW_SIZE, heap_lo, heap_hi);
            continue;
        }
        if (!strcmp(line, "maps")) {
            print_maps(0, TASK_SIZE, 0, 0);
            continue;
        }
        long r = do_call(line, args);
        printf("result %ld\n", r);
        print_maps(WINDOW_START, WINDOW_START + WINDOW_SIZE, heap_lo, heap_hi);
    }
    return 0;
}
