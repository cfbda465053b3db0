"""``hndsr:superresolve``: send a raster layer to an HNDSR service and write the larger raster it answers.

A raster within the service's synchronous limits (its ``/ui/config.json``) goes to ``POST /upscale``; a larger one,
or one ``/upscale`` refuses as too large or too slow, runs as a scene job (``POST /jobs``): the job's tiles drive
the progress bar, the result is downloaded by byte ranges, and the job is deleted on the service however the run
ends (done, failed, cancelled). The upload is sent from memory (QGIS 3.22's blocking request takes a byte array).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterAuthConfig,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProviderRegistry,
    QgsRasterFileWriter,
    QgsRasterLayer,
)
from qgis.PyQt.QtGui import QIcon

from . import settings
from .service import Reply, Service, ServiceError, api_key

MODELS = ("bicubic", "real")
# The service's own formats: anything else (JPEG 2000, VRT, NetCDF…) is sent as a GeoTIFF written by GDAL.
SENT_AS_IS = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".webp"}
POLL_S = 1.0
DOWNLOAD_CHUNK = 8 * 1024 * 1024


class ModelParameter(QgsProcessingParameterEnum):
    """MODEL as a drop-down in the dialog, and by its name (``MODEL=real``) or index from ``qgis_process`` and
    scripts: QGIS 3.22's enums take indexes only."""

    def __init__(self, name: str = "MODEL", description: str = "Model") -> None:
        super().__init__(name, description, list(MODELS), defaultValue=0)

    def clone(self) -> ModelParameter:
        copy = ModelParameter(self.name(), self.description())
        copy.setFlags(self.flags())
        return copy

    def checkValueIsAcceptable(self, value: Any, context: QgsProcessingContext | None = None) -> bool:  # noqa: N802
        return value in MODELS or super().checkValueIsAcceptable(value, context)

    @staticmethod
    def chosen(value: Any) -> str:
        """The model a run asked for: a name, or an index into :data:`MODELS`; the default when unset."""
        if value in MODELS:
            return str(value)
        return MODELS[int(value)] if value not in (None, "") else MODELS[0]


class SuperResolveAlgorithm(QgsProcessingAlgorithm):
    def name(self) -> str:
        return "superresolve"

    def displayName(self) -> str:  # noqa: N802 (QGIS's names)
        return "Super-resolve raster"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Sends the raster to an HNDSR service and writes the result: SCALE times more pixels each way, in "
                "the input's CRS and bounds, with its data type, bands and nodata. Rasters beyond the service's "
                "synchronous limits run as a scene job (progress by tiles; Cancel deletes the job).\n\n"
                "BANDS picks three bands of a multiband raster for the model, 1-based (4,3,2 for Sentinel-2 true "
                "colour); MODEL is 'bicubic' for clean imagery or 'real' for sensor blur and noise; DDIM_STEPS > 0 "
                "adds diffusion detail (slower; SEED repeats it); UNCERTAINTY adds the model's uncertainty map as "
                "a last band. SERVICE_URL and AUTH_CONFIG default to Plugins > HNDSR > Settings; the API key is "
                "the password of a Basic authentication configuration.")

    def icon(self) -> QIcon:
        return QIcon(str(Path(__file__).with_name("icon.png")))

    def createInstance(self) -> SuperResolveAlgorithm:  # noqa: N802
        return SuperResolveAlgorithm()

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        integer = QgsProcessingParameterNumber.Integer
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input raster"))
        self.addParameter(QgsProcessingParameterNumber("SCALE", "Scale factor", integer, 4, False, 2, 8))
        self.addParameter(QgsProcessingParameterString("BANDS", "Bands for the model (1-based, e.g. 4,3,2)",
                                                       optional=True))
        self.addParameter(ModelParameter())
        self.addParameter(QgsProcessingParameterNumber("DDIM_STEPS", "Diffusion steps (0 = neural operator only)",
                                                       integer, 0, False, 0, 50))
        self.addParameter(QgsProcessingParameterNumber("SEED", "Seed (diffusion)", integer, None, True, 0))
        self.addParameter(QgsProcessingParameterBoolean("UNCERTAINTY", "Add the uncertainty map as a last band",
                                                        False))
        for advanced in (QgsProcessingParameterString("SERVICE_URL", "HNDSR service URL", settings.service_url()),
                         QgsProcessingParameterAuthConfig("AUTH_CONFIG", "Authentication (API key)",
                                                          settings.auth_config(), optional=True)):
            advanced.setFlags(advanced.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(advanced)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Super-resolved raster"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        if layer is None:
            raise QgsProcessingException("INPUT is not a raster layer")
        scale = self.parameterAsInt(parameters, "SCALE", context)
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        try:
            key = api_key(self.parameterAsString(parameters, "AUTH_CONFIG", context))
            service = Service(self.parameterAsString(parameters, "SERVICE_URL", context), key, feedback)
            with tempfile.TemporaryDirectory(prefix="hndsr-") as scratch:
                source = file_to_send(layer, Path(scratch), feedback)
                fields = self._fields(parameters, context, scale)
                result = Path(scratch) / "result.tif"
                self._super_resolve(service, source, fields, layer, scale, result, feedback)
                save_as(result, Path(output))
        except ServiceError as exc:
            raise QgsProcessingException(str(exc)) from None
        if context.willLoadLayerOnCompletion(output):
            context.layerToLoadOnCompletionDetails(output).name = f"{layer.name()} x{scale} (HNDSR)"
        return {"OUTPUT": output}

    def _fields(self, parameters: dict[str, Any], context: QgsProcessingContext, scale: int) -> dict[str, str]:
        """The form fields of ``/upscale`` and ``/jobs``; the service checks each one and says what is wrong."""
        fields = {"scale_factor": str(scale), "output_format": "tiff",
                  "model": ModelParameter.chosen(parameters.get("MODEL")),
                  "ddim_steps": str(self.parameterAsInt(parameters, "DDIM_STEPS", context))}
        bands = self.parameterAsString(parameters, "BANDS", context).strip()
        if bands:
            fields["bands"] = bands
        if parameters.get("SEED") not in (None, ""):
            fields["seed"] = str(self.parameterAsInt(parameters, "SEED", context))
        if self.parameterAsBoolean(parameters, "UNCERTAINTY", context):
            fields["return_uncertainty"] = "true"
        return fields

    def _super_resolve(self, service: Service, source: Path, fields: dict[str, str], layer: QgsRasterLayer,
                       scale: int, result: Path, feedback: QgsProcessingFeedback) -> None:
        limits = service.get("/ui/config.json").json()
        size, pixels = source.stat().st_size, layer.width() * layer.height()
        beyond = beyond_sync_limits(limits, size, pixels, scale)
        if beyond is None:
            feedback.pushInfo(f"{layer.width()} x {layer.height()} px: POST /upscale")
            try:
                reply = service.post_form("/upscale", fields, source.name, source.read_bytes())
            except ServiceError as exc:  # too large or too slow for a synchronous request: as the web page does
                if exc.status != 413 and exc.code != "inference_timeout":
                    raise
                beyond = f"/upscale refused it ({exc})"
            else:
                result.write_bytes(reply.body)
                feedback.setProgress(100)
                feedback.pushInfo(f"done in {reply.headers.get('x-hndsr-latency-ms', '?')} ms on the service")
                return
        feedback.pushInfo(f"{beyond}: running it as a scene job")
        run_job(service, source, fields, limits, result, feedback)


def beyond_sync_limits(limits: dict[str, Any], size: int, pixels: int, scale: int) -> str | None:
    """Why the raster cannot go to ``/upscale`` (None when it can), by the service's own limits."""
    if size > limits["max_payload_bytes"]:
        return f"the file ({size / 2**20:.1f} MiB) is over the synchronous limit"
    if pixels > limits["max_image_pixels"]:
        return f"{pixels:,} input pixels are over the synchronous limit of {limits['max_image_pixels']:,}"
    if pixels * scale * scale > limits["max_output_pixels"]:
        return f"{pixels * scale * scale:,} output pixels are over the synchronous limit"
    return None


def run_job(service: Service, source: Path, fields: dict[str, str], limits: dict[str, Any], result: Path,
            feedback: QgsProcessingFeedback) -> None:
    """Submit, follow the tiles on the progress bar, download; the job is deleted on the service in every case."""
    most = limits.get("max_job_upload_bytes")
    if most and source.stat().st_size > most:
        raise ServiceError(f"the file ({source.stat().st_size / 2**20:.0f} MiB) is over the service's job upload "
                           f"limit ({most / 2**20:.0f} MiB, MAX_JOB_UPLOAD_MB)")
    job = service.post_form("/jobs", fields, source.name, source.read_bytes()).json()
    job_path = f"/jobs/{job['job_id']}"
    feedback.pushInfo(f"job {job['job_id']} submitted ({service.url}{job_path})")
    cancelled = ServiceError(f"cancelled: job {job['job_id']} deleted on the service")
    try:
        status = follow(service, job_path, feedback)
        if feedback.isCanceled():
            raise cancelled
        if status["status"] != "succeeded":
            raise ServiceError(f"job {job['job_id']} {status['status']}: {status.get('error') or 'no reason given'}")
        download(service, f"{job_path}/result", result, feedback)
    except ServiceError:
        if feedback.isCanceled():  # a transfer cut short by the cancel says so, not "connection closed"
            raise cancelled from None
        raise
    finally:  # done, failed, cancelled or cut off: the job's files go from the service's disk either way
        with contextlib.suppress(ServiceError):
            service.delete(job_path)
    feedback.pushInfo(f"job {job['job_id']} done, result downloaded and the job deleted")


def follow(service: Service, job_path: str, feedback: QgsProcessingFeedback) -> dict[str, Any]:
    """Poll the job until it ends (or the user cancels), its tiles done shown as progress."""
    while True:
        status = service.get(job_path).json()
        progress = status.get("progress") or {}
        feedback.setProgress(100 * float(progress.get("fraction") or 0))
        if status["status"] in ("succeeded", "failed", "cancelled") or feedback.isCanceled():
            return status
        deadline = time.monotonic() + POLL_S
        while time.monotonic() < deadline and not feedback.isCanceled():
            time.sleep(0.1)


def download(service: Service, path: str, dest: Path, feedback: QgsProcessingFeedback) -> None:
    """The result by byte ranges of 8 MiB, appended to ``dest``: memory stays bounded for any size."""
    with dest.open("wb") as out:
        while True:
            start = out.tell()
            reply = service.get_range(path, start, start + DOWNLOAD_CHUNK - 1)
            out.write(reply.body)
            total = content_length(reply)
            if total is None or out.tell() >= total or not reply.body:
                return
            if feedback.isCanceled():
                raise ServiceError("cancelled during the download")


def content_length(reply: Reply) -> int | None:
    """The whole file's size from a 206's ``Content-Range: bytes A-B/TOTAL``; None for a whole-file 200."""
    if reply.status != 206:
        return None
    return int(reply.headers["content-range"].rsplit("/", 1)[1])


def file_to_send(layer: QgsRasterLayer, scratch: Path, feedback: QgsProcessingFeedback) -> Path:
    """The layer's own file when the service reads its format, else a GeoTIFF copy written by GDAL."""
    if layer.providerType() != "gdal":
        raise ServiceError(f"the layer {layer.name()!r} comes from the {layer.providerType()} provider; HNDSR "
                           "super-resolves raster files: save it as a GeoTIFF first (Export > Save As)")
    path = QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path", "")
    if os.path.isfile(path) and Path(path).suffix.lower() in SENT_AS_IS:
        return Path(path)
    from osgeo import gdal  # QGIS's own GDAL

    copy = scratch / "input.tif"
    feedback.pushInfo(f"{Path(path).name or layer.source()} is sent as a GeoTIFF copy")
    if gdal.Translate(str(copy), layer.source(), format="GTiff", creationOptions=["COMPRESS=DEFLATE", "TILED=YES"]) \
            is None:
        raise ServiceError(f"GDAL cannot read {layer.source()!r}: {gdal.GetLastErrorMsg()}")
    return copy


def save_as(result: Path, output: Path) -> None:
    """The GeoTIFF as OUTPUT: moved there for a .tif, else converted by GDAL to the format of its extension."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() in (".tif", ".tiff"):
        shutil.move(str(result), str(output))
        return
    from osgeo import gdal

    driver = QgsRasterFileWriter.driverForExtension(output.suffix) or "GTiff"
    if gdal.Translate(str(output), str(result), format=driver) is None:
        raise ServiceError(f"GDAL cannot write {output} as {driver}: {gdal.GetLastErrorMsg()}")

