"""Lightning's DeepSpeed strategy on CPU processes, for tests of ZeRO-2/3 training, checkpoints and conversion.

DeepSpeed itself trains on CPU (its CPU accelerator, gloo collectives), but Lightning's ``DeepSpeedStrategy`` refuses
any accelerator but CUDA. :class:`CPUDeepSpeedStrategy` lifts that one check and picks gloo; everything else (the
config, ZeRO partitioning, checkpoint layout) is Lightning's and DeepSpeed's own, so what a test proves on CPU holds
for the GPU strategy.

DeepSpeed builds a C++ op the first time it starts on a machine (about 25 s); it caches the build under
``TORCH_EXTENSIONS_DIR`` (the Makefile points it at ``.venv/torch_extensions``).

Example (YAML)::

    trainer:
      accelerator: cpu
      devices: 2
      strategy:
        class_path: firm.testing.deepspeed.CPUDeepSpeedStrategy
        init_args: {stage: 3}
"""

from __future__ import annotations

import argparse
from typing import Any

from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

__all__ = ["CPUDeepSpeedStrategy"]


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's DeepSpeed strategy, allowed on CPU (gloo).

    Args:
        stage: ZeRO stage: 0, 1, 2 or 3.
        offload_optimizer: keep optimizer states on the host (ZeRO-Offload; needs DeepSpeed's CPU Adam).
        offload_parameters: keep parameters on the host between uses (ZeRO-3 only).
        **kwargs: any other argument of Lightning's ``DeepSpeedStrategy``.
    """

    strategy_name = "deepspeed_cpu"

    def __init__(
        self, stage: int = 2, offload_optimizer: bool = False, offload_parameters: bool = False, **kwargs: Any
    ) -> None:
        kwargs.setdefault("process_group_backend", "gloo")
        super().__init__(
            stage=stage, offload_optimizer=offload_optimizer, offload_parameters=offload_parameters, **kwargs
        )

    def setup_environment(self) -> None:
        # Skip DeepSpeedStrategy's CUDA-only check; DDPStrategy's setup (processes, ranks, collectives) is unchanged.
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        # As DeepSpeedStrategy, less its check that CUDA device indices match local ranks (CPU devices have none).
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def init_deepspeed(self) -> None:
        # Lightning hands DeepSpeed the CUDA index of the root device as its device rank; the CPU device has none,
        # and DeepSpeed's engine reads None (or -1) as "running alone". Give it the local rank for the duration.
        import deepspeed

        initialize = deepspeed.initialize

        def with_local_rank(*args: Any, **kwargs: Any) -> Any:
            kwargs["args"] = argparse.Namespace(device_rank=self.local_rank)
            return initialize(*args, **kwargs)

        deepspeed.initialize = with_local_rank
        try:
            super().init_deepspeed()
        finally:
            deepspeed.initialize = initialize
