"""firm: faithful image reward modeling.

Train, measure and serve MLLM critics that judge image edits and generations, turn their verdicts into RL rewards,
and fine-tune editors and generators with them.
"""

__version__ = "0.1.0"
