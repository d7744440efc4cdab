"""`medtune merge`: fold a LoRA run into full weights, average two checkpoints, make model soups, and sweep
the averaging weight to trade domain skill against general ability. Guide: docs/merge.md.

One module per job:
  weights.py   safetensors read one tensor at a time, shards written as they fill, the streamed weighted sum
  methods.py   merge_lora, average (whole-model or layer-wise), soup, greedy_soup
  sweep.py     the averaging sweep (evaluate each alpha, choose by a stated rule, table and plot)
The command line (`medtune merge lora|average|soup`) is parsed in cli.py; output folders are replaced only once
the new one is complete (runs.new_folder, runs.replaced_in_place).
"""

from medtune.merge.methods import average, greedy_soup, layer_side, merge_lora, soup
from medtune.merge.sweep import DEFAULT_ALPHAS, accuracy_score, choose_alpha, sweep
from medtune.merge.weights import INDEX, SHARD_BYTES

__all__ = ["DEFAULT_ALPHAS", "INDEX", "SHARD_BYTES", "accuracy_score", "average", "choose_alpha", "greedy_soup",
           "layer_side", "merge_lora", "soup", "sweep"]
