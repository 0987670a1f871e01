"""Downloads: mirrors, retries, resume, checksums (local HTTP server only) and safe extraction."""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from ucgm_core.data import download as dl
from ucgm_core.data.download import DownloadError, RemoteFile, UnsafeArchiveError, fetch, safe_extract

SCRIPT = Path(__file__).resolve().parents[2] / "workflow" / "scripts" / "download.py"


# ---------------------------------------------------------------------------------------------
# A tiny HTTP server with Range support and fault injection
# ---------------------------------------------------------------------------------------------


class _ServerState:
    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.fail_first: Dict[str, int] = {}  # path -> number of 503 answers before serving
        self.truncate: Dict[str, int] = {}  # path -> number of responses cut in half
        self.support_range = True
        self.log: List[Tuple[str, Optional[str], int]] = []  # (path, Range header, status)
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server_version = "TestMirror/1"

    def log_message(self, *args) -> None:  # keep pytest output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        st: _ServerState = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        with st.lock:
            if st.fail_first.get(self.path, 0) > 0:
                st.fail_first[self.path] -= 1
                st.log.append((self.path, rng, 503))
                self.send_error(503, "try again")
                return
            data = st.files.get(self.path)
            cut = st.truncate.get(self.path, 0) > 0
            if cut:
                st.truncate[self.path] -= 1
        if data is None:
            st.log.append((self.path, rng, 404))
            self.send_error(404, "not here")
            return
        start, status = 0, 200
        if rng and st.support_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                st.log.append((self.path, rng, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        st.log.append((self.path, rng, status))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = _ServerState()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, httpd.state  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(spec: RemoteFile, dest: Path, **kw) -> Path:
    kw.setdefault("backoff", 0.0)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("log", lambda m: None)
    return fetch(spec, dest, **kw)


PAYLOAD = os.urandom(200_000)


# ---------------------------------------------------------------------------------------------
# Mirrors, retries, resume, checksums
# ---------------------------------------------------------------------------------------------


def test_local_mirrors_file_url_and_plain_path(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "blob.bin").write_bytes(PAYLOAD)
    for mirror in (src.as_uri() + "/", str(src) + "/", str(src), str(src / "blob.bin")):
        dest = tmp_path / f"out{abs(hash(mirror))}"
        path = _fetch(RemoteFile("blob.bin", (mirror,), sha256=_sha(PAYLOAD)), dest)
        assert path == dest / "blob.bin" and path.read_bytes() == PAYLOAD
        assert not (dest / "blob.bin.part").exists()


def test_mirror_fallback_and_error_listing(server, tmp_path):
    base, st = server
    st.files["/b/blob.bin"] = PAYLOAD
    spec = RemoteFile("blob.bin", (str(tmp_path / "missing") + "/", base + "/a/", base + "/b/"), sha256=_sha(PAYLOAD))
    assert _fetch(spec, tmp_path / "out").read_bytes() == PAYLOAD
    # 404 is permanent: exactly one request to the first http mirror
    assert [p for p, _, s in st.log if s == 404] == ["/a/blob.bin"]


def test_retries_with_backoff_after_transient_errors(server, tmp_path):
    base, st = server
    st.files["/f.bin"] = PAYLOAD
    st.fail_first["/f.bin"] = 2
    sleeps: List[float] = []
    spec = RemoteFile("f.bin", (base + "/",), sha256=_sha(PAYLOAD))
    assert _fetch(spec, tmp_path, retries=3, backoff=0.25, sleep=sleeps.append).read_bytes() == PAYLOAD
    assert sleeps == [0.25, 0.5]
    assert [s for _, _, s in st.log] == [503, 503, 200]


def test_all_retries_fail_names_file_mirrors_and_reasons(server, tmp_path):
    base, st = server
    st.files["/f.bin"] = PAYLOAD
    st.fail_first["/f.bin"] = 10
    spec = RemoteFile("f.bin", (base + "/", str(tmp_path / "nowhere") + "/"), sha256=_sha(PAYLOAD))
    with pytest.raises(DownloadError) as err:
        _fetch(spec, tmp_path / "out", retries=2, sleep=lambda s: None)
    msg = str(err.value)
    assert "'f.bin'" in msg and "HTTP 503" in msg and "attempt 2/2" in msg
    assert str(tmp_path / "nowhere") in msg and "no such file" in msg
    assert not (tmp_path / "out" / "f.bin").exists()


def test_resume_after_connection_cut(server, tmp_path):
    base, st = server
    st.files["/big.bin"] = PAYLOAD
    st.truncate["/big.bin"] = 1
    spec = RemoteFile("big.bin", (base + "/",), sha256=_sha(PAYLOAD))
    assert _fetch(spec, tmp_path, retries=3).read_bytes() == PAYLOAD
    (p1, r1, s1), (p2, r2, s2) = st.log
    assert (r1, s1) == (None, 200)
    assert (r2, s2) == (f"bytes={len(PAYLOAD) // 2}-", 206)


def test_resume_of_existing_partial_file(server, tmp_path):
    base, st = server
    st.files["/big.bin"] = PAYLOAD
    (tmp_path / "big.bin.part").write_bytes(PAYLOAD[:12345])
    spec = RemoteFile("big.bin", (base + "/",), sha256=_sha(PAYLOAD))
    assert _fetch(spec, tmp_path).read_bytes() == PAYLOAD
    assert st.log == [("/big.bin", "bytes=12345-", 206)]


def test_complete_partial_file_gets_416_and_is_accepted(server, tmp_path):
    base, st = server
    st.files["/big.bin"] = PAYLOAD
    (tmp_path / "big.bin.part").write_bytes(PAYLOAD)
    assert _fetch(RemoteFile("big.bin", (base + "/",), sha256=_sha(PAYLOAD)), tmp_path).read_bytes() == PAYLOAD
    assert [s for _, _, s in st.log] == [416]


def test_corrupt_partial_file_restarts_from_scratch(server, tmp_path):
    base, st = server
    st.files["/big.bin"] = PAYLOAD
    (tmp_path / "big.bin.part").write_bytes(b"\0" * 5000)  # wrong prefix
    assert _fetch(RemoteFile("big.bin", (base + "/",), sha256=_sha(PAYLOAD)), tmp_path).read_bytes() == PAYLOAD
    assert [(r, s) for _, r, s in st.log] == [("bytes=5000-", 206), (None, 200)]


def test_server_without_range_support(server, tmp_path):
    base, st = server
    st.files["/big.bin"] = PAYLOAD
    st.support_range = False
    (tmp_path / "big.bin.part").write_bytes(PAYLOAD[:777])
    assert _fetch(RemoteFile("big.bin", (base + "/",), sha256=_sha(PAYLOAD)), tmp_path).read_bytes() == PAYLOAD


def test_checksum_mismatch_error_and_fallback(server, tmp_path):
    base, st = server
    good = b"the right bytes" * 100
    st.files["/bad/f.bin"] = b"the wrong bytes" * 100
    st.files["/good/f.bin"] = good
    spec = RemoteFile("f.bin", (base + "/bad/", base + "/good/"), sha256=_sha(good))
    assert _fetch(spec, tmp_path / "ok").read_bytes() == good
    only_bad = RemoteFile("f.bin", (base + "/bad/",), sha256=_sha(good))
    with pytest.raises(DownloadError) as err:
        _fetch(only_bad, tmp_path / "bad")
    msg = str(err.value)
    assert "checksum mismatch" in msg and _sha(good) in msg and _sha(st.files["/bad/f.bin"]) in msg
    assert "/bad/f.bin" in msg
    assert not any((tmp_path / "bad").iterdir())  # neither the file nor a .part is left


def test_md5_of_raw_file(tmp_path):
    (tmp_path / "a.bin").write_bytes(PAYLOAD)
    ok = RemoteFile("a.bin", (str(tmp_path) + "/",), md5=hashlib.md5(PAYLOAD).hexdigest())
    assert _fetch(ok, tmp_path / "o1").read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="md5: expected 0+"):
        _fetch(RemoteFile("a.bin", (str(tmp_path) + "/",), md5="0" * 32), tmp_path / "o2")


def test_gz_verified_by_decompressed_content(server, tmp_path):
    """Two different gzip encodings of the same content (as Debian vs upstream) both verify."""
    base, st = server
    content = b"IDX-like content " * 1000
    a = gzip.compress(content, compresslevel=1, mtime=1)
    b = gzip.compress(content, compresslevel=9, mtime=2)
    assert a != b
    st.files["/a/x.gz"], st.files["/b/x.gz"] = a, b
    for m in ("a", "b"):
        spec = RemoteFile("x.gz", (f"{base}/{m}/",), sha256=_sha(content))
        assert _fetch(spec, tmp_path / m).read_bytes() == st.files[f"/{m}/x.gz"]
    st.files["/c/x.gz"] = b"not gzip at all"
    with pytest.raises(DownloadError, match="decompressed content.*not gzip"):
        _fetch(RemoteFile("x.gz", (f"{base}/c/",), sha256=_sha(content)), tmp_path / "c")


def test_existing_destination_is_kept_or_replaced(server, tmp_path):
    base, st = server
    st.files["/f.bin"] = PAYLOAD
    spec = RemoteFile("f.bin", (base + "/",), sha256=_sha(PAYLOAD))
    _fetch(spec, tmp_path)
    _fetch(spec, tmp_path)
    assert len(st.log) == 1  # verified on disk, not fetched again
    (tmp_path / "f.bin").write_bytes(b"corrupted")
    assert _fetch(spec, tmp_path).read_bytes() == PAYLOAD
    assert len(st.log) == 2


def _script(*args: str) -> subprocess.CompletedProcess:
    """workflow/scripts/download.py run by hand, as a user would."""
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_script_url_and_help(server, tmp_path):
    base, st = server
    st.files["/d/f.bin"] = PAYLOAD
    run = _script("--url", base + "/d/f.bin", "--sha256", _sha(PAYLOAD), "--out-dir", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    run = _script("--url", base + "/d/f.bin", "--sha256", "0" * 64, "--out-dir", str(tmp_path / "x"), "--retries", "1")
    assert run.returncode == 1 and "checksum mismatch" in run.stdout
    # one line on stderr, naming the file and the last failure; no traceback
    assert run.stderr.count("\n") == 1 and "'f.bin'" in run.stderr and "checksum mismatch" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert not (tmp_path / "x" / "f.bin").exists()
    run = _script("--help")
    assert run.returncode == 0 and "--extract" in run.stdout


def test_library_has_no_command_line():
    """The command line lives in workflow/scripts/download.py: no argparse, no main, no catalogue import."""
    tree = ast.parse(Path(dl.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "argparse" not in imported and "datasets" not in imported, imported
    assert not hasattr(dl, "main")


# ---------------------------------------------------------------------------------------------
# Safe extraction
# ---------------------------------------------------------------------------------------------


def _tar(path: Path, members: List[tarfile.TarInfo], payloads: Dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for m in members:
            data = payloads.get(m.name)
            if data is not None:
                m.size = len(data)
                tf.addfile(m, io.BytesIO(data))
            else:
                tf.addfile(m)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def test_safe_extract_good_archive(tmp_path):
    arc = _tar(tmp_path / "ok.tar.gz", [_file("d/a.txt"), _link("d/l", "a.txt")], {"d/a.txt": b"hello"})
    safe_extract(arc, tmp_path / "out")
    assert (tmp_path / "out" / "d" / "a.txt").read_bytes() == b"hello"
    assert (tmp_path / "out" / "d" / "l").read_bytes() == b"hello"


@pytest.mark.parametrize(
    "member,payload",
    [
        (lambda: _file("../evil"), b"x"),
        (lambda: _file("ok/../../evil"), b"x"),
        (lambda: _file("/abs/evil"), b"x"),
        (lambda: _link("evil", "../../etc/passwd"), None),
        (lambda: _link("evil", "/etc/passwd"), None),
        (lambda: _link("evil", "../outside", hard=True), None),
    ],
)
def test_safe_extract_refuses_escaping_members(tmp_path, member, payload):
    m = member()
    arc = _tar(
        tmp_path / "bad.tar.gz",
        [_file("fine.txt"), m],
        {"fine.txt": b"ok", m.name: payload} if payload else {"fine.txt": b"ok"},
    )
    out = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract(arc, out)
    assert repr(m.name) in str(err.value)
    assert not (out / "fine.txt").exists()  # nothing is written before every member is checked
    assert not (tmp_path / "deep" / "evil").exists() and not (tmp_path / "evil").exists()


def test_safe_extract_zip(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("a/b.txt", b"zip ok")
    safe_extract(good, tmp_path / "g")
    assert (tmp_path / "g" / "a" / "b.txt").read_bytes() == b"zip ok"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../evil", b"x")
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./evil'"):
        safe_extract(bad, tmp_path / "b")
    assert not (tmp_path / "evil").exists()


def test_script_extract_refuses_with_one_line(tmp_path):
    arc = _tar(tmp_path / "bad.tar.gz", [_file("../evil")], {"../evil": b"x"})
    run = _script("--extract", str(arc), "--out-dir", str(tmp_path / "o"))
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "'../evil'" in run.stderr and str(arc) in run.stderr, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert not (tmp_path / "o").exists() and not (tmp_path / "evil").exists()


def test_schema_defaults_are_the_library_defaults():
    """The `download:` config keys default to what fetch does without them (one set of defaults, checked)."""
    import importlib.util
    import inspect

    import yaml

    schema = yaml.safe_load((SCRIPT.parent.parent / "schemas" / "config.schema.yaml").read_text())
    keys = {k: v["default"] for k, v in schema["properties"]["download"]["properties"].items()}
    spec = importlib.util.spec_from_file_location("ucgm_download_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # type: ignore[union-attr]; its main part runs only as __main__
    SETTINGS = script.SETTINGS  # config key -> fetch keyword
    params = inspect.signature(fetch).parameters
    assert set(keys) == set(SETTINGS)
    assert {SETTINGS[k]: v for k, v in keys.items()} == {SETTINGS[k]: params[SETTINGS[k]].default for k in keys}
    assert keys["max_bytes"] == dl.DEFAULT_MAX_BYTES and keys["deadline_s"] == dl.DEFAULT_DEADLINE_S
