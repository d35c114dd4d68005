"""The conversation pipeline: stage objects awaited in order within one process."""

from avatar.pipeline.pipeline import Pipeline, TurnResult, new_turn_id

__all__ = ["Pipeline", "TurnResult", "new_turn_id"]
