/* CRC32C, two implementations with identical results (tests compare them on random input).
 *
 * Hardware: the SSE4.2 crc32 instruction has a latency of three cycles but can start one per
 * cycle, so long inputs run as three interleaved streams whose CRCs are then combined by
 * "shifting" the earlier ones over the later streams' lengths with precomputed tables.
 * Table: slicing-by-8, for CPUs without the instruction. */
#include "crc32c.h"

#include <string.h>

#define POLY 0x82F63B78u /* reflected Castagnoli polynomial */
#define LONG_BLOCK 8192u
#define MID_BLOCK 1360u /* 3 x 1360 = 4080: a 4 KiB page in one round, 16 bytes left */
#define SHORT_BLOCK 256u

static uint32_t table[8][256];
/* shift_long[b][v]: the CRC register v << 8b after LONG_BLOCK zero bytes; likewise short */
static uint32_t shift_long[4][256];
static uint32_t shift_mid[4][256];
static uint32_t shift_short[4][256];
static int ready;
static int use_hw;

static uint32_t sw_register(uint32_t c, const unsigned char *p, size_t len) {
    while (len && ((uintptr_t)p & 7)) {
        c = table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        len--;
    }
    while (len >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^
            table[4][lo >> 24] ^ table[3][p[4]] ^ table[2][p[5]] ^ table[1][p[6]] ^
            table[0][p[7]];
        p += 8;
        len -= 8;
    }
    while (len--) c = table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

/* The register after `len` zero bytes, from register c (a linear map of c). */
static uint32_t zeros(uint32_t c, size_t len) {
    while (len--) c = table[0][c & 0xff] ^ (c >> 8);
    return c;
}

static void make_shift(uint32_t shift[4][256], size_t len) {
    /* The map is linear, so it is enough to know it on each byte of the register; build it
     * on single bits and combine. */
    uint32_t bit[32];
    for (int i = 0; i < 32; i++) bit[i] = zeros((uint32_t)1 << i, len);
    for (int b = 0; b < 4; b++)
        for (int v = 0; v < 256; v++) {
            uint32_t r = 0;
            for (int i = 0; i < 8; i++)
                if (v >> i & 1) r ^= bit[8 * b + i];
            shift[b][v] = r;
        }
}

static inline uint32_t shift(uint32_t s[4][256], uint32_t c) {
    return s[0][c & 0xff] ^ s[1][(c >> 8) & 0xff] ^ s[2][(c >> 16) & 0xff] ^ s[3][c >> 24];
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_HW 1
#include <nmmintrin.h>

/* Three streams over blocks of `block` bytes each, combined with `shift_table`. Inlined for
 * each block size, so the compiler sees a constant stride. */
__attribute__((target("sse4.2"), always_inline)) static inline uint64_t hw_streams(
    uint64_t c, const unsigned char **pp, size_t *lenp, size_t block, uint32_t shift_table[4][256]) {
    const unsigned char *p = *pp;
    size_t len = *lenp;
    while (len >= 3 * block) {
        uint64_t c1 = 0, c2 = 0;
        const unsigned char *end = p + block;
        do {
            uint64_t a, b, d;
            memcpy(&a, p, 8);
            memcpy(&b, p + block, 8);
            memcpy(&d, p + 2 * block, 8);
            c = _mm_crc32_u64(c, a);
            c1 = _mm_crc32_u64(c1, b);
            c2 = _mm_crc32_u64(c2, d);
            p += 8;
        } while (p < end);
        c = shift(shift_table, (uint32_t)c) ^ (uint32_t)c1;
        c = shift(shift_table, (uint32_t)c) ^ (uint32_t)c2;
        p += 2 * block;
        len -= 3 * block;
    }
    *pp = p;
    *lenp = len;
    return c;
}

__attribute__((target("sse4.2"))) static uint32_t hw_register(uint32_t c0, const unsigned char *p,
                                                              size_t len) {
    uint64_t c = c0;
    while (len && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        len--;
    }
    c = hw_streams(c, &p, &len, LONG_BLOCK, shift_long);
    c = hw_streams(c, &p, &len, MID_BLOCK, shift_mid);
    c = hw_streams(c, &p, &len, SHORT_BLOCK, shift_short);
    while (len >= 8) {
        uint64_t a;
        memcpy(&a, p, 8);
        c = _mm_crc32_u64(c, a);
        p += 8;
        len -= 8;
    }
    while (len--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return (uint32_t)c;
}

static int cpu_has_hw(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
}
#else
#define HAVE_HW 0
#endif

static void init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (POLY & (0u - (c & 1)));
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 1; k < 8; k++)
            table[k][n] = table[0][table[k - 1][n] & 0xff] ^ (table[k - 1][n] >> 8);
    make_shift(shift_long, LONG_BLOCK);
    make_shift(shift_mid, MID_BLOCK);
    make_shift(shift_short, SHORT_BLOCK);
#if HAVE_HW
    use_hw = cpu_has_hw();
#endif
    ready = 1;
}

int mp_crc32c_select(int which) {
    if (!ready) init();
    if (which == -1 || which == 1) {
#if HAVE_HW
        use_hw = cpu_has_hw();
#endif
    } else if (which == 0) {
        use_hw = 0;
    }
    return use_hw;
}

uint32_t mp_crc32c(uint32_t crc, const unsigned char *data, size_t len) {
    if (!ready) init();
    uint32_t c = ~crc;
#if HAVE_HW
    if (use_hw) return ~hw_register(c, data, len);
#endif
    return ~sw_register(c, data, len);
}
