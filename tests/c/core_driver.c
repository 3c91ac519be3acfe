/* Exercises the C core directly, for builds with AddressSanitizer and UndefinedBehaviorSanitizer
 * (tests/test_c_sanitizers.py, tests/c/fuzz.sh): every function of csrc/mappedpages.h, with
 * every kind of bad argument; snapshots that must keep their pages while the writer frees and
 * rewrites them; an upgrade of a format-1 state; then mutated files through the writer and
 * through snapshots.
 *
 * usage: core_driver FILE BASE SCRATCH MUTATIONS LOGGED
 *   FILE     a freshly created 1 KiB-page file (it is modified, and FILE-readers is created
 *            beside it); as created, the original of a fifth as many mutations
 *   BASE     a busy 1 KiB-page file (several bitmap leaves, protected pages, pending pages, a
 *            non-empty log), the original of MUTATIONS mutations
 *   SCRATCH  a path the mutated copies are written to (best on tmpfs)
 *   LOGGED   a 4 KiB-page file whose commit record logs protected writes (it is modified); as
 *            created, the original of a fifth as many mutations
 * Prints "hostile files: N, of which opened: M" for LOGGED, FILE and BASE, in that order.
 * Exits 0 when every check held; prints the failed checks otherwise. With MAPPEDPAGES_KEEP set
 * to a directory, each mutated file a check failed on is saved there, and the one in use is
 * written there before each run (so that a sanitizer's abort leaves it behind). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core.h" /* the bitmap for its self-check, and the format's offsets */

static int failures;
static const char *context = ""; /* which mutated file a failed check was about */
static char context_buf[200];
#define CHECK(cond)                                                                             \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "%s:%d: check failed: %s%s\n", __FILE__, __LINE__, #cond, context); \
            failures++;                                                                         \
        }                                                                                       \
    } while (0)

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill_random(unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)rnd();
}

/* -- mappings the core handed over: unmapped once nothing can use them ----------------------- */

static struct {
    char *addr;
    uint64_t len;
} maps[256];
static int nmaps;

static void keep_map(char *addr, uint64_t len) {
    for (int i = 0; i < nmaps; i++)
        if (maps[i].addr == addr) return;
    CHECK(nmaps < (int)(sizeof maps / sizeof *maps));
    if (nmaps < (int)(sizeof maps / sizeof *maps)) maps[nmaps].addr = addr, maps[nmaps++].len = len;
}

static int64_t export_map(mp_core *c, char **addr, uint64_t *len) {
    int64_t epoch = mp_map_export(c, addr, len);
    if (epoch >= 0) keep_map(*addr, *len);
    return epoch;
}

/* A snapshot of a file owns its mapping, until exported; one of a writer borrows the writer's. */
static int64_t export_snap_map(mp_snap *s, char **addr, uint64_t *len, int owned) {
    int64_t epoch = mp_snap_map_export(s, addr, len);
    if (epoch >= 0 && owned) keep_map(*addr, *len);
    return epoch;
}

static void drop_maps(void) {
    for (int i = 0; i < nmaps; i++) mp_unmap(maps[i].addr, maps[i].len);
    mp_unmap(NULL, 0);
    nmaps = 0;
}

/* -- files ------------------------------------------------------------------------------- */

static unsigned char *slurp(const char *path, size_t *size) {
    int fd = open(path, O_RDONLY);
    struct stat st;
    CHECK(fd >= 0 && fstat(fd, &st) == 0);
    *size = (size_t)st.st_size;
    unsigned char *img = malloc(*size ? *size : 1);
    CHECK(img && pread(fd, img, *size, 0) == (ssize_t)*size);
    close(fd);
    return img;
}

static void spit(const char *path, const unsigned char *img, size_t len) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && pwrite(fd, img, len, 0) == (ssize_t)len);
    close(fd);
}

static mp_core *open_file(const char *path, int flags, int *fd_out, int *rc) {
    int fd = open(path, flags & MP_WRITABLE ? O_RDWR : O_RDONLY);
    CHECK(fd >= 0);
    mp_core *c = mp_new();
    CHECK(c != NULL);
    *rc = mp_open(c, fd, 0, flags);
    *fd_out = fd;
    return c;
}

static void *begin_batch(void *core) {
    CHECK(mp_begin((mp_core *)core) == 0);
    return NULL;
}

static void shut(mp_core *c, int fd) {
    CHECK(mp_close(c) == 0);
    mp_free(c);
    close(fd);
}

/* The record in force, read from the file: the valid one of the higher generation. */
static void record_in_force(int fd, uint32_t ps, unsigned char *out) {
    const uint32_t block = ps < MP_MAX_BLOCK ? ps : MP_MAX_BLOCK;
    unsigned char a[MP_MAX_BLOCK], b[MP_MAX_BLOCK];
    CHECK(pread(fd, a, block, ps) == (ssize_t)block && pread(fd, b, block, 2 * (off_t)ps) == (ssize_t)block);
    int a_ok = memcmp(a, MP_RECORD_MAGIC, 4) == 0, b_ok = memcmp(b, MP_RECORD_MAGIC, 4) == 0;
    int use_b = b_ok && (!a_ok || mp_get64(b + MP_REC_GENERATION) > mp_get64(a + MP_REC_GENERATION));
    memcpy(out, use_b ? b : a, block);
}

/* -- self-checks of the pieces below the interface ------------------------------------------ */

static void crc_paths_agree(void) {
    unsigned char buf[70000];
    fill_random(buf, sizeof buf);
    for (int t = 0; t < 300; t++) {
        size_t off = rnd() % 64, len = rnd() % (sizeof buf - 64);
        if (t < 40) len = (size_t)t;
        CHECK(mp_crc32c_select(0) == 0 && mp_crc32c_select(-2) == 0);
        uint32_t table = mp_crc32c(0, buf + off, len);
        int hw = mp_crc32c_select(-1);
        CHECK((hw == 0 || hw == 1) && mp_crc32c_select(-2) == hw);
        uint32_t best = mp_crc32c(0, buf + off, len);
        CHECK(table == best);
        size_t cut = len ? rnd() % len : 0;
        CHECK(mp_crc32c(mp_crc32c(0, buf + off, cut), buf + off + cut, len - cut) == best);
    }
    CHECK(mp_crc32c(0, (const unsigned char *)"123456789", 9) == 0xE3069283u);
    CHECK(mp_crc32c(0, buf, 0) == 0);
}

/* The summary bitmap against a plain scan, through growth, shrinking and random bit flips. */
static void bitmap_matches_naive(void) {
    mp_bitmap b = {0};
    uint64_t size = 0;
    for (int round = 0; round < 400; round++) {
        uint64_t next = round % 37 == 36 ? size / 2 : size + 1 + rnd() % (round < 300 ? 5000 : 300000);
        CHECK(mp_bitmap_resize(&b, next) == 0);
        if (next < size) { /* as a rollback does: bits past the end are cleared */
            mp_bitmap_trim(&b, next);
            mp_bitmap_summarise(&b);
        }
        size = b.nbits;
        for (int k = 0; k < 200; k++) {
            uint64_t i = rnd() % size;
            if (rnd() % 3) mp_bitmap_set(&b, i); else mp_bitmap_clear(&b, i);
        }
        if (rnd() % 4 == 0) /* fill everything up to a point: long runs of full words */
            for (uint64_t i = 0; i < size * 3 / 4; i++) mp_bitmap_set(&b, i);
        uint64_t naive = UINT64_MAX;
        for (uint64_t i = 0; i < size; i++)
            if (!mp_bitmap_get(&b, i)) {
                naive = i;
                break;
            }
        CHECK(mp_bitmap_first_clear(&b) == naive);
    }
    mp_bitmap_release(&b);
}

/* -- what a state shows through the interface -------------------------------------------------- */

/* Counts, and a checksum of every answer: kind of each page (pending reads as free, as it does
 * in a snapshot), the scans, and the content page (or error) of each slot. A writer and a
 * snapshot of the same commit must give the same view. */
typedef struct {
    uint64_t n, free, data, slot_count, slots_used, gen;
    uint64_t scanned, pscanned, errors;
    uint64_t kinds, scan, pscan, ppage;
} view;

/* (a view hashes every page of a file, several times per mutated file: cheaply) */
static uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001B3ull + (h >> 29); }

static int same_view(const view *a, const view *b) {
    int same = a->n == b->n && a->free == b->free && a->data == b->data && a->slot_count == b->slot_count &&
               a->slots_used == b->slots_used && a->gen == b->gen && a->scanned == b->scanned &&
               a->pscanned == b->pscanned && a->errors == b->errors && a->kinds == b->kinds && a->scan == b->scan &&
               a->pscan == b->pscan && a->ppage == b->ppage;
    if (!same)
        fprintf(stderr,
                "views differ: n %llu/%llu free %llu/%llu data %llu/%llu slots %llu/%llu used %llu/%llu gen %llu/%llu "
                "scanned %llu/%llu pscanned %llu/%llu errors %llu/%llu kinds %d scan %d pscan %d ppage %d\n",
                (unsigned long long)a->n, (unsigned long long)b->n, (unsigned long long)a->free,
                (unsigned long long)b->free, (unsigned long long)a->data, (unsigned long long)b->data,
                (unsigned long long)a->slot_count, (unsigned long long)b->slot_count,
                (unsigned long long)a->slots_used, (unsigned long long)b->slots_used, (unsigned long long)a->gen,
                (unsigned long long)b->gen, (unsigned long long)a->scanned, (unsigned long long)b->scanned,
                (unsigned long long)a->pscanned, (unsigned long long)b->pscanned, (unsigned long long)a->errors,
                (unsigned long long)b->errors, a->kinds == b->kinds, a->scan == b->scan, a->pscan == b->pscan,
                a->ppage == b->ppage);
    return same;
}

static int is_error(int64_t r) { return r < 0 && r >= MP_E_VERSION1; }

static view writer_view(mp_core *c) {
    view v;
    memset(&v, 0, sizeof v);
    v.n = mp_page_count(c);
    v.free = mp_free_count(c);
    v.data = mp_data_count(c);
    v.slot_count = mp_slot_count(c);
    v.slots_used = mp_slots_used(c);
    v.gen = mp_generation(c);
    for (uint64_t p = 0; p < v.n; p++) {
        int k = mp_kind(c, p);
        CHECK(k >= 0 && k <= 3);
        CHECK(mp_kind_try(c, p) == k); /* no other thread: the lock is free */
        v.kinds = mix(v.kinds, (uint64_t)(k == 3 ? 0 : k));
    }
    uint64_t out[512], start = 0, last = 0;
    for (;;) {
        int64_t got = mp_scan(c, start, out, 512);
        CHECK(got >= 0 && got <= 512);
        if (got <= 0 || got > 512) break;
        int ordered = 1;
        for (int64_t i = 0; i < got; i++) {
            ordered &= (v.scanned == 0 || out[i] > last) && out[i] < v.n;
            last = out[i];
            v.scan = mix(v.scan, out[i]);
            v.scanned++;
        }
        CHECK(ordered);
        if (!ordered) break;
        start = last + 1;
    }
    CHECK(v.scanned == v.data); /* the writer's counts are its state's */
    start = 0;
    for (;;) {
        int64_t got = mp_pscan(c, start, out, 512);
        CHECK(got >= 0 && got <= 512);
        if (got <= 0 || got > 512) break;
        int ordered = 1;
        for (int64_t i = 0; i < got; i++) {
            ordered &= (v.pscanned == 0 || out[i] > last) && out[i] < v.slot_count;
            last = out[i];
            v.pscan = mix(v.pscan, out[i]);
            v.pscanned++;
        }
        CHECK(ordered);
        if (!ordered) break;
        start = last + 1;
    }
    CHECK(v.pscanned == v.slots_used);
    for (uint64_t s = 0; s <= v.slot_count; s++) {
        int64_t r = mp_ppage(c, s);
        int used = mp_pused(c, s);
        CHECK(used == 0 || used == 1);
        CHECK(used ? r >= 3 || r == MP_E_CORRUPT_DIRECTORY : r == MP_E_OUT_OF_BOUNDS);
        if (r >= 3) CHECK(mp_kind(c, (uint64_t)r) == 2);
        if (r < 0 && r != MP_E_OUT_OF_BOUNDS) v.errors++;
        v.ppage = mix(v.ppage, (uint64_t)r);
    }
    return v;
}

/* `healthy`: a snapshot of a state a writer validated, whose counts are its scans' (2: one the
 * writer built, in which nothing may fail at all). */
static view snap_view(mp_snap *s, int healthy) {
    view v;
    memset(&v, 0, sizeof v);
    v.n = mp_snap_page_count(s);
    v.free = mp_snap_free_count(s);
    v.data = mp_snap_data_count(s);
    v.slot_count = mp_snap_slot_count(s);
    v.slots_used = mp_snap_slots_used(s);
    v.gen = mp_snap_generation(s);
    for (uint64_t p = 0; p < v.n; p++) {
        int k = mp_snap_kind(s, p);
        CHECK((k >= 0 && k <= 2) || is_error(k));
        CHECK(mp_snap_kind_try(s, p) == (k < 0 ? -1 : k));
        if (k < 0) v.errors++;
        v.kinds = mix(v.kinds, (uint64_t)(int64_t)k);
    }
    uint64_t out[512], start = 0, last = 0;
    for (;;) {
        int64_t got = mp_snap_scan(s, start, out, 512);
        CHECK((got >= 0 && got <= 512) || is_error(got));
        if (got < 0) v.errors++;
        if (got <= 0 || got > 512) break;
        int ordered = 1;
        for (int64_t i = 0; i < got; i++) {
            ordered &= (v.scanned == 0 || out[i] > last) && out[i] < v.n;
            last = out[i];
            v.scan = mix(v.scan, out[i]);
            v.scanned++;
        }
        CHECK(ordered);
        if (!ordered) break;
        start = last + 1;
    }
    start = 0;
    for (;;) {
        int64_t got = mp_snap_pscan(s, start, out, 512);
        CHECK((got >= 0 && got <= 512) || is_error(got));
        if (got < 0) v.errors++;
        if (got <= 0 || got > 512) break;
        int ordered = 1;
        for (int64_t i = 0; i < got; i++) {
            ordered &= (v.pscanned == 0 || out[i] > last) && out[i] < v.slot_count;
            last = out[i];
            v.pscan = mix(v.pscan, out[i]);
            v.pscanned++;
        }
        CHECK(ordered);
        if (!ordered) break;
        start = last + 1;
    }
    for (uint64_t slot = 0; slot <= v.slot_count; slot++) {
        int64_t r = mp_snap_ppage(s, slot);
        int used = mp_snap_pused(s, slot);
        CHECK(used == 0 || used == 1 || is_error(used));
        CHECK(r >= 3 || is_error(r));
        if (used == 0) CHECK(r == MP_E_OUT_OF_BOUNDS);
        if (r < 0 && r != MP_E_OUT_OF_BOUNDS) v.errors++;
        v.ppage = mix(v.ppage, (uint64_t)r);
    }
    CHECK(mp_snap_pused(s, UINT64_MAX) == 0 || is_error(mp_snap_pused(s, UINT64_MAX)));
    CHECK(mp_snap_kind(s, v.n) == MP_E_OUT_OF_BOUNDS && mp_snap_kind(s, UINT64_MAX) == MP_E_OUT_OF_BOUNDS);
    CHECK(mp_snap_kind_try(s, v.n) == -1 && mp_snap_kind_try(s, UINT64_MAX) == -1);
    CHECK(mp_snap_scan(s, UINT64_MAX, out, 8) == 0 && mp_snap_pscan(s, UINT64_MAX, out, 8) == 0);
    if (healthy) CHECK(v.scanned == v.data && v.pscanned == v.slots_used);
    if (healthy == 2) CHECK(v.errors == 0);
    return v;
}

/* Kind of every page of a snapshot: what the writer must leave alone while it lives. */
static int *snap_kinds(mp_snap *s) {
    uint64_t n = mp_snap_page_count(s);
    int *k = malloc((size_t)n * sizeof *k);
    CHECK(k != NULL);
    for (uint64_t p = 0; k && p < n; p++) {
        k[p] = mp_snap_kind(s, p);
        CHECK(k[p] >= 0 && k[p] <= 2);
    }
    return k;
}

/* The content of every protected page of a snapshot, read through `map`. */
typedef struct {
    uint64_t n, *slots, *pages;
    unsigned char *bytes;
} contents;

static contents snap_contents(mp_snap *s, const char *map, uint32_t ps) {
    contents t;
    uint64_t used = mp_snap_slots_used(s);
    t.n = 0;
    t.slots = malloc((size_t)(used + 1) * 8);
    t.pages = malloc((size_t)(used + 1) * 8);
    t.bytes = malloc((size_t)(used + 1) * ps);
    CHECK(t.slots && t.pages && t.bytes);
    int64_t got = mp_snap_pscan(s, 0, t.slots, used);
    CHECK(got == (int64_t)used);
    for (int64_t i = 0; i < got; i++) {
        int64_t page = mp_snap_ppage(s, t.slots[i]);
        CHECK(page >= 3);
        if (page < 3) continue;
        t.pages[t.n] = (uint64_t)page;
        memcpy(t.bytes + t.n * ps, map + (uint64_t)page * ps, ps);
        t.slots[t.n++] = t.slots[i];
    }
    return t;
}

static void same_contents(mp_snap *s, const contents *t, const char *map, uint32_t ps) {
    for (uint64_t i = 0; i < t->n; i++) {
        CHECK(mp_snap_ppage(s, t->slots[i]) == (int64_t)t->pages[i]);
        CHECK(memcmp(t->bytes + i * ps, map + t->pages[i] * ps, ps) == 0);
    }
}

static void free_contents(contents *t) {
    free(t->slots);
    free(t->pages);
    free(t->bytes);
}

/* A checksum of every page a snapshot reads (its tree blocks, content pages and data pages):
 * the bytes a writer must not touch while the snapshot lives. (Not the record slots, which
 * every commit writes: a snapshot keeps a copy of its record.) */
static uint64_t read_pages_digest(const char *map, const int *kinds, uint64_t n, uint32_t ps) {
    uint64_t h = 0;
    for (uint64_t p = MP_RESERVED_PAGES; p < n; p++)
        if (kinds[p]) h = mix(h, mp_crc32c(0, (const unsigned char *)map + p * ps, ps));
    return h;
}

/* -- a writer at work -------------------------------------------------------------------------- */

/* Pages a snapshot reads: none of them may be handed out while it lives. */
typedef struct {
    const int *kinds;
    uint64_t n;
} guard;

static void guarded(const guard *g, uint64_t page) {
    if (g && page < g->n) CHECK(g->kinds[page] == 0);
}

static int64_t some_data_page(mp_core *c) {
    uint64_t out;
    if (mp_scan(c, rnd() % mp_page_count(c), &out, 1) == 1 || mp_scan(c, 0, &out, 1) == 1) return (int64_t)out;
    return -1;
}

static int64_t some_slot(mp_core *c) {
    uint64_t out;
    uint64_t sc = mp_slot_count(c);
    if (!sc) return -1;
    if (mp_pscan(c, rnd() % sc, &out, 1) == 1 || mp_pscan(c, 0, &out, 1) == 1) return (int64_t)out;
    return -1;
}

/* `commits` commits of every kind of change, checking each page handed out against `g`;
 * `grow`: some of them grow the file. */
static void churn(mp_core *c, const guard *g, int commits, int grow) {
    const uint32_t ps = mp_page_size(c);
    unsigned char *buf = malloc(ps);
    static uint64_t bulk[140000];
    CHECK(buf != NULL);
    for (int i = 0; i < commits && buf; i++) {
        uint64_t gen = mp_generation(c);
        int64_t p, slot;
        switch (i % 6) {
        case 0:
            p = some_data_page(c);
            if (p >= 0) CHECK(mp_free_page(c, (uint64_t)p) == 0 && mp_kind(c, (uint64_t)p) != 1);
            break;
        case 1:
            slot = some_slot(c);
            if (slot < 0) break;
            fill_random(buf, ps);
            CHECK(mp_pwrite(c, (uint64_t)slot, buf, ps) == 0);
            p = mp_ppage(c, (uint64_t)slot);
            CHECK(p >= 3);
            if (p >= 3) guarded(g, (uint64_t)p);
            break;
        case 2:
            p = mp_alloc(c);
            CHECK(p >= 3);
            if (p >= 3) guarded(g, (uint64_t)p);
            break;
        case 3: {
            uint64_t s;
            CHECK(mp_palloc(c, &s, 1) == 0);
            p = mp_ppage(c, s);
            CHECK(p >= 3);
            if (p >= 3) guarded(g, (uint64_t)p);
            break;
        }
        case 4:
            slot = some_slot(c);
            if (slot >= 0 && mp_slots_used(c) > 8) {
                uint64_t s = (uint64_t)slot;
                CHECK(mp_pfree(c, &s, 1) == 0 && mp_pused(c, s) == 0);
            }
            break;
        default: {
            uint64_t k = 1 + rnd() % 20, n0 = mp_page_count(c);
            int growing = grow && i == 5 && mp_free_count(c) < sizeof bulk / sizeof *bulk - 100;
            if (growing) k = mp_free_count(c) + 1 + rnd() % 100; /* more than there is: each growth doubles */
            CHECK(mp_alloc_bulk(c, bulk, k) == 0);
            for (uint64_t j = 0; j < k; j++) guarded(g, bulk[j]);
            if (growing) CHECK(mp_page_count(c) > n0 && mp_free_bulk(c, bulk, k) == 0);
            break;
        }
        }
        if (i % 17 == 16) {
            CHECK(mp_checkpoint_now(c) == 0);
            CHECK(mp_checkpoint(c) == mp_generation(c) && mp_log_bytes(c) == 0);
        }
        CHECK(mp_generation(c) >= gen);
    }
    free(buf);
}

/* -- the writer on a fresh file ---------------------------------------------------------------- */

static void fresh_state(mp_core *c, int fd) {
    CHECK(mp_page_size(c) == 1024 && mp_page_count(c) == 16 && mp_free_count(c) == 12);
    CHECK(mp_data_count(c) == 0 && mp_slot_count(c) == 0 && mp_slots_used(c) == 0);
    CHECK(mp_generation(c) == 1 && mp_checkpoint(c) == 1 && mp_log_bytes(c) == 0);
    unsigned char id[16], page0[64];
    mp_file_id(c, id);
    CHECK(pread(fd, page0, 64, 0) == 64 && memcmp(id, page0 + MP_ID_FILE_ID, 16) == 0);
    for (uint64_t p = 0; p < 16; p++) CHECK(mp_kind(c, p) == (p < 4 ? 2 : 0));
    uint64_t out[4];
    CHECK(mp_scan(c, 0, out, 4) == 0 && mp_pscan(c, 0, out, 4) == 0);
    CHECK(mp_pused(c, 0) == 0 && mp_ppage(c, 0) == MP_E_OUT_OF_BOUNDS);
    CHECK(mp_pending(c) == 0);
}

/* Each call fails with its code and leaves the whole state as it was. */
#define FAILS(call, code)                                   \
    do {                                                    \
        CHECK((call) == (code));                            \
        view after_ = writer_view(c);                       \
        CHECK(same_view(&before, &after_));                 \
        CHECK(mp_log_bytes(c) == log_before);               \
    } while (0)

static void bad_arguments(mp_core *c, const uint64_t *pages) {
    const uint32_t ps = mp_page_size(c);
    unsigned char buf[1024];
    fill_random(buf, sizeof buf);
    CHECK(mp_free_page(c, pages[5]) == 0);   /* a free page, */
    uint64_t freed_slot = 10;                /* a free slot */
    CHECK(mp_pfree(c, &freed_slot, 1) == 0);
    CHECK(mp_reclaim(c) == 0);
    uint64_t n = mp_page_count(c), sc = mp_slot_count(c), log_before = mp_log_bytes(c);
    int64_t content = mp_ppage(c, 0);
    CHECK(content >= 3 && mp_kind(c, (uint64_t)content) == 2);
    uint64_t block = 0; /* a tree block: internal, and no slot's content */
    for (uint64_t p = 3; p < n && !block; p++) {
        if (mp_kind(c, p) != 2) continue;
        int held = 0;
        for (uint64_t s = 0; s < sc && !held; s++) held = mp_ppage(c, s) == (int64_t)p;
        if (!held) block = p;
    }
    CHECK(block >= 3);
    view before = writer_view(c);

    FAILS(mp_free_page(c, n), MP_E_OUT_OF_BOUNDS);
    FAILS(mp_free_page(c, n + 1), MP_E_OUT_OF_BOUNDS);
    FAILS(mp_free_page(c, UINT64_MAX), MP_E_OUT_OF_BOUNDS);
    for (uint64_t p = 0; p < 3; p++) FAILS(mp_free_page(c, p), MP_E_RESERVED);
    FAILS(mp_free_page(c, (uint64_t)content), MP_E_RESERVED);
    FAILS(mp_free_page(c, block), MP_E_RESERVED);
    FAILS(mp_free_page(c, pages[5]), MP_E_DOUBLE_FREE);
    FAILS(mp_kind(c, n), MP_E_OUT_OF_BOUNDS);
    FAILS(mp_kind(c, UINT64_MAX), MP_E_OUT_OF_BOUNDS);
    CHECK(mp_kind_try(c, n) == -1 && mp_kind_try(c, UINT64_MAX) == -1);
    uint64_t none[1];
    FAILS(mp_alloc_bulk(c, none, UINT64_MAX), MP_E_VALUE); /* more pages than any file holds */
    FAILS(mp_alloc_bulk(c, none, (1ull << 48) - n + 1), MP_E_VALUE);

    uint64_t dup[3] = {pages[6], pages[7], pages[6]};
    FAILS(mp_free_bulk(c, dup, 3), MP_E_DOUBLE_FREE);
    uint64_t beyond[2] = {pages[8], n + 5};
    FAILS(mp_free_bulk(c, beyond, 2), MP_E_OUT_OF_BOUNDS);
    uint64_t huge[2] = {pages[8], UINT64_MAX};
    FAILS(mp_free_bulk(c, huge, 2), MP_E_OUT_OF_BOUNDS);
    uint64_t reserved[2] = {pages[8], 1};
    FAILS(mp_free_bulk(c, reserved, 2), MP_E_RESERVED);
    uint64_t internal[3] = {pages[8], pages[9], (uint64_t)content};
    FAILS(mp_free_bulk(c, internal, 3), MP_E_RESERVED);
    uint64_t blocks[2] = {block, pages[8]};
    FAILS(mp_free_bulk(c, blocks, 2), MP_E_RESERVED);
    uint64_t again[2] = {pages[8], pages[5]};
    FAILS(mp_free_bulk(c, again, 2), MP_E_DOUBLE_FREE);
    FAILS(mp_flush_pages(c, beyond, 2), MP_E_OUT_OF_BOUNDS);
    FAILS(mp_flush_pages(c, huge, 2), MP_E_OUT_OF_BOUNDS);

    uint64_t s1[1] = {sc}, s2[1] = {UINT64_MAX}, s3[2] = {0, 0}, s4[2] = {1, sc}, s5[1] = {freed_slot};
    uint64_t s6[3] = {2, 3, 2};
    FAILS(mp_pfree(c, s1, 1), MP_E_OUT_OF_BOUNDS);
    FAILS(mp_pfree(c, s2, 1), MP_E_OUT_OF_BOUNDS);
    FAILS(mp_pfree(c, s3, 2), MP_E_DOUBLE_FREE);
    FAILS(mp_pfree(c, s4, 2), MP_E_OUT_OF_BOUNDS);
    FAILS(mp_pfree(c, s5, 1), MP_E_OUT_OF_BOUNDS); /* a free slot */
    FAILS(mp_pfree(c, s6, 3), MP_E_DOUBLE_FREE);
    FAILS(mp_pwrite(c, sc, buf, ps), MP_E_OUT_OF_BOUNDS);
    FAILS(mp_pwrite(c, UINT64_MAX, buf, ps), MP_E_OUT_OF_BOUNDS);
    FAILS(mp_pwrite(c, freed_slot, buf, ps), MP_E_OUT_OF_BOUNDS);
    FAILS(mp_pwrite(c, 0, buf, ps - 1), MP_E_VALUE);
    FAILS(mp_pwrite(c, 0, buf, ps + 1), MP_E_VALUE);
    FAILS(mp_pwrite(c, 0, buf, 0), MP_E_VALUE);
    FAILS(mp_pwrite(c, 0, buf, UINT64_MAX), MP_E_VALUE);
    FAILS(mp_ppage(c, sc), MP_E_OUT_OF_BOUNDS);
    FAILS(mp_ppage(c, UINT64_MAX), MP_E_OUT_OF_BOUNDS);
    FAILS(mp_ppage(c, freed_slot), MP_E_OUT_OF_BOUNDS);
    FAILS(mp_pused(c, sc), 0);
    FAILS(mp_pused(c, UINT64_MAX), 0);
    FAILS(mp_pused(c, freed_slot), 0);
    FAILS(mp_commit_step(c, 99), MP_E_VALUE);
    FAILS(mp_commit_step(c, -1), MP_E_VALUE);

    /* nothing to do is no commit */
    uint64_t out[8];
    FAILS(mp_scan(c, n, out, 8), 0);
    FAILS(mp_scan(c, UINT64_MAX, out, 8), 0);
    FAILS(mp_scan(c, 0, out, 0), 0);
    FAILS(mp_pscan(c, sc, out, 8), 0);
    FAILS(mp_pscan(c, UINT64_MAX, out, 8), 0);
    FAILS(mp_pscan(c, 0, out, 0), 0);
    FAILS(mp_alloc_bulk(c, out, 0), 0);
    FAILS(mp_free_bulk(c, out, 0), 0);
    FAILS(mp_palloc(c, out, 0), 0);
    FAILS(mp_pfree(c, out, 0), 0);
    FAILS(mp_flush_pages(c, out, 0), 0);
    FAILS(mp_commit(c), 0);
    FAILS(mp_rollback(c), 0);
    FAILS(mp_reclaim(c), 0);
    FAILS(mp_pending(c), 0);
    CHECK(strlen(mp_message(c)) > 0 && mp_errno(c) == 0);
}

/* Protected pages: fresh ones read as zeros, a write goes to a new page and its old page is
 * pending until the next call, slots are reused lowest first. */
static void protected_pages(mp_core *c, uint64_t *slots, uint64_t nslots) {
    const uint32_t ps = mp_page_size(c);
    unsigned char buf[1024], zero[1024] = {0};
    char *addr;
    uint64_t len;
    uint64_t used0 = mp_slots_used(c), count0 = mp_slot_count(c);
    CHECK(mp_palloc(c, slots, nslots) == 0);
    CHECK(mp_slot_count(c) == count0 + nslots && mp_slots_used(c) == used0 + nslots);
    CHECK(export_map(c, &addr, &len) >= 0);
    for (uint64_t i = 0; i < nslots; i++) {
        CHECK(slots[i] == count0 + i && mp_pused(c, slots[i]) == 1);
        int64_t page = mp_ppage(c, slots[i]);
        CHECK(page >= 3 && mp_kind(c, (uint64_t)page) == 2 && (uint64_t)page < len / ps);
        if (page >= 3 && (uint64_t)page < len / ps) CHECK(memcmp(addr + (uint64_t)page * ps, zero, ps) == 0);
    }
    for (uint64_t i = 0; i < nslots; i += 7) {
        int64_t old = mp_ppage(c, slots[i]);
        fill_random(buf, ps);
        uint64_t gen = mp_generation(c);
        CHECK(mp_pwrite(c, slots[i], buf, ps) == 0 && mp_generation(c) == gen + 1);
        int64_t now = mp_ppage(c, slots[i]);
        CHECK(now >= 3 && now != old && mp_kind(c, (uint64_t)now) == 2);
        CHECK(mp_kind(c, (uint64_t)old) == 3); /* the commit before may still be read */
        CHECK(export_map(c, &addr, &len) >= 0 && memcmp(addr + (uint64_t)now * ps, buf, ps) == 0);
        CHECK(mp_reclaim(c) == 0 && mp_kind(c, (uint64_t)old) == 0);
    }
    uint64_t one[3] = {slots[3], slots[4], slots[5]};
    int64_t page = mp_ppage(c, one[0]);
    CHECK(mp_pfree(c, one, 3) == 0 && mp_pused(c, one[0]) == 0 && mp_kind(c, (uint64_t)page) == 3);
    CHECK(mp_slots_used(c) == used0 + nslots - 3);
    uint64_t back[2];
    CHECK(mp_palloc(c, back, 2) == 0 && back[0] == one[0] && back[1] == one[1]);
    CHECK(mp_palloc(c, back, 1) == 0 && back[0] == one[2]);
}

/* Batches: what they change is theirs until the commit, and a rollback takes it all back. */
static void batches(mp_core *c, const uint64_t *pages) {
    const uint32_t ps = mp_page_size(c);
    unsigned char buf[1024];
    static uint64_t more[60000];
    view before = writer_view(c);
    uint64_t gen = mp_generation(c), log0 = mp_log_bytes(c);
    int64_t content = mp_ppage(c, 0);
    /* growth, new slots, writes and frees, all rolled back */
    CHECK(mp_begin(c) == 0 && mp_begin(c) == 0);
    CHECK(mp_alloc_bulk(c, more, 60000) == 0 && mp_page_count(c) > before.n);
    uint64_t slots[5], freed[2] = {1, 2};
    CHECK(mp_palloc(c, slots, 5) == 0 && mp_slot_count(c) >= before.slot_count);
    fill_random(buf, ps);
    CHECK(mp_pwrite(c, 0, buf, ps) == 0 && mp_ppage(c, 0) != content);
    CHECK(mp_pfree(c, freed, 2) == 0);
    CHECK(mp_free_bulk(c, pages + 1000, 500) == 0);
    CHECK(mp_checkpoint_now(c) == 0);
    CHECK(mp_pending(c) == 0 && mp_generation(c) == gen);
    CHECK(mp_rollback(c) == 0);
    view after = writer_view(c);
    CHECK(same_view(&before, &after) && mp_log_bytes(c) == log0 && mp_ppage(c, 0) == content);
    CHECK(mp_pending(c) == 0 && mp_generation(c) == gen);

    /* pages the committed state uses, freed in a batch, are held until the commit */
    uint64_t held[3] = {pages[9], pages[10], pages[8]};
    CHECK(mp_begin(c) == 0);
    CHECK(mp_free_page(c, pages[8]) == 0 && mp_kind(c, pages[8]) == 3);
    CHECK(mp_free_page(c, pages[8]) == MP_E_DOUBLE_FREE);
    CHECK(mp_free_bulk(c, held, 3) == MP_E_DOUBLE_FREE && mp_kind(c, pages[9]) == 1);
    CHECK(mp_free_bulk(c, held, 2) == 0 && mp_data_count(c) == before.data - 3);
    for (int i = 0; i < 3000; i++) {
        int64_t p = mp_alloc(c);
        CHECK(p > 2 && (uint64_t)p != pages[8] && (uint64_t)p != pages[9] && (uint64_t)p != pages[10]);
    }
    CHECK(mp_rollback(c) == 0);
    after = writer_view(c);
    CHECK(same_view(&before, &after) && mp_kind(c, pages[8]) == 1);
    CHECK(mp_begin(c) == 0 && mp_free_bulk(c, held, 3) == 0 && mp_commit(c) == 0);
    CHECK(mp_generation(c) == gen + 1 && mp_kind(c, pages[8]) == 3);
    CHECK(mp_reclaim(c) == 0 && mp_kind(c, pages[8]) == 0 && mp_data_count(c) == before.data - 3);

    /* a slot written twice in one commit: the second write goes where the first did */
    unsigned char a[1024], b[1024];
    char *addr;
    uint64_t len;
    fill_random(a, ps);
    fill_random(b, ps);
    CHECK(mp_begin(c) == 0 && mp_pwrite(c, 1, a, ps) == 0);
    int64_t first = mp_ppage(c, 1);
    CHECK(mp_pwrite(c, 1, b, ps) == 0 && mp_ppage(c, 1) == first && mp_commit(c) == 0);
    CHECK(export_map(c, &addr, &len) >= 0 && first >= 3 && memcmp(addr + (uint64_t)first * ps, b, ps) == 0);
    CHECK(mp_generation(c) == gen + 2);
}

/* Commits that only append to the record's log carry their words in it; when it is full, a
 * checkpoint writes the trees and empties it. */
static void checkpoints(mp_core *c, int fd) {
    const uint32_t ps = mp_page_size(c);
    const uint64_t room = (ps < MP_MAX_BLOCK ? ps : MP_MAX_BLOCK) - MP_LOG_OFFSET;
    unsigned char rec[MP_MAX_BLOCK];
    int checkpointed = 0;
    for (int i = 0; i < 400; i++) {
        uint64_t gen = mp_generation(c), cp = mp_checkpoint(c), log0 = mp_log_bytes(c);
        int64_t p = i % 2 ? some_data_page(c) : mp_alloc(c);
        CHECK(p >= 3);
        if (p < 3) break;
        if (i % 2) CHECK(mp_free_page(c, (uint64_t)p) == 0);
        CHECK(mp_generation(c) == gen + 1);
        if (mp_checkpoint(c) != cp) {
            checkpointed++;
            CHECK(mp_checkpoint(c) == gen + 1 && mp_log_bytes(c) == 0 && log0 + 16 > room);
        } else {
            CHECK(mp_log_bytes(c) == log0 + 16 && mp_log_bytes(c) <= room);
        }
        record_in_force(fd, ps, rec);
        uint64_t log_len = mp_get32(rec + MP_REC_LOG_LEN);
        CHECK(mp_get64(rec + MP_REC_GENERATION) == gen + 1 && log_len == mp_log_bytes(c));
        CHECK(mp_get64(rec + MP_REC_CHECKPOINT) == mp_checkpoint(c));
        if (log_len >= 16 && log_len <= room) {
            const unsigned char *w = rec + MP_LOG_OFFSET + log_len - 16;
            CHECK(mp_get64(w) == ((uint64_t)MP_GEN << MP_KIND_SHIFT | (gen + 1)));
            CHECK(mp_get64(w + 8) == mp_run_word(i % 2 ? MP_FREE_DATA : MP_DATA, (uint64_t)p, 1));
        }
    }
    CHECK(checkpointed >= 5);
    /* a bulk call logs runs of consecutive pages */
    uint64_t run[10];
    uint64_t gen = mp_generation(c), log0 = mp_log_bytes(c);
    CHECK(mp_alloc_bulk(c, run, 10) == 0);
    int consecutive = 1;
    for (int i = 1; i < 10; i++) consecutive &= run[i] == run[0] + (uint64_t)i;
    if (consecutive && mp_checkpoint(c) != gen + 1) {
        CHECK(mp_log_bytes(c) == log0 + 16);
        record_in_force(fd, ps, rec);
        CHECK(mp_get64(rec + MP_LOG_OFFSET + log0 + 8) == mp_run_word(MP_DATA, run[0], 10));
    }
    CHECK(mp_free_bulk(c, run, 10) == 0);
    CHECK(mp_checkpoint_now(c) == 0 && mp_checkpoint(c) == mp_generation(c) && mp_log_bytes(c) == 0);
    record_in_force(fd, ps, rec);
    CHECK(mp_get64(rec + MP_REC_CHECKPOINT) == mp_generation(c) && mp_get32(rec + MP_REC_LOG_LEN) == 0);
}

/* Commits observed step by step; a one-barrier commit says so at its first step. */
static void manual_commits(mp_core *c) {
    CHECK(mp_set_manual(c, 1) == 0);
    CHECK(mp_begin(c) == 0);
    for (int i = 0; i < 100; i++) CHECK(mp_alloc(c) > 2);
    CHECK(mp_pending(c) == 0);
    CHECK(mp_commit(c) == 0 && mp_pending(c) == 1);
    uint64_t gen = mp_generation(c);
    for (int step = MP_STEP_WRITE; step <= MP_STEP_DONE; step++) CHECK(mp_commit_step(c, step) >= 0);
    CHECK(mp_generation(c) == gen + 1 && mp_pending(c) == 0);
    int64_t p = mp_alloc(c);
    CHECK(p > 2 && mp_pending(c) == 1 && mp_generation(c) == gen + 1);
    CHECK(mp_commit_step(c, MP_STEP_WRITE) == 2); /* nothing written but the record */
    for (int step = MP_STEP_SYNC1; step <= MP_STEP_DONE; step++) CHECK(mp_commit_step(c, step) == 0);
    CHECK(mp_generation(c) == gen + 2 && mp_pending(c) == 0);
    static uint64_t grow[40000];
    uint64_t k = mp_free_count(c) + 100;
    CHECK(k <= 40000);
    if (k <= 40000) {
        CHECK(mp_alloc_bulk(c, grow, k) == 0 && mp_pending(c) == 1);
        CHECK(mp_commit_step(c, MP_STEP_WRITE) == 1); /* a growth takes two barriers */
        for (int step = MP_STEP_SYNC1; step <= MP_STEP_DONE; step++) CHECK(mp_commit_step(c, step) == 0);
        CHECK(mp_free_bulk(c, grow, k) == 0 && mp_pending(c) == 1);
        for (int step = MP_STEP_WRITE; step <= MP_STEP_DONE; step++) CHECK(mp_commit_step(c, step) >= 0);
    }
    /* a checkpoint of more than 8 blocks: a page freed in each bitmap leaf */
    uint64_t leaves = 0, n = mp_page_count(c);
    for (uint64_t leaf = 0; leaf * 2624 < n && leaves < sizeof grow / sizeof *grow; leaf++) {
        uint64_t out;
        if (mp_scan(c, leaf * 2624, &out, 1) == 1 && out < (leaf + 1) * 2624) grow[leaves++] = out;
    }
    CHECK(leaves >= 8 && mp_free_bulk(c, grow, leaves) == 0 && mp_checkpoint_now(c) == 0 && mp_pending(c) == 1);
    int barriers = mp_commit_step(c, MP_STEP_WRITE); /* one when its blocks form 8 runs at most */
    CHECK(barriers == 1 || barriers == 2);
    for (int step = MP_STEP_SYNC1; step <= MP_STEP_DONE; step++) CHECK(mp_commit_step(c, step) == 0);
    CHECK(mp_checkpoint(c) == mp_generation(c));
    CHECK(mp_commit_step(c, 99) == MP_E_VALUE);
    CHECK(mp_set_manual(c, 0) == 0 && mp_pending(c) == 0);
}

/* Snapshots of the writer's commits, pinned in it: while one lives, nothing it reads is reused,
 * however many commits the writer makes. */
static void snapshots_of_writer(mp_core *c) {
    const uint32_t ps = mp_page_size(c);
    char *addr, *old_addr;
    uint64_t len, old_len;
    int64_t epoch = export_map(c, &addr, &len);
    CHECK(epoch >= 0 && (uint64_t)epoch == mp_map_epoch(c) && len >= mp_page_count(c) * ps);
    mp_snap *s = mp_snap_new(), *twin = mp_snap_new();
    CHECK(s && twin);
    CHECK(mp_snap_kind(s, 3) == MP_E_UNAVAILABLE); /* not yet taken */
    CHECK(mp_snap_of(s, c, addr + ps, len) == MP_E_VALUE);
    CHECK(mp_snap_of(s, c, addr, len - 1) == MP_E_VALUE);
    CHECK(mp_snap_kind(s, 3) == MP_E_UNAVAILABLE && strlen(mp_snap_message(s)) > 0);
    CHECK(mp_snap_of(s, c, addr, len) == 0 && mp_snap_of(twin, c, addr, len) == 0);
    view wv = writer_view(c), sv = snap_view(s, 2);
    CHECK(same_view(&wv, &sv));
    CHECK(mp_snap_page_size(s) == ps && mp_snap_generation(s) == mp_generation(c));
    CHECK(mp_snap_record_slot(s) == 0 || mp_snap_record_slot(s) == 1);
    unsigned char rec[MP_MAX_BLOCK];
    CHECK(mp_snap_record(s, rec, 100) == MP_E_VALUE);
    CHECK(mp_snap_record(s, rec, sizeof rec) == (int64_t)(ps < MP_MAX_BLOCK ? ps : MP_MAX_BLOCK));
    CHECK(mp_get64(rec + MP_REC_GENERATION) == mp_snap_generation(s) && memcmp(rec, "MPCR", 4) == 0);
    unsigned char k8[8];
    CHECK(mp_snap_kinds(s, 0, k8, 8) == 8 && k8[0] == 2 && k8[3] == mp_snap_kind(s, 3));
    CHECK(mp_snap_kinds(s, mp_snap_page_count(s), k8, 1) == MP_E_OUT_OF_BOUNDS);
    CHECK(mp_snap_kinds(s, UINT64_MAX, k8, 2) == MP_E_OUT_OF_BOUNDS && mp_snap_kinds(s, 1, k8, UINT64_MAX) == MP_E_OUT_OF_BOUNDS);
    CHECK(mp_snap_newer(s) == 0 && mp_snap_refresh(s) == MP_E_UNAVAILABLE && mp_snap_errno(s) == 0);
    char *saddr;
    uint64_t slen;
    CHECK(export_snap_map(s, &saddr, &slen, 0) >= 0 && saddr == addr && slen == len);
    int *kinds = snap_kinds(s);
    guard g = {kinds, mp_snap_page_count(s)};
    contents held = snap_contents(s, addr, ps);
    uint64_t digest = read_pages_digest(addr, kinds, g.n, ps);
    CHECK(held.n > 0);

    churn(c, &g, 300, 1);
    CHECK(mp_map_epoch(c) > (uint64_t)epoch); /* it grew, and remapped */
    old_addr = addr, old_len = len;
    CHECK(export_map(c, &addr, &len) >= 0 && addr != old_addr);
    CHECK(mp_snap_of(s, c, old_addr, old_len) == MP_E_VALUE); /* no longer the writer's mapping */
    view again = snap_view(s, 2), fresh = snap_view(twin, 2); /* the twin reads its blocks only now */
    CHECK(same_view(&sv, &again) && same_view(&sv, &fresh));
    same_contents(s, &held, old_addr, ps);
    CHECK(read_pages_digest(old_addr, kinds, g.n, ps) == digest);
    for (uint64_t p = 0; p < g.n; p++) {
        int k = mp_snap_kind(s, p);
        CHECK(k == kinds[p]);
    }

    /* one of two snapshots of a generation gone: the other still holds its pages */
    CHECK(mp_snap_close(twin) == 0 && mp_snap_close(twin) == 0);
    CHECK(mp_snap_kind(twin, 3) == MP_E_UNAVAILABLE && mp_snap_scan(twin, 0, &slen, 1) == MP_E_UNAVAILABLE);
    int64_t p = some_data_page(c);
    CHECK(p >= 3 && mp_free_page(c, (uint64_t)p) == 0 && mp_reclaim(c) == 0 && mp_kind(c, (uint64_t)p) == 3);
    CHECK(mp_snap_close(s) == 0 && mp_reclaim(c) == 0 && mp_kind(c, (uint64_t)p) == 0);
    uint64_t pending = 0, n = mp_page_count(c);
    for (uint64_t q = 0; q < n; q++) pending += mp_kind(c, q) == 3;
    CHECK(pending == 0); /* no snapshot left: every freed page may be reused */

    uint64_t out[2];
    CHECK(mp_snap_kind(s, 0) == MP_E_UNAVAILABLE && mp_snap_scan(s, 0, out, 2) == MP_E_UNAVAILABLE);
    CHECK(mp_snap_pused(s, 0) == MP_E_UNAVAILABLE && mp_snap_ppage(s, 0) == MP_E_UNAVAILABLE);
    CHECK(mp_snap_pscan(s, 0, out, 2) == MP_E_UNAVAILABLE && mp_snap_map_export(s, &saddr, &slen) == MP_E_UNAVAILABLE);
    CHECK(mp_snap_refresh(s) == MP_E_UNAVAILABLE && mp_snap_newer(s) == 0);
    free(kinds);
    free_contents(&held);
    mp_snap_free(s);
    mp_snap_free(twin);
    mp_snap_free(NULL);
}

static void table_header(unsigned char *t, const unsigned char *file_id, uint32_t hwm) {
    memset(t, 0, MP_TABLE_HEADER_SIZE);
    memcpy(t + MP_TBL_MAGIC, MP_TABLE_MAGIC, 8);
    mp_put32(t + MP_TBL_VERSION, MP_TABLE_VERSION);
    mp_put32(t + MP_TBL_SLOT_SIZE, MP_TABLE_SLOT_SIZE);
    mp_put32(t + MP_TBL_CAPACITY, MP_TABLE_CAPACITY);
    mp_put32(t + MP_TBL_HWM, hwm);
    memcpy(t + MP_TBL_FILE_ID, file_id, 16);
}

/* What a reader registering a snapshot writes into its slot, the generation last. */
static void table_slot(unsigned char *t, unsigned i, uint64_t gen, uint64_t since) {
    unsigned char *s = t + MP_TABLE_HEADER_SIZE + MP_TABLE_SLOT_SIZE * i;
    mp_put64(s + MP_TSLOT_PID, (uint64_t)getpid());
    mp_put64(s + MP_TSLOT_START_TIME, 1);
    mp_put64(s + MP_TSLOT_SINCE, since);
    mp_fence();
    mp_put64(s + MP_TSLOT_GENERATION, gen);
    mp_fence();
}

static int lock_slot(int fd, unsigned i, short type) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)(MP_TABLE_HEADER_SIZE + MP_TABLE_SLOT_SIZE * i);
    fl.l_len = 1;
    return fcntl(fd, F_OFD_SETLK, &fl);
}

/* A snapshot of the file (as another process takes one), registered in the reader table: it
 * follows the writer's commits when refreshed, and while registered and alive it keeps its
 * pages. Returns the table's descriptor, which the writer uses until it is freed. */
static int snapshot_of_file(mp_core *c, const char *path) {
    const uint32_t ps = mp_page_size(c);
    char tpath[4096];
    snprintf(tpath, sizeof tpath, "%s-readers", path);
    int tfd = open(tpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(tfd >= 0 && ftruncate(tfd, MP_TABLE_SIZE) == 0);
    unsigned char *t = mmap(NULL, MP_TABLE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, tfd, 0);
    CHECK(t != MAP_FAILED);
    if (t == MAP_FAILED) return tfd;
    unsigned char id[16];
    mp_file_id(c, id);
    table_header(t, id, 2);
    table_slot(t, 1, 1, 5); /* a reader that died without closing: its lock is gone */
    CHECK(mp_attach_table(c, -1) == MP_E_OS && mp_errno(c) == EBADF);
    CHECK(mp_attach_table(c, tfd) == 0 && mp_attach_table(c, tfd) == 0);
    int lfd = open(tpath, O_RDWR); /* the reader's own open file description */
    int rfd = open(path, O_RDONLY);
    CHECK(lfd >= 0 && rfd >= 0);

    mp_snap *s = mp_snap_new();
    CHECK(mp_snap_open(s, rfd, 2048) == MP_E_PAGE_SIZE && mp_snap_kind(s, 0) == MP_E_UNAVAILABLE);
    CHECK(mp_snap_open(s, rfd, 0) == 0);
    uint64_t gen = mp_generation(c);
    CHECK(lock_slot(lfd, 0, F_WRLCK) == 0);
    table_slot(t, 0, gen, 10);
    CHECK(mp_snap_generation(s) == gen && mp_snap_newest(s, rfd, 0) == (int64_t)gen);
    CHECK(mp_snap_newest(s, rfd, 4096) == MP_E_PAGE_SIZE);
    CHECK(mp_snap_record_slot(s) == (int)((gen - 1) & 1)); /* a file never recovered alternates */
    CHECK(mp_snap_newer(s) == 0 && mp_snap_refresh(s) == 0);
    view wv = writer_view(c), sv = snap_view(s, 2);
    CHECK(same_view(&wv, &sv));
    char *saddr;
    uint64_t slen;
    int64_t epoch = export_snap_map(s, &saddr, &slen, 1);
    CHECK(epoch >= 0 && (uint64_t)epoch == mp_snap_map_epoch(s) && slen >= mp_snap_page_count(s) * ps);
    CHECK(memcmp(saddr, MP_MAGIC, 8) == 0);
    int *kinds = snap_kinds(s);
    guard g = {kinds, mp_snap_page_count(s)};
    contents held = snap_contents(s, saddr, ps);
    uint64_t digest = read_pages_digest(saddr, kinds, g.n, ps);

    churn(c, &g, 200, 0);
    CHECK(mp_snap_newer(s) == 1 && mp_snap_newest(s, rfd, 0) == (int64_t)mp_generation(c));
    view again = snap_view(s, 2);
    CHECK(same_view(&sv, &again));
    same_contents(s, &held, saddr, ps);
    CHECK(read_pages_digest(saddr, kinds, g.n, ps) == digest);
    free(kinds);
    free_contents(&held);

    /* following the writer: each refresh shows its last commit, through checkpoints and growth */
    for (int round = 0; round < 6; round++) {
        CHECK(mp_snap_refresh(s) == 1 && mp_snap_generation(s) == mp_generation(c));
        table_slot(t, 0, mp_snap_generation(s), 11 + (uint64_t)round);
        wv = writer_view(c), sv = snap_view(s, 2);
        CHECK(same_view(&wv, &sv));
        CHECK(mp_snap_refresh(s) == 0 && mp_snap_newer(s) == 0);
        kinds = snap_kinds(s);
        g.kinds = kinds, g.n = mp_snap_page_count(s);
        churn(c, &g, 25, 0);
        free(kinds);
    }
    CHECK(mp_snap_refresh(s) == 1 && mp_snap_map_epoch(s) == (uint64_t)epoch); /* the same length */
    wv = writer_view(c), sv = snap_view(s, 2);
    CHECK(same_view(&wv, &sv));

    /* a reader gone from the table holds nothing back */
    table_slot(t, 0, 0, 20);
    CHECK(mp_reclaim(c) == 0);
    uint64_t pending = 0, n = mp_page_count(c);
    for (uint64_t q = 0; q < n; q++) pending += mp_kind(c, q) == 3;
    CHECK(pending == 0);
    /* a live reader of an old generation holds what is freed after it; once its lock is gone,
     * the writer finds it dead at its next check */
    table_slot(t, 0, mp_generation(c), 30);
    int64_t p = some_data_page(c);
    CHECK(p >= 3 && mp_free_page(c, (uint64_t)p) == 0 && mp_reclaim(c) == 0 && mp_kind(c, (uint64_t)p) == 3);
    CHECK(lock_slot(lfd, 0, F_UNLCK) == 0);
    struct timespec pause = {0, 150 * 1000 * 1000};
    nanosleep(&pause, NULL);
    CHECK(mp_reclaim(c) == 0 && mp_kind(c, (uint64_t)p) == 0);
    /* a generation the writer has not committed is garbage, lock or not */
    CHECK(lock_slot(lfd, 0, F_WRLCK) == 0);
    table_slot(t, 0, mp_generation(c) + 5, 40);
    p = some_data_page(c);
    CHECK(p >= 3 && mp_free_page(c, (uint64_t)p) == 0 && mp_reclaim(c) == 0 && mp_kind(c, (uint64_t)p) == 0);
    /* a high-water mark beyond the table is taken as the whole table */
    table_slot(t, 0, mp_generation(c), 50);
    mp_put32(t + MP_TBL_HWM, UINT32_MAX);
    p = some_data_page(c);
    CHECK(p >= 3 && mp_free_page(c, (uint64_t)p) == 0 && mp_reclaim(c) == 0 && mp_kind(c, (uint64_t)p) == 3);
    table_slot(t, 0, 0, 60);
    CHECK(mp_reclaim(c) == 0 && mp_kind(c, (uint64_t)p) == 0);

    CHECK(mp_snap_close(s) == 0 && mp_snap_kind(s, 0) == MP_E_UNAVAILABLE && mp_snap_refresh(s) == MP_E_UNAVAILABLE);
    CHECK(mp_snap_kind_try(s, 0) == -1);
    mp_snap_free(s);
    CHECK(lock_slot(lfd, 0, F_UNLCK) == 0);
    close(lfd);
    close(rfd);
    munmap(t, MP_TABLE_SIZE);
    return tfd;
}

/* Every call of a core that is closed (or was never opened) fails, and does nothing. */
static void after_close(mp_core *c, int opened) {
    uint64_t x[2] = {3, 4}, out[4];
    unsigned char page[MP_MAX_BLOCK] = {0};
    char *addr = NULL;
    uint64_t len = 0;
    uint32_t ps = mp_page_size(c);
    CHECK(mp_alloc(c) == MP_E_UNAVAILABLE && mp_alloc_bulk(c, out, 2) == MP_E_UNAVAILABLE);
    CHECK(mp_free_page(c, 3) == MP_E_UNAVAILABLE && mp_free_bulk(c, x, 2) == MP_E_UNAVAILABLE);
    CHECK(mp_kind(c, 0) == MP_E_UNAVAILABLE && mp_scan(c, 0, out, 4) == MP_E_UNAVAILABLE);
    CHECK(mp_kind_try(c, 0) == -1);
    CHECK(mp_palloc(c, out, 1) == MP_E_UNAVAILABLE && mp_pfree(c, x, 1) == MP_E_UNAVAILABLE);
    CHECK(mp_pwrite(c, 0, page, ps <= sizeof page ? ps : 0) == MP_E_UNAVAILABLE);
    CHECK(mp_ppage(c, 0) == MP_E_UNAVAILABLE && mp_pused(c, 0) == MP_E_UNAVAILABLE);
    CHECK(mp_pscan(c, 0, out, 4) == MP_E_UNAVAILABLE);
    CHECK(mp_begin(c) == MP_E_UNAVAILABLE && mp_commit(c) == MP_E_UNAVAILABLE && mp_rollback(c) == MP_E_UNAVAILABLE);
    CHECK(mp_checkpoint_now(c) == MP_E_UNAVAILABLE && mp_reclaim(c) == MP_E_UNAVAILABLE);
    CHECK(mp_shrink(c) == MP_E_UNAVAILABLE && mp_trim(c) == MP_E_UNAVAILABLE && mp_adopt_batch(c) == MP_E_UNAVAILABLE);
    CHECK(mp_map_export(c, &addr, &len) == MP_E_UNAVAILABLE && addr == NULL);
    CHECK(mp_flush_all(c) == MP_E_UNAVAILABLE && mp_flush_pages(c, x, 1) == MP_E_UNAVAILABLE);
    CHECK(mp_attach_table(c, -1) == MP_E_UNAVAILABLE);
    CHECK(mp_set_manual(c, 1) == MP_E_UNAVAILABLE && mp_pending(c) == MP_E_UNAVAILABLE);
    CHECK(mp_commit_step(c, MP_STEP_WRITE) == MP_E_UNAVAILABLE);
    mp_snap *s = mp_snap_new();
    CHECK(mp_snap_of(s, c, addr, len) == MP_E_UNAVAILABLE && mp_snap_kind(s, 0) == MP_E_UNAVAILABLE);
    mp_snap_free(s);
    CHECK(mp_close(c) == 0 && strlen(mp_message(c)) > 0);
    if (!opened) return;
    CHECK(mp_open(c, 0, 0, MP_WRITABLE) == MP_E_VALUE);
    unsigned char bits[1] = {7}, id[16] = {0};
    CHECK(mp_upgrade(c, 0, 0, 1024, 4, 1, 512, bits, bits, 1, x, x, 0, 0, id) == MP_E_VALUE);
}

/* A read-only core reads, and refuses every change. */
static void read_only(const char *path, const view *expected) {
    int fd, rc;
    mp_core *c = open_file(path, 0, &fd, &rc);
    CHECK(rc == 0);
    view v = writer_view(c);
    CHECK(same_view(expected, &v));
    uint64_t out[4], x[1] = {0};
    int64_t page = some_data_page(c);
    unsigned char buf[1024] = {0};
    CHECK(page >= 3);
    x[0] = (uint64_t)page;
    CHECK(mp_alloc(c) == MP_E_READ_ONLY && mp_alloc_bulk(c, out, 2) == MP_E_READ_ONLY);
    CHECK(mp_free_page(c, (uint64_t)page) == MP_E_READ_ONLY && mp_free_bulk(c, x, 1) == MP_E_READ_ONLY);
    CHECK(mp_palloc(c, out, 1) == MP_E_READ_ONLY && mp_pwrite(c, 0, buf, 1024) == MP_E_READ_ONLY);
    x[0] = 0;
    CHECK(mp_pfree(c, x, 1) == MP_E_READ_ONLY);
    CHECK(mp_begin(c) == MP_E_READ_ONLY && mp_commit(c) == MP_E_READ_ONLY && mp_checkpoint_now(c) == MP_E_READ_ONLY);
    CHECK(mp_reclaim(c) == MP_E_READ_ONLY && mp_set_manual(c, 1) == MP_E_READ_ONLY && mp_shrink(c) == MP_E_READ_ONLY);
    CHECK(mp_trim(c) == MP_E_READ_ONLY && mp_adopt_batch(c) == MP_E_READ_ONLY);
    CHECK(mp_retire(c, (uint64_t)page, 0) == MP_E_READ_ONLY && mp_retire_sync(c) == MP_E_READ_ONLY);
    CHECK(mp_write_try(c, (uint64_t)page) == -1 && mp_view_try(c, (uint64_t)page) == -1);
    CHECK(mp_kind_try(c, (uint64_t)page) == 1);
    CHECK(mp_commit_step(c, MP_STEP_WRITE) == MP_E_READ_ONLY && mp_pending(c) == 0 && mp_rollback(c) == 0);
    char *addr;
    uint64_t len;
    CHECK(export_map(c, &addr, &len) >= 0 && memcmp(addr, MP_MAGIC, 8) == 0);
    CHECK(mp_flush_pages(c, out, 0) == 0);
    v = writer_view(c);
    CHECK(same_view(expected, &v));
    CHECK(mp_close(c) == 0);
    after_close(c, 1);
    mp_free(c);
    close(fd);
    after_close(c = mp_new(), 0);
    mp_free(c);
}

/* Files the writer and snapshots must refuse, each with its code. */
static void bad_files(const char *path, const char *scratch) {
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    mp_core *c = mp_new();
    CHECK(mp_open(c, fd, 1000, MP_WRITABLE) == MP_E_PAGE_SIZE);
    CHECK(mp_open(c, fd, 1u << 29, MP_WRITABLE) == MP_E_PAGE_SIZE);
    CHECK(mp_open(c, fd, 2048, MP_WRITABLE) == MP_E_PAGE_SIZE);
    CHECK(mp_open(c, -1, 0, MP_WRITABLE) == MP_E_OS && mp_errno(c) == EBADF);
    CHECK(mp_alloc(c) == MP_E_UNAVAILABLE);
    CHECK(mp_open(c, fd, 1024, MP_WRITABLE) == 0); /* the failed opens left nothing behind */
    CHECK(mp_open(c, fd, 1024, MP_WRITABLE) == MP_E_VALUE);
    CHECK(mp_close(c) == 0 && mp_close(c) == 0);
    mp_free(c);
    mp_free(NULL);

    mp_snap *s = mp_snap_new();
    CHECK(mp_snap_open(s, -1, 0) == MP_E_OS && mp_snap_errno(s) == EBADF);
    CHECK(mp_snap_newest(s, -1, 0) == MP_E_OS);
    CHECK(mp_snap_open(s, fd, 4096) == MP_E_PAGE_SIZE && mp_snap_newest(s, fd, 2048) == MP_E_PAGE_SIZE);
    close(fd);

    /* short, foreign, and format 1 without an upgrade */
    unsigned char img[16 * 1024] = {0};
    size_t sizes[] = {0, 100, 1023, 1024, 3 * 1024, sizeof img};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        memset(img, 0, sizeof img);
        memcpy(img, MP_MAGIC, 8);
        mp_put32(img + MP_ID_VERSION, MP_V1_VERSION);
        mp_put32(img + MP_ID_PAGE_SIZE, 1024);
        mp_put32(img + MP_IDENTITY_CRC_OFFSET, mp_crc32c(0, img, MP_IDENTITY_CRC_OFFSET));
        spit(scratch, img, sizes[i]);
        int expect = sizes[i] < 4 * 1024 ? MP_E_CORRUPT_SUPERBLOCK : MP_E_VERSION1;
        fd = open(scratch, O_RDWR);
        c = mp_new();
        CHECK(mp_open(c, fd, 0, MP_WRITABLE) == expect && mp_alloc(c) == MP_E_UNAVAILABLE);
        CHECK(mp_snap_open(s, fd, 0) == expect && mp_snap_newest(s, fd, 0) == expect);
        CHECK(mp_snap_kind(s, 0) == MP_E_UNAVAILABLE);
        mp_free(c);
        close(fd);
    }
    mp_snap_free(s);
}

/* A commit cut short (the core poisoned between its steps) leaves the file at the last commit
 * whose record was written. */
static void poisoned(const char *path) {
    int fd, rc;
    mp_core *c = open_file(path, MP_WRITABLE | MP_SYNC, &fd, &rc);
    CHECK(rc == 0);
    uint64_t gen = mp_generation(c);
    CHECK(mp_set_manual(c, 1) == 0);
    int64_t p = mp_alloc(c);
    CHECK(p >= 3 && mp_commit_step(c, MP_STEP_WRITE) == 2 && mp_commit_step(c, MP_STEP_SYNC1) == 0);
    mp_poison(c);
    CHECK(mp_alloc(c) == MP_E_UNAVAILABLE && mp_kind(c, 0) == MP_E_UNAVAILABLE && mp_pending(c) == MP_E_UNAVAILABLE);
    shut(c, fd);
    c = open_file(path, MP_WRITABLE | MP_SYNC, &fd, &rc);
    CHECK(rc == 0 && mp_generation(c) == gen && (mp_kind(c, (uint64_t)p) == 0 || mp_kind(c, (uint64_t)p) == 3));
    CHECK(mp_set_manual(c, 1) == 0 && mp_alloc(c) == p);
    for (int step = MP_STEP_WRITE; step <= MP_STEP_FLIP; step++) CHECK(mp_commit_step(c, step) >= 0);
    mp_poison(c);
    shut(c, fd);
    c = open_file(path, MP_WRITABLE, &fd, &rc);
    CHECK(rc == 0 && mp_generation(c) == gen + 1 && mp_kind(c, (uint64_t)p) == 1);
    shut(c, fd);
}

static void workload(const char *path, const char *scratch) {
    int fd, rc;
    mp_core *c = open_file(path, MP_WRITABLE | MP_PREALLOCATE, &fd, &rc);
    CHECK(rc == 0);
    fresh_state(c, fd);
    enum { N = 20000 };
    static uint64_t pages[N];
    CHECK(mp_alloc_bulk(c, pages, N) == 0);
    int ascending = 1;
    for (int i = 1; i < N; i++) ascending &= pages[i] > pages[i - 1];
    CHECK(ascending && pages[0] >= 3 && mp_data_count(c) == N && mp_kind(c, pages[N - 1]) == 1);
    for (int i = 0; i < 500; i++) CHECK(mp_alloc(c) > 2);
    uint64_t slots[70];
    protected_pages(c, slots, 70);
    bad_arguments(c, pages);
    batches(c, pages);
    checkpoints(c, fd);
    manual_commits(c);
    int64_t got = mp_scan(c, 12000, pages, 5000); /* some of those pages were freed since */
    CHECK(got > 4000 && mp_free_bulk(c, pages, (uint64_t)got) == 0);
    snapshots_of_writer(c);
    int tfd = snapshot_of_file(c, path);

    /* the mapping outlives the core once exported */
    char *addr = NULL;
    uint64_t len = 0, beyond_all[1] = {UINT64_MAX};
    CHECK(export_map(c, &addr, &len) >= 0 && len >= mp_page_count(c) * 1024);
    CHECK(mp_alloc_bulk(c, pages, 100) == 0); /* data pages: internal ones are refused */
    CHECK(mp_flush_all(c) == 0 && mp_flush_pages(c, pages, 100) == 0);
    /* in a batch the commit makes them durable (1: taken over), even a batch that only
     * flushed (a commit of its own), and a rollback at once */
    uint64_t gen = mp_generation(c);
    CHECK(mp_begin(c) == 0 && mp_flush_pages(c, pages, 100) == 1 && mp_flush_all(c) == 1);
    CHECK(mp_commit(c) == 0 && mp_generation(c) == gen + 1);
    CHECK(mp_begin(c) == 0 && mp_flush_pages(c, pages + 10, 3) == 1 && mp_rollback(c) == 0);
    CHECK(mp_begin(c) == 0 && mp_flush_pages(c, beyond_all, 1) == MP_E_OUT_OF_BOUNDS);
    CHECK(mp_rollback(c) == 0 && mp_generation(c) == gen + 1);
    view last = writer_view(c);
    CHECK(mp_close(c) == 0);
    after_close(c, 1);
    CHECK(memcmp(addr, MP_MAGIC, 8) == 0);
    mp_free(c);
    close(tfd);
    close(fd);
    drop_maps();
    char tpath[4096];
    snprintf(tpath, sizeof tpath, "%s-readers", path);
    unlink(tpath);

    c = open_file(path, MP_WRITABLE, &fd, &rc);
    CHECK(rc == 0);
    view reopened = writer_view(c);
    CHECK(same_view(&last, &reopened));
    shut(c, fd);
    read_only(path, &last);
    poisoned(path);
    bad_files(path, scratch);
    drop_maps();
}

/* Sealed pages: a batch's record lists the pages it sealed, as runs; retiring copies the
 * record, listing nothing, into the other slot; every argument checked. */
static void sealed(const char *path) {
    int fd, rc;
    mp_core *c = open_file(path, MP_WRITABLE | MP_SYNC, &fd, &rc);
    CHECK(rc == 0);
    uint64_t pages[6], runs[2 * MP_LISTED_MAX], bad[2] = {1, UINT64_MAX};
    uint32_t ps = mp_page_size(c);
    CHECK(mp_alloc_bulk(c, pages, 6) == 0 && mp_free_bulk(c, pages, 6) == 0 && mp_alloc(c) > 0);
    uint64_t gen = mp_generation(c);
    CHECK(mp_begin(c) == 0 && mp_alloc_bulk(c, pages, 6) == 0);
    CHECK(mp_seal_pages(c, bad, 1) == MP_E_RESERVED); /* a record page */
    CHECK(mp_seal_pages(c, bad + 1, 1) == MP_E_OUT_OF_BOUNDS);
    CHECK(mp_seal_pages(c, pages, 6) == 1 && mp_seal_pages(c, pages, 0) == 0);
    CHECK(mp_commit(c) == 0 && mp_generation(c) == gen + 1);
    int n = mp_sealed_runs(c, runs);
    CHECK(n >= 1 && runs[0] <= pages[0] && runs[2 * (n - 1)] + runs[2 * n - 1] > pages[5]);
    CHECK(mp_write_try(c, pages[1]) == -1 && mp_write_try(c, UINT64_MAX) == -1); /* listed: retire first */
    CHECK(mp_view_try(c, pages[1]) == -1 && mp_view_try(c, UINT64_MAX) == -1);
    CHECK(mp_write_try(c, pages[5] + 1) >= 0 && mp_write_try(c, 1) == 2);
    CHECK(mp_retire(c, 0, 0) == 0 && mp_retire(c, UINT64_MAX, 0) == 0 && mp_retire(c, pages[5] + 1, 0) == 0);
    CHECK(mp_retire(c, pages[1], 0) == 1 && mp_sealed_runs(c, runs) == 0 && mp_retire(c, pages[1], 0) == 0);
    CHECK(mp_write_try(c, pages[1]) == 1);
    CHECK(mp_generation(c) == gen + 1 && mp_retire_sync(c) == 0);
    unsigned char rec[2][MP_MAX_BLOCK];
    for (int i = 0; i < 2; i++) CHECK(pread(fd, rec[i], 128, (off_t)(1 + i) * ps) == 128);
    CHECK(mp_get64(rec[0] + MP_REC_GENERATION) == gen + 1 && mp_get64(rec[1] + MP_REC_GENERATION) == gen + 1);
    CHECK(rec[0][MP_REC_LISTED] + rec[1][MP_REC_LISTED] > 0 && (!rec[0][MP_REC_LISTED] || !rec[1][MP_REC_LISTED]));
    CHECK(mp_free_bulk(c, pages, 6) == 0 && mp_generation(c) == gen + 2);
    /* a page viewed after its seal is flushed instead: nothing listed */
    uint64_t more[2];
    CHECK(mp_begin(c) == 0 && mp_alloc_bulk(c, more, 2) == 0 && mp_seal_pages(c, more, 2) == 1);
    CHECK(mp_retire(c, more[1], 1) == 0 && mp_commit(c) == 0 && mp_sealed_runs(c, runs) == 0);
    /* a page viewed before its flush (the views' quick path) is flushed too */
    CHECK(mp_begin(c) == 0 && mp_alloc_bulk(c, more, 2) == 0 && mp_view_try(c, more[0]) == 1);
    CHECK(mp_seal_pages(c, more, 2) == 1 && mp_commit(c) == 0 && mp_sealed_runs(c, runs) == 0);
    CHECK(mp_begin(c) == 0 && mp_alloc_bulk(c, more, 2) == 0 && mp_seal_pages(c, more, 2) == 1);
    CHECK(mp_commit(c) == 0 && mp_sealed_runs(c, runs) >= 1); /* and not viewed: sealed */
    CHECK(mp_close(c) == 0);
    CHECK(mp_seal_pages(c, pages, 1) == MP_E_UNAVAILABLE && mp_retire(c, 3, 0) == MP_E_UNAVAILABLE);
    CHECK(mp_retire_sync(c) == MP_E_UNAVAILABLE && mp_sealed_runs(c, runs) == MP_E_UNAVAILABLE);
    CHECK(mp_write_try(c, pages[1]) == -1 && mp_view_try(c, pages[1]) == -1);
    mp_free(c);
    close(fd);
}

/* The record's log on 4 KiB pages, through protected writes, rollbacks and reopening. */
static void logged(const char *path) {
    int fd, rc;
    mp_core *c = open_file(path, MP_WRITABLE | MP_SYNC, &fd, &rc);
    CHECK(rc == 0 && mp_page_size(c) == 4096);
    const uint32_t ps = 4096;
    CHECK(mp_slots_used(c) == 4 && mp_log_bytes(c) > 0 && mp_checkpoint(c) < mp_generation(c));
    char *addr;
    uint64_t len;
    CHECK(export_map(c, &addr, &len) >= 0);
    unsigned char rec[MP_MAX_BLOCK];
    record_in_force(fd, ps, rec);
    uint64_t log_len = mp_get32(rec + MP_REC_LOG_LEN);
    CHECK(log_len == mp_log_bytes(c) && mp_get64(rec + MP_REC_GENERATION) == mp_generation(c));
    /* the slots the log names are the writer's, with their checksums */
    int named = 0;
    uint64_t v[3];
    unsigned kind;
    int64_t pos = 0;
    while ((pos = mp__log_next(rec + MP_LOG_OFFSET, log_len, (uint64_t)pos, &kind, v)) > 0) {
        if (kind != MP_SLOT || mp_ppage(c, v[0]) != (int64_t)v[1]) continue;
        CHECK(v[1] < len / ps && mp_crc32c(0, (unsigned char *)addr + v[1] * ps, ps) == v[2]);
        named++;
    }
    CHECK(pos == 0 && named >= 2);
    for (uint64_t s = 1; s <= 2; s++) {
        int64_t page = mp_ppage(c, s);
        CHECK(page >= 3 && memcmp(addr + (uint64_t)page * ps, "ok", 2) == 0);
    }
    view before = writer_view(c);
    uint64_t log0 = mp_log_bytes(c);
    unsigned char buf[4096];
    fill_random(buf, ps);
    CHECK(mp_begin(c) == 0 && mp_pwrite(c, 1, buf, ps) == 0 && mp_log_bytes(c) > log0 && mp_rollback(c) == 0);
    view after = writer_view(c);
    CHECK(same_view(&before, &after) && mp_log_bytes(c) == log0);
    int64_t page = mp_ppage(c, 1);
    CHECK(page >= 3 && memcmp(addr + (uint64_t)page * ps, "ok", 2) == 0);
    /* one barrier for a protected write and for an allocation; two for a growth */
    CHECK(mp_set_manual(c, 1) == 0 && mp_pwrite(c, 1, buf, ps) == 0 && mp_commit_step(c, MP_STEP_WRITE) == 2);
    for (int step = MP_STEP_SYNC1; step <= MP_STEP_DONE; step++) CHECK(mp_commit_step(c, step) == 0);
    int64_t q = mp_alloc(c);
    CHECK(q >= 3 && mp_commit_step(c, MP_STEP_WRITE) == 2);
    for (int step = MP_STEP_SYNC1; step <= MP_STEP_DONE; step++) CHECK(mp_commit_step(c, step) == 0);
    /* a snapshot of the file, refreshed past a growth, maps the file again */
    int rfd = open(path, O_RDONLY);
    mp_snap *s = mp_snap_new();
    char *saddr, *old;
    uint64_t slen;
    CHECK(mp_snap_open(s, rfd, ps) == 0 && mp_snap_generation(s) == mp_generation(c));
    int64_t epoch = export_snap_map(s, &old, &slen, 1);
    CHECK(epoch >= 0 && slen == mp_page_count(c) * ps);
    uint64_t more[40];
    CHECK(mp_alloc_bulk(c, more, 40) == 0 && mp_commit_step(c, MP_STEP_WRITE) == 1);
    for (int step = MP_STEP_SYNC1; step <= MP_STEP_DONE; step++) CHECK(mp_commit_step(c, step) == 0);
    CHECK(mp_set_manual(c, 0) == 0);
    CHECK(mp_snap_newer(s) == 1 && mp_snap_refresh(s) == 1 && mp_snap_map_epoch(s) > (uint64_t)epoch);
    CHECK(export_snap_map(s, &saddr, &slen, 1) >= 0 && saddr != old && slen >= mp_page_count(c) * ps);
    view wv = writer_view(c), sv = snap_view(s, 2);
    CHECK(same_view(&wv, &sv) && memcmp(old, saddr, ps) == 0);
    CHECK(mp_snap_close(s) == 0);
    mp_snap_free(s);
    close(rfd);
    CHECK(mp_free_bulk(c, more, 40) == 0 && mp_free_page(c, (uint64_t)q) == 0);
    view last = writer_view(c);
    page = mp_ppage(c, 1);
    shut(c, fd);
    drop_maps();
    c = open_file(path, MP_WRITABLE, &fd, &rc);
    CHECK(rc == 0 && mp_ppage(c, 1) == page);
    view again = writer_view(c);
    CHECK(same_view(&last, &again));
    CHECK(export_map(c, &addr, &len) >= 0 && page >= 3 && memcmp(addr + (uint64_t)page * ps, buf, ps) == 0);
    shut(c, fd);
    drop_maps();
}

/* A format-1 state upgraded in one commit: the same pages and protected pages, as format 2. */
static void upgrade(const char *path) {
    enum { PS = 1024, N = 40, BITS = (N + 7) / 8 };
    unsigned char *img = calloc(N, PS), *now = malloc((size_t)N * PS);
    CHECK(img && now);
    if (!img || !now) return;
    memcpy(img, MP_MAGIC, 8);
    mp_put32(img + MP_ID_VERSION, MP_V1_VERSION);
    mp_put32(img + MP_ID_PAGE_SIZE, PS);
    mp_put32(img + MP_IDENTITY_CRC_OFFSET, mp_crc32c(0, img, MP_IDENTITY_CRC_OFFSET));
    for (int p = 3; p < 12; p++) snprintf((char *)img + p * PS, 32, "page %d", p);
    unsigned char used[BITS] = {0}, keep[BITS] = {0}, id[16];
    for (int p = 0; p < 12; p++) used[p >> 3] |= (unsigned char)(1 << (p & 7)); /* 8-11: format-1 metadata */
    for (int p = 0; p < 8; p++) keep[p >> 3] |= (unsigned char)(1 << (p & 7));  /* 3-5 data, 6-7 protected */
    for (int i = 0; i < 16; i++) id[i] = (unsigned char)(0xA0 + i);
    uint64_t slots[2] = {0, 2}, cpages[2] = {6, 7};
    spit(path, img, (size_t)N * PS);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    struct {
        uint32_t ps;
        uint64_t n, sector, bits, slot_count, slot, page;
    } bad[] = {
        {1000, N, 512, BITS, 3, 0, 6},     {1u << 29, N, 512, BITS, 3, 0, 6}, {PS, 3, 512, BITS, 3, 0, 6},
        {PS, N, 512, BITS - 1, 3, 0, 6},  {PS, UINT64_MAX, 512, BITS, 3, 0, 6}, {PS, N, 1024, BITS, 3, 0, 6},
        {PS, N, 0, BITS, 3, 0, 6},         {PS, N, 513, BITS, 3, 0, 6},       {PS, N, 512, BITS, 3, 3, 6},
        {PS, N, 512, BITS, 3, UINT64_MAX, 6}, {PS, N, 512, BITS, 3, 0, N},    {PS, N, 512, BITS, 3, 0, UINT64_MAX},
        {PS, N, 512, BITS, (1ull << 48) + 1, 0, 6},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mp_core *c = mp_new();
        uint64_t sl[2] = {bad[i].slot, 2}, pg[2] = {bad[i].page, 7};
        CHECK(mp_upgrade(c, fd, 0, bad[i].ps, bad[i].n, 5, bad[i].sector, used, keep, bad[i].bits, sl, pg, 2,
                         bad[i].slot_count, id) == MP_E_VALUE);
        CHECK(mp_alloc(c) == MP_E_UNAVAILABLE);
        mp_free(c);
        CHECK(pread(fd, now, (size_t)N * PS, 0) == (ssize_t)N * PS && memcmp(now, img, (size_t)N * PS) == 0);
    }
    mp_core *c = mp_new();
    CHECK(mp_upgrade(c, fd, MP_SYNC, PS, N, 5, 512, used, keep, BITS, slots, cpages, 2, 3, id) == 0);
    CHECK(mp_upgrade(c, fd, MP_SYNC, PS, N, 5, 512, used, keep, BITS, slots, cpages, 2, 3, id) == MP_E_VALUE);
    CHECK(mp_generation(c) == 6 && mp_checkpoint(c) == 6 && mp_log_bytes(c) == 0);
    CHECK(mp_page_count(c) == N && mp_data_count(c) == 3 && mp_slot_count(c) == 3 && mp_slots_used(c) == 2);
    CHECK(mp_free_count(c) == N - 12); /* kept pages, two record pages, a leaf of each tree */
    unsigned char got_id[16];
    mp_file_id(c, got_id);
    CHECK(memcmp(got_id, id, 16) == 0);
    uint64_t out[8];
    CHECK(mp_scan(c, 0, out, 8) == 3 && out[0] == 3 && out[1] == 4 && out[2] == 5);
    CHECK(mp_pscan(c, 0, out, 8) == 2 && out[0] == 0 && out[1] == 2);
    CHECK(mp_ppage(c, 0) == 6 && mp_ppage(c, 2) == 7 && mp_pused(c, 1) == 0 && mp_ppage(c, 1) == MP_E_OUT_OF_BOUNDS);
    for (uint64_t p = 8; p < 12; p++) CHECK(mp_kind(c, p) == 3); /* format 1's, free once no one reads them */
    CHECK(pread(fd, now, 2 * PS, 0) == 2 * PS && memcmp(now + 512 + MP_UP_MAGIC, MP_UPGRADE_MAGIC, 4) == 0);
    uint64_t r0 = mp_get64(now + 512 + MP_UP_RECORD_0), r1 = mp_get64(now + 512 + MP_UP_RECORD_1);
    CHECK(memcmp(now + 512 + MP_UP_FILE_ID, id, 16) == 0 && r0 != r1 && r0 >= 12 && r1 >= 12);
    CHECK(mp_get32(now + 512 + MP_UPGRADE_CRC_OFFSET) == mp_crc32c(0, now + 512, MP_UPGRADE_CRC_OFFSET));
    CHECK(mp_kind(c, r0) == 2 && mp_kind(c, r1) == 2);
    CHECK(mp_free_page(c, r0) == MP_E_RESERVED && mp_free_page(c, r1) == MP_E_RESERVED && mp_free_page(c, 6) == MP_E_RESERVED);
    view up = writer_view(c);
    CHECK(mp_close(c) == 0);
    mp_free(c);

    int rc;
    close(fd);
    c = open_file(path, MP_WRITABLE, &fd, &rc);
    CHECK(rc == 0);
    view reopened = writer_view(c);
    CHECK(same_view(&up, &reopened));
    CHECK(mp_free_page(c, r0) == MP_E_RESERVED && mp_free_page(c, r1) == MP_E_RESERVED);
    mp_snap *s = mp_snap_new();
    int rfd = open(path, O_RDONLY);
    CHECK(mp_snap_open(s, rfd, PS) == 0 && mp_snap_record_slot(s) == 0);
    view sv = snap_view(s, 2);
    CHECK(same_view(&up, &sv));
    CHECK(mp_alloc(c) == 8); /* the lowest of format 1's pages, reclaimed */
    uint64_t slot = 0;
    CHECK(mp_pfree(c, &slot, 1) == 0 && mp_palloc(c, &slot, 1) == 0 && slot == 0);
    CHECK(mp_snap_refresh(s) == 1 && mp_snap_generation(s) == mp_generation(c));
    sv = snap_view(s, 2);
    view wv = writer_view(c);
    CHECK(same_view(&wv, &sv));
    mp_snap_close(s);
    mp_snap_free(s);
    close(rfd);
    shut(c, fd);
    c = open_file(path, MP_WRITABLE, &fd, &rc);
    reopened = writer_view(c);
    CHECK(rc == 0 && same_view(&wv, &reopened));
    shut(c, fd);
    free(img);
    free(now);
}

/* -- mutated files ------------------------------------------------------------------------------ */

enum { CHUNK = 4096 };

/* A copy of a base file, edited; what changed is tracked in chunks, so that undoing the edits
 * and writing the copy cost what the edits touched. */
typedef struct {
    const unsigned char *orig;
    unsigned char *img;
    size_t size, len;
    uint32_t ps, block;
    uint64_t *dirty, ndirty; /* chunks touched */
    unsigned char *marked;
} image;

static void mark(image *m, size_t at, size_t n) {
    if (!n || at >= m->size) return;
    size_t last = (at + n - 1 < m->size ? at + n - 1 : m->size - 1) / CHUNK;
    for (size_t k = at / CHUNK; k <= last; k++)
        if (!m->marked[k]) {
            m->marked[k] = 1;
            m->dirty[m->ndirty++] = k;
        }
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* (called for every page of every resealed copy, so without a library call) */
static int is_block(const unsigned char *p) {
    static uint32_t magics[4];
    if (!magics[0]) {
        magics[0] = mp_get32((const unsigned char *)MP_BITMAP_LEAF);
        magics[1] = mp_get32((const unsigned char *)MP_BITMAP_NODE);
        magics[2] = mp_get32((const unsigned char *)MP_DIR_LEAF);
        magics[3] = mp_get32((const unsigned char *)MP_DIR_NODE);
    }
    uint32_t m = mp_get32(p);
    return m == magics[0] || m == magics[1] || m == magics[2] || m == magics[3];
}

static int64_t block_crc(const image *m, uint64_t page) {
    if (page < 3 || page > m->len / m->ps || (page + 1) * m->ps > m->len || !is_block(m->img + page * m->ps)) return -1;
    return mp_get32(m->img + page * m->ps + MP_BLK_CRC);
}

/* Make the checksums match the bytes again (tests/test_hostile.py's reseal), so that an edit
 * reaches the checks behind them: the identity, every block (leaves first, then nodes by level)
 * and every pointer to one, the listed pages (with `listed`), and each record's log and header. */
static void reseal(image *m, int listed) {
    unsigned char *d = m->img;
    if (m->len < 64) return;
    mark(m, 0, 64);
    mp_put32(d + MP_IDENTITY_CRC_OFFSET, mp_crc32c(0, d, MP_IDENTITY_CRC_OFFSET));
    uint32_t ps = mp_get32(d + MP_ID_PAGE_SIZE);
    if (!mp_valid_page_size(ps) || ps != m->ps) return;
    const mp_geometry g = mp_geometry_of(ps);
    uint64_t *blocks = malloc((m->len / ps + 1) * sizeof *blocks), nblocks = 0; /* level << 56 | page */
    CHECK(blocks != NULL);
    if (!blocks) return;
    for (uint64_t page = 3; (page + 1) * ps <= m->len; page++) {
        const unsigned char *b = d + page * ps;
        if (is_block(b)) blocks[nblocks++] = (b[3] == 'N' ? mp_get64(b + MP_BLK_KEY) >> MP_LEVEL_SHIFT : 0) << 56 | page;
    }
    qsort(blocks, (size_t)nblocks, sizeof *blocks, cmp_u64);
    for (uint64_t k = 0; k < nblocks; k++) {
        uint64_t page = blocks[k] & ((1ull << 56) - 1);
        unsigned char *b = d + page * ps;
        mark(m, page * ps, g.block);
        for (uint32_t i = 0; b[3] == 'N' && i < g.fanout; i++) {
            int64_t crc = block_crc(m, mp_get64(b + MP_BLOCK_HEADER_SIZE + 16 * i));
            if (crc >= 0) mp_put32(b + MP_BLOCK_HEADER_SIZE + 16 * i + 8, (uint32_t)crc);
        }
        mp_put32(b + MP_BLK_CRC, mp_crc32c(0, b + 8, g.block - 8));
    }
    free(blocks);
    for (uint64_t page = 1; page <= 2; page++) {
        unsigned char *x = d + page * ps;
        if ((page + 1) * ps > m->len || memcmp(x, MP_RECORD_MAGIC, 4) != 0) continue;
        mark(m, page * ps, g.block);
        for (unsigned root = MP_REC_BITMAP_ROOT; root <= MP_REC_DIR_ROOT; root += MP_REC_DIR_ROOT - MP_REC_BITMAP_ROOT) {
            int64_t crc = block_crc(m, mp_get64(x + root));
            if (crc >= 0) mp_put32(x + root + 8, (uint32_t)crc);
        }
        unsigned n = x[MP_REC_LISTED] < MP_LISTED_MAX ? x[MP_REC_LISTED] : MP_LISTED_MAX;
        for (unsigned i = 0; listed && i < n; i++) {
            uint64_t p = mp_get64(x + MP_LISTED_OFFSET + 16 * i);
            if (p >= 3 && p < m->len / ps)
                mp_put32(x + MP_LISTED_OFFSET + 16 * i + 8, mp_crc32c(0, d + p * ps, ps));
        }
        uint32_t log_len = mp_get32(x + MP_REC_LOG_LEN);
        if (log_len > g.block - MP_LOG_OFFSET) log_len = g.block - MP_LOG_OFFSET;
        mp_put32(x + MP_REC_LOG_CRC, mp_crc32c(0, x + MP_LOG_OFFSET, log_len));
        mp_put32(x + MP_REC_CRC, mp_crc32c(0, x + MP_RECORD_CRC_FROM, MP_LISTED_OFFSET + 16 * n - MP_RECORD_CRC_FROM));
    }
}

static const uint64_t boundary[] = {0, 1, 2, 3, 4, 7, 8, 15, 16, 62, 63, 254, 2623, 2624, 10816, 1ull << 31,
                                    (1ull << 32) - 1, 1ull << 32, 1ull << 48, (1ull << 48) - 1, 1ull << 60,
                                    (1ull << 60) - 1, 1ull << 63, UINT64_MAX};

/* Where the base's structures are: the identity, both records' header fields, listed pages and
 * log words, and the header, first and last entries of every tree block. */
typedef struct {
    size_t *hot, nhot, *log, nlog;
    uint64_t *blocks, nblocks, n;
} layout;

static layout layout_of(const unsigned char *d, size_t size, uint32_t ps) {
    layout l;
    const mp_geometry g = mp_geometry_of(ps);
    size_t pages = size / ps;
    l.hot = malloc((pages * 16 + 600) * sizeof *l.hot);
    l.log = malloc(1200 * sizeof *l.log);
    l.blocks = malloc((pages + 3) * sizeof *l.blocks);
    l.nhot = l.nlog = l.nblocks = 0;
    l.n = 0;
    static const size_t identity[] = {MP_ID_MAGIC, MP_ID_VERSION, MP_ID_PAGE_SIZE, MP_ID_RECORD_0, MP_ID_RECORD_1,
                                      MP_ID_FILE_ID, 40, 48, 56, MP_IDENTITY_CRC_OFFSET};
    static const size_t header[] = {MP_REC_MAGIC, MP_REC_CRC, MP_REC_GENERATION, MP_REC_PAGE_COUNT,
                                    MP_REC_FREE_COUNT, MP_REC_DATA_COUNT, MP_REC_SLOT_COUNT, MP_REC_SLOTS_USED,
                                    MP_REC_CHECKPOINT, MP_REC_BITMAP_ROOT, MP_REC_BITMAP_CRC, MP_REC_BITMAP_HEIGHT,
                                    MP_REC_DIR_HEIGHT, MP_REC_FLAGS, MP_REC_LISTED, MP_REC_DIR_ROOT, MP_REC_DIR_CRC,
                                    MP_REC_LOG_LEN, MP_REC_LOG_CRC, 100, 120};
    for (size_t i = 0; i < sizeof identity / sizeof *identity; i++) l.hot[l.nhot++] = identity[i];
    for (uint64_t page = 1; page <= 2; page++) {
        size_t at = page * ps;
        for (size_t i = 0; i < sizeof header / sizeof *header; i++) l.hot[l.nhot++] = at + header[i];
        for (size_t i = 0; i < MP_LISTED_MAX; i++) {
            l.hot[l.nhot++] = at + MP_LISTED_OFFSET + 16 * i;
            l.hot[l.nhot++] = at + MP_LISTED_OFFSET + 16 * i + 8;
        }
        uint64_t words = mp_get32(d + at + MP_REC_LOG_LEN) / 8 + 2, room = (g.block - MP_LOG_OFFSET) / 8;
        for (uint64_t w = 0; w < words && w < room; w++) {
            l.hot[l.nhot++] = at + MP_LOG_OFFSET + 8 * w;
            l.log[l.nlog++] = at + MP_LOG_OFFSET + 8 * w;
        }
        if (memcmp(d + at, MP_RECORD_MAGIC, 4) == 0 && mp_get64(d + at + MP_REC_PAGE_COUNT) > l.n)
            l.n = mp_get64(d + at + MP_REC_PAGE_COUNT);
    }
    for (uint64_t page = 3; page < pages; page++) {
        const unsigned char *b = d + page * ps;
        if (!is_block(b)) continue;
        l.blocks[l.nblocks++] = page;
        static const size_t fields[] = {0, 4, 8, 16, 24, 32, 40, 44, 48, 56};
        for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) l.hot[l.nhot++] = page * ps + fields[i];
        l.hot[l.nhot++] = page * ps + MP_BLOCK_HEADER_SIZE + 16 * (g.fanout - 1);
        if (b[3] == 'L' && b[2] == 'B') { /* a bitmap leaf: its data and pending bitmaps too */
            l.hot[l.nhot++] = page * ps + MP_BLOCK_HEADER_SIZE + g.leaf_bytes;
            l.hot[l.nhot++] = page * ps + MP_BLOCK_HEADER_SIZE + 2 * g.leaf_bytes;
        }
    }
    return l;
}

static uint64_t value64(const layout *l) {
    switch (rnd() % 7) {
    case 0:
    case 1: return boundary[rnd() % (sizeof boundary / sizeof *boundary)];
    case 2: return UINT64_MAX - rnd() % 4;
    case 3: return rnd() % 100000;
    case 4: return l->n + rnd() % 5 - 2; /* about the page count */
    case 5: return l->nblocks ? l->blocks[rnd() % l->nblocks] : 3; /* another block's page */
    default: return rnd();
    }
}

/* A log word of any kind, about the pages the file has. */
static uint64_t log_word(const layout *l) {
    uint64_t kind = rnd() % 8, page = rnd() % (l->n + 3), count = rnd() % 4 ? 0 : rnd() % 4096;
    if (kind == MP_GEN) return kind << MP_KIND_SHIFT | (rnd() % 64);
    return kind << MP_KIND_SHIFT | count << MP_RUN_SHIFT | page;
}

static void mutate(image *m, const layout *l) {
    int edits = 1 + (int)(rnd() % 4), logged = 0;
    for (int e = 0; e < edits; e++) {
        size_t at = rnd() % 3 ? l->hot[rnd() % l->nhot] + (rnd() % 4 ? 0 : rnd() % 16) : rnd() % m->size;
        if (at >= m->size) at = rnd() % m->size;
        size_t room = m->size - at;
        switch (rnd() % 20) {
        case 0:
        case 1: m->img[at] ^= (unsigned char)(1u << (rnd() % 8)); mark(m, at, 1); break;
        case 2:
        case 3: m->img[at] = (unsigned char)rnd(); mark(m, at, 1); break;
        case 4:
        case 5:
        case 6:
        case 7:
            if (room >= 8) mp_put64(m->img + at, value64(l)), mark(m, at, 8);
            break;
        case 8:
        case 9:
            if (room >= 4) mp_put32(m->img + at, (uint32_t)value64(l)), mark(m, at, 4);
            break;
        case 10: /* truncation (rarer: one check answers most of them): anywhere, at a page
                  * boundary, or inside the last page */
            switch (rnd() % 3) {
            case 0: m->len = rnd() % m->size; break;
            case 1: m->len = (size_t)(rnd() % (m->size / m->ps + 1)) * m->ps; break;
            default: m->len = m->size - 1 - rnd() % m->ps; break;
            }
            break;
        case 11:
        case 12: {
            size_t n = 1 + rnd() % 600;
            n = n < room ? n : room;
            memset(m->img + at, 0, n);
            mark(m, at, n);
            break;
        }
        case 13:
        case 14: {
            size_t n = room < 64 ? room : 64;
            fill_random(m->img + at, n);
            mark(m, at, n);
            break;
        }
        case 15:
        case 16:
        case 17: /* a word of the log: behind its checksum, so mostly resealed */
            if (l->nlog) {
                size_t w = l->log[rnd() % l->nlog];
                mp_put64(m->img + w, log_word(l));
                mark(m, w, 8);
                logged = 1;
            }
            break;
        default: /* a block or record written where another one belongs */
            if (l->nblocks) {
                uint64_t from = rnd() % 4 ? l->blocks[rnd() % l->nblocks] : 1 + rnd() % 2;
                uint64_t to = rnd() % 2 ? l->blocks[rnd() % l->nblocks] : 1 + rnd() % (m->size / m->ps - 1);
                if (from != to) {
                    memcpy(m->img + to * m->ps, m->img + from * m->ps, m->block);
                    mark(m, to * m->ps, m->block);
                }
            }
            break;
        }
    }
    if (rnd() % 3 == 0 || (logged && rnd() % 4)) reseal(m, (int)(rnd() % 2));
}

/* The copy into `path`: the base's non-zero chunks and the edited ones, leaving the rest sparse. */
static void write_image(const image *m, const char *path, const uint64_t *chunks, uint64_t nchunks) {
    static const unsigned char zero[CHUNK];
    int out = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(out >= 0 && ftruncate(out, (off_t)m->len) == 0);
    for (int pass = 0; pass < 2; pass++) {
        const uint64_t *list = pass ? m->dirty : chunks;
        uint64_t n = pass ? m->ndirty : nchunks;
        for (uint64_t i = 0; i < n; i++) {
            size_t at = (size_t)list[i] * CHUNK;
            if (at >= m->len || (!pass && m->marked[list[i]])) continue;
            size_t len = m->len - at < CHUNK ? m->len - at : CHUNK;
            if (memcmp(m->img + at, zero, len) != 0) CHECK(pwrite(out, m->img + at, len, (off_t)at) == (ssize_t)len);
        }
    }
    close(out);
}

/* Whatever a hostile file holds, a snapshot opens it or reports an error; every reader answers
 * or reports one. */
static int snapshot_of_hostile(int fd, view *v) {
    mp_snap *s = mp_snap_new();
    int rs = mp_snap_open(s, fd, 0);
    CHECK(rs == 0 || is_error(rs));
    if (rs == 0) {
        *v = snap_view(s, 0);
        int64_t newest = mp_snap_newest(s, fd, 0);
        CHECK(newest == (int64_t)v->gen);
        int newer = mp_snap_newer(s); /* a hint: the other slot may hold a higher, invalid one */
        CHECK((newer == 0 || newer == 1) && mp_snap_refresh(s) == 0);
        CHECK(mp_snap_record_slot(s) == 0 || mp_snap_record_slot(s) == 1);
        CHECK(mp_valid_page_size(mp_snap_page_size(s)));
        char *addr;
        uint64_t len;
        CHECK(export_snap_map(s, &addr, &len, 1) >= 0 && len >= v->n * mp_snap_page_size(s));
    }
    CHECK(mp_snap_close(s) == 0);
    mp_snap_free(s);
    return rs;
}

/* Every kind of change a writer makes, committed, on a file it opened. */
static void every_change(mp_core *c) {
    const uint32_t ps = mp_page_size(c);
    unsigned char *buf = malloc(ps);
    char *addr;
    uint64_t len;
    CHECK(buf != NULL);
    if (!buf) return;
    fill_random(buf, ps);
    int64_t p = mp_alloc(c);
    CHECK(p >= 3);
    if (p >= 3) CHECK(mp_kind(c, (uint64_t)p) == 1 && mp_free_page(c, (uint64_t)p) == 0);
    uint64_t slot;
    CHECK(mp_palloc(c, &slot, 1) == 0);
    CHECK(mp_pwrite(c, slot, buf, ps) == 0);
    int64_t page = mp_ppage(c, slot);
    CHECK(page >= 3 && export_map(c, &addr, &len) >= 0);
    if (page >= 3) CHECK(memcmp(addr + (uint64_t)page * ps, buf, ps) == 0);
    CHECK(mp_pfree(c, &slot, 1) == 0 && mp_pused(c, slot) == 0);
    int64_t used = some_slot(c);
    if (used >= 0) CHECK(mp_pwrite(c, (uint64_t)used, buf, ps) == 0);
    p = some_data_page(c);
    if (p >= 0) CHECK(mp_free_page(c, (uint64_t)p) == 0);
    CHECK(mp_begin(c) == 0 && mp_alloc(c) >= 3);
    int r = mp_free_page(c, rnd() % (mp_page_count(c) + 4));
    CHECK(r == 0 || r == MP_E_OUT_OF_BOUNDS || r == MP_E_RESERVED || r == MP_E_DOUBLE_FREE);
    uint64_t two[2];
    CHECK(mp_palloc(c, two, 2) == 0 && mp_pfree(c, two + 1, 1) == 0);
    CHECK(mp_commit(c) == 0);
    if (rnd() % 4 == 0) CHECK(mp_checkpoint_now(c) == 0);
    CHECK(mp_adopt_batch(c) == MP_E_VALUE); /* no batch open */
    /* another thread's batch: mp_kind_try answers -1 instead of waiting, until it is ours */
    pthread_t other;
    CHECK(pthread_create(&other, NULL, begin_batch, c) == 0 && pthread_join(other, NULL) == 0);
    CHECK(mp_kind_try(c, 0) == -1 && mp_adopt_batch(c) == 0 && mp_kind_try(c, 0) == 2);
    CHECK(mp_rollback(c) == 0);
    CHECK(mp_begin(c) == 0 && mp_shrink(c) == MP_E_VALUE && mp_trim(c) == MP_E_VALUE && mp_adopt_batch(c) == 0);
    CHECK(mp_rollback(c) == 0);
    if (rnd() % 3 == 0) {
        uint64_t before = mp_page_count(c);
        /* moving a protected page checks its content first: a damaged one refuses the shrink */
        int64_t a = mp_shrink(c), b = a >= 0 ? mp_shrink(c) : 0;
        CHECK((a >= 0 || a == MP_E_CORRUPT_DIRECTORY) && (b >= 0 || b == MP_E_CORRUPT_DIRECTORY));
        CHECK(mp_page_count(c) <= before);
    }
    free(buf);
}

/* Mutated copies of a base file, each through a snapshot of the file and then a writer (and a
 * snapshot of its commit). Whatever the bytes, every call answers or reports an error; what
 * the writer validates whole, the snapshots read the same; and the writer's commits on any
 * state it accepted leave a file that opens again as the writer left it. */
static void hostile(const char *name, const unsigned char *orig, size_t size, const char *scratch, long mutations) {
    image m;
    m.orig = orig;
    m.size = size;
    m.ps = mp_get32(orig + MP_ID_PAGE_SIZE);
    m.block = m.ps < MP_MAX_BLOCK ? m.ps : MP_MAX_BLOCK;
    m.img = malloc(size);
    m.dirty = malloc((size / CHUNK + 1) * sizeof *m.dirty);
    m.marked = calloc(size / CHUNK + 1, 1);
    m.ndirty = 0;
    CHECK(m.img && m.dirty && m.marked && mp_valid_page_size(m.ps));
    memcpy(m.img, orig, size);
    layout l = layout_of(orig, size, m.ps);
    uint64_t *chunks = malloc((size / CHUNK + 1) * sizeof *chunks), nchunks = 0;
    static const unsigned char zero[CHUNK];
    for (size_t at = 0; at < size; at += CHUNK)
        if (memcmp(orig + at, zero, size - at < CHUNK ? size - at : CHUNK) != 0) chunks[nchunks++] = at / CHUNK;
    long opened = 0;
    const char *keep = getenv("MAPPEDPAGES_KEEP");
    char kept[4096];
    for (long t = 0; t < mutations; t++) {
        snprintf(context_buf, sizeof context_buf, " (hostile file %ld of %s)", t, name);
        context = context_buf;
        int failed = failures;
        m.len = size;
        mutate(&m, &l);
        write_image(&m, scratch, chunks, nchunks);
        if (keep) {
            snprintf(kept, sizeof kept, "%s/current.mp", keep);
            write_image(&m, kept, chunks, nchunks);
        }

        int rfd = open(scratch, O_RDONLY);
        CHECK(rfd >= 0);
        view sv;
        memset(&sv, 0, sizeof sv);
        int rs = snapshot_of_hostile(rfd, &sv);
        drop_maps();

        int fd = open(scratch, O_RDWR), writable = rnd() % 4 != 0;
        mp_core *c = mp_new();
        int rc = mp_open(c, fd, 0, writable ? MP_WRITABLE : 0);
        CHECK(rc == 0 || rc == MP_E_RECOVERED || is_error(rc));
        if (rc >= 0) {
            opened++;
            view wv = writer_view(c);
            /* what the writer validated in full, a snapshot reads the same */
            if (rc == 0) CHECK(rs == 0 && same_view(&sv, &wv));
            if (t % 2) { /* and so does a snapshot of the writer's commit */
                char *addr;
                uint64_t len;
                mp_snap *s = mp_snap_new();
                CHECK(export_map(c, &addr, &len) >= 0 && mp_snap_of(s, c, addr, len) == 0);
                view pinned = snap_view(s, 1);
                CHECK(same_view(&wv, &pinned));
                CHECK(mp_snap_close(s) == 0);
                mp_snap_free(s);
            }
            if (writable && mp_generation(c) + 1 >= MP_GENERATION_LIMIT) {
                /* a record forged at the last generation: the first commit refuses, and poisons */
                CHECK(mp_alloc(c) == MP_E_VALUE && mp_alloc(c) == MP_E_UNAVAILABLE);
            } else if (writable) {
                every_change(c);
                view end = writer_view(c);
                CHECK(mp_close(c) == 0);
                mp_free(c);
                close(fd);
                /* a writer's commits on any state it accepted make a file that opens whole */
                fd = open(scratch, O_RDWR);
                c = mp_new();
                CHECK(mp_open(c, fd, 0, MP_WRITABLE) == 0);
                view again = writer_view(c);
                CHECK(same_view(&end, &again));
                if (t % 8 == 0) {
                    view after;
                    CHECK(snapshot_of_hostile(rfd, &after) == 0 && same_view(&end, &after));
                }
            } else {
                CHECK(mp_alloc(c) == MP_E_READ_ONLY && mp_free_page(c, 3) == MP_E_READ_ONLY);
            }
        } else {
            CHECK(strlen(mp_message(c)) > 0);
            CHECK(mp_alloc(c) == MP_E_UNAVAILABLE && mp_kind(c, 0) == MP_E_UNAVAILABLE);
        }
        mp_close(c);
        mp_free(c);
        close(fd);
        close(rfd);
        drop_maps();
        if (keep && failures > failed) {
            snprintf(kept, sizeof kept, "%s/%s-%ld.mp", keep, name, t);
            write_image(&m, kept, chunks, nchunks);
        }
        for (uint64_t i = 0; i < m.ndirty; i++) { /* undo the edits */
            size_t at = (size_t)m.dirty[i] * CHUNK;
            memcpy(m.img + at, orig + at, size - at < CHUNK ? size - at : CHUNK);
            m.marked[m.dirty[i]] = 0;
        }
        m.ndirty = 0;
    }
    context = "";
    printf("hostile files: %ld, of which opened: %ld\n", mutations, opened);
    fflush(stdout);
    free(m.img);
    free(m.dirty);
    free(m.marked);
    free(l.hot);
    free(l.log);
    free(l.blocks);
    free(chunks);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s FILE BASE SCRATCH MUTATIONS LOGGED\n", argv[0]);
        return 2;
    }
    long mutations = atol(argv[4]);
    size_t fresh_size, logged_size, base_size;
    unsigned char *fresh = slurp(argv[1], &fresh_size), *logged_img = slurp(argv[5], &logged_size);
    unsigned char *base = slurp(argv[2], &base_size);
    crc_paths_agree();
    bitmap_matches_naive();
    workload(argv[1], argv[3]);
    sealed(argv[1]);
    logged(argv[5]);
    upgrade(argv[3]);
    hostile("LOGGED", logged_img, logged_size, argv[3], mutations / 5);
    hostile("FILE", fresh, fresh_size, argv[3], mutations / 5);
    hostile("BASE", base, base_size, argv[3], mutations);
    free(fresh);
    free(logged_img);
    free(base);
    if (failures) fprintf(stderr, "%d checks failed\n", failures);
    return failures ? 1 : 0;
}
