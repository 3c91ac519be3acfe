/* The commit sequence (docs/FORMAT.md, "Commit"), in the order that keeps the last committed
 * state intact until the new commit record is written:
 *   1. write each dirty bitmap group to its non-current copy and, when the allocation state
 *      or the directory pointers changed, the metadata to the inactive copy (nothing the
 *      committed state uses is touched); the layer above has written its staged pages;
 *   2. barrier: make those writes durable (fdatasync when the file grew, so that its new
 *      length is durable too; else msync of the span written);
 *   3. flip: write the commit record the last commit did not use, naming the metadata copy,
 *      the new generation and the log;
 *   4. barrier: msync page 0;
 *   5. adopt the new state in memory.
 * With two records, a commit that did not grow the file and wrote at most MP_RECORD_CHECKS pages
 * besides the metadata skips barrier 1: its record lists those pages with their CRC32C (the
 * metadata is named with its own), barrier 2 makes everything durable at once, and on open a
 * record whose pages or metadata do not match is the commit cut short, so the record before it
 * is in force.
 * A failure anywhere poisons the core: the file still holds a consistent state, but this
 * process can no longer tell which one. */
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core.h"
#include "crc32c.h"

/* Write a block (header, body from the bitmap) at `page`, as generation gen + 1. */
static void write_block(mp_core *c, uint64_t page, const char *magic, uint64_t k) {
    const uint32_t m = c->geo.block;
    unsigned char *b = c->map + page * c->geo.page_size;
    memcpy(b, magic, 4);
    mp_put64(b + 8, c->gen + 1);
    mp_put64(b + 16, page);
    mp_put64(b + 24, 0);
    unsigned offset = MP_GROUP_BITMAP_OFFSET;
    if (k == 0) {
        offset = MP_META_BITMAP_OFFSET;
        memset(b + 32, 0, MP_META_BITMAP_OFFSET - 32);
        mp_put64(b + MP_META_FIELDS_OFFSET, c->n);
        mp_put64(b + MP_META_FIELDS_OFFSET + 8, c->free);
        mp_put64(b + MP_META_FIELDS_OFFSET + 16, c->dir[0]);
        mp_put64(b + MP_META_FIELDS_OFFSET + 24, c->dir[1]);
    }
    mp_bitmap_store(&c->bits, mp_group_start(&c->geo, k), b + offset, m - offset);
    mp_put32(b + 4, mp_crc32c(0, b + 8, m - 8));
    mp__written(c, page * c->geo.page_size, m);
}

void mp__written(mp_core *c, uint64_t off, uint64_t len) {
    if (off < c->sync_lo) c->sync_lo = off;
    if (off + len > c->sync_hi) c->sync_hi = off + len;
    uint64_t page = off / c->geo.page_size;
    if (page == 1 || page == 2) return; /* the metadata: the record names it with its crc */
    for (unsigned i = 0; i < c->nwritten; i++)
        if (c->written[i] == page) return;
    if (c->nwritten < MP_RECORD_CHECKS)
        c->written[c->nwritten++] = page;
    else
        c->too_many = 1;
}

static int one_barrier(const mp_core *c) {
    return mp_record_count(c->geo.page_size) > 1 && !c->grew && !c->two && !c->too_many &&
           c->geo.page_size <= MP_ONE_BARRIER_MAX_PAGE;
}

int mp__sync_range(mp_core *c, uint64_t lo, uint64_t hi) {
    const uint64_t os = c->os_page;
    lo = lo / os * os;
    hi = (hi + os - 1) / os * os;
    if (hi > c->map_len) hi = c->map_len;
    if (hi <= lo) return 0;
    if (msync(c->map + lo, (size_t)(hi - lo), MS_SYNC) != 0) return mp__fail_os(c, errno, "msync");
    return 0;
}

static void write_groups_and_metadata(mp_core *c) {
    const uint64_t ps = c->geo.page_size;
    for (uint64_t i = 0; i < c->ntouched; i++) {
        uint64_t k = c->touched[i];
        if (k == 0) continue;
        uint64_t s = mp_group_start(&c->geo, k);
        unsigned flags = c->gflags[k];
        if (flags & G_NEW) { /* copy 1 of a new group may hold bytes of an older attempt */
            memset(c->map + (s + 1) * ps, 0, MP_BLOCK_HEADER_SIZE);
            mp__written(c, (s + 1) * ps, MP_BLOCK_HEADER_SIZE);
        }
        write_block(c, s + 1 - (flags & G_CUR), MP_GROUP_MAGIC, k);
    }
    write_block(c, 2 - (uint64_t)c->active, MP_META_MAGIC, 0);
}

static int write_step(mp_core *c) {
    mp__release_held(c, 1); /* this commit frees them: from now on they may be handed out */
    if (!c->ntouched && !c->grew && !c->forced) return 0;
    /* staged pages and the log alone leave the metadata as it is: the record names it again */
    c->meta_written = c->ntouched || c->grew || c->meta_dirty || mp_record_count(c->geo.page_size) < 2;
    if (c->meta_written) write_groups_and_metadata(c);
    c->single = one_barrier(c);
    return c->single ? 2 : 1;
}

static int sync1_step(mp_core *c) {
    if (!c->sync || c->single) return 0;
    if (c->grew) {
        if (fdatasync(c->fd) != 0) return mp__fail_os(c, errno, "fdatasync");
        c->grew = 0;
        return 0;
    }
    return mp__sync_range(c, c->sync_lo, c->sync_hi);
}

static int next_record(const mp_core *c) { return mp_record_count(c->geo.page_size) > 1 ? 1 - c->rec : 0; }

static void flip_step(mp_core *c) {
    unsigned char *rec = c->map + MP_RECORD_OFFSET + (uint64_t)next_record(c) * MP_RECORD_SIZE;
    int active = c->meta_written ? 1 - c->active : c->active;
    const unsigned char *meta = c->map + (1 + (uint64_t)active) * c->geo.page_size;
    memset(rec, 0, MP_RECORD_SIZE);
    memcpy(rec, MP_RECORD_MAGIC, 4);
    mp_put32(rec + 4, (uint32_t)active);
    mp_put64(rec + 8, c->gen + 1);
    mp_put32(rec + 16, mp_get32(meta + 4));
    mp_put32(rec + 20, c->log_len);
    mp_put64(rec + 24, c->meta_written ? c->gen + 1 : c->meta_gen);
    if (c->single) {
        const uint64_t ps = c->geo.page_size;
        uint64_t pages[MP_RECORD_CHECKS];
        unsigned n = c->nwritten;
        memcpy(pages, c->written, sizeof pages);
        for (unsigned i = 1; i < n; i++) /* ascending, as the pure core lists them */
            for (unsigned j = i; j > 0 && pages[j - 1] > pages[j]; j--) {
                uint64_t t = pages[j];
                pages[j] = pages[j - 1];
                pages[j - 1] = t;
            }
        mp_put32(rec + MP_RECORD_CHECK_OFFSET, n);
        mp_put32(rec + MP_RECORD_CHECK_OFFSET + 4, MP_RECORD_ONE_BARRIER);
        for (unsigned i = 0; i < n; i++) {
            unsigned char *e = rec + MP_RECORD_CHECK_OFFSET + 8 + 12 * i;
            mp_put64(e, pages[i]);
            mp_put32(e + 8, mp_crc32c(0, c->map + pages[i] * ps, (size_t)ps));
        }
    }
    memcpy(rec + MP_RECORD_LOG_OFFSET, c->log, c->log_len);
    mp_put32(rec + MP_RECORD_CRC_OFFSET, mp_crc32c(0, rec, MP_RECORD_CRC_OFFSET));
}

static void done_step(mp_core *c) {
    c->gen++;
    c->rec = next_record(c);
    if (c->meta_written) {
        c->active = 1 - c->active;
        c->meta_gen = c->gen;
    }
    mp__clear_commit(c);
    memcpy(c->log_committed, c->log, c->log_len);
    c->log_len_committed = c->log_len;
    for (uint64_t i = 0; i < c->ntouched; i++) {
        uint64_t k = c->touched[i];
        unsigned flags = c->gflags[k];
        if (k) flags ^= G_CUR;
        c->gflags[k] = (uint8_t)(flags & G_CUR);
    }
    c->ntouched = 0;
    c->grew = 0;
}

void mp__clear_commit(mp_core *c) {
    c->forced = 0;
    c->meta_dirty = 0;
    c->meta_written = 0;
    c->nwritten = 0;
    c->too_many = 0;
    c->two = 0;
    c->single = 0;
    c->sync_lo = UINT64_MAX;
    c->sync_hi = 0;
}

int mp__step(mp_core *c, int step) {
    int r = 0;
    switch (step) {
    case MP_STEP_WRITE: r = write_step(c); break;
    case MP_STEP_SYNC1: r = sync1_step(c); break;
    case MP_STEP_FLIP: flip_step(c); break;
    case MP_STEP_SYNC2: r = c->sync ? mp__sync_range(c, 0, c->single ? c->sync_hi : 1) : 0; break;
    case MP_STEP_DONE: done_step(c); break;
    default: return mp__fail(c, MP_E_VALUE, "no commit step %d", step);
    }
    if (r < 0) c->poisoned = 1;
    return r;
}

int mp__commit(mp_core *c) {
    int r = mp__step(c, MP_STEP_WRITE);
    if (r <= 0) return r;
    for (int step = MP_STEP_SYNC1; step <= MP_STEP_DONE; step++) {
        r = mp__step(c, step);
        if (r < 0) return r;
    }
    return 0;
}
