/* The on-disk format's numbers, layouts and arithmetic (docs/FORMAT.md explains every byte).
 *
 * Mirrors src/mappedpages/format.py; tests/test_c_core.py checks every MP_* constant here
 * against it: MP_<NAME> is format.<NAME>, and MP_<LAYOUT>_<FIELD> is the offset of <field>
 * in format.<LAYOUT> (REC: RECORD, BLK: BLOCK_HEADER, ID: IDENTITY, TBL: TABLE_HEADER,
 * TSLOT: TABLE_SLOT, UP: UPGRADE). */
#ifndef MAPPEDPAGES_FORMAT_H
#define MAPPEDPAGES_FORMAT_H

#include <stdint.h>
#include <string.h>

#define MP_FORMAT_VERSION 2u
#define MP_V1_VERSION 1u
#define MP_MIN_PAGE_SIZE 1024u
#define MP_MAX_PAGE_SIZE (1u << 28)
#define MP_MAX_BLOCK 4096u
#define MP_INITIAL_PAGES 16u
#define MP_RESERVED_PAGES 3u
#define MP_MIN_PAGE_COUNT 4u /* the reserved pages and one more: the smallest state */
#define MP_GROW_MIN_STEP 16u
#define MP_GROW_CAP_BYTES (1ull << 30)
#define MP_ONE_BARRIER_MAX_PAGE 65536u
#define MP_LISTED_MAX 8u /* entries a one-barrier record lists: runs of pages */
#define MP_LISTED_PAGES 256u /* pages those runs hold at most, so that opening reads little */
#define MP_RUN_LIMIT 0x100000000ull /* pages one listed run may hold */
#define MP_MAX_HEIGHT 8u
#define MP_PAGE_LIMIT (1ull << 48)
#define MP_GENERATION_LIMIT (1ull << 60) /* generations fit in a log word's 60 bits */
#define MP_RUN_MAX 4096u

#define MP_MAGIC "MAPPEDPG"
#define MP_RECORD_MAGIC "MPCR"
#define MP_BITMAP_LEAF "MPBL"
#define MP_BITMAP_NODE "MPBN"
#define MP_DIR_LEAF "MPDL"
#define MP_DIR_NODE "MPDN"
#define MP_UPGRADE_MAGIC "MPV2"
#define MP_TABLE_MAGIC "MPREADRS"

/* page 0: identity */
#define MP_ID_MAGIC 0
#define MP_ID_VERSION 8
#define MP_ID_PAGE_SIZE 12
#define MP_ID_RECORD_0 16
#define MP_ID_RECORD_1 24
#define MP_ID_FILE_ID 32
#define MP_IDENTITY_CRC_OFFSET 60

/* commit records: header, listed pages from MP_LISTED_OFFSET, the log from MP_LOG_OFFSET */
#define MP_REC_MAGIC 0
#define MP_REC_CRC 4
#define MP_REC_GENERATION 8
#define MP_REC_PAGE_COUNT 16
#define MP_REC_FREE_COUNT 24
#define MP_REC_DATA_COUNT 32
#define MP_REC_SLOT_COUNT 40
#define MP_REC_SLOTS_USED 48
#define MP_REC_CHECKPOINT 56
#define MP_REC_BITMAP_ROOT 64
#define MP_REC_BITMAP_CRC 72
#define MP_REC_BITMAP_HEIGHT 76
#define MP_REC_DIR_HEIGHT 77
#define MP_REC_FLAGS 78
#define MP_REC_LISTED 79
#define MP_REC_DIR_ROOT 80
#define MP_REC_DIR_CRC 88
#define MP_REC_LOG_LEN 92
#define MP_REC_LOG_CRC 96
#define MP_RECORD_CRC_FROM 8
#define MP_LISTED_OFFSET 128
#define MP_LOG_OFFSET 256
#define MP_FLAG_ONE_BARRIER 1u
/* a listed entry (16 bytes): a run of pages and the CRC32C of all their bytes */
#define MP_LST_PAGE 0
#define MP_LST_CRC 8
#define MP_LST_RUN 12 /* pages in the run, less one */

/* blocks: a 32-byte header, then the body */
#define MP_BLK_MAGIC 0
#define MP_BLK_CRC 4
#define MP_BLK_GENERATION 8
#define MP_BLK_LOCATION 16
#define MP_BLK_KEY 24
#define MP_BLOCK_HEADER_SIZE 32u
#define MP_LEVEL_SHIFT 56

/* log words */
#define MP_KIND_SHIFT 60
#define MP_RUN_SHIFT 48
#define MP_PAGE_MASK ((1ull << 48) - 1)
#define MP_GEN 1u
#define MP_DATA 2u
#define MP_INTERNAL 3u
#define MP_FREE_DATA 4u
#define MP_FREE_INTERNAL 5u
#define MP_SLOT 6u

/* the reader table */
#define MP_TABLE_VERSION 1u
#define MP_TABLE_HEADER_SIZE 4096u
#define MP_TABLE_SLOT_SIZE 64u
#define MP_TABLE_CAPACITY 4096u
#define MP_TABLE_SIZE (4096u + 64u * 4096u)
#define MP_TBL_MAGIC 0
#define MP_TBL_VERSION 8
#define MP_TBL_SLOT_SIZE 12
#define MP_TBL_CAPACITY 16
#define MP_TBL_HWM 20
#define MP_TBL_FILE_ID 24
#define MP_TSLOT_GENERATION 0
#define MP_TSLOT_PID 8
#define MP_TSLOT_START_TIME 16
#define MP_TSLOT_SINCE 24

/* a format-1 file upgraded in place: the pointer in a format-1 record sector of page 0 */
#define MP_UP_MAGIC 0
#define MP_UP_RECORD_0 8
#define MP_UP_RECORD_1 16
#define MP_UP_FILE_ID 24
#define MP_UPGRADE_SIZE 512u
#define MP_UPGRADE_CRC_OFFSET 508u

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

/* A commit record's header, decoded. */
typedef struct {
    uint32_t crc;
    uint64_t generation, page_count, free_count, data_count, slot_count, slots_used, checkpoint;
    uint64_t bitmap_root, dir_root;
    uint32_t bitmap_crc, dir_crc, log_len, log_crc;
    unsigned bitmap_height, dir_height, flags, listed;
} mp_record;

static inline void mp_record_decode(const unsigned char *x, mp_record *r) {
    r->crc = mp_get32(x + MP_REC_CRC);
    r->generation = mp_get64(x + MP_REC_GENERATION);
    r->page_count = mp_get64(x + MP_REC_PAGE_COUNT);
    r->free_count = mp_get64(x + MP_REC_FREE_COUNT);
    r->data_count = mp_get64(x + MP_REC_DATA_COUNT);
    r->slot_count = mp_get64(x + MP_REC_SLOT_COUNT);
    r->slots_used = mp_get64(x + MP_REC_SLOTS_USED);
    r->checkpoint = mp_get64(x + MP_REC_CHECKPOINT);
    r->bitmap_root = mp_get64(x + MP_REC_BITMAP_ROOT);
    r->bitmap_crc = mp_get32(x + MP_REC_BITMAP_CRC);
    r->bitmap_height = x[MP_REC_BITMAP_HEIGHT];
    r->dir_height = x[MP_REC_DIR_HEIGHT];
    r->flags = x[MP_REC_FLAGS];
    r->listed = x[MP_REC_LISTED];
    r->dir_root = mp_get64(x + MP_REC_DIR_ROOT);
    r->dir_crc = mp_get32(x + MP_REC_DIR_CRC);
    r->log_len = mp_get32(x + MP_REC_LOG_LEN);
    r->log_crc = mp_get32(x + MP_REC_LOG_CRC);
}

/* The header into x[0, 128) (its crc field is left for the caller). */
static inline void mp_record_encode(unsigned char *x, const mp_record *r) {
    memset(x, 0, MP_LISTED_OFFSET);
    memcpy(x + MP_REC_MAGIC, MP_RECORD_MAGIC, 4);
    mp_put64(x + MP_REC_GENERATION, r->generation);
    mp_put64(x + MP_REC_PAGE_COUNT, r->page_count);
    mp_put64(x + MP_REC_FREE_COUNT, r->free_count);
    mp_put64(x + MP_REC_DATA_COUNT, r->data_count);
    mp_put64(x + MP_REC_SLOT_COUNT, r->slot_count);
    mp_put64(x + MP_REC_SLOTS_USED, r->slots_used);
    mp_put64(x + MP_REC_CHECKPOINT, r->checkpoint);
    mp_put64(x + MP_REC_BITMAP_ROOT, r->bitmap_root);
    mp_put32(x + MP_REC_BITMAP_CRC, r->bitmap_crc);
    x[MP_REC_BITMAP_HEIGHT] = (unsigned char)r->bitmap_height;
    x[MP_REC_DIR_HEIGHT] = (unsigned char)r->dir_height;
    x[MP_REC_FLAGS] = (unsigned char)r->flags;
    x[MP_REC_LISTED] = (unsigned char)r->listed;
    mp_put64(x + MP_REC_DIR_ROOT, r->dir_root);
    mp_put32(x + MP_REC_DIR_CRC, r->dir_crc);
    mp_put32(x + MP_REC_LOG_LEN, r->log_len);
    mp_put32(x + MP_REC_LOG_CRC, r->log_crc);
}

/* A block header, decoded. */
typedef struct {
    uint32_t crc;
    uint64_t generation, location, key;
} mp_block_header;

static inline void mp_block_decode(const unsigned char *b, mp_block_header *h) {
    h->crc = mp_get32(b + MP_BLK_CRC);
    h->generation = mp_get64(b + MP_BLK_GENERATION);
    h->location = mp_get64(b + MP_BLK_LOCATION);
    h->key = mp_get64(b + MP_BLK_KEY);
}

static inline uint64_t mp_node_key(unsigned level, uint64_t index) {
    return (uint64_t)level << MP_LEVEL_SHIFT | index;
}

/* A pointer (or a directory entry): page, CRC32C, four zero bytes. */
typedef struct {
    uint64_t page;
    uint32_t crc;
} mp_ptr;

static inline mp_ptr mp_ptr_get(const unsigned char *p) {
    mp_ptr r;
    r.page = mp_get64(p);
    r.crc = mp_get32(p + 8);
    return r;
}
static inline void mp_ptr_put(unsigned char *p, mp_ptr v) {
    mp_put64(p, v.page);
    mp_put32(p + 8, v.crc);
    mp_put32(p + 12, 0);
}

/* A listed entry: pages [page, page + count) held bytes whose CRC32C is crc. */
typedef struct {
    uint64_t page, count;
    uint32_t crc;
} mp_listed;

static inline mp_listed mp_listed_get(const unsigned char *p) {
    mp_listed r;
    r.page = mp_get64(p + MP_LST_PAGE);
    r.crc = mp_get32(p + MP_LST_CRC);
    r.count = (uint64_t)mp_get32(p + MP_LST_RUN) + 1;
    return r;
}
static inline void mp_listed_put(unsigned char *p, mp_listed v) {
    mp_put64(p + MP_LST_PAGE, v.page);
    mp_put32(p + MP_LST_CRC, v.crc);
    mp_put32(p + MP_LST_RUN, (uint32_t)(v.count - 1));
}

static inline uint64_t mp_run_word(unsigned kind, uint64_t page, uint64_t count) {
    return (uint64_t)kind << MP_KIND_SHIFT | (count - 1) << MP_RUN_SHIFT | page;
}
static inline unsigned mp_word_kind(uint64_t w) { return (unsigned)(w >> MP_KIND_SHIFT); }
static inline uint64_t mp_word_page(uint64_t w) { return w & MP_PAGE_MASK; }
static inline uint64_t mp_word_count(uint64_t w) { return (w >> MP_RUN_SHIFT & 0xFFF) + 1; }

/* Sizes of the structures for one page size (docs/FORMAT.md, "Terms"). */
typedef struct {
    uint32_t page_size;
    uint32_t block;      /* M = min(page_size, 4096) */
    uint32_t fanout;     /* F: pointers per node, entries per directory leaf */
    uint32_t leaf_bytes; /* B: bytes of each bitmap of a bitmap leaf */
    uint64_t leaf_pages; /* C = 8 B */
} mp_geometry;

static inline int mp_valid_page_size(uint64_t ps) {
    return ps >= MP_MIN_PAGE_SIZE && ps <= MP_MAX_PAGE_SIZE && (ps & (ps - 1)) == 0;
}

static inline mp_geometry mp_geometry_of(uint32_t page_size) {
    mp_geometry g;
    g.page_size = page_size;
    g.block = page_size < MP_MAX_BLOCK ? page_size : MP_MAX_BLOCK;
    g.fanout = (g.block - MP_BLOCK_HEADER_SIZE) / 16;
    g.leaf_bytes = (g.block - MP_BLOCK_HEADER_SIZE) / 24 * 8;
    g.leaf_pages = (uint64_t)g.leaf_bytes * 8;
    return g;
}

static inline uint64_t mp_div_up(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

/* The least height whose tree holds `leaves` leaves. */
static inline unsigned mp_height_for(const mp_geometry *g, uint64_t leaves) {
    unsigned h = 0;
    uint64_t room = 1;
    while (room < leaves) {
        h++;
        room *= g->fanout;
    }
    return h;
}

/* F^h, saturating (heights are at most 8, and F^8 can exceed 64 bits). */
static inline uint64_t mp_capacity(const mp_geometry *g, unsigned h) {
    uint64_t room = 1;
    for (unsigned i = 0; i < h; i++) {
        if (room > UINT64_MAX / g->fanout) return UINT64_MAX;
        room *= g->fanout;
    }
    return room;
}

static inline int mp_one_barrier_allowed(uint32_t page_size) { return page_size <= MP_ONE_BARRIER_MAX_PAGE; }

/* The page count after growing so that `needed` more pages exist (0 on overflow). */
static inline uint64_t mp_grow_target(const mp_geometry *g, uint64_t count, uint64_t needed) {
    uint64_t cap = MP_GROW_CAP_BYTES / g->page_size;
    if (cap < MP_GROW_MIN_STEP) cap = MP_GROW_MIN_STEP;
    uint64_t target = count;
    while (target - count < needed) {
        uint64_t step = target > MP_GROW_MIN_STEP ? target : MP_GROW_MIN_STEP;
        if (step > cap) step = cap;
        if (target > MP_PAGE_LIMIT) return 0;
        target += step;
    }
    return target;
}

#endif
