"""The JSON-lines record store: round trips, torn lines cut and reported, bad lines located, nothing half-written."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from firm.data.records import REPAIR_BLOCK_BYTES, RecordError, RecordStore, read_jsonl


def _records(store: RecordStore) -> list[dict[str, Any]]:
    out = []
    for where, rec in store.read():
        assert not isinstance(rec, RecordError), f"{where}: {rec}"
        out.append(rec)
    return out


def _errors(store: RecordStore) -> list[RecordError]:
    return [rec for _, rec in store.read() if isinstance(rec, RecordError)]


def test_round_trip_keeps_order_types_and_unicode(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "deeper" / "scores.jsonl"  # parents do not exist yet
    records: list[dict[str, Any]] = [
        {"key": "a", "score": 4, "ok": True, "tags": ["x", None]},
        {"key": "β", "text": "line\nbreak\u2028é"},
    ]
    store = RecordStore(path)
    assert store.append(records) == 2
    assert store.append([{"key": "c", "score": 1.5}]) == 1
    assert _records(store) == [*records, {"key": "c", "score": 1.5}]
    # One record per line, written as text rather than \u escapes.
    assert path.read_text(encoding="utf-8").count("\n") == 3
    assert "β" in path.read_text(encoding="utf-8")
    assert [where for where, _ in store.read()] == [f"{path}:1", f"{path}:2", f"{path}:3"]


def test_absent_file_reads_nothing_and_repairs_nothing(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "none.jsonl")
    assert list(store.read()) == []
    assert store.repair() == 0
    assert store.append([]) == 0
    assert not store.path.exists()


def test_torn_last_line_is_reported_after_the_complete_records(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"key": "a"}\n{"key": "b"}\n{"key": "c", "sc')
    items = list(RecordStore(path).read())
    assert [rec for _, rec in items[:2]] == [{"key": "a"}, {"key": "b"}]
    where, err = items[2]
    assert isinstance(err, RecordError)
    assert (where, err.where, err.line, err.torn) == (f"{path}:3", f"{path}:3", 3, True)
    assert "cut off mid-write" in str(err)


def test_torn_line_that_happens_to_be_valid_json_is_still_torn(tmp_path: Path) -> None:
    # The newline is the commit mark: a record without it may have lost fields after the cut, so it is not trusted.
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"key": "a"}\n{"key": "b"}')
    (err,) = _errors(RecordStore(path))
    assert err.torn and err.line == 2


def test_repair_cuts_the_torn_line_and_the_next_append_starts_on_its_own_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "r.jsonl"
    torn = b'{"key": "c", "sc'
    path.write_bytes(b'{"key": "a"}\n{"key": "b"}\n' + torn)
    store = RecordStore(path)
    with caplog.at_level(logging.WARNING, logger="firm.data.records"):
        assert store.append([{"key": "d"}]) == 1
    assert path.read_bytes() == b'{"key": "a"}\n{"key": "b"}\n{"key": "d"}\n'
    assert _records(store) == [{"key": "a"}, {"key": "b"}, {"key": "d"}]
    assert str(path) in caplog.text and f"{len(torn)} bytes" in caplog.text


def test_repair_returns_bytes_cut_and_is_a_no_op_on_a_clean_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"key": "a"}\n{"ke')
    store = RecordStore(path)
    assert store.repair() == 4
    assert path.read_bytes() == b'{"key": "a"}\n'
    assert store.repair() == 0
    assert path.read_bytes() == b'{"key": "a"}\n'


def test_repair_of_a_file_without_any_newline_empties_it(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"key": "a", "score"')
    assert RecordStore(path).repair() == 20
    assert path.read_bytes() == b""
    RecordStore(path).append([{"key": "b"}])
    assert path.read_bytes() == b'{"key": "b"}\n'


def test_repair_scans_back_across_blocks_of_a_large_file(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    records = [{"key": f"k{i:06d}", "pad": "x" * 100} for i in range(2000)]
    RecordStore(path).append(records)
    clean = path.read_bytes()
    assert len(clean) > 200 * 1024
    # A torn tail longer than one block makes the backward scan cross block boundaries to find the last newline.
    torn = b'{"key": "torn", "pad": "' + b"y" * (2 * REPAIR_BLOCK_BYTES + 17)
    with open(path, "ab") as f:
        f.write(torn)
    store = RecordStore(path)
    assert store.repair() == len(torn)
    assert path.read_bytes() == clean
    store.append([{"key": "next"}])
    assert _records(store) == [*records, {"key": "next"}]


def test_bad_lines_are_errors_with_their_line_numbers_and_blank_lines_are_skipped_but_counted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(
        b'{"key": "a"}\n'  # 1
        b"\n"  # 2: blank
        b"{not json}\n"  # 3
        b"   \n"  # 4: blank
        b"[1, 2]\n"  # 5
        b'"text"\n'  # 6
        b'{"key": "\xff\xfe"}\n'  # 7: not UTF-8
        b'{"key": "b"}\n'  # 8
    )
    items = list(RecordStore(path).read())
    assert [where for where, _ in items] == [f"{path}:{n}" for n in (1, 3, 5, 6, 7, 8)]
    assert items[0][1] == {"key": "a"} and items[-1][1] == {"key": "b"}
    errors = [rec for _, rec in items[1:-1]]
    assert all(isinstance(e, RecordError) and not e.torn for e in errors)
    assert [e.line for e in errors if isinstance(e, RecordError)] == [3, 5, 6, 7]
    reasons = [str(e) for e in errors]
    assert reasons[0].startswith(f"{path}:3 is not valid JSON")
    assert reasons[1] == f"{path}:5 is not a JSON object (it is an array)"
    assert reasons[2] == f"{path}:6 is not a JSON object (it is a string)"
    assert reasons[3].startswith(f"{path}:7 is not valid UTF-8")
    assert isinstance(errors[0], ValueError)


@pytest.mark.parametrize(
    ("bad", "error"),
    [({"when": {1, 2}}, TypeError), ("not a mapping", TypeError), ({"name": "\udcff"}, ValueError)],
    ids=["set-value", "not-a-mapping", "lone-surrogate"],
)
def test_an_unwritable_record_writes_nothing(tmp_path: Path, bad: Any, error: type[Exception]) -> None:
    path = tmp_path / "r.jsonl"
    store = RecordStore(path)
    store.append([{"key": "a"}])
    before = path.read_bytes()
    with pytest.raises(error, match="record 1 "):
        store.append([{"key": "b"}, bad, {"key": "c"}])
    assert path.read_bytes() == before


def test_context_manager_keeps_one_handle_and_repairs_once_on_open(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"batch": 0}\n{"bat')
    with RecordStore(path) as store:
        assert path.read_bytes() == b'{"batch": 0}\n'  # repaired on open, before any append
        handle = store._handle
        for batch in range(1, 4):
            assert store.append([{"batch": batch}]) == 1
            assert store._handle is handle
        # Each append is in the file at once, not held in a buffer until close.
        assert _records(RecordStore(path)) == [{"batch": b} for b in range(4)]
    assert store._handle is None
    store.close()  # idempotent
    assert store.append([{"batch": 4}]) == 1  # closed: opens and closes the file itself
    assert store._handle is None
    assert _records(store) == [{"batch": b} for b in range(5)]


def test_open_returns_the_store_and_close_releases_it(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "j.jsonl").open()
    try:
        store.append([{"n": 1}])
        assert store.open() is store  # opening an open store does nothing
    finally:
        store.close()
    assert _records(store) == [{"n": 1}]


def test_fsync_true_syncs_each_append_and_false_does_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync: Callable[[int], None] = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    plain = RecordStore(tmp_path / "plain.jsonl")
    plain.append([{"n": 1}])
    assert synced == []

    durable = RecordStore(tmp_path / "durable.jsonl", fsync=True)
    durable.append([{"n": 1}])  # creates the file: the file and (on POSIX) its folder are synced
    assert len(synced) >= 1
    synced.clear()
    with durable:
        durable.append([{"n": 2}])
        durable.append([{"n": 3}])
    assert len(synced) == 2
    assert _records(durable) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert json.loads((tmp_path / "durable.jsonl").read_text().splitlines()[-1]) == {"n": 3}


def test_read_jsonl_takes_a_last_line_without_newline_as_a_whole_record(tmp_path: Path) -> None:
    # Files that people and other tools write often end without a newline; nobody was killed mid-write there.
    path = tmp_path / "input.jsonl"
    path.write_text('{"a": 1}\n\n{"b": 2}')
    assert list(read_jsonl(path)) == [(f"{path}:1", {"a": 1}), (f"{path}:3", {"b": 2})]
    assert list(read_jsonl(path, blank=True))[1] == (f"{path}:2", None)
    # The store's own files keep the stricter reading: there it is a torn record.
    last = list(RecordStore(path).read())[-1][1]
    assert isinstance(last, RecordError) and last.torn
