/* Commit records by themselves: whether a slot is well formed, and which record is in force
 * (docs/FORMAT.md, "Which record is in force"). Shared by the writer's open and snapshots;
 * format.py's read_record_slot and in_force are the same rules in Python. */
#include <stdlib.h>

#include "core.h"
#include "crc32c.h"

int mp__record_valid(const unsigned char *x, const mp_geometry *g, uint64_t file_size, const char **why) {
    (void)file_size;
    const uint32_t m = g->block;
    int empty = 1;
    for (uint32_t i = 0; i < m && empty; i++) empty = x[i] == 0;
    if (empty) return (*why = "empty"), 0;
    if (memcmp(x + MP_REC_MAGIC, MP_RECORD_MAGIC, 4) != 0) return (*why = "bad magic"), 0;
    mp_record r;
    mp_record_decode(x, &r);
    if (r.listed > MP_LISTED_MAX || r.log_len % 8 || r.log_len > m - MP_LOG_OFFSET) return (*why = "bad sizes"), 0;
    if (r.crc != mp_crc32c(0, x + MP_RECORD_CRC_FROM, MP_LISTED_OFFSET + 16 * r.listed - MP_RECORD_CRC_FROM))
        return (*why = "checksum mismatch"), 0;
    if (r.log_crc != mp_crc32c(0, x + MP_LOG_OFFSET, r.log_len)) return (*why = "log checksum mismatch"), 0;
    if ((r.flags & ~MP_FLAG_ONE_BARRIER) || (r.listed && !r.flags)) return (*why = "bad flags"), -1;
    if (r.flags && !mp_one_barrier_allowed(g->page_size)) return (*why = "one barrier with large pages"), -1;
    if (!(1 <= r.checkpoint && r.checkpoint <= r.generation) || r.generation >= MP_GENERATION_LIMIT)
        return (*why = "bad generations"), -1;
    if (r.page_count < MP_MIN_PAGE_COUNT || r.page_count > MP_PAGE_LIMIT) return (*why = "bad page count"), -1;
    if (r.bitmap_height > MP_MAX_HEIGHT || r.dir_height > MP_MAX_HEIGHT) return (*why = "bad tree height"), -1;
    if (r.slot_count > r.page_count || r.slots_used > r.slot_count) return (*why = "bad slot counts"), -1;
    if (r.free_count > r.page_count || r.data_count > r.page_count - r.free_count) return (*why = "bad page counts"), -1;
    if (r.bitmap_root == 0 || (r.dir_root == 0 && (r.dir_crc || r.dir_height))) return (*why = "bad roots"), -1;
    for (unsigned i = 100; i < MP_LISTED_OFFSET; i++)
        if (x[i]) return (*why = "reserved bytes set"), -1;
    *why = "";
    return 1;
}

/* Whether every run the record lists holds the bytes its CRC32C says (read page by page, so
 * that a forged run costs at most a read of the file). */
static int landed(const unsigned char *x, const mp_geometry *g, mp_read_fn read, void *ctx, int *ok) {
    mp_record r;
    mp_record_decode(x, &r);
    *ok = 1;
    if (!r.listed) return 0;
    unsigned char *buf = malloc(g->page_size);
    if (!buf) return MP_E_NO_MEMORY;
    int rc = 0;
    for (unsigned i = 0; i < r.listed && *ok && !rc; i++) {
        mp_listed e = mp_listed_get(x + MP_LISTED_OFFSET + 16 * i);
        if (e.page < MP_RESERVED_PAGES || e.page >= r.page_count || e.count > r.page_count - e.page) {
            *ok = 0;
            break;
        }
        uint32_t crc = 0;
        for (uint64_t k = 0; k < e.count && !rc; k++) {
            rc = read(ctx, buf, g->page_size, (e.page + k) * g->page_size);
            if (!rc) crc = mp_crc32c(crc, buf, g->page_size);
        }
        *ok = crc == e.crc;
    }
    free(buf);
    return rc;
}

/* Which of two well-formed records comes first: the higher generation; of two with the same
 * generation (a retired record and its copy, docs/FORMAT.md), the one that lists nothing. */
static int first_of(const unsigned char *a, const unsigned char *b) {
    uint64_t ga = mp_get64(a + MP_REC_GENERATION), gb = mp_get64(b + MP_REC_GENERATION);
    if (ga != gb) return ga > gb ? 0 : 1;
    return a[MP_REC_LISTED] == 0 || b[MP_REC_LISTED] != 0 ? 0 : 1;
}

int mp__in_force(const unsigned char *records[2], const mp_geometry *g, uint64_t file_size, mp_read_fn read,
                 void *ctx, int order[2], int *good, int *passed) {
    int valid[2];
    const char *why;
    for (int i = 0; i < 2; i++) valid[i] = mp__record_valid(records[i], g, file_size, &why) > 0;
    int cand[2], nc = 0;
    for (int i = 0; i < 2; i++)
        if (valid[i]) cand[nc++] = i;
    if (nc == 2 && first_of(records[0], records[1])) {
        cand[0] = 1;
        cand[1] = 0;
    }
    *good = 0;
    *passed = 0;
    for (int k = 0; k < nc; k++) {
        if (mp_get64(records[cand[k]] + MP_REC_PAGE_COUNT) > file_size / g->page_size) {
            if (*good || *passed) continue; /* an older record of a file that grew since */
            return MP_E_TRUNCATED;        /* a record is written once the length is durable */
        }
        int ok;
        int rc = landed(records[cand[k]], g, read, ctx, &ok);
        if (rc) return rc;
        if (ok)
            order[(*good)++] = cand[k];
        else if (!*good)
            *passed |= 1 << cand[k];
    }
    return 0;
}
