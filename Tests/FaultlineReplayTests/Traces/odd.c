#define _GNU_SOURCE
#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
int main(void) {
    int z = open("/dev/zero", O_RDWR);
    char *a = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE, z, 0); a[0] = 1;
    char *b = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_SHARED, z, 0); b[0] = 1;
    int m = memfd_create("faultline", 0);
    ftruncate(m, 1 << 16);
    char *c = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0); c[0] = 1;
    mremap(c, 1 << 16, 1 << 17, MREMAP_MAYMOVE);
    mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int s = shm_open("/faultline-x", O_RDWR | O_CREAT, 0600); ftruncate(s, 8192);
    mmap(NULL, 8192, PROT_READ, MAP_SHARED, s, 0); shm_unlink("/faultline-x");
    mmap((void *)0x200000000, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); /* hint honoured */
    mmap((void *)0x200000000, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); /* hint taken: elsewhere */
    mmap(NULL, 1UL << 46, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    mmap(NULL, 1UL << 47, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0); /* ENOMEM */
    mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
    mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN, -1, 0);
    mlock(a, 4096);
    mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0);
    FILE *mf = fopen("/proc/self/maps", "r"); char ln[512]; while (fgets(ln, sizeof ln, mf)) fputs(ln, stdout);
    return 0;
}
