"""Batch inference over inputs of any size: streamed in chunks, written as it goes, resumable,
shardable (``nlpforge predict --input SRC --output DST``); ``nlpforge.integrations.ray`` runs
the same predictor on Ray Data."""

from nlpforge.batch.job import BatchJob, BatchResult

__all__ = ["BatchJob", "BatchResult"]
