"""Curate critic training data: annotators answer the difference-first (edit) and plan-then-score (generation)
pipelines, instructions are rewritten for low scores, and the labels become WebDataset shards that ``firm fit`` reads.
"""

from firm.curation.base import (
    DETAIL_CATEGORIES,
    PLAN_GROUPS,
    Annotator,
    CurationError,
    DifferenceReport,
    EditItem,
    GenItem,
    Item,
    Label,
    Plan,
    PlanItem,
    Rejected,
    StageUnsupported,
    content_hash,
)

__all__ = [
    "DETAIL_CATEGORIES",
    "PLAN_GROUPS",
    "Annotator",
    "CurationError",
    "DifferenceReport",
    "EditItem",
    "GenItem",
    "Item",
    "Label",
    "Plan",
    "PlanItem",
    "Rejected",
    "StageUnsupported",
    "content_hash",
]
