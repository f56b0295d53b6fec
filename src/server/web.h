/*
 * web.h - the web chat's files (web/index.html, app.js, style.css), built
 * into the binary, and the optional browser libraries from the system.
 */
#ifndef DS_WEB_H
#define DS_WEB_H

#include <stddef.h>

typedef struct srv_asset {
    const char *path;          /* URL path, e.g. "/app.js" */
    const unsigned char *data;
    size_t len;
    const char *content_type;
} srv_asset;

/* The embedded file served at `path` ("/" is index.html), or NULL. */
const srv_asset *srv_web_find(const char *path);

/* Maps "/vendor/<lib>/<file>" to a file under js_dir (Debian's
 * /usr/share/javascript: marked, highlight.js, katex) after checking the
 * name (letters, digits, '.', '-', '_', '/'; no "..", known libraries
 * only). Writes the path and the content type; false if not allowed. */
int srv_web_vendor_path(const char *js_dir, const char *url, char *out, size_t cap, const char **content_type);

#endif
