/* The translation unit gcc compiles in the gallery's gcc-compile trace. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node { struct node *next; char pad[48]; };

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    struct node *h = 0;
    for (int i = 0; i < n; i++) {
        struct node *x = malloc(sizeof *x);
        memset(x->pad, i, sizeof x->pad);
        x->next = h;
        h = x;
    }
    long s = 0;
    for (struct node *x = h; x; x = x->next) s += x->pad[0];
    printf("%ld\n", s);
    return 0;
}
