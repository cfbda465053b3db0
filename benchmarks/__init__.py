"""HNDSR's measurements, one module per benchmark: ``python -m benchmarks NAME [options]`` (``--help`` on each).

- ``speed``: x4 of 256x256 on every inference engine beside Pillow bicubic and Real-ESRGAN, a scene's tiles per
  second per engine, and HTTP ``/upscale`` against the in-process call, in one run (medians, ratios).

The older measurements are still scripts (``scripts/benchmark.py`` and the files it names); shared helpers are
in :mod:`benchmarks.common`. Every figure is printed with the machine's load average beside it.
"""
