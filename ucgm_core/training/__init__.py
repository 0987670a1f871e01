"""UCGM-T: the unified training objective, its teacher and the evaluation EMA.

The outer loop is :mod:`.loop` (``Trainer``, ``TrainSettings.from_dict``); a whole training job from a
model spec, as ``workflow/scripts/train.py`` runs it, is :func:`ucgm_core.training.run.train` (not imported
here: it pulls in the models, data and sampling packages).
"""

from .ema import EMA, ema_update_, teacher_decay_schedule, unwrap
from .objective import ObjectiveOutput, UCGMConfig, UCGMObjective, sample_time
from .teacher import Teacher

__all__ = [
    "EMA",
    "ema_update_",
    "teacher_decay_schedule",
    "unwrap",
    "ObjectiveOutput",
    "UCGMConfig",
    "UCGMObjective",
    "sample_time",
    "Teacher",
]
