/* Pending pages: freed pages a snapshot may still read, and when they may be reused
 * (docs/FORMAT.md, "Reclamation"). The horizon is the oldest generation a snapshot reads: of
 * this process (pins) or of another one (the reader table, whose rules are in
 * src/mappedpages/_readertable.py). _core_py/pending.py is the same in Python. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

#define RECHECK 0.1 /* seconds between checks of the lock of the slot holding the horizon back */

int mp__hold(mp_core *c, uint64_t page, uint64_t gen) {
    if (mp__reserve(&c->fifo, 2)) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for pending pages");
    c->fifo.v[c->fifo.n++] = gen;
    c->fifo.v[c->fifo.n++] = page;
    mp__set(c->pending, page);
    c->nheld++;
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Whether another open file description holds the lock of the table byte at `off`. */
static int locked(int fd, uint64_t off) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)off;
    fl.l_len = 1;
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return 1; /* cannot tell: count it as live */
    return fl.l_type != F_UNLCK;
}

typedef struct {
    uint64_t gen, pid, start, since;
} slot_view;

/* The fields readers change while the writer looks (a slot's generation, the header's hwm),
   each loaded whole with one aligned access: readers store them whole too, so no load sees a
   mix of two values (the table is little-endian). */
static uint64_t load_le64(const unsigned char *p) {
    uint64_t v = __atomic_load_n((const uint64_t *)(const void *)p, __ATOMIC_ACQUIRE);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static uint32_t table_hwm(const mp_table *t) {
    uint32_t v = __atomic_load_n((const uint32_t *)(const void *)(t->map + MP_TBL_HWM), __ATOMIC_ACQUIRE);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v > MP_TABLE_CAPACITY ? MP_TABLE_CAPACITY : v;
}

/* A slot, its generation first: its owner stores that last. */
static slot_view read_slot(const mp_table *t, uint64_t i) {
    const unsigned char *s = t->map + MP_TABLE_HEADER_SIZE + MP_TABLE_SLOT_SIZE * i;
    slot_view v;
    v.gen = load_le64(s + MP_TSLOT_GENERATION);
    v.pid = mp_get64(s + MP_TSLOT_PID);
    v.start = mp_get64(s + MP_TSLOT_START_TIME);
    v.since = mp_get64(s + MP_TSLOT_SINCE);
    return v;
}

static int is_dead(const mp_table *t, uint64_t i, slot_view v) {
    for (uint64_t k = 0; k < t->ndead; k++)
        if (t->dead[k].slot == i && t->dead[k].pid == v.pid && t->dead[k].start == v.start && t->dead[k].since == v.since)
            return 1;
    return 0;
}

static void mark_dead(mp_table *t, uint64_t i, slot_view v) {
    if (t->ndead == t->dead_cap) {
        uint64_t cap = t->dead_cap ? 2 * t->dead_cap : 16;
        struct mp_dead *d = realloc(t->dead, (size_t)cap * sizeof *d);
        if (!d) return; /* not marked: the slot stays counted, which is safe */
        t->dead = d;
        t->dead_cap = cap;
    }
    t->dead[t->ndead].slot = i;
    t->dead[t->ndead].pid = v.pid;
    t->dead[t->ndead].start = v.start;
    t->dead[t->ndead].since = v.since;
    t->ndead++;
}

static uint64_t table_horizon(mp_table *t, uint64_t committed) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* after the last record write, before the slots */
    uint32_t hwm = table_hwm(t);
    double at = -1;
    for (;;) {
        uint64_t best = committed, best_i = 0;
        slot_view bv = {0, 0, 0, 0};
        for (uint64_t i = 0; i < hwm; i++) {
            slot_view v = read_slot(t, i);
            if (v.gen && v.gen < best && !is_dead(t, i, v)) {
                best = v.gen;
                best_i = i;
                bv = v;
            }
        }
        if (best == committed) return committed;
        if (at < 0) at = now();
        if (at - t->checked[best_i] < RECHECK) return best;
        if (locked(t->fd, MP_TABLE_HEADER_SIZE + MP_TABLE_SLOT_SIZE * best_i)) {
            t->checked[best_i] = at;
            return best;
        }
        slot_view again = read_slot(t, best_i);
        if (again.gen != bv.gen || again.pid != bv.pid || again.start != bv.start || again.since != bv.since) {
            /* it changed while we looked: count it, and look again next time */
            return again.gen && again.gen < best ? again.gen : best;
        }
        mark_dead(t, best_i, bv); /* unchanged while unlocked: its owner is gone */
        t->checked[best_i] = 0;
    }
}

uint64_t mp__horizon(mp_core *c) {
    uint64_t h = c->gen;
    for (uint64_t i = 0; i < c->pins.n; i += 2)
        if (c->pins.v[i] < h) h = c->pins.v[i];
    if (c->table) {
        uint64_t t = table_horizon(c->table, c->gen);
        if (t < h) h = t;
    }
    return h;
}

int mp__release_pending(mp_core *c) {
    if (c->fifo_head == c->fifo.n || c->fifo.v[c->fifo_head] > c->gen) return 0;
    uint64_t h = mp__horizon(c);
    while (c->fifo_head < c->fifo.n && c->fifo.v[c->fifo_head] <= h) {
        uint64_t page = c->fifo.v[c->fifo_head + 1];
        c->fifo_head += 2;
        if (mp__bit(c->pending, page)) {
            mp__clr(c->pending, page);
            mp_bitmap_clear(&c->taken, page);
            c->nheld--;
        }
    }
    if (c->fifo_head == c->fifo.n) { /* keep the array from growing for ever */
        c->fifo.n = c->fifo_head = 0;
    } else if (c->fifo_head > 4096 && c->fifo_head * 2 > c->fifo.n) {
        memmove(c->fifo.v, c->fifo.v + c->fifo_head, (size_t)(c->fifo.n - c->fifo_head) * 8);
        c->fifo.n -= c->fifo_head;
        c->fifo_head = 0;
    }
    return 0;
}

void mp__table_free(mp_table *t) {
    if (!t) return;
    if (t->map) munmap(t->map, MP_TABLE_SIZE);
    free(t->dead);
    free(t);
}

int mp_attach_table(mp_core *c, int fd) {
    mp__enter(c);
    int r = mp__start_read(c);
    if (r) return mp__leave(c, r);
    mp_table *t = calloc(1, sizeof *t);
    if (!t) return mp__leave(c, mp__fail(c, MP_E_NO_MEMORY, "out of memory"));
    void *m = mmap(NULL, MP_TABLE_SIZE, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        free(t);
        return mp__leave(c, mp__fail_os(c, errno, "mmap of the reader table"));
    }
    t->fd = fd;
    t->map = m;
    uint32_t hwm = table_hwm(t);
    for (uint64_t i = 0; i < hwm; i++) { /* every slot once: dead readers hold nothing back */
        slot_view v = read_slot(t, i);
        if (v.gen && !locked(fd, MP_TABLE_HEADER_SIZE + MP_TABLE_SLOT_SIZE * i)) {
            slot_view again = read_slot(t, i);
            if (again.gen == v.gen && again.since == v.since) mark_dead(t, i, v);
        }
    }
    mp__table_free(c->table);
    c->table = t;
    return mp__leave(c, 0);
}

/* -- snapshots of this process ----------------------------------------------------------- */

int mp__pin(mp_core *c, uint64_t gen) {
    for (uint64_t i = 0; i < c->pins.n; i += 2)
        if (c->pins.v[i] == gen) {
            c->pins.v[i + 1]++;
            return 0;
        }
    if (mp__reserve(&c->pins, 2)) return mp__fail(c, MP_E_NO_MEMORY, "out of memory");
    c->pins.v[c->pins.n++] = gen;
    c->pins.v[c->pins.n++] = 1;
    return 0;
}

void mp__unpin(mp_core *c, uint64_t gen) {
    for (uint64_t i = 0; i < c->pins.n; i += 2)
        if (c->pins.v[i] == gen) {
            if (--c->pins.v[i + 1] == 0) {
                c->pins.v[i] = c->pins.v[c->pins.n - 2];
                c->pins.v[i + 1] = c->pins.v[c->pins.n - 1];
                c->pins.n -= 2;
            }
            return;
        }
}

void mp_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
