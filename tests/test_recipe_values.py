"""Values under `train:` pass through to TRL's SFTConfig: they are coerced to its field types and tried
before anything is created, so a bad one is a one-line error naming the field, not a traceback later."""

from __future__ import annotations

import pytest
import yaml

from arzan.recipe import RecipeError, load_recipe
from tests.conftest import REPO, base_recipe

SMOKE = REPO / "recipes" / "smoke.yaml"


def refused(overrides: list[str], path=SMOKE) -> str:
    with pytest.raises(RecipeError) as err:
        load_recipe(path, overrides)
    message = str(err.value)
    # a value given with --set is the command line's mistake, named as such, without echoing it
    assert message.startswith("--set: " if overrides else f"{path}: ") and "\n" not in message
    return message


@pytest.mark.parametrize("override,field,allowed", [
    ("train.eval_strategy=sometimes", "train.eval_strategy", ["no", "steps", "epoch"]),
    ("train.save_steps=10", None, None),  # control: a good value loads
    ("train.logging_strategy=hourly", "train.logging_strategy", ["no", "steps", "epoch"]),
    ("train.lr_scheduler_type=bogus", "train.lr_scheduler_type", ["linear", "cosine", "constant_with_warmup"]),
    ("train.optim=bogus", "train.optim", ["adamw_torch", "adamw_8bit", "paged_adamw_8bit"]),
    ("train.report_to=nosuchtracker", "train.report_to", ["none", "all", "tensorboard", "wandb"]),
    ("train.report_to=[tensorboard, nosuchtracker]", "train.report_to", ["tensorboard"]),
    ("train.hub_strategy=sometimes", "train.hub_strategy", ["end", "every_save"]),
    ("train.debug=[zz]", "train.debug", ["underflow_overflow", "tpu_metrics_debug"]),
    ("train.packing_strategy=tight", "train.packing_strategy", ["bfd", "wrapped"]),
    ("train.train_sampling_strategy=shuffled", "train.train_sampling_strategy", ["random", "group_by_length"]),
], ids=lambda v: str(v))
def test_choice_fields_list_the_allowed_values(override, field, allowed):
    if field is None:
        assert load_recipe(SMOKE, [override]).train.save_steps == 10
        return
    message = refused([override])
    bad = yaml.safe_load(override.split("=", 1)[1])
    bad = bad[-1] if isinstance(bad, list) else bad
    assert f": {field}: '{bad}' is not allowed" in message
    assert all(a in message.split("(allowed: ")[1] for a in allowed)


def test_a_close_choice_is_suggested():
    assert "did you mean 'cosine'?" in refused(["train.lr_scheduler_type=cosin"])


@pytest.mark.parametrize("override,field,expected", [
    ("train.adam_beta1=abc", "train.adam_beta1", "Input should be a valid number"),
    ("train.max_grad_norm=[1]", "train.max_grad_norm", "Input should be a valid number"),
    ("train.dataloader_num_workers=1.5", "train.dataloader_num_workers", "valid integer"),
    ("train.include_for_metrics=5", "train.include_for_metrics", "valid list"),
    ("train.neftune_noise_alpha=loud", "train.neftune_noise_alpha", "(got 'loud')"),
    ("train.model_init_kwargs=[1]", "train.model_init_kwargs", "expected a mapping or text (got [1])"),
])
def test_wrong_types_name_the_field(override, field, expected):
    message = refused([override])
    assert f": {field}: " in message and expected in message


def test_exponent_numbers_that_yaml_reads_as_text_are_numbers(write_recipe):
    # PyYAML reads 1e-8 (no dot) as the string '1e-8'; TRL then crashed comparing float and str
    r = load_recipe(SMOKE, ["train.adam_epsilon=1e-8", "train.max_grad_norm=5e-1",
                            "train.lr_scheduler_kwargs={min_lr: 1e-6}"])
    kw = r.train.sft_kwargs()
    assert kw["adam_epsilon"] == 1e-8 and isinstance(kw["adam_epsilon"], float)
    assert kw["max_grad_norm"] == 0.5
    assert kw["lr_scheduler_kwargs"] == {"min_lr": 1e-6}
    # the same in a recipe file, and the run folder's copy keeps the number
    text = SMOKE.read_text("utf-8").replace("  warmup_steps: 10\n", "  warmup_steps: 10\n  adam_epsilon: 1e-8\n")
    from_file = load_recipe(write_recipe(text))
    assert from_file.train.sft_kwargs()["adam_epsilon"] == 1e-8
    assert yaml.safe_load(from_file.resolved_yaml())["train"]["adam_epsilon"] == 1e-8


def test_the_sft_config_built_from_a_recipe_takes_the_coerced_values(tmp_path):
    from trl import SFTConfig

    r = load_recipe(SMOKE, ["train.adam_epsilon=1e-8", "train.run_name=2026"])
    kw = r.train.sft_kwargs() | {"bf16": False, "fp16": False}
    config = SFTConfig(output_dir=str(tmp_path), use_cpu=True, **kw)
    assert config.adam_epsilon == 1e-8 and config.run_name == "2026"


def test_combinations_trl_rejects_fail_at_load_naming_the_field():
    message = refused(["train.load_best_model_at_end=true", "train.eval_steps=300"])
    assert ": train.load_best_model_at_end: TRL rejects it: " in message
    assert "multiple of the evaluation steps" in message


@pytest.mark.parametrize("field", ["save_strategy", "disable_tqdm", "dataloader_pin_memory", "use_cpu"])
def test_fields_arzan_passes_itself_are_refused(field):
    assert f": train.{field}: '{field}' is set by arzan" in refused([f"train.{field}=true"])


def test_bad_train_value_fails_before_a_run_folder_exists(tmp_path):
    from typer.testing import CliRunner

    from arzan.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(SMOKE), "--out", str(out), "--set", "train.optim=bogus"])
    assert result.exit_code == 2, result.output
    assert "train.optim: 'bogus' is not allowed" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_values_machines_decide_are_typed_but_not_tried_here(write_recipe):
    r = load_recipe(write_recipe(base_recipe(train={"tf32": True, "bf16": True, "max_steps": 2})))
    assert r.train.sft_kwargs()["tf32"] is True
    with pytest.raises(RecipeError, match=r"train\.tf32: Input should be a valid boolean"):
        load_recipe(write_recipe(base_recipe(train={"tf32": "sometimes"})))


def test_checking_leaves_accelerate_state_alone():
    from accelerate.state import PartialState

    PartialState._shared_state.clear()
    load_recipe(SMOKE, ["train.optim=sgd"])
    assert PartialState._shared_state == {}, "a recipe check must not pick the device for the run"


def test_malformed_set_value_is_one_line_naming_the_item(write_recipe):
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(base_recipe()), ["lora.target_modules=[q_proj"])
    message = str(err.value)
    assert message.startswith("--set: 'lora.target_modules=[q_proj': the value is not valid YAML")
    assert "\n" not in message


SECRETS = [
    ("train.model_init_kwargs={token: hf_SECRET123}", "train.model_init_kwargs.token: 'token' names a secret"),
    ("train.hub_token=abc", "train.hub_token: 'hub_token' names a secret"),
    ("model.api_key=abc", "model.api_key: 'api_key' names a secret"),
    ("eval.password=abc", "eval.password: 'password' names a secret"),
    ("cost.wandb_secret=abc", "cost.wandb_secret: 'wandb_secret' names a secret"),
    ("model.revision=hf_" + "a1B2c3D4" * 5, "model.revision: the value looks like a Hugging Face token"),
    ("eval.prompts=[hi, 'use hf_" + "Z9" * 17 + "']", "eval.prompts[1]: the value looks like a Hugging Face token"),
    ("data.sources.0.path=https://me:pw@example.org/d.jsonl", "data.sources[0].path: the value is a URL with a user"),
]


@pytest.mark.parametrize("override,expected", SECRETS, ids=[e.split(":")[0] for _, e in SECRETS])
def test_secrets_are_refused_anywhere_in_the_recipe(override, expected):
    message = refused([override])
    assert expected in message
    assert "secrets never go in a recipe" in message and "HF_TOKEN" in message
    secret = override.split("=", 1)[1]
    for part in ("hf_SECRET123", "a1B2c3D4", "Z9Z9", "me:pw"):
        if part in secret:
            assert part not in message, "the error must not print the secret"


def test_secret_keys_in_a_recipe_file_and_names_that_only_look_alike(write_recipe):
    path = write_recipe(base_recipe(train={"model_init_kwargs": {"token": "hf_SECRET123"}}))
    assert "train.model_init_kwargs.token: 'token' names a secret" in refused([], path)
    ok = load_recipe(write_recipe(base_recipe(train={"eos_token": "<|eot_id|>", "max_steps": 2},
                                              eval={"max_new_tokens": 8})))
    assert ok.train.sft_kwargs()["eos_token"] == "<|eot_id|>" and ok.eval.max_new_tokens == 8


@pytest.mark.parametrize("override,expected", [
    ("lora.target_modules=q_proj", "lora.target_modules: expected a list of text or 'all-linear' (got 'q_proj')"),
    ("lora.target_modules=[1, 2]", "lora.target_modules: expected a list of text or 'all-linear' (got [1, 2])"),
    ("train.report_to=5", "train.report_to: expected a list of text or text (got 5)"),
    ("eval.tasks=7", "eval.tasks: expected a list of text or text (got 7)"),
    ("train.max_steps=true", "train.max_steps: expected a number (got True)"),  # not 1 step
    ("budget.max_kzt=yes", "budget.max_kzt: expected a number (got True)"),
])
def test_union_errors_name_the_field_and_what_it_takes(override, expected):
    message = refused([override])
    assert message == f"--set: {expected}"  # no 'list[str]' member in the path, no '(and 1 more problem)'


def test_union_error_counts_other_fields_as_more_problems():
    message = refused(["lora.target_modules=q_proj", "lora.r=0"])
    assert "(and 1 more problem: lora.target_modules)" in message and "list[str]" not in message  # named too
