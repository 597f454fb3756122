"""The critic factory: one description of a critic (CriticSpec) for flags and config files, keys that hold every
setting that changes a verdict, row names, and one builder with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from firm.critics.base import JudgeRequest
from firm.critics.factory import CRITIC_FLAGS, CriticSpec, CriticSpecError, build_critic, parse_templates
from firm.critics.remote import RemoteCritic
from firm.critics.transformers import GenerativeJudge
from firm.errors import InputError


def test_flags_become_settings_and_max_new_tokens_clears_the_per_dimension_budgets() -> None:
    spec = CriticSpec.from_flags(
        "generative", {"model": "m", "max_new_tokens": 12, "device": None, "templates": ["execution=./e.txt"]}
    )
    assert spec.critic == "generative"
    assert dict(spec.settings) == {
        "model": "m",
        "max_new_tokens": 12,
        "max_new_tokens_per_dimension": {},
        "templates": {"execution": "./e.txt"},
    }


def test_a_flag_the_critic_does_not_take_is_refused_by_its_option_name() -> None:
    with pytest.raises(CriticSpecError, match=r"critic 'score_token' does not take --samples, --temperature"):
        CriticSpec.from_flags("score_token", {"model": "m", "samples": 4, "temperature": 0.7})
    with pytest.raises(CriticSpecError, match=r"does not take --max-new-tokens"):
        CriticSpec.from_flags("openai", {"model": "m", "base_url": "http://x/v1", "max_new_tokens": 4})


def test_a_required_setting_no_flag_gave_is_named_as_the_flag_to_add() -> None:
    with pytest.raises(CriticSpecError, match=r"critic 'remote' needs --base-url"):
        CriticSpec.from_flags("remote", {})
    with pytest.raises(CriticSpecError, match=r"critic 'generative' needs --model"):
        CriticSpec.from_flags("generative", {})


def test_unknown_critic_and_bad_template_flag_are_input_errors() -> None:
    with pytest.raises(InputError, match="no critic named 'nope'"):
        CriticSpec.from_flags("nope", {"model": "m"})
    with pytest.raises(InputError, match="--template takes DIM=NAME_OR_PATH"):
        parse_templates(["execution"])


def test_every_setting_that_changes_verdicts_is_in_the_key() -> None:
    greedy = CriticSpec.from_flags("generative", {"model": "runs/a/hf"})
    sampled = CriticSpec.from_flags("generative", {"model": "runs/a/hf", "samples": 8})
    hotter = CriticSpec.from_flags("generative", {"model": "runs/a/hf", "samples": 8, "temperature": 0.7})
    keys = [spec.key_text() for spec in (greedy, sampled, hotter)]
    assert len(set(keys)) == 3
    # The class, not the name it was asked by, identifies the critic.
    by_path = CriticSpec.from_flags("firm.critics.transformers.GenerativeJudge", {"model": "runs/a/hf"})
    assert by_path.key() == greedy.key()
    assert greedy.key() == {"critic": "firm.critics.transformers.GenerativeJudge", "settings": {"model": "runs/a/hf"}}


def test_transport_settings_stay_out_of_the_key() -> None:
    base = CriticSpec("remote", {"base_url": "http://a:8700"})
    retuned = CriticSpec("remote", {"base_url": "http://a:8700", "concurrency": 32, "timeout_s": 9.0})
    jpeg = CriticSpec("remote", {"base_url": "http://a:8700", "image_format": "JPEG"})
    assert base.key() == retuned.key()
    assert base.key() != jpeg.key()  # lossy images can change what the critic sees
    assert RemoteCritic.transport_settings >= {"concurrency", "timeout_s", "token_file"}


@pytest.mark.parametrize(
    ("spec", "row"),
    [
        (CriticSpec("generative", {"model": "VisionXLab/FIRM-Edit-8B"}), "FIRM-Edit-8B"),
        (CriticSpec("generative", {"model": "runs/critic_sft_tiny/hf"}), "critic_sft_tiny"),
        (CriticSpec("generative", {"model": "runs/critic_sft_tiny/hf/"}), "critic_sft_tiny"),
        (CriticSpec("generative", {"model": "hf"}), "hf"),
        (CriticSpec("remote", {"base_url": "http://a"}), "remote"),
        (CriticSpec("firm.critics.remote.RemoteCritic", {"base_url": "http://a"}), "RemoteCritic"),
        (CriticSpec("generative", {"model": "x/hf"}, name="mine"), "mine"),
    ],
)
def test_row_names(spec: CriticSpec, row: str) -> None:
    assert spec.row_name == row


def test_config_files_and_flags_describe_the_same_critic_alike(tmp_path: Path) -> None:
    path = tmp_path / "sampled.yaml"
    path.write_text("class_path: generative\ninit_args:\n  model: runs/a/hf\n  samples: 8\n")
    from_file = CriticSpec.from_file(path)
    assert from_file.row_name == "sampled"
    assert from_file.key() == CriticSpec.from_flags("generative", {"model": "runs/a/hf", "samples": 8}).key()
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(CriticSpecError, match="is a directory"):
        CriticSpec.from_file(tmp_path / "folder.yaml")
    with pytest.raises(CriticSpecError, match="not found"):
        CriticSpec.from_file(tmp_path / "missing.yaml")


def test_build_critic_types_and_builds_a_real_judge(tiny_critic_dir: Path) -> None:
    spec = CriticSpec.from_flags(
        "generative",
        {"model": str(tiny_critic_dir), "device": "cpu", "max_new_tokens": 4, "samples": 2, "temperature": 0.5},
    )
    critic = build_critic(spec)
    assert isinstance(critic, GenerativeJudge)
    assert (critic.samples, critic.temperature) == (2, 0.5)
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    [verdict] = critic.judge([JudgeRequest("quality", "a red square", image)])
    assert verdict.dimension == "quality"


def test_a_model_that_cannot_load_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CriticSpecError, match=r"cannot load critic 'generative': .*config.json missing"):
        build_critic(CriticSpec("generative", {"model": str(tmp_path / "no-such-critic")}))


def test_the_flag_list_names_each_setting_once_and_options_match_the_cli() -> None:
    names = [flag.name for flag in CRITIC_FLAGS]
    assert len(names) == len(set(names))
    options = {flag.name: flag.option for flag in CRITIC_FLAGS}
    assert options["templates"] == "--template" and options["max_new_tokens"] == "--max-new-tokens"
