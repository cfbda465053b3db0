"""Scene jobs: rasters beyond the synchronous limits, super-resolved in the background, by any replica.

Layers, each the one owner of its concept: :mod:`.model` (the status enum, the record), :mod:`.store`
(records in SQLite or Postgres, leases), :mod:`.files` (uploads, checkpoints and results, local or in
object storage), :mod:`.worker` (the state machine a replica runs) and :mod:`.routes` (HTTP). Import them
from their modules: the package itself imports nothing, so that the schemas can use the model.
"""
