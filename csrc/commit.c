/* The commit sequence (docs/FORMAT.md, "A commit"), in the order that keeps the last committed
 * state intact until the new record is written:
 *   1. write:  the log carries this commit's words if they fit; otherwise a checkpoint writes
 *              the changed leaves and the nodes above them to new pages (checkpoint.c);
 *   2. sync1:  make the staged pages and blocks durable, and the data pages a batch flushed
 *              (fdatasync when the file grew, so that its new length is durable too); skipped
 *              by a one-barrier commit, whose record lists them with their checksums;
 *   3. flip:   write the record slot the record in force does not occupy;
 *   4. sync2:  make the record durable (a one-barrier commit: with everything it wrote);
 *   5. done:   adopt the new state in memory.
 * A failure from the first write on poisons the core: the file still holds a consistent state,
 * but this process can no longer tell which one. A failure before it (a checkpoint that found
 * no space for its blocks) is rolled back by the caller, as a failed call is.
 * _core_py/commit.py is the same in Python. */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core.h"
#include "crc32c.h"

int mp__sync_range(mp_core *c, uint64_t lo, uint64_t hi) {
    const uint64_t os = c->os_page;
    lo = lo / os * os;
    hi = (hi + os - 1) / os * os;
    if (hi > c->map_len) hi = c->map_len;
    if (hi <= lo) return 0;
    if (msync(c->map + lo, (size_t)(hi - lo), MS_SYNC) != 0) return mp__fail_os(c, errno, "msync");
    return 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The pages this commit wrote besides its record, and the sealed pages that are still data
 * pages, ascending and each once (into out, with room for all three lists). */
static uint64_t written(const mp_core *c, uint64_t *out) {
    uint64_t n = 0;
    for (uint64_t i = 0; i < c->staged.n; i++) out[n++] = c->staged.v[i];
    for (uint64_t i = 0; i < c->blocks.n; i++) out[n++] = c->blocks.v[i];
    for (uint64_t i = 0; i < c->sealed.n; i++) {
        uint64_t p = c->sealed.v[i];
        if (p < c->counts.n && mp__is_used(c, p) && !mp__bit(c->internal, p)) out[n++] = p;
    }
    mp__qsort(out, n, 8, cmp_u64);
    uint64_t u = 0;
    for (uint64_t i = 0; i < n; i++)
        if (!u || out[i] != out[u - 1]) out[u++] = out[i];
    return u;
}

/* Ascending pages as runs of consecutive pages: how many runs, the first `max` into runs. */
static uint64_t runs_of(const uint64_t *pages, uint64_t n, mp_listed *runs, uint64_t max) {
    uint64_t k = 0, end = 0, count = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (k && pages[i] == end && count < MP_RUN_LIMIT) {
            end++;
            count++;
            if (k <= max) runs[k - 1].count = count;
            continue;
        }
        k++;
        end = pages[i] + 1;
        count = 1;
        if (k <= max) runs[k - 1] = (mp_listed){pages[i], 1, 0};
    }
    return k;
}

/* The pages to list, as runs: how many runs (the first MP_LISTED_MAX into runs), and how many
 * pages in *pages. */
static int64_t listing(mp_core *c, mp_listed *runs, uint64_t *pages) {
    uint64_t *w = malloc((size_t)(c->staged.n + c->blocks.n + c->sealed.n + 1) * 8);
    if (!w) return mp__fail(c, MP_E_NO_MEMORY, "out of memory");
    *pages = written(c, w);
    uint64_t k = runs_of(w, *pages, runs, MP_LISTED_MAX);
    free(w);
    return (int64_t)k;
}

/* Sealed pages given out as writable views since their flush are flushed, not listed. */
static void unseal_viewed(mp_core *c) {
    uint64_t kept = 0, ps = c->geo.page_size;
    for (uint64_t i = 0; i < c->sealed.n; i++) {
        uint64_t p = c->sealed.v[i];
        if (!mp__bit(c->viewed_bits, p)) {
            c->sealed.v[kept++] = p;
            continue;
        }
        if (!c->flush_hi || p * ps < c->flush_lo) c->flush_lo = p * ps;
        if ((p + 1) * ps > c->flush_hi) c->flush_hi = (p + 1) * ps;
    }
    c->sealed.n = kept;
}

static int write_step(mp_core *c) {
    int r = mp__check_length(c); /* nothing is committed past the end of a truncated file */
    if (r) return r;
    r = mp__log_start(c); /* even a commit that changed nothing the log tells has a GEN */
    if (r) return r;
    c->checkpointed = c->force_checkpoint || c->log_len > c->geo.block - MP_LOG_OFFSET;
    if (c->checkpointed) {
        r = mp__checkpoint(c);
        if (r) return r;
    }
    if (c->cut) mp__cut(c); /* a shrink: after the checkpoint has placed its blocks */
    unseal_viewed(c);
    uint64_t pages = 0;
    int64_t k = listing(c, c->listing, &pages);
    if (k < 0) return (int)k;
    c->nlisting = (unsigned)(k < MP_LISTED_MAX ? k : MP_LISTED_MAX);
    /* data pages flushed by a plain flush are never listed: the user may write them in place
     * after the commit, and a listed page that changed would make the record look cut short;
     * sealed ones are listed, and retired before anything writes them (mp_retire) */
    int flushed = c->flush_hi || c->flush_everything;
    c->single = !c->grew && !flushed && mp_one_barrier_allowed(c->geo.page_size) && (uint64_t)k <= MP_LISTED_MAX &&
                pages <= MP_LISTED_PAGES;
    return c->single ? 2 : 1;
}

/* One msync over the span of the pages this commit wrote (and its record page): one barrier
 * however many pages. */
static int sync_span(mp_core *c, int with_record) {
    if (!c->sync) return 0;
    uint64_t lo = UINT64_MAX, hi = 0;
    const uint64_t *lists[3] = {c->staged.v, c->blocks.v, c->sealed.v};
    uint64_t counts[3] = {c->staged.n, c->blocks.n, c->sealed.n};
    for (int k = 0; k < 3; k++)
        for (uint64_t i = 0; i < counts[k]; i++) {
            if (lists[k][i] < lo) lo = lists[k][i];
            if (lists[k][i] + 1 > hi) hi = lists[k][i] + 1;
        }
    const uint64_t ps = c->geo.page_size;
    lo = lo == UINT64_MAX ? UINT64_MAX : lo * ps;
    hi *= ps;
    if (!with_record && c->flush_hi) { /* sync1: the data pages the batch flushed */
        if (c->flush_lo < lo) lo = c->flush_lo;
        if (c->flush_hi > hi) hi = c->flush_hi;
    }
    if (with_record) {
        uint64_t rec = c->record_pages[1 - c->rec] * ps;
        if (rec < lo) lo = rec;
        if (rec + c->geo.block > hi) hi = rec + c->geo.block;
    }
    if (hi == 0) return 0;
    return mp__sync_range(c, lo, hi);
}

int mp__sync_flushed(mp_core *c) {
    if (c->flush_everything && fdatasync(c->fd) != 0) return mp__fail_os(c, errno, "fdatasync");
    if (c->flush_everything) return 0;
    uint64_t lo = c->flush_hi ? c->flush_lo : UINT64_MAX, hi = c->flush_hi, ps = c->geo.page_size;
    for (uint64_t i = 0; i < c->sealed.n; i++) {
        if (c->sealed.v[i] * ps < lo) lo = c->sealed.v[i] * ps;
        if ((c->sealed.v[i] + 1) * ps > hi) hi = (c->sealed.v[i] + 1) * ps;
    }
    return hi ? mp__sync_range(c, lo, hi) : 0;
}

static int sync1_step(mp_core *c) {
    if (c->single) return 0; /* a batch that flushed is never single */
    if (!c->sync) return mp__sync_flushed(c); /* no barriers for commits, but flushes asked */
    if (c->grew || c->flush_everything) {
        if (fdatasync(c->fd) != 0) return mp__fail_os(c, errno, "fdatasync");
        return 0;
    }
    return sync_span(c, 0);
}

static uint64_t next_record_page(const mp_core *c) { return c->record_pages[1 - c->rec]; }

static int flip_step(mp_core *c) {
    const mp_geometry *g = &c->geo;
    unsigned char *x = c->map + next_record_page(c) * g->page_size;
    mp_record rec;
    memset(&rec, 0, sizeof rec);
    rec.generation = c->gen + 1;
    rec.page_count = c->counts.n;
    rec.free_count = c->counts.free;
    rec.data_count = c->counts.data;
    rec.slot_count = c->counts.slot_count;
    rec.slots_used = c->counts.slots_used;
    rec.checkpoint = c->checkpointed ? c->gen + 1 : c->checkpoint;
    const mp_tree *b = &c->trees[MP_TREE_BITMAP], *d = &c->trees[MP_TREE_DIR];
    mp_ptr broot = b->level[b->height][0], droot = {0, 0};
    if (d->count[d->height]) droot = d->level[d->height][0];
    rec.bitmap_root = broot.page;
    rec.bitmap_crc = broot.crc;
    rec.bitmap_height = b->height;
    rec.dir_root = droot.page;
    rec.dir_crc = droot.crc;
    rec.dir_height = droot.page ? d->height : 0;
    rec.log_len = (uint32_t)c->log_len;
    rec.log_crc = c->log_len ? mp_crc32c(c->log_crc_committed, c->log + c->log_committed, c->log_len - c->log_committed) : 0;
    c->next_log_crc = rec.log_crc;
    rec.flags = c->single ? MP_FLAG_ONE_BARRIER : 0;
    memset(x, 0, g->block);
    if (c->single) { /* the runs the write step found: nothing was written since */
        for (unsigned i = 0; i < c->nlisting; i++) {
            mp_listed *e = &c->listing[i];
            e->crc = mp_crc32c(0, c->map + e->page * g->page_size, e->count * g->page_size);
            mp_listed_put(x + MP_LISTED_OFFSET + 16 * i, *e);
        }
        rec.listed = c->nlisting;
    }
    mp_record_encode(x, &rec);
    mp__memcpy(x + MP_LOG_OFFSET, c->log, c->log_len);
    mp_put32(x + MP_REC_CRC, mp_crc32c(0, x + MP_RECORD_CRC_FROM, MP_LISTED_OFFSET + 16 * rec.listed - MP_RECORD_CRC_FROM));
    return 0;
}

static int sync2_step(mp_core *c) {
    if (!c->sync) return 0;
    if (c->single) return sync_span(c, 1);
    uint64_t page = next_record_page(c), ps = c->geo.page_size;
    return mp__sync_range(c, page * ps, page * ps + c->geo.block);
}

static void done_step(mp_core *c) {
    c->gen++;
    c->rec = 1 - c->rec;
    if (c->checkpointed) c->checkpoint = c->gen;
    c->committed = c->counts;
    c->log_committed = c->log_len;
    c->log_crc_committed = c->next_log_crc;
    mp__clear_commit(c);
}

int mp__step(mp_core *c, int step) {
    int r = 0;
    switch (step) {
    case MP_STEP_WRITE: r = write_step(c); break;
    case MP_STEP_SYNC1: r = sync1_step(c); break;
    case MP_STEP_FLIP: r = flip_step(c); break;
    case MP_STEP_SYNC2: r = sync2_step(c); break;
    case MP_STEP_DONE: done_step(c); break;
    default: return mp__fail(c, MP_E_VALUE, "no commit step %d", step);
    }
    /* A write step that failed before its checkpoint wrote anything (no space for a block's
       page, say) left only what a rollback undoes: the caller rolls back instead. */
    if (r < 0 && (step != MP_STEP_WRITE || c->no_undo)) c->poisoned = 1;
    return r;
}

/* A batch that only flushed commits too: its commit is what makes the data durable. */
int mp__pending(const mp_core *c) {
    return c->words_start >= 0 || c->grew || c->forced || c->flush_hi || c->flush_everything || c->sealed.n;
}

/* Whether the record in force lists `page`: then the state in force is only whole while the
 * page holds what that commit wrote. */
int mp__listed_in_force(const mp_core *c, uint64_t page) {
    const unsigned char *x = c->map + c->record_pages[c->rec] * c->geo.page_size;
    unsigned n = x[MP_REC_LISTED];
    if (!(x[MP_REC_FLAGS] & MP_FLAG_ONE_BARRIER) || n > MP_LISTED_MAX) return 0;
    for (unsigned i = 0; i < n; i++) {
        mp_listed e = mp_listed_get(x + MP_LISTED_OFFSET + 16 * i);
        if (page >= e.page && page - e.page < e.count) return 1;
    }
    return 0;
}

/* Retire the record in force before a page it lists is written: the same record, listing
 * nothing, into the other slot, which is then the one in force (the same state and generation;
 * of two records of one generation the one that lists nothing is in force). The slot it
 * overwrites held the state before, which nothing needs once this copy is durable. */
void mp__retire_write(mp_core *c) {
    const uint64_t ps = c->geo.page_size;
    const unsigned char *x = c->map + c->record_pages[c->rec] * ps;
    unsigned char *y = c->map + c->record_pages[1 - c->rec] * ps;
    memmove(y, x, c->geo.block);
    y[MP_REC_FLAGS] = 0;
    y[MP_REC_LISTED] = 0;
    memset(y + MP_LISTED_OFFSET, 0, MP_LOG_OFFSET - MP_LISTED_OFFSET);
    mp_put32(y + MP_REC_CRC, mp_crc32c(0, y + MP_RECORD_CRC_FROM, MP_LISTED_OFFSET - MP_RECORD_CRC_FROM));
    c->rec = 1 - c->rec;
}

/* Always synced, even with sync=False: the record it retires was durable. */
int mp__retire_sync(mp_core *c) {
    uint64_t page = c->record_pages[c->rec], ps = c->geo.page_size;
    return mp__sync_range(c, page * ps, page * ps + c->geo.block);
}

int mp__commit(mp_core *c) {
    if (!mp__pending(c)) return 0;
    if (c->gen + 1 >= MP_GENERATION_LIMIT) { /* only a forged file gets here: 2^60 commits */
        c->poisoned = 1;
        return mp__fail(c, MP_E_VALUE, "the file is at the last generation a commit record can hold");
    }
    int r = mp__step(c, MP_STEP_WRITE);
    if (r < 0) return r;
    for (int step = MP_STEP_SYNC1; step <= MP_STEP_DONE; step++) {
        r = mp__step(c, step);
        if (r < 0) return r;
    }
    return 0;
}

int mp__autocommit(mp_core *c) {
    if (c->in_batch || c->manual) return 0;
    return mp__commit(c);
}
