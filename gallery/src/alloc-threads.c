/* An allocation-heavy multi-threaded program for the gallery: each thread builds and frees
 * lists of blocks of mixed sizes, so glibc's per-thread arenas grow, trim and mmap. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { THREADS = 4, ROUNDS = 6, BLOCKS = 2000 };

static void *worker(void *arg) {
    unsigned seed = (unsigned)(size_t)arg;
    long sum = 0;
    for (int r = 0; r < ROUNDS; r++) {
        void *blocks[BLOCKS];
        for (int i = 0; i < BLOCKS; i++) {
            seed = seed * 1103515245 + 12345;
            /* Mostly small, sometimes above the mmap threshold (128 KiB). */
            size_t n = (seed >> 16) % 100 == 0 ? 256 << 10 : 16 + (seed >> 16) % 2048;
            blocks[i] = malloc(n);
            memset(blocks[i], i, n);
            sum += ((char *)blocks[i])[n / 2];
        }
        for (int i = 0; i < BLOCKS; i++) free(blocks[i]);
    }
    return (void *)sum;
}

int main(void) {
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    long total = 0;
    for (int i = 0; i < THREADS; i++) { void *v; pthread_join(t[i], &v); total += (long)v; }
    printf("%ld\n", total);
    return 0;
}
