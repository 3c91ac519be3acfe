/* Snapshots: the state of one commit, read lazily from the blocks its record names (which no
 * writer rewrites while the snapshot is registered) and from its log. A snapshot of a file maps
 * it read-only itself; one of a writer's commit borrows the writer's mapping and is pinned in
 * it. _core_py/snapshot.py is the same in Python; the registration in the reader table is
 * src/mappedpages/_readertable.py's. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core.h"
#include "crc32c.h"

static int fail(mp_snap *s, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(mp_snap *s, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    va_end(ap);
    s->err = 0;
    return code;
}

static int fail_os(mp_snap *s, int err, const char *what) {
    snprintf(s->msg, sizeof s->msg, "%s: %s", what, strerror(err));
    s->err = err;
    return MP_E_OS;
}

mp_snap *mp_snap_new(void) {
    mp_snap *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    if (pthread_mutex_init(&s->lock, NULL)) {
        free(s);
        return NULL;
    }
    s->fd = -1;
    s->closed = 1;
    return s;
}

static void forget(mp_snap *s) {
    s->runs.n = 0;
    s->slot_changes.n = 0;
    s->verified.n = 0;
    s->seen_n = 0;
    if (s->seen) memset(s->seen, 0, (size_t)s->seen_cap * 16);
}

void mp_snap_free(mp_snap *s) {
    if (!s) return;
    if (s->map && s->map_own && !s->map_exported) munmap(s->map, (size_t)s->map_len);
    free(s->log);
    free(s->runs.v);
    free(s->slot_changes.v);
    free(s->verified.v);
    free(s->seen);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* -- the log's changes ------------------------------------------------------------------- */

/* Put [first, first + count) of `kind` over the runs (sorted, disjoint triples). */
static int put_run(mp_snap *s, uint64_t first, uint64_t count, uint64_t kind) {
    mp_u64s *r = &s->runs;
    uint64_t end = first + count;
    mp_u64s out = {0};
    if (mp__reserve(&out, r->n + 9)) return MP_E_NO_MEMORY;
    int placed = 0;
    for (uint64_t i = 0; i < r->n; i += 3) {
        uint64_t a = r->v[i], b = a + r->v[i + 1], k = r->v[i + 2];
        if (b <= first || a >= end) {
            if (!placed && a >= end) {
                out.v[out.n++] = first, out.v[out.n++] = count, out.v[out.n++] = kind;
                placed = 1;
            }
            if (mp__reserve(&out, 6)) goto oom;
            out.v[out.n++] = a, out.v[out.n++] = b - a, out.v[out.n++] = k;
            continue;
        }
        if (a < first) { /* the part before */
            if (mp__reserve(&out, 6)) goto oom;
            out.v[out.n++] = a, out.v[out.n++] = first - a, out.v[out.n++] = k;
        }
        if (!placed) {
            if (mp__reserve(&out, 6)) goto oom;
            out.v[out.n++] = first, out.v[out.n++] = count, out.v[out.n++] = kind;
            placed = 1;
        }
        if (b > end) { /* the part after */
            if (mp__reserve(&out, 6)) goto oom;
            out.v[out.n++] = end, out.v[out.n++] = b - end, out.v[out.n++] = k;
        }
    }
    if (!placed) {
        if (mp__reserve(&out, 3)) goto oom;
        out.v[out.n++] = first, out.v[out.n++] = count, out.v[out.n++] = kind;
    }
    free(r->v);
    *r = out;
    return 0;
oom:
    free(out.v);
    return MP_E_NO_MEMORY;
}

static int put_slot(mp_snap *s, uint64_t slot, uint64_t page, uint64_t crc) {
    mp_u64s *a = &s->slot_changes;
    for (uint64_t i = 0; i < a->n; i += 3)
        if (a->v[i] == slot) {
            a->v[i + 1] = page;
            a->v[i + 2] = crc;
            return 0;
        }
    if (mp__reserve(a, 3)) return MP_E_NO_MEMORY;
    a->v[a->n++] = slot, a->v[a->n++] = page, a->v[a->n++] = crc;
    return 0;
}

static void unverify(mp_snap *s, uint64_t slot) {
    for (uint64_t i = 0; i < s->verified.n; i++)
        if (s->verified.v[i] == slot) {
            s->verified.v[i] = s->verified.v[--s->verified.n];
            return;
        }
}

/* Read the log words from `from` on into the runs and slot changes. */
static int parse_log(mp_snap *s, uint64_t from) {
    uint64_t v[3];
    unsigned kind;
    int64_t pos = (int64_t)from;
    int r = 0;
    if (!mp__log_generations(s->log, s->log_len, s->rec.checkpoint, s->rec.generation))
        return fail(s, MP_E_CORRUPT_METADATA, "the log's generations are out of order");
    while (!r && (pos = mp__log_next(s->log, s->log_len, (uint64_t)pos, &kind, v)) > 0) {
        if (kind == MP_SLOT) {
            r = put_slot(s, v[0], v[1], v[2]);
            unverify(s, v[0]);
        } else if (kind != MP_GEN) {
            if (v[0] + v[1] > s->rec.page_count)
                return fail(s, MP_E_CORRUPT_METADATA, "the log names pages beyond the file");
            r = put_run(s, v[0], v[1], kind == MP_DATA ? 1 : kind == MP_INTERNAL ? 2 : 0);
        }
    }
    if (r) return fail(s, MP_E_NO_MEMORY, "out of memory");
    if (pos < 0) return fail(s, MP_E_CORRUPT_METADATA, "the log has a malformed word");
    return 0;
}

/* Take record bytes x (slot `slot`) as the state; the same trees keep what was read of them. */
static int adopt(mp_snap *s, const unsigned char *x, int slot) {
    mp_record rec;
    mp_record_decode(x, &rec);
    int same = !s->closed && rec.checkpoint == s->rec.checkpoint && rec.bitmap_root == s->rec.bitmap_root &&
               rec.log_len >= s->log_len && s->log && memcmp(x + MP_LOG_OFFSET, s->log, (size_t)s->log_len) == 0;
    uint64_t from = same ? s->log_len : 0;
    if (!same) forget(s);
    unsigned char *log = realloc(s->log, rec.log_len ? rec.log_len : 1);
    if (!log) return fail(s, MP_E_NO_MEMORY, "out of memory");
    mp__memcpy(log, x + MP_LOG_OFFSET, rec.log_len);
    s->log = log;
    s->log_len = rec.log_len;
    mp__memcpy(s->record, x, s->geo.block);
    s->rec = rec;
    s->slot = slot;
    return parse_log(s, from);
}

/* -- opening ----------------------------------------------------------------------------- */

static int read_at(int fd, unsigned char *buf, uint64_t len, uint64_t off) {
    uint64_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, buf + done, (size_t)(len - done), (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) {
            memset(buf + done, 0, (size_t)(len - done));
            return 0;
        }
        done += (uint64_t)r;
    }
    return 0;
}

static int read_fd(void *ctx, unsigned char *buf, uint64_t len, uint64_t off) {
    return read_at(*(int *)ctx, buf, len, off) ? MP_E_OS : 0;
}

/* The record in force in the file now: its bytes into raw (two blocks), its slot in *slot. */
static int newest(mp_snap *s, int fd, uint32_t page_size, header *h, unsigned char *raw, int *slot) {
    int r = mp__header(fd, page_size, h, s->msg, sizeof s->msg);
    if (r <= -1000) return fail_os(s, -1000 - r, "lseek");
    if (r) return r;
    mp_geometry g = mp_geometry_of(h->page_size);
    const unsigned char *records[2] = {raw, raw + g.block};
    /* Both records as they were at one instant: the first one read again after the second
       must be unchanged (docs/FORMAT.md, "The reader table"). Otherwise the first could be a
       stale copy of a record the writer overwrote twice while the second was being rewritten,
       older than a commit the writer made before it could see this reader's slot. Each retry
       means the writer wrote a record meanwhile; none means a reader waits for it. */
    unsigned char again[2 * MP_MAX_BLOCK];
    int order[2], good, passed;
    for (;;) {
        for (;;) {
            for (int i = 0; i < 2; i++)
                if (read_at(fd, raw + (size_t)i * g.block, g.block, h->records[i] * h->page_size))
                    return fail_os(s, errno, "pread");
            if (read_at(fd, again, g.block, h->records[0] * h->page_size)) return fail_os(s, errno, "pread");
            if (memcmp(again, raw, g.block) == 0) break;
        }
        /* the size after the records: a writer grows the file before it writes a record
           naming the larger size, so the size mp__header took could be too small for a
           record read since */
        if (mp__file_size(fd, &h->size) != 0) return fail_os(s, errno, "lseek");
        r = mp__in_force(records, &g, h->size, read_fd, &fd, order, &good, &passed);
        if (r != MP_E_TRUNCATED && (r || (good && !passed))) break;
        /* A shrink cuts the file only once the record of the smaller size is durable, so a
           size taken after that cut, with records read before it, is too small for the newest
           record read; and the pages a record lists may be written once a record after it, or
           its retired copy, is in force. Either way the records have changed since. If not,
           the file was truncated or damaged, or the record passed over was cut short. */
        for (int i = 0; i < 2; i++)
            if (read_at(fd, again + (size_t)i * g.block, g.block, h->records[i] * h->page_size))
                return fail_os(s, errno, "pread");
        if (memcmp(again, raw, 2 * (size_t)g.block) != 0) continue;
        if (r == MP_E_TRUNCATED)
            return fail(s, MP_E_CORRUPT_METADATA, "the file is shorter than the state of its newest commit: it was truncated");
        break;
    }
    if (r) return r == MP_E_OS ? fail_os(s, errno, "pread") : fail(s, r, "out of memory");
    if (!good) return fail(s, MP_E_CORRUPT_METADATA, "no valid commit record");
    *slot = order[0];
    return 0;
}

int64_t mp_snap_newest(mp_snap *s, int fd, uint32_t page_size) {
    pthread_mutex_lock(&s->lock);
    unsigned char raw[2 * MP_MAX_BLOCK];
    header h;
    int slot;
    int r = newest(s, fd, page_size, &h, raw, &slot);
    int64_t gen = r ? r : (int64_t)mp_get64(raw + (size_t)slot * mp_geometry_of(h.page_size).block + MP_REC_GENERATION);
    pthread_mutex_unlock(&s->lock);
    return gen;
}

static int map_file(mp_snap *s, uint64_t length) {
    uint64_t size;
    if (mp__file_size(s->fd, &size) != 0) return fail_os(s, errno, "lseek");
    uint64_t len = size > length ? size : length;
    if (len > SIZE_MAX) return fail(s, MP_E_NO_MEMORY, "a mapping of %llu bytes does not fit", (unsigned long long)len);
    void *m = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, s->fd, 0);
    if (m == MAP_FAILED) return fail_os(s, errno, "mmap");
    if (s->map && s->map_own && !s->map_exported) munmap(s->map, (size_t)s->map_len);
    s->map = m;
    s->map_len = len;
    s->map_own = 1;
    s->map_exported = 0;
    s->map_epoch++;
    return 0;
}

int mp_snap_open(mp_snap *s, int fd, uint32_t page_size) {
    pthread_mutex_lock(&s->lock);
    unsigned char raw[2 * MP_MAX_BLOCK];
    header h;
    int slot;
    int r = s->closed && !s->map ? 0 : fail(s, MP_E_VALUE, "this snapshot was opened already");
    if (!r) r = newest(s, fd, page_size, &h, raw, &slot);
    if (!r) {
        s->fd = fd;
        s->geo = mp_geometry_of(h.page_size);
        memcpy(s->record_pages, h.records, sizeof h.records);
        r = adopt(s, raw + (size_t)slot * s->geo.block, slot);
    }
    if (!r) r = map_file(s, s->rec.page_count * s->geo.page_size);
    if (!r) s->closed = 0;
    pthread_mutex_unlock(&s->lock);
    return r;
}

int mp_snap_of(mp_snap *s, mp_core *c, const char *map, uint64_t map_len) {
    mp__enter(c);
    int r = mp__start_read(c);
    if (!r) r = mp__check_length(c);
    if (r) {
        snprintf(s->msg, sizeof s->msg, "%s", c->msg);
        s->err = c->err;
        return mp__leave(c, r);
    }
    pthread_mutex_lock(&s->lock);
    if (!s->closed || s->map) {
        r = fail(s, MP_E_VALUE, "this snapshot was opened already");
        pthread_mutex_unlock(&s->lock);
        return mp__leave(c, r);
    }
    s->geo = c->geo;
    memcpy(s->record_pages, c->record_pages, sizeof s->record_pages);
    const unsigned char *x = (const unsigned char *)map + c->record_pages[c->rec] * c->geo.page_size;
    if ((const unsigned char *)map != c->map || map_len != c->map_len) {
        r = fail(s, MP_E_VALUE, "not the writer's current mapping");
    } else if (mp_get64(x + MP_REC_GENERATION) != c->gen) {
        r = fail(s, MP_E_CORRUPT_METADATA, "the record in force does not read back");
    } else {
        r = adopt(s, x, c->rec);
        if (!r) r = mp__pin(c, c->gen) ? fail(s, MP_E_NO_MEMORY, "out of memory") : 0;
    }
    if (!r) {
        s->owner = c;
        s->map = (unsigned char *)map;
        s->map_len = map_len;
        s->map_own = 0;
        s->closed = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return mp__leave(c, r);
}

/* Whether the file still holds every page of the snapshot's state: the pages of a file another
 * process truncated are not read on as if they were there. */
static int check_length(mp_snap *s, uint64_t size) {
    if (size / s->geo.page_size >= s->rec.page_count) return 0;
    return fail(s, MP_E_CORRUPT_METADATA, "the file is %llu bytes long, shorter than its %llu pages: it was truncated",
                (unsigned long long)size, (unsigned long long)s->rec.page_count);
}

int mp_snap_newer(mp_snap *s) {
    pthread_mutex_lock(&s->lock);
    int r = 0;
    if (!s->closed && s->fd >= 0) {
        /* A commit since goes to the other slot first, so its generation alone says whether
           there is one: the common case takes one read. A file shorter than this state was
           truncated, unless a newer record fits it: it shrank (the newest may then be in this
           slot, rewritten two commits on), or grew back meanwhile (the length is taken again).
           The length comes first, and a shrink writes its record before it cuts. */
        uint64_t size;
        int newer = 0;
        if (mp__file_size(s->fd, &size) != 0) r = fail_os(s, errno, "lseek");
        for (int k = 0; !r && k < 2; k++) {
            unsigned char h[MP_REC_PAGE_COUNT + 8];
            int i = k == 0 ? 1 - s->slot : s->slot;
            if (read_at(s->fd, h, sizeof h, s->record_pages[i] * s->geo.page_size) ||
                mp_get64(h + MP_REC_GENERATION) <= s->rec.generation)
                break;
            newer = 1;
            uint64_t n = mp_get64(h + MP_REC_PAGE_COUNT);
            if (n <= size / s->geo.page_size) r = 1;
            else if (mp__file_size(s->fd, &size) != 0) r = fail_os(s, errno, "lseek");
            else if (n <= size / s->geo.page_size) r = 1;
        }
        if (!r) r = check_length(s, size);
        if (!r) r = newer;
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

int mp_snap_refresh(mp_snap *s) {
    pthread_mutex_lock(&s->lock);
    int r = 0;
    if (s->closed) {
        r = fail(s, MP_E_UNAVAILABLE, "the snapshot is closed");
    } else if (s->fd < 0) {
        r = fail(s, MP_E_UNAVAILABLE, "a snapshot of a writer's commit does not refresh");
    } else {
        unsigned char raw[2 * MP_MAX_BLOCK];
        header h;
        int slot;
        r = newest(s, s->fd, s->geo.page_size, &h, raw, &slot);
        const unsigned char *x = raw + (size_t)slot * s->geo.block;
        if (!r && mp_get64(x + MP_REC_GENERATION) > s->rec.generation) {
            mp_snap keep = *s; /* on failure, the state it had */
            unsigned char *log_copy = malloc(s->log_len ? s->log_len : 1);
            mp_u64s runs = {0}, slots = {0};
            int ok = log_copy && !mp__reserve(&runs, s->runs.n) && !mp__reserve(&slots, s->slot_changes.n);
            if (!ok) {
                free(log_copy), free(runs.v), free(slots.v);
                r = fail(s, MP_E_NO_MEMORY, "out of memory");
            } else {
                mp__memcpy(log_copy, s->log, s->log_len);
                mp__memcpy(runs.v, s->runs.v, s->runs.n * 8), runs.n = s->runs.n;
                mp__memcpy(slots.v, s->slot_changes.v, s->slot_changes.n * 8), slots.n = s->slot_changes.n;
                r = adopt(s, x, slot);
                uint64_t need = s->rec.page_count * s->geo.page_size;
                if (!r && need > s->map_len) r = map_file(s, need);
                if (r) { /* back to what it had */
                    free(s->log), free(s->runs.v), free(s->slot_changes.v);
                    s->log = log_copy, s->log_len = keep.log_len, s->rec = keep.rec, s->slot = keep.slot;
                    s->runs = runs, s->slot_changes = slots;
                    forget(s);
                } else {
                    free(log_copy), free(runs.v), free(slots.v);
                    r = 1;
                }
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

int mp_snap_close(mp_snap *s) {
    pthread_mutex_lock(&s->lock);
    if (!s->closed) {
        s->closed = 1;
        if (s->owner) {
            pthread_mutex_lock(&s->owner->lock);
            mp__unpin(s->owner, s->rec.generation);
            pthread_mutex_unlock(&s->owner->lock);
            s->owner = NULL;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* -- reading ----------------------------------------------------------------------------- */

static int live(mp_snap *s) { return s->closed ? fail(s, MP_E_UNAVAILABLE, "the snapshot is closed") : 0; }

/* The validated block at (tree, level, index) named by p, or NULL with an error code in *r. */
static const unsigned char *block(mp_snap *s, int tree, mp_ptr p, unsigned level, uint64_t index, int *r) {
    uint64_t tag = (uint64_t)tree << 63 | (uint64_t)level << MP_LEVEL_SHIFT | index;
    if (s->seen_cap) {
        uint64_t h = (p.page * 0x9E3779B97F4A7C15ull ^ tag) & (s->seen_cap - 1);
        for (uint64_t i = 0; i < s->seen_cap; i++, h = (h + 1) & (s->seen_cap - 1)) {
            if (!s->seen[2 * h]) break;
            if (s->seen[2 * h] == p.page && s->seen[2 * h + 1] == tag) return s->map + p.page * s->geo.page_size;
        }
    }
    const unsigned char *b = mp__block(s->map, s->map_len, &s->geo, tree, p, level, index, s->rec.page_count,
                                       s->rec.checkpoint, s->msg, sizeof s->msg);
    if (!b) {
        *r = mp__tree_error(tree);
        s->err = 0;
        return NULL;
    }
    if (s->seen_n * 2 >= s->seen_cap) { /* grow the set (and rehash) */
        uint64_t cap = s->seen_cap ? 2 * s->seen_cap : 64;
        uint64_t *t = calloc((size_t)cap, 16);
        if (!t) return b; /* not remembered: validated again next time */
        for (uint64_t i = 0; i < s->seen_cap; i++)
            if (s->seen[2 * i]) {
                uint64_t h = (s->seen[2 * i] * 0x9E3779B97F4A7C15ull ^ s->seen[2 * i + 1]) & (cap - 1);
                while (t[2 * h]) h = (h + 1) & (cap - 1);
                t[2 * h] = s->seen[2 * i], t[2 * h + 1] = s->seen[2 * i + 1];
            }
        free(s->seen);
        s->seen = t;
        s->seen_cap = cap;
    }
    uint64_t h = (p.page * 0x9E3779B97F4A7C15ull ^ tag) & (s->seen_cap - 1);
    while (s->seen[2 * h]) h = (h + 1) & (s->seen_cap - 1);
    s->seen[2 * h] = p.page, s->seen[2 * h + 1] = tag;
    s->seen_n++;
    return b;
}

/* Leaf `index` of a tree (NULL and *r = 0 when it is empty). */
static const unsigned char *leaf(mp_snap *s, int tree, uint64_t index, int *r) {
    *r = 0;
    mp_ptr p = tree == MP_TREE_BITMAP ? (mp_ptr){s->rec.bitmap_root, s->rec.bitmap_crc} : (mp_ptr){s->rec.dir_root, s->rec.dir_crc};
    unsigned level = tree == MP_TREE_BITMAP ? s->rec.bitmap_height : s->rec.dir_height;
    if (!p.page || index >= mp_capacity(&s->geo, level)) return NULL;
    while (level) {
        uint64_t span = mp_capacity(&s->geo, level - 1);
        const unsigned char *b = block(s, tree, p, level, index / (span * s->geo.fanout), r);
        if (!b) return NULL;
        p = mp_ptr_get(b + MP_BLOCK_HEADER_SIZE + 16 * (index / span % s->geo.fanout));
        level--;
        if (!p.page) return NULL;
    }
    return block(s, tree, p, 0, index, r);
}

/* The run covering `page` (its kind), or -1. */
static int run_kind(const mp_snap *s, uint64_t page) {
    uint64_t lo = 0, hi = s->runs.n / 3;
    while (lo < hi) {
        uint64_t mid = (lo + hi) / 2;
        uint64_t a = s->runs.v[3 * mid], n = s->runs.v[3 * mid + 1];
        if (page < a)
            hi = mid;
        else if (page >= a + n)
            lo = mid + 1;
        else
            return (int)s->runs.v[3 * mid + 2];
    }
    return -1;
}

/* The kind of a page below the page count (0 free, 1 data, 2 internal), or an error. */
static int kind_of(mp_snap *s, uint64_t page) {
    int k = run_kind(s, page), r = 0;
    if (k >= 0) return k;
    const unsigned char *b = leaf(s, MP_TREE_BITMAP, page / s->geo.leaf_pages, &r);
    if (!b) return r;
    uint64_t bit = page % s->geo.leaf_pages;
    const unsigned char *body = b + MP_BLOCK_HEADER_SIZE;
    int used = body[bit >> 3] >> (bit & 7) & 1, data = body[s->geo.leaf_bytes + (bit >> 3)] >> (bit & 7) & 1;
    return !used ? 0 : data ? 1 : 2;
}

int mp_snap_kind(mp_snap *s, uint64_t page) {
    pthread_mutex_lock(&s->lock);
    int r = live(s);
    if (!r && page >= s->rec.page_count)
        r = fail(s, MP_E_OUT_OF_BOUNDS, "page %llu is beyond the file (%llu pages)", (unsigned long long)page,
                 (unsigned long long)s->rec.page_count);
    if (!r) r = kind_of(s, page);
    pthread_mutex_unlock(&s->lock);
    return r;
}

int mp_snap_kind_try(mp_snap *s, uint64_t page) {
    if (pthread_mutex_trylock(&s->lock) != 0) return -1;
    int r = !s->closed && page < s->rec.page_count ? kind_of(s, page) : -1;
    pthread_mutex_unlock(&s->lock);
    return r < 0 ? -1 : r;
}

int64_t mp_snap_kinds(mp_snap *s, uint64_t start, unsigned char *out, uint64_t n) {
    pthread_mutex_lock(&s->lock);
    int64_t r = live(s);
    if (!r && (start > s->rec.page_count || n > s->rec.page_count - start))
        r = fail(s, MP_E_OUT_OF_BOUNDS, "pages %llu .. %llu are beyond the file (%llu pages)", (unsigned long long)start,
                 (unsigned long long)(start + n), (unsigned long long)s->rec.page_count);
    for (uint64_t i = 0; !r && i < n; i++) {
        int k = kind_of(s, start + i);
        if (k < 0) r = k;
        else out[i] = (unsigned char)k;
    }
    if (!r) r = (int64_t)n;
    pthread_mutex_unlock(&s->lock);
    return r;
}

int64_t mp_snap_scan(mp_snap *s, uint64_t start, uint64_t *out, uint64_t limit) {
    pthread_mutex_lock(&s->lock);
    int r = live(s);
    uint64_t count = 0, n = s->rec.page_count, lp = s->geo.leaf_pages;
    for (uint64_t page = start; !r && page < n && count < limit;) {
        uint64_t k = page / lp, end = (k + 1) * lp < n ? (k + 1) * lp : n;
        const unsigned char *b = leaf(s, MP_TREE_BITMAP, k, &r);
        if (r) break;
        for (; page < end && count < limit; page++) {
            int kind = run_kind(s, page), data;
            if (kind >= 0) {
                data = kind == 1;
            } else if (b) {
                uint64_t bit = page - k * lp;
                data = b[MP_BLOCK_HEADER_SIZE + s->geo.leaf_bytes + (bit >> 3)] >> (bit & 7) & 1;
            } else {
                data = 0;
            }
            if (data) out[count++] = page;
            if (!b && !s->runs.n) page = end - 1; /* an empty leaf and no changes: skip it */
        }
    }
    pthread_mutex_unlock(&s->lock);
    return r ? r : (int64_t)count;
}

static int entry(mp_snap *s, uint64_t slot, mp_ptr *e) {
    for (uint64_t i = 0; i < s->slot_changes.n; i += 3)
        if (s->slot_changes.v[i] == slot) {
            e->page = s->slot_changes.v[i + 1];
            e->crc = (uint32_t)s->slot_changes.v[i + 2];
            return 0;
        }
    e->page = 0, e->crc = 0;
    if (slot >= s->rec.slot_count || !s->rec.dir_root) return 0;
    int r;
    const unsigned char *b = leaf(s, MP_TREE_DIR, slot / s->geo.fanout, &r);
    if (b) *e = mp_ptr_get(b + MP_BLOCK_HEADER_SIZE + 16 * (slot % s->geo.fanout));
    return r;
}

int mp_snap_pused(mp_snap *s, uint64_t slot) {
    pthread_mutex_lock(&s->lock);
    int r = live(s);
    mp_ptr e;
    if (!r) r = entry(s, slot, &e);
    if (!r) r = e.page != 0;
    pthread_mutex_unlock(&s->lock);
    return r;
}

int64_t mp_snap_ppage(mp_snap *s, uint64_t slot) {
    pthread_mutex_lock(&s->lock);
    int r = live(s);
    mp_ptr e = {0, 0};
    if (!r) r = entry(s, slot, &e);
    if (!r && !e.page) r = fail(s, MP_E_OUT_OF_BOUNDS, "protected page %llu is not allocated", (unsigned long long)slot);
    int verified = 0;
    for (uint64_t i = 0; !r && i < s->verified.n && !verified; i++) verified = s->verified.v[i] == slot;
    if (!r && !verified) {
        const uint32_t ps = s->geo.page_size;
        if (e.page < MP_RESERVED_PAGES || e.page >= s->rec.page_count || (e.page + 1) * ps > s->map_len)
            r = fail(s, MP_E_CORRUPT_DIRECTORY, "protected page %llu names page %llu", (unsigned long long)slot, (unsigned long long)e.page);
        else if (mp_crc32c(0, s->map + e.page * ps, ps) != e.crc)
            r = fail(s, MP_E_CORRUPT_DIRECTORY, "protected page %llu: its content (page %llu) does not match its checksum",
                     (unsigned long long)slot, (unsigned long long)e.page);
        else if (s->verified.n < 4096) /* remember a bounded number: the rest are checked each time */
            r = mp__push(&s->verified, slot) ? fail(s, MP_E_NO_MEMORY, "out of memory") : 0;
    }
    pthread_mutex_unlock(&s->lock);
    return r ? r : (int64_t)e.page;
}

int64_t mp_snap_pscan(mp_snap *s, uint64_t start, uint64_t *out, uint64_t limit) {
    pthread_mutex_lock(&s->lock);
    int r = live(s);
    uint64_t count = 0;
    for (uint64_t slot = start; !r && slot < s->rec.slot_count && count < limit; slot++) {
        mp_ptr e;
        r = entry(s, slot, &e);
        if (!r && e.page) out[count++] = slot;
    }
    pthread_mutex_unlock(&s->lock);
    return r ? r : (int64_t)count;
}

int64_t mp_snap_map_export(mp_snap *s, char **addr, uint64_t *len) {
    pthread_mutex_lock(&s->lock);
    int r = live(s);
    if (!r) {
        if (s->map_own) s->map_exported = 1;
        *addr = (char *)s->map;
        *len = s->map_len;
    }
    int64_t epoch = r ? r : (int64_t)s->map_epoch;
    pthread_mutex_unlock(&s->lock);
    return epoch;
}

const char *mp_snap_message(const mp_snap *s) { return s->msg; }
int mp_snap_errno(const mp_snap *s) { return s->err; }
uint32_t mp_snap_page_size(const mp_snap *s) { return s->geo.page_size; }
uint64_t mp_snap_generation(const mp_snap *s) { return s->rec.generation; }
uint64_t mp_snap_page_count(const mp_snap *s) { return s->rec.page_count; }
uint64_t mp_snap_free_count(const mp_snap *s) { return s->rec.free_count; }
uint64_t mp_snap_data_count(const mp_snap *s) { return s->rec.data_count; }
uint64_t mp_snap_slot_count(const mp_snap *s) { return s->rec.slot_count; }
uint64_t mp_snap_slots_used(const mp_snap *s) { return s->rec.slots_used; }
int mp_snap_record_slot(const mp_snap *s) { return s->slot; }

int64_t mp_snap_record(mp_snap *s, unsigned char *out, uint64_t len) {
    pthread_mutex_lock(&s->lock);
    int64_t r = s->closed ? fail(s, MP_E_UNAVAILABLE, "the snapshot is closed")
                : len < s->geo.block ? fail(s, MP_E_VALUE, "a record block is %u bytes", (unsigned)s->geo.block)
                                     : (int64_t)s->geo.block;
    if (r > 0) memcpy(out, s->record, s->geo.block);
    pthread_mutex_unlock(&s->lock);
    return r;
}
uint64_t mp_snap_map_epoch(const mp_snap *s) { return s->map_epoch; }
