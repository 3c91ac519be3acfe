/* The core's state (struct mp_core, struct mp_snap) and the functions its source files share
 * (not part of the interface: that is mappedpages.h). src/mappedpages/_core_py/state.py is
 * the pure core's copy of this state, field for field where it can be. */
#ifndef MAPPEDPAGES_CORE_H
#define MAPPEDPAGES_CORE_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "bitmap.h"
#include "format.h"
#include "mappedpages.h"

/* The counters of a state (the record's header fields that are not pointers). */
typedef struct {
    uint64_t n, free, data, slot_count, slots_used;
} mp_counts;

/* qsort and memcpy of possibly empty arrays (whose pointer may be NULL, which the C library
 * does not accept even for zero elements). */
static inline void mp__qsort(void *v, uint64_t n, size_t size, int (*cmp)(const void *, const void *)) {
    if (n) qsort(v, (size_t)n, size, cmp);
}
static inline void mp__memcpy(void *dst, const void *src, uint64_t n) {
    if (n) memcpy(dst, src, (size_t)n);
}

/* A growable array of 64-bit words. */
typedef struct {
    uint64_t *v;
    uint64_t n, cap;
} mp_u64s;

int mp__push(mp_u64s *a, uint64_t x);
int mp__reserve(mp_u64s *a, uint64_t more);

/* One tree's blocks as the last checkpoint wrote them: per level, per index, a pointer (page
 * 0 = null), and the leaves changed since. */
typedef struct {
    unsigned height;
    mp_ptr *level[MP_MAX_HEIGHT + 1]; /* level[0]: leaves */
    uint64_t count[MP_MAX_HEIGHT + 1]; /* entries each level has room for */
    uint64_t *dirty_bits;              /* leaves changed since the last checkpoint */
    uint64_t dirty_words;
    mp_u64s dirty;                     /* the same leaves, as a list */
} mp_tree;

/* The reader table as the writer sees it: which slots hold back reclamation. */
typedef struct {
    int fd;
    unsigned char *map;
    struct mp_dead { uint64_t slot, pid, start, since; } *dead;
    uint64_t ndead, dead_cap;
    double checked[MP_TABLE_CAPACITY]; /* monotonic seconds the slot's lock was last found held */
} mp_table;

struct mp_core {
    /* Every public function holds `lock`. A batch belongs to the thread that began it: other
     * threads' calls wait on `batch_end` until it commits or rolls back, so that nothing they
     * do joins it (and is then committed or rolled back with it). */
    pthread_mutex_t lock;
    pthread_cond_t batch_end;
    pthread_t batch_owner; /* while in_batch */
    int fd;
    int open, writable, sync, prealloc, manual;
    int closed, poisoned, in_batch;
    mp_geometry geo;
    uint64_t os_page; /* msync works on whole OS pages */
    uint64_t record_pages[2];
    uint64_t reserved[5]; /* pages 0-2, and the record pages of an upgraded file */
    unsigned nreserved;
    unsigned char file_id[16];

    unsigned char *map; /* the whole file's first map_len bytes */
    uint64_t map_len;
    int map_exported; /* the caller unmaps it */
    uint64_t map_epoch;

    /* the last commit */
    uint64_t gen, checkpoint;
    int rec; /* record slot of the last commit (the next one writes the other) */
    mp_counts committed;

    /* the current state */
    mp_counts counts;
    mp_bitmap taken;         /* used pages, and pending ones: what allocation skips */
    uint64_t *internal, *pending, *born_bits;
    uint64_t *viewed_bits;   /* pages born in this batch that a writable view was given of */
    uint64_t *written;       /* pages written with zeros in this open, to give them space */
    uint64_t bit_words;      /* words of internal, pending, born_bits, viewed_bits, written */
    mp_u64s fifo;            /* pending pages, oldest first: pairs (generation, page) */
    uint64_t fifo_head;      /* pairs before it are released */
    uint64_t nheld;          /* pending pages */
    mp_u64s born;            /* pages allocated since the last commit */
    uint64_t space_from;     /* pages from here on may be holes: reserved before use (alloc.c) */
    int tight;               /* the file system was nearly full at the last look (alloc.c) */

    uint64_t *slot_page;
    uint32_t *slot_crc;
    uint64_t slot_cap;
    mp_bitmap slots;         /* slots in use */
    uint64_t *verified;      /* slots whose content matched its CRC32C in this open */
    uint64_t verified_words;

    mp_tree trees[2];        /* 0: the bitmap, 1: the directory */

    /* the log the next record carries: the committed words, then this commit's */
    unsigned char *log;
    uint64_t log_len, log_cap, log_committed;
    uint32_t log_crc_committed, next_log_crc;
    int64_t words_start;     /* where this commit's words begin, -1 before its GEN word */
    mp_u64s undo_slots;      /* triples (slot, page, crc) before each SLOT */
    mp_u64s undo_dirty;      /* pairs (tree, leaf) this commit made dirty */

    /* the commit in progress */
    mp_u64s staged;          /* pages written for it besides tree blocks and the record */
    mp_u64s blocks;          /* tree blocks a checkpoint wrote */
    int grew, forced, force_checkpoint, checkpointed, single;
    int cut;                 /* a shrink: the state ends after its last page in use (mp__cut) */
    int no_undo;             /* a checkpoint began to write: a failure now cannot be rolled back */
    /* the open batch's flushes, which its commit makes durable before its record (or its
     * rollback, at once): the byte span of flush(ids), and whether flush() of everything */
    uint64_t flush_lo, flush_hi; /* flush_hi 0: none */
    int flush_everything;
    /* pages the open batch allocated and flushed that nothing but a copying write reached
     * (mp_seal_pages): its record may list them, and the commit take one barrier */
    mp_u64s sealed;
    mp_listed listing[MP_LISTED_MAX]; /* a one-barrier commit's runs, from its write step */
    unsigned nlisting;

    /* snapshots: pairs (generation, count) in this process; the reader table of others */
    mp_u64s pins;
    mp_table *table;

    int err;
    char msg[200];
};

struct mp_snap {
    pthread_mutex_t lock;
    int fd;        /* -1: a snapshot of a writer's commit */
    int closed;
    mp_core *owner; /* the writer that pinned it, or NULL */
    mp_geometry geo;
    uint64_t record_pages[2];
    unsigned char *map;
    uint64_t map_len;
    int map_own, map_exported;
    uint64_t map_epoch;

    int slot;
    mp_record rec;
    unsigned char record[MP_MAX_BLOCK]; /* the record's block as read: the writer overwrites
                                           its slot two commits later, a backup still needs it */
    unsigned char *log;      /* a copy of the record's log */
    uint64_t log_len;
    /* the log's changes: sorted disjoint runs (first, count, kind), and slots (slot, page, crc) */
    mp_u64s runs;
    mp_u64s slot_changes;
    /* validated blocks: open-addressed set of (page, kind) */
    uint64_t *seen;
    uint64_t seen_cap, seen_n;
    mp_u64s verified;        /* slots whose content was checked */

    int err;
    char msg[200];
};

int mp__fail(mp_core *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The start of every public function on a writer: take the lock, then wait for another
 * thread's batch to end. mp__leave releases it (and wakes the waiters once no batch is open). */
static inline void mp__enter(mp_core *c) {
    pthread_mutex_lock(&c->lock);
    while (c->in_batch && !pthread_equal(c->batch_owner, pthread_self())) pthread_cond_wait(&c->batch_end, &c->lock);
}
int mp__fail_os(mp_core *c, int err, const char *what);
int mp__map(mp_core *c, uint64_t len);

/* alloc.c: the frame of every public function (lock taken by the caller) */
int mp__start_read(mp_core *c);   /* usable */
int mp__start(mp_core *c);        /* writable; outside a batch, release what the horizon passed */
int mp__finish(mp_core *c, int r); /* commit, or roll back a failure outside a batch; unlock */
int mp__leave(mp_core *c, int r); /* unlock */
/* alloc.c */
int mp__grow(mp_core *c, uint64_t need);
int mp__space(mp_core *c, uint64_t end);
int mp__space_for(mp_core *c, uint64_t count);
void mp__space_known(mp_core *c);
uint64_t mp__find_free(const mp_core *c);   /* the lowest page free to reuse, or UINT64_MAX */
uint64_t mp__top_bit(const uint64_t *v, uint64_t words); /* one past the highest bit set, or 0 */
uint64_t mp__top_taken(const mp_core *c);   /* one past the highest page in use or pending */
void mp__cut(mp_core *c);                   /* shrink.c: a shrink's cut, after its checkpoint */
int mp__move_slot(mp_core *c, uint64_t slot); /* the slot's content to the lowest free page */
int mp__check_length(mp_core *c);
int mp__take(mp_core *c, uint64_t page, int internal);
int mp__take_lowest(mp_core *c, int internal, uint64_t *page);
int mp__release(mp_core *c, uint64_t page);
int mp__is_used(const mp_core *c, uint64_t page);
int mp__bits_room(mp_core *c, uint64_t pages);
void mp__clear_commit(mp_core *c);
int mp__rollback(mp_core *c);
int mp__pending(const mp_core *c); /* commit.c: whether a commit has anything to write */
/* commit.c: make what the open batch flushed durable (a rollback's, a sync=False commit's) */
int mp__sync_flushed(mp_core *c);
/* commit.c: whether the record in force lists `page`; a copy of it that lists nothing, into
 * the other slot, adopted (docs/FORMAT.md, "Sealed pages"); that copy made durable */
int mp__listed_in_force(const mp_core *c, uint64_t page);
void mp__retire_write(mp_core *c);
int mp__retire_sync(mp_core *c);
static inline int mp__bit(const uint64_t *w, uint64_t i) { return (int)(w[i >> 6] >> (i & 63) & 1); }
static inline void mp__set(uint64_t *w, uint64_t i) { w[i >> 6] |= (uint64_t)1 << (i & 63); }
static inline void mp__clr(uint64_t *w, uint64_t i) { w[i >> 6] &= ~((uint64_t)1 << (i & 63)); }

/* log.c */
int mp__log_start(mp_core *c);
int mp__log_run(mp_core *c, unsigned kind, uint64_t page);
int mp__log_slot(mp_core *c, uint64_t slot, uint64_t page, uint32_t crc);
int mp__dirty(mp_core *c, int tree, uint64_t leaf);
int mp__tree_room(mp_core *c, mp_tree *t, unsigned level, uint64_t count);
void mp__tree_release(mp_tree *t);
/* Each log entry in turn: kind, then (first page, count), (slot, page, crc) or (generation).
 * Returns the next position, 0 at the end, or -1 for a malformed word. */
int64_t mp__log_next(const unsigned char *log, uint64_t len, uint64_t pos, unsigned *kind, uint64_t v[3]);
/* A non-empty log begins with a GEN word; GEN values rise within (checkpoint, generation],
 * the last being the generation. */
int mp__log_generations(const unsigned char *log, uint64_t len, uint64_t checkpoint, uint64_t gen);

/* directory.c */
int mp__slot_room(mp_core *c, uint64_t count);
int mp__release_slot(mp_core *c, uint64_t slot);
uint32_t mp__zero_crc(uint32_t page_size);

/* pending.c */
int mp__pin(mp_core *c, uint64_t gen);
void mp__unpin(mp_core *c, uint64_t gen);
int mp__hold(mp_core *c, uint64_t page, uint64_t gen);
uint64_t mp__horizon(mp_core *c);
int mp__release_pending(mp_core *c);
void mp__table_free(mp_table *t);

/* tree.c: reading blocks named by pointers */
enum { MP_TREE_BITMAP = 0, MP_TREE_DIR = 1 };
/* Validate the block `p` names at (level, index) of a tree of `tree`'s kind, in a mapping of
 * `len` bytes; returns the block or NULL (with a message in msg). */
const unsigned char *mp__block(const unsigned char *map, uint64_t len, const mp_geometry *g, int tree,
                               mp_ptr p, unsigned level, uint64_t index, uint64_t n, uint64_t checkpoint,
                               char *msg, size_t msg_len);
int mp__tree_error(int tree);

/* checkpoint.c, commit.c */
int mp__checkpoint(mp_core *c);
int mp__commit(mp_core *c);
int mp__step(mp_core *c, int step);
int mp__sync_range(mp_core *c, uint64_t lo, uint64_t hi);
int mp__autocommit(mp_core *c);

/* What page 0 says (format.Header in Python): page size, records, file id, reserved pages. */
typedef struct {
    uint64_t size;
    uint32_t page_size, version;
    uint64_t records[2];
    unsigned char file_id[16];
    uint64_t reserved[5];
    unsigned nreserved;
} header;
/* Read page 0: 0, MP_E_VERSION1, an MP_E_* error (message in msg), or -1000 - errno. */
int mp__header(int fd, uint32_t wanted, header *h, char *msg, size_t msg_len);

/* record.c */
/* Whether a record slot is well formed: 1; 0 when not (why not, in why); -1 when its
 * checksums match but its fields are impossible, which no crash or random damage leaves. */
int mp__record_valid(const unsigned char *x, const mp_geometry *g, uint64_t file_size, const char **why);
/* Pick the record in force: records[i] are the two slots' bytes, `read` gives page bytes.
 * MP_E_TRUNCATED: the newest record's page count does not fit the file. */
#define MP_E_TRUNCATED (-100)
typedef int (*mp_read_fn)(void *ctx, unsigned char *buf, uint64_t len, uint64_t off);
int mp__in_force(const unsigned char *records[2], const mp_geometry *g, uint64_t file_size, mp_read_fn read,
                 void *ctx, int order[2], int *good, int *passed);

/* The file's length, without asking for its times: on file systems with fine-grained
   timestamps (Linux 6.13 and later), a stat by a reader makes the writer's next change of the
   file stamp a new modification time, which costs its next sync one more write. */
static inline int mp__file_size(int fd, uint64_t *size) {
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0) return -1;
    *size = (uint64_t)end;
    return 0;
}

#endif
