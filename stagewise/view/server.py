"""The view's HTTP side (aiohttp): three static files and a small JSON API over the index.

Nothing outside the run folder is served except the images the rows name: /api/image takes an item,
never a path, and answers only with a file that row names whose suffix is an image's, links followed
(rows name images wherever ITEMS.jsonl keeps them, so the file may lie outside the folder, but a link
named x.png to a non-image is refused). The page fetches
nothing from elsewhere, so it works offline. Requests whose Host is not this server's are refused (a
web page elsewhere cannot read a run through DNS rebinding).

API (JSON):
  GET /api/run                       the folder, per graph: items, ok, errors by cause, calls, tokens,
                                     cost, wall time, summary.json, report.json's figures
  GET /api/items?graph=&status=ok|error&correct=1|0|none&cause=&stage=&q=&right=G&wrong=G
                 &sort=id|cost|latency|calls|tokens&order=asc|desc&page=1&per_page=50
                                     one page of items (right/wrong: items graph G got right / wrong)
  GET /api/item?id=&graph=           one item in each graph (or one): its row and its tree
  GET /api/image?id=&graph=          the image the item's row names
"""
from __future__ import annotations

import asyncio
import mimetypes
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from stagewise.view.folder import RunFolder
from stagewise.view.index import Index
from stagewise.view.tree import item_tree

STATIC = {"/": ("index.html", "text/html"), "/static/app.js": ("app.js", "text/javascript"),
          "/static/style.css": ("style.css", "text/css")}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
INDEX_KEY = web.AppKey("index", Index)
HOSTS_KEY = web.AppKey("hosts", set)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json")


def _static_text(name: str) -> bytes:
    return resources.files("stagewise.view").joinpath("static", name).read_bytes()


async def _static(request: web.Request) -> web.Response:
    name, content_type = STATIC[request.path]
    return web.Response(body=_static_text(name), content_type=content_type, headers={"Cache-Control": "no-cache"})


async def _fresh(request: web.Request) -> Index:
    """The index, caught up with whatever the run appended since the last request."""
    index = request.app[INDEX_KEY]
    await asyncio.to_thread(index.refresh)
    return index


def _graph_param(index: Index, request: web.Request, required: bool = False) -> str | None:
    graph = request.query.get("graph") or None
    if graph is not None and graph not in index.folder.graphs:
        raise web.HTTPNotFound(text=f"no graph {graph!r} in this folder")
    if graph is None and required:
        if len(index.folder.graphs) != 1:
            raise web.HTTPBadRequest(text="graph= is required in a compare folder")
        graph = next(iter(index.folder.graphs))
    return graph


async def run_info(request: web.Request) -> web.Response:
    index = await _fresh(request)
    folder: RunFolder = index.folder
    overview = await asyncio.to_thread(index.overview)
    report = folder.report()
    graphs = []
    for name, figures in overview["graphs"].items():
        summary = folder.summary(name)
        graphs.append({"graph": name, **figures, "wall_s": summary.get("wall_s"), "model": summary.get("model"),
                       "judge_model": summary.get("judge_model"), "summary": summary, "report": report.get(name)})
    return _json({"root": str(folder.root), "compare": folder.compare, "graph_names": list(folder.graphs),
                  "graphs": graphs, "stages": overview["stages"], "causes": overview["causes"]})


async def list_items(request: web.Request) -> web.Response:
    index = await _fresh(request)
    params = dict(request.query)
    for key in ("graph", "right", "wrong"):
        if params.get(key) and params[key] not in index.folder.graphs:
            raise web.HTTPNotFound(text=f"no graph {params[key]!r} in this folder")
    try:
        return _json(await asyncio.to_thread(index.list_items, params))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


def _item_in(index: Index, graph: str, item_id: str) -> dict[str, Any]:
    row = index.row(graph, item_id)
    return {"graph": graph, "row": row, "tree": item_tree(index.events(graph, item_id), row)}


async def item(request: web.Request) -> web.Response:
    index = await _fresh(request)
    item_id = request.query.get("id")
    if not item_id:
        raise web.HTTPBadRequest(text="id= is required")
    only = _graph_param(index, request)
    found = [g for g in await asyncio.to_thread(index.graphs_of, item_id) if only in (None, g)]
    if not found:
        raise web.HTTPNotFound(text=f"no item {item_id!r}" + (f" in {only}" if only else ""))
    views = await asyncio.to_thread(lambda: [_item_in(index, g, item_id) for g in found])
    return _json({"id": item_id, "graphs": views, "graph_names": list(index.folder.graphs)})


async def image(request: web.Request) -> web.StreamResponse:
    index = await _fresh(request)
    graph = _graph_param(index, request, required=True)
    row = await asyncio.to_thread(index.row, graph, request.query.get("id", ""))
    named = (row or {}).get("image")
    if not isinstance(named, str) or "://" in named or named.startswith("data:"):
        raise web.HTTPNotFound(text="this item names no local image")
    path = Path(named)
    if not path.is_absolute():  # rows written before paths were made absolute: relative to the run folder
        path = index.folder.graphs[graph] / path
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise web.HTTPForbidden(text="the item's image is not an image file")
    try:  # the file actually served: a link named x.png may point at any file
        path = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise web.HTTPNotFound(text="the item's image file is missing") from None
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise web.HTTPForbidden(text="the item's image is a link to something not an image file")
    if not path.is_file():
        raise web.HTTPNotFound(text="the item's image file is missing")
    return web.FileResponse(path, headers={"Content-Type": mimetypes.guess_type(path.name)[0] or "image/png"})


@web.middleware
async def _local_only(request: web.Request, handler):
    """Refuse a Host this server was not asked for (DNS rebinding)."""
    hosts = request.app[HOSTS_KEY]
    if hosts and request.host.rsplit(":", 1)[0].strip("[]") not in hosts:
        raise web.HTTPForbidden(text="unexpected Host header")
    return await handler(request)


def make_app(index: Index, host: str = "127.0.0.1") -> web.Application:
    app = web.Application(middlewares=[_local_only])
    app[INDEX_KEY] = index
    everywhere = host in ("0.0.0.0", "::", "")  # asked to listen on every interface: any Host is expected
    app[HOSTS_KEY] = set() if everywhere else {host, "127.0.0.1", "localhost", "::1"}
    for path in STATIC:
        app.router.add_get(path, _static)
    app.router.add_get("/api/run", run_info)
    app.router.add_get("/api/items", list_items)
    app.router.add_get("/api/item", item)
    app.router.add_get("/api/image", image)
    return app
