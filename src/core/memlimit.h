/*
 * memlimit.h - how much memory this process may use (memlimit.c): the
 * kernel's estimate of available memory, capped by the limit of the
 * control group the process runs in (cgroup v2 memory.max or v1
 * memory.limit_in_bytes). The loader asks before making in-memory copies
 * of weights that could instead be read from the file's mapping.
 */
#ifndef DS_MEMLIMIT_H
#define DS_MEMLIMIT_H

#include <stdint.h>

/* Bytes this process can still take without pushing the machine or its
 * cgroup into swap or the OOM killer: min(MemAvailable, cgroup limit -
 * cgroup usage not held by reclaimable file cache). -1 when unknown
 * (no /proc). */
int64_t ds_mem_budget(void);

/* The cgroup limit alone (bytes), or -1 when none is set or it is larger
 * than the machine's memory. */
int64_t ds_mem_cgroup_limit(void);

#endif
