/*
 * The list-based range lock of Kogan, Dice and Issa (EuroSys 2020), reader/writer variant:
 * a lock-free list of held ranges sorted by start; acquire links its node with one CAS and
 * then validates (a writer backs off if an overlapping node precedes it; a reader waits for
 * overlapping writers after it); release sets the mark bit in the node's own next; walkers
 * unlink marked nodes (and may replace one with their own node in a single CAS).
 *
 * Properties: overlapping ranges exclude each other per mode (checked on every unit of the
 * address space in every state); every acquire terminates (no invalid end states). With
 * -DDISJOINT, three threads on disjoint ranges: none ever waits or backs off. -DWRITERS: two
 * overlapping writers and a reader.
 *
 * Models (Swift): Sources/FaultlineSync/ListRangeLock.swift — insert() (InsertNodeRW),
 * compare() (compareRW), writerValidate(), readerValidate(), skipReleased(), unlinkMarked(),
 * waitReleased(), release(), lock(). Nodes are never reused here (RCU in the Swift code
 * guarantees a walker never sees a recycled node).
 *
 * BROKEN: a writer skips its validation (w_validate).
 */

#define NNODES 10
#define UNITS 4

typedef Node {
    byte next;      /* index * 2, bit 0 = released; 0 = null */
    byte start;
    byte end;
    bit reader
}

Node nodes[NNODES];   /* nodes[0].next is the list head */
byte allocated = 1;
byte heldW[UNITS];
byte heldR[UNITS];

/* compare(cur, new): 255 new goes after cur, 1 before it, 0 conflict. */
inline compare(c, n, ord) {
    if
    :: nodes[n].start >= nodes[c].end -> ord = 255
    :: else ->
        if
        :: nodes[c].reader && nodes[n].reader && nodes[n].start >= nodes[c].start -> ord = 255
        :: else ->
            if
            :: nodes[c].start >= nodes[n].end -> ord = 1
            :: nodes[c].start < nodes[n].end && nodes[c].reader && nodes[n].reader && nodes[c].start >= nodes[n].start -> ord = 1
            :: else -> ord = 0
            fi
        fi
    fi
}

/* CAS on nodes[p].next: expected e, new value v; ok tells. */
inline cas(p, e, v, ok) {
    atomic {
        if
        :: nodes[p].next == e -> nodes[p].next = v; ok = true
        :: else -> ok = false
        fi
    }
}

inline enter(me) {
    atomic {
        u = nodes[me].start;
        do
        :: u < nodes[me].end ->
            if
            :: nodes[me].reader -> heldR[u]++; assert(heldW[u] == 0)
            :: else -> heldW[u]++; assert(heldW[u] == 1 && heldR[u] == 0)
            fi;
            u++
        :: else -> break
        od
    }
}

inline leave(me) {
    atomic {
        u = nodes[me].start;
        do
        :: u < nodes[me].end ->
            if
            :: nodes[me].reader -> heldR[u]--
            :: else -> heldW[u]--
            fi;
            u++
        :: else -> break
        od
    }
}

/* release(): one fetch-add sets the mark bit. */
inline release(me) {
    atomic { nodes[me].next = nodes[me].next | 1 }
}

proctype Locker(byte s; byte e; bit rd) {
    byte me, prev, curw, cur, after, aft, ord, u;
    bool ok, linked, held;
    held = false;
    do
    :: held -> break
    :: else ->
        atomic {
            assert(allocated < NNODES);
            me = allocated; allocated++;
            nodes[me].start = s; nodes[me].end = e; nodes[me].reader = rd; nodes[me].next = 0
        };
        /* insert() */
        linked = false;
        do
        :: linked -> break
        :: else ->
            prev = 0;
            curw = nodes[0].next;
            do
            :: linked -> break
            :: (curw & 1) -> break                      /* prev released under us: restart */
            :: else ->
                cur = curw / 2;
                if
                :: cur != 0 && (nodes[cur].next & 1) ->   /* a released node */
                    after = nodes[cur].next & 254;
                    aft = after / 2;
                    if
                    :: aft == 0 -> ord = 1
                    :: else -> compare(aft, me, ord)
                    fi;
                    if
                    :: ord == 1 ->                         /* replace it with our node */
                        nodes[me].next = after;
                        cas(prev, curw, me * 2, ok);
                        if
                        :: ok -> linked = true
                        :: else -> curw = nodes[prev].next
                        fi
                    :: else ->                             /* unlink it */
                        cas(prev, curw, after, ok);
                        if
                        :: ok -> curw = after
                        :: else -> curw = nodes[prev].next
                        fi
                    fi
                :: else ->
                    if
                    :: cur == 0 -> ord = 1
                    :: else -> compare(cur, me, ord)
                    fi;
                    if
                    :: ord == 255 -> prev = cur; curw = nodes[cur].next
                    :: ord == 0 ->
#ifdef DISJOINT
                        assert(false);                      /* disjoint ranges never wait */
#endif
                        (nodes[cur].next & 1);              /* waitReleased() */
                        curw = nodes[prev].next
                    :: ord == 1 ->
                        nodes[me].next = curw;
                        cas(prev, curw, me * 2, ok);
                        if
                        :: ok -> linked = true
                        :: else -> curw = nodes[prev].next
                        fi
                    fi
                fi
            od
        od;
        /* validation */
        if
        :: !rd ->
#ifdef BROKEN
            held = true
#else
            /* writerValidate(): walk from the head to our node */
            prev = 0;
            curw = nodes[0].next & 254;
            do
            :: curw == 0 || curw / 2 == me -> held = true; break
            :: else ->
                cur = curw / 2;
                if
                :: (nodes[cur].next & 1) ->                /* skipReleased() */
                    after = nodes[cur].next & 254;
                    cas(prev, curw, after, ok);
                    curw = after
                :: else ->
                    if
                    :: nodes[cur].end <= nodes[me].start -> prev = cur; curw = nodes[cur].next & 254
                    :: else ->
#ifdef DISJOINT
                        assert(false);                      /* disjoint ranges never back off */
#endif
                        release(me); break                  /* back off: retry */
                    fi
                fi
            od
#endif
        :: else ->
            /* readerValidate(): wait for overlapping writers after us */
            prev = me;
            curw = nodes[me].next & 254;
            do
            :: curw == 0 -> held = true; break
            :: else ->
                cur = curw / 2;
                if
                :: nodes[cur].start >= nodes[me].end -> held = true; break
                :: else ->
                    if
                    :: (nodes[cur].next & 1) ->
                        after = nodes[cur].next & 254;
                        cas(prev, curw, after, ok);
                        curw = after
                    :: else ->
                        if
                        :: nodes[cur].reader -> prev = cur; curw = nodes[cur].next & 254
                        :: else ->
#ifdef DISJOINT
                            assert(false);
#endif
                            (nodes[cur].next & 1);          /* waitReleased() */
                            curw = nodes[prev].next & 254
                        fi
                    fi
                fi
            od
        fi
    od;
    enter(me);
    leave(me);
    release(me)
}

init {
    atomic {
#ifdef DISJOINT
        run Locker(0, 1, 0);
        run Locker(1, 2, 0);
        run Locker(2, 4, 1)
#elif defined(WRITERS)
        /* Two overlapping writers and a reader inside both. */
        run Locker(0, 2, 0);
        run Locker(1, 3, 0);
        run Locker(1, 2, 1)
#else
        /* The race w_validate closes: a reader [1,2) holds; a writer [2,4) walks past it;
           a reader [0,3) links in front of it and validates before the writer's CAS. */
        run Locker(1, 2, 1);
        run Locker(0, 3, 1);
        run Locker(2, 4, 0)
#endif
    }
}
