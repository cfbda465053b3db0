"""``hndsr batch``: archives of scenes super-resolved in process or on a Ray cluster, read from and written to
local folders or object storage, each product described by a STAC Item. Installed with ``pip install -e '.[ray]'``.
"""
