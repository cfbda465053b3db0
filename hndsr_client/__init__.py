"""Use HNDSR from Python and the shell: the ``hndsr`` command and a client for the scene-jobs API."""

from .client import HNDSRError, JobsClient

__all__ = ["HNDSRError", "JobsClient"]
