/* Allocation state: alloc/free (single and bulk), batches, growth, reading the bitmap, the
 * mapping handed to Python, flushing and closing. Each public function takes the core's lock
 * and checks its state first. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

#define ENTER(c) pthread_mutex_lock(&(c)->lock)
static int leave(mp_core *c, int r) {
    pthread_mutex_unlock(&c->lock);
    return r;
}

static int usable(mp_core *c) {
    if (!c->open || c->closed) return mp__fail(c, MP_E_UNAVAILABLE, "the pager is closed");
    if (c->poisoned) return mp__fail(c, MP_E_UNAVAILABLE, "a commit failed; reopen the file");
    return 0;
}

static int writer(mp_core *c) {
    int r = usable(c);
    if (!r && !c->writable) r = mp__fail(c, MP_E_READ_ONLY, "the file is open read-only");
    return r;
}

static int check_page(mp_core *c, uint64_t page) {
    if (page >= c->n)
        return mp__fail(c, MP_E_OUT_OF_BOUNDS, "page %llu is beyond the file (%llu pages)",
                        (unsigned long long)page, (unsigned long long)c->n);
    return 0;
}

static int check_freeable(mp_core *c, uint64_t page) {
    int r = check_page(c, page);
    if (r) return r;
    if (mp_is_internal(&c->geo, page))
        return mp__fail(c, MP_E_RESERVED, "page %llu is internal to the file format", (unsigned long long)page);
    if (!mp_bitmap_get(&c->bits, page) || mp__held(c, page))
        return mp__fail(c, MP_E_DOUBLE_FREE, "page %llu is already free", (unsigned long long)page);
    return 0;
}

/* Whether changes wait for a commit asked for (a batch, or commits driven from above); if not,
 * each call commits at once. Only then does a free hold its page until the commit (held.c). */
static int deferred(const mp_core *c) { return c->in_batch || c->manual; }

static void take(mp_core *c, uint64_t page) {
    mp_bitmap_set(&c->bits, page);
    c->free--;
    mp__touch(c, mp_group_of(&c->geo, page), G_DIRTY);
}

static void release(mp_core *c, uint64_t page, int hold) {
    if (hold)
        mp__hold(c, page);
    else
        mp_bitmap_clear(&c->bits, page);
    c->free++;
    mp__touch(c, mp_group_of(&c->geo, page), G_DIRTY);
}

static int autocommit(mp_core *c) {
    if (deferred(c)) return 0;
    return mp__commit(c);
}

/* Bits the bitmap holds for `count` pages: whole groups, so that a group's block is copied
 * from memory without bounds arithmetic. */
static uint64_t bits_for(const mp_geometry *g, uint64_t count) {
    uint64_t k = mp_group_count(g, count) - 1;
    return k == 0 ? g->c0 : mp_group_start(g, k) + g->c;
}

static int grow(mp_core *c, uint64_t need) {
    const mp_geometry *g = &c->geo;
    uint64_t target = mp_grow_target(g, c->n, need);
    if (!target || target > (uint64_t)INT64_MAX / g->page_size)
        return mp__fail_os(c, EFBIG, "growing the file");
    uint64_t size = target * g->page_size;
    if (c->prealloc) {
        int e = posix_fallocate(c->fd, 0, (off_t)size);
        if (e) return mp__fail_os(c, e, "posix_fallocate");
    } else {
        struct stat st;
        if (fstat(c->fd, &st) != 0) return mp__fail_os(c, errno, "fstat");
        if ((uint64_t)st.st_size < size && ftruncate(c->fd, (off_t)size) != 0)
            return mp__fail_os(c, errno, "ftruncate");
    }
    uint64_t old_groups = mp_group_count(g, c->n), groups = mp_group_count(g, target);
    int r = mp__group_room(c, groups);
    if (r) return r;
    if (mp_bitmap_resize(&c->bits, bits_for(g, target)))
        return mp__fail(c, MP_E_NO_MEMORY, "out of memory for the bitmap of %llu pages", (unsigned long long)target);
    r = mp__map(c, size);
    if (r) return r;
    c->free += target - c->n;
    c->n = target;
    for (uint64_t k = old_groups; k < groups; k++) {
        uint64_t s = mp_group_start(g, k);
        c->gflags[k] = G_CUR | G_NEW; /* the first write goes to copy 0 */
        take(c, s);
        take(c, s + 1);
    }
    c->grew = 1;
    mp__touch(c, 0, G_DIRTY);
    return 0;
}

int64_t mp_alloc(mp_core *c) {
    ENTER(c);
    int r = writer(c);
    if (r) return leave(c, r);
    uint64_t page = mp_bitmap_first_clear(&c->bits);
    if (page >= c->n) {
        r = grow(c, 1);
        if (r) return leave(c, r);
        page = mp_bitmap_first_clear(&c->bits);
    }
    take(c, page);
    r = autocommit(c);
    pthread_mutex_unlock(&c->lock);
    return r ? r : (int64_t)page;
}

int mp_alloc_bulk(mp_core *c, uint64_t *out, uint64_t n) {
    ENTER(c);
    int r = writer(c);
    if (r) return leave(c, r);
    uint64_t avail = c->free - c->nheld; /* held pages are free but not yet to be had */
    if (n > avail) {
        r = grow(c, n - avail);
        if (r) return leave(c, r);
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t page = mp_bitmap_first_clear(&c->bits);
        take(c, page);
        out[i] = page;
    }
    return leave(c, autocommit(c));
}

int mp_free_page(mp_core *c, uint64_t page) {
    ENTER(c);
    int r = writer(c);
    if (!r) r = check_freeable(c, page);
    int hold = !r && deferred(c) && mp__committed_uses(c, page);
    if (hold) r = mp__hold_room(c, 1);
    if (r) return leave(c, r);
    release(c, page, hold);
    return leave(c, autocommit(c));
}

int mp_free_bulk(mp_core *c, const uint64_t *pages, uint64_t n) {
    ENTER(c);
    int r = writer(c);
    if (r) return leave(c, r);
    const int hold = deferred(c);
    if (hold) {
        r = mp__hold_room(c, n);
        if (r) return leave(c, r);
    }
    /* free (clear or hold) as we validate: a duplicate then reads as already free; on any
     * error what was freed so far is taken back, so nothing is freed */
    uint64_t i;
    for (i = 0; i < n; i++) {
        r = check_freeable(c, pages[i]);
        if (r) break;
        if (hold && mp__committed_uses(c, pages[i]))
            mp__hold(c, pages[i]);
        else
            mp_bitmap_clear(&c->bits, pages[i]);
    }
    if (r) {
        if (r == MP_E_DOUBLE_FREE) {
            for (uint64_t j = 0; j < i; j++)
                if (pages[j] == pages[i]) {
                    mp__fail(c, r, "page %llu appears twice", (unsigned long long)pages[i]);
                    break;
                }
        }
        while (i--) {
            if (mp__held(c, pages[i])) /* held by this call: the last one held */
                mp__unhold_last(c);
            else
                mp_bitmap_set(&c->bits, pages[i]);
        }
        return leave(c, r);
    }
    for (i = 0; i < n; i++) {
        c->free++;
        mp__touch(c, mp_group_of(&c->geo, pages[i]), G_DIRTY);
    }
    return leave(c, autocommit(c));
}

int mp_begin(mp_core *c) {
    ENTER(c);
    int r = writer(c);
    if (!r) c->in_batch = 1;
    return leave(c, r);
}

int mp_stage(mp_core *c, const uint64_t *pages, uint64_t n) {
    ENTER(c);
    int r = writer(c);
    for (uint64_t i = 0; !r && i < n; i++) r = check_page(c, pages[i]);
    if (r) return leave(c, r);
    for (uint64_t i = 0; i < n; i++) mp__written(c, pages[i] * c->geo.page_size, c->geo.page_size);
    c->forced = 1;
    return leave(c, 0);
}

int mp_set_directory(mp_core *c, uint64_t dir_a, uint64_t dir_b) {
    ENTER(c);
    int r = writer(c);
    if (!r && (dir_a >= c->n || dir_b >= c->n))
        r = mp__fail(c, MP_E_OUT_OF_BOUNDS, "directory index page beyond the file");
    if (!r) {
        c->dir[0] = dir_a;
        c->dir[1] = dir_b;
        c->forced = 1;
        c->meta_dirty = 1;
    }
    return leave(c, r);
}

int mp_set_log(mp_core *c, const unsigned char *log, uint32_t len) {
    ENTER(c);
    int r = writer(c);
    uint32_t most = mp_record_count(c->geo.page_size) > 1 ? MP_RECORD_LOG_MAX : 0;
    if (!r && (len > most || len % 4))
        r = mp__fail(c, MP_E_VALUE, "a record log of %u bytes (at most %u, a multiple of 4)", len, most);
    if (!r) {
        memcpy(c->log, log, len);
        c->log_len = len;
        c->forced = 1;
    }
    return leave(c, r);
}

int mp_two_barriers(mp_core *c) {
    ENTER(c);
    int r = writer(c);
    if (!r) c->two = 1;
    return leave(c, r);
}

int mp_log(mp_core *c, unsigned char *out) {
    ENTER(c);
    int r = usable(c);
    if (!r) {
        memcpy(out, c->log, c->log_len);
        r = (int)c->log_len;
    }
    return leave(c, r);
}

int mp_commit(mp_core *c) {
    ENTER(c);
    int r = writer(c);
    if (r) return leave(c, r);
    c->in_batch = 0;
    return leave(c, autocommit(c));
}

static int rollback(mp_core *c) {
    c->in_batch = 0;
    mp__release_held(c, 0); /* the committed state uses them: reloading the bitmap keeps them */
    const mp_geometry *g = &c->geo;
    const unsigned char *meta = c->map + (1 + (uint64_t)c->active) * g->page_size;
    uint64_t n = mp_get64(meta + MP_META_FIELDS_OFFSET);
    uint64_t groups = mp_group_count(g, n);
    if (n != c->n) { /* the batch grew the file: forget the new groups */
        for (uint64_t k = groups; k < mp_group_count(g, c->n); k++) c->gflags[k] = 0;
        if (mp_bitmap_resize(&c->bits, bits_for(g, n))) {
            c->poisoned = 1;
            return mp__fail(c, MP_E_NO_MEMORY, "out of memory");
        }
        c->n = n;
    }
    c->free = mp_get64(meta + MP_META_FIELDS_OFFSET + 8);
    c->dir[0] = mp_get64(meta + MP_META_FIELDS_OFFSET + 16);
    c->dir[1] = mp_get64(meta + MP_META_FIELDS_OFFSET + 24);
    mp__clear_commit(c);
    memcpy(c->log, c->log_committed, c->log_len_committed);
    c->log_len = c->log_len_committed;
    uint64_t kept = 0;
    for (uint64_t i = 0; i < c->ntouched; i++) {
        uint64_t k = c->touched[i];
        if (k >= groups) continue;
        unsigned flags = c->gflags[k];
        if (flags & G_DIRTY) {
            uint64_t first = mp_group_start(g, k);
            uint64_t bytes = (k ? g->c : g->c0) / 8;
            const unsigned char *src = k ? c->map + (first + (flags & G_CUR)) * g->page_size + MP_GROUP_BITMAP_OFFSET
                                         : meta + MP_META_BITMAP_OFFSET;
            mp_bitmap_load(&c->bits, first, src, bytes);
            mp_bitmap_trim(&c->bits, n);
            mp_bitmap_summarise_words(&c->bits, first >> 6, (first + bytes * 8 - 1) >> 6);
        }
        c->gflags[k] = (uint8_t)(flags & ~(unsigned)(G_DIRTY | G_NEW));
        if (c->gflags[k] & G_STALE) c->touched[kept++] = k;
    }
    c->ntouched = kept;
    mp_bitmap_trim(&c->bits, n);
    mp_bitmap_summarise_words(&c->bits, n >> 6, c->bits.words[0] - 1);
    return 0;
}

int mp_rollback(mp_core *c) {
    ENTER(c);
    int r = usable(c);
    if (!r) r = rollback(c);
    return leave(c, r);
}

int mp_is_allocated(mp_core *c, uint64_t page) {
    ENTER(c);
    int r = usable(c);
    if (!r) r = check_page(c, page);
    if (!r) r = mp_bitmap_get(&c->bits, page) && !mp__held(c, page);
    return leave(c, r);
}

int64_t mp_scan(mp_core *c, uint64_t start, uint64_t *out, uint64_t limit) {
    ENTER(c);
    int r = usable(c);
    if (r) return leave(c, r);
    uint64_t count = 0, n = c->n;
    for (uint64_t w = start >> 6; count < limit && w * 64 < n; w++) {
        uint64_t bits = c->bits.level[0][w] & ~mp__held_word(c, w);
        if (w == start >> 6) bits &= UINT64_MAX << (start & 63);
        while (bits && count < limit) {
            uint64_t page = w * 64 + (uint64_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            if (page >= n) break;
            if (!mp_is_internal(&c->geo, page)) out[count++] = page;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return (int64_t)count;
}

int mp_bitmap_bytes(mp_core *c, unsigned char *out, uint64_t len) {
    ENTER(c);
    int r = usable(c);
    if (r) return leave(c, r);
    if (len != (c->n + 7) / 8) return leave(c, mp__fail(c, MP_E_VALUE, "bitmap buffer has the wrong size"));
    for (uint64_t i = 0; i < len; i++) {
        uint64_t word = c->bits.level[0][i >> 3] & ~mp__held_word(c, i >> 3);
        out[i] = (unsigned char)(word >> (8 * (i & 7)));
    }
    return leave(c, 0);
}

int64_t mp_map_export(mp_core *c, char **addr, uint64_t *len) {
    ENTER(c);
    int r = usable(c);
    if (r) return leave(c, r);
    c->map_exported = 1;
    *addr = (char *)c->map;
    *len = c->map_len;
    pthread_mutex_unlock(&c->lock);
    return (int64_t)c->map_epoch;
}

static int flush_all(mp_core *c) {
    if (msync(c->map, (size_t)c->map_len, MS_SYNC) != 0) return mp__fail_os(c, errno, "msync");
    if (fdatasync(c->fd) != 0) return mp__fail_os(c, errno, "fdatasync");
    return 0;
}

int mp_flush_all(mp_core *c) {
    ENTER(c);
    int r = usable(c);
    if (!r) r = flush_all(c);
    return leave(c, r);
}

int mp_flush_pages(mp_core *c, const uint64_t *pages, uint64_t n) {
    ENTER(c);
    int r = usable(c);
    for (uint64_t i = 0; !r && i < n; i++) r = check_page(c, pages[i]);
    const uint64_t ps = c->geo.page_size;
    for (uint64_t i = 0; !r && i < n; i++) r = mp__sync_range(c, pages[i] * ps, (pages[i] + 1) * ps);
    return leave(c, r);
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
    if (!r) r = !c->in_batch && (c->ntouched || c->grew || c->forced);
    return leave(c, r);
}

int mp_commit_step(mp_core *c, int step) {
    ENTER(c);
    int r = writer(c);
    if (!r) r = mp__step(c, step);
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
        if (c->in_batch) r = rollback(c);
        if (!r) r = mp__commit(c);
        if (!r) r = flush_all(c);
    }
    c->closed = 1;
    if (c->map && !c->map_exported) munmap(c->map, (size_t)c->map_len);
    c->map = NULL;
    c->map_len = 0;
    return leave(c, r);
}
