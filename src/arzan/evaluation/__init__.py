"""Kazakh evaluation: lm-eval runs on a run's adapter, arzan's task configs, score tables.

Modules: `suites` (what `--tasks kazakh` means, local-file checks), `taskdata` (the loader the
task YAMLs call), `runner` (`run_eval`), `session` (an eval's time and money in the run's ledger,
finished or cut by Ctrl-C, and the refreshed model card), `compare` (score tables with published
reference rows), `generation` (does the fine-tune answer and stop?).
"""

from arzan.evaluation.compare import (
           compare,
           gain_table,
           load_references,
           scores_markdown,
           scores_table,
)
from arzan.evaluation.generation import default_prompts, generation_check
from arzan.evaluation.runner import run_eval
from arzan.evaluation.suites import SUITES
from arzan.evaluation.taskdata import validate_file

__all__ = ["SUITES", "compare", "default_prompts", "gain_table", "generation_check", "load_references",
           "run_eval", "scores_markdown", "scores_table", "validate_file"]
