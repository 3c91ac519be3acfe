/* CRC32C (Castagnoli): SSE4.2 instructions where the CPU has them, a table otherwise. */
#ifndef MAPPEDPAGES_CRC32C_H
#define MAPPEDPAGES_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC32C of data[0, len), continuing from crc (0 to start). */
uint32_t mp_crc32c(uint32_t crc, const unsigned char *data, size_t len);

/* Choose the implementation: 0 = table, 1 = hardware, -1 = best available, -2 = just ask.
 * Returns the one in use afterwards (a request for hardware on a CPU without it gets 0). */
int mp_crc32c_select(int which);

#endif
