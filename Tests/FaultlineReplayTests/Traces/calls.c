// Memory calls that succeed and fail in many ways, for faultline replay tests.
#define _GNU_SOURCE
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
static void *worker(void *arg) {
    for (int i = 0; i < 20; i++) {
        char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        p[0] = 1;
        madvise(p, 1 << 20, MADV_DONTNEED);
        munmap(p, 1 << 20);
    }
    return arg;
}
int main(void) {
    long pg = 4096;
    char *a = mmap(NULL, 16 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(a + 4 * pg, 4 * pg, PROT_READ);                  /* split */
    mprotect(a + 4 * pg, 4 * pg, PROT_READ | PROT_WRITE);     /* merge back */
    mmap(a, pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);  /* EEXIST */
    munmap(a + 1, pg);                                         /* EINVAL */
    mmap(NULL, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);  /* EINVAL */
    madvise(a, 16 * pg, 12345);                                 /* EINVAL */
    madvise(a, 16 * pg, MADV_POPULATE_WRITE);
    munmap(a + 8 * pg, 2 * pg);
    mprotect(a, 16 * pg, PROT_READ);                           /* ENOMEM: hole */
    madvise(a, 16 * pg, MADV_DONTNEED);                        /* ENOMEM: hole */
    char *b = mremap(a, 8 * pg, 32 * pg, MREMAP_MAYMOVE);
    b = mremap(b, 32 * pg, 4 * pg, 0);                         /* shrink */
    mremap(b, 4 * pg, 64 * pg, 0);                             /* ENOMEM without MAYMOVE? */
    mremap((void *)0x10000, pg, 2 * pg, MREMAP_MAYMOVE);       /* EFAULT */
    char *c = mremap(b, 4 * pg, 4 * pg, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
    (void)c;
    int fd = open("/etc/passwd", O_RDONLY);
    char *f = mmap(NULL, 3 * pg, PROT_READ, MAP_PRIVATE, fd, 0);
    madvise(f, pg, MADV_POPULATE_READ);
    mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);  /* EACCES */
    mmap(NULL, pg, PROT_READ, MAP_PRIVATE, fd, 1);              /* EINVAL: offset */
    close(fd);
    void *cur = sbrk(0);
    brk((char *)cur + 64 * pg);
    brk((char *)cur + 16 * pg);                                 /* shrink */
    mmap(NULL, 8 * pg, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    pid_t p = fork();
    if (p == 0) {
        munmap(b, 4 * pg);
        execl("/bin/true", "true", (char *)NULL);
        _exit(1);
    }
    waitpid(p, NULL, 0);
    printf("done\n");
    return 0;
}
