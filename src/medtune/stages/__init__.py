"""The training stages, one module each. `STAGES` names them for the command line and pipelines; a stage's
module is imported only when it is used (by name, through importlib), so `medtune --help` stays fast and this
package imports none of its stages."""

from __future__ import annotations

import importlib

# stage name -> (module, config class)
STAGES = {"pt": ("medtune.stages.pt", "PTConfig"), "sft": ("medtune.stages.sft", "SFTConfig"),
          "rm": ("medtune.stages.rm", "RMConfig"), "dpo": ("medtune.stages.dpo", "DPOConfig"),
          "ppo": ("medtune.stages.ppo", "PPOConfig"), "grpo": ("medtune.stages.grpo", "GRPOConfig"),
          "distill": ("medtune.stages.distill", "DistillConfig")}


def get_stage(name: str):
    """(module, config class) of stage `name`, one of STAGES; the module has `run(cfg)` and `validate(cfg)`."""
    module = importlib.import_module(STAGES[name][0])
    return module, getattr(module, STAGES[name][1])
