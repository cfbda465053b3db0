"""The STAC Item that describes each product: built with the field's libraries (``rio-stac`` reads the COG for the
geometry, bbox and the projection and raster extensions; ``pystac`` for the rest), never by hand.

Beside what rio-stac writes, an item has the processing extension (HNDSR's and the model's versions, the
lineage), the file extension on its ``data`` asset (size and SHA-256 multihash: a later run checks the COG
against them), ``hndsr:parameters`` (what a later run compares before it skips the scene) and a ``derived_from``
link to its source.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
FILE_EXTENSION = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
SHA256_MULTIHASH = "1220"  # multihash prefix: sha2-256, 32 bytes
ASSET = "data"


def product_item(cog: Path, *, item_id: str, cog_href: str, source_href: str, derived_from: str,
                 source_datetime: str | None, parameters: dict[str, Any], software: dict[str, str], size: int,
                 sha256: str) -> dict[str, Any]:
    """The item of the COG at ``cog`` (read here), whose asset will live at ``cog_href``; as a dict."""
    import pystac
    import rio_stac

    when = dt.datetime.fromisoformat(source_datetime) if source_datetime else dt.datetime.now(dt.timezone.utc)
    bands = parameters["bands"]
    diffusion = (f"{parameters['ddim_steps']} diffusion steps, seed {parameters['seed']}" if parameters["ddim_steps"]
                 else "no diffusion: deterministic")
    lineage = (f"Super-resolved x{parameters['scale']} from {source_href} by HNDSR (model {parameters['model']}, "
               f"bands {','.join(map(str, bands)) if bands else 'all'}, {diffusion})")
    item = rio_stac.create_stac_item(
        str(cog), id=item_id, input_datetime=when, asset_name=ASSET, asset_href=cog_href,
        asset_media_type=pystac.MediaType.COG, asset_roles=["data"], with_proj=True, with_raster=True,
        extensions=[PROCESSING_EXTENSION, FILE_EXTENSION],
        properties={"processing:software": software, "processing:lineage": lineage,
                    "processing:datetime": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "hndsr:parameters": parameters})
    item.assets[ASSET].extra_fields.update({"file:size": size, "file:checksum": SHA256_MULTIHASH + sha256})
    item.add_link(pystac.Link("derived_from", derived_from))
    # rio-stac writes the projection extension's v1 (proj:epsg); pystac's migration gives today's (proj:code).
    return pystac.Item.from_dict(item.to_dict(include_self_link=False), migrate=True).to_dict(include_self_link=False)


def recorded_file(item: dict[str, Any]) -> tuple[int, str] | None:
    """The COG's size and SHA-256 an item records; None when it records none."""
    fields = item.get("assets", {}).get(ASSET, {})
    checksum = str(fields.get("file:checksum", ""))
    if "file:size" not in fields or not checksum.startswith(SHA256_MULTIHASH):
        return None
    return int(fields["file:size"]), checksum[len(SHA256_MULTIHASH):]
