/* Opening a file as its writer: page 0, the record in force, and the validation of the whole
 * state it names while building it in memory; the fall back to the record before it; the
 * upgrade of a format-1 file; the mapping and error reporting. _core_py/open.py is the same in
 * Python. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core.h"
#include "crc32c.h"

int mp__fail(mp_core *c, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
    c->err = 0;
    return code;
}

int mp__fail_os(mp_core *c, int err, const char *what) {
    snprintf(c->msg, sizeof c->msg, "%s: %s", what, strerror(err));
    c->err = err;
    return MP_E_OS;
}

mp_core *mp_new(void) {
    mp_core *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (pthread_mutex_init(&c->lock, NULL)) {
        free(c);
        return NULL;
    }
    if (pthread_cond_init(&c->batch_end, NULL)) {
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
    }
    c->fd = -1;
    c->words_start = -1;
    return c;
}

static void drop_map(mp_core *c) {
    if (c->map && !c->map_exported) munmap(c->map, (size_t)c->map_len);
    c->map = NULL;
    c->map_len = 0;
    c->map_exported = 0;
}

/* Forget the state in memory (before a load, or after a failed one). */
static void reset_state(mp_core *c) {
    mp_bitmap_release(&c->taken);
    mp_bitmap_release(&c->slots);
    free(c->internal);
    free(c->pending);
    free(c->born_bits);
    free(c->viewed_bits);
    free(c->written);
    free(c->slot_page);
    free(c->slot_crc);
    free(c->verified);
    c->internal = c->pending = c->born_bits = c->viewed_bits = c->written = NULL;
    c->slot_page = NULL;
    c->slot_crc = NULL;
    c->verified = NULL;
    c->bit_words = c->slot_cap = c->verified_words = 0;
    for (int t = 0; t < 2; t++) mp__tree_release(&c->trees[t]);
    c->fifo.n = c->fifo_head = c->nheld = 0;
    c->born.n = 0;
    c->undo_dirty.n = c->undo_slots.n = 0;
    c->words_start = -1;
    c->log_len = c->log_committed = 0;
    c->space_from = 0;
    c->tight = 0;
    memset(&c->counts, 0, sizeof c->counts);
}

void mp_free(mp_core *c) {
    if (!c) return;
    drop_map(c);
    reset_state(c);
    mp_u64s *arrays[] = {&c->fifo, &c->born, &c->undo_slots, &c->undo_dirty, &c->staged, &c->blocks, &c->sealed, &c->pins};
    for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++) free(arrays[i]->v);
    free(c->log);
    mp__table_free(c->table);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->batch_end);
    free(c);
}

void mp_unmap(char *addr, uint64_t len) {
    if (addr) munmap(addr, (size_t)len);
}

int mp__map(mp_core *c, uint64_t len) {
    if (len > SIZE_MAX) return mp__fail(c, MP_E_NO_MEMORY, "a mapping of %llu bytes does not fit the address space", (unsigned long long)len);
    int prot = PROT_READ | (c->writable ? PROT_WRITE : 0);
    /* A mapping holds the open file description it was made from, and the writer's flock
     * belongs to that description: a view outliving close() would keep the file locked. A
     * second description of the same file maps the same pages without sharing the lock. */
    char name[64];
    snprintf(name, sizeof name, "/proc/self/fd/%d", c->fd);
    int fd = open(name, (c->writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    void *m = mmap(NULL, (size_t)len, prot, MAP_SHARED, fd >= 0 ? fd : c->fd, 0);
    int err = errno;
    if (fd >= 0) close(fd);
    if (m == MAP_FAILED) return mp__fail_os(c, err, "mmap");
    drop_map(c);
    c->map = m;
    c->map_len = len;
    c->map_epoch++;
    return 0;
}

static int read_at(int fd, unsigned char *buf, uint64_t len, uint64_t off) {
    uint64_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, buf + done, (size_t)(len - done), (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) {
            memset(buf + done, 0, (size_t)(len - done)); /* past the end reads as zeros */
            return 0;
        }
        done += (uint64_t)r;
    }
    return 0;
}

static int read_fd(void *ctx, unsigned char *buf, uint64_t len, uint64_t off) {
    return read_at(*(int *)ctx, buf, len, off) ? MP_E_OS : 0;
}


int mp__header(int fd, uint32_t wanted, header *h, char *msg, size_t msg_len) {
#define BAD(code, ...)                                                                                  \
    do {                                                                                                \
        snprintf(msg, msg_len, __VA_ARGS__);                                                           \
        return code;                                                                                    \
    } while (0)
    if (mp__file_size(fd, &h->size) != 0) {
        int e = errno;
        snprintf(msg, msg_len, "lseek: %s", strerror(e));
        return -1000 - e;
    }
    if (h->size < 1024) BAD(MP_E_CORRUPT_SUPERBLOCK, "not a mappedpages file: shorter than a superblock");
    unsigned char head[1536];
    if (read_at(fd, head, sizeof head, 0)) BAD(MP_E_CORRUPT_SUPERBLOCK, "cannot read the superblock");
    if (memcmp(head, MP_MAGIC, 8) != 0) BAD(MP_E_CORRUPT_SUPERBLOCK, "not a mappedpages file: bad magic");
    if (mp_get32(head + MP_IDENTITY_CRC_OFFSET) != mp_crc32c(0, head, MP_IDENTITY_CRC_OFFSET))
        BAD(MP_E_CORRUPT_SUPERBLOCK, "superblock identity checksum mismatch");
    h->version = mp_get32(head + MP_ID_VERSION);
    h->page_size = mp_get32(head + MP_ID_PAGE_SIZE);
    uint32_t ps = h->page_size;
    if (h->version != MP_FORMAT_VERSION && h->version != MP_V1_VERSION)
        BAD(MP_E_CORRUPT_SUPERBLOCK, "format version %u is not supported", h->version);
    if (!mp_valid_page_size(ps)) BAD(MP_E_CORRUPT_SUPERBLOCK, "superblock page size %u is invalid", ps);
    if (wanted && wanted != ps) BAD(MP_E_PAGE_SIZE, "the file's page size is %u, not %u", ps, wanted);
    if (h->size / ps < 4) BAD(MP_E_CORRUPT_SUPERBLOCK, "file is shorter than its reserved pages");
    h->reserved[0] = 0, h->reserved[1] = 1, h->reserved[2] = 2;
    if (h->version == MP_FORMAT_VERSION) {
        h->records[0] = mp_get64(head + MP_ID_RECORD_0);
        h->records[1] = mp_get64(head + MP_ID_RECORD_1);
        memcpy(h->file_id, head + MP_ID_FILE_ID, 16);
        if (h->records[0] != 1 || h->records[1] != 2) BAD(MP_E_CORRUPT_SUPERBLOCK, "superblock identity fields are not valid");
        h->nreserved = 3;
        return 0;
    }
    unsigned sectors = ps >= 2048 ? 2 : 1;
    for (unsigned i = 0; i < sectors; i++) {
        const unsigned char *x = head + 512 + 512 * i;
        if (memcmp(x, MP_UPGRADE_MAGIC, 4) != 0 || mp_get32(x + MP_UPGRADE_CRC_OFFSET) != mp_crc32c(0, x, MP_UPGRADE_CRC_OFFSET))
            continue;
        h->records[0] = mp_get64(x + MP_UP_RECORD_0);
        h->records[1] = mp_get64(x + MP_UP_RECORD_1);
        memcpy(h->file_id, x + MP_UP_FILE_ID, 16);
        for (int k = 0; k < 2; k++)
            if (h->records[k] < 3 || h->records[k] >= h->size / ps || (h->records[k] + 1) * ps > h->size)
                BAD(MP_E_CORRUPT_SUPERBLOCK, "the upgrade pointer names impossible record pages");
        if (h->records[0] == h->records[1]) BAD(MP_E_CORRUPT_SUPERBLOCK, "the upgrade pointer names impossible record pages");
        h->reserved[3] = h->records[0];
        h->reserved[4] = h->records[1];
        h->nreserved = 5;
        return 0;
    }
    BAD(MP_E_VERSION1, "a format-1 file: Pager.open upgrades it");
#undef BAD
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_pair(const void *a, const void *b) {
    const uint64_t *x = a, *y = b;
    if (x[0] != y[0]) return (x[0] > y[0]) - (x[0] < y[0]);
    return (x[1] > y[1]) - (x[1] < y[1]);
}

#define CHECK(cond, code, ...)                                                                          \
    do {                                                                                                \
        if (!(cond)) {                                                                                  \
            r = mp__fail(c, code, __VA_ARGS__);                                                         \
            goto out;                                                                                   \
        }                                                                                               \
    } while (0)
#define OOM(expr) CHECK(!(expr), MP_E_NO_MEMORY, "out of memory")

/* Walk one tree of the record, storing every block's pointer; leaves go to `leaf`. */
typedef int (*leaf_fn)(mp_core *c, uint64_t index, const unsigned char *b, mp_u64s *pend);

static int walk(mp_core *c, int tree, mp_ptr root, unsigned height, uint64_t checkpoint, mp_u64s *refs,
                mp_u64s *pend, leaf_fn leaf) {
    mp_tree *t = &c->trees[tree];
    mp_u64s stack = {0}; /* triples level, index, pointer page | crc << 0 in two words */
    int r = 0;
    t->height = height;
    OOM(mp__reserve(&stack, 4));
    stack.v[0] = height, stack.v[1] = 0, stack.v[2] = root.page, stack.v[3] = root.crc;
    stack.n = 4;
    while (stack.n && !r) {
        stack.n -= 4;
        unsigned level = (unsigned)stack.v[stack.n];
        uint64_t index = stack.v[stack.n + 1];
        mp_ptr p = {stack.v[stack.n + 2], (uint32_t)stack.v[stack.n + 3]};
        char why[160];
        const unsigned char *b = mp__block(c->map, c->map_len, &c->geo, tree, p, level, index, c->counts.n, checkpoint, why, sizeof why);
        CHECK(b, mp__tree_error(tree), "%s", why);
        OOM(mp__push(refs, p.page));
        r = mp__tree_room(c, t, level, index + 1);
        if (r) break;
        t->level[level][index] = p;
        if (!level) {
            r = leaf(c, index, b, pend);
            continue;
        }
        for (uint64_t i = c->geo.fanout; i-- > 0;) {
            mp_ptr ch = mp_ptr_get(b + MP_BLOCK_HEADER_SIZE + 16 * i);
            if (!ch.page) {
                CHECK(!ch.crc, mp__tree_error(tree), "%s node %llu: a null pointer with a checksum",
                      tree ? "directory" : "bitmap", (unsigned long long)index);
                continue;
            }
            CHECK(index <= (UINT64_MAX - i) / c->geo.fanout, mp__tree_error(tree), "a tree too deep");
            OOM(mp__reserve(&stack, 4));
            stack.v[stack.n] = level - 1, stack.v[stack.n + 1] = index * c->geo.fanout + i;
            stack.v[stack.n + 2] = ch.page, stack.v[stack.n + 3] = ch.crc;
            stack.n += 4;
        }
    }
out:
    free(stack.v);
    return r;
}

static int bitmap_leaf(mp_core *c, uint64_t index, const unsigned char *b, mp_u64s *pend) {
    const mp_geometry *g = &c->geo;
    int r = 0;
    CHECK(index < mp_div_up(c->counts.n, g->leaf_pages), MP_E_CORRUPT_METADATA, "bitmap leaf %llu lies beyond the page count",
          (unsigned long long)index);
    uint64_t gen = mp_get64(b + MP_BLK_GENERATION), any = 0, w0 = index * g->leaf_pages / 64;
    for (uint64_t w = 0; w < g->leaf_bytes / 8; w++) {
        const unsigned char *body = b + MP_BLOCK_HEADER_SIZE;
        uint64_t u = mp_get64(body + 8 * w), d = mp_get64(body + g->leaf_bytes + 8 * w), p = mp_get64(body + 2 * g->leaf_bytes + 8 * w);
        CHECK(!(d & ~u) && !(p & u), MP_E_CORRUPT_METADATA, "bitmap leaf %llu: its bits contradict each other", (unsigned long long)index);
        uint64_t page0 = (w0 + w) * 64;
        if (page0 + 64 > c->counts.n) {
            uint64_t keep = page0 >= c->counts.n ? 0 : c->counts.n - page0;
            CHECK(!((u | p) >> keep) || keep == 64, MP_E_CORRUPT_METADATA, "bitmap leaf %llu: bits set beyond the page count",
                  (unsigned long long)index);
        }
        any |= u | p;
        c->taken.level[0][w0 + w] = u | p;
        c->internal[w0 + w] = u & ~d;
        c->pending[w0 + w] = p;
        for (uint64_t bits = p; bits; bits &= bits - 1) {
            OOM(mp__reserve(pend, 2));
            pend->v[pend->n++] = gen;
            pend->v[pend->n++] = page0 + (uint64_t)__builtin_ctzll(bits);
        }
    }
    CHECK(any, MP_E_CORRUPT_METADATA, "bitmap leaf %llu: its bits contradict each other", (unsigned long long)index);
out:
    return r;
}

static int dir_leaf(mp_core *c, uint64_t index, const unsigned char *b, mp_u64s *pend) {
    (void)pend;
    int r = 0, any = 0;
    for (uint64_t i = 0; i < c->geo.fanout; i++) {
        mp_ptr e = mp_ptr_get(b + MP_BLOCK_HEADER_SIZE + 16 * i);
        if (!e.page) {
            CHECK(!e.crc, MP_E_CORRUPT_DIRECTORY, "directory leaf %llu: a bad entry", (unsigned long long)index);
            continue;
        }
        any = 1;
        uint64_t s = index * c->geo.fanout + i;
        CHECK(s < c->counts.slot_count, MP_E_CORRUPT_DIRECTORY, "protected page %llu is beyond slot_count", (unsigned long long)s);
        c->slot_page[s] = e.page;
        c->slot_crc[s] = e.crc;
    }
    CHECK(any, MP_E_CORRUPT_DIRECTORY, "directory leaf %llu is stored empty", (unsigned long long)index);
out:
    return r;
}

/* Apply the record's log to the state the trees gave, checking every word. */
static int apply_log(mp_core *c, mp_u64s *pend) {
    int r = 0;
    uint64_t gen = 0, v[3];
    unsigned kind;
    int64_t pos = 0;
    while ((pos = mp__log_next(c->log, c->log_len, (uint64_t)pos, &kind, v)) > 0) {
        if (kind == MP_GEN) {
            gen = v[0];
            continue;
        }
        if (kind == MP_SLOT) {
            CHECK(v[0] < c->counts.slot_count, MP_E_CORRUPT_DIRECTORY, "the log names protected page %llu", (unsigned long long)v[0]);
            CHECK(!v[1] || (v[1] < c->counts.n && mp__is_used(c, v[1]) && mp__bit(c->internal, v[1])), MP_E_CORRUPT_DIRECTORY,
                  "protected page %llu names page %llu", (unsigned long long)v[0], (unsigned long long)v[1]);
            c->slot_page[v[0]] = v[1];
            c->slot_crc[v[0]] = (uint32_t)v[2];
            r = mp__dirty(c, MP_TREE_DIR, v[0] / c->geo.fanout);
            if (r) goto out;
            continue;
        }
        CHECK(v[0] + v[1] <= c->counts.n, MP_E_CORRUPT_METADATA, "the log names pages %llu..%llu beyond the file",
              (unsigned long long)v[0], (unsigned long long)(v[0] + v[1]));
        for (uint64_t p = v[0]; p < v[0] + v[1]; p++) {
            int used = mp__is_used(c, p), internal = mp__bit(c->internal, p);
            if (kind == MP_DATA || kind == MP_INTERNAL) {
                CHECK(!used, MP_E_CORRUPT_METADATA, "the log allocates page %llu, which is in use", (unsigned long long)p);
                if (mp__bit(c->pending, p))
                    mp__clr(c->pending, p); /* it was released, then reused */
                else
                    c->taken.level[0][p >> 6] |= (uint64_t)1 << (p & 63);
                if (kind == MP_INTERNAL) mp__set(c->internal, p);
            } else {
                CHECK(used && internal == (kind == MP_FREE_INTERNAL), MP_E_CORRUPT_METADATA,
                      "the log frees page %llu, which is not so in use", (unsigned long long)p);
                mp__clr(c->internal, p);
                mp__set(c->pending, p);
                OOM(mp__reserve(pend, 2));
                pend->v[pend->n++] = gen;
                pend->v[pend->n++] = p;
            }
            r = mp__dirty(c, MP_TREE_BITMAP, p / c->geo.leaf_pages);
            if (r) goto out;
        }
    }
    CHECK(pos == 0, MP_E_CORRUPT_METADATA, "the log has a malformed word");
out:
    return r;
}

static uint64_t popcount_words(const uint64_t *a, const uint64_t *not_b, uint64_t words) {
    uint64_t n = 0;
    for (uint64_t w = 0; w < words; w++) n += (uint64_t)__builtin_popcountll(a[w] & ~(not_b ? not_b[w] : 0));
    return n;
}

/* Validate the state the record x names (docs/FORMAT.md) and make it the state in memory. */
static int load_state(mp_core *c, const unsigned char *x, int slot) {
    mp_record rec;
    mp_record_decode(x, &rec);
    const mp_geometry *g = &c->geo;
    mp_u64s refs = {0}, pend = {0};
    uint64_t *seen = NULL;
    int r;
    reset_state(c);
    c->counts.n = rec.page_count;
    c->counts.slot_count = rec.slot_count;
    r = mp__map(c, rec.page_count * g->page_size);
    /* the walk touches a few scattered pages: read-around of each (read_ahead_kb, 128 KiB to
       MiBs) would read or zero-fill far more than the trees, on a large file most of it
       (docs/DESIGN.md, "Opening a large file"); the mapping is given back to the default advice
       once the state is loaded, for the pages users read */
    if (!r) madvise(c->map, (size_t)c->map_len, MADV_RANDOM);
    if (!r) r = mp__bits_room(c, rec.page_count);
    if (!r) r = mp__slot_room(c, rec.slot_count);
    if (r) goto out;
    for (unsigned i = 0; i < c->nreserved; i++) OOM(mp__push(&refs, c->reserved[i]));
    mp_ptr broot = {rec.bitmap_root, rec.bitmap_crc};
    r = walk(c, MP_TREE_BITMAP, broot, rec.bitmap_height, rec.checkpoint, &refs, &pend, bitmap_leaf);
    if (r) goto out;
    if (rec.dir_root) {
        mp_ptr droot = {rec.dir_root, rec.dir_crc};
        r = walk(c, MP_TREE_DIR, droot, rec.dir_height, rec.checkpoint, &refs, &pend, dir_leaf);
        if (r) goto out;
    }
    CHECK(mp__log_generations(x + MP_LOG_OFFSET, rec.log_len, rec.checkpoint, rec.generation), MP_E_CORRUPT_METADATA,
          "the log's generations are out of order");
    if (rec.log_len > c->log_cap) {
        unsigned char *l = realloc(c->log, rec.log_len < 4096 ? 4096 : rec.log_len);
        OOM(!l);
        c->log = l;
        c->log_cap = rec.log_len < 4096 ? 4096 : rec.log_len;
    }
    if (!c->log) {
        c->log = malloc(4096);
        OOM(!c->log);
        c->log_cap = 4096;
    }
    mp__memcpy(c->log, x + MP_LOG_OFFSET, rec.log_len);
    c->log_len = rec.log_len;
    r = apply_log(c, &pend);
    if (r) goto out;
    /* the counts, and every internal page referenced exactly once */
    uint64_t words = c->bit_words;
    uint64_t used = popcount_words(c->taken.level[0], c->pending, words);
    uint64_t internal = popcount_words(c->internal, NULL, words);
    uint64_t data = used - internal;
    CHECK(rec.page_count - used == rec.free_count && data == rec.data_count, MP_E_CORRUPT_METADATA,
          "the record's page counts disagree with the bitmap");
    uint64_t slots = 0;
    for (uint64_t s = 0; s < rec.slot_count; s++)
        if (c->slot_page[s]) {
            slots++;
            OOM(mp__push(&refs, c->slot_page[s]));
            mp_bitmap_set(&c->slots, s);
        }
    CHECK(slots == rec.slots_used, MP_E_CORRUPT_DIRECTORY, "the record's protected page count disagrees");
    mp__qsort(refs.v, refs.n, 8, cmp_u64);
    for (uint64_t i = 0; i < refs.n; i++) {
        CHECK(!i || refs.v[i] != refs.v[i - 1], MP_E_CORRUPT_METADATA, "internal page %llu is referenced twice",
              (unsigned long long)refs.v[i]);
        CHECK(refs.v[i] < rec.page_count && mp__is_used(c, refs.v[i]) && mp__bit(c->internal, refs.v[i]), MP_E_CORRUPT_METADATA,
              "internal page %llu is not marked internal and in use", (unsigned long long)refs.v[i]);
    }
    CHECK(internal == refs.n, MP_E_CORRUPT_METADATA, "the internal pages and the references to them disagree");
    /* the pending pages, oldest first, each once (a page freed, reused and freed again counts
     * from its last free) */
    seen = calloc((size_t)words, 8);
    OOM(!seen);
    c->fifo.n = c->fifo_head = 0;
    OOM(mp__reserve(&c->fifo, pend.n));
    for (uint64_t i = pend.n; i > 0; i -= 2) {
        uint64_t page = pend.v[i - 1];
        if (!mp__bit(c->pending, page) || mp__bit(seen, page)) continue;
        mp__set(seen, page);
        c->fifo.v[c->fifo.n++] = pend.v[i - 2];
        c->fifo.v[c->fifo.n++] = page;
    }
    mp__qsort(c->fifo.v, (c->fifo.n / 2), 16, cmp_pair);
    c->nheld = c->fifo.n / 2;
    mp_bitmap_summarise(&c->taken);
    /* adopt */
    c->gen = rec.generation;
    c->checkpoint = rec.checkpoint;
    c->rec = slot;
    c->counts.free = rec.free_count;
    c->counts.data = rec.data_count;
    c->counts.slots_used = rec.slots_used;
    c->committed = c->counts;
    c->log_committed = c->log_len;
    c->log_crc_committed = rec.log_crc;
    c->words_start = -1;
    c->undo_dirty.n = 0;
    mp__space_known(c);
out:
    free(refs.v);
    free(pend.v);
    free(seen);
    return r;
}

int mp_open(mp_core *c, int fd, uint32_t page_size, int flags) {
    if (c->open || c->closed) return mp__fail(c, MP_E_VALUE, "this core was already opened");
    if (page_size && !mp_valid_page_size(page_size))
        return mp__fail(c, MP_E_PAGE_SIZE, "page size %u is not a power of two between 1024 and 2**28", page_size);
    c->fd = fd;
    c->os_page = (uint64_t)sysconf(_SC_PAGESIZE);
    c->writable = !!(flags & MP_WRITABLE);
    c->sync = !!(flags & MP_SYNC);
    c->prealloc = !!(flags & MP_PREALLOCATE);
    header h;
    int r = mp__header(fd, page_size, &h, c->msg, sizeof c->msg);
    if (r <= -1000) return mp__fail_os(c, -1000 - r, "lseek");
    if (r) return r;
    c->geo = mp_geometry_of(h.page_size);
    memcpy(c->record_pages, h.records, sizeof h.records);
    memcpy(c->reserved, h.reserved, sizeof h.reserved);
    c->nreserved = h.nreserved;
    memcpy(c->file_id, h.file_id, 16);
    unsigned char *raw = malloc(2 * (size_t)c->geo.block);
    if (!raw) return mp__fail(c, MP_E_NO_MEMORY, "out of memory");
    const unsigned char *records[2] = {raw, raw + c->geo.block};
    for (int i = 0; i < 2; i++)
        if (read_at(fd, raw + (size_t)i * c->geo.block, c->geo.block, h.records[i] * h.page_size)) {
            free(raw);
            return mp__fail_os(c, errno, "pread");
        }
    int order[2], good, passed;
    r = mp__in_force(records, &c->geo, h.size, read_fd, &fd, order, &good, &passed);
    if (r == MP_E_TRUNCATED) {
        free(raw);
        return mp__fail(c, MP_E_CORRUPT_METADATA, "the file is shorter than the state of its newest commit: it was truncated");
    }
    if (r) {
        free(raw);
        return r == MP_E_OS ? mp__fail_os(c, errno, "pread") : mp__fail(c, r, "out of memory");
    }
    if (!good) {
        free(raw);
        return mp__fail(c, MP_E_CORRUPT_METADATA, "no valid commit record");
    }
    int first = 0, impossible = -1;
    char why[200] = "";
    for (int i = 0; i < 2; i++) {
        const char *w;
        if (mp__record_valid(records[i], &c->geo, h.size, &w) < 0) {
            impossible = i;
            snprintf(why, sizeof why, "record slot %d: %s", i, w);
        }
    }
    for (int k = 0; k < good; k++) {
        r = load_state(c, records[order[k]], order[k]);
        if (!r) break;
        if (k == 0) {
            first = r;
            memcpy(why, c->msg, sizeof why);
            impossible = -1;
        }
    }
    free(raw);
    if (c->map) madvise(c->map, (size_t)c->map_len, MADV_NORMAL);
    if (r) {
        reset_state(c);
        drop_map(c);
        c->closed = 1;
        memcpy(c->msg, why, sizeof why);
        return first;
    }
    if (passed && c->writable) {
        /* before anything else is written: were a later commit to make those pages match again
         * and be cut short itself, the record would return, naming blocks of that commit's state */
        for (int i = 0; i < 2; i++)
            if (passed & (1 << i)) memset(c->map + c->record_pages[i] * c->geo.page_size, 0, c->geo.block);
        if (c->sync) {
            for (int i = 0; i < 2 && !r; i++)
                if (passed & (1 << i)) {
                    uint64_t off = c->record_pages[i] * c->geo.page_size;
                    r = mp__sync_range(c, off, off + c->geo.block);
                }
            if (r) {
                c->closed = 1;
                return r;
            }
        }
    }
    c->open = 1;
    if (impossible >= 0 && !first) {
        char reason[200];
        memcpy(reason, why, sizeof reason);
        snprintf(c->msg, sizeof c->msg, "%.100s: damaged, passed over; opened generation %llu", reason,
                 (unsigned long long)c->gen);
        return MP_E_RECOVERED;
    }
    if (first) {
        char reason[200];
        memcpy(reason, why, sizeof reason);
        snprintf(c->msg, sizeof c->msg, "the newest commit's state is damaged (%.100s); opened the commit before it, generation %llu",
                 reason, (unsigned long long)c->gen);
        return MP_E_RECOVERED;
    }
    return 0;
}

int mp_upgrade(mp_core *c, int fd, int flags, uint32_t page_size, uint64_t n, uint64_t generation, uint64_t sector,
               const unsigned char *used, const unsigned char *keep, uint64_t bits_len, const uint64_t *slots,
               const uint64_t *pages, uint64_t nslots, uint64_t slot_count, const unsigned char *file_id) {
    if (c->open || c->closed) return mp__fail(c, MP_E_VALUE, "this core was already opened");
    if (!mp_valid_page_size(page_size) || n < 4 || bits_len < (n + 7) / 8 || n > MP_PAGE_LIMIT || slot_count > MP_PAGE_LIMIT)
        return mp__fail(c, MP_E_VALUE, "an impossible format-1 state");
    if (sector != 512 && !(sector == 1024 && page_size >= 2048)) return mp__fail(c, MP_E_VALUE, "no such record sector");
    c->fd = fd;
    c->os_page = (uint64_t)sysconf(_SC_PAGESIZE);
    c->writable = 1;
    c->sync = !!(flags & MP_SYNC);
    c->prealloc = !!(flags & MP_PREALLOCATE);
    c->geo = mp_geometry_of(page_size);
    const uint32_t ps = page_size;
    int r = 0;
    c->counts.n = n;
    r = mp__map(c, n * ps);
    if (!r) r = mp__bits_room(c, n);
    if (!r) r = mp__slot_room(c, slot_count);
    if (r) goto fail;
    c->gen = c->checkpoint = generation;
    uint64_t kept = 0, data = 0;
    for (uint64_t p = 0; p < n; p++) {
        int u = used[p >> 3] >> (p & 7) & 1, k = keep[p >> 3] >> (p & 7) & 1;
        if (k) {
            mp_bitmap_set(&c->taken, p);
            kept++;
        } else if (u) { /* format-1 pages format 2 has no use for: free once the upgrade commits */
            mp_bitmap_set(&c->taken, p);
            r = mp__hold(c, p, generation + 1);
            if (r) goto fail;
        }
    }
    mp__set(c->internal, 0), mp__set(c->internal, 1), mp__set(c->internal, 2);
    for (int p = 0; p < 3; p++)
        if (!(keep[p >> 3] >> (p & 7) & 1)) {
            r = mp__fail(c, MP_E_VALUE, "format-1 page %d is not kept", p);
            goto fail;
        }
    for (uint64_t i = 0; i < nslots; i++) {
        /* each a kept page of its own, each slot once */
        if (slots[i] >= slot_count || pages[i] < MP_RESERVED_PAGES || pages[i] >= n || !(keep[pages[i] >> 3] >> (pages[i] & 7) & 1) ||
            mp__bit(c->internal, pages[i]) || mp_bitmap_get(&c->slots, slots[i])) {
            r = mp__fail(c, MP_E_VALUE, "an impossible format-1 protected page");
            goto fail;
        }
        mp__set(c->internal, pages[i]);
        c->slot_page[slots[i]] = pages[i];
        c->slot_crc[slots[i]] = mp_crc32c(0, c->map + pages[i] * ps, ps);
        mp_bitmap_set(&c->slots, slots[i]);
    }
    data = kept - 3 - nslots;
    c->counts.free = n - kept;
    c->counts.data = data;
    c->counts.slot_count = slot_count;
    c->counts.slots_used = nslots;
    c->committed = c->counts;
    for (uint64_t k = 0; k < mp_div_up(n, c->geo.leaf_pages) && !r; k++) r = mp__dirty(c, MP_TREE_BITMAP, k);
    for (uint64_t k = 0; k < mp_div_up(slot_count, c->geo.fanout) && !r; k++) r = mp__dirty(c, MP_TREE_DIR, k);
    if (r) goto fail;
    c->open = 1;
    mp__space_known(c);
    uint64_t rp[2];
    for (int i = 0; i < 2 && !r; i++) r = mp__take_lowest(c, 1, &rp[i]);
    if (r) goto fail;
    for (int i = 0; i < 2; i++) memset(c->map + rp[i] * ps, 0, ps);
    if (mp__push(&c->staged, rp[1])) {
        r = mp__fail(c, MP_E_NO_MEMORY, "out of memory");
        goto fail;
    }
    c->record_pages[0] = rp[0];
    c->record_pages[1] = rp[1];
    c->reserved[0] = 0, c->reserved[1] = 1, c->reserved[2] = 2, c->reserved[3] = rp[0], c->reserved[4] = rp[1];
    c->nreserved = 5;
    memcpy(c->file_id, file_id, 16);
    c->rec = 1; /* so that the commit writes record slot 0 */
    c->force_checkpoint = c->forced = 1;
    r = mp__commit(c);
    if (r) goto fail;
    unsigned char *x = c->map + sector;
    memset(x, 0, MP_UPGRADE_SIZE);
    memcpy(x + MP_UP_MAGIC, MP_UPGRADE_MAGIC, 4);
    mp_put64(x + MP_UP_RECORD_0, rp[0]);
    mp_put64(x + MP_UP_RECORD_1, rp[1]);
    memcpy(x + MP_UP_FILE_ID, file_id, 16);
    mp_put32(x + MP_UPGRADE_CRC_OFFSET, mp_crc32c(0, x, MP_UPGRADE_CRC_OFFSET));
    if (c->sync && (r = mp__sync_range(c, 0, MP_UPGRADE_SIZE * 3)) != 0) {
        c->poisoned = 1;
        return r;
    }
    return 0;
fail:
    c->open = 0;
    c->closed = 1;
    return r;
}

/* Accessors take no lock: each reads one field, and a torn read is impossible for them. */
const char *mp_message(const mp_core *c) { return c->msg; }
int mp_errno(const mp_core *c) { return c->err; }
uint32_t mp_page_size(const mp_core *c) { return c->geo.page_size; }
uint64_t mp_page_count(const mp_core *c) { return c->counts.n; }
uint64_t mp_free_count(const mp_core *c) { return c->counts.free; }
uint64_t mp_data_count(const mp_core *c) { return c->counts.data; }
uint64_t mp_slot_count(const mp_core *c) { return c->counts.slot_count; }
uint64_t mp_slots_used(const mp_core *c) { return c->counts.slots_used; }
uint64_t mp_generation(const mp_core *c) { return c->gen; }
uint64_t mp_checkpoint(const mp_core *c) { return c->checkpoint; }
uint64_t mp_log_bytes(const mp_core *c) { return c->log_len; }
uint64_t mp_map_epoch(const mp_core *c) { return c->map_epoch; }
void mp_file_id(const mp_core *c, unsigned char *out) { memcpy(out, c->file_id, 16); }
