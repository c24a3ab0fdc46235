"""Data layer: load a labelled text file, report on it, split it."""

from slm.data.dataset import TextDataset
from slm.data.loading import load_dataset
from slm.data.report import DataReport
from slm.data.splitting import align_labels, min_examples_per_class, split_dataset

__all__ = [
    "DataReport",
    "TextDataset",
    "align_labels",
    "load_dataset",
    "min_examples_per_class",
    "split_dataset",
]
