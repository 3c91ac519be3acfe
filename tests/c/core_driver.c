/* Exercises the C core directly, for builds with AddressSanitizer and UndefinedBehaviorSanitizer
 * (tests/test_c_sanitizers.py): every public call, then mutated files through mp_open.
 *
 * usage: core_driver FILE BASE SCRATCH MUTATIONS LOGGED
 *   FILE     a freshly created 1 KiB-page file (it is modified)
 *   BASE     a 1 KiB-page file in use beyond bitmap group 1, the original of the mutations
 *   SCRATCH  a path the mutated copies are written to (best on tmpfs)
 *   LOGGED   a 4 KiB-page file whose commit record logs protected writes (it is modified, and
 *            the original of a fifth as many mutations)
 * Exits 0 when every check held; prints the failed check otherwise. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitmap.h"
#include "mappedpages.h"

static int failures;
#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                      \
        }                                                                    \
    } while (0)

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static mp_core *open_file(const char *path, int flags, int *fd_out, int *rc) {
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    mp_core *c = mp_new();
    CHECK(c != NULL);
    *rc = mp_open(c, fd, 0, flags);
    *fd_out = fd;
    return c;
}

static void shut(mp_core *c, int fd) {
    mp_close(c);
    mp_free(c);
    close(fd);
}

static void crc_paths_agree(void) {
    unsigned char buf[70000];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)rnd();
    for (int t = 0; t < 300; t++) {
        size_t off = rnd() % 64, len = rnd() % (sizeof buf - 64);
        if (t < 40) len = (size_t)t;
        mp_crc32c_select(0);
        uint32_t table = mp_crc32c(0, buf + off, len);
        mp_crc32c_select(-1);
        uint32_t best = mp_crc32c(0, buf + off, len);
        CHECK(table == best);
        size_t cut = len ? rnd() % len : 0;
        CHECK(mp_crc32c(mp_crc32c(0, buf + off, cut), buf + off + cut, len - cut) == best);
    }
    CHECK(mp_crc32c(0, (const unsigned char *)"123456789", 9) == 0xE3069283u);
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

static uint64_t count_scan(mp_core *c) {
    uint64_t out[1000], total = 0, start = 0;
    for (;;) {
        int64_t got = mp_scan(c, start, out, 1000);
        CHECK(got >= 0);
        if (got <= 0) return total;
        for (int64_t i = 1; i < got; i++) CHECK(out[i] > out[i - 1]);
        total += (uint64_t)got;
        start = out[got - 1] + 1;
    }
}

static void workload(const char *path) {
    int fd, rc;
    mp_core *c = open_file(path, MP_WRITABLE | MP_PREALLOCATE, &fd, &rc);
    CHECK(rc == 0);
    enum { N = 20000 };
    static uint64_t pages[N];
    CHECK(mp_alloc_bulk(c, pages, N) == 0);
    for (int i = 0; i < 500; i++) CHECK(mp_alloc(c) > 2);
    uint64_t n = mp_page_count(c), free_before = mp_free_count(c);
    /* every kind of bad index, none of which may change anything */
    CHECK(mp_free_page(c, n) == MP_E_OUT_OF_BOUNDS);
    CHECK(mp_free_page(c, UINT64_MAX) == MP_E_OUT_OF_BOUNDS);
    CHECK(mp_free_page(c, 0) == MP_E_RESERVED);
    CHECK(mp_free_page(c, 2) == MP_E_RESERVED);
    CHECK(mp_free_page(c, 7168) == MP_E_RESERVED); /* group 1's copy 0 for 1 KiB pages */
    CHECK(mp_is_allocated(c, n) == MP_E_OUT_OF_BOUNDS);
    CHECK(mp_free_page(c, pages[5]) == 0);
    CHECK(mp_free_page(c, pages[5]) == MP_E_DOUBLE_FREE);
    uint64_t dup[3] = {pages[6], pages[7], pages[6]};
    uint64_t f = mp_free_count(c);
    CHECK(mp_free_bulk(c, dup, 3) == MP_E_DOUBLE_FREE);
    CHECK(mp_free_count(c) == f && mp_is_allocated(c, pages[6]) == 1);
    uint64_t bad[2] = {pages[8], n + 5};
    CHECK(mp_free_bulk(c, bad, 2) == MP_E_OUT_OF_BOUNDS && mp_is_allocated(c, pages[8]) == 1);
    CHECK(mp_flush_pages(c, bad, 2) == MP_E_OUT_OF_BOUNDS);
    CHECK(mp_free_bulk(c, pages + 100, 5000) == 0);
    CHECK(mp_free_count(c) == free_before + 5001);
    /* 1 KiB pages: one commit record, which carries no log */
    unsigned char log[480] = {0};
    CHECK(mp_set_log(c, log, 4) == MP_E_VALUE);
    CHECK(mp_log(c, log) == 0);
    /* a batch that grows the file, rolled back */
    uint64_t before_n = mp_page_count(c), before_free = mp_free_count(c), used = count_scan(c);
    CHECK(mp_begin(c) == 0);
    static uint64_t more[60000];
    CHECK(mp_alloc_bulk(c, more, 60000) == 0);
    CHECK(mp_page_count(c) > before_n);
    CHECK(mp_rollback(c) == 0);
    CHECK(mp_page_count(c) == before_n && mp_free_count(c) == before_free && count_scan(c) == used);
    /* pages the committed state uses, freed in a batch, are held until the commit */
    CHECK(mp_begin(c) == 0);
    CHECK(mp_free_page(c, pages[8]) == 0 && mp_is_allocated(c, pages[8]) == 0);
    CHECK(mp_free_page(c, pages[8]) == MP_E_DOUBLE_FREE);
    uint64_t held[3] = {pages[9], pages[10], pages[8]};
    CHECK(mp_free_bulk(c, held, 3) == MP_E_DOUBLE_FREE && mp_is_allocated(c, pages[9]) == 1);
    CHECK(mp_free_bulk(c, held, 2) == 0 && count_scan(c) == used - 3);
    for (int i = 0; i < 3000; i++) {
        int64_t p = mp_alloc(c);
        CHECK(p > 2 && (uint64_t)p != pages[8] && (uint64_t)p != pages[9] && (uint64_t)p != pages[10]);
    }
    CHECK(mp_rollback(c) == 0 && count_scan(c) == used && mp_is_allocated(c, pages[8]) == 1);
    CHECK(mp_begin(c) == 0 && mp_free_bulk(c, held, 3) == 0 && mp_commit(c) == 0);
    CHECK(mp_is_allocated(c, pages[8]) == 0 && count_scan(c) == used - 3);
    uint64_t again[3];
    CHECK(mp_alloc_bulk(c, again, 3) == 0 && mp_free_bulk(c, again, 3) == 0);
    used -= 3;
    /* a batch committed, observed step by step */
    CHECK(mp_set_manual(c, 1) == 0);
    CHECK(mp_begin(c) == 0);
    for (int i = 0; i < 100; i++) CHECK(mp_alloc(c) > 2);
    CHECK(mp_pending(c) == 0);
    CHECK(mp_commit(c) == 0);
    CHECK(mp_pending(c) == 1);
    uint64_t gen = mp_generation(c);
    for (int step = MP_STEP_WRITE; step <= MP_STEP_DONE; step++) CHECK(mp_commit_step(c, step) >= 0);
    CHECK(mp_generation(c) == gen + 1 && mp_pending(c) == 0);
    CHECK(mp_commit_step(c, 99) == MP_E_VALUE);
    CHECK(mp_set_manual(c, 0) == 0);
    /* the mapping outlives the core once exported */
    char *addr = NULL;
    uint64_t len = 0;
    CHECK(mp_map_export(c, &addr, &len) >= 0 && len >= mp_page_count(c) * 1024);
    unsigned char bits[1 << 16];
    CHECK(mp_bitmap_bytes(c, bits, (mp_page_count(c) + 7) / 8) == 0);
    CHECK(mp_bitmap_bytes(c, bits, 1) == MP_E_VALUE);
    CHECK((bits[0] & 7) == 7);
    uint64_t final_n = mp_page_count(c), final_free = mp_free_count(c);
    CHECK(mp_flush_all(c) == 0);
    CHECK(mp_close(c) == 0);
    CHECK(mp_alloc(c) == MP_E_UNAVAILABLE);
    CHECK(memcmp(addr, "MAPPEDPG", 8) == 0);
    mp_unmap(addr, len);
    mp_free(c);
    close(fd);

    c = open_file(path, MP_WRITABLE, &fd, &rc);
    CHECK(rc == 0 && mp_page_count(c) == final_n && mp_free_count(c) == final_free);
    shut(c, fd);
}

/* The record's log: kept across commits, restored by a rollback, read back after a reopen. */
static void logged(const char *path) {
    int fd, rc;
    mp_core *c = open_file(path, MP_WRITABLE, &fd, &rc);
    CHECK(rc == 0);
    unsigned char log[480], again[480];
    int len = mp_log(c, log);
    CHECK(len > 0 && len % 4 == 0);
    CHECK(mp_set_log(c, log, 477) == MP_E_VALUE && mp_set_log(c, log, 480) == MP_E_VALUE);
    CHECK(mp_set_log(c, log, 6) == MP_E_VALUE && mp_log(c, again) == len);
    uint64_t gen = mp_generation(c);
    CHECK(mp_begin(c) == 0 && mp_set_log(c, log, 0) == 0 && mp_log(c, again) == 0);
    CHECK(mp_rollback(c) == 0 && mp_log(c, again) == len && memcmp(log, again, (size_t)len) == 0);
    CHECK(mp_alloc(c) > 2 && mp_generation(c) == gen + 1 && mp_log(c, again) == len);
    CHECK(mp_set_log(c, log, 4) == 0 && mp_commit(c) == 0 && mp_generation(c) == gen + 2);
    shut(c, fd);
    c = open_file(path, MP_WRITABLE, &fd, &rc);
    CHECK(rc == 0 && mp_generation(c) == gen + 2 && mp_log(c, again) == 4 && memcmp(log, again, 4) == 0);
    CHECK(mp_set_log(c, log, (uint32_t)len) == 0 && mp_commit(c) == 0);
    /* a change of the allocation state alone takes one barrier (step 1 says so), unless the
     * file grew or two are asked for */
    int64_t q = mp_alloc(c);
    CHECK(q > 2);
    CHECK(mp_set_manual(c, 1) == 0 && mp_free_page(c, (uint64_t)q) == 0 && mp_pending(c) == 1);
    CHECK(mp_commit_step(c, MP_STEP_WRITE) == 2);
    for (int step = MP_STEP_SYNC1; step <= MP_STEP_DONE; step++) CHECK(mp_commit_step(c, step) == 0);
    CHECK(mp_two_barriers(c) == 0 && mp_alloc(c) == q && mp_commit_step(c, MP_STEP_WRITE) == 1);
    for (int step = MP_STEP_SYNC1; step <= MP_STEP_DONE; step++) CHECK(mp_commit_step(c, step) == 0);
    CHECK(mp_set_manual(c, 0) == 0 && mp_pending(c) == 0);
    shut(c, fd);
}

static void hostile(const char *path, const char *scratch, long mutations) {
    int fd = open(path, O_RDONLY);
    struct stat st;
    CHECK(fd >= 0 && fstat(fd, &st) == 0);
    size_t size = (size_t)st.st_size;
    unsigned char *orig = malloc(size), *img = malloc(size);
    CHECK(orig && img && pread(fd, orig, size, 0) == (ssize_t)size);
    memcpy(img, orig, size);
    close(fd);
    long opened = 0;
    for (long t = 0; t < mutations; t++) {
        size_t len = size;
        int edits = 1 + (int)(rnd() % 4);
        for (int e = 0; e < edits; e++) {
            /* mostly the structures: the superblock, metadata pages, group 1's copies */
            static const size_t hot[] = {0, 512, 1024, 2048, 4096, 8192, 7168 * 1024, 7169 * 1024};
            size_t at = rnd() % 3 ? hot[rnd() % 8] + rnd() % 160 : rnd() % size;
            if (at >= size) at = rnd() % size;
            switch (rnd() % 5) {
            case 0: img[at] ^= (unsigned char)(1u << (rnd() % 8)); break;
            case 1: img[at] = (unsigned char)rnd(); break;
            case 2: /* a huge or boundary value in a 64-bit field */
                if (at + 8 <= size) {
                    uint64_t v = rnd() % 2 ? UINT64_MAX - rnd() % 4 : rnd() % 100000;
                    memcpy(img + at, &v, 8);
                }
                break;
            case 3: len = rnd() % size; break;
            default: memset(img + at, 0, size - at < 600 ? size - at : 600); break;
            }
        }
        int out = open(scratch, O_RDWR | O_CREAT | O_TRUNC, 0600);
        CHECK(out >= 0 && ftruncate(out, (off_t)len) == 0);
        /* write only what is not zero: the file stays sparse and the loop fast */
        static const unsigned char zero[4096];
        for (size_t at = 0; at < len; at += 4096) {
            size_t n = len - at < 4096 ? len - at : 4096;
            if (memcmp(img + at, zero, n) != 0) CHECK(pwrite(out, img + at, n, (off_t)at) == (ssize_t)n);
        }
        mp_core *c = mp_new();
        int rc = mp_open(c, out, 0, (int)(rnd() % 2 ? MP_WRITABLE : 0));
        CHECK(rc == 0 || (rc < 0 && rc >= MP_E_VALUE));
        if (rc == 0) {
            opened++;
            uint64_t buf[64];
            CHECK(mp_scan(c, rnd() % 30000, buf, 64) >= 0);
            mp_is_allocated(c, rnd() % 30000);
            int64_t p = mp_alloc(c);
            if (p > 0) CHECK(mp_free_page(c, (uint64_t)p) == 0);
            mp_free_page(c, rnd() % 30000);
        }
        mp_close(c);
        mp_free(c);
        close(out);
        memcpy(img, orig, size); /* undo the edits (cheap next to the file writes) */
    }
    printf("hostile files: %ld, of which opened: %ld\n", mutations, opened);
    free(orig);
    free(img);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s FILE BASE SCRATCH MUTATIONS LOGGED\n", argv[0]);
        return 2;
    }
    crc_paths_agree();
    bitmap_matches_naive();
    workload(argv[1]);
    logged(argv[5]);
    hostile(argv[5], argv[3], atol(argv[4]) / 5);
    hostile(argv[2], argv[3], atol(argv[4]));
    if (failures) fprintf(stderr, "%d checks failed\n", failures);
    return failures ? 1 : 0;
}
