/* Opening a file: validation of every structure, choice of the metadata copy and of each
 * group's copy, and loading the bitmap; also closing, mapping and error reporting. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
    c->fd = -1;
    return c;
}

static void drop_map(mp_core *c) {
    if (c->map && !c->map_exported) munmap(c->map, (size_t)c->map_len);
    c->map = NULL;
    c->map_len = 0;
    c->map_exported = 0;
}

void mp_free(mp_core *c) {
    if (!c) return;
    drop_map(c);
    mp_bitmap_release(&c->bits);
    free(c->gflags);
    free(c->touched);
    free(c->held);
    free(c->held_bits);
    pthread_mutex_destroy(&c->lock);
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

int mp__group_room(mp_core *c, uint64_t groups) {
    if (groups <= c->gcap) return 0;
    uint64_t cap = c->gcap ? c->gcap : 16;
    while (cap < groups) cap *= 2;
    uint8_t *f = realloc(c->gflags, (size_t)cap);
    if (!f) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for %llu bitmap groups", (unsigned long long)groups);
    memset(f + c->gcap, 0, (size_t)(cap - c->gcap));
    c->gflags = f;
    uint64_t *t = realloc(c->touched, (size_t)cap * 8);
    if (!t) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for %llu bitmap groups", (unsigned long long)groups);
    c->touched = t;
    c->gcap = cap;
    return 0;
}

void mp__touch(mp_core *c, uint64_t k, unsigned flag) {
    if (!(c->gflags[k] & (G_DIRTY | G_STALE))) c->touched[c->ntouched++] = k;
    c->gflags[k] |= (uint8_t)flag;
}

/* Generation of a valid block at `page` of the mapping or of `data`, 0 for an invalid one. */
static uint64_t block_gen(const mp_core *c, const unsigned char *b, uint64_t page, const char *magic) {
    if (memcmp(b, magic, 4) != 0) return 0;
    if (mp_get64(b + 16) != page || mp_get64(b + 24) != 0) return 0;
    if (mp_get32(b + 4) != mp_crc32c(0, b + 8, c->geo.block - 8)) return 0;
    return mp_get64(b + 8);
}

static int read_at(mp_core *c, unsigned char *buf, size_t len, uint64_t off) {
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(c->fd, buf + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return mp__fail_os(c, errno, "pread");
        if (r == 0) return mp__fail(c, MP_E_CORRUPT_SUPERBLOCK, "file ends inside its header");
        done += (size_t)r;
    }
    return 0;
}

/* Bits of group k: first page and number of bytes, and where they sit in the group's block. */
static void group_span(const mp_core *c, uint64_t k, uint64_t *first, uint64_t *bytes, unsigned *offset) {
    *first = mp_group_start(&c->geo, k);
    *bytes = (k == 0 ? c->geo.c0 : c->geo.c) / 8;
    *offset = k == 0 ? MP_META_BITMAP_OFFSET : MP_GROUP_BITMAP_OFFSET;
}

/* Whether the pages a one-barrier commit's record lists hold what it wrote (none: yes). */
static int check_pages(mp_core *c, const unsigned char *x, uint64_t n, uint64_t size, int *ok) {
    const uint64_t ps = c->geo.page_size;
    uint32_t count = mp_get32(x + MP_RECORD_CHECK_OFFSET);
    *ok = 1;
    unsigned char *buf = count ? malloc((size_t)ps) : NULL;
    if (count && !buf) return mp__fail(c, MP_E_NO_MEMORY, "out of memory");
    int r = 0;
    for (uint32_t i = 0; i < count && *ok && !r; i++) {
        const unsigned char *e = x + MP_RECORD_CHECK_OFFSET + 8 + 12 * i;
        uint64_t page = mp_get64(e);
        if (page < MP_RESERVED_PAGES || page >= n || page >= size / ps) {
            *ok = 0;
            break;
        }
        r = read_at(c, buf, (size_t)ps, page * ps);
        *ok = !r && mp_crc32c(0, buf, (size_t)ps) == mp_get32(e + 8);
    }
    free(buf);
    return r;
}

/* A record well formed by itself (whether its metadata and pages match is checked apart). */
static int record_valid(const unsigned char *x, uint32_t ps) {
    uint32_t count = mp_get32(x + MP_RECORD_CHECK_OFFSET), flags = mp_get32(x + MP_RECORD_CHECK_OFFSET + 4);
    uint32_t len = mp_get32(x + 20);
    uint64_t g = mp_get64(x + 8), mg = mp_get64(x + 24);
    return memcmp(x, MP_RECORD_MAGIC, 4) == 0 && mp_get32(x + MP_RECORD_CRC_OFFSET) == mp_crc32c(0, x, MP_RECORD_CRC_OFFSET) &&
           mp_get32(x + 4) <= 1 && len <= MP_RECORD_LOG_MAX && len % 4 == 0 && mg && mg <= g &&
           flags <= MP_RECORD_ONE_BARRIER && count <= (flags ? MP_RECORD_CHECKS : 0) &&
           (!flags || ps <= MP_ONE_BARRIER_MAX_PAGE);
}

static int load(mp_core *c, uint32_t wanted) {
    struct stat st;
    if (fstat(c->fd, &st) != 0) return mp__fail_os(c, errno, "fstat");
    uint64_t size = (uint64_t)st.st_size;
    if (size < 1024) return mp__fail(c, MP_E_CORRUPT_SUPERBLOCK, "not a mappedpages file: shorter than a superblock");
    unsigned char head[1024];
    int r = read_at(c, head, sizeof head, 0);
    if (r) return r;
    if (memcmp(head, MP_MAGIC, 8) != 0) return mp__fail(c, MP_E_CORRUPT_SUPERBLOCK, "not a mappedpages file: bad magic");
    if (mp_get32(head + MP_IDENTITY_CRC_OFFSET) != mp_crc32c(0, head, MP_IDENTITY_CRC_OFFSET))
        return mp__fail(c, MP_E_CORRUPT_SUPERBLOCK, "superblock identity checksum mismatch");
    uint32_t version = mp_get32(head + 8), ps = mp_get32(head + 12);
    if (version != MP_FORMAT_VERSION) return mp__fail(c, MP_E_CORRUPT_SUPERBLOCK, "format version %u is not supported", version);
    if (!mp_valid_page_size(ps)) return mp__fail(c, MP_E_CORRUPT_SUPERBLOCK, "superblock page size %u is invalid", ps);
    if (wanted && wanted != ps) return mp__fail(c, MP_E_PAGE_SIZE, "the file's page size is %u, not %u", ps, wanted);
    if (size / ps < 3) return mp__fail(c, MP_E_CORRUPT_SUPERBLOCK, "file is shorter than its three reserved pages");
    c->geo = mp_geometry_of(ps);
    const uint32_t m = c->geo.block;

    unsigned char *metas = malloc(2 * (size_t)m);
    if (!metas) return mp__fail(c, MP_E_NO_MEMORY, "out of memory");
    uint64_t gens[2];
    for (int i = 0; i < 2; i++) {
        r = read_at(c, metas + (size_t)i * m, m, (uint64_t)(1 + i) * ps);
        if (r) goto out;
        gens[i] = block_gen(c, metas + (size_t)i * m, 1 + (uint64_t)i, MP_META_MAGIC);
    }
    /* the newest valid commit record whose metadata copy matches it; none (a damaged page 0
     * or active metadata copy): the newest valid metadata copy, with an empty log */
    unsigned char rec1[MP_RECORD_SIZE];
    const unsigned char *records[2] = {head + MP_RECORD_OFFSET, rec1};
    unsigned nrec = mp_record_count(ps);
    if (nrec > 1) {
        r = read_at(c, rec1, sizeof rec1, MP_RECORD_OFFSET + MP_RECORD_SIZE);
        if (r) goto out;
    }
    int cand[2], nc = 0;
    for (unsigned i = 0; i < nrec; i++)
        if (record_valid(records[i], ps)) cand[nc++] = (int)i;
    if (nc == 2 && mp_get64(records[cand[1]] + 8) > mp_get64(records[cand[0]] + 8)) {
        cand[0] = 1;
        cand[1] = 0;
    }
    int chosen = -1, rec = 0;
    unsigned erase = 0; /* bit i: record i is newer than the one in force */
    uint64_t gen = 0, meta_gen = 0;
    const unsigned char *log = NULL;
    uint32_t log_len = 0;
    for (int k = 0; k < nc && chosen < 0; k++) {
        const unsigned char *x = records[cand[k]];
        uint32_t active = mp_get32(x + 4);
        int ok = gens[active] == mp_get64(x + 24) && mp_get32(metas + (size_t)active * m + 4) == mp_get32(x + 16);
        if (ok) {
            r = check_pages(c, x, mp_get64(metas + (size_t)active * m + MP_META_FIELDS_OFFSET), size, &ok);
            if (r) goto out;
        }
        if (!ok) { /* a commit cut short (or a damaged metadata copy): the one before it */
            erase |= 1u << cand[k];
            continue;
        }
        chosen = (int)active;
        rec = cand[k];
        gen = mp_get64(x + 8);
        meta_gen = mp_get64(x + 24);
        log = x + MP_RECORD_LOG_OFFSET;
        log_len = mp_get32(x + 20);
    }
    if (chosen < 0) {
        if (!gens[0] && !gens[1]) {
            r = mp__fail(c, MP_E_CORRUPT_METADATA, "neither metadata copy is valid");
            goto out;
        }
        chosen = gens[0] >= gens[1] ? 0 : 1;
        gen = meta_gen = gens[chosen];
    }
    const unsigned char *meta = metas + (size_t)chosen * m;
    uint64_t n = mp_get64(meta + MP_META_FIELDS_OFFSET);
    uint64_t free_count = mp_get64(meta + MP_META_FIELDS_OFFSET + 8);
    if (n < 3 || n > size / ps) {
        r = mp__fail(c, MP_E_CORRUPT_METADATA, "metadata page count %llu does not fit the file", (unsigned long long)n);
        goto out;
    }
    if (mp_fix_end(&c->geo, n) != n) {
        r = mp__fail(c, MP_E_CORRUPT_METADATA, "page count %llu cuts a bitmap group", (unsigned long long)n);
        goto out;
    }
    for (int i = 0; i < 2; i++) {
        c->dir[i] = mp_get64(meta + MP_META_FIELDS_OFFSET + 16 + 8 * (unsigned)i);
        if (c->dir[i] >= n || (c->dir[i] && c->dir[i] < MP_RESERVED_PAGES)) {
            r = mp__fail(c, MP_E_CORRUPT_METADATA, "directory index page %llu is outside the file",
                         (unsigned long long)c->dir[i]);
            goto out;
        }
    }
    if ((c->dir[0] == 0) != (c->dir[1] == 0) || (c->dir[0] && c->dir[0] == c->dir[1])) {
        r = mp__fail(c, MP_E_CORRUPT_METADATA, "the directory index needs two distinct pages");
        goto out;
    }
    c->active = chosen;
    c->rec = rec;
    c->gen = gen;
    c->meta_gen = meta_gen;
    if (log_len) memcpy(c->log, log, log_len);
    memcpy(c->log_committed, c->log, log_len);
    c->log_len = c->log_len_committed = log_len;
    mp__clear_commit(c);
    c->n = n;
    r = mp__map(c, n * ps);
    if (r) goto out;
    if (erase && c->writable) {
        /* before anything else is written: were a later commit to make those pages match again
         * and be cut short itself, the record would return, naming blocks of that commit */
        for (unsigned i = 0; i < 2; i++)
            if (erase & (1u << i)) memset(c->map + MP_RECORD_OFFSET + (uint64_t)i * MP_RECORD_SIZE, 0, MP_RECORD_SIZE);
        if (c->sync) {
            r = mp__sync_range(c, 0, 1);
            if (r) goto out;
        }
    }
    uint64_t groups = mp_group_count(&c->geo, n);
    r = mp__group_room(c, groups);
    if (r) goto out;
    uint64_t first, bytes;
    unsigned offset;
    group_span(c, groups - 1, &first, &bytes, &offset);
    if (mp_bitmap_resize(&c->bits, first + bytes * 8)) {
        r = mp__fail(c, MP_E_NO_MEMORY, "out of memory for the bitmap of %llu pages", (unsigned long long)n);
        goto out;
    }
    mp_bitmap_load(&c->bits, 0, meta + MP_META_BITMAP_OFFSET, m - MP_META_BITMAP_OFFSET);
    for (uint64_t k = 1; k < groups; k++) {
        uint64_t s = mp_group_start(&c->geo, k);
        int best = -1;
        uint64_t best_gen = 0;
        for (int i = 0; i < 2; i++) {
            uint64_t g = block_gen(c, c->map + (s + (uint64_t)i) * ps, s + (uint64_t)i, MP_GROUP_MAGIC);
            if (g > c->gen)
                mp__touch(c, k, G_STALE);
            else if (g > best_gen) {
                best = i;
                best_gen = g;
            }
        }
        if (best < 0) {
            r = mp__fail(c, MP_E_CORRUPT_METADATA, "bitmap group %llu has no valid copy", (unsigned long long)k);
            goto out;
        }
        if (best) c->gflags[k] |= G_CUR;
        group_span(c, k, &first, &bytes, &offset);
        mp_bitmap_load(&c->bits, first, c->map + (s + (uint64_t)best) * ps + offset, bytes);
    }
    mp_bitmap_trim(&c->bits, n);
    mp_bitmap_summarise(&c->bits);
    uint64_t used = mp_bitmap_popcount(&c->bits);
    if (n - used != free_count) {
        r = mp__fail(c, MP_E_CORRUPT_METADATA, "free count %llu disagrees with the bitmap (%llu)",
                     (unsigned long long)free_count, (unsigned long long)(n - used));
        goto out;
    }
    for (uint64_t p = 0; p < 3; p++)
        if (!mp_bitmap_get(&c->bits, p)) {
            r = mp__fail(c, MP_E_CORRUPT_METADATA, "reserved pages 0-2 are not marked in use");
            goto out;
        }
    for (uint64_t k = 1; k < groups; k++) {
        uint64_t s = mp_group_start(&c->geo, k);
        if (!mp_bitmap_get(&c->bits, s) || !mp_bitmap_get(&c->bits, s + 1)) {
            r = mp__fail(c, MP_E_CORRUPT_METADATA, "bitmap group %llu: its copy pages are not marked in use", (unsigned long long)k);
            goto out;
        }
    }
    c->free = free_count;
    r = 0;
out:
    free(metas);
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
    int r = load(c, page_size);
    if (r) {
        c->closed = 1;
        drop_map(c);
        return r;
    }
    c->open = 1;
    return 0;
}

/* Accessors take no lock: each reads one field, and a torn read is impossible for them. */
const char *mp_message(const mp_core *c) { return c->msg; }
int mp_errno(const mp_core *c) { return c->err; }
uint32_t mp_page_size(const mp_core *c) { return c->geo.page_size; }
uint64_t mp_page_count(const mp_core *c) { return c->n; }
uint64_t mp_free_count(const mp_core *c) { return c->free; }
uint64_t mp_generation(const mp_core *c) { return c->gen; }
int mp_active(const mp_core *c) { return c->active; }
uint64_t mp_map_epoch(const mp_core *c) { return c->map_epoch; }
uint64_t mp_directory(const mp_core *c, int copy) { return c->dir[copy ? 1 : 0]; }
