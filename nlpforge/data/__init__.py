"""Data files: JSON Lines, JSON arrays, CSV and TSV, with errors that name file and line."""

from nlpforge.data.readers import Dataset, read_dataset

__all__ = ["Dataset", "read_dataset"]
