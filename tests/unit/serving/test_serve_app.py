"""The firm serve application over real HTTP (uvicorn in a thread): routes, auth, limits, idempotency, journal."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_critics import PixelCritic, red, serving

from firm.critics.base import Critic, JudgeRequest, Verdict
from firm.critics.messages import encode_image
from firm.rewards import ConsistencyModulatedExecution
from firm.serving.app import ServeConfig, create_app
from firm.serving.protocol import ServeLimits

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def item(level: int, item_id: str | None = None, dimension: str = "execution", text: str = "add a hat") -> dict:
    img = encode_image(red(level))
    out: dict[str, Any] = {"dimension": dimension, "text": text, "image": img}
    if dimension in ("execution", "consistency"):
        out["source"] = encode_image(red(0))
    if item_id is not None:
        out["id"] = item_id
    return out


@pytest.fixture
def critic() -> PixelCritic:
    return PixelCritic()


@pytest.fixture
def server(critic: PixelCritic) -> Iterator[tuple[str, httpx.Client]]:
    config = ServeConfig(token=TOKEN, max_wait_ms=1, limits=ServeLimits(max_body_bytes=200_000, max_items=8))
    app = create_app(critic, config, ConsistencyModulatedExecution(), "cme")
    with serving(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        yield url, client


def judge(client: httpx.Client, *items: dict) -> httpx.Response:
    return client.post("/v1/judge", json={"items": list(items)})


def test_judge_answers_verdicts_in_order_with_scores_read_from_the_sent_pixels(server: tuple) -> None:
    _, client = server
    answer = judge(client, item(255, "a"), item(0, "b"), item(128, "c"), item(64, "d", text="unreadable"))
    assert answer.status_code == 200
    verdicts = [Verdict.from_dict(v) for v in answer.json()["verdicts"]]
    assert [v.score for v in verdicts] == [5, 1, 3, None]
    assert verdicts[3].invalid_reason == "no score found" and verdicts[3].raw == "???"
    assert answer.json()["score_range"] == [1, 5]


def test_reward_route_computes_cme_from_both_verdicts_and_marks_invalid_ones(server: tuple) -> None:
    _, client = server
    items = [{k: v for k, v in item(level, str(level)).items() if k != "dimension"} for level in (255, 128, 0)]
    items.append({**items[0], "id": "bad", "text": "unreadable"})
    answer = client.post("/v1/reward", json={"items": items})
    assert answer.status_code == 200
    body = answer.json()
    # PixelCritic gives both dimensions the same score s; CME = e * (0.6 + 0.4 c) with e = c = (s - 1) / 4.
    expected = [1.0, 0.5 * (0.6 + 0.4 * 0.5), 0.0]
    assert [r["total"] for r in body["rewards"][:3]] == pytest.approx(expected)
    assert body["rewards"][1]["components"] == {"execution": 0.5, "consistency": 0.5}
    assert body["rewards"][3] == {"total": None, "valid": False, "components": {"execution": None, "consistency": None}}
    assert body["verdicts"][0]["execution"]["score"] == 5 and body["reward"] == "cme"


def test_without_a_reward_strategy_the_reward_route_is_404(critic: PixelCritic) -> None:
    with serving(create_app(critic)) as url:
        answer = httpx.post(f"{url}/v1/reward", json={"items": []})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "no_reward"


def test_tokens_are_required_except_for_health(server: tuple) -> None:
    url, client = server
    missing = httpx.post(f"{url}/v1/judge", json={"items": [item(255)]})
    wrong = httpx.post(f"{url}/v1/judge", json={"items": [item(255)]}, headers={"Authorization": "Bearer nope"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "missing_token")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "wrong_token")
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    assert judge(client, item(255)).status_code == 200


def test_bodies_over_the_limit_are_413_declared_or_streamed(server: tuple) -> None:
    _, client = server
    big = {"items": [{**item(255), "text": "x" * 250_000}]}
    assert client.post("/v1/judge", json=big).status_code == 413
    chunks = iter([b'{"items": [' + b" " * 150_000, b" " * 150_000 + b"]}"])  # no Content-Length: chunked
    streamed = client.post("/v1/judge", content=chunks)
    assert (streamed.status_code, streamed.json()["error"]["code"]) == (413, "body_too_large")
    assert judge(client, item(255)).status_code == 200


def test_unknown_routes_and_methods_answer_json_errors(server: tuple) -> None:
    _, client = server
    assert client.get("/v2/judge").json()["error"]["code"] == "not_found"
    assert client.get("/v1/judge").status_code == 405


def test_a_repeated_id_is_answered_from_the_cache_without_judging_again(server: tuple, critic: PixelCritic) -> None:
    _, client = server
    first = judge(client, item(255, "same"))
    again = judge(client, item(255, "same"), item(0, "other"))
    assert again.json()["verdicts"][0] == first.json()["verdicts"][0]
    assert critic.judged == 2  # "same" once, "other" once
    assert client.get("/metrics").json()["items"] == {"judged": 2, "answered_from_cache": 1}


def test_an_id_reused_for_a_different_item_is_409(server: tuple) -> None:
    _, client = server
    judge(client, item(255, "x"))
    clash = judge(client, item(0, "x"))
    assert (clash.status_code, clash.json()["error"]["code"]) == (409, "id_conflict")
    assert judge(client, item(0, "x", dimension="consistency")).status_code == 200  # another dimension, another key


def test_a_retry_arriving_while_the_first_attempt_is_judged_waits_for_that_judgement() -> None:
    critic = PixelCritic(delay_s=0.3)
    with serving(create_app(critic, ServeConfig(max_wait_ms=0))) as url:
        answers: list[httpx.Response] = []
        threads = [
            threading.Thread(
                target=lambda: answers.append(httpx.post(f"{url}/v1/judge", json={"items": [item(255, "r")]}))
            )
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [a.status_code for a in answers] == [200] * 3 and critic.judged == 1


class Exploding(Critic):
    def judge(self, requests: list[JudgeRequest]) -> list[Verdict]:  # type: ignore[override]
        if any(r.text == "explode" for r in requests):
            raise RuntimeError("CUDA out of memory (pretend)")
        return [Verdict(r.dimension, 3) for r in requests]


def test_a_critic_that_raises_gives_500_and_the_next_request_is_served() -> None:
    with serving(create_app(Exploding(), ServeConfig(max_wait_ms=0))) as url:
        failed = httpx.post(f"{url}/v1/judge", json={"items": [item(1, "e", text="explode")]})
        after = httpx.post(f"{url}/v1/judge", json={"items": [item(1, "e")]})
        metrics = httpx.get(f"{url}/metrics").json()
    assert failed.status_code == 500 and "CUDA out of memory" in failed.json()["error"]["message"]
    # The failed judgement is forgotten, so the same id is judged afresh rather than replaying the failure.
    assert after.status_code == 200 and after.json()["verdicts"][0]["score"] == 3
    assert metrics["batches"]["failed"] == 1


def test_a_full_queue_answers_429_with_retry_after() -> None:
    critic = PixelCritic(delay_s=0.5)
    with serving(create_app(critic, ServeConfig(max_wait_ms=0, max_batch_size=1, max_pending=1))) as url:
        answers: list[httpx.Response] = []
        threads = [
            threading.Thread(
                target=lambda i=i: answers.append(httpx.post(f"{url}/v1/judge", json={"items": [item(i)]}))
            )
            for i in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    busy = [a for a in answers if a.status_code == 429]
    assert busy and all(a.json()["error"]["code"] == "busy" and a.headers["retry-after"] == "1" for a in busy)
    assert sum(a.status_code == 200 for a in answers) >= 2


def test_queued_work_is_bounded_by_decoded_pixels_not_only_by_items() -> None:
    critic = PixelCritic(delay_s=0.5)
    # Each item holds two 16x16 images (512 px); the queue takes 1,200 px: two items wait, a third is refused.
    config = ServeConfig(max_wait_ms=0, max_batch_size=1, max_pending=4096, max_pending_pixels=1200)
    with serving(create_app(critic, config)) as url:
        answers: list[httpx.Response] = []

        def send(i: int) -> None:
            answers.append(httpx.post(f"{url}/v1/judge", json={"items": [item(i, f"p{i}")]}, timeout=30))

        first = threading.Thread(target=send, args=(0,))
        first.start()
        time.sleep(0.2)  # the model works on item 0; the next ones queue
        rest = [threading.Thread(target=send, args=(i,)) for i in range(1, 5)]
        for t in rest:
            t.start()
            time.sleep(0.02)
        for t in [first, *rest]:
            t.join()
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(429) >= 1 and statuses.count(200) >= 3, statuses
    assert all("pixels" in a.json()["error"]["message"] for a in answers if a.status_code == 429)


def test_a_request_refused_part_way_leaves_none_of_its_items_queued() -> None:
    critic = PixelCritic(delay_s=0.5)
    with serving(create_app(critic, ServeConfig(max_wait_ms=0, max_batch_size=1, max_pending=2))) as url:
        busy = threading.Thread(target=lambda: httpx.post(f"{url}/v1/judge", json={"items": [item(9)]}, timeout=30))
        busy.start()
        time.sleep(0.2)  # the model works on that item; the queue is empty
        refused = httpx.post(f"{url}/v1/judge", json={"items": [item(1), item(2), item(3)]}, timeout=30)
        busy.join()
        time.sleep(0.8)  # long enough for anything left queued to be judged
    assert refused.status_code == 429
    assert critic.judged == 1, "items of the refused request were judged anyway"


def test_a_request_whose_client_went_away_is_dropped_before_it_is_judged() -> None:
    critic = PixelCritic(delay_s=1.0)
    with serving(create_app(critic, ServeConfig(max_wait_ms=0, max_batch_size=1))) as url:
        busy = threading.Thread(target=lambda: httpx.post(f"{url}/v1/judge", json={"items": [item(9)]}, timeout=30))
        busy.start()
        time.sleep(0.2)  # the model is busy for a second
        with pytest.raises(httpx.ReadTimeout):  # this client gives up and closes its connection
            httpx.post(f"{url}/v1/judge", json={"items": [item(200, "gone")]}, timeout=0.4)
        busy.join()
        time.sleep(0.3)
        metrics = httpx.get(f"{url}/metrics").json()
    assert critic.judged == 1, "the abandoned item was judged"
    assert metrics["queue"]["dropped_client_gone"] == 1


def test_the_journal_answers_retries_that_reach_a_restarted_server(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    first, second = PixelCritic(), PixelCritic()
    with serving(create_app(first, ServeConfig(journal=journal))) as url:
        sent = httpx.post(f"{url}/v1/judge", json={"items": [item(255, "j1"), item(0, "j2"), item(9)]}).json()
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [(r["id"], r["verdict"]["score"]) for r in lines] == [("j1", 5), ("j2", 1)]  # items without id: no line
    with journal.open("a") as f:
        f.write('{"id": "cut-by-a-cra')  # a crash mid-write leaves half a line; it must not stop a restart
    with serving(create_app(second, ServeConfig(journal=journal))) as url:
        again = httpx.post(f"{url}/v1/judge", json={"items": [item(255, "j1"), item(0, "j2")]}).json()
        clash = httpx.post(f"{url}/v1/judge", json={"items": [item(7, "j1")]})
    assert again["verdicts"] == sent["verdicts"][:2] and second.judged == 0
    assert clash.status_code == 409


def test_a_torn_journal_line_never_swallows_the_next_record(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    journal.write_text('{"id": "j0", "digest": "x", "verdict": {"dimension": "execution", "score": 5}}\n{"id": "cut')
    second, third = PixelCritic(), PixelCritic()
    with serving(create_app(second, ServeConfig(journal=journal))) as url:
        sent = httpx.post(f"{url}/v1/judge", json={"items": [item(255, "j3")]}).json()
    assert second.judged == 1
    # The half line was cut at start-up, so j3's record stands on its own line...
    assert [json.loads(line)["id"] for line in journal.read_text().splitlines()] == ["j0", "j3"]
    with serving(create_app(third, ServeConfig(journal=journal))) as url:
        again = httpx.post(f"{url}/v1/judge", json={"items": [item(255, "j3")]}).json()
    # ...and a retry that reaches the next restart is answered from it, not judged a second time.
    assert again["verdicts"] == sent["verdicts"] and third.judged == 0


def test_metrics_report_batches_latency_and_invalid_rate(server: tuple) -> None:
    _, client = server
    judge(client, item(255), item(0, text="unreadable"))
    client.post("/v1/judge", content=b"nope")
    metrics = client.get("/metrics").json()
    assert metrics["requests"]["/v1/judge"] == {"200": 1, "400": 1}
    assert metrics["verdicts"]["invalid_rate"] == 0.5 and metrics["batches"]["sizes"] == {"2": 1}
    assert metrics["latency_ms"]["/v1/judge"]["count"] == 2 and metrics["server"]["reward"] == "cme"
    prom = client.get("/metrics", params={"format": "prometheus"})
    assert prom.headers["content-type"].startswith("text/plain") and "firm_items_judged_total 2" in prom.text


def test_a_critic_without_an_in_process_model_has_no_chat(server: tuple) -> None:
    _, client = server
    chat = client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert (chat.status_code, chat.json()["error"]["code"]) == (404, "no_chat_model")
    assert client.get("/v1/models").json() == {"object": "list", "data": []}


def test_a_reward_mixing_edit_and_generation_dimensions_is_refused() -> None:
    from firm.rewards import WeightedSum

    with pytest.raises(ValueError, match="mixes edit and generation"):
        create_app(PixelCritic(), reward=WeightedSum({"execution": 1.0, "quality": 1.0}), reward_name="mixed")
