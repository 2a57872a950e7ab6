"""The measuring tools behind ADR 0011 measure what they say (benchmarks.driver, .assets).

No timing is asserted: these check the counting (round trips, bytes per distribution, zipped
bytes), which the ADR's arguments rest on.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import assets
from benchmarks.driver import Timing, TurnCounter


@pytest.fixture
def line_server() -> Iterator[tuple[str, int]]:
    """Answers each complete line with "ok\\n", as PostgreSQL answers each Sync."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                pending = b""
                while data := conn.recv(65536):
                    pending += data
                    while b"\n" in pending:
                        _, pending = pending.split(b"\n", 1)
                        conn.sendall(b"ok\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[:2]
    thread.join(timeout=5)


def _ask(sock: socket.socket, *flights: bytes) -> None:
    for flight in flights:
        sock.sendall(flight)
    answer = b""
    while not answer.endswith(b"ok\n"):
        answer += sock.recv(65536)


def test_the_relay_counts_one_round_trip_per_answered_request(
    line_server: tuple[str, int],
) -> None:
    """Given the relay in front of a server that answers each line, when a client waits for
    three answers and then sends one request in two writes before reading, then it counts four
    round trips: writes the client makes without waiting for the server cost no extra one."""
    relay = TurnCounter(line_server)
    try:
        with socket.create_connection(("127.0.0.1", relay.port)) as client:
            for _ in range(3):
                _ask(client, b"select\n")
            _ask(client, b"parse;", b"sync\n")

        assert relay.turns == 4
    finally:
        relay.close()


def test_bytecode_compiled_after_the_install_counts_for_its_distribution(tmp_path: Path) -> None:
    """Given a pip --target directory whose RECORDs list the sources but not the bytecode
    compiled afterwards, when sizes are grouped per distribution, then each package's and each
    top-level module's bytecode counts for the distribution that installed the source."""
    site = tmp_path / "python"
    files = {
        "pkg/__init__.py": 10,
        "pkg/__pycache__/__init__.cpython-313.pyc": 20,
        "pkg.libs/libx.so": 300,
        "pkg-1.0.dist-info/RECORD": 0,
        "mod.py": 5,
        "__pycache__/mod.cpython-313.pyc": 7,
        "mod-2.0.dist-info/RECORD": 0,
    }
    for name, size in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(b"x" * size)
    (site / "pkg-1.0.dist-info/RECORD").write_text(
        "pkg/__init__.py,,10\npkg.libs/libx.so,,300\npkg-1.0.dist-info/RECORD,,\n"
    )
    (site / "mod-2.0.dist-info/RECORD").write_text("mod.py,,5\nmod-2.0.dist-info/RECORD,,\n")
    pkg_record = len((site / "pkg-1.0.dist-info/RECORD").read_bytes())
    mod_record = len((site / "mod-2.0.dist-info/RECORD").read_bytes())

    sizes = assets.distribution_sizes(site)

    assert sizes == {"pkg": 10 + 20 + 300 + pkg_record, "mod": 5 + 7 + mod_record}


def test_the_zipped_size_is_that_of_a_deflated_archive(tmp_path: Path) -> None:
    """Given a directory of compressible files, when it is measured, then the zipped bytes are
    far below the unzipped bytes (deflate, not stored) and every file is counted."""
    for i in range(3):
        (tmp_path / f"f{i}.txt").write_bytes(b"a" * 100_000)

    size = assets.tree_size(tmp_path)

    assert (size.files, size.unzipped_bytes) == (3, 300_000)
    assert 0 < size.zipped_bytes < 3_000


def test_timing_reports_the_median_and_the_95th_percentile() -> None:
    """Given the samples 1..100 ms, then the median is 50.5 and p95 the 95th smallest."""
    timing = Timing.of([float(ms) for ms in range(100, 0, -1)])

    assert (timing.n, timing.median_ms, timing.p95_ms, timing.min_ms, timing.max_ms) == (
        100,
        50.5,
        95.0,
        1.0,
        100.0,
    )
