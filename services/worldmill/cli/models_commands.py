"""``worldmill models pull | ls``: model weights in the Hugging Face cache.

``pull`` fills the cache with exactly the repos and revisions the cards need
(:func:`worldmill.contracts.checkpoints.hub_downloads`), one ``snapshot_download`` each, with
huggingface_hub's own progress bars. huggingface_hub retries a dropped transfer from where it
stopped (HTTP ``Range``), skips every file already in the cache, and reads ``HF_TOKEN`` (or the
token saved by ``hf auth login``) and ``HF_ENDPOINT`` itself. Every download is tried; the table
at the end says for each what happened, and the exit code is 1 if any failed.

``ls`` reads the cache (``scan_cache_dir``) and says for each card's repo and revision whether it
is complete, comparing the snapshot with the file list huggingface_hub cached when it downloaded
it. A needed revision is inspected through the cache layout directly (refs → snapshot), because
``scan_cache_dir`` drops a whole repo as corrupted when one of its refs points to a commit without
a snapshot — what a failed pull of another branch of the same repo can leave behind.

huggingface_hub is imported inside the commands only: it is in the ``models`` extra.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from worldmill.cli.console import EXIT_FAILED, console, err_console, fail, fail_usage
from worldmill.contracts.backends import builtin_backends
from worldmill.contracts.cards import ControlType, FpsPolicy, ModelCard, builtin_cards
from worldmill.contracts.checkpoints import (
    GUARDRAIL_DOWNLOADS,
    GUARDRAIL_TARGET,
    HubDownload,
    NoCheckpointError,
    hub_downloads,
    parse_controls,
    pull_command,
)

if TYPE_CHECKING:
    from huggingface_hub import CachedRepoInfo

__all__ = ["models_app"]

models_app = typer.Typer(
    help="Download model weights into the Hugging Face cache, and list what is there.", no_args_is_help=True
)

CacheDir = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Hugging Face hub cache folder (default: HF_HUB_CACHE, else $HF_HOME/hub)."),
]
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_INSTALL = "huggingface_hub is not installed: install the models extra (pip install 'worldmill[models]')"


def _require_hub() -> None:
    if importlib.util.find_spec("huggingface_hub") is None:
        fail(escape(_INSTALL))


def _cache_root(cache_dir: Path | None) -> Path:
    from huggingface_hub import constants  # noqa: PLC0415

    return Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser().resolve()


def _storage(cache: Path, repo: str) -> Path:
    """The repo's folder in the cache (``models--org--name``, the hub cache layout)."""
    return cache / ("models--" + repo.replace("/", "--"))


def _human(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover - the loop returns at GB


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# -- what the cards need ---------------------------------------------------------------------------


def _card_names() -> list[str]:
    return sorted(builtin_cards())


def _needed(names: list[str], controls: tuple[ControlType, ...], guardrail: bool) -> list[tuple[str, HubDownload]]:
    """(target, download) for every download the targets need, the first target naming each; exit 2 on bad names."""
    cards = builtin_cards()
    unknown = [n for n in names if n not in cards and n != GUARDRAIL_TARGET]
    if unknown:
        fail_usage(
            f"CARD: unknown model card(s) {', '.join(repr(n) for n in unknown)}; valid: "
            f"{', '.join([*_card_names(), GUARDRAIL_TARGET])} ({GUARDRAIL_TARGET}: the safety checker's models alone)"
        )
    out: list[tuple[str, HubDownload]] = []
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    for name in dict.fromkeys(names):
        try:
            wanted = (
                GUARDRAIL_DOWNLOADS
                if name == GUARDRAIL_TARGET
                else hub_downloads(cards[name], controls, guardrail=guardrail)
            )
        except NoCheckpointError as exc:
            fail_usage(f"CARD: {exc}")
        for download in wanted:
            if download.key not in seen:
                seen.add(download.key)
                out.append((name, download))
    return out


# -- pull ------------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    target: str
    download: HubDownload
    status: str  # downloaded | already cached | failed
    detail: str = ""
    size: int | None = None
    commit: str | None = None


def _blob_sizes(blobs: Path) -> dict[str, int]:
    if not blobs.is_dir():
        return {}
    return {p.name: p.stat().st_size for p in blobs.iterdir() if p.is_file() and not p.name.endswith(".incomplete")}


def _folder_size(folder: Path) -> int:
    files = {p.resolve() for p in folder.rglob("*") if p.is_file()}
    return sum(p.stat().st_size for p in files)


def _reason(exc: Exception, download: HubDownload) -> str:
    """Why a download failed, in words, with what to do about it."""
    from huggingface_hub import constants, get_token  # noqa: PLC0415
    from huggingface_hub.errors import (  # noqa: PLC0415
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    url = f"{constants.ENDPOINT}/{download.repo}"
    token = (
        "HF_TOKEN is set, but its account has no access yet"
        if get_token()
        else "HF_TOKEN is not set, and no token was saved by `hf auth login`"
    )
    gated = (
        f"{download.repo} is gated: accept its licence at {url} with your Hugging Face account, "
        f"then set HF_TOKEN to a token of that account; {token}"
    )
    if isinstance(exc, GatedRepoError):
        return gated
    if isinstance(exc, RevisionNotFoundError):
        return f"revision {download.revision!r} does not exist in {download.repo}"
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"repo {download.repo} not found on {constants.ENDPOINT}: it does not exist, or it is private or gated "
            f"and needs HF_TOKEN; {token}"
        )
    if isinstance(exc, RemoteEntryNotFoundError):
        return f"a file listed in {download.repo}@{download.revision} is missing on the hub: {_first_line(exc)}"
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code
        if status in (401, 403):
            return f"access denied (HTTP {status}): {gated}"
        return f"HTTP {status} from {constants.ENDPOINT}: {_first_line(exc)}"
    if isinstance(exc, OfflineModeIsEnabled) or (isinstance(exc, LocalEntryNotFoundError) and constants.HF_HUB_OFFLINE):
        return "HF_HUB_OFFLINE is set and the files are not all in the cache: unset HF_HUB_OFFLINE to download"
    if isinstance(exc, LocalEntryNotFoundError):
        cause = exc.__cause__ or exc.__context__
        detail = f" ({type(cause).__name__}: {_first_line(cause)})" if cause is not None else ""
        return f"cannot reach {constants.ENDPOINT}{detail}; the files are not all in the cache"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _tidy_after_failure(storage: Path, revision: str, ref_before: str | None, existed: bool) -> None:
    """Leave the cache as a failed pull found it, as far as it is safe to.

    huggingface_hub records the branch's commit before it downloads the files, so a failure leaves
    the ref pointing at a commit without a snapshot: ``scan_cache_dir`` then drops the whole repo as
    corrupted, and offline readers lose the older snapshot the ref pointed to. The ref is put back
    (or removed), and a repo folder this pull created that holds no files at all is removed.
    """
    try:
        ref = storage / "refs" / revision
        now = ref.read_text().strip() if ref.is_file() else None
        dangling = now is not None and now != ref_before and not (storage / "snapshots" / now).is_dir()
        if dangling and not _COMMIT.fullmatch(revision):
            if ref_before is not None:
                ref.write_text(ref_before)
            else:
                ref.unlink()
                for parent in ref.parents:  # the empty folders of a branch name with slashes
                    if parent == storage / "refs" or not parent.is_dir() or any(parent.iterdir()):
                        break
                    parent.rmdir()
        if not existed and not (storage / "snapshots").exists() and not any((storage / "blobs").glob("*")):
            shutil.rmtree(storage, ignore_errors=True)
    except OSError:
        return


def _pull_one(target: str, download: HubDownload, cache: Path) -> _Outcome:
    from huggingface_hub import snapshot_download  # noqa: PLC0415

    storage = _storage(cache, download.repo)
    ref = storage / "refs" / download.revision
    ref_before = ref.read_text().strip() if ref.is_file() else None
    existed = storage.exists()
    blobs_before = _blob_sizes(storage / "blobs")
    try:
        folder = Path(
            snapshot_download(
                download.repo,
                revision=download.revision,
                cache_dir=cache,
                allow_patterns=list(download.allow_patterns) or None,
            )
        )
    except Exception as exc:  # every failure is reported in the table; the other downloads still run
        _tidy_after_failure(storage, download.revision, ref_before, existed)
        return _Outcome(target, download, "failed", _reason(exc, download))
    new = {k: v for k, v in _blob_sizes(storage / "blobs").items() if k not in blobs_before}
    size = _folder_size(folder)
    if new:
        return _Outcome(
            target, download, "downloaded", f"{len(new)} file(s), {_human(sum(new.values()))}", size, folder.name
        )
    return _Outcome(target, download, "already cached", "", size, folder.name)


def _pull_table(outcomes: list[_Outcome], cache: Path) -> Table:
    table = Table(title=f"Hugging Face cache {escape(str(cache))}")
    for column in ("repo", "revision", "role", "size", "status"):
        table.add_column(column, overflow="fold")
    colour = {"downloaded": "green", "already cached": "cyan", "failed": "red"}
    for o in outcomes:
        d = o.download
        role = d.role + (f" ({d.control.value})" if d.control else "")
        status = o.status + (f": {o.detail}" if o.detail else "")
        table.add_row(d.repo, d.revision, role, _human(o.size), f"[{colour[o.status]}]{escape(status)}[/]")
    return table


@models_app.command("pull")
def pull(
    cards: Annotated[
        list[str],
        typer.Argument(
            metavar="CARD",
            help=f"Model card ids ({', '.join(_card_names())}), or {GUARDRAIL_TARGET!r} for the safety checker alone.",
            show_default=False,
        ),
    ],
    controls: Annotated[
        str | None,
        typer.Option(
            "--controls",
            help="Transfer controlnets to fetch, e.g. edge,depth (edge, depth, seg, vis = blur); default: all four.",
        ),
    ] = None,
    guardrail: Annotated[
        bool, typer.Option("--guardrail/--no-guardrail", help="Also fetch the Cosmos safety checker's models.")
    ] = True,
    cache_dir: CacheDir = None,
) -> None:
    """Fill the Hugging Face cache with exactly the repos and revisions the cards need (HF_TOKEN for gated repos)."""
    try:
        chosen = parse_controls(controls) if controls is not None else ()
    except ValueError as exc:
        fail_usage(f"--controls: {exc}")
    if controls is not None and not chosen:
        fail_usage("--controls: give at least one control (edge, depth, seg, vis)")
    needed = _needed(cards, chosen, guardrail)
    if chosen and not any(builtin_cards()[n].family == "transfer" for n in cards if n in builtin_cards()):
        console.print("[yellow]--controls only applies to Transfer cards; ignored.[/]")
    if not needed:
        console.print(f"Nothing to download: {', '.join(cards)} needs no weights.")
        return
    _require_hub()
    cache = _cache_root(cache_dir)
    console.print(f"Pulling {len(needed)} repo revision(s) into {escape(str(cache))}")
    outcomes: list[_Outcome] = []
    for i, (target, download) in enumerate(needed, start=1):
        console.print(f"[bold][{i}/{len(needed)}][/] {download.repo} @ {escape(download.revision)} ({download.role})")
        outcome = _pull_one(target, download, cache)
        shown = outcome.status + (f": {outcome.detail}" if outcome.detail else "")
        (err_console if outcome.status == "failed" else console).print(f"    {escape(shown)}")
        outcomes.append(outcome)
    console.print(_pull_table(outcomes, cache))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        err_console.print(f"[bold red]failed:[/] {len(failed)} of {len(outcomes)} download(s); see the table above.")
        raise typer.Exit(EXIT_FAILED)
    console.print(f"All {len(outcomes)} download(s) are in the cache.")


# -- ls --------------------------------------------------------------------------------------------


@dataclass
class _State:
    status: str  # cached | incomplete | missing
    commit: str | None = None
    size: int = 0
    files: int = 0
    missing_files: list[str] = field(default_factory=list)
    verified: bool = True  # the file list huggingface_hub cached was there to compare with


def _snapshot_files(snapshot: Path) -> dict[str, Path]:
    """Relative path → file of a snapshot (broken links left out)."""
    return {p.relative_to(snapshot).as_posix(): p for p in snapshot.rglob("*") if p.is_file()}


def _wanted(path: str, patterns: list[str] | None) -> bool:
    """``allow_patterns`` as huggingface_hub applies them: case-sensitive fnmatch, ``*`` across ``/``."""
    if patterns is None:
        return True
    return any(fnmatch.fnmatchcase(path, p + "*" if p.endswith("/") else p) for p in patterns)


def _state(download: HubDownload, cache: Path) -> _State:
    from huggingface_hub import get_cached_repo_tree  # noqa: PLC0415
    from huggingface_hub.errors import CachedRepoTreeNotFoundError  # noqa: PLC0415

    storage = _storage(cache, download.repo)
    if _COMMIT.fullmatch(download.revision):
        commit: str | None = download.revision
    else:
        ref = storage / "refs" / download.revision
        commit = ref.read_text().strip() if ref.is_file() else None
    snapshot = storage / "snapshots" / commit if commit else None
    if commit is None or snapshot is None or not snapshot.is_dir():
        return _State("missing")
    patterns = list(download.allow_patterns) or None
    present = _snapshot_files(snapshot)
    wanted = {p: f for p, f in present.items() if _wanted(p, patterns)}
    size = sum(path.stat().st_size for path in {p.resolve() for p in wanted.values()})
    try:
        tree = get_cached_repo_tree(download.repo, revision=commit, cache_dir=cache)
    except CachedRepoTreeNotFoundError:
        return _State("cached" if wanted else "missing", commit, size, len(wanted), verified=False)
    expected = [f.path for f in tree if _wanted(f.path, patterns)]
    missing = sorted(p for p in expected if p not in present)
    return _State("incomplete" if missing else "cached", commit, size, len(wanted), missing)


def _entry(target: str, download: HubDownload, state: _State) -> dict[str, Any]:
    return {
        "card": target,
        "repo": download.repo,
        "revision": download.revision,
        "role": download.role,
        "control": download.control.value if download.control else None,
        "allow_patterns": list(download.allow_patterns),
        "status": state.status,
        "verified": state.verified,
        "commit": state.commit,
        "size_on_disk": state.size,
        "files": state.files,
        "missing_files": state.missing_files,
    }


def _others(cache: Path, matched: set[tuple[str, str]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Cached repo revisions no card needs (from ``scan_cache_dir``), and the scan's warnings."""
    from huggingface_hub import scan_cache_dir  # noqa: PLC0415
    from huggingface_hub.errors import CacheNotFound  # noqa: PLC0415

    try:
        info = scan_cache_dir(cache)
    except CacheNotFound:
        return [], []
    except ValueError as exc:  # the folder is a file
        fail_usage(f"--cache-dir: {exc}")
    repos: list[CachedRepoInfo] = sorted(info.repos, key=lambda r: (r.repo_type, r.repo_id))
    out = [
        {
            "repo": repo.repo_id,
            "repo_type": repo.repo_type,
            "commit": rev.commit_hash,
            "refs": sorted(rev.refs),
            "size_on_disk": rev.size_on_disk,
            "files": rev.nb_files,
        }
        for repo in repos
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash)
        if (repo.repo_id, rev.commit_hash) not in matched
    ]
    return out, [str(w) for w in info.warnings]


def card_abilities(card: ModelCard) -> dict[str, Any]:
    """What a card can do, as ``models ls`` shows it: modes, frame rates, chunks, sizes, controls, backends."""
    backends = [b.name for b in builtin_backends().values() if b.runs_family(card.family) and not b.stand_in]
    if card.fps_policy is FpsPolicy.FIXED:
        fps = f"{card.native_fps} (converted to others)"
    elif card.fps_policy is FpsPolicy.NATIVE_SET:
        fps = f"{', '.join(str(f) for f in sorted(card.native_fps_choices))} (others converted)"
    else:
        fps = "the input's" if card.fps_policy is FpsPolicy.INPUT else "any"
    return {
        "family": card.family,
        "modes": sorted(m.value for m in card.modes),
        "native_fps": fps,
        "frames_per_chunk": card.frames_per_chunk,
        "frame_rule": f"{card.frame_rule.step}k+{card.frame_rule.offset}",
        "long_videos": "chained chunks" if card.autoregressive else "one chunk",
        "native_resolution": str(card.native_resolution),
        "tiers": [t.name for t in card.resolution_tiers],
        "controls": sorted(c.value for c in card.controls),
        "guidance": f"{card.guidance_min:g}-{card.guidance_max:g} (default {card.default_guidance:g})",
        "steps": card.default_steps,
        "backends": backends or ["synthetic"],
    }


def _ls_report(cache: Path) -> dict[str, Any]:
    cards = builtin_cards()
    report: dict[str, Any] = {"cache_dir": str(cache), "cards": {}, "guardrail": [], "other": [], "warnings": []}
    matched: set[tuple[str, str]] = set()
    states: dict[tuple[str, str, tuple[str, ...]], _State] = {}

    def state_of(download: HubDownload) -> _State:
        if download.key not in states:
            states[download.key] = _state(download, cache)
            if states[download.key].commit:
                matched.add((download.repo, states[download.key].commit or ""))
        return states[download.key]

    for card_id in sorted(cards):
        entries = [_entry(card_id, d, state_of(d)) for d in hub_downloads(cards[card_id])]
        missing = [e for e in entries if e["status"] != "cached"]
        report["cards"][card_id] = {
            "can": card_abilities(cards[card_id]),
            "ready": not missing,
            "needs": entries,
            "pull": pull_command(card_id) if missing else None,
        }
    report["guardrail"] = [_entry(GUARDRAIL_TARGET, d, state_of(d)) for d in GUARDRAIL_DOWNLOADS]
    report["other"], report["warnings"] = _others(cache, matched)
    return report


def _status_text(entry: dict[str, Any]) -> str:
    status = str(entry["status"])
    if status == "incomplete":
        return f"[yellow]incomplete: {len(entry['missing_files'])} file(s) missing[/]"
    if status == "missing":
        return "[red]missing[/]"
    return "[green]cached[/]" + ("" if entry["verified"] else " (no file list to verify)")


def _print_abilities(report: dict[str, Any]) -> None:
    table = Table(title="What each model card can do")
    for column in ("card", "modes", "fps", "chunk", "size", "controls", "backends"):
        table.add_column(column, overflow="fold")
    for card_id, card in report["cards"].items():
        can = card["can"]
        table.add_row(
            card_id,
            ", ".join(can["modes"]),
            can["native_fps"],
            f"{can['frames_per_chunk']} ({can['long_videos']})",
            f"{can['native_resolution']}; tiers {', '.join(can['tiers'])}",
            ", ".join(can["controls"]) or "-",
            ", ".join(can["backends"]),
        )
    console.print(table)


def _print_ls(report: dict[str, Any]) -> None:
    _print_abilities(report)
    table = Table(title=f"Model weights in {escape(report['cache_dir'])}")
    for column in ("card", "role", "repo", "revision", "status", "size", "commit"):
        table.add_column(column, overflow="fold")
    rows = [e for card in report["cards"].values() for e in card["needs"] if e["role"] != "guardrail"]
    for e in [*rows, *report["guardrail"]]:
        role = e["role"] + (f" ({e['control']})" if e["control"] else "")
        size = _human(e["size_on_disk"]) if e["status"] != "missing" else "-"
        table.add_row(
            e["card"], role, e["repo"], escape(e["revision"]), _status_text(e), size, (e["commit"] or "-")[:12]
        )
    for card_id, card in report["cards"].items():
        if not card["needs"]:
            table.add_row(card_id, "-", "-", "-", "[dim]needs no weights[/]", "-", "-")
    console.print(table)
    for card_id, card in report["cards"].items():
        if card["needs"]:
            verdict = "[green]ready[/]" if card["ready"] else f"not ready: run `{card['pull']}`"
            console.print(f"  {card_id}: {verdict}")
    if report["other"]:
        other = Table(title="Other cached repos")
        for column in ("repo", "type", "refs", "size", "commit"):
            other.add_column(column, overflow="fold")
        for o in report["other"]:
            other.add_row(
                o["repo"],
                o["repo_type"],
                escape(", ".join(o["refs"]) or "-"),
                _human(o["size_on_disk"]),
                o["commit"][:12],
            )
        console.print(other)
    for warning in report["warnings"]:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")


@models_app.command("ls")
def ls(
    cache_dir: CacheDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """What is in the Hugging Face cache: each card's repos and revisions (cached, incomplete, missing), and more."""
    _require_hub()
    report = _ls_report(_cache_root(cache_dir))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_ls(report)
