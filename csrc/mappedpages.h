/* The C core's interface: everything src/mappedpages/_core_c.py may call, and nothing else.
 *
 * This header is also the cffi cdef (src/mappedpages/_build_core.py reads the part between
 * the CDEF markers), so that part stays in the C subset cffi parses: no macros, no includes.
 *
 * Conventions: a function returning int or int64_t returns a negative MP_E_* code on failure,
 * with a message from mp_message() (mp_snap_message()) and, for MP_E_OS, the errno from
 * mp_errno(). Every page and slot index is checked against the state's counts. A core or
 * snapshot is not reentrant, but it serialises its callers with a mutex, so misuse from two
 * threads cannot corrupt it. A mutating call that fails outside a batch leaves nothing of
 * itself behind. */
#ifndef MAPPEDPAGES_H
#define MAPPEDPAGES_H

#include <stddef.h>
#include <stdint.h>

/* CDEF BEGIN */
typedef struct mp_core mp_core;
typedef struct mp_snap mp_snap;

enum {
    MP_OK = 0,
    MP_E_OS = -1,            /* an operating-system call failed: see mp_errno() */
    MP_E_OUT_OF_BOUNDS = -2, /* page index at or beyond the page count, or a free slot */
    MP_E_RESERVED = -3,      /* an internal page given as a data page */
    MP_E_DOUBLE_FREE = -4,   /* page or slot already free (or twice in one bulk call) */
    MP_E_CORRUPT_SUPERBLOCK = -5,
    MP_E_CORRUPT_METADATA = -6,
    MP_E_PAGE_SIZE = -7,     /* page size invalid or different from the file's */
    MP_E_UNAVAILABLE = -8,   /* closed, or poisoned by a failed commit */
    MP_E_NO_MEMORY = -9,
    MP_E_READ_ONLY = -10,
    MP_E_VALUE = -11,        /* an argument out of range */
    MP_E_CORRUPT_DIRECTORY = -12,
    MP_E_VERSION1 = -13,     /* a format-1 file never upgraded */
    MP_E_RECOVERED = 1       /* mp_open: opened the commit before the newest, whose state is damaged */
};

enum { MP_WRITABLE = 1, MP_SYNC = 2, MP_PREALLOCATE = 4 };

/* The steps of a commit, for callers that observe each sync barrier (mp_set_manual). */
enum {
    MP_STEP_WRITE = 0, /* log or checkpoint; returns 2 for a one-barrier commit */
    MP_STEP_SYNC1 = 1, /* make the staged pages and blocks durable; nothing for one barrier */
    MP_STEP_FLIP = 2,  /* write the other record slot: the new state */
    MP_STEP_SYNC2 = 3, /* make the record durable */
    MP_STEP_DONE = 4   /* adopt the new state in memory */
};

/* -- the writer -- */
mp_core *mp_new(void);
void mp_free(mp_core *core);
int mp_open(mp_core *core, int fd, uint32_t page_size, int flags);
/* Upgrade a format-1 file: `used` is its bitmap, `keep` the pages format 2 keeps (pages 0-2,
 * data pages, each protected page's committed copy), `slots`/`pages` the protected pages,
 * `sector` the format-1 record sector for the upgrade pointer. */
int mp_upgrade(mp_core *core, int fd, int flags, uint32_t page_size, uint64_t page_count, uint64_t generation,
               uint64_t sector, const unsigned char *used, const unsigned char *keep, uint64_t bits_len,
               const uint64_t *slots, const uint64_t *pages, uint64_t nslots, uint64_t slot_count,
               const unsigned char *file_id);
int mp_close(mp_core *core);

const char *mp_message(const mp_core *core);
int mp_errno(const mp_core *core);

uint32_t mp_page_size(const mp_core *core);
uint64_t mp_page_count(const mp_core *core);
uint64_t mp_free_count(const mp_core *core);
uint64_t mp_data_count(const mp_core *core);
uint64_t mp_slot_count(const mp_core *core);
uint64_t mp_slots_used(const mp_core *core);
uint64_t mp_generation(const mp_core *core);
uint64_t mp_checkpoint(const mp_core *core);
uint64_t mp_log_bytes(const mp_core *core);
void mp_file_id(const mp_core *core, unsigned char *out);

int64_t mp_alloc(mp_core *core);
int mp_alloc_bulk(mp_core *core, uint64_t *out, uint64_t n);
int mp_free_page(mp_core *core, uint64_t page);
int mp_free_bulk(mp_core *core, const uint64_t *pages, uint64_t n);
int mp_kind(mp_core *core, uint64_t page); /* 0 free, 1 data, 2 internal, 3 pending */
/* mp_kind for a caller that must not wait (one holding Python's GIL): -1, and no message,
 * when the lock is taken, another thread's batch is open, or mp_kind would fail. */
int mp_kind_try(mp_core *core, uint64_t page);
/* mp_kind_try for a page about to be written: -1 also when the record in force lists it
 * (mp_retire must come first) or the core is read-only. mp_view_try likewise, for a writable
 * view about to be given out: a page the open batch allocated is then never sealed. */
int mp_write_try(mp_core *core, uint64_t page);
int mp_view_try(mp_core *core, uint64_t page);
int64_t mp_scan(mp_core *core, uint64_t start, uint64_t *out, uint64_t limit);

int mp_palloc(mp_core *core, uint64_t *out, uint64_t n);
int mp_pfree(mp_core *core, const uint64_t *slots, uint64_t n);
int mp_pwrite(mp_core *core, uint64_t slot, const unsigned char *data, uint64_t len);
int64_t mp_ppage(mp_core *core, uint64_t slot);
int mp_pused(mp_core *core, uint64_t slot);
int64_t mp_pscan(mp_core *core, uint64_t start, uint64_t *out, uint64_t limit);

int mp_begin(mp_core *core);
int mp_commit(mp_core *core);
int mp_rollback(mp_core *core);
/* Make the calling thread the open batch's owner (to commit it off the thread that opened it:
 * that thread's calls wait for the batch from now on, like any other thread's). */
int mp_adopt_batch(mp_core *core);
/* Commit a page count that ends after the last page in use or pending (one commit, a
 * checkpoint), then truncate the file to it: returns the pages the file lost. Not in a batch. */
int64_t mp_shrink(mp_core *c);
/* The file cut to the committed page count (returns the pages cut): what mp_shrink does after
 * its commit, for a caller that commits step by step (mp_set_manual). */
int64_t mp_trim(mp_core *c);
int mp_checkpoint_now(mp_core *core);
/* Pending pages no snapshot can read any longer become free to reuse (as at the start of
 * every mutating call). */
int mp_reclaim(mp_core *core);

/* Hand the current mapping to the caller, who unmaps it with mp_unmap once nothing uses it
 * (the core keeps using it until it remaps or closes, so the caller keeps it until then).
 * Returns the mapping epoch; a later remap increments it. */
int64_t mp_map_export(mp_core *core, char **addr, uint64_t *len);
uint64_t mp_map_epoch(const mp_core *core);
void mp_unmap(char *addr, uint64_t len);

/* Make data written through the mapping durable: every page (one fdatasync), or the pages
 * named (one msync over their span). Inside a batch, they are the batch's commit's to make
 * durable, in its first barrier (or its rollback's): these return 1 then, 0 after a sync. */
int mp_flush_all(mp_core *core);
int mp_flush_pages(mp_core *core, const uint64_t *pages, uint64_t n);
/* mp_flush_pages for pages that nothing but copying writes reached since the batch allocated
 * them: the batch's record may list them (one barrier), and they are then sealed until a
 * later record is in force. Others, and any outside a batch or with sync off, are flushed. */
int mp_seal_pages(mp_core *core, const uint64_t *pages, uint64_t n);
/* Before `page` is written (`viewing`: through a view, which may write it at any time after):
 * if the record in force lists it, retire that record (a copy that lists nothing, made
 * durable): 1; 0 when it lists no such page. With manual commits the copy is written but not
 * synced, 2, and mp_retire_sync syncs it. A page viewed after the open batch sealed it is
 * flushed by the batch instead. */
int mp_retire(mp_core *core, uint64_t page, int viewing);
int mp_retire_sync(mp_core *core);
/* The runs (first page, count) the record in force lists, into out (room for
 * 2 * MP_LISTED_MAX): how many, or 0 when none holds a data page (none mp_retire retires for). */
int mp_sealed_runs(mp_core *core, uint64_t *out);
/* The reader table (its descriptor, which the caller keeps open): the writer keeps whole the
 * snapshots registered there. */
int mp_attach_table(mp_core *core, int fd);

/* Manual commits: mutating calls leave their commit pending, and the caller runs the steps. */
int mp_set_manual(mp_core *core, int on);
int mp_pending(mp_core *core);
int mp_commit_step(mp_core *core, int step);
void mp_poison(mp_core *core);

/* -- snapshots -- */
mp_snap *mp_snap_new(void);
void mp_snap_free(mp_snap *snap);
/* The newest commit of the file behind fd (opened read-only; the caller keeps fd). */
int mp_snap_open(mp_snap *snap, int fd, uint32_t page_size);
/* The last commit of a writer, pinned in it until mp_snap_close; `map` is the writer's
 * exported mapping, which the caller keeps alive meanwhile. */
int mp_snap_of(mp_snap *snap, mp_core *writer, const char *map, uint64_t map_len);
/* The generation of the record in force in the file behind fd. */
int64_t mp_snap_newest(mp_snap *snap, int fd, uint32_t page_size);
/* 1 when the other record slot may hold a newer commit, else 0; MP_E_CORRUPT_METADATA when
 * the file is shorter than the snapshot's state (truncated). */
int mp_snap_newer(mp_snap *snap);
int mp_snap_refresh(mp_snap *snap);
int mp_snap_close(mp_snap *snap);
const char *mp_snap_message(const mp_snap *snap);
int mp_snap_errno(const mp_snap *snap);
uint32_t mp_snap_page_size(const mp_snap *snap);
uint64_t mp_snap_generation(const mp_snap *snap);
uint64_t mp_snap_page_count(const mp_snap *snap);
uint64_t mp_snap_free_count(const mp_snap *snap);
uint64_t mp_snap_data_count(const mp_snap *snap);
uint64_t mp_snap_slot_count(const mp_snap *snap);
uint64_t mp_snap_slots_used(const mp_snap *snap);
int mp_snap_record_slot(const mp_snap *snap);
/* The snapshot's commit record block, as it was read, into out (len >= the block size):
 * returns the block size. */
int64_t mp_snap_record(mp_snap *snap, unsigned char *out, uint64_t len);
int mp_snap_kind(mp_snap *snap, uint64_t page);
/* mp_snap_kind without waiting: -1 when the lock is taken or mp_snap_kind would fail. */
int mp_snap_kind_try(mp_snap *snap, uint64_t page);
/* The kinds of pages [start, start + n) into out[0 .. n), as mp_snap_kind answers: returns n. */
int64_t mp_snap_kinds(mp_snap *snap, uint64_t start, unsigned char *out, uint64_t n);
int64_t mp_snap_scan(mp_snap *snap, uint64_t start, uint64_t *out, uint64_t limit);
int mp_snap_pused(mp_snap *snap, uint64_t slot);
int64_t mp_snap_ppage(mp_snap *snap, uint64_t slot);
int64_t mp_snap_pscan(mp_snap *snap, uint64_t start, uint64_t *out, uint64_t limit);
int64_t mp_snap_map_export(mp_snap *snap, char **addr, uint64_t *len);
uint64_t mp_snap_map_epoch(const mp_snap *snap);

void mp_fence(void);
uint32_t mp_crc32c(uint32_t crc, const unsigned char *data, size_t len);
int mp_crc32c_select(int which);
/* CDEF END */

#endif
