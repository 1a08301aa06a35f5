"""`stagewise view DIR`: read a run folder or a compare folder in the browser.

Serves a local page (127.0.0.1 by default) over an index of DIR built once and caught up as the run
grows: the run's figures, its items filtered and sorted, and each item's whole tree — every stage's
candidates, the verdicts that chose among them, every call. Nothing is fetched from elsewhere.

Nothing heavy is imported here: the CLI imports this module for every command.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engine.errors import UsageError


def _check_address(host: str, port: int) -> None:
    """Refused before anything is written: an empty host would listen on every interface, and a port out
    of range only fails at bind, after the index is built."""
    if not host.strip():
        raise UsageError("--host is empty: pass an address to listen on, e.g. 127.0.0.1 (0.0.0.0: every interface)")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0..65535 (0: any free port), not {port}")


def handler(args: argparse.Namespace) -> int:
    import asyncio
    import socket

    from aiohttp import web

    from stagewise.view.folder import RESULTS, NotARun, open_folder
    from stagewise.view.index import INDEX_NAME, open_index
    from stagewise.view.server import make_app

    _check_address(args.host, args.port)
    if Path(args.dir).expanduser().is_file():
        raise UsageError(f"{args.dir} is a file, not a run folder: pass the folder that holds {RESULTS}")
    try:
        folder = open_folder(Path(args.dir))
    except NotARun as exc:
        raise UsageError(str(exc)) from None
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    try:  # before the index, so an address that cannot be had writes nothing
        sock = socket.create_server((args.host, args.port))
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"cannot listen on {shown_host}:{args.port} ({getattr(exc, 'strerror', None) or exc}); "
                         "pass another --host or --port") from None
    t0 = time.time()
    try:
        index = open_index(folder)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot write the index {folder.root / INDEX_NAME}: {exc.strerror or exc}") from None
    counts = index.overview()["graphs"]
    print(f"stagewise view: {sum(g['items'] for g in counts.values())} items in {len(counts)} graph(s) "
          f"({', '.join(counts)}), indexed in {time.time() - t0:.1f} s ({folder.root / INDEX_NAME})",
          file=sys.stderr, flush=True)
    port = sock.getsockname()[1]
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else shown_host}:{port}/"
    print(f"stagewise view: {url}  (Ctrl-C stops)", flush=True)
    if not args.no_browser:
        import webbrowser

        webbrowser.open(url)

    async def serve() -> None:
        runner = web.AppRunner(make_app(index, args.host), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    finally:
        index.close()
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("view", help="read a run or compare folder in the browser (a local page)",
                              description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("dir", help="a run folder (DIR/results.jsonl) or a compare folder (DIR/<graph>/results.jsonl)")
    p.add_argument("--port", type=int, default=8300, help="port to listen on (0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--no-browser", action="store_true", help="print the address, do not open a browser")
    p.set_defaults(func=handler)
