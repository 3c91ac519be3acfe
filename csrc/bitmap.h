/* The in-memory allocation bitmap with a summary, so that finding the lowest free page costs
 * O(log64 N) instead of a scan from page 0.
 *
 * Level 0 holds one bit per page (1 = in use), in the byte order of the file. Level i + 1
 * holds one bit per word of level i: set when that word is full. Words past the end of a
 * summary level read as full, so a search never walks off the end. */
#ifndef MAPPEDPAGES_BITMAP_H
#define MAPPEDPAGES_BITMAP_H

#include <stdint.h>

#define MP_BITMAP_LEVELS 8 /* 64^8 bits: far beyond any page count a file can have */

typedef struct {
    uint64_t *level[MP_BITMAP_LEVELS];
    uint64_t words[MP_BITMAP_LEVELS]; /* words in use per level */
    int levels;
    uint64_t nbits; /* bits addressable in level 0 (a multiple of 64) */
} mp_bitmap;

/* Size the bitmap for nbits bits (rounded up to whole words), keeping existing bits and
 * clearing new ones. Returns 0, or -1 when memory runs out (the bitmap is unchanged). */
int mp_bitmap_resize(mp_bitmap *b, uint64_t nbits);
void mp_bitmap_release(mp_bitmap *b);

/* Rebuild every summary level from level 0 (after bulk changes to level 0). */
void mp_bitmap_summarise(mp_bitmap *b);
/* Recompute the summary above level-0 words [first, last]. */
void mp_bitmap_summarise_words(mp_bitmap *b, uint64_t first, uint64_t last);

/* Lowest clear bit, or UINT64_MAX if every bit is set. */
uint64_t mp_bitmap_first_clear(const mp_bitmap *b);

static inline int mp_bitmap_get(const mp_bitmap *b, uint64_t i) {
    return (int)(b->level[0][i >> 6] >> (i & 63) & 1);
}
void mp_bitmap_set(mp_bitmap *b, uint64_t i);
void mp_bitmap_clear(mp_bitmap *b, uint64_t i);

/* Copy bits [first, first + 8 * len) to/from little-endian bytes (first a multiple of 64). */
void mp_bitmap_store(const mp_bitmap *b, uint64_t first, unsigned char *out, uint64_t len);
void mp_bitmap_load(mp_bitmap *b, uint64_t first, const unsigned char *in, uint64_t len);

/* Set bits in [0, nbits) whose index is >= end are cleared (a file may hold stray ones). */
void mp_bitmap_trim(mp_bitmap *b, uint64_t end);
uint64_t mp_bitmap_popcount(const mp_bitmap *b);

#endif
