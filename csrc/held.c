/* Pages held until the commit: a page the committed state uses and the current state freed
 * keeps its bit set in the allocation bitmap until the next commit, so no allocation hands it
 * out before then. Until that commit the page still belongs to the committed state: a crash,
 * or a rolled-back batch, must find it unchanged. (A page allocated and freed again since the
 * last commit is not held: the committed state never had it.)
 *
 * The held pages are kept twice: as a list, to release them at the commit in O(held), and as
 * a bit set, to answer "is this page held?" in O(1) (a second free of it, is_allocated, scans).
 * Every held page is below the committed page count, which is at most the current one. */
#include <stdlib.h>
#include <string.h>

#include "core.h"

int mp__held(const mp_core *c, uint64_t page) {
    return (page >> 6) < c->held_words && (c->held_bits[page >> 6] >> (page & 63) & 1);
}

uint64_t mp__held_word(const mp_core *c, uint64_t w) { return w < c->held_words ? c->held_bits[w] : 0; }

int mp__hold_room(mp_core *c, uint64_t more) {
    if (c->nheld + more > c->held_cap) {
        uint64_t cap = c->held_cap ? c->held_cap : 64;
        while (cap < c->nheld + more) cap *= 2;
        uint64_t *list = realloc(c->held, (size_t)cap * sizeof *list);
        if (!list) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for %llu held pages", (unsigned long long)cap);
        c->held = list;
        c->held_cap = cap;
    }
    uint64_t words = (c->n + 63) / 64;
    if (words > c->held_words) {
        uint64_t *bits = realloc(c->held_bits, (size_t)words * sizeof *bits);
        if (!bits) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for the held pages' bits");
        memset(bits + c->held_words, 0, (size_t)(words - c->held_words) * sizeof *bits);
        c->held_bits = bits;
        c->held_words = words;
    }
    return 0;
}

int mp__committed_uses(const mp_core *c, uint64_t page) {
    const mp_geometry *g = &c->geo;
    const unsigned char *meta = c->map + (1 + (uint64_t)c->active) * g->page_size;
    if (page >= mp_get64(meta + MP_META_FIELDS_OFFSET)) return 0; /* beyond the committed file */
    uint64_t k = mp_group_of(g, page);
    unsigned flags = c->gflags[k];
    if (flags & G_NEW) return 0;
    if (!(flags & G_DIRTY)) return mp_bitmap_get(&c->bits, page); /* as committed */
    uint64_t first = mp_group_start(g, k), bit = page - first;
    const unsigned char *src = k ? c->map + (first + (flags & G_CUR)) * g->page_size + MP_GROUP_BITMAP_OFFSET
                                 : meta + MP_META_BITMAP_OFFSET;
    return src[bit >> 3] >> (bit & 7) & 1;
}

void mp__hold(mp_core *c, uint64_t page) {
    c->held[c->nheld++] = page;
    c->held_bits[page >> 6] |= (uint64_t)1 << (page & 63);
}

void mp__unhold_last(mp_core *c) {
    uint64_t page = c->held[--c->nheld];
    c->held_bits[page >> 6] &= ~((uint64_t)1 << (page & 63));
}

void mp__release_held(mp_core *c, int to_bitmap) {
    for (uint64_t i = 0; i < c->nheld; i++) {
        uint64_t page = c->held[i];
        c->held_bits[page >> 6] &= ~((uint64_t)1 << (page & 63));
        if (to_bitmap) mp_bitmap_clear(&c->bits, page);
    }
    c->nheld = 0;
}
