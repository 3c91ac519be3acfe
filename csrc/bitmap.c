#include "bitmap.h"

#include <stdlib.h>
#include <string.h>

#include "format.h"

static uint64_t words_for(uint64_t bits) { return (bits + 63) / 64; }

int mp_bitmap_resize(mp_bitmap *b, uint64_t nbits) {
    uint64_t want[MP_BITMAP_LEVELS];
    int levels = 0;
    uint64_t bits = nbits;
    do {
        want[levels] = words_for(bits) ? words_for(bits) : 1;
        bits = want[levels];
        levels++;
    } while (want[levels - 1] > 1 && levels < MP_BITMAP_LEVELS);
    if (want[levels - 1] > 1) return -1;

    /* realloc keeps what is there (and moves large blocks without copying), so growth costs
     * the new words only, not the whole file's bitmap */
    uint64_t old[MP_BITMAP_LEVELS] = {0};
    for (int i = 0; i < b->levels; i++) old[i] = b->words[i];
    for (int i = 0; i < levels; i++) {
        if (want[i] > SIZE_MAX / 8) return -1;
        uint64_t *p = realloc(i < b->levels ? b->level[i] : NULL, (size_t)want[i] * 8);
        if (!p) { /* what was reallocated so far is only larger; drop levels not in use */
            for (int j = b->levels; j < i; j++) {
                free(b->level[j]);
                b->level[j] = NULL;
            }
            return -1;
        }
        b->level[i] = p;
    }
    int same_shape = levels == b->levels && want[0] >= old[0];
    for (int i = levels; i < b->levels; i++) {
        free(b->level[i]);
        b->level[i] = NULL;
    }
    if (want[0] > old[0]) memset(b->level[0] + old[0], 0, (size_t)(want[0] - old[0]) * 8);
    for (int i = 0; i < levels; i++) b->words[i] = want[i];
    b->levels = levels;
    b->nbits = want[0] * 64;
    if (!same_shape) { /* a new level, or shrinking (rollback of a growth): rebuild */
        mp_bitmap_summarise(b);
        return 0;
    }
    /* new summary words start as "full" (right for padding), then every position that now
     * stands for a real word below is recomputed */
    for (int i = 1; i < levels; i++)
        if (want[i] > old[i]) memset(b->level[i] + old[i], 0xff, (size_t)(want[i] - old[i]) * 8);
    if (want[0] > old[0]) mp_bitmap_summarise_words(b, old[0] ? old[0] - 1 : 0, want[0] - 1);
    return 0;
}

void mp_bitmap_release(mp_bitmap *b) {
    for (int i = 0; i < b->levels; i++) {
        free(b->level[i]);
        b->level[i] = NULL;
        b->words[i] = 0;
    }
    b->levels = 0;
    b->nbits = 0;
}

/* The summary bit of word w of level lv, in level lv + 1. */
static void summarise_word(mp_bitmap *b, int lv, uint64_t w) {
    uint64_t *above = &b->level[lv + 1][w >> 6];
    uint64_t mask = (uint64_t)1 << (w & 63);
    if (b->level[lv][w] == UINT64_MAX)
        *above |= mask;
    else
        *above &= ~mask;
}

static void pad_level(mp_bitmap *b, int lv) {
    /* positions past the last word of the level below read as full */
    uint64_t below = b->words[lv - 1];
    uint64_t last = b->words[lv] - 1;
    unsigned used = (unsigned)(below - last * 64);
    if (used < 64) b->level[lv][last] |= UINT64_MAX << used;
}

void mp_bitmap_summarise(mp_bitmap *b) {
    for (int lv = 1; lv < b->levels; lv++) {
        memset(b->level[lv], 0, (size_t)b->words[lv] * 8);
        pad_level(b, lv);
        for (uint64_t w = 0; w < b->words[lv - 1]; w++) summarise_word(b, lv - 1, w);
    }
}

void mp_bitmap_summarise_words(mp_bitmap *b, uint64_t first, uint64_t last) {
    for (int lv = 0; lv + 1 < b->levels; lv++) {
        for (uint64_t w = first; w <= last; w++) summarise_word(b, lv, w);
        first >>= 6;
        last >>= 6;
    }
}

uint64_t mp_bitmap_first_clear(const mp_bitmap *b) {
    uint64_t i = 0;
    for (int lv = b->levels - 1; lv >= 0; lv--) {
        uint64_t free_bits = ~b->level[lv][i];
        if (!free_bits) return UINT64_MAX;
        i = i * 64 + (uint64_t)__builtin_ctzll(free_bits);
        if (lv && i >= b->words[lv - 1]) return UINT64_MAX;
    }
    return i;
}

void mp_bitmap_set(mp_bitmap *b, uint64_t i) {
    uint64_t w = i >> 6;
    b->level[0][w] |= (uint64_t)1 << (i & 63);
    /* only a word that just became full changes the summary */
    for (int lv = 0; lv + 1 < b->levels && b->level[lv][w] == UINT64_MAX; lv++) {
        b->level[lv + 1][w >> 6] |= (uint64_t)1 << (w & 63);
        w >>= 6;
    }
}

void mp_bitmap_clear(mp_bitmap *b, uint64_t i) {
    uint64_t w = i >> 6;
    int was_full = b->level[0][w] == UINT64_MAX;
    b->level[0][w] &= ~((uint64_t)1 << (i & 63));
    for (int lv = 0; lv + 1 < b->levels && was_full; lv++) {
        uint64_t *above = &b->level[lv + 1][w >> 6];
        was_full = *above == UINT64_MAX;
        *above &= ~((uint64_t)1 << (w & 63));
        w >>= 6;
    }
}

void mp_bitmap_store(const mp_bitmap *b, uint64_t first, unsigned char *out, uint64_t len) {
    uint64_t w = first >> 6;
    for (uint64_t i = 0; i + 8 <= len; i += 8, w++) mp_put64(out + i, w < b->words[0] ? b->level[0][w] : 0);
}

void mp_bitmap_load(mp_bitmap *b, uint64_t first, const unsigned char *in, uint64_t len) {
    uint64_t w = first >> 6;
    for (uint64_t i = 0; i + 8 <= len && w < b->words[0]; i += 8, w++) b->level[0][w] = mp_get64(in + i);
}

void mp_bitmap_trim(mp_bitmap *b, uint64_t end) {
    uint64_t w = end >> 6;
    if (w >= b->words[0]) return;
    if (end & 63) b->level[0][w++] &= ((uint64_t)1 << (end & 63)) - 1;
    memset(b->level[0] + w, 0, (size_t)(b->words[0] - w) * 8);
}

uint64_t mp_bitmap_popcount(const mp_bitmap *b) {
    uint64_t n = 0;
    for (uint64_t w = 0; w < b->words[0]; w++) n += (uint64_t)__builtin_popcountll(b->level[0][w]);
    return n;
}
