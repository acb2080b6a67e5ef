"""The import point the architecture names (`arzan.evaluate`); the code lives in arzan.evaluation."""

from arzan.evaluation import (
                              SUITES,
                              compare,
                              default_prompts,
                              generation_check,
                              load_references,
                              run_eval,
                              scores_markdown,
                              scores_table,
                              validate_file,
)

__all__ = ["SUITES", "compare", "default_prompts", "generation_check", "load_references",
           "run_eval", "scores_markdown", "scores_table", "validate_file"]
