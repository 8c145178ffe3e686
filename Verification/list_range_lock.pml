/*
 * The list-based range lock of Kogan, Dice and Issa (EuroSys 2020), reader/writer variant,
 * with Faultline's node parking: a lock-free list of ranges sorted by start; acquire links its
 * node with one CAS and then validates (a writer backs off if an overlapping held node precedes
 * it; a reader waits for overlapping held writers after it). Release either deletes the node
 * (sets bit 0 of its next, as in the paper) or parks it (state held -> free, in a new
 * generation); which one is chosen nondeterministically here (the Swift code parks when the
 * thread re-unlocks the range it unlocked last). The owner's next lock of the same range and
 * mode revives a parked node (CAS of the parked word -> held) and validates again. A request
 * that conflicts with a parked node kills it (CAS free -> held in a new generation, so the
 * revive's CAS fails) and marks it deleted; walkers unlink deleted nodes (and may replace one
 * with their own node in a single CAS).
 *
 * Each Locker takes range A, then A again (a revive), then range B (its parked A is killed
 * by its own conflicting request or when B is parked), holding each once.
 *
 * Properties: overlapping ranges exclude each other per mode (checked on every unit of the
 * address space in every state); every acquire terminates (no invalid end states). With
 * -DDISJOINT, disjoint ranges: nobody ever waits, backs off or kills. -DWRITERS: overlapping
 * writers and a reader.
 *
 * Models (Swift): Sources/FaultlineSync/ListRangeLock.swift — insert() (InsertNodeRW),
 * compare() (compareRW), writerValidate(), readerValidate(), settle(), skipDeleted(),
 * unlinkMarked(), waitReleased(), release(), parkHeld(), lock(); ListRangeLock+Parking.swift —
 * revive(), park(). Nodes are never reused here (in the Swift code RCU keeps a walker from
 * seeing a recycled node, and the generation in the state word keeps a stale parking slot
 * from reviving one).
 *
 * ALWAYS_PARK: every release parks (the choice is nondeterministic otherwise; the larger
 * configurations fix it to keep the state space within reach).
 *
 * BROKEN: a writer skips its validation (w_validate).
 * BROKEN_PARK: requests pass parked nodes they conflict with instead of killing them.
 */

#define NNODES 12
#define UNITS 4
#define FREE 0
#define HELD 1

typedef Node {
    byte next;      /* index * 2, bit 0 = deleted; 0 = null */
    byte start;
    byte end;
    bit reader;
    bit state;      /* HELD for every node that is not parked */
    byte gen        /* bumped on park and on kill */
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

/* markDeleted(): fetch-or of bit 0. */
inline markDeleted(c) {
    atomic { nodes[c].next = nodes[c].next | 1 }
}

/* settle(): about an unmarked node we conflict with. res: it is deleted now (a parked node
   is killed and marked); false: it is held. BROKEN_PARK: a parked node is passed live. */
inline settle(c, res) {
    pass = false;
    atomic {
        if
        :: nodes[c].state == HELD -> res = (nodes[c].next & 1); pass = true  /* marked: deleted */
        :: nodes[c].state == FREE ->
#ifdef BROKEN_PARK
            res = true; pass = true
#else
            nodes[c].state = HELD; nodes[c].gen++; res = true
#endif
        fi
    };
#ifdef DISJOINT
    assert(res);                                    /* disjoint: only our own parked node */
#endif
    if
    :: res && !pass -> markDeleted(c)
    :: else -> skip
    fi
}

/* The word after a node settle() let us pass: unlink it if deleted, else (BROKEN_PARK) step on. */
inline pastSettled(c) {
    if
    :: (nodes[c].next & 1) ->
        after = nodes[c].next & 254;
        cas(prev, curw, after, ok);
        if
        :: ok -> curw = after
        :: else -> curw = nodes[c].next & 254
        fi
    :: else -> prev = c; curw = nodes[c].next & 254
    fi
}

/* writerValidate() / readerValidate(); sets held, or leaves it false after releasing me. */
inline validate(me) {
    if
    :: !nodes[me].reader ->
#ifdef BROKEN
        held = true
#else
        prev = 0;
        curw = nodes[0].next & 254;
        do
        :: curw == 0 || curw / 2 == me -> held = true; break
        :: else ->
            cur = curw / 2;
            if
            :: (nodes[cur].next & 1) ->                 /* skipDeleted() */
                after = nodes[cur].next & 254;
                cas(prev, curw, after, ok);
                if
                :: ok -> curw = after
                :: else -> curw = nodes[cur].next & 254
                fi
            :: else ->
                if
                :: nodes[cur].end <= nodes[me].start -> prev = cur; curw = nodes[cur].next & 254
                :: else ->
                    settle(cur, res);
                    if
                    :: res -> pastSettled(cur)
                    :: else ->
#ifdef DISJOINT
                        assert(false);                   /* disjoint ranges never back off */
#endif
                        markDeleted(me); break           /* back off (release()): retry */
                    fi
                fi
            fi
        od
#endif
    :: else ->
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
                    if
                    :: ok -> curw = after
                    :: else -> curw = nodes[cur].next & 254
                    fi
                :: else ->
                    if
                    :: nodes[cur].reader -> prev = cur; curw = nodes[cur].next & 254
                    :: else ->
                        settle(cur, res);
                        if
                        :: res -> pastSettled(cur)
                        :: else ->
                            ((nodes[cur].next & 1) || nodes[cur].state != HELD);  /* waitReleased() */
                            curw = nodes[prev].next & 254
                        fi
                    fi
                fi
            fi
        od
    fi
}

/* insert(): link a fresh node me, then validate. */
inline insert(me) {
    linked = false;
    do
    :: linked -> break
    :: else ->
        prev = 0;
        curw = nodes[0].next;
        do
        :: linked -> break
        :: (curw & 1) -> break                          /* prev deleted under us: restart */
        :: else ->
            cur = curw / 2;
            if
            :: cur != 0 && (nodes[cur].next & 1) ->       /* a deleted node */
                after = nodes[cur].next & 254;
                aft = after / 2;
                if
                :: aft == 0 -> ord = 1
                :: else -> compare(aft, me, ord)
                fi;
                if
                :: ord == 1 ->                             /* replace it with our node */
                    nodes[me].next = after;
                    cas(prev, curw, me * 2, ok);
                    if
                    :: ok -> linked = true
                    :: else -> curw = nodes[prev].next
                    fi
                :: else ->                                 /* unlink it */
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
                    settle(cur, res);
                    if
                    :: res && (nodes[cur].next & 1) -> skip /* deleted: next turn unlinks it */
                    :: res && !(nodes[cur].next & 1) -> prev = cur; curw = nodes[cur].next  /* BROKEN_PARK */
                    :: else ->
                        ((nodes[cur].next & 1) || nodes[cur].state != HELD);  /* waitReleased() */
                        curw = nodes[prev].next
                    fi
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
    validate(me)
}

/* lock(): revive the parked node if it is for this range and mode, else insert fresh nodes
   until one holds. */
inline lock(s, e, rd) {
    held = false;
    if
    :: parked != 0 && nodes[parked].start == s && nodes[parked].end == e && nodes[parked].reader == rd ->
        me = parked;
        parked = 0;
        atomic {
            if
            :: nodes[me].state == FREE && nodes[me].gen == pgen -> nodes[me].state = HELD; ok = true
            :: else -> ok = false
            fi
        };
        if
        :: ok -> validate(me)
        :: else -> skip
        fi
    :: else -> skip
    fi;
    do
    :: held -> break
    :: else ->
        atomic {
            assert(allocated < NNODES);
            me = allocated; allocated++;
            nodes[me].start = s; nodes[me].end = e; nodes[me].reader = rd;
            nodes[me].next = 0; nodes[me].state = HELD; nodes[me].gen = 0
        };
        insert(me)
    od
}

/* unlock(): delete (release(): mark), or park(): kill the previously parked node if it is
   still parked in its generation, park ours in a new one. */
inline unlock(me) {
    if
#ifndef ALWAYS_PARK
    :: markDeleted(me)
#endif
    :: true ->
        if
        :: parked != 0 ->
            atomic {
                if
                :: nodes[parked].state == FREE && nodes[parked].gen == pgen ->
                    nodes[parked].state = HELD; nodes[parked].gen++; ok = true
                :: else -> ok = false
                fi
            };
            if
            :: ok -> markDeleted(parked)
            :: else -> skip
            fi;
            parked = 0
        :: else -> skip
        fi;
        atomic { nodes[me].gen++; nodes[me].state = FREE; pgen = nodes[me].gen };
        parked = me
    fi
}

/* Takes range A `ra` times (the second time by reviving its parked node), then range B
   `rb` times (a request of its own or the parking of B kills the parked A). */
proctype Locker(byte s; byte e; bit rd; byte ra; byte s2; byte e2; bit rd2; byte rb) {
    byte me, parked, pgen, prev, curw, cur, after, aft, ord, u;
    bool ok, linked, held, res, pass;
    parked = 0;
    do
    :: ra > 0 -> lock(s, e, rd); enter(me); leave(me); unlock(me); ra--
    :: else -> break
    od;
    do
    :: rb > 0 -> lock(s2, e2, rd2); enter(me); leave(me); unlock(me); rb--
    :: else -> break
    od
}

/* Rounds of range A and of range B per locker (configurations below set them). */
#ifndef A1
#define A1 2
#endif
#ifndef A2
#define A2 2
#endif
#ifndef A3
#define A3 2
#endif
#ifndef B1
#define B1 0
#endif
#ifndef B2
#define B2 0
#endif
#ifndef B3
#define B3 0
#endif

init {
    atomic {
#ifdef DISJOINT
        /* B overlaps the locker's own A in another mode: it kills its own parked node. */
        run Locker(0, 1, 0, A1, 0, 1, 1, B1);
        run Locker(1, 2, 0, A2, 1, 2, 1, B2);
        run Locker(2, 4, 1, A3, 3, 4, 0, B3)
#elif defined(WRITERS)
        /* Overlapping writers and a reader inside both; B: the reader writes, a writer reads. */
        run Locker(0, 2, 0, A1, 1, 3, 1, B1);
        run Locker(1, 3, 0, A2, 0, 1, 0, B2);
        run Locker(1, 2, 1, A3, 1, 2, 0, B3)
#else
        /* The race w_validate closes: a reader [1,2) holds; a writer [2,4) walks past it;
           a reader [0,3) links in front of it and validates before the writer's CAS. Then
           each re-locks (revives); B ranges overlap the others' parked nodes. */
        run Locker(1, 2, 1, A1, 0, 2, 0, B1);
        run Locker(0, 3, 1, A2, 2, 3, 0, B2);
        run Locker(2, 4, 0, A3, 1, 4, 1, B3)
#endif
    }
}
