"""``worldmill models pull | ls`` against a local stand-in of the Hugging Face Hub's HTTP API.

The stand-in (``http.server`` on a free loopback port) serves what ``snapshot_download`` of
huggingface_hub 2.x really calls: ``GET /api/models/{repo}/revision/{rev}`` (model info with the
commit), ``GET /api/models/{repo}/tree/{commit}?recursive=…`` (the file list), and ``HEAD``/``GET
/{repo}/resolve/{commit}/{path}`` with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``, ranges
answered with 206. Unknown repos answer 401 ``RepoNotFound``, unknown revisions 404
``RevisionNotFound`` and gated repos 401 (no token) or 403 (a token without access) ``GatedRepo``,
as the Hub does. Every request is recorded, so a test can count downloads.

The CLI runs in a subprocess (``python -m worldmill.cli``) with ``HF_ENDPOINT`` pointing at the
stand-in and ``HF_HOME`` in a temporary folder: huggingface_hub reads both when it is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from huggingface_hub import snapshot_download
from huggingface_hub.errors import IncompleteSnapshotError
from typer.testing import CliRunner

from worldmill.cli.main import app
from worldmill.contracts.cards import ControlType, builtin_cards
from worldmill.contracts.checkpoints import (
    GUARDRAIL_DOWNLOADS,
    GUARDRAIL_REPOS,
    NoCheckpointError,
    controlnet_revision,
    guardrail_pull_command,
    hub_downloads,
    parse_controls,
    pipeline_revision,
    pull_command,
)

PREDICT_2B = "nvidia/Cosmos-Predict2.5-2B"
TRANSFER = "nvidia/Cosmos-Transfer2.5-2B"
GUARD = "nvidia/Cosmos-1.0-Guardrail"
QWEN = "Qwen/Qwen3Guard-Gen-0.6B"
GOOD_TOKEN = "hf_good_token"


def _blob(seed: str, size: int) -> bytes:
    """Deterministic bytes of a given size (distinct per seed)."""
    return random.Random(seed).randbytes(size)


def _commit(repo: str, revision: str) -> str:
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()  # noqa: S324 - a fake commit id, not security


@dataclass
class FakeRepo:
    """A repo: branch → files (path → bytes); a branch's commit id derives from its name."""

    branches: dict[str, dict[str, bytes]]
    gated: bool = False

    def commit_of(self, repo: str, revision: str) -> str | None:
        if revision in self.branches:
            return _commit(repo, revision)
        for name in self.branches:
            if _commit(repo, name) == revision:
                return revision
        return None

    def files_at(self, repo: str, commit: str) -> dict[str, bytes]:
        for name, files in self.branches.items():
            if _commit(repo, name) == commit:
                return files
        return {}


@dataclass
class FakeHub:
    """The stand-in's state: its repos, what it was asked, and the faults to inject."""

    repos: dict[str, FakeRepo]
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    drop_once: set[str] = field(default_factory=set)  # file paths whose first full GET is cut mid-body
    fail_get: set[str] = field(default_factory=set)  # file paths whose GET answers 500
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def gets(self, repo: str | None = None) -> list[tuple[str, dict[str, str]]]:
        """(path, headers with lower-case names) of the file downloads (GET …/resolve/…), optionally of one repo."""
        with self.lock:
            return [
                (p, h)
                for m, p, h in self.requests
                if m == "GET" and "/resolve/" in p and (repo is None or p.startswith(f"/{repo}/"))
            ]


def _files(files: dict[str, bytes]) -> list[dict[str, Any]]:
    listing: list[dict[str, Any]] = []
    folders: set[str] = set()
    for path, data in sorted(files.items()):
        parts = path.split("/")
        for i in range(1, len(parts)):
            folders.add("/".join(parts[:i]))
        entry: dict[str, Any] = {
            "type": "file",
            "oid": hashlib.sha1(data).hexdigest(),  # noqa: S324 - git blob ids are sha1
            "size": len(data),
            "path": path,
        }
        if len(data) > 1000:
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        listing.append(entry)
    listing += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in sorted(folders)]
    return listing


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            return

        def _error(self, status: int, code: str, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _repo(self, repo: str) -> FakeRepo | None:
            found = hub.repos.get(repo)
            if found is None:
                self._error(401, "RepoNotFound", "Repository not found")
            return found

        def _revision(self, repo: str, fake: FakeRepo, revision: str) -> str | None:
            commit = fake.commit_of(repo, revision)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return commit

        def _route(self) -> None:
            split = urlsplit(self.path)
            parts = [unquote(p) for p in split.path.split("/")[1:]]
            with hub.lock:
                hub.requests.append(
                    (self.command, unquote(split.path), {k.lower(): v for k, v in self.headers.items()})
                )
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
                repo = f"{parts[2]}/{parts[3]}"
                if (fake := self._repo(repo)) is None or (commit := self._revision(repo, fake, parts[5])) is None:
                    return
                files = fake.files_at(repo, commit)
                if parts[4] == "revision":
                    self._json(
                        {
                            "id": repo,
                            "sha": commit,
                            "private": False,
                            "gated": "manual" if fake.gated else False,
                            "siblings": [{"rfilename": p} for p in sorted(files)],
                        }
                    )
                elif [v.lower() for v in parse_qs(split.query).get("recursive", [])] != ["true"]:
                    self._error(400, "", f"the stand-in lists recursively only, got {split.query!r}")
                else:
                    self._json(_files(files))
                return
            if len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
                return
            self._error(404, "EntryNotFound", f"no route {split.path}")

        def _resolve(self, repo: str, revision: str, path: str) -> None:
            if (fake := self._repo(repo)) is None or (commit := self._revision(repo, fake, revision)) is None:
                return
            if fake.gated:
                auth = self.headers.get("Authorization", "")
                if not auth:
                    self._error(
                        401,
                        "GatedRepo",
                        f"Access to model {repo} is restricted. You must have access to it and be authenticated "
                        "to access it. Please log in.",
                    )
                    return
                if auth != f"Bearer {GOOD_TOKEN}":
                    self._error(
                        403,
                        "GatedRepo",
                        f"Access to model {repo} is restricted and you are not in the authorized list. "
                        f"Visit {hub.url}/{repo} to ask for access.",
                    )
                    return
            data = fake.files_at(repo, commit).get(path)
            if data is None:
                self._error(404, "EntryNotFound", f"{path} does not exist on {revision}")
                return
            if self.command == "GET" and path in hub.fail_get:
                self._error(500, "", "Internal Error")
                return
            start = 0
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes="):
                start = int(ranged.removeprefix("bytes=").split("-")[0])
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if self.command == "HEAD":
                return
            with hub.lock:
                cut = not start and path in hub.drop_once
                hub.drop_once.discard(path)
            if cut:  # half the body, then the connection goes away
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(data[start:])

        def do_GET(self) -> None:
            self._route()

        def do_HEAD(self) -> None:
            self._route()

    return Handler


def _repos() -> dict[str, FakeRepo]:
    """Tiny stand-ins of the Cosmos repos, with branches and files a pull must leave alone.

    Every file's content is distinct: the cache stores blobs by content, so two equal files are
    downloaded once.
    """
    pipeline = {
        "model_index.json": b'{"_class_name": "Cosmos2_5_TransferPipeline"}',
        "transformer/config.json": b'{"part": "transformer"}',
        "transformer/diffusion_pytorch_model.safetensors": _blob("transfer-transformer", 300_000),
        "vae/config.json": b'{"part": "vae"}',
    }

    def controlnet(kind: str) -> dict[str, bytes]:
        return {
            "config.json": f'{{"control": "{kind}"}}'.encode(),
            "diffusion_pytorch_model.safetensors": _blob(f"controlnet-{kind}", 20_000),
        }

    return {
        TRANSFER: FakeRepo(
            branches={
                "main": {"general/edge/original_ema_bf16.pt": _blob("original-pt", 50_000)},
                "diffusers/general": pipeline,
                "diffusers/controlnet/general/edge": controlnet("edge"),
                "diffusers/controlnet/general/depth": controlnet("depth"),
                "diffusers/controlnet/general/blur": controlnet("blur"),
                # no seg branch: a pull of it must say the revision does not exist
            }
        ),
        PREDICT_2B: FakeRepo(
            gated=True,
            branches={
                "diffusers/base/post-trained": {
                    "model_index.json": b'{"_class_name": "Cosmos2_5_PredictBasePipeline"}',
                    "transformer/diffusion_pytorch_model.safetensors": _blob("predict-transformer", 40_000),
                }
            },
        ),
        GUARD: FakeRepo(
            branches={
                "main": {
                    "blocklist/custom/words.txt": b"forbidden\n",
                    "blocklist/nltk_data/tokenizers/punkt.txt": b"punkt\n",
                    "face_blur_filter/Resnet50_Final.pth": _blob("retinaface", 30_000),
                    "aegis/llama_guard_huge.bin": _blob("not-needed", 80_000),
                    "video_content_safety_filter/safety_filter.pt": _blob("not-needed-either", 10_000),
                }
            }
        ),
        QWEN: FakeRepo(
            branches={
                "main": {"config.json": b'{"model_type": "qwen3"}', "model.safetensors": _blob("qwen3guard", 25_000)}
            }
        ),
        "someone/unrelated-model": FakeRepo(branches={"main": {"weights.bin": _blob("unrelated", 5_000)}}),
    }


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    """The stand-in hub on a free loopback port, stopped after the test."""
    state = FakeHub(repos=_repos())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def _cli(args: list[str], hub: FakeHub | None, home: Path, token: str | None = None) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1", "COLUMNS": "250", "NO_COLOR": "1"}
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    if token is not None:
        env["HF_TOKEN"] = token
    proc = subprocess.run(
        [sys.executable, "-m", "worldmill.cli", "models", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def _ls(cache: Path, home: Path) -> dict[str, Any]:
    run = _cli(["ls", "--json", "--cache-dir", str(cache)], None, home)
    assert run.code == 0, run.text
    report: dict[str, Any] = json.loads(run.out)
    return report


def _entry(report: dict[str, Any], card: str, revision: str) -> dict[str, Any]:
    (found,) = [e for e in report["cards"][card]["needs"] if e["revision"] == revision]
    return found


def _snapshot(cache: Path, repo: str, revision: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--")) / "snapshots" / _commit(repo, revision)


# -- the contracts -----------------------------------------------------------------------------------


def test_hub_downloads_transfer_edge_only_with_and_without_guardrail() -> None:
    """Transfer + edge → its pipeline, the edge controlnet and the guardrail's repos; --no-guardrail drops those."""
    transfer = builtin_cards()["cosmos-transfer2.5-2b"]
    got = hub_downloads(transfer, [ControlType.EDGE])
    assert [(d.repo, d.revision, d.role, d.control) for d in got] == [
        (TRANSFER, "diffusers/general", "pipeline", None),
        (TRANSFER, "diffusers/controlnet/general/edge", "controlnet", ControlType.EDGE),
        (GUARD, "main", "guardrail", None),
        (QWEN, "main", "guardrail", None),
    ]
    assert got[2].allow_patterns == ("blocklist/*", "face_blur_filter/Resnet50_Final.pth")
    assert got[0].gated and not got[3].gated
    bare = hub_downloads(transfer, [ControlType.EDGE], guardrail=False)
    assert [d.role for d in bare] == ["pipeline", "controlnet"]


def test_hub_downloads_all_controls_predict_synthetic_and_errors() -> None:
    """No controls → all four controlnets (vis = blur); Predict ignores controls; synthetic needs nothing."""
    cards = builtin_cards()
    transfer = hub_downloads(cards["cosmos-transfer2.5-2b"], guardrail=False)
    assert [d.revision for d in transfer if d.role == "controlnet"] == [
        "diffusers/controlnet/general/edge",
        "diffusers/controlnet/general/depth",
        "diffusers/controlnet/general/seg",
        "diffusers/controlnet/general/blur",
    ]
    predict = hub_downloads(cards["cosmos-predict2.5-14b"], [ControlType.EDGE], guardrail=False)
    assert [(d.repo, d.revision, d.role) for d in predict] == [
        ("nvidia/Cosmos-Predict2.5-14B", "diffusers/base/post-trained", "pipeline")
    ]
    assert hub_downloads(cards["synthetic"]) == ()
    assert pipeline_revision(cards["cosmos-predict2.5-2b"]) == "diffusers/base/post-trained"
    assert controlnet_revision(cards["cosmos-transfer2.5-2b"], ControlType.VIS) == "diffusers/controlnet/general/blur"
    with pytest.raises(NoCheckpointError, match="no controlnets"):
        controlnet_revision(cards["cosmos-predict2.5-2b"], ControlType.EDGE)
    no_repo = cards["cosmos-predict2.5-2b"].model_copy(update={"hub_id": None})
    with pytest.raises(NoCheckpointError, match="names no Hugging Face repo"):
        hub_downloads(no_repo)
    with pytest.raises(NoCheckpointError, match="has no diffusers weights"):
        pipeline_revision(cards["synthetic"].model_copy(update={"hub_id": "someone/procedural"}))


def test_pull_command_and_control_parsing() -> None:
    """The printed command lists controls in the canonical order; unknown control names are refused."""
    assert pull_command("cosmos-transfer2.5-2b", [ControlType.VIS, ControlType.EDGE]) == (
        "worldmill models pull cosmos-transfer2.5-2b --controls edge,vis"
    )
    assert pull_command("cosmos-predict2.5-2b") == "worldmill models pull cosmos-predict2.5-2b"
    assert guardrail_pull_command() == "worldmill models pull guardrail"
    assert GUARDRAIL_REPOS == ((GUARD, "main"), (QWEN, "main"))
    assert parse_controls(" vis, edge ,edge") == (ControlType.EDGE, ControlType.VIS)
    with pytest.raises(ValueError, match=r"unknown control\(s\) 'blurry'; valid: edge, depth, seg, vis"):
        parse_controls("edge,blurry")


# -- bad input ---------------------------------------------------------------------------------------


def test_unknown_card_or_control_exits_2_naming_the_field() -> None:
    """Bad names are refused before anything is downloaded, naming the field and listing the valid values."""
    runner = CliRunner()
    card = runner.invoke(app, ["models", "pull", "cosmos-predict9", "synthetic"], env={"COLUMNS": "250"})
    assert card.exit_code == 2, card.output
    assert "CARD: unknown model card(s) 'cosmos-predict9'" in card.output
    assert (
        "cosmos-predict2.5-14b, cosmos-predict2.5-2b, cosmos-transfer2.5-2b, cosmos3-nano, synthetic, guardrail"
        in card.output
    )
    control = runner.invoke(
        app, ["models", "pull", "cosmos-transfer2.5-2b", "--controls", "edge,sky"], env={"COLUMNS": "250"}
    )
    assert control.exit_code == 2, control.output
    assert "--controls: unknown control(s) 'sky'; valid: edge, depth, seg, vis" in control.output
    nothing = runner.invoke(app, ["models", "pull", "synthetic"], env={"COLUMNS": "250"})
    assert nothing.exit_code == 0, nothing.output
    assert "Nothing to download: synthetic needs no weights." in nothing.output


def test_without_huggingface_hub_the_commands_say_what_to_install(tmp_path: Path) -> None:
    """With huggingface_hub unimportable, pull and ls exit 1 naming the models extra."""
    code = (
        "import sys; sys.modules['huggingface_hub'] = None; sys.argv = ['worldmill', 'models', *sys.argv[1:]]; "
        "from worldmill.cli.main import main; main()"
    )
    for args in (["ls"], ["pull", "cosmos-predict2.5-2b"]):
        proc = subprocess.run(
            [sys.executable, "-c", code, *args, "--cache-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "250"},
            timeout=60,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "pip install 'worldmill[models]'" in proc.stderr
    assert not any(tmp_path.iterdir())


# -- pull and ls against the stand-in ---------------------------------------------------------------


def test_ls_on_an_empty_cache_says_missing(tmp_path: Path) -> None:
    """No cache folder yet: every needed revision is missing (with the pull command); synthetic is ready."""
    report = _ls(tmp_path / "no-cache-yet", tmp_path / "home")
    transfer = report["cards"]["cosmos-transfer2.5-2b"]
    assert not transfer["ready"]
    assert transfer["pull"] == "worldmill models pull cosmos-transfer2.5-2b"
    assert {e["status"] for c in report["cards"].values() for e in c["needs"]} == {"missing"}
    assert len(transfer["needs"]) == 7  # pipeline, four controlnets, two guardrail repos
    synthetic = report["cards"]["synthetic"]
    assert (synthetic["ready"], synthetic["needs"], synthetic["pull"]) == (True, [], None)
    assert synthetic["can"]["backends"] == ["synthetic"]
    assert report["other"] == []
    table = _cli(["ls", "--cache-dir", str(tmp_path / "no-cache-yet")], None, tmp_path / "home")
    assert table.code == 0, table.text
    assert "missing" in table.out
    assert "cosmos-transfer2.5-2b: not ready: run `worldmill models pull cosmos-transfer2.5-2b`" in table.out


def test_pull_fetches_exactly_the_needed_revisions_then_ls_and_a_second_pull(hub: FakeHub, tmp_path: Path) -> None:
    """Transfer + edge: the pipeline, the edge controlnet and the guardrail files, nothing else; ls reports them
    cached with their size; a second pull downloads nothing; the runner's offline look-ups find them."""
    cache, home = tmp_path / "cache", tmp_path / "home"
    first = _cli(["pull", "cosmos-transfer2.5-2b", "--controls", "edge", "--cache-dir", str(cache)], hub, home)
    assert first.code == 0, first.text
    assert first.out.count("downloaded") >= 4
    assert "All 4 download(s) are in the cache." in first.out

    wanted = {
        (TRANSFER, "diffusers/general"): set(hub.repos[TRANSFER].branches["diffusers/general"]),
        (TRANSFER, "diffusers/controlnet/general/edge"): {"config.json", "diffusion_pytorch_model.safetensors"},
        (GUARD, "main"): {
            "blocklist/custom/words.txt",
            "blocklist/nltk_data/tokenizers/punkt.txt",
            "face_blur_filter/Resnet50_Final.pth",
        },
        (QWEN, "main"): {"config.json", "model.safetensors"},
    }
    fetched = {path for path, _ in hub.gets()}
    expected = {f"/{repo}/resolve/{_commit(repo, rev)}/{f}" for (repo, rev), files in wanted.items() for f in files}
    assert fetched == expected
    for (repo, rev), files in wanted.items():
        snapshot = _snapshot(cache, repo, rev)
        assert {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()} == files
        for name in files:
            assert (snapshot / name).read_bytes() == hub.repos[repo].branches[rev][name]

    report = _ls(cache, home)
    pipeline = _entry(report, "cosmos-transfer2.5-2b", "diffusers/general")
    assert pipeline["status"] == "cached" and pipeline["verified"]
    assert pipeline["commit"] == _commit(TRANSFER, "diffusers/general")
    assert pipeline["size_on_disk"] == sum(len(b) for b in hub.repos[TRANSFER].branches["diffusers/general"].values())
    assert _entry(report, "cosmos-transfer2.5-2b", "diffusers/controlnet/general/edge")["status"] == "cached"
    assert _entry(report, "cosmos-transfer2.5-2b", "diffusers/controlnet/general/depth")["status"] == "missing"
    guard = next(e for e in report["guardrail"] if e["repo"] == GUARD)
    assert guard["status"] == "cached" and guard["files"] == 3
    assert guard["size_on_disk"] == sum(len(hub.repos[GUARD].branches["main"][f]) for f in wanted[(GUARD, "main")])
    assert not report["cards"]["cosmos-transfer2.5-2b"]["ready"]  # depth, seg and blur are not pulled
    assert report["other"] == [] and report["warnings"] == []
    table = _cli(["ls", "--cache-dir", str(cache)], None, home)
    assert table.code == 0 and "cached" in table.out and "missing" in table.out

    before = len(hub.gets())
    again = _cli(["pull", "cosmos-transfer2.5-2b", "--controls", "edge", "--cache-dir", str(cache)], hub, home)
    assert again.code == 0, again.text
    assert again.out.count("already cached") == 8  # each progress line and each table row
    assert "downloaded" not in again.out
    assert len(hub.gets()) == before

    # What the GPU runner does: local files only (no endpoint needed), the guardrail with its patterns.
    found = snapshot_download(TRANSFER, revision="diffusers/general", cache_dir=cache, local_files_only=True)
    assert Path(found) == _snapshot(cache, TRANSFER, "diffusers/general")
    (guard_download,) = [d for d in GUARDRAIL_DOWNLOADS if d.repo == GUARD]
    snapshot_download(
        GUARD,
        revision="main",
        cache_dir=cache,
        local_files_only=True,
        allow_patterns=list(guard_download.allow_patterns),
    )
    with pytest.raises(IncompleteSnapshotError):  # without the patterns the whole repo is expected
        snapshot_download(GUARD, revision="main", cache_dir=cache, local_files_only=True)


def test_an_interrupted_download_resumes_where_it_stopped(hub: FakeHub, tmp_path: Path) -> None:
    """The connection drops halfway through 24 MB of transformer weights: the rest is fetched with a Range request.

    huggingface_hub writes what it received in 10 MiB chunks, so it resumes at the last whole chunk.
    """
    big = "transformer/diffusion_pytorch_model.safetensors"
    hub.repos[TRANSFER].branches["diffusers/general"][big] = _blob("big-transformer", 24_000_000)
    hub.drop_once.add(big)
    cache = tmp_path / "cache"
    run = _cli(
        ["pull", "cosmos-transfer2.5-2b", "--controls", "vis", "--no-guardrail", "--cache-dir", str(cache)],
        hub,
        tmp_path / "home",
    )
    assert run.code == 0, run.text
    attempts = [h for p, h in hub.gets(TRANSFER) if p.endswith(big)]
    data = hub.repos[TRANSFER].branches["diffusers/general"][big]
    assert len(attempts) == 2
    assert "range" not in attempts[0]
    start = int(attempts[1]["range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= len(data) // 2
    assert (_snapshot(cache, TRANSFER, "diffusers/general") / big).read_bytes() == data
    assert not list((cache / f"models--{TRANSFER.replace('/', '--')}" / "blobs").glob("*.incomplete"))


def test_a_failed_file_is_reported_the_rest_is_pulled_and_a_rerun_fetches_only_it(hub: FakeHub, tmp_path: Path) -> None:
    """A 500 on one file: the other downloads still run, exit 1; the rerun fetches only what is missing."""
    hub.fail_get.add("model.safetensors")  # Qwen3Guard's weights
    cache, home = tmp_path / "cache", tmp_path / "home"
    first = _cli(
        ["pull", "guardrail", "cosmos-transfer2.5-2b", "--controls", "depth", "--cache-dir", str(cache)], hub, home
    )
    assert first.code == 1, first.text
    assert "HTTP 500" in first.out
    assert "failed: 1 of 4 download(s)" in first.err
    assert _entry(_ls(cache, home), "cosmos-transfer2.5-2b", "diffusers/controlnet/general/depth")["status"] == "cached"
    hub.fail_get.clear()
    before = len(hub.gets())
    again = _cli(
        ["pull", "guardrail", "cosmos-transfer2.5-2b", "--controls", "depth", "--cache-dir", str(cache)], hub, home
    )
    assert again.code == 0, again.text
    assert [p for p, _ in hub.gets()[before:]] == [f"/{QWEN}/resolve/{_commit(QWEN, 'main')}/model.safetensors"]
    assert again.out.count("already cached") == 6  # three downloads, each in its progress line and its table row


def test_a_gated_repo_says_where_to_accept_the_licence_and_to_set_hf_token(hub: FakeHub, tmp_path: Path) -> None:
    """Gated Predict without a token (401) and with a token lacking access (403): exit 1 after pulling the rest;
    the failed branch leaves no dangling ref behind; with access it downloads."""
    cache, home = tmp_path / "cache", tmp_path / "home"
    args = ["pull", "cosmos-predict2.5-2b", "cosmos-transfer2.5-2b", "--controls", "seg", "--no-guardrail"]
    args += ["--cache-dir", str(cache)]
    anonymous = _cli(args, hub, home)
    assert anonymous.code == 1, anonymous.text
    flat = " ".join(anonymous.text.split())
    assert f"{PREDICT_2B} is gated: accept its licence at {hub.url}/{PREDICT_2B}" in flat
    assert "HF_TOKEN is not set" in flat
    assert "revision 'diffusers/controlnet/general/seg' does not exist in nvidia/Cosmos-Transfer2.5-2B" in flat
    assert (_snapshot(cache, TRANSFER, "diffusers/general") / "model_index.json").is_file()  # the rest was pulled
    storage = cache / f"models--{PREDICT_2B.replace('/', '--')}"
    assert not (storage / "refs" / "diffusers" / "base" / "post-trained").exists()
    assert _ls(cache, home)["warnings"] == []

    no_access = _cli(args, hub, home, token="hf_someone_else")
    assert no_access.code == 1
    assert "HF_TOKEN is set, but its account has no access yet" in " ".join(no_access.text.split())

    granted = _cli(["pull", "cosmos-predict2.5-2b", "--no-guardrail", "--cache-dir", str(cache)], hub, home, GOOD_TOKEN)
    assert granted.code == 0, granted.text
    assert all(h.get("authorization") == f"Bearer {GOOD_TOKEN}" for _, h in hub.gets(PREDICT_2B))
    assert _entry(_ls(cache, home), "cosmos-predict2.5-2b", "diffusers/base/post-trained")["status"] == "cached"


def test_a_repo_that_does_not_exist_says_so(hub: FakeHub, tmp_path: Path) -> None:
    """The 14B repo is not on this hub: "not found", exit 1."""
    run = _cli(["pull", "cosmos-predict2.5-14b", "--no-guardrail", "--cache-dir", str(tmp_path / "c")], hub, tmp_path)
    assert run.code == 1, run.text
    assert "repo nvidia/Cosmos-Predict2.5-14B not found on" in " ".join(run.text.split())


def test_ls_on_a_locally_built_cache_reports_incomplete_and_other_repos(hub: FakeHub, tmp_path: Path) -> None:
    """A cache built by pulling from the stand-in: a deleted snapshot file shows as incomplete (naming it), and
    a repo no card needs is listed under the other repos."""
    cache, home = tmp_path / "cache", tmp_path / "home"
    run = _cli(
        ["pull", "cosmos-transfer2.5-2b", "--no-guardrail", "--controls", "edge", "--cache-dir", str(cache)], hub, home
    )
    assert run.code == 0, run.text
    snapshot_download("someone/unrelated-model", cache_dir=cache, endpoint=hub.url)
    (_snapshot(cache, TRANSFER, "diffusers/general") / "vae" / "config.json").unlink()
    report = _ls(cache, home)
    pipeline = _entry(report, "cosmos-transfer2.5-2b", "diffusers/general")
    assert pipeline["status"] == "incomplete"
    assert pipeline["missing_files"] == ["vae/config.json"]
    assert report["other"] == [
        {
            "repo": "someone/unrelated-model",
            "repo_type": "model",
            "commit": _commit("someone/unrelated-model", "main"),
            "refs": ["main"],
            "size_on_disk": 5_000,
            "files": 1,
        }
    ]
    table = _cli(["ls", "--cache-dir", str(cache)], None, home)
    assert "incomplete: 1 file(s) missing" in table.out
    assert "someone/unrelated-model" in table.out


def test_models_ls_says_what_each_card_can_do() -> None:
    """Every card with its modes, fps rule, chunk, sizes, controls and the backends that run it."""
    from worldmill.cli.models_commands import card_abilities  # noqa: PLC0415
    from worldmill.contracts.cards import builtin_cards  # noqa: PLC0415

    cards = builtin_cards()
    transfer = card_abilities(cards["cosmos-transfer2.5-2b"])
    assert transfer["modes"] == ["transfer"] and transfer["controls"] == ["depth", "edge", "seg", "vis"]
    assert "diffusers" in transfer["backends"] and transfer["native_fps"] == "the input's"
    predict = card_abilities(cards["cosmos-predict2.5-2b"])
    assert predict["native_fps"].startswith("16") and predict["frames_per_chunk"] == 93
    assert "synthetic" not in predict["backends"]  # the stand-in is not offered for a real model
    assert card_abilities(cards["synthetic"])["backends"] == ["synthetic"]
