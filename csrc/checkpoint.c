/* A checkpoint: every leaf changed since the last one, and every node above such a leaf,
 * written to new pages as the next generation (docs/FORMAT.md, "A checkpoint", whose steps
 * both cores follow to the page; _core_py/checkpoint.py is the same in Python).
 *
 * A block's place is packed into one word, tree << 63 | level << 56 | index, so that sorting
 * places gives the order in which pages go to blocks. */
#include <stdlib.h>

#include "core.h"
#include "crc32c.h"

#define POS(t, l, i) ((uint64_t)(t) << 63 | (uint64_t)(l) << MP_LEVEL_SHIFT | (i))
#define POS_TREE(p) ((int)((p) >> 63))
#define POS_LEVEL(p) ((unsigned)((p) >> MP_LEVEL_SHIFT & 0x7F))
#define POS_INDEX(p) ((p) & ((1ull << MP_LEVEL_SHIFT) - 1))

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int empty_leaf(const mp_core *c, int tree, uint64_t k) {
    if (tree == MP_TREE_BITMAP) {
        uint64_t w0 = k * c->geo.leaf_pages / 64, w1 = (k + 1) * c->geo.leaf_pages / 64;
        for (uint64_t w = w0; w < w1 && w < c->taken.words[0]; w++)
            if (c->taken.level[0][w]) return 0;
        return 1;
    }
    uint64_t f = c->geo.fanout;
    for (uint64_t s = k * f; s < (k + 1) * f && s < c->counts.slot_count; s++)
        if (mp_bitmap_get(&c->slots, s)) return 0;
    return 1;
}

/* The least height that holds the state's leaves, and never less than the tree has: a tree
 * does not get shorter when a shrink lowers the page count (docs/FORMAT.md, "A checkpoint"). */
static unsigned height(const mp_core *c, int tree) {
    uint64_t leaves = tree == MP_TREE_BITMAP ? mp_div_up(c->counts.n, c->geo.leaf_pages)
                                             : mp_div_up(c->counts.slot_count, c->geo.fanout);
    unsigned h = mp_height_for(&c->geo, leaves);
    return h > c->trees[tree].height ? h : c->trees[tree].height;
}

static mp_ptr old_ptr(const mp_tree *t, unsigned level, uint64_t index) {
    mp_ptr none = {0, 0};
    return index < t->count[level] ? t->level[level][index] : none;
}

/* Touched places per level of one tree, sorted, with whether each is present afterwards. */
typedef struct {
    mp_u64s idx[MP_MAX_HEIGHT + 1];
    mp_u64s present[MP_MAX_HEIGHT + 1];
} touched;

static void touched_free(touched *tc) {
    for (unsigned l = 0; l <= MP_MAX_HEIGHT; l++) {
        free(tc->idx[l].v);
        free(tc->present[l].v);
    }
}

/* Whether (level, index) is non-null after the checkpoint, given what the level decided. */
static int present_at(const touched *tc, const mp_tree *t, unsigned level, uint64_t index) {
    const mp_u64s *a = &tc->idx[level];
    uint64_t lo = 0, hi = a->n;
    while (lo < hi) {
        uint64_t mid = (lo + hi) / 2;
        if (a->v[mid] < index)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < a->n && a->v[lo] == index) return (int)tc->present[level].v[lo];
    return old_ptr(t, level, index).page != 0;
}

/* The blocks to write and those that become null, as places (appended, unsorted). */
static int plan(mp_core *c, mp_u64s *need, mp_u64s *nulled) {
    const uint64_t f = c->geo.fanout;
    need->n = nulled->n = 0;
    int r = 0;
    for (int tr = 0; tr < 2 && !r; tr++) {
        mp_tree *t = &c->trees[tr];
        unsigned h = height(c, tr);
        touched tc;
        memset(&tc, 0, sizeof tc);
        /* leaves: the dirty ones */
        for (uint64_t i = 0; i < t->dirty.n && !r; i++) r = mp__push(&tc.idx[0], t->dirty.v[i]);
        if (!r) mp__qsort(tc.idx[0].v, tc.idx[0].n, 8, cmp_u64);
        for (uint64_t i = 0; i < tc.idx[0].n && !r; i++) {
            uint64_t k = tc.idx[0].v[i];
            int keep = !empty_leaf(c, tr, k);
            r = mp__push(&tc.present[0], (uint64_t)keep);
            if (!r && keep) r = mp__push(need, POS(tr, 0, k));
            if (!r && !keep && old_ptr(t, 0, k).page) r = mp__push(nulled, POS(tr, 0, k));
        }
        int grew_taller = (t->height == 0 ? old_ptr(t, 0, 0) : old_ptr(t, t->height, 0)).page != 0;
        uint64_t span = 1; /* F^level */
        for (unsigned level = 1; level <= h && !r; level++) {
            span *= f;
            mp_u64s *idx = &tc.idx[level];
            for (uint64_t i = 0; i < tc.idx[0].n && !r; i++) r = mp__push(idx, tc.idx[0].v[i] / span);
            if (!r && grew_taller && level > t->height) r = mp__push(idx, 0);
            if (r) break;
            mp__qsort(idx->v, idx->n, 8, cmp_u64);
            uint64_t u = 0; /* unique */
            for (uint64_t i = 0; i < idx->n; i++)
                if (!u || idx->v[i] != idx->v[u - 1]) idx->v[u++] = idx->v[i];
            idx->n = u;
            for (uint64_t i = 0; i < idx->n && !r; i++) {
                uint64_t j = idx->v[i];
                int any = 0;
                for (uint64_t k = 0; k < f && !any; k++) any = present_at(&tc, t, level - 1, j * f + k);
                r = mp__push(&tc.present[level], (uint64_t)any);
                if (!r && any) r = mp__push(need, POS(tr, level, j));
                if (!r && !any && old_ptr(t, level, j).page) r = mp__push(nulled, POS(tr, level, j));
            }
        }
        touched_free(&tc);
    }
    if (r) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for a checkpoint");
    mp__qsort(need->v, need->n, 8, cmp_u64);
    mp__qsort(nulled->v, nulled->n, 8, cmp_u64);
    return 0;
}

static mp_ptr child(const mp_tree *t, unsigned level, uint64_t index) { return old_ptr(t, level, index); }

/* Encode and write one block; returns its pointer. */
static mp_ptr write_block(mp_core *c, uint64_t pos, uint64_t page) {
    const mp_geometry *g = &c->geo;
    int tr = POS_TREE(pos);
    unsigned level = POS_LEVEL(pos);
    uint64_t index = POS_INDEX(pos);
    unsigned char *b = c->map + page * g->page_size;
    memset(b, 0, g->block);
    unsigned char *body = b + MP_BLOCK_HEADER_SIZE;
    const char *magic;
    if (level) {
        magic = tr == MP_TREE_BITMAP ? MP_BITMAP_NODE : MP_DIR_NODE;
        for (uint64_t i = 0; i < g->fanout; i++) mp_ptr_put(body + 16 * i, child(&c->trees[tr], level - 1, index * g->fanout + i));
    } else if (tr == MP_TREE_BITMAP) {
        magic = MP_BITMAP_LEAF;
        uint64_t w0 = index * g->leaf_pages / 64, words = g->leaf_bytes / 8;
        for (uint64_t w = 0; w < words; w++) {
            uint64_t taken = c->taken.level[0][w0 + w], pend = c->pending[w0 + w];
            uint64_t used = taken & ~pend;
            mp_put64(body + 8 * w, used);
            mp_put64(body + g->leaf_bytes + 8 * w, used & ~c->internal[w0 + w]);
            mp_put64(body + 2 * g->leaf_bytes + 8 * w, pend);
        }
    } else {
        magic = MP_DIR_LEAF;
        for (uint64_t i = 0; i < g->fanout; i++) {
            uint64_t s = index * g->fanout + i;
            if (s < c->counts.slot_count && mp_bitmap_get(&c->slots, s)) {
                mp_ptr e = {c->slot_page[s], c->slot_crc[s]};
                mp_ptr_put(body + 16 * i, e);
            }
        }
    }
    memcpy(b + MP_BLK_MAGIC, magic, 4);
    mp_put64(b + MP_BLK_GENERATION, c->gen + 1);
    mp_put64(b + MP_BLK_LOCATION, page);
    mp_put64(b + MP_BLK_KEY, level ? mp_node_key(level, index) : index);
    mp_ptr p = {page, mp_crc32c(0, b + 8, g->block - 8)};
    mp_put32(b + MP_BLK_CRC, p.crc);
    return p;
}

int mp__checkpoint(mp_core *c) {
    mp_u64s need = {0}, nulled = {0}, pages = {0};
    int r = 0;
    for (;;) {
        r = plan(c, &need, &nulled);
        if (r) break;
        int changed = 0;
        for (int pass = 0; pass < 2 && !r; pass++) {
            const mp_u64s *set = pass ? &nulled : &need;
            for (uint64_t i = 0; i < set->n && !r; i++) {
                uint64_t pos = set->v[i];
                mp_ptr old = old_ptr(&c->trees[POS_TREE(pos)], POS_LEVEL(pos), POS_INDEX(pos));
                if (old.page && !mp__bit(c->pending, old.page)) {
                    r = mp__release(c, old.page); /* pending from this generation: snapshots read it */
                    changed = 1;
                }
            }
        }
        while (!r && pages.n < need.n) {
            uint64_t page;
            r = mp__take_lowest(c, 1, &page);
            if (!r) r = mp__push(&pages, page) ? mp__fail(c, MP_E_NO_MEMORY, "out of memory") : 0;
            changed = 1;
        }
        if (r || !changed) break;
    }
    if (!r) {
        c->no_undo = 1; /* from here on the trees change in ways the log does not tell */
        mp__qsort(pages.v, pages.n, 8, cmp_u64);
        r = mp__reserve(&c->blocks, need.n) ? mp__fail(c, MP_E_NO_MEMORY, "out of memory") : 0;
    }
    for (int tr = 0; tr < 2 && !r; tr++) {
        mp_tree *t = &c->trees[tr];
        unsigned h = height(c, tr);
        for (unsigned level = 0; level <= h && !r; level++) {
            for (uint64_t i = 0; i < nulled.n; i++) {
                uint64_t pos = nulled.v[i];
                if (POS_TREE(pos) == tr && POS_LEVEL(pos) == level) t->level[level][POS_INDEX(pos)].page = 0, t->level[level][POS_INDEX(pos)].crc = 0;
            }
            for (uint64_t i = 0; i < need.n && !r; i++) {
                uint64_t pos = need.v[i];
                if (POS_TREE(pos) != tr || POS_LEVEL(pos) != level) continue;
                r = mp__tree_room(c, t, level, POS_INDEX(pos) + 1);
                if (r) break;
                t->level[level][POS_INDEX(pos)] = write_block(c, pos, pages.v[i]);
                c->blocks.v[c->blocks.n++] = pages.v[i];
            }
        }
        if (r) break;
        t->height = h;
        if ((h == 0 ? old_ptr(t, 0, 0) : old_ptr(t, h, 0)).page == 0) t->height = 0; /* no tree at all */
        for (uint64_t i = 0; i < t->dirty.n; i++) mp__clr(t->dirty_bits, t->dirty.v[i]);
        t->dirty.n = 0;
    }
    free(need.v);
    free(nulled.v);
    free(pages.v);
    if (r) return r;
    c->undo_dirty.n = 0;
    c->log_len = 0;
    c->words_start = -1;
    return 0;
}
