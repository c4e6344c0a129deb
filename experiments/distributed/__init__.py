"""Data parallelism over every device of every process, with JAX's own machinery.

Two concerns, one module each: the processes of a multi-host run (joining them,
barriers, failing fast when a peer dies: :mod:`._processes`) and the mesh and
shardings that split each batch over all devices (:mod:`._sharding`). Example::

    from experiments import distributed
    distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=0)
    mesh = distributed.mesh()
    x = distributed.global_batch(host_batch, distributed.batch_sharded(mesh))
"""

from ._processes import EXIT_PEER_FAILED as EXIT_PEER_FAILED
from ._processes import EXIT_STUCK as EXIT_STUCK
from ._processes import Watchdog as Watchdog
from ._processes import barrier as barrier
from ._processes import describe as describe
from ._processes import detect_cluster as detect_cluster
from ._processes import exit_on_peer_failure as exit_on_peer_failure
from ._processes import initialize as initialize
from ._processes import is_main as is_main
from ._sharding import DATA_AXIS as DATA_AXIS
from ._sharding import FSDP_MIN_SIZE as FSDP_MIN_SIZE
from ._sharding import BatchSharded as BatchSharded
from ._sharding import batch_sharded as batch_sharded
from ._sharding import batch_sharded_score as batch_sharded_score
from ._sharding import fsdp_spec as fsdp_spec
from ._sharding import global_batch as global_batch
from ._sharding import is_prng_key as is_prng_key
from ._sharding import local_rows as local_rows
from ._sharding import mesh as mesh
from ._sharding import padded_size as padded_size
from ._sharding import put as put
from ._sharding import replicated as replicated
from ._sharding import shard_batch as shard_batch
from ._sharding import state_shardings as state_shardings
from ._sharding import to_host as to_host

__all__ = [
    "EXIT_PEER_FAILED",
    "EXIT_STUCK",
    "Watchdog",
    "barrier",
    "describe",
    "detect_cluster",
    "exit_on_peer_failure",
    "initialize",
    "is_main",
    "DATA_AXIS",
    "FSDP_MIN_SIZE",
    "BatchSharded",
    "batch_sharded",
    "batch_sharded_score",
    "fsdp_spec",
    "global_batch",
    "is_prng_key",
    "local_rows",
    "mesh",
    "padded_size",
    "put",
    "replicated",
    "shard_batch",
    "state_shardings",
    "to_host",
]
