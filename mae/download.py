"""Downloading checkpoint files: resumable, checksummed, and never a half-written file at the final path.

`download(name)` fetches one of the official files (`mae.files.OFFICIAL_FILES`) into `data_dir()` (or a
given directory) with the standard library only:
- The bytes go to `NAME.part` next to the destination; an interrupted transfer keeps it, and the next call
  resumes with an HTTP `Range` request (a server that ignores the range is answered by starting over).
- A complete transfer is checked against the expected size and, where an md5 prefix is known (given, else
  the published one), against the md5; only then is it renamed atomically to `NAME`.
- A file already at the destination is checked, never overwritten: a match returns at once, a mismatch is
  an error that tells the user to delete it.
Every failure is a `DownloadError` that names the file or URL, the problem and the fix.

Progress: a few plain lines on stderr (where from, resuming, the md5 check) and, on a terminal only, a
tqdm bar. tqdm is optional here (it comes with the `train` and `test` extras): without it there is no
bar, and a line says so. Off a terminal (a log, CI) no bar is drawn, so logs stay short.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Any, TextIO

from .errors import UserError
from .files import OFFICIAL_FILES, data_dir

PART_SUFFIX = ".part"
USER_AGENT = "mae-download/0.1 (Python urllib)"
_MB = 1e6
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)", re.IGNORECASE)
_RESUME = "Run the same command again to resume."
_RETRY = "Run the same command again."


class DownloadError(UserError, RuntimeError):
    """A download failed or its result cannot be trusted. The message names the file, the problem and the fix."""

    def __init__(self, path: str | Path, problem: str, fix: str = "") -> None:
        self.path, self.problem, self.fix = str(path), problem, fix
        super().__init__(f"{path}: {problem}" + (f" {fix}" if fix else ""))


def download(
    name: str,
    directory: str | Path | None = None,
    *,
    url: str | None = None,
    md5_prefix: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download `name` into `directory` (default: `data_dir()`) and return the path of the finished file.

    `name` is an official file name (a key of `OFFICIAL_FILES`) unless `url` is given, in which case it is
    only the destination file name (a mirror of an official file keeps the published md5). `md5_prefix`
    overrides the published md5 (any prefix of the hex digest). `progress` reports on stderr: a few lines,
    and a tqdm bar when stderr is a terminal and tqdm is installed. `timeout` bounds each network wait, in
    seconds. Raises `ValueError` for bad arguments and
    `DownloadError` for everything that goes wrong on the way.
    """
    entry = OFFICIAL_FILES.get(name)
    if url is None:
        if entry is None:
            raise ValueError(
                f"{name!r} is not an official file; valid names: {', '.join(OFFICIAL_FILES)}. "
                "Pass a url to download any other file."
            )
        url = entry.url
    _check_file_name(name)
    _check_url(url)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    expected_md5 = _normalise_md5(md5_prefix if md5_prefix is not None else entry.md5_prefix if entry else None)

    folder = Path(directory).expanduser() if directory else data_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise DownloadError(folder, "is not a directory.", "Choose another destination directory.") from e
    final = folder / name
    part = folder / (name + PART_SUFFIX)

    if final.exists() or final.is_symlink():
        return _check_existing(final, expected_md5, progress)

    _transfer(url, part, name=name, progress=progress, timeout=timeout, chunk_size=chunk_size)
    _check_md5_of_part(part, expected_md5, progress)
    if final.exists() or final.is_symlink():  # appeared while we were downloading: keep the user's file
        raise DownloadError(
            final, "appeared during the download; it was left untouched.", f"The download is kept at {part}."
        )
    os.replace(part, final)
    return final


# ------------------------------------------------------------------------------------------ checks


def _check_file_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or Path(name).name != name:
        raise ValueError(f"{name!r} is not a plain file name; pass the directory separately")


def _check_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r}: only http:// and https:// URLs can be downloaded")


def _normalise_md5(prefix: str | None) -> str | None:
    if prefix is None:
        return None
    normalised = prefix.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{1,32}", normalised):
        raise ValueError(f"{prefix!r} is not an md5 digest or a prefix of one (1 to 32 hexadecimal digits)")
    return normalised


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _check_existing(final: Path, expected_md5: str | None, progress: bool) -> Path:
    """A file the user already has: return it if it checks out, else say so; never touch it."""
    if not final.is_file():
        raise DownloadError(final, "exists and is not a regular file.", "Move it away or choose another directory.")
    if expected_md5 is None:
        _say(progress, f"{final} is already there (no md5 known to check it against)")
        return final
    actual = _md5_of(final)
    if not actual.startswith(expected_md5):
        raise DownloadError(
            final,
            f"already exists, but its md5 {actual} does not start with the expected {expected_md5}: it is not "
            "the expected file (an older version, or a broken copy). It was left untouched.",
            "Delete it and run the same command again to download a fresh copy.",
        )
    _say(progress, f"{final} is already there (md5 {expected_md5}... checked)")
    return final


def _check_md5_of_part(part: Path, expected_md5: str | None, progress: bool) -> None:
    if expected_md5 is None:
        return
    _say(progress, f"checking the md5 of {part.name}...")
    actual = _md5_of(part)
    if not actual.startswith(expected_md5):
        part.unlink()
        raise DownloadError(
            part,
            f"the downloaded bytes have md5 {actual}, not {expected_md5}...: the transfer was corrupted (or the "
            "server sent another file). The partial file was deleted.",
            _RETRY,
        )


# ------------------------------------------------------------------------------------------ transfer


def _transfer(url: str, part: Path, *, name: str, progress: bool, timeout: float, chunk_size: int) -> None:
    """Bring `part` to the complete file: resume it when it exists, start it otherwise."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        content_range = e.headers.get("Content-Range") if e.headers else None
        e.close()
        if e.code == 416 and offset:  # nothing left after `offset`: the part is already complete
            _check_complete_after_416(part, offset, content_range)
            return
        raise DownloadError(
            url,
            f"the server answered HTTP {e.code} {e.reason}.",
            "Check the file name or the URL." if e.code in (403, 404, 410) else _RETRY,
        ) from e
    except (OSError, HTTPException) as e:  # URLError (no route, refused, DNS), timeouts, protocol errors
        reason = getattr(e, "reason", None) or e
        raise DownloadError(
            url,
            f"could not connect ({reason}).",
            "Check the network connection and the URL, then "
            + ("run the same command again to resume." if offset else "run the same command again."),
        ) from e

    with response:
        length = _int_or_none(response.headers.get("Content-Length"))
        if response.status == 206 and offset:
            start, total = _parse_content_range(response.headers.get("Content-Range"), offset, length)
            if start != offset:
                raise DownloadError(
                    url,
                    f"asked to resume at byte {offset}, the server answered from byte {start}.",
                    f"Delete {part} and run the same command again.",
                )
            mode = "ab"
            _say(progress, f"resuming {name} at {offset / _MB:.1f} MB from {url}")
        elif response.status in (200, 206):  # 200 to a range request: the server ignores ranges
            if offset:
                _say(progress, f"the server cannot resume; downloading {name} again from the start")
            offset, total, mode = 0, length, "wb"
            size = f" ({total / _MB:.1f} MB)" if total is not None else ""
            _say(progress, f"downloading {name}{size} from {url}")
        else:
            raise DownloadError(url, f"unexpected answer HTTP {response.status} {response.reason}.", _RETRY)

        bar = _progress_bar(name, total, offset, enabled=progress)
        failure: BaseException | None = None
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        chunk = response.read(chunk_size)
                    except (OSError, HTTPException) as e:  # reset, timeout, IncompleteRead
                        failure = e
                        break
                    if not chunk:
                        break
                    f.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        except OSError as e:  # opening, writing or closing (the last flush) the part file: a full disk, say
            raise DownloadError(
                part,
                f"could not be written ({e}).",
                "Free some space (or fix the directory), then run the same command again to resume.",
            ) from e
        finally:  # also on Ctrl-C: end the bar's line; the part file stays for the next run
            if bar is not None:
                bar.close()

    done = part.stat().st_size  # what is on disk, not what was counted
    if failure is not None or (total is not None and done < total):
        of = f" of {total}" if total is not None else ""
        why = f" ({failure})" if failure is not None and str(failure) else ""
        raise DownloadError(
            part, f"the download from {url} was interrupted at {done}{of} bytes{why}.", _RESUME
        ) from failure
    if total is not None and done != total:
        part.unlink()
        raise DownloadError(
            part,
            f"received {done} bytes where the server announced {total}; the partial file was deleted.",
            _RETRY,
        )


def _int_or_none(text: str | None) -> int | None:
    if text is None or not text.strip().isdigit():
        return None
    return int(text)


def _parse_content_range(header: str | None, offset: int, length: int | None) -> tuple[int, int | None]:
    """(first byte, total size or None) of a 206 answer."""
    match = _CONTENT_RANGE.fullmatch(header.strip()) if header else None
    if match is None:  # no usable Content-Range: trust that it starts where we asked
        return offset, (offset + length if length is not None else None)
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _check_complete_after_416(part: Path, size: int, content_range: str | None) -> None:
    """A 416 answer to `Range: bytes=size-`: fine if the file has exactly `size` bytes (or the server won't say)."""
    match = _UNSATISFIED_RANGE.fullmatch(content_range.strip()) if content_range else None
    if match is not None and int(match.group(1)) != size:
        part.unlink()
        raise DownloadError(
            part,
            f"has {size} bytes but the server's file has {match.group(1)}; the partial file was deleted.",
            _RETRY,
        )


def _progress_bar(name: str, total: int | None, start: int, *, enabled: bool) -> Any:
    """A tqdm bar on stderr from byte `start`, or None: when not `enabled`, when stderr is not a terminal
    (logs stay quiet), or when tqdm is not installed (then a line says so)."""
    if not enabled or not _isatty(sys.stderr):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        _say(True, "(no progress bar: tqdm is not installed; pip install tqdm)")
        return None
    return tqdm(total=total, initial=start, desc=name, unit="B", unit_scale=True, file=sys.stderr, dynamic_ncols=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
