/*
 * spf-mmseq: Lespinasse's speculative page fault validated by the mm-wide sequence count
 * under the page-table lock, racing munmap. Property: once munmap has returned, no PTE is
 * present in the unmapped range (a fault never installs into it).
 *
 * Models (Swift):
 *   Sources/FaultlineMM/AddressSpace+Speculative.swift  faultSpeculativeMMSeq(), MMSeqValidator
 *   Sources/FaultlineMM/AddressSpace+Fault.swift        faultCore(): validate() under the PTL, then install
 *   Sources/FaultlineMM/AddressSpace+Syscalls.swift     munmap(): writeLock (mmSeq.writeBegin),
 *                                                       detachRange, writeDowngrade (mmSeq.writeEnd),
 *                                                       finishUnmap (zap under the PTL), unlockRead
 *   finishLockless() → faultUnderMmapLock(): the fallback under mmap_lock for read.
 *
 * BROKEN: the fault validates before it takes the PTL (the window the PTL closes).
 */

byte seq = 0;          /* mm->mm_seq */
bool mapped = true;    /* the VMA is in the tree */
bool pte = false;      /* the page's PTE */
bit ptl = 0;           /* the page-table lock */
byte readers = 0;      /* mmap_lock held for read */
bit writer = 0;        /* mmap_lock held for write */
bool unmapped = false; /* munmap has returned */

inline lock(l) { atomic { l == 0 -> l = 1 } }
inline unlock(l) { l = 0 }
inline readLock() { atomic { writer == 0 -> readers++ } }
inline readUnlock() { readers-- }

/* faultUnderMmapLock(): find the VMA under the read lock; install if it is there. */
inline lockedFault() {
    readLock();
    if
    :: mapped -> lock(ptl); pte = true; unlock(ptl)
    :: else -> skip    /* SIGSEGV */
    fi;
    readUnlock()
}

proctype Fault() {
    byte s;
    s = seq;                               /* mmSeq.rawRead() */
    if
    :: (s % 2) == 1 -> goto fallback       /* a writer is inside */
    :: else -> skip
    fi;
    if
    :: !mapped -> goto fallback            /* tree.lookup() under RCU */
    :: else -> skip
    fi;
    if
    :: seq != s -> goto fallback           /* readRetry() after the snapshot */
    :: else -> skip
    fi;
#ifdef BROKEN
    if
    :: seq != s -> goto fallback
    :: else -> skip
    fi;
    lock(ptl);
#else
    lock(ptl);
    if
    :: seq != s -> unlock(ptl); goto fallback   /* validate() under the PTL */
    :: else -> skip
    fi;
#endif
    pte = true;                            /* install */
    unlock(ptl);
    goto done;
fallback:
    lockedFault();
done:
    skip
}

proctype Munmap() {
    atomic { writer == 0 && readers == 0 -> writer = 1 };  /* mmap_write_lock */
    seq++;                                 /* mmSeq.writeBegin() */
    mapped = false;                        /* detachRange */
    seq++;                                 /* writeDowngrade: mmSeq.writeEnd() ... */
    atomic { writer = 0; readers++ };      /* ... and the read lock kept */
    lock(ptl);
    pte = false;                           /* zap */
    unlock(ptl);
    readUnlock();
    unmapped = true
}

/* The invariant, checked in every state. */
active proctype Monitor() {
end:    atomic { unmapped && pte -> assert(false) }
}

init {
    atomic {
        run Fault();
        run Fault();
        run Munmap()
    }
}
