"""Training: the state and its jitted step (:mod:`.step`), the loop with resume,
validation and divergence stop (:mod:`.loop`), what may change on resume and forks
(:mod:`.resume`), Orbax checkpoints (:mod:`.checkpoint`)."""

from .checkpoint import Checkpoints as Checkpoints
from .checkpoint import checkpoint_steps as checkpoint_steps
from .fit import fit as fit
from .guard import RunLocked as RunLocked
from .guard import TrainingInterrupted as TrainingInterrupted
from .loop import TrainingDiverged as TrainingDiverged
from .loop import UnreadableRun as UnreadableRun
from .loop import check_workdir as check_workdir
from .loop import global_batch as global_batch
from .loop import prepare_workdir as prepare_workdir
from .loop import train as train
from .resume import Fork as Fork
from .step import init as init
from .step import items as items
from .step import join as join
from .step import make_step as make_step
