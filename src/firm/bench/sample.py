"""A human-scored bench: samples to judge, each with the human score a critic is measured against."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from firm.critics.base import FIRM_RANGE, JudgeRequest, ScoreRange
from firm.data.samples import load_image


@dataclass(frozen=True)
class BenchSample:
    """One thing the humans scored: an edit or a generation judged on one dimension.

    Attributes:
        id: the sample's id in its bench; with ``dimension`` it keys predictions and cached verdicts.
        dimension: what was scored (execution, consistency, instruction, quality, or a bench's own name).
        human: the human score, the mean of ``raters`` when there are several.
        text: the edit instruction or the generation prompt ("" when the bench holds scores only).
        image: the edited or generated image (None when the bench holds scores only).
        source: the source image of an edit.
        difficulty: "easy" or "hard" where the bench splits its prompts; None otherwise.
        model: the model that made the image, for per-model correlations; None when unknown.
        group: samples with the same group are candidates for the same input (same instruction and source, or the
            same prompt): pairwise accuracy compares them. None: the sample is alone.
        raters: each rater's score, when known.
    """

    id: str
    dimension: str
    human: float
    text: str = ""
    image: Path | None = None
    source: Path | None = None
    difficulty: str | None = None
    model: str | None = None
    group: str | None = None
    raters: tuple[float, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        """(id, dimension): what a prediction or a cached verdict is stored under."""
        return (self.id, self.dimension)

    def request(self) -> JudgeRequest:
        """The critic request for this sample, images loaded as RGB.

        Raises:
            ValueError: when the sample has no image (a scores-only bench).
            SampleInputError: when one of its images cannot be read (missing, corrupt, a decompression bomb).
        """
        if self.image is None:
            raise ValueError(
                f"sample {self.id!r} has no image, so no critic can judge it; give precomputed --predictions instead"
            )
        return JudgeRequest(
            dimension=self.dimension,
            text=self.text,
            image=load_image(self.image),
            source=None if self.source is None else load_image(self.source),
        )


@dataclass(frozen=True)
class Skipped:
    """A bench record that was not used, and why."""

    where: str
    reason: str


@dataclass
class Bench:
    """Samples with human scores, on one score scale, plus what was skipped while reading them.

    Attributes:
        name: a short name for reports (usually the file name).
        samples: the samples, in file order.
        score_range: the scale of human scores and critic answers.
        skipped: records that could not be used (missing field, no human score, missing image...).
        fields: how the reader found each value (setting -> field), shown in the report so nothing is assumed
            silently.
    """

    name: str
    samples: list[BenchSample]
    score_range: ScoreRange = FIRM_RANGE
    skipped: list[Skipped] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: set[tuple[str, str]] = set()
        for sample in self.samples:
            if sample.key in seen:
                raise ValueError(f"bench {self.name}: sample {sample.id!r} appears twice for {sample.dimension}")
            seen.add(sample.key)

    @property
    def dimensions(self) -> list[str]:
        """The dimensions of the samples, in first-seen order."""
        return list(dict.fromkeys(s.dimension for s in self.samples))

    def limit(self, n: int) -> Bench:
        """The first ``n`` samples (for a quick run)."""
        return Bench(self.name, self.samples[:n], self.score_range, self.skipped, self.fields)
