"""Cove's built-in Studio app server, run when JupyterLab is not installed
(and no app command is configured).

It serves a small, Jupyter-shaped API under the app's base URL
(COVE_STUDIO_BASE_URL), on port COVE_STUDIO_PORT inside the app's ENI
namespace, so the app can be used and tested through Studio's proxy:

  GET  <base>lab                    a page listing the user's home directory
  GET  <base>api/status             {"app_type", "user", "started", "home"}
  GET  <base>api/contents/<path>    a directory listing or a file (Jupyter's contents shape)
  PUT  <base>api/contents/<path>    {"type": "file", "format": "text", "content": "…"} writes a file
  GET  <base>api/probe?host=H&port=P  whether a TCP connection from the app reaches H:P
  GET  <base>api/resolve?name=N     the app's DNS answer for N (the VPC resolver)

Only the standard library: it runs on the host's read-only Python.
"""

import datetime
import html
import json
import os
import socket
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BASE = os.environ.get("COVE_STUDIO_BASE_URL", "/")
PORT = int(os.environ.get("COVE_STUDIO_PORT", "8888"))
HOME = os.environ.get("HOME", "/home/sagemaker-user")
STARTED = datetime.datetime.now(datetime.timezone.utc).isoformat()


def inside_home(rel):
    path = os.path.realpath(os.path.join(HOME, rel))
    root = os.path.realpath(HOME)
    if path != root and not path.startswith(root + os.sep):
        raise PermissionError("outside the home directory")
    return path


def model(rel, path, content=True):
    stat = os.stat(path)
    modified = datetime.datetime.fromtimestamp(stat.st_mtime, datetime.timezone.utc).isoformat()
    if os.path.isdir(path):
        entries = sorted(os.listdir(path)) if content else None
        return {"name": os.path.basename(rel), "path": rel, "type": "directory", "last_modified": modified,
                "content": [model(os.path.join(rel, e), os.path.join(path, e), False) for e in entries]
                if content else None, "format": "json" if content else None}
    body = None
    if content:
        with open(path, encoding="utf-8", errors="replace") as f:
            body = f.read()
    return {"name": os.path.basename(rel), "path": rel, "type": "file", "last_modified": modified,
            "size": stat.st_size, "content": body, "format": "text" if content else None}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; without this, Nagle holds the
    # second until the client's delayed ACK (40 ms) on a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        print(f"{self.address_string()} {fmt % args}", flush=True)

    def reply(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else (
            json.dumps(body) if content_type == "application/json" else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(self):
        url = urllib.parse.urlsplit(self.path)
        if not url.path.startswith(BASE):
            return None, None
        return url.path[len(BASE):], urllib.parse.parse_qs(url.query)

    def do_GET(self):
        rest, query = self.route()
        if rest is None:
            return self.reply(404, {"message": f"not under {BASE}"})
        if rest in ("", "lab", "tree"):
            items = "".join(f"<li>{html.escape(n)}</li>" for n in sorted(os.listdir(HOME)))
            page = (f"<!DOCTYPE html><html><head><title>Cove Studio</title></head><body>"
                    f"<h1>{html.escape(os.environ.get('SAGEMAKER_APP_TYPE', 'JupyterServer'))}</h1>"
                    f"<p>Home: {html.escape(HOME)}</p><ul>{items}</ul></body></html>")
            return self.reply(200, page, "text/html")
        if rest == "api/status":
            return self.reply(200, {"app_type": os.environ.get("SAGEMAKER_APP_TYPE"), "started": STARTED,
                                    "user": os.environ.get("COVE_STUDIO_USER"), "home": HOME, "uid": os.getuid()})
        if rest.startswith("api/contents"):
            rel = urllib.parse.unquote(rest[len("api/contents"):].lstrip("/"))
            try:
                path = inside_home(rel)
                return self.reply(200, model(rel, path))
            except FileNotFoundError:
                return self.reply(404, {"message": f"No such file or directory: {rel}"})
            except PermissionError as e:
                return self.reply(403, {"message": str(e)})
        if rest == "api/probe":
            host, port = query.get("host", [""])[0], int(query.get("port", ["0"])[0])
            s = socket.socket()
            s.settimeout(float(query.get("timeout", ["2"])[0]))
            try:
                s.connect((host, port))
                return self.reply(200, {"reached": True})
            except OSError as e:
                return self.reply(200, {"reached": False, "error": str(e)})
            finally:
                s.close()
        if rest == "api/resolve":
            try:
                return self.reply(200, {"addresses": sorted({a[4][0] for a in socket.getaddrinfo(
                    query.get("name", [""])[0], 443, socket.AF_INET)})})
            except OSError as e:
                return self.reply(200, {"addresses": [], "error": str(e)})
        return self.reply(404, {"message": f"no route {rest}"})

    def do_PUT(self):
        rest, _ = self.route()
        if rest is None or not rest.startswith("api/contents/"):
            return self.reply(404, {"message": "no route"})
        rel = urllib.parse.unquote(rest[len("api/contents/"):])
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        try:
            path = inside_home(rel)
            if body.get("type") == "directory":
                os.makedirs(path, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(body.get("content", ""))
            return self.reply(201, model(rel, path, False))
        except PermissionError as e:
            return self.reply(403, {"message": str(e)})


if __name__ == "__main__":
    print(f"Cove Studio app serving {BASE} on port {PORT}, home {HOME}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
