/*
 * web.c - the embedded web chat (see web.h). The files in web/ are pulled
 * into .rodata by the assembler's .incbin at build time (paths relative to
 * the project root, where make runs; the Makefile makes this object depend
 * on them), so the binary needs no files at run time and there is no
 * build step for the web page itself.
 */
#include "web.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define INCBIN(sym, file)                                                                      \
    __asm__(".section .rodata\n"                                                               \
            ".balign 16\n"                                                                     \
            ".global " #sym "_start\n" #sym "_start:\n"                                        \
            ".incbin \"" file "\"\n"                                                           \
            ".global " #sym "_end\n" #sym "_end:\n"                                            \
            ".byte 0\n"                                                                        \
            ".previous\n");                                                                    \
    extern const unsigned char sym##_start[], sym##_end[];

INCBIN(ds_web_index, "web/index.html")
INCBIN(ds_web_app, "web/app.js")
INCBIN(ds_web_style, "web/style.css")

static srv_asset k_assets[3];

const srv_asset *srv_web_find(const char *path) {
    if (!k_assets[0].path) { /* filled on first use: the symbols are link-time addresses */
        k_assets[0] = (srv_asset){ "/index.html", ds_web_index_start, (size_t)(ds_web_index_end - ds_web_index_start),
                                   "text/html; charset=utf-8" };
        k_assets[1] = (srv_asset){ "/app.js", ds_web_app_start, (size_t)(ds_web_app_end - ds_web_app_start),
                                   "text/javascript; charset=utf-8" };
        k_assets[2] = (srv_asset){ "/style.css", ds_web_style_start, (size_t)(ds_web_style_end - ds_web_style_start),
                                   "text/css; charset=utf-8" };
    }
    if (!strcmp(path, "/")) path = "/index.html";
    for (size_t i = 0; i < sizeof k_assets / sizeof k_assets[0]; i++)
        if (!strcmp(path, k_assets[i].path)) return &k_assets[i];
    return NULL;
}

int srv_web_vendor_path(const char *js_dir, const char *url, char *out, size_t cap, const char **content_type) {
    static const char *const libs[] = { "marked/", "highlight.js/", "katex/" };
    if (!js_dir || strncmp(url, "/vendor/", 8)) return 0;
    const char *rel = url + 8;
    int ok_lib = 0;
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) ok_lib |= !strncmp(rel, libs[i], strlen(libs[i]));
    if (!ok_lib || strstr(rel, "..") || strstr(rel, "//")) return 0;
    for (const char *p = rel; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == '_' || c == '/'))
            return 0;
    }
    const char *dot = strrchr(rel, '.');
    if (!dot) return 0;
    if (!strcmp(dot, ".js")) *content_type = "text/javascript; charset=utf-8";
    else if (!strcmp(dot, ".css")) *content_type = "text/css; charset=utf-8";
    else if (!strcmp(dot, ".woff2")) *content_type = "font/woff2";
    else if (!strcmp(dot, ".woff")) *content_type = "font/woff";
    else if (!strcmp(dot, ".ttf")) *content_type = "font/ttf";
    else return 0;
    if ((size_t)snprintf(out, cap, "%s/%s", js_dir, rel) >= cap) return 0;
    struct stat sb;
    return stat(out, &sb) == 0 && S_ISREG(sb.st_mode);
}
