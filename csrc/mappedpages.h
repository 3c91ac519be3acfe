/* The C core's interface: everything src/mappedpages/_core_c.py may call, and nothing else.
 *
 * This header is also the cffi cdef (src/mappedpages/_build_core.py reads the part between
 * the CDEF markers), so that part stays in the C subset cffi parses: no macros, no includes.
 *
 * Conventions: a function returning int or int64_t returns a negative MP_E_* code on failure,
 * with a message from mp_message() and, for MP_E_OS, the errno from mp_errno(). Every page
 * index is checked against the page count. A core is not reentrant, but it serialises its
 * callers with a mutex, so misuse from two threads cannot corrupt it. */
#ifndef MAPPEDPAGES_H
#define MAPPEDPAGES_H

#include <stddef.h>
#include <stdint.h>

/* CDEF BEGIN */
typedef struct mp_core mp_core;

enum {
    MP_OK = 0,
    MP_E_OS = -1,            /* an operating-system call failed: see mp_errno() */
    MP_E_OUT_OF_BOUNDS = -2, /* page index at or beyond the page count */
    MP_E_RESERVED = -3,      /* page 0-2 or a bitmap group copy */
    MP_E_DOUBLE_FREE = -4,   /* page already free (or twice in one bulk call) */
    MP_E_CORRUPT_SUPERBLOCK = -5,
    MP_E_CORRUPT_METADATA = -6,
    MP_E_PAGE_SIZE = -7,     /* page size invalid or different from the file's */
    MP_E_UNAVAILABLE = -8,   /* closed, or poisoned by a failed commit */
    MP_E_NO_MEMORY = -9,
    MP_E_READ_ONLY = -10,
    MP_E_VALUE = -11         /* an argument out of range */
};

enum { MP_WRITABLE = 1, MP_SYNC = 2, MP_PREALLOCATE = 4 };

/* The steps of a commit, for callers that observe each sync barrier (mp_set_manual). */
enum {
    MP_STEP_WRITE = 0, /* write the dirty bitmap groups and, if needed, the inactive metadata;
                          returns 2 for a one-barrier commit (its record lists its pages) */
    MP_STEP_SYNC1 = 1, /* make them (and the staged pages) durable; nothing for one barrier */
    MP_STEP_FLIP = 2,  /* write the other commit record: the new state */
    MP_STEP_SYNC2 = 3, /* make the record durable */
    MP_STEP_DONE = 4   /* adopt the new state in memory */
};

mp_core *mp_new(void);
void mp_free(mp_core *core);
int mp_open(mp_core *core, int fd, uint32_t page_size, int flags);
int mp_close(mp_core *core);

const char *mp_message(const mp_core *core);
int mp_errno(const mp_core *core);

uint32_t mp_page_size(const mp_core *core);
uint64_t mp_page_count(const mp_core *core);
uint64_t mp_free_count(const mp_core *core);
uint64_t mp_generation(const mp_core *core);
int mp_active(const mp_core *core);

int64_t mp_alloc(mp_core *core);
int mp_alloc_bulk(mp_core *core, uint64_t *out, uint64_t n);
int mp_free_page(mp_core *core, uint64_t page);
int mp_free_bulk(mp_core *core, const uint64_t *pages, uint64_t n);
int mp_begin(mp_core *core);
/* Pages the caller wrote into the mapping for the next commit (the protected-page directory
 * and staged copies): made durable at its first barrier; the commit happens even if no
 * allocation bit changed. */
int mp_stage(mp_core *core, const uint64_t *pages, uint64_t n);
/* The pages of the two copies of the protected-page directory index (0 = none), written into
 * the metadata by the next commit. */
int mp_set_directory(mp_core *core, uint64_t dir_a, uint64_t dir_b);
uint64_t mp_directory(const mp_core *core, int copy);
/* The log the next commit record carries (at most 396 bytes, a multiple of 4, and none for 1 KiB
 * pages; the core keeps it unchanged across commits until it is set again), and reading it
 * back: returns its length and copies it into out (which has room for 396 bytes). */
int mp_set_log(mp_core *core, const unsigned char *log, uint32_t len);
int mp_log(mp_core *core, unsigned char *out);
/* The next commit uses two barriers even if it could use one (the layer above wrote a page
 * that does not become current: the header it zeroes in a new block's second copy). */
int mp_two_barriers(mp_core *core);
int mp_commit(mp_core *core);
int mp_rollback(mp_core *core);

int mp_is_allocated(mp_core *core, uint64_t page);
int64_t mp_scan(mp_core *core, uint64_t start, uint64_t *out, uint64_t limit);
int mp_bitmap_bytes(mp_core *core, unsigned char *out, uint64_t len);

/* Hand the current mapping to the caller, who unmaps it with mp_unmap once nothing uses it
 * (the core keeps using it until it remaps or closes, so the caller keeps it until then).
 * Returns the mapping epoch; a later remap increments it. */
int64_t mp_map_export(mp_core *core, char **addr, uint64_t *len);
uint64_t mp_map_epoch(const mp_core *core);
void mp_unmap(char *addr, uint64_t len);

int mp_flush_all(mp_core *core);
int mp_flush_pages(mp_core *core, const uint64_t *pages, uint64_t n);

/* Manual commits: mutating calls leave their commit pending, and the caller runs the steps. */
int mp_set_manual(mp_core *core, int on);
int mp_pending(mp_core *core);
int mp_commit_step(mp_core *core, int step);
void mp_poison(mp_core *core);

uint32_t mp_crc32c(uint32_t crc, const unsigned char *data, size_t len);
int mp_crc32c_select(int which);
/* CDEF END */

#endif
