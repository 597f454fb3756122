"""Synthetic worlds with exact ground truth for every FIRM score (ShapesWorld is the embedded default)."""
