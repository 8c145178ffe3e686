/*
 * Per-VMA locks (Linux 6.4): a fault read-locks the VMA found under RCU unless a writer
 * holding mmap_lock has marked it (vm_lock_seq == mm_lock_seq), checked before and after
 * the trylock, then checks that the VMA is still attached; on any failure it falls back to
 * mmap_lock. A writer marks every VMA it changes (vma_start_write: waits for readers), and
 * mmap_write_unlock / downgrade unlock them all at once by bumping mm_lock_seq.
 * Property: once munmap has returned, no PTE is present in the unmapped range; and mprotect's
 * change is never half seen (a fault under the VMA lock sees the old or the new protection,
 * and installs a writable PTE only if the VMA is writable when munmap/mprotect returned).
 *
 * Models (Swift):
 *   Sources/FaultlineMM/AddressSpace+PerVMA.swift   vmaStartRead(), lockVMAUnderRCU(), faultPerVMA()
 *   Sources/FaultlineMM/AddressSpace.swift          vmaStartWrite(), endVMAWrites(), vmaUnlink()
 *   Sources/FaultlineMM/AddressSpace+Syscalls.swift munmap(), mprotect() (withWriter), writeDowngrade()
 *
 * BROKEN: vma_start_read() does not re-check vm_lock_seq after its trylock (a writer that
 * marked the VMA and dropped the VMA lock in between goes unseen).
 */

byte mmLockSeq = 0;      /* mm->mm_lock_seq */
byte vmaLockSeq = 255;   /* vma->vm_lock_seq */
byte vmaReaders = 0;     /* vma->vm_lock, readers */
bit vmaWriter = 0;       /* vma->vm_lock, writer */
bool inTree = true;      /* found by the RCU lookup */
bool detached = false;   /* vma->detached */
bool writable = true;    /* VM_WRITE */
bool pte = false;        /* a PTE in the VMA's range */
bool pteWritable = false;
bit ptl = 0;
byte readers = 0;        /* mmap_lock */
bit writer = 0;
bool unmapped = false;   /* munmap has returned */
bool protected = false;  /* mprotect(PROT_READ) has returned */

inline lock(l) { atomic { l == 0 -> l = 1 } }
inline unlock(l) { l = 0 }

inline lockedFault() {
    atomic { writer == 0 -> readers++ };
    if
    :: !detached -> lock(ptl); pte = true; pteWritable = writable; unlock(ptl)
    :: else -> skip
    fi;
    readers--
}

proctype Fault() {
    if
    :: !inTree -> goto fallback                       /* tree.lookup() */
    :: else -> skip
    fi;
    if
    :: vmaLockSeq == mmLockSeq -> goto fallback       /* marked by a writer */
    :: else -> skip
    fi;
    atomic {                                          /* lock.tryLockRead() */
        if
        :: vmaWriter == 0 -> vmaReaders++
        :: else -> goto fallback
        fi
    };
#ifndef BROKEN
    if
    :: vmaLockSeq == mmLockSeq -> vmaReaders--; goto fallback
    :: else -> skip
    fi;
#endif
    if
    :: detached -> vmaReaders--; goto fallback
    :: else -> skip
    fi;
    lock(ptl);                                        /* faultCore under the VMA lock */
    pte = true;
    pteWritable = writable;
    unlock(ptl);
    vmaReaders--;                                     /* vma_end_read() */
    goto done;
fallback:
    lockedFault();
done:
    skip
}

/* vma_start_write(): mark the VMA, after its readers have left. */
inline vmaStartWrite() {
    if
    :: vmaLockSeq == mmLockSeq -> skip
    :: else ->
        atomic { vmaWriter == 0 && vmaReaders == 0 -> vmaWriter = 1 };
        vmaLockSeq = mmLockSeq;
        vmaWriter = 0
    fi
}

proctype Mprotect() {
    atomic { writer == 0 && readers == 0 -> writer = 1 };
    vmaStartWrite();
    writable = false;
    lock(ptl);
    pteWritable = false;                              /* change_protection() */
    unlock(ptl);
    mmLockSeq++;                                      /* mmap_write_unlock: vma_end_write_all */
    writer = 0;
    protected = true
}

proctype Munmap() {
    atomic { writer == 0 && readers == 0 -> writer = 1 };
    vmaStartWrite();
    inTree = false;                                   /* vmaUnlink */
    detached = true;
    mmLockSeq++;                                      /* writeDowngrade: endVMAWrites */
    atomic { writer = 0; readers++ };
    lock(ptl);
    pte = false;                                      /* zap */
    pteWritable = false;
    unlock(ptl);
    readers--;
    unmapped = true
}

active proctype Monitor() {
end:    atomic { (unmapped && pte) || (protected && !unmapped && pteWritable) -> assert(false) }
}

init {
    atomic {
        run Fault();
        run Fault();
        run Mprotect();
        run Munmap()
    }
}
