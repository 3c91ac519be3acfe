/* Allocation state: taking and releasing pages, growth, kinds and scans, batches and their
 * rollback, the mapping handed to Python, flushing and closing; and the public functions for
 * them. Each public function takes the core's lock and checks its state first; a mutating one
 * that fails outside a batch takes back what it changed. _core_py/alloc.py and core.py are
 * the same in Python. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core.h"

#define ENTER mp__enter
#define leave mp__leave
#define usable mp__start_read
#define start mp__start
#define finish mp__finish

int mp__leave(mp_core *c, int r) {
    if (!c->in_batch) pthread_cond_broadcast(&c->batch_end);
    pthread_mutex_unlock(&c->lock);
    return r;
}

int mp__start_read(mp_core *c) {
    if (!c->open || c->closed) return mp__fail(c, MP_E_UNAVAILABLE, "the pager is closed");
    if (c->poisoned) return mp__fail(c, MP_E_UNAVAILABLE, "a commit failed; reopen the file");
    return 0;
}

static int writer(mp_core *c) {
    int r = usable(c);
    if (!r && !c->writable) r = mp__fail(c, MP_E_READ_ONLY, "the file is open read-only");
    return r;
}

/* The start of a mutating call: outside a batch, pending pages the horizon passed are freed. */
int mp__start(mp_core *c) {
    int r = writer(c);
    if (!r && !c->in_batch) r = mp__release_pending(c);
    return r;
}

/* The end of a mutating call: commit it, or take it back when it failed outside a batch. */
int mp__finish(mp_core *c, int r) {
    if (r >= 0) r = mp__autocommit(c); /* a commit that failed before writing left no poison */
    if (r < 0 && c->open && !c->closed && !c->in_batch && !c->poisoned) mp__rollback(c);
    return leave(c, r);
}

static int check_page(mp_core *c, uint64_t page) {
    if (page >= c->counts.n)
        return mp__fail(c, MP_E_OUT_OF_BOUNDS, "page %llu is beyond the file (%llu pages)", (unsigned long long)page,
                        (unsigned long long)c->counts.n);
    return 0;
}

int mp__is_used(const mp_core *c, uint64_t page) {
    return mp_bitmap_get(&c->taken, page) && !mp__bit(c->pending, page);
}

static int is_reserved(const mp_core *c, uint64_t page) {
    for (unsigned i = 0; i < c->nreserved; i++)
        if (c->reserved[i] == page) return 1;
    return 0;
}

/* Room in every per-page bit array for `pages` pages (whole leaves). */
int mp__bits_room(mp_core *c, uint64_t pages) {
    uint64_t leaves = mp_div_up(pages, c->geo.leaf_pages);
    uint64_t bits = (leaves ? leaves : 1) * c->geo.leaf_pages;
    if (mp_bitmap_resize(&c->taken, bits)) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for the bitmap");
    uint64_t words = bits / 64;
    if (words > c->bit_words) {
        uint64_t **arrays[5] = {&c->internal, &c->pending, &c->born_bits, &c->viewed_bits, &c->written};
        for (int i = 0; i < 5; i++) {
            uint64_t *a = realloc(*arrays[i], (size_t)words * 8);
            if (!a) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for the bitmap");
            memset(a + c->bit_words, 0, (size_t)(words - c->bit_words) * 8);
            *arrays[i] = a;
        }
        c->bit_words = words;
    }
    return 0;
}

uint64_t mp__find_free(const mp_core *c) {
    uint64_t page = mp_bitmap_first_clear(&c->taken);
    return page < c->counts.n ? page : UINT64_MAX;
}

static int zero_pages(mp_core *c, uint64_t lo, uint64_t hi);

int mp__take(mp_core *c, uint64_t page, int internal) {
    int r = page >= c->space_from ? mp__space(c, page + 1) : 0;
    if (!r && c->tight && !mp__bit(c->written, page)) r = zero_pages(c, page, page + 1);
    if (r) return r;
    if (mp__push(&c->born, page)) return mp__fail(c, MP_E_NO_MEMORY, "out of memory");
    r = mp__log_run(c, internal ? MP_INTERNAL : MP_DATA, page);
    if (r) {
        c->born.n--;
        return r;
    }
    mp_bitmap_set(&c->taken, page);
    c->counts.free--;
    if (internal)
        mp__set(c->internal, page);
    else
        c->counts.data++;
    mp__set(c->born_bits, page);
    return 0;
}

int mp__take_lowest(mp_core *c, int internal, uint64_t *page) {
    *page = mp__find_free(c);
    if (*page == UINT64_MAX) {
        int r = mp__grow(c, 1);
        if (r) return r;
        *page = mp__find_free(c);
    }
    return mp__take(c, *page, internal);
}

int mp__release(mp_core *c, uint64_t page) {
    int internal = mp__bit(c->internal, page);
    int r = mp__log_run(c, internal ? MP_FREE_INTERNAL : MP_FREE_DATA, page);
    if (r) return r;
    if (!mp__bit(c->born_bits, page)) {
        r = mp__hold(c, page, c->gen + 1); /* a state a snapshot may read still has it */
        if (r) return r;
    } else { /* no committed state has it */
        mp__clr(c->born_bits, page);
        mp_bitmap_clear(&c->taken, page);
    }
    c->counts.free++;
    if (internal)
        mp__clr(c->internal, page);
    else
        c->counts.data--;
    return 0;
}

/* A request larger than this that the free space cannot hold fails at once: posix_fallocate
 * would first take every free block, and on ext4 keep them in the file when it fails (a disk
 * left full for everyone by one huge alloc_bulk). The margin spares a range that is partly
 * reserved already. */
#define BIG_RESERVE (64ull << 20)

/* posix_fallocate, which a signal may interrupt before it is done. */
static int reserve(int fd, uint64_t off, uint64_t len) {
    struct statvfs st;
    if (len > BIG_RESERVE && fstatvfs(fd, &st) == 0 && len - BIG_RESERVE > (uint64_t)st.f_bavail * st.f_frsize)
        return ENOSPC;
    int e;
    do e = posix_fallocate(fd, (off_t)off, (off_t)len);
    while (e == EINTR);
    return e;
}

/* Whether the file still holds every page of the state: another process may have truncated
 * it, and then no commit may name those pages, nor may the core touch them through the
 * mapping (a SIGBUS). The length comes from lseek, not fstat: a stat marks the inode's times
 * as queried, so that on Linux 6.13 and later every commit would stamp a fine-grained time
 * and dirty the inode (core.h, mp__file_size). */
int mp__check_length(mp_core *c) {
    uint64_t size;
    if (mp__file_size(c->fd, &size) != 0) return mp__fail_os(c, errno, "lseek");
    if (size / c->geo.page_size >= c->counts.n) return 0;
    c->poisoned = 1; /* its pages are gone: nothing this pager holds can be committed again */
    return mp__fail(c, MP_E_CORRUPT_METADATA, "the file is %llu bytes long, shorter than its %llu pages: it was truncated",
                    (unsigned long long)size, (unsigned long long)c->counts.n);
}

/* One reservation serves the next allocations too: on ext4 a posix_fallocate of 64 new pages
 * costs what one of a single page does (5-6 us), which would double the cost of an alloc(). */
#define AHEAD_BYTES (256u * 1024u)
/* Below this much free space (or a quarter of the file system) it counts as nearly full. */
#define TIGHT_BYTES (64ull << 20)

/* Whether the file system is nearly full. ext4 then stops delaying allocation and allocates at
 * the write fault itself, and a fault that needs a block it cannot have (even one to split a
 * preallocated extent it converts) is a SIGBUS: measured on a full ext4, writes through the
 * mapping into pages posix_fallocate had just reserved died so. From then on pages are
 * written with zeros by pwrite, which fails with ENOSPC instead, before they are handed out
 * or written through the mapping; a written page needs nothing more at its faults. */
static void look(mp_core *c) {
    struct statvfs st;
    if (fstatvfs(c->fd, &st) != 0) {
        c->tight = 1; /* cannot tell: as if it were */
        return;
    }
    uint64_t avail = (uint64_t)st.f_bavail * st.f_frsize, quarter = (uint64_t)st.f_blocks * st.f_frsize / 4;
    c->tight = avail < (quarter < TIGHT_BYTES ? quarter : TIGHT_BYTES);
}

/* Write zeros into pages [lo, hi), all free (so that no state and no snapshot reads them). */
static int zero_pages(mp_core *c, uint64_t lo, uint64_t hi) {
    static unsigned char zeros[1 << 16]; /* never written: in .bss, not in the library file */
    const uint64_t ps = c->geo.page_size;
    for (uint64_t off = lo * ps, end = hi * ps; off < end;) {
        size_t len = end - off < sizeof zeros ? (size_t)(end - off) : sizeof zeros;
        ssize_t w = pwrite(c->fd, zeros, len, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            c->tight = 1;
            return mp__fail_os(c, w < 0 ? errno : ENOSPC, "writing zeros into new pages (pwrite)");
        }
        off += (uint64_t)w;
    }
    for (uint64_t p = lo; p < hi; p++) mp__set(c->written, p);
    return 0;
}

/* Disk space for the pages below `end` (at most the page count), before the core writes them
 * or hands them out: a hole of a sparse file written through the mapping on a full disk is a
 * SIGBUS, not an error. Pages below space_from have their space already: allocation takes the
 * lowest page it may, so every page below one ever used was used too, and was reserved then. */
int mp__space(mp_core *c, uint64_t end) {
    if (end <= c->space_from) return 0;
    const uint64_t ps = c->geo.page_size, n = c->counts.n, from = c->space_from;
    uint64_t ahead = AHEAD_BYTES / ps ? AHEAD_BYTES / ps : 1;
    uint64_t want = from + ahead;
    if (want < end) want = end;
    if (want > n) want = n;
    int r = mp__check_length(c); /* posix_fallocate would lengthen a truncated file again */
    if (r) return r;
    look(c);
    int e = reserve(c->fd, from * ps, (want - from) * ps);
    if ((e == ENOSPC || e == EDQUOT) && want > end) { /* a nearly full disk: its last pages */
        want = end;
        e = reserve(c->fd, from * ps, (want - from) * ps);
    }
    if (e) {
        c->tight = 1;
        return mp__fail_os(c, e, "reserving disk space (posix_fallocate)");
    }
    if (c->tight) {
        r = zero_pages(c, from, want);
        if (r && want > end) r = zero_pages(c, from, want = end);
        if (r) return r;
    }
    c->space_from = want;
    return 0;
}

/* The `k` lowest free pages below space_from that this open has not written: with zeros, when
 * the file system is nearly full, so that a bulk call fails, if it must, before it takes any. */
static int zero_lowest(mp_core *c, uint64_t k) {
    uint64_t lo = 0, hi = 0; /* a run of pages to write */
    for (uint64_t w = mp_bitmap_first_clear(&c->taken) / 64; k && w * 64 < c->space_from; w++) {
        for (uint64_t bits = ~c->taken.level[0][w]; bits && k; bits &= bits - 1) {
            uint64_t page = w * 64 + (uint64_t)__builtin_ctzll(bits);
            if (page >= c->space_from) break;
            k--;
            if (mp__bit(c->written, page)) continue;
            if (page != hi) {
                int r = hi > lo ? zero_pages(c, lo, hi) : 0;
                if (r) return r;
                lo = page;
            }
            hi = page + 1;
        }
    }
    return hi > lo ? zero_pages(c, lo, hi) : 0;
}

/* Space for the `count` pages allocation takes next (the lowest it may reuse, then pages never
 * used), so that a bulk call that cannot have it fails before it takes any. */
int mp__space_for(mp_core *c, uint64_t count) {
    uint64_t fresh = c->counts.n - c->space_from; /* every page from space_from on is free */
    uint64_t reusable = c->counts.free - c->nheld;
    uint64_t below = reusable > fresh ? reusable - fresh : 0;
    int r = count <= below ? 0 : mp__space(c, c->space_from + (count - below));
    if (!r && c->tight) r = zero_lowest(c, count < below ? count : below);
    return r;
}

uint64_t mp__top_bit(const uint64_t *v, uint64_t words) {
    while (words > 0 && !v[words - 1]) words--;
    return words ? words * 64 - (uint64_t)__builtin_clzll(v[words - 1]) : 0;
}

uint64_t mp__top_taken(const mp_core *c) { return mp__top_bit(c->taken.level[0], c->taken.words[0]); }

/* After a load: the pages that have space are those up to the highest one in use or pending. */
void mp__space_known(mp_core *c) {
    c->space_from = mp__top_taken(c);
    if (c->space_from > c->counts.n) c->space_from = c->counts.n;
}

int mp__grow(mp_core *c, uint64_t need) {
    const mp_geometry *g = &c->geo;
    uint64_t target = mp_grow_target(g, c->counts.n, need);
    if (!target || target > MP_PAGE_LIMIT || target > (uint64_t)INT64_MAX / g->page_size)
        return mp__fail_os(c, EFBIG, "growing the file");
    uint64_t size = target * g->page_size;
    int r = mp__check_length(c); /* growing a truncated file would hide that its pages are gone */
    if (r) return r;
    r = mp__bits_room(c, target); /* the memory first: a file too large for it stays as it was */
    if (r) return r;
    if (c->prealloc) { /* the pages' space now; space_from moves on as they are used (mp__space) */
        int e = reserve(c->fd, c->space_from * g->page_size, size - c->space_from * g->page_size);
        if (e) return mp__fail_os(c, e, "posix_fallocate");
    } else {
        uint64_t now;
        if (mp__file_size(c->fd, &now) != 0) return mp__fail_os(c, errno, "lseek");
        if (now < size && ftruncate(c->fd, (off_t)size) != 0) return mp__fail_os(c, errno, "ftruncate");
    }
    r = mp__map(c, size);
    if (r) return r;
    c->counts.free += target - c->counts.n;
    c->counts.n = target;
    c->grew = 1;
    return 0;
}

static int check_freeable(mp_core *c, uint64_t page) {
    int r = check_page(c, page);
    if (r) return r;
    if (is_reserved(c, page) || mp__bit(c->internal, page))
        return mp__fail(c, MP_E_RESERVED, "page %llu is internal to the file format", (unsigned long long)page);
    if (!mp__is_used(c, page)) return mp__fail(c, MP_E_DOUBLE_FREE, "page %llu is already free", (unsigned long long)page);
    return 0;
}

void mp__clear_commit(mp_core *c) {
    c->words_start = -1;
    c->undo_slots.n = 0;
    c->undo_dirty.n = 0;
    for (uint64_t i = 0; i < c->born.n; i++) {
        mp__clr(c->born_bits, c->born.v[i]);
        mp__clr(c->viewed_bits, c->born.v[i]);
    }
    c->born.n = 0;
    c->staged.n = 0;
    c->blocks.n = 0;
    c->grew = c->forced = c->force_checkpoint = c->checkpointed = c->single = c->no_undo = c->cut = 0;
    c->flush_lo = c->flush_hi = 0;
    c->flush_everything = 0;
    c->sealed.n = 0;
}

/* Undo this commit's log words, latest first, and return to the committed counts. */
int mp__rollback(mp_core *c) {
    c->in_batch = 0;
    mp_u64s at = {0};
    uint64_t v[3];
    unsigned kind;
    int64_t pos = c->words_start;
    while (pos >= 0 && (pos = mp__log_next(c->log, c->log_len, (uint64_t)pos, &kind, v)) > 0)
        if (mp__push(&at, (uint64_t)pos)) {
            free(at.v);
            c->poisoned = 1;
            return mp__fail(c, MP_E_NO_MEMORY, "out of memory");
        }
    uint64_t prev = (uint64_t)(c->words_start < 0 ? 0 : c->words_start);
    for (uint64_t i = at.n; i-- > 0;) {
        uint64_t here = i ? at.v[i - 1] : prev;
        mp__log_next(c->log, c->log_len, here, &kind, v);
        if (kind == MP_SLOT) {
            uint64_t *u = c->undo_slots.v + (c->undo_slots.n -= 3);
            c->slot_page[u[0]] = u[1];
            c->slot_crc[u[0]] = (uint32_t)u[2];
            if (u[1])
                mp_bitmap_set(&c->slots, u[0]);
            else
                mp_bitmap_clear(&c->slots, u[0]);
            mp__clr(c->verified, u[0]);
            continue;
        }
        for (uint64_t p = v[0]; kind != MP_GEN && p < v[0] + v[1]; p++) {
            if (kind == MP_DATA || kind == MP_INTERNAL) {
                mp_bitmap_clear(&c->taken, p);
                mp__clr(c->internal, p);
            } else {
                if (mp__bit(c->pending, p)) { /* held by this commit */
                    mp__clr(c->pending, p);
                    c->nheld--;
                }
                mp_bitmap_set(&c->taken, p);
                if (kind == MP_FREE_INTERNAL) mp__set(c->internal, p);
            }
        }
    }
    free(at.v);
    while (c->fifo.n > c->fifo_head && c->fifo.v[c->fifo.n - 2] == c->gen + 1) c->fifo.n -= 2;
    for (uint64_t i = c->undo_dirty.n; i > 0; i -= 2) {
        mp_tree *t = &c->trees[c->undo_dirty.v[i - 2]];
        mp__clr(t->dirty_bits, c->undo_dirty.v[i - 1]);
        t->dirty.n--;
    }
    c->counts = c->committed;
    if (c->space_from > c->counts.n) c->space_from = c->counts.n; /* pages a growth added are gone */
    mp__clear_commit(c);
    c->log_len = c->log_committed;
    return 0;
}

/* -- public functions -------------------------------------------------------------------- */

int64_t mp_alloc(mp_core *c) {
    ENTER(c);
    int r = start(c);
    uint64_t page = 0;
    if (!r) r = mp__take_lowest(c, 0, &page);
    r = finish(c, r);
    return r ? r : (int64_t)page;
}

int mp_alloc_bulk(mp_core *c, uint64_t *out, uint64_t n) {
    ENTER(c);
    int r = start(c);
    if (r) return leave(c, r);
    uint64_t free_now = c->counts.free - c->nheld; /* pending pages are free but not to be had yet */
    if (n > MP_PAGE_LIMIT - c->counts.n)
        return leave(c, mp__fail(c, MP_E_VALUE, "%llu pages are more than a file can hold", (unsigned long long)n));
    if (n > free_now) r = mp__grow(c, n - free_now);
    if (!r) r = mp__space_for(c, n);
    for (uint64_t i = 0; !r && i < n; i++) r = mp__take_lowest(c, 0, &out[i]);
    return finish(c, r);
}

int mp_free_page(mp_core *c, uint64_t page) {
    ENTER(c);
    int r = start(c);
    if (!r) r = check_freeable(c, page);
    if (!r) r = mp__release(c, page);
    return finish(c, r);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int mp_free_bulk(mp_core *c, const uint64_t *pages, uint64_t n) {
    ENTER(c);
    int r = start(c);
    if (r) return leave(c, r);
    for (uint64_t i = 0; !r && i < n; i++) r = check_freeable(c, pages[i]);
    if (r) return leave(c, r);
    uint64_t *sorted = malloc((size_t)(n ? n : 1) * 8);
    if (!sorted) return leave(c, mp__fail(c, MP_E_NO_MEMORY, "out of memory"));
    mp__memcpy(sorted, pages, n * 8);
    mp__qsort(sorted, n, 8, cmp_u64);
    for (uint64_t i = 1; i < n; i++)
        if (sorted[i] == sorted[i - 1]) {
            r = mp__fail(c, MP_E_DOUBLE_FREE, "page %llu appears twice", (unsigned long long)sorted[i]);
            break;
        }
    for (uint64_t i = 0; !r && i < n; i++) r = mp__release(c, sorted[i]);
    free(sorted);
    return finish(c, r);
}

static int kind_of(const mp_core *c, uint64_t page) {
    return !mp__is_used(c, page) ? (mp__bit(c->pending, page) ? 3 : 0) : mp__bit(c->internal, page) ? 2 : 1;
}

int mp_kind(mp_core *c, uint64_t page) {
    ENTER(c);
    int r = usable(c);
    if (!r) r = check_page(c, page);
    if (!r) r = kind_of(c, page);
    return leave(c, r);
}

int mp_kind_try(mp_core *c, uint64_t page) {
    if (pthread_mutex_trylock(&c->lock) != 0) return -1;
    int r = -1;
    int waits = c->in_batch && !pthread_equal(c->batch_owner, pthread_self());
    if (!waits && c->open && !c->closed && !c->poisoned && page < c->counts.n)
        r = kind_of(c, page);
    pthread_mutex_unlock(&c->lock);
    return r;
}

/* A writable view of `page` is given out: a page this batch allocated is not to be sealed. */
static void viewed(mp_core *c, uint64_t page) {
    if (c->in_batch && page < c->counts.n && mp__bit(c->born_bits, page)) mp__set(c->viewed_bits, page);
}

int mp_view_try(mp_core *c, uint64_t page) {
    if (pthread_mutex_trylock(&c->lock) != 0) return -1;
    int r = -1;
    int waits = c->in_batch && !pthread_equal(c->batch_owner, pthread_self());
    if (!waits && c->open && !c->closed && !c->poisoned && c->writable && page < c->counts.n &&
        !mp__listed_in_force(c, page)) {
        r = kind_of(c, page);
        viewed(c, page);
    }
    pthread_mutex_unlock(&c->lock);
    return r;
}

int mp_write_try(mp_core *c, uint64_t page) {
    if (pthread_mutex_trylock(&c->lock) != 0) return -1;
    int r = -1;
    int waits = c->in_batch && !pthread_equal(c->batch_owner, pthread_self());
    if (!waits && c->open && !c->closed && !c->poisoned && c->writable && page < c->counts.n &&
        !mp__listed_in_force(c, page))
        r = kind_of(c, page);
    pthread_mutex_unlock(&c->lock);
    return r;
}

int64_t mp_scan(mp_core *c, uint64_t start_page, uint64_t *out, uint64_t limit) {
    ENTER(c);
    int r = usable(c);
    if (r) return leave(c, r);
    uint64_t count = 0, n = c->counts.n;
    for (uint64_t w = start_page >> 6; count < limit && w * 64 < n; w++) {
        uint64_t bits = c->taken.level[0][w] & ~c->internal[w] & ~c->pending[w];
        if (w == start_page >> 6) bits &= UINT64_MAX << (start_page & 63);
        while (bits && count < limit) {
            uint64_t page = w * 64 + (uint64_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            if (page >= n) break;
            out[count++] = page;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return (int64_t)count;
}

int mp_begin(mp_core *c) {
    ENTER(c);
    int r = start(c);
    if (!r) {
        c->in_batch = 1;
        c->batch_owner = pthread_self();
    }
    return leave(c, r);
}

int mp_adopt_batch(mp_core *c) {
    pthread_mutex_lock(&c->lock); /* not ENTER: the open batch is what is being taken over */
    int r = writer(c);
    if (!r && !c->in_batch) r = mp__fail(c, MP_E_VALUE, "no batch is open");
    if (!r) c->batch_owner = pthread_self();
    return leave(c, r);
}

int mp_commit(mp_core *c) {
    ENTER(c);
    int r = writer(c);
    if (r) return leave(c, r);
    c->in_batch = 0;
    r = mp__autocommit(c);
    if (r < 0 && !c->poisoned) { /* failed before writing: the batch is undone, its flushes kept */
        mp__sync_flushed(c);
        mp__rollback(c);
    }
    return leave(c, r);
}

int mp_rollback(mp_core *c) {
    ENTER(c);
    int r = usable(c);
    int flushed = r ? 0 : mp__sync_flushed(c); /* promised all the same */
    if (!r) r = mp__rollback(c);
    return leave(c, r ? r : flushed);
}

int mp_reclaim(mp_core *c) {
    ENTER(c);
    return leave(c, start(c));
}

int mp_checkpoint_now(mp_core *c) {
    ENTER(c);
    int r = start(c);
    if (!r) c->force_checkpoint = c->forced = 1;
    return finish(c, r);
}

int64_t mp_map_export(mp_core *c, char **addr, uint64_t *len) {
    /* not ENTER: it changes no state a batch has, and its caller holds the lock of the
     * exported mapping, which the batch's own thread may be waiting for */
    pthread_mutex_lock(&c->lock);
    int r = usable(c);
    if (r) return leave(c, r);
    c->map_exported = 1;
    *addr = (char *)c->map;
    *len = c->map_len;
    uint64_t epoch = c->map_epoch;
    pthread_mutex_unlock(&c->lock);
    return (int64_t)epoch;
}

/* One barrier: on Linux fdatasync writes back every dirty page of the file, those dirtied
   through the mapping included, and its length; an msync of the mapping before it cost a
   second device flush (docs/DESIGN.md, "Flushing data") */
static int flush_all(mp_core *c) {
    if (fdatasync(c->fd) != 0) return mp__fail_os(c, errno, "fdatasync");
    return 0;
}

/* Inside a batch, a flush is the batch's commit's to make (its first barrier): returns 1 then. */
int mp_flush_all(mp_core *c) {
    ENTER(c);
    int r = usable(c);
    if (!r && c->in_batch) r = c->flush_everything = 1;
    else if (!r) r = flush_all(c);
    return leave(c, r);
}

/* Pages to sync (one msync over their span, outside a batch), or for the batch's commit to
 * make durable: as its flush span, or sealed (`seal`, those the batch allocated). */
static int flush_pages(mp_core *c, const uint64_t *pages, uint64_t n, int seal) {
    int r = usable(c);
    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint64_t i = 0; !r && i < n; i++) {
        r = check_page(c, pages[i]);
        if (!r && (is_reserved(c, pages[i]) || mp__bit(c->internal, pages[i])))
            r = mp__fail(c, MP_E_RESERVED, "page %llu is internal to the file format", (unsigned long long)pages[i]);
    }
    seal = seal && c->in_batch && c->sync;
    for (uint64_t i = 0; !r && i < n; i++) {
        uint64_t p = pages[i];
        if (seal && mp__bit(c->born_bits, p) && !mp__bit(c->viewed_bits, p) && mp__is_used(c, p) &&
            !mp__bit(c->internal, p)) {
            if (mp__push(&c->sealed, p)) r = mp__fail(c, MP_E_NO_MEMORY, "out of memory");
            continue;
        }
        if (p < lo) lo = p;
        if (p + 1 > hi) hi = p + 1;
    }
    if (r || !n) return r;
    if (c->in_batch) {
        if (hi) {
            lo *= c->geo.page_size, hi *= c->geo.page_size;
            if (!c->flush_hi || lo < c->flush_lo) c->flush_lo = lo;
            if (hi > c->flush_hi) c->flush_hi = hi;
        }
        return 1;
    }
    return mp__sync_range(c, lo * c->geo.page_size, hi * c->geo.page_size); /* one barrier */
}

int mp_flush_pages(mp_core *c, const uint64_t *pages, uint64_t n) {
    ENTER(c);
    return leave(c, flush_pages(c, pages, n, 0));
}

int mp_seal_pages(mp_core *c, const uint64_t *pages, uint64_t n) {
    ENTER(c);
    return leave(c, flush_pages(c, pages, n, 1));
}

int mp_retire(mp_core *c, uint64_t page, int viewing) {
    ENTER(c);
    int r = writer(c);
    if (!r && viewing) viewed(c, page); /* sealed before: the commit flushes it instead */
    if (!r && mp__listed_in_force(c, page)) {
        mp__retire_write(c);
        r = c->manual ? 2 : mp__retire_sync(c);
        if (r < 0) c->poisoned = 1; /* which slot landed is unknown now */
        else if (!r) r = 1;
    }
    return leave(c, r);
}

int mp_retire_sync(mp_core *c) {
    ENTER(c);
    int r = writer(c);
    if (!r && (r = mp__retire_sync(c)) < 0) c->poisoned = 1;
    return leave(c, r);
}

int mp_sealed_runs(mp_core *c, uint64_t *out) {
    ENTER(c);
    int r = usable(c), data = 0;
    const unsigned char *x = r ? NULL : c->map + c->record_pages[c->rec] * c->geo.page_size;
    unsigned n = x && (x[MP_REC_FLAGS] & MP_FLAG_ONE_BARRIER) ? x[MP_REC_LISTED] : 0;
    if (n > MP_LISTED_MAX) n = 0; /* not a record this writer opened or wrote */
    for (unsigned i = 0; i < n; i++) {
        mp_listed e = mp_listed_get(x + MP_LISTED_OFFSET + 16 * i);
        out[2 * i] = e.page;
        out[2 * i + 1] = e.count;
        for (uint64_t k = 0; k < e.count && e.page + k < c->counts.n && !data; k++)
            data = mp__is_used(c, e.page + k) && !mp__bit(c->internal, e.page + k);
    }
    return leave(c, r ? r : data ? (int)n : 0);
}

int mp_set_manual(mp_core *c, int on) {
    ENTER(c);
    int r = writer(c);
    if (!r) c->manual = !!on;
    return leave(c, r);
}

int mp_pending(mp_core *c) {
    ENTER(c);
    int r = usable(c);
    if (!r) r = !c->in_batch && mp__pending(c);
    return leave(c, r);
}

int mp_commit_step(mp_core *c, int step) {
    ENTER(c);
    int r = writer(c);
    if (!r) {
        r = mp__step(c, step);
        /* a write step that failed cleanly leaves no poison for mp__commit's caller to roll
           back; a caller driving the steps has no rollback of a step */
        if (r < 0 && step == MP_STEP_WRITE) c->poisoned = 1;
    }
    return leave(c, r);
}

void mp_poison(mp_core *c) {
    ENTER(c);
    c->poisoned = 1;
    pthread_mutex_unlock(&c->lock);
}

int mp_close(mp_core *c) {
    ENTER(c);
    if (!c->open || c->closed) return leave(c, 0);
    int r = 0;
    if (!c->poisoned && c->writable) {
        if (c->in_batch) r = mp__rollback(c);
        c->manual = 0;
        if (!r) r = mp__commit(c);
        if (!r) r = flush_all(c);
    }
    c->closed = 1;
    if (c->map && !c->map_exported) munmap(c->map, (size_t)c->map_len);
    c->map = NULL;
    c->map_len = 0;
    return leave(c, r);
}
