"""Latency on the target: runtimes, the profiler, the table file and the model built on it."""

from hwnas.latency.model import LatencyModel, head_key, latency_model, overhead_key, profile_command, required_keys, stem_key
from hwnas.latency.predictor import LatencyPredictor
from hwnas.latency.table import ForeignTableWarning, LatencyTable

__all__ = [
    "ForeignTableWarning",
    "LatencyModel",
    "LatencyPredictor",
    "LatencyTable",
    "head_key",
    "latency_model",
    "overhead_key",
    "profile_command",
    "required_keys",
    "stem_key",
]
