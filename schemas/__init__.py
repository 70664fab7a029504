"""The data contract every part of the project shares (version 1).

`schemas.sample` owns the WebDataset sample layout and its validator, `schemas.manifest` the
parquet manifest schemas, `schemas.dataset` the layout of a dataset directory (versions
v1, v2, ...). This package imports nothing else of the project.
"""
from schemas.manifest import PAIR_SCHEMA, SCHEMA_VERSION, VIDEO_SCHEMA
from schemas.sample import DragSample, SampleError, decode_sample, encode_sample, validate_sample

__all__ = [
    "SCHEMA_VERSION", "PAIR_SCHEMA", "VIDEO_SCHEMA", "DragSample", "SampleError",
    "encode_sample", "decode_sample", "validate_sample",
]
