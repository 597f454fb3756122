"""``firm curate`` with model annotators: a tiny VLM in process, a remote one behind a real ``firm serve`` process,
and one behind vLLM's CPU build. The tiny models are untrained, so what is checked is what users depend on whatever
the model: every input is labelled or rejected with its reason and raw answer, nothing is invented, tokens are
counted, a rerun calls the model for nothing already done, and the shards hold only parsed labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve_support import FirmServer
from vllm_support import vllm_missing, vllm_server
from webdataset.tariterators import tarfile_samples

from firm.cli import main
from firm.data.schema import from_wds
from firm.testing import save_tiny_critic
from firm.worlds.shapes.export import write_pairs
from firm.worlds.shapes.world import ShapesWorld

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

WORLD = ShapesWorld(size=32, split="train", seed=0)


def run_curate(task: str, pairs: Path, out: Path, *flags: str) -> dict:
    code = main(["curate", task, "--input", str(pairs), "--output", str(out), "--no-progress", "--retries", "1",
                 *flags])  # fmt: skip
    assert code == 0
    return json.loads((out / "manifest.json").read_text())


def check_accounted(out: Path, manifest: dict, n: int, dims: tuple[str, ...]) -> None:
    """Every input labelled or rejected; every rejection with a reason and the raw answer; shards parse."""
    records = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert len(records) == n == manifest["counts"]["inputs"]
    assert manifest["counts"]["labelled"] + manifest["counts"]["rejected"] == n
    for record in records:
        covered = {x["dimension"] for x in record["samples"]} | {r["dimension"] for r in record["rejected"]}
        assert covered == set(dims), record["input"]
        for rejection in record["rejected"]:
            assert rejection["reason"] and rejection["tries"] == 2
    samples = [from_wds(s) for p in sorted(out.glob("*.tar")) for s in tarfile_samples([{"url": str(p)}])]
    assert len(samples) == sum(manifest["counts"]["samples"].values())


def test_inprocess_tiny_vlm_annotates_edits_and_a_rerun_asks_nothing(tmp_path: Path, tiny_critic_dir: Path) -> None:
    pairs = write_pairs(WORLD, "edit", 4, tmp_path / "pairs", progress=False)
    flags = ["--annotator", "mllm", "--annotator-set", f"model={tiny_critic_dir}", "--annotator-set", "max_tokens=24",
             "--annotator-set", "device=cpu", "--batch-size", "2"]  # fmt: skip
    manifest = run_curate("edit", pairs, tmp_path / "out", *flags)
    check_accounted(tmp_path / "out", manifest, 4, ("execution", "consistency"))
    assert manifest["usage"]["annotator"]["completion_tokens"] > 0
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert rejected and all(r["raw"] for r in rejected if r["stage"] == "describe")
    again = run_curate("edit", pairs, tmp_path / "out", *flags)
    assert again["counts"]["this_run"]["skipped"] == 4
    assert again["usage"]["annotator"].get("requests", 0) == 0


def test_inprocess_planner_and_annotator_run_plan_then_score(tmp_path: Path, tiny_critic_dir: Path) -> None:
    pairs = write_pairs(WORLD, "gen", 3, tmp_path / "pairs", progress=False)
    model = [f"model={tiny_critic_dir}", "max_tokens=24", "device=cpu"]
    flags = [x for kv in model for x in ("--annotator-set", kv)] + [x for kv in model for x in ("--planner-set", kv)]
    manifest = run_curate("gen", pairs, tmp_path / "out", "--annotator", "mllm", "--planner", "planner", "--quality",
                          *flags)  # fmt: skip
    check_accounted(tmp_path / "out", manifest, 3, ("instruction", "quality"))
    assert manifest["planner"]["name"] == "planner" and manifest["usage"]["planner"]["completion_tokens"] > 0


def test_remote_annotator_behind_firm_serve(tmp_path: Path, firm_server: FirmServer) -> None:
    pairs = write_pairs(WORLD, "edit", 4, tmp_path / "pairs", progress=False)
    settings = ["backend=openai", f"base_url={firm_server.url}/v1", f"model={firm_server.critic_dir}",
                f"api_key_file={firm_server.token_file}", "max_tokens=16", "concurrency=4",
                "retry_temperature=0"]  # firm serve decodes greedily only  # fmt: skip
    flags = ["--annotator", "mllm", *[x for kv in settings for x in ("--annotator-set", kv)]]
    manifest = run_curate("edit", pairs, tmp_path / "out", *flags)
    check_accounted(tmp_path / "out", manifest, 4, ("execution", "consistency"))
    usage = manifest["usage"]["annotator"]
    assert usage["requests"] >= 4 and usage["completion_tokens"] > 0
    # the server moved: same labels identity, so the run continues instead of refusing the folder
    moved = [kv if not kv.startswith("concurrency") else "concurrency=2" for kv in settings]
    flags = ["--annotator", "mllm", *[x for kv in moved for x in ("--annotator-set", kv)]]
    assert run_curate("edit", pairs, tmp_path / "out", *flags)["counts"]["this_run"]["skipped"] == 4


@pytest.mark.vllm
@pytest.mark.skipif(vllm_missing() is not None, reason=str(vllm_missing()))
def test_remote_annotator_behind_vllm(tmp_path: Path) -> None:
    folder = save_tiny_critic(tmp_path / "critic", "qwen3_vl")
    pairs = write_pairs(WORLD, "edit", 3, tmp_path / "pairs", progress=False)
    with vllm_server(folder, log_path=tmp_path / "vllm.log") as server:
        settings = ["backend=openai", f"base_url={server.base_url}", f"model={server.model}", "api_key_env=null",
                    "max_tokens=16", "concurrency=4"]  # fmt: skip
        flags = ["--annotator", "mllm", *[x for kv in settings for x in ("--annotator-set", kv)]]
        manifest = run_curate("edit", pairs, tmp_path / "out", *flags)
    check_accounted(tmp_path / "out", manifest, 3, ("execution", "consistency"))
    assert manifest["usage"]["annotator"]["completion_tokens"] > 0
