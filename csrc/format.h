/* The on-disk format's numbers and arithmetic (docs/FORMAT.md explains every byte).
 *
 * Mirrors src/mappedpages/format.py; tests/test_c_core.py compares the two. */
#ifndef MAPPEDPAGES_FORMAT_H
#define MAPPEDPAGES_FORMAT_H

#include <stdint.h>
#include <string.h>

#define MP_FORMAT_VERSION 1u
#define MP_MIN_PAGE_SIZE 1024u
#define MP_MAX_PAGE_SIZE (1u << 28)
#define MP_MAX_BLOCK 4096u
#define MP_RESERVED_PAGES 3u
#define MP_GROW_MIN_STEP 16u
#define MP_GROW_CAP_BYTES (1ull << 30)

#define MP_MAGIC "MAPPEDPG"
#define MP_RECORD_MAGIC "MPSL"
#define MP_META_MAGIC "MPMD"
#define MP_GROUP_MAGIC "MPBG"

#define MP_IDENTITY_CRC_OFFSET 60u
/* Commit records: one sector each, in the sectors of page 0 after the identity's. A commit
 * writes the one that does not hold the committed state. */
#define MP_RECORD_OFFSET 512u
#define MP_RECORD_SIZE 512u
/* a one-barrier commit: count (4), flags (4), then up to MP_RECORD_CHECKS pages it wrote, each
 * as page (8) and the CRC32C of its P bytes (4) */
#define MP_RECORD_CHECK_OFFSET 32u
#define MP_RECORD_CHECKS 6u
#define MP_RECORD_ONE_BARRIER 1u
#define MP_ONE_BARRIER_MAX_PAGE 65536u
#define MP_RECORD_LOG_OFFSET 112u
#define MP_RECORD_LOG_MAX 396u
#define MP_RECORD_CRC_OFFSET 508u
#define MP_BLOCK_HEADER_SIZE 32u
#define MP_META_FIELDS_OFFSET 32u
#define MP_META_BITMAP_OFFSET 128u
#define MP_GROUP_BITMAP_OFFSET 32u

/* Little-endian field access: the format is little-endian on every host. */
static inline uint32_t mp_get32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t mp_get64(const unsigned char *p) {
    return (uint64_t)mp_get32(p) | (uint64_t)mp_get32(p + 4) << 32;
}
static inline void mp_put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}
static inline void mp_put64(unsigned char *p, uint64_t v) {
    mp_put32(p, (uint32_t)v);
    mp_put32(p + 4, (uint32_t)(v >> 32));
}

/* Where groups and their bitmap copies lie for one page size. */
typedef struct {
    uint32_t page_size;
    uint32_t block; /* M = min(page_size, 4096) */
    uint64_t c0;    /* pages described by group 0 (in the metadata blocks) */
    uint64_t c;     /* pages described by each group k >= 1 */
} mp_geometry;

/* Two records from 2 KiB pages on; a 1 KiB page 0 has room for one, which then never carries
 * a log (every commit rewrites the metadata, so a damaged record loses nothing). */
static inline unsigned mp_record_count(uint32_t page_size) { return page_size >= 2048 ? 2u : 1u; }

static inline int mp_valid_page_size(uint64_t ps) {
    return ps >= MP_MIN_PAGE_SIZE && ps <= MP_MAX_PAGE_SIZE && (ps & (ps - 1)) == 0;
}

static inline mp_geometry mp_geometry_of(uint32_t page_size) {
    mp_geometry g;
    g.page_size = page_size;
    g.block = page_size < MP_MAX_BLOCK ? page_size : MP_MAX_BLOCK;
    g.c0 = (uint64_t)(g.block - MP_META_BITMAP_OFFSET) * 8;
    g.c = (uint64_t)(g.block - MP_GROUP_BITMAP_OFFSET) * 8;
    return g;
}

static inline uint64_t mp_group_of(const mp_geometry *g, uint64_t page) {
    return page < g->c0 ? 0 : 1 + (page - g->c0) / g->c;
}

static inline uint64_t mp_group_start(const mp_geometry *g, uint64_t k) {
    return k == 0 ? 0 : g->c0 + (k - 1) * g->c;
}

static inline uint64_t mp_group_count(const mp_geometry *g, uint64_t page_count) {
    if (page_count <= g->c0) return 1;
    return 1 + (page_count - g->c0 + g->c - 1) / g->c;
}

static inline int mp_is_internal(const mp_geometry *g, uint64_t page) {
    if (page < MP_RESERVED_PAGES) return 1;
    return page >= g->c0 && (page - g->c0) % g->c < 2;
}

/* A page count that would cut a group's two copy pages moves to just after them. */
static inline uint64_t mp_fix_end(const mp_geometry *g, uint64_t count) {
    if (count <= g->c0) return count;
    uint64_t start = mp_group_start(g, mp_group_count(g, count) - 1);
    return count < start + 2 ? start + 2 : count;
}

/* Group copy pages in [c0, x). */
static inline uint64_t mp_copies_below(const mp_geometry *g, uint64_t x) {
    if (x <= g->c0) return 0;
    uint64_t rest = (x - g->c0) % g->c;
    return 2 * ((x - g->c0) / g->c) + (rest < 2 ? rest : 2);
}

/* The page count after growing so that `need` more free pages exist (0 on overflow). */
static inline uint64_t mp_grow_target(const mp_geometry *g, uint64_t count, uint64_t need) {
    uint64_t cap = MP_GROW_CAP_BYTES / g->page_size;
    if (cap < MP_GROW_MIN_STEP) cap = MP_GROW_MIN_STEP;
    uint64_t target = count;
    for (;;) {
        uint64_t step = target > MP_GROW_MIN_STEP ? target : MP_GROW_MIN_STEP;
        if (step > cap) step = cap;
        if (target > (UINT64_MAX >> 16) - step) return 0;
        target = mp_fix_end(g, target + step);
        uint64_t internal = mp_copies_below(g, target) - mp_copies_below(g, count);
        if (target - count - internal >= need) return target;
    }
}

#endif
