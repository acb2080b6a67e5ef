"""Bad recipes fail before any money is spent, with a message that names file and field."""

from __future__ import annotations

import pytest
import yaml

from arzan.recipe import RecipeError, apply_overrides, load_recipe
from tests.conftest import base_recipe


def test_valid_recipe_loads_with_trl_names(write_recipe):
    r = load_recipe(write_recipe(base_recipe()))
    assert r.lora.r == 8
    assert r.train.learning_rate == 2e-3
    assert r.model.trust_remote_code is False
    assert r.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_any_sft_config_field_is_accepted(write_recipe):
    r = load_recipe(write_recipe(base_recipe(train={"neftune_noise_alpha": 5, "max_steps": 3})))
    assert r.train.sft_kwargs()["neftune_noise_alpha"] == 5


BAD = [
    ("model: [unclosed", "malformed YAML"),
    ("- just\n- a list\n", "a recipe is a YAML mapping"),
    ("", "the file is empty; a recipe needs at least name:, model: and data:"),
    ("name: x\n", "model: required field is missing (and 1 more problem: data)"),
    ("name: a\ntrain:\n  max_steps: 5\ntrain:\n  learning_rate: 0.1\n",
     "line 4, column 1: malformed YAML: duplicate key 'train'"),
    (base_recipe(lora={"rank": 8}), "lora.rank: unknown field 'rank'"),
    (base_recipe(lora={"r": 0}), "lora.r: Input should be greater than 0"),
    (base_recipe(model={"name": "x", "backend": "vllm"}), "model.backend"),
    (base_recipe(train={"learning_rat": 1e-4}), "did you mean 'learning_rate'"),
    (base_recipe(train={"learning_rate": "fast"}), "train.learning_rate"),
    (base_recipe(train={"output_dir": "/tmp/x"}), "'output_dir' is set by arzan"),
    (base_recipe(train={"max_steps": 0}), "train.max_steps: must be a positive number of optimizer steps, or -1"),
    (base_recipe(train={"assistant_only_loss": True}), "'assistant_only_loss' is set by arzan (data.assistant_only_loss)"),
    (base_recipe(train={"truncation_mode": "keep_end"}), "'truncation_mode' is set by arzan (keep_start"),
    (base_recipe(lora={"target_modules": []}), "lora.target_modules: name at least one module"),
    (base_recipe(cost={"overhead_minutes": float("inf")}), "cost.overhead_minutes: Input should be a finite number"),
    (base_recipe(data={"sources": []}), "data.sources: List should have at least 1 item"),
    (base_recipe(data={"sources": [{"path": "a.jsonl", "hub": "b/c", "format": "alpaca"}]}),
     "data.sources[0]: give exactly one of 'path'"),
    (base_recipe(data={"sources": [{"path": "missing.jsonl", "format": "alpaca"}]}),
     "data.sources[0].path: file not found: missing.jsonl"),
    (base_recipe(data={"sources": [{"path": "arzan://sample/kk_arith.jsonl", "format": "sharegpt"}]}),
     "data.sources[0].format"),
    (base_recipe(data={"sources": [{"path": "arzan://sample/kk_arith.jsonl", "format": "alpaca", "sample": 2.5}]}),
     "sample is a fraction"),
    ({k: v for k, v in base_recipe().items() if k != "model"}, "model: required field is missing"),
    (base_recipe(name="bad name!"), "name: String should match pattern"),
    (base_recipe(budget={"max_kzt": -5}), "budget.max_kzt: Input should be greater than 0"),
    (base_recipe(cost={"usd_per_gpu_hour": 1, "kzt_per_gpu_hour": 500}), "not both"),
    (base_recipe(output={"push_to_hub": True}), "push_to_hub needs hub_model_id"),
]


@pytest.mark.parametrize("content,expected", BAD, ids=[e for _, e in BAD])
def test_bad_recipe_names_file_and_field(write_recipe, content, expected):
    path = write_recipe(content)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    message = str(err.value)
    assert str(path) in message
    assert expected in message
    assert "\n" not in message


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_set_overrides_any_field_including_list_items(write_recipe):
    r = load_recipe(write_recipe(base_recipe()), ["train.learning_rate=1e-4", "data.sources.0.sample=10",
                                                  "eval.limit=5", "lora.target_modules=[q_proj, v_proj]"])
    assert r.train.learning_rate == 1e-4
    assert r.data.sources[0].sample == 10
    assert r.eval is not None and r.eval.limit == 5
    assert r.lora.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize("bad,expected", [
    ("train.learning_rate", "'train.learning_rate' is not KEY=VALUE"),
    ("data.sources[0].path=x", "'data.sources[0].path=x': a list item is named with a dot: data.sources.0.path=..."),
    ("data.sources.3.sample=1", "'data.sources.3' is not an index of that list"),
    ("name.x=1", "'name' is a value, not a section"),
    ("lora.target_modules=[q_proj", "'lora.target_modules=[q_proj': the value is not valid YAML"),
    ("train.model_init_kwargs={a: 1", "'train.model_init_kwargs={a: 1': the value is not valid YAML"),
])
def test_bad_overrides(bad, expected):
    with pytest.raises(RecipeError) as err:
        apply_overrides(base_recipe(), [bad])
    assert str(err.value).startswith(f"--set: {expected}") and "\n" not in str(err.value)


def test_override_is_validated_like_the_file_and_blamed_on_the_command_line(write_recipe):
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(base_recipe()), ["train.max_length=-1"])
    assert str(err.value).startswith("--set: train.max_length:")
    bad_file = base_recipe()
    bad_file["train"]["max_length"] = -1  # the same mistake in the file is the file's
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(bad_file), ["train.learning_rate=1e-4"])
    assert str(err.value).startswith(str(write_recipe(bad_file))) and "--set" not in str(err.value)


def test_resolved_recipe_round_trips_and_holds_no_secret(write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    r = load_recipe(write_recipe(base_recipe(output={"push_to_hub": True, "hub_model_id": "me/kk"})))
    text = r.resolved_yaml()
    assert "hf_secret_value" not in text
    again = tmp_path / "again.yaml"
    again.write_text(text, encoding="utf-8")
    assert load_recipe(again).model_dump() == r.model_dump()


def test_relative_data_path_is_read_from_the_recipe_folder(tmp_path, write_recipe):
    (tmp_path / "d.jsonl").write_text('{"text": "сәлем"}\n', encoding="utf-8")
    r = load_recipe(write_recipe(base_recipe(data={"sources": [{"path": "d.jsonl", "format": "text"}]})))
    saved = yaml.safe_load(r.resolved_yaml())
    assert saved["data"]["sources"][0]["path"] == str(tmp_path / "d.jsonl")


def test_eval_paths_are_read_from_the_recipes_folder(tmp_path, monkeypatch):
    """eval.data_dir and a user's task YAML sit beside the recipe; run from elsewhere they are found,
    and the run folder's recipe.yaml names them absolutely so --resume finds them too."""
    import yaml as _yaml

    from tests.conftest import base_recipe

    proj = tmp_path / "proj"
    (proj / "evaldata").mkdir(parents=True)
    (proj / "my_task.yaml").write_text("task: my_task\n", encoding="utf-8")
    raw = base_recipe(eval={"data_dir": "evaldata", "tasks": ["kazakh_local", "my_task.yaml"]})
    (proj / "recipe.yaml").write_text(_yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(proj / "recipe.yaml")
    assert recipe.eval_data_dir() == (proj / "evaldata").resolve()
    assert recipe.eval_tasks() == ["kazakh_local", str((proj / "my_task.yaml").resolve())]
    saved = _yaml.safe_load(recipe.resolved_yaml())["eval"]
    assert saved["data_dir"] == str((proj / "evaldata").resolve()) and saved["tasks"][1].startswith("/")

    raw["eval"]["data_dir"] = "no-such-folder"
    (proj / "recipe.yaml").write_text(_yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(RecipeError, match=r"eval.data_dir: folder not found: no-such-folder"):
        load_recipe(proj / "recipe.yaml")
    raw["eval"] = {"tasks": ["missing_task.yaml"]}
    (proj / "recipe.yaml").write_text(_yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(RecipeError, match=r"eval.tasks\[0\]: task file not found: missing_task.yaml"):
        load_recipe(proj / "recipe.yaml")
