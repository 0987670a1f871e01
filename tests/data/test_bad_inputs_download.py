"""Bad inputs of the download stage (issue 16): each is refused with a message naming the URL, file or member
and what was expected, and nothing is written outside its folder or left half-done.

``CASES`` lists every probe with the fragments its message must hold and the paths that must not exist
afterwards; add a case there to grow the set. Servers run on 127.0.0.1 only; nothing is downloaded.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import threading
import urllib.request
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
import yaml

from test_data_download import _fetch, _sha  # the quiet fetch and sha256 helpers of the download tests
from ucgm_core.data import download as dl
from ucgm_core.data import extract as ex
from ucgm_core.data.datasets import CATALOGUE
from ucgm_core.data.download import (
    BadArchiveError,
    ChecksumRequiredError,
    DownloadError,
    RemoteFile,
    UnsafeArchiveError,
    UnsafeNameError,
    check_file_name,
    fetch,
    name_from_url,
    safe_extract,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "workflow" / "scripts" / "download.py"
BIN = os.path.dirname(sys.executable)
BODY = bytes(range(256)) * 20  # 5120 bytes


# ---------------------------------------------------------------------------------------------
# A local HTTP server: files, endless 503s, redirects, bodies without Content-Length
# ---------------------------------------------------------------------------------------------


class _State:
    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.redirects: Dict[str, str] = {}  # path -> Location of a 302
        self.no_length: set = set()  # paths served without Content-Length (the body ends when the connection does)
        self.always_503: set = set()
        self.requests: List[str] = []


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        st: _State = self.server.state  # type: ignore[attr-defined]
        st.requests.append(self.path)
        if self.path in st.always_503:
            self.send_error(503, "busy")
        elif self.path in st.redirects:
            self.send_response(302)
            self.send_header("Location", st.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path in st.files:
            body = st.files[self.path]
            self.send_response(200)
            if self.path in st.no_length:
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404, "not here")


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = _State()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.state  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


class FakeClock:
    """A monotonic clock that advances ``step`` seconds each time it is read: deadlines without waiting."""

    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


# ---------------------------------------------------------------------------------------------
# Archives
# ---------------------------------------------------------------------------------------------


def _member(name: str, kind: str = "file", link: str = "") -> Tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "sym": tarfile.SYMTYPE,
        "hard": tarfile.LNKTYPE,
        "fifo": tarfile.FIFOTYPE,
        "chr": tarfile.CHRTYPE,
    }[kind]
    info.linkname = link
    return info, (b"data of " + name.encode()) if kind == "file" else b""


def _tar(path: Path, members: List[Tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for info, data in members:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data else None)
    return path


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------


@dataclass
class Probe:
    """One bad input: ``call`` must raise ``error`` whose message holds every string of ``expect``; afterwards no
    path of ``absent`` exists."""

    call: Callable[[], object]
    error: type
    expect: List[str]
    absent: List[Path] = field(default_factory=list)


def _url_name_escape(tmp: Path, base: str, st: _State, mp) -> Probe:
    """The audit's probe: ``..%2F`` in the URL's last component decodes to a name one folder up."""
    (tmp / "src" / "srcdir").mkdir(parents=True)
    (tmp / "src" / "payload.bin").write_bytes(BODY)
    url = (tmp / "src" / "srcdir").as_uri() + "/..%2Fpayload.bin"
    return Probe(
        lambda: name_from_url(url),
        UnsafeNameError,
        [url, "'../payload.bin'", "path separator", "expected a plain file name"],
    )


def _spec_name_escape(tmp: Path, base: str, st: _State, mp) -> Probe:
    (tmp / "src").mkdir()
    (tmp / "src" / "evil.bin").write_bytes(BODY)
    out = tmp / "work" / "out"
    spec = RemoteFile("../evil.bin", (str(tmp / "src") + "/",), sha256=_sha(BODY))
    return Probe(
        lambda: _fetch(spec, out),
        UnsafeNameError,
        ["'../evil.bin'", str(tmp / "src")],
        [out, tmp / "work" / "evil.bin"],
    )


def _size_cap_announced(tmp: Path, base: str, st: _State, mp) -> Probe:
    st.files["/big.bin"] = BODY
    spec = RemoteFile("big.bin", (base + "/big.bin",), sha256=_sha(BODY))
    return Probe(
        lambda: _fetch(spec, tmp / "out", max_bytes=1000),
        DownloadError,
        [base + "/big.bin", f"announces {len(BODY)} bytes", "size cap is 1000 bytes", "download.max_bytes"],
        [tmp / "out" / "big.bin", tmp / "out" / "big.bin.part"],
    )


def _size_cap_streamed(tmp: Path, base: str, st: _State, mp) -> Probe:
    st.files["/stream.bin"] = BODY
    st.no_length.add("/stream.bin")
    mp.setattr(dl, "_CHUNK", 512)
    spec = RemoteFile("stream.bin", (base + "/stream.bin",), sha256=_sha(BODY))
    return Probe(
        lambda: _fetch(spec, tmp / "out", max_bytes=1000),
        DownloadError,
        [base + "/stream.bin", "bytes seen", "size cap is 1000 bytes"],
        [tmp / "out" / "stream.bin", tmp / "out" / "stream.bin.part"],
    )


def _size_cap_local(tmp: Path, base: str, st: _State, mp) -> Probe:
    (tmp / "src").mkdir()
    (tmp / "src" / "f.bin").write_bytes(BODY)
    spec = RemoteFile("f.bin", ((tmp / "src" / "f.bin").as_uri(),), sha256=_sha(BODY))
    return Probe(
        lambda: _fetch(spec, tmp / "out", max_bytes=100),
        DownloadError,
        [(tmp / "src" / "f.bin").as_uri(), f"is {len(BODY)} bytes", "size cap is 100 bytes"],
        [tmp / "out" / "f.bin"],
    )


def _deadline_over_retries(tmp: Path, base: str, st: _State, mp) -> Probe:
    """1000 retries of an always-busy mirror stop at the overall deadline (the clock advances 10 s a read)."""
    st.always_503.add("/busy.bin")
    spec = RemoteFile("busy.bin", (base + "/busy.bin",), sha256=_sha(BODY))

    def call():
        return _fetch(spec, tmp / "out", retries=1000, deadline=25, clock=FakeClock(10.0), sleep=lambda s: None)

    return Probe(
        call,
        DownloadError,
        ["'busy.bin': deadline passed", base + "/busy.bin", "deadline of 25 s", "download.deadline_s"],
        [tmp / "out" / "busy.bin"],
    )


def _deadline_mid_transfer(tmp: Path, base: str, st: _State, mp) -> Probe:
    """A transfer that keeps sending is stopped by the deadline between reads, not only by a silent socket."""
    st.files["/slow.bin"] = BODY
    mp.setattr(dl, "_CHUNK", 100)
    spec = RemoteFile("slow.bin", (base + "/slow.bin",), sha256=_sha(BODY))
    call = lambda: _fetch(spec, tmp / "out", deadline=20, clock=FakeClock(1.0))  # noqa: E731
    return Probe(
        call,
        DownloadError,
        ["deadline passed", base + "/slow.bin", "bytes"],
        [tmp / "out" / "slow.bin", tmp / "out" / "slow.bin.part"],
    )


def _redirect_https_to_http(tmp: Path, base: str, st: _State, mp) -> Probe:
    """An https server cannot be faked offline: the redirect policy is called as urllib calls it."""
    req = urllib.request.Request("https://example.org/w.pt")

    def call():
        try:
            dl._NoDowngradeRedirects().redirect_request(req, io.BytesIO(), 302, "Found", {}, "http://example.org/w.pt")
        except dl._Permanent as e:
            raise e.err from None

    return Probe(call, ValueError, ["https://example.org/w.pt", "http://example.org/w.pt", "downgrades https to http"])


def _redirect_to_ftp(tmp: Path, base: str, st: _State, mp) -> Probe:
    st.redirects["/r.bin"] = "ftp://127.0.0.1/r.bin"
    spec = RemoteFile("r.bin", (base + "/r.bin",), sha256=_sha(BODY))
    return Probe(
        lambda: _fetch(spec, tmp / "out"),
        DownloadError,
        [base + "/r.bin", "redirect (302) to ftp://127.0.0.1/r.bin refused", "not http(s)"],
        [tmp / "out" / "r.bin"],
    )


def _no_checksum(tmp: Path, base: str, st: _State, mp) -> Probe:
    st.files["/w.pt"] = BODY
    spec = RemoteFile("w.pt", (base + "/w.pt",))
    call = lambda: _fetch(spec, tmp / "out", sha256_key="models.m.pretrained.sha256")  # noqa: E731
    return Probe(
        call,
        ChecksumRequiredError,
        [base + "/w.pt", "'w.pt'", "models.m.pretrained.sha256", "download.allow_unverified"],
        [tmp / "out"],
    )


def _archive_probe(
    members: List[Tuple[tarfile.TarInfo, bytes]], refused: str, why: str, no_data_filter: bool = False
) -> Callable[[Path, str, _State, object], Probe]:
    def make(tmp: Path, base: str, st: _State, mp) -> Probe:
        if no_data_filter:  # as on Python 3.10.0-3.10.11 and 3.11.0-3.11.3
            mp.delattr(tarfile, "data_filter")
        (tmp / "x").mkdir()
        arc = _tar(tmp / "x" / "bad.tar", members)
        return Probe(
            lambda: safe_extract(arc, tmp / "x" / "out"),
            UnsafeArchiveError,
            [str(arc), repr(refused), why, "nothing was extracted"],
            [tmp / "x" / "out", tmp / "x" / "escaped", tmp / "escaped"],
        )

    return make


def _corrupt_archive(truncated: bool) -> Callable[[Path, str, _State, object], Probe]:
    """Not an archive, or a tar.gz cut short: refused with the project's error, nothing left half-extracted."""

    def make(tmp: Path, base: str, st: _State, mp) -> Probe:
        arc = tmp / "bad.tar.gz"
        if truncated:
            with tarfile.open(arc, "w:gz") as tf:
                for k in range(3):
                    info = tarfile.TarInfo(f"f{k}")
                    info.size = 100_000
                    tf.addfile(info, io.BytesIO(os.urandom(100_000)))
            arc.write_bytes(arc.read_bytes()[:150_000])
        else:
            arc.write_bytes(b"this is no archive" * 100)
        return Probe(
            lambda: safe_extract(arc, tmp / "out"),
            BadArchiveError,
            [str(arc), "not a readable tar or zip archive", "nothing was extracted"],
            [tmp / "out"],
        )

    return make


CHAIN = [_member("a", "sym", "."), _member("a/b", "sym", ".."), _member("a/b/escaped")]

CASES: Dict[str, Callable[[Path, str, _State, object], Probe]] = {
    "url name ..%2F escapes": _url_name_escape,
    "spec name ../ escapes": _spec_name_escape,
    "size cap, Content-Length": _size_cap_announced,
    "size cap, streamed": _size_cap_streamed,
    "size cap, local file": _size_cap_local,
    "deadline over retries": _deadline_over_retries,
    "deadline mid-transfer": _deadline_mid_transfer,
    "redirect https -> http": _redirect_https_to_http,
    "redirect http -> ftp": _redirect_to_ftp,
    "no checksum": _no_checksum,
    "link chain a->., a/b->.., a/b/x": _archive_probe(CHAIN, "a/b", "would be extracted outside"),
    "link chain, no data filter": _archive_probe(CHAIN, "a/b", "would be extracted outside", no_data_filter=True),
    "link redirected by a later link": _archive_probe(
        [_member("x", "sym", "w/w2/../.."), _member("w", "sym", ".")], "x", "outside"
    ),
    "symlink to an absolute path": _archive_probe([_member("l", "sym", "/etc")], "l", "absolute path '/etc'"),
    "hard link outside": _archive_probe([_member("h", "hard", "../escaped")], "h", "outside"),
    "hard link to no earlier file": _archive_probe(
        [_member("h", "hard", "later"), _member("later")], "h", "not an earlier file"
    ),
    "absolute member": _archive_probe([_member("/escaped")], "/escaped", "absolute path"),
    "dot-dot member": _archive_probe([_member("ok"), _member("d/../../escaped")], "d/../../escaped", "'..'"),
    "fifo": _archive_probe([_member("ok"), _member("p", "fifo")], "p", "device, fifo"),
    "character device": _archive_probe([_member("c", "chr")], "c", "device, fifo"),
    "file replaces a symlink": _archive_probe([_member("a", "sym", "sub"), _member("a")], "a", "replaces the earlier"),
    "file used as a folder": _archive_probe([_member("f"), _member("f/g")], "f/g", "non-folder 'f'"),
    "not an archive": _corrupt_archive(truncated=False),
    "truncated tar.gz": _corrupt_archive(truncated=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused(case, tmp_path, server, monkeypatch):
    base, st = server
    probe = CASES[case](tmp_path, base, st, monkeypatch)
    with pytest.raises(probe.error) as err:
        probe.call()
    msg = str(err.value)
    for fragment in probe.expect:
        assert fragment in msg, f"{case}: {fragment!r} not in {msg!r}"
    for path in probe.absent:
        assert not os.path.lexists(path), f"{case}: {path} exists"
    # no temporary or partial file anywhere under the test's folder
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".part", ".tmp", ".extract"))]


@pytest.mark.parametrize(
    "name", ["", ".", "..", ".hidden", "-rf", "a\x00b", "a/b", "a\\b", "x y", "caf\u00e9.bin", "a" * 256]
)
def test_unsafe_file_names(name):
    with pytest.raises(UnsafeNameError) as err:
        check_file_name(name, "https://example.org/src")
    assert "https://example.org/src" in str(err.value) and repr(name) in str(err.value)


def test_plain_names_pass_and_catalogue_files_are_verified():
    """Every catalogue file (Fashion-MNIST, the default, among them) has a checksum and a plain name, so the
    default pipeline needs no allow_unverified."""
    for ok in ("train-images-idx3-ubyte.gz", "0000000.pt", "VIRTUAL_imagenet256_labeled.npz", "a%20b.pt"):
        assert check_file_name(ok, "x") == ok
    files = [f for ds in CATALOGUE.values() for f in ds.files]
    assert {f.name for f in CATALOGUE["fashion_mnist"].files} and files
    for f in files:
        assert f.sha256 or f.md5, f.name
        check_file_name(f.name, f.mirrors[0])


def test_record_first_seen_sha256(server, tmp_path):
    """allow_unverified: the file lands, its sha256 goes next to it, and the log names the config key."""
    base, st = server
    st.files["/w.pt"] = BODY
    said: List[str] = []
    path = fetch(
        RemoteFile("w.pt", (base + "/w.pt",)),
        tmp_path / "out",
        allow_unverified=True,
        sha256_key="models.m.pretrained.sha256",
        log=said.append,
    )
    assert path.read_bytes() == BODY
    assert (tmp_path / "out" / "w.pt.sha256").read_text() == f"{_sha(BODY)}  w.pt\n"
    assert any(_sha(BODY) in m and "models.m.pretrained.sha256" in m for m in said), said


def test_redirects_within_policy_are_followed(server, tmp_path):
    """http -> http (this server) is followed; the policy refuses downgrades only."""
    base, st = server
    st.files["/real.bin"] = BODY
    st.redirects["/moved.bin"] = base + "/real.bin"
    assert _fetch(RemoteFile("moved.bin", (base + "/moved.bin",), sha256=_sha(BODY)), tmp_path).read_bytes() == BODY
    req = urllib.request.Request("https://a.example/x")
    new = dl._NoDowngradeRedirects().redirect_request(req, io.BytesIO(), 302, "Found", {}, "https://b.example/x")
    assert new.full_url == "https://b.example/x"


@pytest.mark.filterwarnings("ignore:Python 3.14 will:DeprecationWarning")  # 3.12+ with data_filter hidden
@pytest.mark.parametrize("data_filter", [True, False])
def test_safe_archive_extracts_with_and_without_data_filter(tmp_path, monkeypatch, data_filter):
    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    arc = _tar(
        tmp_path / "ok.tar",
        [
            _member("d", "dir"),
            _member("d/f"),
            _member("d/l", "sym", "f"),
            _member("d/h", "hard", "d/f"),
            _member("up", "sym", "d/../d/f"),
        ],
    )
    (tmp_path / "out").mkdir()  # an empty folder is fine
    safe_extract(arc, tmp_path / "out")
    for name in ("d/f", "d/l", "d/h", "up"):
        assert (tmp_path / "out" / name).read_bytes() == b"data of d/f"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.tar", "out"]  # no temporary folder left


def test_extraction_failure_leaves_nothing(tmp_path, monkeypatch):
    """A failure while writing (disk full) removes the temporary folder; the destination never appears."""
    arc = _tar(tmp_path / "ok.tar", [_member("a"), _member("b")])

    def half_then_fail(tf, members, root, archive):
        Path(root, "a").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ex, "_extract_tar", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        safe_extract(arc, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.tar"]


def test_extract_into_non_empty_folder_is_refused(tmp_path):
    arc = _tar(tmp_path / "ok.tar", [_member("a")])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError) as err:
        safe_extract(arc, tmp_path / "out")
    assert str(tmp_path / "out") in str(err.value) and str(arc) in str(err.value)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_zip_members_are_checked(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        zf.writestr("../escaped", b"x")
    with pytest.raises(UnsafeArchiveError, match=re.escape(f"{bad}: member '../escaped'")):
        safe_extract(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "escaped").exists()


# ---------------------------------------------------------------------------------------------
# The command line and the rules
# ---------------------------------------------------------------------------------------------


def _script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_script_refuses_the_audit_probes_in_one_line(tmp_path):
    """The two probes of the audit, by hand: one line on stderr, status 1, no traceback, nothing written."""
    (tmp_path / "src" / "srcdir").mkdir(parents=True)
    (tmp_path / "src" / "payload.bin").write_bytes(BODY)
    url = (tmp_path / "src" / "srcdir").as_uri() + "/..%2Fpayload.bin"
    run = _script("--url", url, "--out-dir", "out", "--allow-unverified", cwd=tmp_path)
    assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
    assert url in run.stderr and "'../payload.bin'" in run.stderr and "Traceback" not in run.stderr + run.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    arc = _tar(tmp_path / "chain.tar", CHAIN)
    run = _script("--extract", str(arc), "--out-dir", "out", cwd=tmp_path)
    assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
    assert f"{arc}: member 'a/b'" in run.stderr and "Traceback" not in run.stderr + run.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.tar", "src"]


def test_rules_build_no_shell_string_from_config():
    """download.smk runs the script through Snakemake's script: directive; no shell: command at all."""
    text = (ROOT / "workflow" / "rules" / "download.smk").read_text()
    assert "shell:" not in text and text.count('"../scripts/download.py"') == 2
    # its size: tests/core/test_architecture.py::test_stage_scripts_are_thin (every stage script)


def test_fetch_rule_refuses_unverified_then_records(tmp_path):
    """The fetch rule, for real: a URL with sha256 null fails naming its config key (the log holds the message);
    with download.allow_unverified the file lands with its first-seen sha256 beside it."""
    weights = tmp_path / "sdvae.safetensors"
    weights.write_bytes(BODY)
    (tmp_path / "overlay.yaml").write_text(
        yaml.safe_dump({"autoencoders": {"sdvae_ema_f8c4": {"source": weights.as_uri(), "sha256": None}}})
    )
    (tmp_path / "allow.yaml").write_text(yaml.safe_dump({"download": {"allow_unverified": True}}))
    target = "results/downloads/autoencoders/sdvae_ema_f8c4/sdvae.safetensors"
    log = tmp_path / "results" / "logs" / "fetch" / "autoencoders" / "sdvae_ema_f8c4" / "sdvae.safetensors.log"
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))

    def snakemake(*configs: str) -> subprocess.CompletedProcess:
        cmd = [
            os.path.join(BIN, "snakemake"),
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--cores",
            "1",
            target,
            "--configfile",
            str(ROOT / "config" / "smoke.yaml"),
            *configs,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)

    run = snakemake(str(tmp_path / "overlay.yaml"))
    assert run.returncode != 0
    text = log.read_text()
    assert "no sha256 or md5 is configured for 'sdvae.safetensors'" in text, text
    assert "autoencoders.sdvae_ema_f8c4.sha256" in text and "download.allow_unverified" in text
    assert not (tmp_path / target).exists()
    run = snakemake(str(tmp_path / "overlay.yaml"), str(tmp_path / "allow.yaml"))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert (tmp_path / target).read_bytes() == BODY
    assert (tmp_path / (target + ".sha256")).read_text().split()[0] == _sha(BODY)
    assert "autoencoders.sdvae_ema_f8c4.sha256" in log.read_text()
