/* The core's state and the functions its source files share (not part of the interface). */
#ifndef MAPPEDPAGES_CORE_H
#define MAPPEDPAGES_CORE_H

#include <pthread.h>
#include <stdint.h>

#include "bitmap.h"
#include "format.h"
#include "mappedpages.h"

/* per-group flags */
#define G_CUR 1u    /* the current copy is copy 1 */
#define G_DIRTY 2u  /* changed since the last commit */
#define G_STALE 4u  /* a copy with a generation above the committed one: rewrite it */
#define G_NEW 8u    /* made by growth since the last commit */

struct mp_core {
    pthread_mutex_t lock;
    int fd;
    int open, writable, sync, prealloc, manual;
    int closed, poisoned, in_batch, grew;
    mp_geometry geo;
    uint64_t os_page; /* msync works on whole OS pages */

    unsigned char *map; /* the whole file's first map_len bytes */
    uint64_t map_len;
    int map_exported; /* the caller unmaps it */
    uint64_t map_epoch;

    uint64_t n;        /* page count of the current state */
    uint64_t free;     /* free data pages of the current state */
    uint64_t gen;      /* generation of the last commit */
    int rec;           /* commit record of the last commit (the next one writes the other) */
    int active;        /* metadata copy the last commit's record names */
    uint64_t meta_gen; /* generation of that metadata copy (<= gen) */
    uint64_t dir[2];   /* directory index copies of the current state */
    int forced;        /* commit even without bitmap changes: pages staged or the log set */
    int meta_dirty;    /* the metadata must be rewritten: the directory pointers changed */
    int meta_written;  /* the commit in progress wrote the inactive metadata copy */
    /* pages written for the next commit besides the metadata (the first MP_RECORD_CHECKS) */
    uint64_t written[MP_RECORD_CHECKS];
    unsigned nwritten;
    int too_many;      /* more than that */
    int two;           /* the layer above asked for two barriers */
    int single;        /* the commit in progress has one barrier: its record lists the pages */
    /* the record's log (opaque here; the protected-page directory's changes since its blocks
     * were last written): as the next commit writes it, and as the last commit wrote it */
    uint32_t log_len, log_len_committed;
    unsigned char log[MP_RECORD_LOG_MAX], log_committed[MP_RECORD_LOG_MAX];

    mp_bitmap bits;
    uint8_t *gflags;      /* per group: G_* */
    uint64_t gcap;        /* groups gflags and touched have room for */
    uint64_t *touched;    /* groups with G_DIRTY or G_STALE, each once */
    uint64_t ntouched;

    /* pages the committed state uses that the current one freed (held.c) */
    uint64_t *held, nheld, held_cap;
    uint64_t *held_bits, held_words;

    /* a commit in progress; staged pages widen the span before it starts */
    uint64_t sync_lo, sync_hi; /* bytes [lo, hi) of the mapping written for the commit */

    int err;
    char msg[200];
};

int mp__fail(mp_core *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int mp__fail_os(mp_core *c, int err, const char *what);

void mp__touch(mp_core *c, uint64_t k, unsigned flag);
int mp__group_room(mp_core *c, uint64_t groups);
int mp__map(mp_core *c, uint64_t len);
int mp__commit(mp_core *c);
int mp__step(mp_core *c, int step);
int mp__sync_range(mp_core *c, uint64_t lo, uint64_t hi);
/* Note that bytes [off, off + len) of the mapping (within one page) must be durable at the
 * first barrier, and which page they are on. */
void mp__written(mp_core *c, uint64_t off, uint64_t len);
/* Forget what the next commit was to do besides the bitmap and the log (after a commit, or
 * a rollback). */
void mp__clear_commit(mp_core *c);

/* held.c: pages freed since the last commit that the committed state still uses */
int mp__held(const mp_core *c, uint64_t page);
uint64_t mp__held_word(const mp_core *c, uint64_t w); /* 64 pages' held bits */
int mp__hold_room(mp_core *c, uint64_t more);         /* room to hold `more` pages */
int mp__committed_uses(const mp_core *c, uint64_t page);
void mp__hold(mp_core *c, uint64_t page);             /* after mp__hold_room */
void mp__unhold_last(mp_core *c);
/* Forget the held pages; at a commit (to_bitmap) their bits are cleared first. */
void mp__release_held(mp_core *c, int to_bitmap);

#endif
