"""The QGIS plugin as QGIS runs it: the zip of ``scripts/build --qgis-plugin`` installed into a fresh profile of
Debian's QGIS, driven headless by ``qgis_process`` (and by QGIS's Python for Cancel) against a real server.

Debian's ``qgis_process`` wrapper passes an option the program refuses, so the tests call ``qgis_process.bin``.
The server wants an API key; the profile keeps it in QGIS's authentication database, unlocked by the master
password file ``QGIS_AUTH_PASSWORD_FILE`` names, as on a headless QGIS Server.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio

from tests.helpers import DATA, requires_data
from tests.integration.server import ROOT, Server, serving_in
from tests.rasters import smooth, write_raster

QGIS_PROCESS = shutil.which("qgis_process.bin")
QGIS_PYTHON = "/usr/bin/python3"  # Debian's python3-qgis belongs to the system's Python
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
HELPER = Path(__file__).with_name("qgis_helper.py")
API_KEY = "qgis-plugin-test-key-0123456789"
AUTHCFG, WRONG_AUTHCFG = "hndsr01", "hndsr02"  # QGIS's auth configuration ids are 7 characters
PUBLIC = DATA / "geotiff" / "public"

pytestmark = pytest.mark.skipif(QGIS_PROCESS is None, reason="QGIS is not installed (apt-get install qgis python3-qgis)")


class Qgis:
    """A fresh QGIS profile in its own HOME with the plugin installed from its zip, as "Install from ZIP" does."""

    def __init__(self, home: Path, plugin_zip: Path, server: Server) -> None:
        self.home = home
        self.profile = home / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default"
        (self.profile / "python" / "plugins").mkdir(parents=True)
        with zipfile.ZipFile(plugin_zip) as archive:
            archive.extractall(self.profile / "python" / "plugins")
        (self.profile / "QGIS").mkdir()
        # The plugin enabled, and its settings (Plugins > HNDSR > Settings writes the same keys).
        (self.profile / "QGIS" / "QGIS3.ini").write_text(
            f"[PythonPlugins]\nhndsr_qgis=true\n\n[hndsr]\nservice_url={server.url}\nauth_config={AUTHCFG}\n")
        (self.profile / "master-password").write_text("qgis master password\n")
        self.python("add-key", str(self.profile), AUTHCFG, API_KEY)
        self.python("add-key", str(self.profile), WRONG_AUTHCFG, API_KEY[::-1])

    def env(self) -> dict[str, str]:
        """QGIS's own environment: its embedded Python finds its prefix from the first ``python3`` on PATH, which
        must be the system's (the suite runs from the project's virtual environment, whose Python has no qgis)."""
        inherited = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
        return {**inherited, "PATH": SYSTEM_PATH, "HOME": str(self.home), "QT_QPA_PLATFORM": "offscreen",
                "XDG_RUNTIME_DIR": str(self.home), "QGIS_AUTH_PASSWORD_FILE": str(self.profile / "master-password")}

    def process(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(QGIS_PROCESS), *args], env=self.env(), capture_output=True, text=True,
                              timeout=timeout, cwd=self.home)

    def superresolve(self, **parameters: object) -> subprocess.CompletedProcess[str]:
        return self.process("run", "hndsr:superresolve", "--", *(f"{k}={v}" for k, v in parameters.items()))

    def python(self, *args: str) -> str:
        done = subprocess.run([QGIS_PYTHON, str(HELPER), *args], env=self.env(), capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout


@pytest.fixture(scope="module")
def plugin_zip() -> Path:
    built = subprocess.run([str(ROOT / "scripts" / "build"), "--qgis-plugin"], capture_output=True, text=True,
                           check=True, timeout=600)
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A low synchronous limit, so that a 512 x 512 raster goes to the jobs API while a small one stays synchronous.
    env = {"API_KEYS": API_KEY, "MAX_IMAGE_PIXELS": "100000"}
    with serving_in(tmp_path_factory.mktemp("qgis-server"), env) as srv:
        yield srv


@pytest.fixture(scope="module")
def qgis(tmp_path_factory: pytest.TempPathFactory, plugin_zip: Path, server: Server) -> Qgis:
    return Qgis(tmp_path_factory.mktemp("qgis-home"), plugin_zip, server)


def test_the_zip_is_an_installable_plugin(plugin_zip: Path) -> None:
    with zipfile.ZipFile(plugin_zip) as archive:
        names = set(archive.namelist())
        metadata = configparser.ConfigParser()
        metadata.read_string(archive.read("hndsr_qgis/metadata.txt").decode())
    general = metadata["general"]
    assert plugin_zip.name == f"hndsr_qgis-{general['version']}.zip"
    assert general["qgisMinimumVersion"] == "3.22" and general["hasProcessingProvider"] == "yes"
    for field in ("name", "description", "about", "version", "author", "license"):
        assert general[field].strip(), field
    assert {"hndsr_qgis/__init__.py", "hndsr_qgis/LICENSE", f"hndsr_qgis/{general['icon']}"} <= names
    assert all(name.startswith("hndsr_qgis/") and "__pycache__" not in name for name in names)


def test_provider_and_algorithm_are_listed_with_their_parameters(qgis: Qgis) -> None:
    listed = qgis.process("list")
    assert listed.returncode == 0, listed.stderr
    assert "HNDSR" in listed.stdout and "hndsr:superresolve\tSuper-resolve raster" in listed.stdout
    described = qgis.process("help", "hndsr:superresolve").stdout
    arguments = described.split("Arguments")[1].split("Outputs")[0]
    names = [line.split(":")[0] for line in arguments.splitlines() if line[:1].isupper()]
    assert names == ["INPUT", "SCALE", "BANDS", "MODEL", "DDIM_STEPS", "SEED", "UNCERTAINTY", "SERVICE_URL",
                     "AUTH_CONFIG", "OUTPUT"]


def test_geotiff_x2_keeps_crs_bounds_dtype_bands_and_nodata(qgis: Qgis, tmp_path: Path) -> None:
    """Synchronous (/upscale), with the URL and key from the plugin's settings: a 16-bit 4-band scene with nodata."""
    source = tmp_path / "scene.tif"
    data = smooth(120, 160, bands=4, seed=3, low=200, high=9000, dtype="uint16")
    data[:, :8, :8] = 0
    write_raster(source, data, nodata=0)
    output = tmp_path / "scene_x2.tif"
    run = qgis.superresolve(INPUT=source, SCALE=2, OUTPUT=output)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "POST /upscale" in run.stdout
    with rasterio.open(source) as before, rasterio.open(output) as after:
        assert after.crs == before.crs and after.bounds == pytest.approx(before.bounds)
        assert after.res == pytest.approx((before.res[0] / 2, before.res[1] / 2))
        assert (after.width, after.height) == (2 * before.width, 2 * before.height)
        assert after.dtypes == before.dtypes and after.count == before.count and after.nodata == before.nodata
        assert not np.any(after.read(1)[16:, 16:] == 0)  # real values outside the nodata corner


@requires_data("geotiff", "public", "image_rgb.tif")
def test_raster_past_the_sync_limit_runs_as_a_job_with_progress(qgis: Qgis, server: Server, tmp_path: Path) -> None:
    source, output = PUBLIC / "image_rgb.tif", tmp_path / "rgb_x2.tif"  # 512 x 512, over the 100,000 px limit
    run = qgis.superresolve(INPUT=source, SCALE=2, MODEL="real", OUTPUT=output)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "running it as a scene job" in run.stdout and "0...10...20" in run.stdout
    job_id = run.stdout.split("job ")[1].split()[0]
    assert httpx.get(f"{server.url}/jobs/{job_id}").status_code == 410  # downloaded, then deleted
    with rasterio.open(source) as before, rasterio.open(output) as after:
        assert after.crs == before.crs and after.bounds == pytest.approx(before.bounds)
        assert (after.width, after.count, after.dtypes) == (1024, before.count, before.dtypes)


@requires_data("geotiff", "public", "image_rgb.tif")
def test_cancel_deletes_the_job(qgis: Qgis, server: Server, tmp_path: Path) -> None:
    output = tmp_path / "cancelled.tif"
    parameters = {"INPUT": str(PUBLIC / "image_rgb.tif"), "SCALE": 4, "DDIM_STEPS": 20, "OUTPUT": str(output),
                  "SERVICE_URL": server.url, "AUTH_CONFIG": AUTHCFG}
    report = json.loads(qgis.python("cancel", str(qgis.profile), json.dumps(parameters)).splitlines()[-1])
    assert report["job_id"] and not report["ok"]
    assert any(f"cancelled: job {report['job_id']} deleted" in message for message in report["messages"])
    assert httpx.get(f"{server.url}/jobs/{report['job_id']}").status_code == 410
    assert not output.exists()


def test_unreachable_service_and_wrong_key_are_said_clearly(qgis: Qgis, server: Server, tmp_path: Path) -> None:
    source = tmp_path / "small.tif"
    write_raster(source, smooth(40, 50, bands=3, seed=1))

    def refused(output: str, **parameters: object) -> str:
        run = qgis.superresolve(INPUT=source, SCALE=2, OUTPUT=tmp_path / output, **parameters)
        assert run.returncode != 0 and not (tmp_path / output).exists()
        return run.stderr

    assert "cannot reach the HNDSR service at http://127.0.0.1:9: Connection refused" in refused(
        "a.tif", SERVICE_URL="http://127.0.0.1:9")
    for authcfg, output in (("", "b.tif"), (WRONG_AUTHCFG, "b2.tif")):
        assert "POST /upscale: 401 unauthorized: a valid API key is required" in refused(output, AUTH_CONFIG=authcfg)
    assert "the authentication configuration 'nothere' cannot be read" in refused("c.tif", AUTH_CONFIG="nothere")
    assert "422 invalid_image: bands 5,6,7 asks for band 7, but the raster has 3 bands" in refused(
        "d.tif", BANDS="5,6,7")
