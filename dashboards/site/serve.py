"""`--serve`: the built site over HTTP on localhost (a free port, printed), until Ctrl-C."""

from __future__ import annotations

import functools
import http.server
from pathlib import Path


def site_server(root: Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """A server of the files under `root` on 127.0.0.1 (port 0: any free port; see `server_address`)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def serve(root: Path, port: int = 0) -> None:
    """Serve `root` and print its address; return when interrupted (Ctrl-C)."""
    server = site_server(root, port)
    host, bound = server.server_address[:2]
    print(f"serving {root} at http://{host}:{bound}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
