/* The record's log: appending this commit's words (with runs), reading a log back, and the
 * dirty leaves the words imply. docs/FORMAT.md ("The log") gives the words; _core_py/log.py
 * is the same in Python. */
#include <stdlib.h>

#include "core.h"

int mp__reserve(mp_u64s *a, uint64_t more) {
    if (a->n + more <= a->cap) return 0;
    uint64_t cap = a->cap ? a->cap : 16;
    while (cap < a->n + more) cap *= 2;
    uint64_t *v = realloc(a->v, (size_t)cap * sizeof *v);
    if (!v) return MP_E_NO_MEMORY;
    a->v = v;
    a->cap = cap;
    return 0;
}

int mp__push(mp_u64s *a, uint64_t x) {
    int r = mp__reserve(a, 1);
    if (!r) a->v[a->n++] = x;
    return r;
}

static int log_append(mp_core *c, uint64_t w) {
    if (c->log_len + 8 > c->log_cap) {
        uint64_t cap = c->log_cap ? c->log_cap * 2 : 4096;
        unsigned char *l = realloc(c->log, (size_t)cap);
        if (!l) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for the log");
        c->log = l;
        c->log_cap = cap;
    }
    mp_put64(c->log + c->log_len, w);
    c->log_len += 8;
    return 0;
}

int mp__log_start(mp_core *c) {
    if (c->words_start >= 0) return 0;
    c->words_start = (int64_t)c->log_len;
    return log_append(c, (uint64_t)MP_GEN << MP_KIND_SHIFT | (c->gen + 1));
}

int mp__tree_room(mp_core *c, mp_tree *t, unsigned level, uint64_t count) {
    if (count <= t->count[level]) return 0;
    uint64_t cap = t->count[level] ? t->count[level] : 16;
    while (cap < count) cap *= 2;
    mp_ptr *v = realloc(t->level[level], (size_t)cap * sizeof *v);
    if (!v) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for a tree");
    memset(v + t->count[level], 0, (size_t)(cap - t->count[level]) * sizeof *v);
    t->level[level] = v;
    t->count[level] = cap;
    if (level == 0 && cap > t->dirty_words * 64) {
        uint64_t words = (cap + 63) / 64;
        uint64_t *d = realloc(t->dirty_bits, (size_t)words * 8);
        if (!d) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for a tree");
        memset(d + t->dirty_words, 0, (size_t)(words - t->dirty_words) * 8);
        t->dirty_bits = d;
        t->dirty_words = words;
    }
    return 0;
}

void mp__tree_release(mp_tree *t) {
    for (unsigned i = 0; i <= MP_MAX_HEIGHT; i++) {
        free(t->level[i]);
        t->level[i] = NULL;
        t->count[i] = 0;
    }
    free(t->dirty_bits);
    t->dirty_bits = NULL;
    t->dirty_words = 0;
    free(t->dirty.v);
    memset(&t->dirty, 0, sizeof t->dirty);
    t->height = 0;
}

int mp__dirty(mp_core *c, int tree, uint64_t leaf) {
    mp_tree *t = &c->trees[tree];
    int r = mp__tree_room(c, t, 0, leaf + 1);
    if (r) return r;
    if (mp__bit(t->dirty_bits, leaf)) return 0;
    if (mp__push(&t->dirty, leaf) || mp__reserve(&c->undo_dirty, 2))
        return mp__fail(c, MP_E_NO_MEMORY, "out of memory");
    mp__set(t->dirty_bits, leaf);
    c->undo_dirty.v[c->undo_dirty.n++] = (uint64_t)tree;
    c->undo_dirty.v[c->undo_dirty.n++] = leaf;
    return 0;
}

int mp__log_run(mp_core *c, unsigned kind, uint64_t page) {
    int r = mp__log_start(c);
    if (r) return r;
    uint64_t last = c->log_len - 8;
    if ((int64_t)last > c->words_start) {
        uint64_t w = mp_get64(c->log + last);
        uint64_t first = mp_word_page(w), count = mp_word_count(w);
        if (mp_word_kind(w) == kind && first + count == page && count < MP_RUN_MAX) {
            mp_put64(c->log + last, mp_run_word(kind, first, count + 1));
            return mp__dirty(c, MP_TREE_BITMAP, page / c->geo.leaf_pages);
        }
    }
    r = log_append(c, mp_run_word(kind, page, 1));
    return r ? r : mp__dirty(c, MP_TREE_BITMAP, page / c->geo.leaf_pages);
}

int mp__log_slot(mp_core *c, uint64_t slot, uint64_t page, uint32_t crc) {
    int r = mp__log_start(c);
    if (!r) r = log_append(c, (uint64_t)MP_SLOT << MP_KIND_SHIFT | slot);
    if (!r) r = log_append(c, page);
    if (!r) r = log_append(c, crc);
    return r ? r : mp__dirty(c, MP_TREE_DIR, slot / c->geo.fanout);
}

int64_t mp__log_next(const unsigned char *log, uint64_t len, uint64_t pos, unsigned *kind, uint64_t v[3]) {
    if (pos + 8 > len) return 0;
    uint64_t w = mp_get64(log + pos);
    *kind = mp_word_kind(w);
    switch (*kind) {
    case MP_GEN:
        v[0] = w & ((1ull << MP_KIND_SHIFT) - 1);
        return (int64_t)(pos + 8);
    case MP_DATA:
    case MP_INTERNAL:
    case MP_FREE_DATA:
    case MP_FREE_INTERNAL:
        v[0] = mp_word_page(w);
        v[1] = mp_word_count(w);
        return (int64_t)(pos + 8);
    case MP_SLOT:
        if (pos + 24 > len) return -1;
        v[0] = mp_word_page(w);
        v[1] = mp_get64(log + pos + 8);
        v[2] = mp_get64(log + pos + 16);
        if ((w >> MP_RUN_SHIFT & 0xFFF) || v[1] >= MP_PAGE_LIMIT || v[2] >> 32) return -1;
        return (int64_t)(pos + 24);
    default:
        return -1;
    }
}

int mp__log_generations(const unsigned char *log, uint64_t len, uint64_t checkpoint, uint64_t gen) {
    uint64_t last = checkpoint, v[3];
    unsigned kind;
    int first = 1;
    int64_t pos = 0;
    while ((pos = mp__log_next(log, len, (uint64_t)pos, &kind, v)) > 0) {
        if (first && kind != MP_GEN) return 0;
        first = 0;
        if (kind == MP_GEN) {
            if (!(last < v[0] && v[0] <= gen)) return 0;
            last = v[0];
        }
    }
    if (pos < 0) return 0;
    return len == 0 || last == gen;
}
