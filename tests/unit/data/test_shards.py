"""Atomic file writes: the final name only ever holds a complete file, even when the writer is SIGKILLed."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from firm.data.shards import atomic_path, remove_stale_partials

CHILD_TIMEOUT_S = 30


def test_a_normal_exit_renames_the_temporary_into_place(tmp_path: Path) -> None:
    final = tmp_path / "out" / "shard-000000.tar"  # the folder is created
    with atomic_path(final) as tmp:
        assert tmp == final.with_name(f".shard-000000.tar.{os.getpid()}.partial")
        tmp.write_bytes(b"complete")
        assert not final.exists()
        # Readers globbing for shards never see the file being written.
        assert list(final.parent.glob("*.tar")) == []
    assert final.read_bytes() == b"complete"
    assert sorted(p.name for p in final.parent.iterdir()) == ["shard-000000.tar"]


def test_an_existing_file_is_replaced_whole(tmp_path: Path) -> None:
    final = tmp_path / "verdicts.json"
    final.write_text("old")
    with atomic_path(final) as tmp:
        tmp.write_text("new")
        assert final.read_text() == "old"
    assert final.read_text() == "new"


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()], ids=["exception", "ctrl-c"])
def test_an_exception_leaves_neither_final_nor_temporary(tmp_path: Path, error: BaseException) -> None:
    final = tmp_path / "shard.tar"
    with pytest.raises(type(error)), atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise error
    assert list(tmp_path.iterdir()) == []


def test_an_exception_keeps_the_previous_file(tmp_path: Path) -> None:
    final = tmp_path / "shard.tar"
    final.write_bytes(b"previous")
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert final.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["shard.tar"]


def test_a_body_that_never_writes_the_temporary_is_an_error(tmp_path: Path) -> None:
    final = tmp_path / "shard.tar"
    with pytest.raises(FileNotFoundError, match=r"did not create the temporary file .*\.partial"), atomic_path(final):
        pass
    assert not final.exists()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX only")
def test_a_sigkilled_writer_leaves_only_a_partial_that_remove_stale_partials_clears(tmp_path: Path) -> None:
    final = tmp_path / "shard-000007.tar"
    script = textwrap.dedent(
        """
        import sys, time
        from firm.data.shards import atomic_path

        with atomic_path(sys.argv[1]) as tmp, open(tmp, "wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            print("ready", flush=True)
            time.sleep(120)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(final)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(child.stdout, selectors.EVENT_READ)
            ready = sel.select(timeout=CHILD_TIMEOUT_S)
        line = child.stdout.readline() if ready else ""
        if line.strip() != "ready":
            child.kill()
            _, err = child.communicate(timeout=CHILD_TIMEOUT_S)
            pytest.fail(f"the writer never got ready (stdout {line!r}); its stderr:\n{err}")
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=CHILD_TIMEOUT_S) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=CHILD_TIMEOUT_S)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()

    partial = tmp_path / f".shard-000007.tar.{child.pid}.partial"
    assert not final.exists()
    assert partial.read_bytes() == b"x" * 4096
    assert remove_stale_partials(tmp_path, final.name) == 1
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_partials_removes_only_that_names_temporaries(tmp_path: Path) -> None:
    names = [
        ".shard.tar.123.partial",  # stale: removed
        ".shard.tar.45.partial",  # stale: removed
        "shard.tar",  # the complete file
        ".shard.tar.gz.123.partial",  # another file's temporary
        ".other.tar.123.partial",
        ".shard.tar.abc.partial",  # not written by atomic_path
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert remove_stale_partials(tmp_path, "shard.tar") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])
    assert remove_stale_partials(tmp_path, "shard.tar") == 0
    assert remove_stale_partials(tmp_path / "absent", "shard.tar") == 0


def test_remove_stale_partials_wants_a_bare_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bare file name"):
        remove_stale_partials(tmp_path, "sub/shard.tar")
