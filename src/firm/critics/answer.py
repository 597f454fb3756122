"""firm's answer format: what critics are trained to write and what :func:`firm.critics.parsing.parse_verdict` reads.

- execution, consistency (edits): one JSON object ``{"reasoning": "...", "score": [n]}``; the score as a one-element
  list, as FIRM's released edit critics write it.
- instruction (generations): a numbered analysis, a final analysis, then ``Final Alignment Rating: n`` and
  ``\\boxed{n}``, as FIRM's released gen critics write it.
- quality (generations): ``{"reasoning": "...", "score": [aesthetics, technical, structure]}``; quality is the min.

ShapesWorld's oracle and the curation pipelines write SFT targets through :func:`format_answer`, so training data and
parsing can never drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

QUALITY_ASPECTS = ("aesthetics", "technical", "structure")


def format_answer(
    dimension: str,
    score: int,
    reasoning: str,
    *,
    analysis: Sequence[str] = (),
    sub_scores: Sequence[int] | None = None,
) -> str:
    """Write a critic answer in firm's format.

    Args:
        dimension: execution, consistency, instruction or quality.
        score: the score (for quality: the min of ``sub_scores``).
        reasoning: the short reasoning (for instruction: the final analysis).
        analysis: instruction only, one line per checked requirement.
        sub_scores: quality only, the aesthetics, technical and structure scores.

    Raises:
        ValueError: for an unknown dimension, or quality sub-scores that do not match ``score``.
    """
    if dimension in ("execution", "consistency"):
        return json.dumps({"reasoning": reasoning, "score": [score]}, ensure_ascii=False)
    if dimension == "quality":
        if sub_scores is None or len(sub_scores) != len(QUALITY_ASPECTS) or min(sub_scores) != score:
            raise ValueError(f"quality needs three sub_scores whose min is the score, got {sub_scores} for {score}")
        return json.dumps({"reasoning": reasoning, "score": list(sub_scores)}, ensure_ascii=False)
    if dimension == "instruction":
        lines = [f"{i}. {line}" for i, line in enumerate(analysis, 1)]
        lines += [f"Final analysis: {reasoning}", f"Final Alignment Rating: {score}", f"\\boxed{{{score}}}"]
        return "\n".join(lines)
    raise ValueError(f"unknown dimension {dimension!r}; choose one of execution, consistency, instruction, quality")
