/* Protected pages: the directory's slots, each naming its content page and that page's
 * CRC32C, and the public functions for them. A write goes to a page no snapshot reads (in
 * place only when this commit made the slot's page). _core_py/directory.py is the same in
 * Python. */
#include <stdlib.h>

#include "core.h"
#include "crc32c.h"

#define ENTER mp__enter

uint32_t mp__zero_crc(uint32_t page_size) {
    static uint32_t size, crc; /* a single page size per process in practice; cheap otherwise */
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    if (size != page_size) {
        unsigned char zero[4096] = {0};
        uint32_t x = 0;
        for (uint32_t done = 0; done < page_size; done += sizeof zero)
            x = mp_crc32c(x, zero, page_size - done < sizeof zero ? page_size - done : sizeof zero);
        size = page_size;
        crc = x;
    }
    uint32_t r = crc;
    pthread_mutex_unlock(&lock);
    return r;
}

/* Room for `count` slots in every per-slot array. */
int mp__slot_room(mp_core *c, uint64_t count) {
    if (count > c->slot_cap) {
        uint64_t cap = c->slot_cap ? c->slot_cap : 64;
        while (cap < count) cap *= 2;
        uint64_t *p = realloc(c->slot_page, (size_t)cap * 8);
        if (!p) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for the directory");
        c->slot_page = p;
        uint32_t *k = realloc(c->slot_crc, (size_t)cap * 4);
        if (!k) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for the directory");
        c->slot_crc = k;
        memset(c->slot_page + c->slot_cap, 0, (size_t)(cap - c->slot_cap) * 8);
        memset(c->slot_crc + c->slot_cap, 0, (size_t)(cap - c->slot_cap) * 4);
        uint64_t words = cap / 64;
        uint64_t *v = realloc(c->verified, (size_t)words * 8);
        if (!v) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for the directory");
        memset(v + c->verified_words, 0, (size_t)(words - c->verified_words) * 8);
        c->verified = v;
        c->verified_words = words;
        if (mp_bitmap_resize(&c->slots, cap)) return mp__fail(c, MP_E_NO_MEMORY, "out of memory for the directory");
        c->slot_cap = cap;
    }
    return 0;
}

static int slot_used(const mp_core *c, uint64_t slot) {
    return slot < c->counts.slot_count && mp_bitmap_get(&c->slots, slot);
}

static int check_used(mp_core *c, uint64_t slot) {
    if (!slot_used(c, slot)) return mp__fail(c, MP_E_OUT_OF_BOUNDS, "protected page %llu is not allocated", (unsigned long long)slot);
    return 0;
}

/* Point `slot` at `page`, logging it and keeping what it was for a rollback. */
static int set_slot(mp_core *c, uint64_t slot, uint64_t page, uint32_t crc) {
    if (mp__reserve(&c->undo_slots, 3)) return mp__fail(c, MP_E_NO_MEMORY, "out of memory");
    int r = mp__log_slot(c, slot, page, crc);
    if (r) return r;
    uint64_t *u = c->undo_slots.v + c->undo_slots.n;
    u[0] = slot;
    u[1] = c->slot_page[slot];
    u[2] = c->slot_crc[slot];
    c->undo_slots.n += 3;
    c->slot_page[slot] = page;
    c->slot_crc[slot] = crc;
    return 0;
}

/* A page written for this commit. Only pages taken in it are staged (a page written again
 * is not staged twice), so the list holds each once. */
static int stage(mp_core *c, uint64_t page) {
    return mp__push(&c->staged, page) ? mp__fail(c, MP_E_NO_MEMORY, "out of memory") : 0;
}

static int palloc_one(mp_core *c, uint64_t *out) {
    const uint32_t ps = c->geo.page_size;
    uint64_t page;
    int r = mp__take_lowest(c, 1, &page);
    if (r) return r;
    /* A page that reads as zeros is not written again: space reserved by growth and never
     * written would otherwise have the file system convert its extent at the sync. It is
     * listed all the same, so that zeros written but not yet synced land with the commit. */
    unsigned char *p = c->map + page * ps;
    int zero = 1;
    for (uint32_t i = 0; i < ps && zero; i += 8) zero = mp_get64(p + i) == 0;
    if (!zero) memset(p, 0, ps);
    r = stage(c, page);
    if (r) return r;
    uint64_t slot = mp_bitmap_first_clear(&c->slots);
    if (slot >= c->counts.slot_count) slot = c->counts.slot_count;
    r = mp__slot_room(c, slot + 1);
    if (r) return r;
    if (slot == c->counts.slot_count) c->counts.slot_count++;
    r = set_slot(c, slot, page, mp__zero_crc(ps));
    if (r) return r;
    mp_bitmap_set(&c->slots, slot);
    mp__set(c->verified, slot);
    c->counts.slots_used++;
    *out = slot;
    return 0;
}

int mp__release_slot(mp_core *c, uint64_t slot) {
    uint64_t page = c->slot_page[slot];
    int r = set_slot(c, slot, 0, 0);
    if (r) return r;
    mp_bitmap_clear(&c->slots, slot);
    mp__clr(c->verified, slot);
    c->counts.slots_used--;
    return mp__release(c, page);
}

static int pwrite_slot(mp_core *c, uint64_t slot, const unsigned char *data, uint64_t len) {
    const uint32_t ps = c->geo.page_size;
    int r = check_used(c, slot);
    if (r) return r;
    if (len != ps) return mp__fail(c, MP_E_VALUE, "a protected page holds %u bytes, not %llu", ps, (unsigned long long)len);
    r = mp__check_length(c); /* the content goes through the mapping */
    if (r) return r;
    uint32_t crc = mp_crc32c(0, data, ps);
    uint64_t old = c->slot_page[slot];
    if (mp__bit(c->born_bits, old)) { /* this commit made it: nothing else reads it */
        memcpy(c->map + old * ps, data, ps);
        return set_slot(c, slot, old, crc);
    }
    uint64_t page;
    r = mp__take_lowest(c, 1, &page);
    if (r) return r;
    memcpy(c->map + page * ps, data, ps);
    r = stage(c, page);
    if (!r) r = set_slot(c, slot, page, crc);
    if (r) return r;
    mp__set(c->verified, slot);
    return mp__release(c, old);
}

/* A protected write of the slot's own content, checked first (so that damage is not given a
 * valid checksum): it moves to the lowest page free to reuse. */
int mp__move_slot(mp_core *c, uint64_t slot) {
    const uint32_t ps = c->geo.page_size;
    uint64_t page = c->slot_page[slot];
    unsigned char *copy = malloc(ps);
    if (!copy) return mp__fail(c, MP_E_NO_MEMORY, "out of memory");
    memcpy(copy, c->map + page * ps, ps);
    int r = mp_crc32c(0, copy, ps) == c->slot_crc[slot]
                ? pwrite_slot(c, slot, copy, ps)
                : mp__fail(c, MP_E_CORRUPT_DIRECTORY, "protected page %llu: its content (page %llu) does not match its checksum",
                           (unsigned long long)slot, (unsigned long long)page);
    free(copy);
    return r;
}

/* -- public functions -------------------------------------------------------------------- */

int mp_palloc(mp_core *c, uint64_t *out, uint64_t n) {
    ENTER(c);
    int r = mp__start(c);
    if (!r) r = mp__check_length(c); /* its pages are read and written through the mapping */
    for (uint64_t i = 0; !r && i < n; i++) r = palloc_one(c, &out[i]);
    return mp__finish(c, r);
}

int mp_pfree(mp_core *c, const uint64_t *slots, uint64_t n) {
    ENTER(c);
    int r = mp__start(c);
    for (uint64_t i = 0; !r && i < n; i++) {
        r = check_used(c, slots[i]);
        for (uint64_t j = 0; !r && j < i; j++)
            if (slots[j] == slots[i])
                r = mp__fail(c, MP_E_DOUBLE_FREE, "protected page %llu appears twice", (unsigned long long)slots[i]);
    }
    for (uint64_t i = 0; !r && i < n; i++) r = mp__release_slot(c, slots[i]);
    return mp__finish(c, r);
}

int mp_pwrite(mp_core *c, uint64_t slot, const unsigned char *data, uint64_t len) {
    ENTER(c);
    int r = mp__start(c);
    if (!r) r = pwrite_slot(c, slot, data, len);
    return mp__finish(c, r);
}

int64_t mp_ppage(mp_core *c, uint64_t slot) {
    ENTER(c);
    int r = mp__start_read(c);
    if (!r) r = check_used(c, slot);
    if (r) return mp__leave(c, r);
    uint64_t page = c->slot_page[slot];
    if (!mp__bit(c->verified, slot)) {
        if (page >= c->counts.n || mp_crc32c(0, c->map + page * c->geo.page_size, c->geo.page_size) != c->slot_crc[slot])
            return mp__leave(c, mp__fail(c, MP_E_CORRUPT_DIRECTORY,
                                         "protected page %llu: its content (page %llu) does not match its checksum",
                                         (unsigned long long)slot, (unsigned long long)page));
        mp__set(c->verified, slot);
    }
    pthread_mutex_unlock(&c->lock);
    return (int64_t)page;
}

int mp_pused(mp_core *c, uint64_t slot) {
    ENTER(c);
    int r = mp__start_read(c);
    if (!r) r = slot_used(c, slot);
    return mp__leave(c, r);
}

int64_t mp_pscan(mp_core *c, uint64_t start, uint64_t *out, uint64_t limit) {
    ENTER(c);
    int r = mp__start_read(c);
    if (r) return mp__leave(c, r);
    uint64_t count = 0, n = c->counts.slot_count;
    for (uint64_t w = start >> 6; count < limit && w * 64 < n; w++) {
        uint64_t bits = c->slots.level[0][w];
        if (w == start >> 6) bits &= UINT64_MAX << (start & 63);
        while (bits && count < limit) {
            uint64_t slot = w * 64 + (uint64_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            if (slot >= n) break;
            out[count++] = slot;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return (int64_t)count;
}
