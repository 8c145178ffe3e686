// retain-census: which objects a Swift program retains and releases, and from where.
//
// A retain or release writes the object's header; when threads share the object, each one is
// a cache line moved between CPUs, contention the kernel the model stands for does not have.
// Interposes swift_retain/swift_release (and the _n forms) in a dynamically linked build
// (not --static-swift-stdlib), counts them per (object, type, kind, caller), and writes the
// 80 most frequent to $RC_OUT (default retain-census.txt) at exit.
//
//   gcc -O2 -shared -fPIC -o /tmp/retain-census.so tools/retain-census.c -ldl -lpthread
//   LD_PRELOAD=/tmp/retain-census.so RC_OUT=/tmp/rc.txt .build/release/faultline run
//       --design per-vma-6.15 --workload mmap1 --threads 1 --seconds 0.5 --json   (one line)
//   # callers: addr2line -f -C -e .build/release/faultline <offset>
//
// An object retained about once per operation whose type is shared by threads (the address
// space, the RCU domain, a slab, a range lock) is the thing to look for; array storage of
// the call's own and Swift.__EmptyArrayStorage (immortal: its release writes nothing) are not.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <stdatomic.h>
#include <pthread.h>
typedef void *(*rfn)(void *);
typedef void (*relfn)(void *);
typedef void *(*rnfn)(void *, uint32_t);
typedef void (*relnfn)(void *, uint32_t);
static rfn real_retain; static relfn real_release; static rnfn real_retain_n; static relnfn real_release_n;
#define N (1<<16)
struct ent { void *obj; void *caller; int kind; unsigned long n; void *md; };
static struct ent tab[N];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int enabled = 0;
static void rec(void *obj, void *caller, int kind, unsigned n) {
  if (!enabled || !obj) return;
  uintptr_t h = ((uintptr_t)obj * 31 + (uintptr_t)caller * 17 + kind) % N;
  pthread_mutex_lock(&mu);
  for (int i = 0; i < N; i++) { struct ent *e = &tab[(h + i) % N];
    if (e->n == 0) { e->obj = obj; e->caller = caller; e->kind = kind; e->n = n; e->md = *(void**)obj; break; }
    if (e->obj == obj && e->caller == caller && e->kind == kind) { e->n += n; break; } }
  pthread_mutex_unlock(&mu);
}
__attribute__((constructor)) static void init(void) {
  real_retain = (rfn)dlsym(RTLD_NEXT, "swift_retain");
  real_release = (relfn)dlsym(RTLD_NEXT, "swift_release");
  real_retain_n = (rnfn)dlsym(RTLD_NEXT, "swift_retain_n");
  real_release_n = (relnfn)dlsym(RTLD_NEXT, "swift_release_n");
  enabled = getenv("RC_OFF") ? 0 : 1;
}
static void ensure(void){ if(!real_retain){ real_retain = (rfn)dlsym(RTLD_NEXT, "swift_retain"); real_release = (relfn)dlsym(RTLD_NEXT, "swift_release"); real_retain_n = (rnfn)dlsym(RTLD_NEXT, "swift_retain_n"); real_release_n = (relnfn)dlsym(RTLD_NEXT, "swift_release_n");} }
void *swift_retain(void *o) { ensure(); rec(o, __builtin_return_address(0), 0, 1); return real_retain(o); }
void swift_release(void *o) { ensure(); rec(o, __builtin_return_address(0), 1, 1); real_release(o); }
void *swift_retain_n(void *o, uint32_t n) { ensure(); rec(o, __builtin_return_address(0), 0, n); return real_retain_n(o, n); }
void swift_release_n(void *o, uint32_t n) { ensure(); rec(o, __builtin_return_address(0), 1, n); real_release_n(o, n); }
typedef struct { const char *d; size_t l; } TN;
static int cmp(const void *a, const void *b) { const struct ent *x = a, *y = b; return x->n < y->n ? 1 : x->n > y->n ? -1 : 0; }
__attribute__((destructor)) static void fini(void) {
  enabled = 0;
  TN (*gtn)(void *, int) = (TN (*)(void *, int))dlsym(RTLD_DEFAULT, "swift_getTypeName");
  qsort(tab, N, sizeof tab[0], cmp);
  FILE *f = fopen(getenv("RC_OUT") ? getenv("RC_OUT") : "retain-census.txt", "w");
  for (int i = 0; i < 80 && tab[i].n; i++) {
    void *md = tab[i].md; TN t = {"?", 1}; uintptr_t k = md ? *(uintptr_t*)md : 0;
    if (gtn && md && (k == 0 || k > 0x7ff || k == 0x200 || k == 0x300)) t = gtn(md, 1); else if (md) { static char b[32]; snprintf(b, 32, "kind=0x%lx", k); t.d = b; t.l = strlen(b); }
    Dl_info di; const char *fn = "?"; uintptr_t off = 0;
    if (dladdr(tab[i].caller, &di)) { fn = di.dli_fname; off = (uintptr_t)tab[i].caller - (uintptr_t)di.dli_fbase; }
    fprintf(f, "%10lu %s obj=%p type=%.*s caller=%s+0x%lx\n", tab[i].n, tab[i].kind ? "rel" : "ret", tab[i].obj, (int)t.l, t.d, fn, off);
  }
  fclose(f);
}
