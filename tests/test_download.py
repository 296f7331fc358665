"""`mae.download` end to end against a loopback HTTP server that supports (or, on request, breaks) ranges.

The server serves an in-memory payload on 127.0.0.1 and records every request's path and Range header, so
the tests check both the bytes that land on disk and what was asked of the server. No real network.
"""

from __future__ import annotations

import errno
import hashlib
import io
import random
import re
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import mae.download
import mae.files
from mae.download import DownloadError, download
from mae.files import OFFICIAL_FILES

PAYLOAD = random.Random(0).randbytes(300_000)
MD5 = hashlib.md5(PAYLOAD).hexdigest()
CHUNK = 16 * 1024  # small chunks: many progress updates and a resumable interruption point
FLIP = bytes(255 - i for i in range(256))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # "normal", "interrupt" (announce all, send half), "corrupt", "ignore-range", "missing", "unannounced-short"
    # (no Content-Length, half the body), "long" (5000 bytes more than announced by Content-Range or the file),
    # "wrong-start" (a range request answered 206 from byte 0)
    mode = "normal"
    payload = PAYLOAD
    requests: list[tuple[str, str | None]]  # (path, Range header) of every GET


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        srv = self.server
        wanted = self.headers.get("Range")
        srv.requests.append((self.path, wanted))
        if srv.mode == "missing":
            self.send_error(404)
            return
        body = srv.payload.translate(FLIP) if srv.mode == "corrupt" else srv.payload
        start = 0
        if wanted is not None and srv.mode != "ignore-range":
            match = re.fullmatch(r"bytes=(\d+)-", wanted)
            assert match, wanted
            start = 0 if srv.mode == "wrong-start" else int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:] + (b"\x01" * 5000 if srv.mode == "long" else b"")
        if srv.mode == "unannounced-short":  # no length: the end of the connection ends the body
            self.end_headers()
            self.wfile.write(rest[: len(rest) // 2])
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if srv.mode == "interrupt":  # announce everything, send half, hang up
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(rest)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def _url(srv: _Server, path: str = "/files/model.pth") -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def _get(srv: _Server, directory: Path, **kwargs: object) -> Path:
    options: dict[str, object] = {"url": _url(srv), "md5_prefix": MD5[:6], "progress": False, "timeout": 5.0}
    options.update(kwargs)
    return download("model.pth", directory, chunk_size=CHUNK, **options)  # type: ignore[arg-type]


def test_a_download_lands_complete_at_the_final_path(server: _Server, tmp_path: Path) -> None:
    path = _get(server, tmp_path / "new" / "dir")  # created on the way
    assert path == tmp_path / "new" / "dir" / "model.pth"
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pth"]  # no .part left
    assert server.requests == [("/files/model.pth", None)]


def test_an_interrupted_download_keeps_the_part_and_resumes_with_a_range(server: _Server, tmp_path: Path) -> None:
    server.mode = "interrupt"
    with pytest.raises(DownloadError, match=r"interrupted at 150000 of 300000 bytes.*again to resume"):
        _get(server, tmp_path)
    part = tmp_path / "model.pth.part"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth.part"]  # nothing at the final path
    assert part.read_bytes() == PAYLOAD[:150_000]

    server.mode = "normal"
    path = _get(server, tmp_path)
    assert server.requests[-1] == ("/files/model.pth", "bytes=150000-")
    assert path.read_bytes() == PAYLOAD
    assert not part.exists()


def test_a_part_that_is_already_complete_is_answered_416_and_kept(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "model.pth.part").write_bytes(PAYLOAD)
    path = _get(server, tmp_path)
    assert server.requests == [("/files/model.pth", f"bytes={len(PAYLOAD)}-")]
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "model.pth.part").exists()


def test_a_corrupted_transfer_is_rejected_and_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    server.mode = "corrupt"
    with pytest.raises(DownloadError, match=r"md5 .* not " + MD5[:6] + r".*corrupted.*again"):
        _get(server, tmp_path)
    assert list(tmp_path.iterdir()) == []
    # Without an md5 to check against, the same bytes would have been accepted: the check is what caught it.
    assert _get(server, tmp_path, md5_prefix=None).read_bytes() == PAYLOAD.translate(FLIP)


def test_a_server_that_ignores_ranges_makes_it_start_over(server: _Server, tmp_path: Path) -> None:
    server.mode = "ignore-range"
    (tmp_path / "model.pth.part").write_bytes(b"\0" * 1000)  # not a prefix of the payload: appending would show
    path = _get(server, tmp_path, md5_prefix=None)  # the size alone must come out right
    assert server.requests == [("/files/model.pth", "bytes=1000-")]  # it did ask to resume
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "model.pth.part").exists()


def test_an_existing_file_is_checked_and_never_touched(server: _Server, tmp_path: Path) -> None:
    final = tmp_path / "model.pth"
    final.write_bytes(PAYLOAD)
    assert _get(server, tmp_path) == final
    assert server.requests == []  # not downloaded again

    final.write_bytes(b"an older file")
    with pytest.raises(DownloadError, match=r"model\.pth: already exists.*md5.*Delete it"):
        _get(server, tmp_path)
    assert final.read_bytes() == b"an older file"
    assert server.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]


def test_an_official_name_uses_the_official_url_and_md5(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "mae_pretrain_vit_base.pth"
    assert OFFICIAL_FILES[name].md5_prefix == "8cad7c"
    assert OFFICIAL_FILES[name].url == "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth"
    monkeypatch.setattr(mae.files, "BASE_URL", _url(server, "/mae"))  # the official layout, served locally
    with pytest.raises(DownloadError, match="8cad7c"):  # the published md5 is checked: our payload fails it
        download(name, tmp_path, progress=False, timeout=5.0)
    assert server.requests == [("/mae/pretrain/mae_pretrain_vit_base.pth", None)]
    # An explicit md5 overrides the published one.
    assert download(name, tmp_path, md5_prefix=MD5, progress=False, timeout=5.0).read_bytes() == PAYLOAD


def test_bad_arguments_and_http_errors(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not an official file; valid names: .*mae_visualize_vit_large\.pth"):
        download("mae_vit_base.pth", tmp_path)
    with pytest.raises(ValueError, match="only http"):
        download("x.pth", tmp_path, url=(tmp_path / "x.pth").as_uri())
    with pytest.raises(ValueError, match="plain file name"):
        download("../x.pth", tmp_path, url=_url(server))
    with pytest.raises(ValueError, match="md5"):
        download("x.pth", tmp_path, url=_url(server), md5_prefix="not-hex")
    server.mode = "missing"
    with pytest.raises(DownloadError, match="HTTP 404"):
        _get(server, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert len(server.requests) == 1  # the argument errors never reached the server


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_tqdm_bar_on_a_terminal_only(
    server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _get(server, tmp_path / "quiet", progress=False)
    assert capsys.readouterr() == ("", "")

    _get(server, tmp_path / "log", progress=True)  # stderr is not a terminal here: two lines, no bar
    out, err = capsys.readouterr()
    assert out == "" and "\r" not in err and "%" not in err
    assert [line.split(" ")[0] for line in err.splitlines()] == ["downloading", "checking"]

    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    _get(server, tmp_path / "tty", progress=True)
    text = terminal.getvalue()
    assert "\rmodel.pth: 100%" in text and "300k/300k" in text  # tqdm's bar, in bytes, finished
    assert text.count("\n") == 3  # "downloading", the bar once finished, "checking the md5"

    monkeypatch.setitem(sys.modules, "tqdm", None)  # tqdm not installed: no bar, and a line says so
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    _get(server, tmp_path / "no-tqdm", progress=True)
    lines = terminal.getvalue().splitlines()
    assert lines[1] == "(no progress bar: tqdm is not installed; pip install tqdm)"
    assert len(lines) == 3 and "\r" not in terminal.getvalue()


# ------------------------------------------------------------------------------------------ failures
# Each must raise a DownloadError that names the file or URL, the problem and the fix, and never leave
# anything under the final name.


def _nothing_at_the_final_path(directory: Path) -> None:
    assert not (directory / "model.pth").exists()


def test_a_refused_connection(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/files/model.pth"
    with pytest.raises(DownloadError, match=r"could not connect \(.*refused.*\)\. Check the network connection"):
        download("model.pth", tmp_path, url=url, progress=False, timeout=5.0)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "model.pth.part").write_bytes(PAYLOAD[:1000])  # with a part to resume: say so, keep it
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download("model.pth", tmp_path, url=url, progress=False, timeout=5.0)
    assert (tmp_path / "model.pth.part").read_bytes() == PAYLOAD[:1000]
    _nothing_at_the_final_path(tmp_path)


def test_a_short_body_without_a_length_is_caught_by_the_md5(server: _Server, tmp_path: Path) -> None:
    server.mode = "unannounced-short"  # the server never said how long: only the md5 can tell
    with pytest.raises(DownloadError, match=r"md5 .* not " + MD5[:6] + r".*The partial file was deleted"):
        _get(server, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_long_body_after_a_resume_is_rejected(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "model.pth.part").write_bytes(PAYLOAD[:100_000])
    server.mode = "long"  # 206 for bytes 100000-299999 of 300000, then 5000 bytes too many
    with pytest.raises(DownloadError, match=r"received 305000 bytes where the server announced 300000; the partial"):
        _get(server, tmp_path)
    assert server.requests == [("/files/model.pth", "bytes=100000-")]
    assert list(tmp_path.iterdir()) == []


def test_a_long_body_from_the_start_is_caught_by_the_md5(server: _Server, tmp_path: Path) -> None:
    server.mode = "long"  # a 200 whose Content-Length includes the extra bytes: the size alone looks right
    with pytest.raises(DownloadError, match=r"md5 .* not " + MD5[:6]):
        _get(server, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_206_from_the_wrong_byte_is_refused(server: _Server, tmp_path: Path) -> None:
    part = tmp_path / "model.pth.part"
    part.write_bytes(PAYLOAD[:100_000])
    server.mode = "wrong-start"
    with pytest.raises(DownloadError, match=r"asked to resume at byte 100000, the server answered from byte 0\. Del"):
        _get(server, tmp_path)
    assert part.read_bytes() == PAYLOAD[:100_000]  # nothing appended: the wrong bytes never reached the file
    _nothing_at_the_final_path(tmp_path)


def test_a_416_with_another_size_deletes_the_part(server: _Server, tmp_path: Path) -> None:
    part = tmp_path / "model.pth.part"
    part.write_bytes(PAYLOAD + b"junk")  # longer than the server's file: no range of it is left to send
    with pytest.raises(DownloadError, match=r"has 300004 bytes but the server's file has 300000; the partial file"):
        _get(server, tmp_path)
    assert server.requests == [("/files/model.pth", "bytes=300004-")]
    assert list(tmp_path.iterdir()) == []
    assert _get(server, tmp_path).read_bytes() == PAYLOAD  # the next run starts afresh


class _FullDisk(io.FileIO):
    """A file on a disk with `room` bytes free: writes fail with ENOSPC once it is full (at `write`, or only at
    the flush on `close`, as a buffered writer reports it)."""

    room = 0
    at_close = False

    def write(self, data: object) -> int:
        view = memoryview(data).cast("B")  # type: ignore[arg-type]
        if len(view) > _FullDisk.room and not _FullDisk.at_close:
            super().write(view[: _FullDisk.room])
            _FullDisk.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        _FullDisk.room -= len(view)
        return super().write(view)

    def close(self) -> None:
        super().close()
        if _FullDisk.at_close and _FullDisk.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("at_close", [False, True], ids=["at-write", "at-close"])
def test_a_full_disk(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at_close: bool) -> None:
    monkeypatch.setattr(_FullDisk, "room", 100_000)
    monkeypatch.setattr(_FullDisk, "at_close", at_close)
    monkeypatch.setattr(mae.download, "open", lambda path, mode: _FullDisk(path, mode.replace("b", "")), raising=False)
    with pytest.raises(DownloadError, match=r"model\.pth\.part: could not be written \(\[Errno 28\] No space left on.*"
                       r"Free some space.*again to resume"):  # fmt: skip
        _get(server, tmp_path)
    _nothing_at_the_final_path(tmp_path)
    monkeypatch.undo()  # space again: the next run resumes from what reached the disk
    path = _get(server, tmp_path)
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "model.pth.part").exists()
