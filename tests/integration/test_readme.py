"""The README as an executable document: every shell and Python block runs as written, in order, against a real
server, from a folder laid out like a fresh clone beside the shared data.

A block is run unless the line before its fence says why not, as ``<!-- readme: skip (reason) -->`` (the set-up
that started this very server, deployments that other tests build, runs of many minutes). The only change to a
block is the address: ``http://127.0.0.1:8000`` becomes the test server's.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import DATA, requires_data
from tests.integration.server import ROOT, Server, serving_in

pytestmark = [pytest.mark.integration, requires_data("rsscn7", "val"), requires_data("geotiff")]

README = ROOT / "README.md"
DOCUMENTED_URL = "http://127.0.0.1:8000"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SKIP = re.compile(r"<!-- readme: skip \((.+?)\) -->\s*$")
BLOCK_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    code: str
    skip: str | None  # why it is not run


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        blocks.append(Block(text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2),
                            skip.group(1) if skip else None))
    return blocks


BLOCKS = readme_blocks(README.read_text())
RUN = [b for b in BLOCKS if b.skip is None and b.language in ("bash", "python")]


def test_every_block_is_run_or_says_why_not() -> None:
    assert all(b.language in ("bash", "python") or b.skip for b in BLOCKS if b.language), \
        [b.line for b in BLOCKS if b.language not in ("bash", "python", "") and not b.skip]
    assert len(RUN) >= 7  # the user's path through the README: curl, Python, the CLI, models, the map
    assert all(b.skip.strip() for b in BLOCKS if b.skip is not None)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like a fresh clone (the repository's files, by links) with ``../shared`` beside it."""
    root = tmp_path_factory.mktemp("readme")
    checkout = root / "hndsr"
    checkout.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git",):
            (checkout / entry.name).symlink_to(entry)
    (root / "shared").symlink_to(DATA.parent)
    return checkout


@pytest.fixture(scope="module")
def server(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving_in(tmp_path_factory.mktemp("readme_server"), {"RATE_LIMIT_PER_HOUR": "1000"}) as server:
        yield server


@pytest.mark.parametrize("block", RUN, ids=[f"line{b.line}" for b in RUN])
def test_the_block_runs_as_written(block: Block, clone: Path, server: Server) -> None:
    code = block.code.replace(DOCUMENTED_URL, server.url)
    command = ["bash", "-euo", "pipefail", "-c", code] if block.language == "bash" else [
        str(ROOT / ".venv" / "bin" / "python"), "-c", code]
    # A fresh shell: no virtual environment active, so that a bare python or hndsr in a block fails here too.
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(str(ROOT / ".venv")))
    env = {**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}, "PATH": path}
    done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert done.returncode == 0, f"README line {block.line}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
