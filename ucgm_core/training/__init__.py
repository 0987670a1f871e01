"""UCGM-T: the unified training objective, its teacher and the evaluation EMA."""

from .ema import EMA, ema_update_, teacher_decay_schedule, unwrap
from .objective import ObjectiveOutput, UCGMConfig, UCGMObjective, sample_time
from .teacher import Teacher

__all__ = [
    "EMA", "ema_update_", "teacher_decay_schedule", "unwrap",
    "ObjectiveOutput", "UCGMConfig", "UCGMObjective", "sample_time", "Teacher",
]
