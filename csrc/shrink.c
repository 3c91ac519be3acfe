/* Shrinking: a commit whose page count ends after the last page in use, then the file cut to
 * it (docs/FORMAT.md, "Shrinking"). _core_py/shrink.py is the same in Python.
 *
 * Page numbers never change, so data pages stay where they are; what can move does, to the
 * lowest free pages: protected pages' content (rewritten as a protected write of the same
 * bytes) and tree blocks (the checkpoint writes them anew). The pages they leave are
 * pending until the commit after (the state before must stay whole), so a shrink that moved
 * anything cuts more the second time it runs. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "core.h"

/* The page count a shrink leaves: one past the last page `top` says (pages in use or pending:
 * a page a snapshot may still read is pending), never below the slots made or the smallest
 * file. */
static uint64_t shrunk_count(const mp_core *c, uint64_t top) {
    if (top < c->counts.slot_count) top = c->counts.slot_count;
    return top < MP_MIN_PAGE_COUNT ? MP_MIN_PAGE_COUNT : top;
}

typedef int (*block_fn)(mp_core *c, int tree, unsigned level, uint64_t index, uint64_t page, void *ctx);

/* Calls fn for every tree block; stops at the first non-zero answer and returns it. */
static int each_block(mp_core *c, block_fn fn, void *ctx) {
    for (int tr = 0; tr < 2; tr++) {
        mp_tree *t = &c->trees[tr];
        for (unsigned level = 0; level <= t->height && level <= MP_MAX_HEIGHT; level++)
            for (uint64_t i = 0; i < t->count[level]; i++)
                if (t->level[level][i].page) {
                    int r = fn(c, tr, level, i, t->level[level][i].page, ctx);
                    if (r) return r;
                }
    }
    return 0;
}

static void clear_bit(uint64_t *bits, uint64_t page) { bits[page >> 6] &= ~(1ull << (page & 63)); }

static int clear_block(mp_core *c, int tree, unsigned level, uint64_t index, uint64_t page, void *ctx) {
    (void)c, (void)tree, (void)level, (void)index;
    clear_bit(ctx, page);
    return 0;
}

static int block_at_or_above(mp_core *c, int tree, unsigned level, uint64_t index, uint64_t page, void *ctx) {
    (void)c, (void)tree, (void)level, (void)index;
    return page >= *(const uint64_t *)ctx;
}

/* A block from *ctx on moves: its leaf (for a node, one leaf below it) becomes dirty, so that
 * the checkpoint writes it, and every node above it, to the lowest free pages. */
static int move_block(mp_core *c, int tree, unsigned level, uint64_t index, uint64_t page, void *ctx) {
    if (page < *(const uint64_t *)ctx) return 0;
    const mp_tree *t = &c->trees[tree];
    uint64_t lo = index, hi = index + 1;
    for (unsigned l = 0; l < level && lo < t->count[0]; l++) lo *= c->geo.fanout, hi *= c->geo.fanout;
    if (hi > t->count[0]) hi = t->count[0];
    for (uint64_t k = lo; k < hi; k++) /* a node has a non-null leaf below it */
        if (t->level[0][k].page) return mp__dirty(c, tree, k);
    return 0;
}

/* Where the pages that cannot move end: data pages, pending pages and the reserved ones. */
static int fixed_end(mp_core *c, uint64_t *end) {
    uint64_t words = c->taken.words[0];
    uint64_t *fixed = malloc((size_t)(words ? words : 1) * 8);
    if (!fixed) return mp__fail(c, MP_E_NO_MEMORY, "out of memory");
    mp__memcpy(fixed, c->taken.level[0], words * 8);
    each_block(c, clear_block, fixed);
    for (uint64_t s = 0; s < c->counts.slot_count; s++)
        if (mp_bitmap_get(&c->slots, s)) clear_bit(fixed, c->slot_page[s]);
    *end = shrunk_count(c, mp__top_bit(fixed, words));
    free(fixed);
    return 0;
}

/* The cut: the state ends after its last page in use or pending. A shrink's commit cuts before
 * its checkpoint and again after it, once the checkpoint has placed its blocks. */
void mp__cut(mp_core *c) {
    uint64_t n = shrunk_count(c, mp__top_taken(c));
    if (n >= c->counts.n) return;
    /* the pages cut lose their blocks: grown again, they are holes to be given space anew */
    for (uint64_t p = n; p < c->counts.n; p++) clear_bit(c->written, p);
    c->counts.free -= c->counts.n - n;
    c->counts.n = n;
    if (c->space_from > n) c->space_from = n;
}

/* Whether a shrink's commit would give anything back: a free tail now, or a page that can
 * move (from `from` on) above the lowest free one. Otherwise it would only churn. */
static int gains(mp_core *c, uint64_t from) {
    if (mp__top_taken(c) < c->counts.n) return 1;
    uint64_t lowest = mp__find_free(c);
    if (lowest == UINT64_MAX) return 0;
    uint64_t above = from > lowest + 1 ? from : lowest + 1;
    for (uint64_t s = 0; s < c->counts.slot_count; s++)
        if (mp_bitmap_get(&c->slots, s) && c->slot_page[s] >= above) return 1;
    return each_block(c, block_at_or_above, &above);
}

/* Prepare a shrink's commit: a checkpoint, since the log may name pages the cut removes and a
 * checkpoint's record carries no log. Protected pages' content beyond where the fixed pages
 * end moves down; the leaves of the free tail become dirty, so that the checkpoint writes them
 * without those pages (empty ones become null); and the leaves below tree blocks beyond that
 * end become dirty, so that the checkpoint moves those blocks down. */
static int mark_tail(mp_core *c) {
    uint64_t from = 0;
    int r = fixed_end(c, &from);
    if (r || from >= c->counts.n || !gains(c, from)) return r;
    for (uint64_t s = 0; !r && s < c->counts.slot_count; s++)
        if (mp_bitmap_get(&c->slots, s) && c->slot_page[s] >= from && mp__find_free(c) < c->slot_page[s])
            r = mp__move_slot(c, s);
    for (uint64_t k = from / c->geo.leaf_pages; !r && k <= (c->counts.n - 1) / c->geo.leaf_pages; k++)
        r = mp__dirty(c, MP_TREE_BITMAP, k);
    if (!r) r = each_block(c, move_block, &from);
    if (r) return r;
    c->force_checkpoint = c->forced = c->cut = 1;
    mp__cut(c); /* first to the pages in use now: the checkpoint shapes its trees for that count */
    return 0;
}

/* The file cut to the committed page count: only once the record saying so is durable (a
 * crash before leaves a longer file, which is allowed). Returns the pages cut. */
static int64_t trim(mp_core *c) {
    uint64_t size, keep = c->committed.n * c->geo.page_size;
    if (mp__file_size(c->fd, &size) != 0) return mp__fail_os(c, errno, "lseek");
    if (size <= keep) return 0;
    if (ftruncate(c->fd, (off_t)keep) != 0) return mp__fail_os(c, errno, "ftruncate");
    if (c->sync && fdatasync(c->fd) != 0) return mp__fail_os(c, errno, "fdatasync");
    return (int64_t)((size - keep) / c->geo.page_size);
}

int64_t mp_shrink(mp_core *c) {
    mp__enter(c);
    uint64_t before = 0;
    int r = mp__start(c);
    if (!r && c->in_batch) r = mp__fail(c, MP_E_VALUE, "shrink() commits by itself: it cannot run inside a batch");
    if (!r && mp__file_size(c->fd, &before) != 0) r = mp__fail_os(c, errno, "lseek");
    if (!r) r = mark_tail(c);
    if (!r) r = mp__autocommit(c);
    if (r < 0) {
        if (c->open && !c->closed && !c->in_batch && !c->poisoned) mp__rollback(c);
        return mp__leave(c, r);
    }
    if (c->manual) return mp__leave(c, 0); /* the caller commits step by step, then trims */
    int64_t cut = trim(c);
    if (cut < 0) return mp__leave(c, (int)cut);
    uint64_t keep = c->committed.n * c->geo.page_size;
    mp__leave(c, 0);
    /* counted from the length before the call (moving pages down may have reserved more) */
    return before > keep ? (int64_t)((before - keep) / c->geo.page_size) : 0;
}

int64_t mp_trim(mp_core *c) {
    mp__enter(c);
    int r = mp__start_read(c);
    if (!r && !c->writable) r = mp__fail(c, MP_E_READ_ONLY, "the file is open read-only");
    if (!r && (c->in_batch || c->words_start >= 0 || c->grew || c->forced))
        r = mp__fail(c, MP_E_VALUE, "changes are not committed yet: trim after the commit");
    if (r) return mp__leave(c, r);
    int64_t cut = trim(c);
    mp__leave(c, 0);
    return cut;
}
