"""What a batch reads: the SOURCE arguments of ``hndsr batch`` resolved into scenes.

A SOURCE is a local file, folder or glob; an ``s3://`` object, prefix or glob; an ``https://`` URL of a COG; or a
STAC Item or ItemCollection (a ``.json`` path, object or URL) whose asset KEY is the raster (default ``visual``,
else the item's first GeoTIFF asset). A folder, prefix or glob takes its ``.tif``/``.tiff`` files. A SOURCE that
gives nothing, or an item without the asset, is a :class:`Unusable` with its reason: it fails alone.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .locations import is_http, is_s3, read_text, s3_client, split_s3

RASTER_SUFFIXES = (".tif", ".tiff")  # what a folder, prefix or glob contributes
DEFAULT_ASSET = "visual"
GLOB_CHARS = re.compile(r"[*?\[]")
SAFE_STEM = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Scene:
    """One raster to super-resolve."""

    source: str  # what the batch names it by: the raster's URI, or the STAC item's with ``@asset`` (``#id@asset``
    # for an item of an ItemCollection)
    href: str  # the raster: a path, s3:// or https://
    stem: str  # outputs are ``<stem>_x<S>.tif`` and ``.json``
    derived_from: str  # the source STAC item's href, else the raster's
    datetime: str | None = None  # ISO 8601, from the source item


@dataclass(frozen=True)
class Unusable:
    source: str
    error: str


def resolve(arguments: list[str], asset: str | None = None) -> list[Scene | Unusable]:
    """Every SOURCE's scenes, in order; a later scene with an output name already taken is :class:`Unusable`."""
    found: list[Scene | Unusable] = []
    for argument in arguments:
        try:
            found.extend(_resolve_one(argument, asset))
        except Exception as exc:  # noqa: BLE001 (an unreadable listing or item fails that SOURCE alone)
            found.append(Unusable(argument, f"cannot read it: {exc}"))
    taken: dict[str, str] = {}
    unique: list[Scene | Unusable] = []
    for scene in dict.fromkeys(found):  # a raster named twice (a.tif and *.tif) is one input
        if isinstance(scene, Scene):
            if scene.stem in taken:
                scene = Unusable(scene.source, f"its output name {scene.stem!r} is already {taken[scene.stem]}'s")
            else:
                taken[scene.stem] = scene.source
        unique.append(scene)
    return unique


def _resolve_one(argument: str, asset: str | None) -> list[Scene | Unusable]:
    if argument.lower().endswith(".json"):
        return stac_scenes(argument, asset)
    if is_http(argument):
        return [raster_scene(argument)]
    uris = s3_rasters(argument) if is_s3(argument) else local_rasters(argument)
    if not uris:
        return [Unusable(argument, "no such file, or no .tif/.tiff in it")]
    return [raster_scene(uri) for uri in uris]


def raster_scene(uri: str) -> Scene:
    return Scene(source=uri, href=uri, stem=stem_of(PurePosixPath(uri.split("?")[0]).stem), derived_from=uri)


def stem_of(name: str) -> str:
    return SAFE_STEM.sub("_", name).strip("._") or "scene"


def is_raster_name(name: str) -> bool:
    return name.lower().endswith(RASTER_SUFFIXES)


def local_rasters(argument: str) -> list[str]:
    """Absolute paths: items link to them and batch.json names them wherever the next run starts."""
    if GLOB_CHARS.search(argument):
        found = [Path(p) for p in glob.glob(argument, recursive=True) if Path(p).is_file() and is_raster_name(p)]
    elif Path(argument).is_dir():
        found = [p for p in Path(argument).rglob("*") if p.is_file() and is_raster_name(p.name)]
    else:
        found = [Path(argument)] if Path(argument).is_file() else []
    return sorted(str(path.absolute()) for path in found)


def s3_rasters(argument: str) -> list[str]:
    """An object; or the rasters under a prefix (``s3://b/scenes/``) or matching a glob (``s3://b/scenes/*.tif``)."""
    bucket, key = split_s3(argument)
    pattern = key if GLOB_CHARS.search(key) else None
    prefix = GLOB_CHARS.split(key, 1)[0] if pattern else key
    keys = _list_keys(bucket, prefix)
    if pattern:
        chosen = [k for k in keys if fnmatch.fnmatchcase(k, pattern) and is_raster_name(k)]
    elif key in keys:
        chosen = [key]
    else:
        folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        chosen = [k for k in keys if k.startswith(folder) and is_raster_name(k)]
    return [f"s3://{bucket}/{k}" for k in sorted(chosen)]


def _list_keys(bucket: str, prefix: str) -> list[str]:
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def stac_scenes(uri: str, asset: str | None) -> list[Scene | Unusable]:
    """The scenes of a STAC Item or ItemCollection at ``uri``."""
    import pystac

    document = json.loads(read_text(uri))
    kind = document.get("type")
    if kind == "Feature":
        items = [pystac.Item.from_dict(document)]
    elif kind == "FeatureCollection":
        items = list(pystac.ItemCollection.from_dict(document))
    else:
        return [Unusable(uri, f"not a STAC Item or ItemCollection (type {kind!r})")]
    scenes: list[Scene | Unusable] = []
    for item in items:
        self_href = item.get_self_href() or uri
        item.set_self_href(self_href)
        source = f"{self_href}#{item.id}" if kind == "FeatureCollection" else self_href
        key = asset or _default_asset(item)
        chosen = item.assets.get(key) if key else None
        if chosen is None:
            listed = ", ".join(item.assets) or "none"
            wanted = f"no asset {key!r}" if key else "no GeoTIFF asset"
            scenes.append(Unusable(source, f"item {item.id!r} has {wanted} (its assets: {listed})"))
            continue
        when = item.datetime or item.common_metadata.start_datetime
        scenes.append(Scene(source=f"{source}@{key}", href=chosen.get_absolute_href() or chosen.href,
                            stem=stem_of(item.id), derived_from=self_href,
                            datetime=when.isoformat() if when else None))
    return scenes


def _default_asset(item: object) -> str | None:
    """``visual`` when the item has it, else its first GeoTIFF asset."""
    assets = item.assets  # type: ignore[attr-defined]
    if DEFAULT_ASSET in assets:
        return DEFAULT_ASSET
    return next((key for key, a in assets.items() if "image/tiff" in (a.media_type or "")), None)
