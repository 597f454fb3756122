"""Data: the critic-sample schema and its WebDataset form (datamodules join here)."""

from firm.data.schema import CriticSample, SampleError, encode_png, from_wds, to_wds

__all__ = ["CriticSample", "SampleError", "encode_png", "from_wds", "to_wds"]
