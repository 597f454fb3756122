"""Curation speed: a remote annotator at concurrency C against sequential calls, per stage, and the pipeline's stages.

Table 1 (remote annotator): a ``firm serve`` process hosts a critic (default: a tiny random Qwen3-VL from
``firm.testing``) with dynamic batching; the ``mllm`` annotator reaches it over its OpenAI-compatible route. Each
stage of the edit pipeline (describe, score execution, score consistency) is asked for the same ``--pairs``
ShapesWorld edits, once with one request in flight (the baseline: sequential calls) and once with ``--concurrency``
requests in flight. Rows give items per second per stage and the speed-up (target: at least 4x at concurrency 8).
Stages are timed through the annotator's own API, not through a whole pipeline run, because an untrained critic's
difference reports do not parse, and the pipeline would skip the scoring stages of a rejected report.

Table 2 (a latency-bound remote): a local HTTP server that answers every chat request after ``--latency-ms``
(standing in for a hosted model whose time goes to the network and to a GPU shared by many clients) with one
canned answer that every stage parses (a difference report that is also a scored answer). The whole edit pipeline
runs through ``firm curate``'s library (journal, parsing, shards) with the ``mllm`` annotator at concurrency 1 and
``--concurrency``; rows give inputs per second end to end.

Table 3 (the pipeline): ``firm curate``'s own per-stage seconds (from the manifest) for the same pairs with the exact
``shapes`` annotator, edit (with rewriting) and generation (with the quality pass): what the pipeline costs around
an annotator that answers instantly.

Usage (CPU, about a minute):

    HF_HUB_OFFLINE=1 python benchmarks/curate.py --threads 1
    HF_HUB_OFFLINE=1 python benchmarks/curate.py --model ./my-critic --device cuda --pairs 64 --max-tokens 256
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from firm.curation.base import DifferenceReport, EditItem
from firm.curation.inputs import read_items
from firm.curation.llm import MLLMAnnotator
from firm.curation.pipeline import CurateSettings, Curation
from firm.serving.process import ServeProcess
from firm.worlds.shapes.annotate import ShapesWorldAnnotator
from firm.worlds.shapes.export import write_pairs
from firm.worlds.shapes.world import ShapesWorld

STAGES = ("describe", "score execution", "score consistency")


def time_stages(annotator: MLLMAnnotator, items: list[EditItem]) -> dict[str, float]:
    """Seconds each stage takes for all items (one call per stage; the backend spreads it over its concurrency)."""
    report = DifferenceReport((), {})
    seconds = {}
    for stage in STAGES:
        started = time.perf_counter()
        if stage == "describe":
            annotator.describe(items)
        else:
            annotator.score_edit(items, stage.split()[1], [report] * len(items))
        seconds[stage] = time.perf_counter() - started
    return seconds


def remote_table(args: argparse.Namespace, items: list[EditItem], model: str) -> None:
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    flags = ["--model", model, "--port", "0", "--device", args.device, "--served-model-name", "critic"]
    flags += ["--max-batch-size", str(args.concurrency), "--batch-size", str(args.concurrency)]
    flags += ["--max-wait-ms", str(args.max_wait_ms)]
    with ServeProcess(flags, env=env) as proc:
        assert proc.url is not None
        results = {}
        for concurrency in (1, args.concurrency):
            annotator = MLLMAnnotator(
                "critic", backend="openai", base_url=proc.url + "/v1", api_key_env=None,
                concurrency=concurrency, max_tokens=args.max_tokens, retry_temperature=0.0,
            )  # fmt: skip
            annotator.describe(items[: min(2, len(items))])  # warm-up: the server's first batch compiles nothing
            results[concurrency] = time_stages(annotator, items)
            annotator.close()
    print(f"\nRemote annotator (firm serve, {model}), {len(items)} edits, {args.max_tokens} tokens per answer")
    print(f"| stage | sequential (items/s) | concurrency {args.concurrency} (items/s) | speed-up |")
    print("|---|---:|---:|---:|")
    base, fast = results[1], results[args.concurrency]
    for stage in [*STAGES, "all three"]:
        b = sum(base.values()) if stage == "all three" else base[stage]
        f = sum(fast.values()) if stage == "all three" else fast[stage]
        print(f"| {stage} | {len(items) / b:.2f} | {len(items) / f:.2f} | {b / f:.1f}x |")


CANNED = json.dumps(
    {
        "obvious": ["the square: red in the first picture; blue in the second picture"],
        "detailed": {"colour": ["the square turned from red to blue"]},
        "reasoning": "The square was recoloured as asked.",
        "score": [4],
    }
)


class _Latency(BaseHTTPRequestHandler):
    latency_s = 0.2

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        time.sleep(self.latency_s)
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": CANNED}, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 100, "completion_tokens": 40}}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog of 5 drops concurrent connects, and a dropped SYN waits 1 s
    daemon_threads = True


def latency_table(args: argparse.Namespace, pairs: Path, root: Path) -> None:
    _Latency.latency_s = args.latency_ms / 1000
    server = _Server(("127.0.0.1", 0), _Latency)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    rates = {}
    try:
        for concurrency in (1, args.concurrency):
            annotator = MLLMAnnotator("remote", backend="openai", base_url=url, api_key_env=None,
                                      concurrency=concurrency, max_tokens=args.max_tokens)  # fmt: skip
            settings = CurateSettings("edit", batch_size=max(16, 2 * args.concurrency), retries=0)
            started = time.perf_counter()
            manifest = Curation(settings, annotator, progress=False).run(pairs, root / f"latency-{concurrency}")
            rates[concurrency] = args.pairs / (time.perf_counter() - started)
            assert manifest["counts"]["labelled"] == args.pairs, manifest["counts"]
            annotator.close()
    finally:
        server.shutdown()
    print(f"\nLatency-bound remote ({args.latency_ms:.0f} ms per answer), whole edit pipeline, {args.pairs} edits")
    print("| in flight | inputs/s | samples/s | speed-up |")
    print("|---:|---:|---:|---:|")
    for concurrency, rate in rates.items():
        print(f"| {concurrency} | {rate:.2f} | {2 * rate:.2f} | {rate / rates[1]:.1f}x |")


def pipeline_table(args: argparse.Namespace, root: Path) -> None:
    world = ShapesWorld(size=args.size, split="train", seed=0)
    rows = []
    for task, flags in (("edit", {"rewrite_fraction": 0.25}), ("gen", {"quality": True})):
        pairs = write_pairs(world, task, args.pairs, root / f"pairs-{task}", progress=False)
        run = Curation(CurateSettings(task, **flags), ShapesWorldAnnotator(), progress=False)  # type: ignore[arg-type]
        started = time.perf_counter()
        manifest = run.run(pairs, root / f"out-{task}")
        total = time.perf_counter() - started
        stages = manifest["counts"]["this_run"]["stage_seconds"]
        items = manifest["counts"]["this_run"]["stage_items"]
        for stage, seconds in stages.items():
            rows.append((task, stage, items[stage], seconds))
        rows.append((task, "whole run (reading, hashing, journal, shards, manifest)", args.pairs, total))
    print(f"\nPipeline stages with the exact shapes annotator, {args.pairs} inputs of {args.size} px")
    print("| task | stage | items | seconds | items/s |")
    print("|---|---|---:|---:|---:|")
    for task, stage, n, seconds in rows:
        print(f"| {task} | {stage} | {n} | {seconds:.2f} | {n / max(seconds, 1e-9):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="critic folder or hub id to serve; a tiny random Qwen3-VL when absent")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--size", type=int, default=32, help="ShapesWorld image side in pixels")
    parser.add_argument("--max-tokens", type=int, default=32, help="answer budget of every stage")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's batching wait")
    parser.add_argument("--threads", type=int, help="OMP threads of the server process")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="table 2's time per answer")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model
        if model is None:
            from firm.testing import save_tiny_critic

            model = str(save_tiny_critic(root / "critic", "qwen3_vl"))
        world = ShapesWorld(size=args.size, split="train", seed=0)
        pairs = write_pairs(world, "edit", args.pairs, root / "pairs", progress=False)
        items = [item for item in read_items(pairs, "edit") if isinstance(item, EditItem)]
        remote_table(args, items, model)
        latency_table(args, pairs, root)
        pipeline_table(args, root)


if __name__ == "__main__":
    main()
