"""mock_hub.py - a stand-in for the Hugging Face hub on 127.0.0.1 for
tests/cli_pull_tests.sh: the revision API (?blobs=true), resolve URLs that
redirect to a "CDN" path serving byte ranges, bearer-token checks for private
repositories, and fault injection.

    python3 mock_hub.py PORT_FILE REPO_SPEC...     REPO_SPEC: ORG/NAME=FOLDER[:private]

Files under FOLDER are served as the repository at revision "main" (commit =
sha1 of the names and contents); files larger than 1 KB are LFS files (sha256).
The tree API (/api/models/ORG/NAME/tree/REV, huggingface_hub's listing) too.
Resolve URLs (GET and HEAD) answer like the hub, for huggingface_hub too: a 302
with X-Repo-Commit, ETag / X-Linked-Etag (the blob id: LFS sha256 or git blob
sha1) and X-Linked-Size, to a "CDN" on a second host (127.0.0.2, another port;
localhost if that cannot be bound).
Faults (by a request to /_fault?...): cut=FILE (the next download of FILE stops
after half its bytes), corrupt=FILE (the next download serves flipped bytes),
norange=1 (ignore Range headers), slow=FILE (the next download of FILE comes in
8 pieces 0.4 s apart), stall=FILE (the next download of FILE sends half, then
nothing for 30 s). /_log lists the requests seen (server, method, path, Range,
Authorization)."""
import hashlib
import http.server
import json
import os
import sys
import threading
import time
import urllib.parse

TOKEN = "hf_test_token"
repos = {}
faults = {"cut": set(), "corrupt": set(), "slow": set(), "stall": set(), "norange": False}
cdn_base = None   # "http://HOST:PORT" of the CDN server
log = []


def load(spec):
    name, folder = spec.split("=", 1)
    private = folder.endswith(":private")
    folder = folder[:-8] if private else folder
    files = {}
    for dp, _, fns in os.walk(folder):
        for fn in sorted(fns):
            p = os.path.join(dp, fn)
            files[os.path.relpath(p, folder)] = open(p, "rb").read()
    h = hashlib.sha1()
    for k in sorted(files):
        h.update(k.encode() + files[k])
    repos[name] = {"files": files, "commit": h.hexdigest(), "private": private}


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body=b"", ctype="application/json", extra=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def authorized(self, repo):
        return not repo["private"] or self.headers.get("Authorization") == "Bearer " + TOKEN

    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(u.query)
        log.append({"server": "%s:%d" % self.server.server_address[:2], "method": self.command, "path": u.path,
                    "range": self.headers.get("Range"), "auth": self.headers.get("Authorization")})
        parts = [urllib.parse.unquote(p) for p in u.path.split("/")[1:]]
        if u.path == "/_fault":
            for f in q.get("cut", []):
                faults["cut"].add(f)
            for k in ("corrupt", "slow", "stall"):
                for f in q.get(k, []):
                    faults[k].add(f)
            if "norange" in q:
                faults["norange"] = q["norange"][0] == "1"
            return self.send(200, b"{}")
        if u.path == "/_log":
            return self.send(200, json.dumps(log).encode())
        if len(parts) >= 6 and parts[0] == "api" and parts[1] == "models" and parts[4] == "revision":
            name = parts[2] + "/" + parts[3]
            repo = repos.get(name)
            if not repo or not self.authorized(repo):
                return self.send(401 if repo else 404, b'{"error":"Repository not found"}')
            if parts[5] not in ("main", repo["commit"]):
                return self.send(404, b'{"error":"Revision not found"}')
            sib = []
            for fn, data in sorted(repo["files"].items()):
                blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                s = {"rfilename": fn, "blobId": blob, "size": len(data)}
                if len(data) > 1024:
                    s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                sib.append(s)
            return self.send(200, json.dumps({"id": name, "sha": repo["commit"], "siblings": sib}).encode())
        if len(parts) >= 6 and parts[0] == "api" and parts[1] == "models" and parts[4] == "tree":
            # huggingface_hub's listing (snapshot_download): one page, files and folders
            name = parts[2] + "/" + parts[3]
            repo = repos.get(name)
            if not repo or not self.authorized(repo):
                return self.send(401 if repo else 404, b'{"error":"Repository not found"}')
            if parts[5] not in ("main", repo["commit"]):
                return self.send(404, b'{"error":"Revision not found"}')
            out, dirs = [], set()
            for fn, data in sorted(repo["files"].items()):
                d = os.path.dirname(fn)
                while d and d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d})
                    d = os.path.dirname(d)
                e = {"type": "file", "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
                     "size": len(data), "path": fn}
                if len(data) > 1024:
                    e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                out.append(e)
            return self.send(200, json.dumps(out).encode())
        if len(parts) >= 5 and parts[2] == "resolve":
            name = parts[0] + "/" + parts[1]
            repo = repos.get(name)
            fn = "/".join(parts[4:])
            if not repo or not self.authorized(repo):
                return self.send(401 if repo else 404, b"")
            if parts[3] not in ("main", repo["commit"]) or fn not in repo["files"]:
                return self.send(404, b"")
            # like the hub: LFS files redirect to a CDN URL (on another host, so a
            # client must not forward the token), with the headers huggingface_hub reads
            data = repo["files"][fn]
            etag = hashlib.sha256(data).hexdigest() if len(data) > 1024 else \
                hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            return self.send(302, b"", extra={"Location": "%s/cdn/%s/%s" % (cdn_base, name, fn),
                                              "X-Repo-Commit": repo["commit"], "ETag": '"%s"' % etag,
                                              "X-Linked-Etag": '"%s"' % etag, "X-Linked-Size": str(len(data))})
        if parts[0] == "cdn" and len(parts) >= 4:
            name = parts[1] + "/" + parts[2]
            fn = "/".join(parts[3:])
            if self.headers.get("Authorization"):
                return self.send(400, b"token leaked to the CDN")
            data = repos[name]["files"][fn]
            if fn in faults["corrupt"]:
                faults["corrupt"].discard(fn)
                data = bytes(b ^ 0xFF for b in data)
            start = 0
            rng = self.headers.get("Range")
            if rng and not faults["norange"]:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(data):
                    return self.send(416, b"")
            body = data[start:]
            code = 206 if start else 200
            self.send_response(code)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            if code == 206:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if fn in faults["slow"]:
                faults["slow"].discard(fn)
                k = (len(body) + 7) // 8
                for i in range(0, len(body), k):
                    self.wfile.write(body[i:i + k])
                    self.wfile.flush()
                    time.sleep(0.4)
                return
            if fn in faults["stall"]:
                faults["stall"].discard(fn)
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                time.sleep(30)
                self.close_connection = True
                return
            if fn in faults["cut"]:
                faults["cut"].discard(fn)
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)
            return
        return self.send(404, b"")

    do_HEAD = do_GET


def main():
    global cdn_base
    for s in sys.argv[2:]:
        load(s)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    try:
        cdn = http.server.ThreadingHTTPServer(("127.0.0.2", 0), H)
        cdn_base = "http://127.0.0.2:%d" % cdn.server_address[1]
    except OSError:
        cdn = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        cdn_base = "http://localhost:%d" % cdn.server_address[1]
    for s in (srv, cdn):
        s.daemon_threads = True
        threading.Thread(target=s.serve_forever, daemon=True).start()
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    threading.Event().wait()


if __name__ == "__main__":
    main()
