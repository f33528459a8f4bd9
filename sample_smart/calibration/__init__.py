"""Calibration: rank-wise correctness grids, power-law fits, derived decoders, 100-bucket calibration.

Plain numpy; no vllm/transformers/lm_eval imports. See ``grid``, ``powerlaw``, ``derive``
and ``buckets`` for the formulas (arXiv 2510.05987, sections 3-4).
"""

from .buckets import BucketCalibrator, adaptive_ece, bucket_index, ece, fill_empty, mce
from .derive import (
    CALIBRATION_SCHEMA,
    build_calibration,
    calibrated_epsilon,
    calibrated_topk,
    calibration_from_dict,
    decoder_settings_from_dict,
    derive_decoder_settings,
    equivalent_epsilon,
    load_calibration,
    load_decoder_settings,
    save_calibration,
)
from .grid import BIN_EDGES, CalibrationGrid, grid_from_traces, p_max_bin
from .pairs import read_pairs
from .powerlaw import PowerLawFit, convert_coefficients, fit_grid, fit_power_law, normalize_base

__all__ = [
    "BIN_EDGES",
    "CALIBRATION_SCHEMA",
    "BucketCalibrator",
    "CalibrationGrid",
    "PowerLawFit",
    "adaptive_ece",
    "bucket_index",
    "build_calibration",
    "calibrated_epsilon",
    "calibrated_topk",
    "calibration_from_dict",
    "convert_coefficients",
    "decoder_settings_from_dict",
    "derive_decoder_settings",
    "ece",
    "equivalent_epsilon",
    "fill_empty",
    "fit_grid",
    "fit_power_law",
    "grid_from_traces",
    "load_calibration",
    "load_decoder_settings",
    "mce",
    "normalize_base",
    "p_max_bin",
    "read_pairs",
    "save_calibration",
]
