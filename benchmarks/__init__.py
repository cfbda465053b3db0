"""HNDSR's measurements, one module per benchmark: ``python -m benchmarks NAME [options]`` (``--help`` on each).

Every figure is printed with the machine's load average beside it; functions compared are timed in turn.

- ``speed``: x4 of 256x256 on every inference engine beside Pillow bicubic and Real-ESRGAN, a scene's tiles per
  second per engine, and HTTP ``/upscale`` against the in-process call, in one run, with the speed targets.
- ``model``: the default pipeline's x4 speed (and other weights' with ``--compare``), Real-ESRGAN's quality,
  the peak memory of a 2048x2048 x4 upscale, tiled against untiled output.
- ``inprocess``: the operator alone and ``upscale`` from 1..32 threads, a big scene (PyTorch, NumPy, Pillow only:
  the GPU machine's first call).
- ``serving``: the real server against in-process figures: HTTP/in-process ratios, 1..64 clients, a big scene.
- ``batching``: the micro-batcher against none. ``encoders``: the output encoders. ``omp``: OpenMP's wait
  policy under contention. ``gil``: a dispatch-bound forward beside Python, per switch interval.
- ``scene_job``: a scene through the jobs API of a real server: tiles/s and the server's memory.
- ``load_soak``: mixed traffic against a real server: statuses, memory at rest (``--census``: objects and
  heap), ``/metrics`` against the client. ``fleet_soak``: two replicas on Postgres and S3, one killed every
  ``--kill-every`` seconds.
- ``batch``: ``hndsr batch`` in process and on a local Ray cluster over the same GeoTIFFs: scenes per hour, output
  megapixels per second, Ray's overhead, each stage's time.
- ``shape_memory``: memory kept per new image shape. ``train_throughput``: training steps/s.
  ``real_pairs``: the models on the real Landsat-8/Sentinel-2 pairs, with registration diagnostics.
- ``trunks``: operator variants (2.1.0's, v3, v3 without spectral mixing) trained from scratch for the same
  compute, seeds apart, scored on val and timed. ``consistency``: the LR-consistency projection's cost per scale.

Shared helpers: :mod:`benchmarks.common` (images, the peer, in-process runs) and :mod:`benchmarks.scrape` (a
server's ``/metrics``). No benchmark imports another.
"""
