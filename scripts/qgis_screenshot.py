"""The README's QGIS pictures: QGIS desktop runs hndsr:superresolve from its dialog against a running service and
the result opens as a layer. Run by QGIS itself, on a virtual screen, with the plugin installed in the profile:

    HNDSR_URL=http://127.0.0.1:8000 SHOT_INPUT=.../geotiff/public/image_rgb.tif SHOT_DIR=docs/ui \\
        xvfb-run -a -s "-screen 0 1400x900x24" qgis.bin --nologo --noversioncheck --code scripts/qgis_screenshot.py

Writes SHOT_DIR/qgis-dialog.jpg (the algorithm's log after the run) and SHOT_DIR/qgis-map.jpg (the main window
with the input and the result), then quits QGIS.
"""

import os

import processing
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

SHOT_DIR = os.environ["SHOT_DIR"]
source = QgsRasterLayer(os.environ["SHOT_INPUT"], "image_rgb")
QgsProject.instance().addMapLayer(source)
iface.mainWindow().resize(1400, 860)
dialog = processing.createAlgorithmDialog("hndsr:superresolve", {
    "INPUT": source, "SCALE": 2, "SERVICE_URL": os.environ["HNDSR_URL"], "OUTPUT": "TEMPORARY_OUTPUT"})
dialog.resize(900, 620)
dialog.show()


def save(widget, name: str) -> None:
    widget.grab().save(os.path.join(SHOT_DIR, name), "JPG", 85)


def finish() -> None:
    if len(QgsProject.instance().mapLayers()) < 2:  # the result is not loaded yet
        QTimer.singleShot(1000, finish)
        return
    save(dialog, "qgis-dialog.jpg")
    dialog.close()
    result = [layer for layer in QgsProject.instance().mapLayers().values() if layer is not source][0]
    iface.setActiveLayer(result)
    iface.mapCanvas().setExtent(result.extent())
    iface.mapCanvas().refreshAllLayers()
    QTimer.singleShot(3000, lambda: (save(iface.mainWindow(), "qgis-map.jpg"), os._exit(0)))


QTimer.singleShot(1500, dialog.runAlgorithm)
QTimer.singleShot(3000, finish)
