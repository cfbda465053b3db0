"""Run by QGIS's own Python (``/usr/bin/python3`` with Debian's ``python3-qgis``), never by the test suite's.

    python3 qgis_helper.py add-key PROFILE AUTHCFG KEY     # a Basic auth configuration whose password is KEY
    python3 qgis_helper.py cancel PROFILE PARAMETERS_JSON  # run hndsr:superresolve, cancel once a job is submitted

``cancel`` loads the plugin installed in the profile as QGIS does, runs the algorithm with a feedback that
presses Cancel when the algorithm says it submitted a job, and prints one JSON line: the job id, whether the run
failed and the messages it reported.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsProcessingContext, QgsProcessingFeedback

MASTER_PASSWORD_FILE = "master-password"


def start(profile: Path) -> QgsApplication:
    app = QgsApplication([], False, str(profile))
    app.initQgis()
    return app


def add_key(profile: Path, authcfg: str, key: str) -> None:
    app = start(profile)
    manager = QgsApplication.authManager()
    if not manager.setMasterPassword((profile / MASTER_PASSWORD_FILE).read_text().strip(), True):
        raise SystemExit("cannot set the master password")
    config = QgsAuthMethodConfig("Basic")
    config.setId(authcfg)
    config.setName("HNDSR API key")
    config.setConfig("username", "hndsr")
    config.setConfig("password", key)
    stored = manager.storeAuthenticationConfig(config)
    if not (stored[0] if isinstance(stored, tuple) else stored):
        raise SystemExit("cannot store the auth configuration")
    app.exitQgis()


class CancelOnSubmit(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.job_id: str | None = None
        self.messages: list[str] = []

    def pushInfo(self, info: str) -> None:  # noqa: N802 (QGIS's name)
        self.messages.append(info)
        submitted = re.match(r"job ([0-9a-f]{32}) submitted", info)
        if submitted:
            self.job_id = submitted.group(1)
            self.cancel()

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803
        self.messages.append(error)


def cancel(profile: Path, parameters: dict) -> None:
    app = start(profile)
    sys.path.insert(0, str(profile / "python" / "plugins"))
    from hndsr_qgis.provider import HndsrProvider

    registry = QgsApplication.processingRegistry()
    registry.addProvider(HndsrProvider())
    algorithm = registry.createAlgorithmById("hndsr:superresolve")
    feedback = CancelOnSubmit()
    _, ok = algorithm.run(parameters, QgsProcessingContext(), feedback)
    print(json.dumps({"job_id": feedback.job_id, "ok": ok, "messages": feedback.messages}))
    app.exitQgis()


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    if command == "add-key":
        add_key(folder, sys.argv[3], sys.argv[4])
    else:
        cancel(folder, json.loads(sys.argv[3]))
