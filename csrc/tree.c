/* Reading the two trees: a block is valid only as the pointer naming it says (docs/FORMAT.md,
 * "Blocks"). Shared by the writer's open and snapshots; _core_py/tree.py is the same in
 * Python. */
#include <stdio.h>

#include "core.h"
#include "crc32c.h"

int mp__tree_error(int tree) { return tree == MP_TREE_BITMAP ? MP_E_CORRUPT_METADATA : MP_E_CORRUPT_DIRECTORY; }

const unsigned char *mp__block(const unsigned char *map, uint64_t len, const mp_geometry *g, int tree,
                               mp_ptr p, unsigned level, uint64_t index, uint64_t n, uint64_t checkpoint,
                               char *msg, size_t msg_len) {
    const char *name = tree == MP_TREE_BITMAP ? "bitmap" : "directory";
    const char *what = level ? "node" : "leaf";
#define BAD(why)                                                                                        \
    do {                                                                                                \
        snprintf(msg, msg_len, "%s %s %llu at level %u (page %llu): %s", name, what,                    \
                 (unsigned long long)index, level, (unsigned long long)p.page, why);                   \
        return NULL;                                                                                    \
    } while (0)
    if (p.page < MP_RESERVED_PAGES || p.page >= n || (p.page + 1) * g->page_size > len) BAD("outside the file");
    const unsigned char *b = map + p.page * g->page_size;
    const char *magic = level ? (tree == MP_TREE_BITMAP ? MP_BITMAP_NODE : MP_DIR_NODE)
                              : (tree == MP_TREE_BITMAP ? MP_BITMAP_LEAF : MP_DIR_LEAF);
    if (memcmp(b, magic, 4) != 0) BAD("not a block of its kind");
    mp_block_header h;
    mp_block_decode(b, &h);
    if (h.crc != p.crc || mp_crc32c(0, b + 8, g->block - 8) != p.crc) BAD("checksum mismatch");
    if (h.location != p.page || h.key != (level ? mp_node_key(level, index) : index)) BAD("written for another place");
    if (h.generation < 1 || h.generation > checkpoint) BAD("its generation is not of this state");
    if (tree == MP_TREE_BITMAP && level == 0) {
        for (uint32_t i = MP_BLOCK_HEADER_SIZE + 3 * g->leaf_bytes; i < g->block; i++)
            if (b[i]) BAD("bytes past its bitmaps are set");
    } else {
        for (uint32_t i = 0; i < g->fanout; i++)
            if (mp_get32(b + MP_BLOCK_HEADER_SIZE + 16 * i + 12)) BAD("reserved bytes are set");
    }
#undef BAD
    return b;
}
