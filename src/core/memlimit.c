/*
 * memlimit.c - available memory and the cgroup memory limit (memlimit.h),
 * read from /proc/meminfo, /proc/self/cgroup and the cgroup files.
 */
#include "memlimit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The integer after "key" and the separator sep on a line of a
 * "key<sep> value" file (/proc/meminfo: ':'; cgroup memory.stat: ' ');
 * -1 if absent. */
static int64_t file_key(const char *path, const char *key, char sep) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    int64_t v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == sep) {
            v = strtoll(line + kl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* "Key:   N kB" of /proc/meminfo, in bytes; -1 if absent. */
static int64_t meminfo(const char *key) {
    int64_t kib = file_key("/proc/meminfo", key, ':');
    return kib < 0 ? -1 : kib * 1024;
}

/* First integer in a file; -1 if unreadable or "max". */
static int64_t read_i64(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[64] = { 0 };
    int64_t v = -1;
    if (fgets(buf, sizeof buf, f) && buf[0] >= '0' && buf[0] <= '9') v = strtoll(buf, NULL, 10);
    fclose(f);
    return v;
}

/* The cgroup folder holding this process's memory controller (v2 unified
 * hierarchy or v1 "memory"), and whether it is v2. 0 on success. */
static int cgroup_dir(char *out, size_t n, int *v2) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return -1;
    char line[1024];
    char v1path[768] = "", v2path[768] = "";
    int have1 = 0, have2 = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c1 = *c2 = 0;
        const char *path = c2 + 1;
        if (!strcmp(line, "0") && !c1[1]) { snprintf(v2path, sizeof v2path, "%s", path); have2 = 1; }
        char *save = NULL;
        for (char *t = strtok_r(c1 + 1, ",", &save); t; t = strtok_r(NULL, ",", &save))
            if (!strcmp(t, "memory")) { snprintf(v1path, sizeof v1path, "%s", path); have1 = 1; }
    }
    fclose(f);
    if (have1) {
        *v2 = 0;
        snprintf(out, n, "/sys/fs/cgroup/memory%s", v1path);
        return 0;
    }
    if (have2) {
        *v2 = 1;
        snprintf(out, n, "/sys/fs/cgroup%s", v2path);
        return 0;
    }
    return -1;
}

/* limit and usage (bytes, usage net of inactive file cache) of our cgroup */
static int cgroup_numbers(int64_t *limit, int64_t *used) {
    char dir[1024], p[1100];
    int v2 = 0;
    if (cgroup_dir(dir, sizeof dir, &v2)) return -1;
    int64_t total = meminfo("MemTotal");
    snprintf(p, sizeof p, v2 ? "%s/memory.max" : "%s/memory.limit_in_bytes", dir);
    *limit = read_i64(p);
    if (*limit <= 0 || (total > 0 && *limit >= total)) return -1;
    snprintf(p, sizeof p, v2 ? "%s/memory.current" : "%s/memory.usage_in_bytes", dir);
    int64_t u = read_i64(p);
    snprintf(p, sizeof p, "%s/memory.stat", dir);
    int64_t cache = file_key(p, v2 ? "inactive_file" : "total_inactive_file", ' ');
    *used = u < 0 ? 0 : u - (cache > 0 && cache < u ? cache : 0);
    return 0;
}

int64_t ds_mem_cgroup_limit(void) {
    int64_t limit, used;
    return cgroup_numbers(&limit, &used) ? -1 : limit;
}

int64_t ds_mem_budget(void) {
    int64_t avail = meminfo("MemAvailable"), limit, used;
    if (!cgroup_numbers(&limit, &used)) {
        int64_t room = limit > used ? limit - used : 0;
        if (avail < 0 || room < avail) avail = room;
    }
    return avail;
}
