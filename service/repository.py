"""The served models: one ONNX file, or a model repository of several models and versions.

`GRU_SERVE_MODEL_PATH` names either one `.onnx` file (served under the name and version its
metadata records) or a directory laid out as `<name>/<version>/model.onnx`, where a version is
a positive integer or a semantic version and the directory names are the served identity.
Each model version is a `Served`: its own onnxruntime session, inference core (so its own
batcher and admission), token codec and weights digest. Nothing else is shared, so one
model's load, traffic or crash cannot reach another's rows.

A request picks a model by name and optional version; without a name, a repository holding
one model serves it; without a version, the highest loaded one answers. Models load and
unload at run time (the Open Inference Protocol's repository extension): a model leaves the
table before it stops, so new requests get a 404 while its admitted ones finish.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from service.core import InferenceCore
from service.errors import InvalidInput, NotFound
from service.identity import weights_digest
from service.runtime import Runtime
from service.settings import Settings
from service.tokens import TokenCodec

log = logging.getLogger("gru_serve.repository")

MODEL_FILE = "model.onnx"
_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?"
)


class RepositoryError(ValueError):
    """The model path is not a usable model repository (a layout mistake of the user's)."""


class UnknownModel(NotFound):
    """A model or version this server does not serve (404, naming what it does serve)."""


def version_key(version: str) -> tuple | None:
    """The order of versions (higher is newer), or None for a name that is not a version.

    A positive integer `n` sorts as `n.0.0`; a semantic version by its numbers, a
    pre-release (`1.0.0-rc.1`) before its release, its identifiers numeric before
    alphanumeric; build metadata (`+...`) does not order."""
    if version.isdigit():
        n = int(version)
        return (n, 0, 0, 1, ()) if n > 0 and version[0] != "0" else None
    m = _SEMVER.fullmatch(version)
    if m is None:
        return None
    pre = m.group(4)
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in (pre or "").split("."))
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if pre else 1, ids if pre else ())


def _check_name(name: str, what: str, where: Path) -> None:
    if name.startswith(".") or "/" in name:  # not ".." or a hidden folder: inside the root only
        raise RepositoryError(f"{where}: a {what} must not start with '.' or hold '/'")
    if not name.isprintable() or len(name.encode()) > 255:
        raise RepositoryError(f"{where}: a {what} must be printable and at most 255 bytes")


def scan_model(root: Path, name: str) -> dict[str, Path]:
    """The versions of model `name` under `root`: version -> its model.onnx."""
    model_dir = root / name
    if name.startswith(".") or "/" in name or not model_dir.is_dir():
        raise UnknownModel(f"no model {name!r} in the model repository")
    _check_name(name, "model name", model_dir)
    versions: dict[str, Path] = {}
    for vdir in sorted(model_dir.iterdir()):
        if vdir.name.startswith("."):
            continue
        if not vdir.is_dir() or version_key(vdir.name) is None:
            raise RepositoryError(
                f"{vdir}: expected version directories named by a positive integer or a "
                "semantic version (e.g. 1 or 2.0.0), each holding model.onnx"
            )
        path = vdir / MODEL_FILE
        if not path.is_file():
            raise RepositoryError(f"{path} does not exist")
        versions[vdir.name] = path
    if not versions:
        raise RepositoryError(f"{model_dir} holds no version: expected {name}/<version>/model.onnx")
    return versions


def scan(root: Path) -> dict[str, dict[str, Path]]:
    """Every model and version under `root`: name -> version -> its model.onnx."""
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} is not a directory")
    names = [d.name for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if not names:
        raise RepositoryError(
            f"model repository {root} holds no model: expected <name>/<version>/model.onnx"
        )
    return {name: scan_model(root, name) for name in names}


def load_runtime(settings: Settings, path: Path, name: str, version: str) -> Runtime:
    """An onnxruntime session on `path`, serving under the repository's `name` and `version`
    (the directory's identity wins over the artifact's metadata: it is what clients ask for,
    and what resume tokens and metrics name). Blocking: seconds for a big model."""
    rt = Runtime(settings.model_copy(update={"model_path": path}))
    rt.meta = dataclasses.replace(rt.meta, name=name, version=version)
    return rt


@dataclass(eq=False)
class Served:
    """One model version and everything that serves it."""

    runtime: Runtime
    core: InferenceCore
    tokens: TokenCodec
    digest: str  # the weights' SHA-256 (service/identity.py)
    ready: bool = False  # warmed up
    warmup_error: str | None = None

    @property
    def name(self) -> str:
        return self.runtime.meta.name

    @property
    def version(self) -> str:
        return self.runtime.meta.version

    @property
    def key(self) -> tuple:
        return version_key(self.version) or (0, 0, 0, 0, ())


class ModelRepository:
    """The loaded models, by name and version; load and unload under one lock.

    `root` is None when one file is served: the table then holds that file's model alone,
    and it is every request's default, exactly as before repositories existed."""

    def __init__(
        self,
        settings: Settings,
        secret: bytes,
        observer: Callable[[str, str], Callable] | None = None,
        root: Path | None = None,
    ) -> None:
        self.settings = settings
        self.root = root
        self._secret = secret
        self._observer = observer  # (name, version) -> its batch observer (metrics' labels)
        self._models: dict[str, list[Served]] = {}  # name -> versions, highest first
        self.default: Served | None = None  # what a request naming no model gets
        self.only: Served | None = None  # the one version, when exactly one is served
        self._lock = asyncio.Lock()
        self.on_change: list[Callable[[], None]] = []
        self.on_add: list[Callable[[Served], None]] = []
        self.on_remove: list[Callable[[Served], None]] = []

    # ---- the table -----------------------------------------------------------------------
    def all(self) -> list[Served]:
        """Every loaded version, by model name, highest version first."""
        # a snapshot of the items: the probe port's thread reads this while a model unloads
        return [s for _, versions in sorted(list(self._models.items())) for s in versions]

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[Served]:
        return list(self._models.get(name, ()))

    def resolve(self, name: str | None, version: str | None) -> Served:
        """The model version a request asked for: 404 for an unknown name or version, and a
        422 naming the choices when several models are served and none is named."""
        if name is None:
            if self.default is not None and version is None:
                return self.default  # the hot path: one model, no choice made
            if not self._models:
                raise UnknownModel("no model is loaded: load one (POST /v2/repository/...)")
            if len(self._models) != 1:
                choices = ", ".join(self.names())
                raise InvalidInput(
                    f"this server serves several models: name one in `model` ({choices})",
                    "model",
                )
            (name,) = self._models
        versions = self._models.get(name)
        if not versions:
            raise UnknownModel(
                f"unknown model {name!r}; served: {', '.join(self.names()) or 'none'}", "model"
            )
        if version is None:
            return versions[0]
        for s in versions:
            if s.version == version:
                return s
        served = ", ".join(s.version for s in versions)
        raise UnknownModel(
            f"unknown version {version!r} of model {name!r}; served: {served}", "version"
        )

    def _changed(self) -> None:
        self.default = self.only = None
        if len(self._models) == 1:
            (versions,) = self._models.values()
            self.default = versions[0]
            if len(versions) == 1:
                self.only = versions[0]
        for hook in self.on_change:
            hook()

    # ---- loading -----------------------------------------------------------------------------
    def prepare(self, runtime: Runtime) -> Served:
        """A loaded runtime made servable: its core (batcher not started), codec and digest."""
        digest = weights_digest(runtime.meta, runtime.path)
        m = runtime.meta
        observer = self._observer(m.name, m.version) if self._observer is not None else None
        return Served(
            runtime=runtime,
            core=InferenceCore(runtime, self.settings, observer=observer),
            tokens=TokenCodec(self._secret, runtime.meta, digest),
            digest=digest,
        )

    def insert(self, served: Served) -> None:
        """Into the table: requests can name it from now on."""
        versions = [s for s in self._models.get(served.name, ()) if s.version != served.version]
        versions.append(served)
        versions.sort(key=lambda s: s.key, reverse=True)
        self._models[served.name] = versions
        for hook in self.on_add:
            hook(served)
        self._changed()

    async def start(self, served: Served) -> None:
        """Start its batcher and warm it up off the event loop; ready afterwards."""
        await served.core.start()
        try:
            seconds = await asyncio.to_thread(served.runtime.warmup)
        except Exception as e:
            log.exception("warm-up of %s %s failed", served.name, served.version)
            served.warmup_error = f"{type(e).__name__}: {e}"
            raise
        served.ready = True
        log.info("model %s %s warmed up in %.0f ms", served.name, served.version, seconds * 1000)

    async def load(self, name: str) -> list[Served]:
        """Make model `name` match its directory: versions found there and not served yet are
        loaded and warmed up before they take requests; versions whose directory is gone are
        unloaded. Served versions keep serving throughout."""
        if self.root is None:
            raise InvalidInput(
                "this server serves one model file, not a model repository: nothing to load"
            )
        async with self._lock:
            found = await asyncio.to_thread(scan_model, self.root, name)
            have = {s.version: s for s in self._models.get(name, ())}
            added = []
            for version, path in found.items():
                if version in have:
                    continue
                rt = await asyncio.to_thread(load_runtime, self.settings, path, name, version)
                served = await asyncio.to_thread(self.prepare, rt)  # may hash the file
                try:
                    await self.start(served)  # warmed up before the first request reaches it
                except Exception:
                    await served.core.stop()
                    raise
                self.insert(served)
                added.append(served)
            for version, served in have.items():
                if version not in found:
                    await self._retire(served, self.settings.shutdown_grace_s)
            return added

    async def unload(self, name: str, grace_s: float) -> list[Served]:
        """Stop serving every version of `name`: out of the table at once (new requests get
        404), then its admitted rows finish within `grace_s`, then its batcher stops."""
        if self.root is None:
            raise InvalidInput(
                "this server serves one model file, not a model repository: nothing to unload"
            )
        async with self._lock:
            versions = self._models.get(name)
            if not versions:
                raise UnknownModel(
                    f"unknown model {name!r}; served: {', '.join(self.names()) or 'none'}"
                )
            gone = list(versions)
            # All versions out of the table first: while one drains, no older one may become
            # the answer to requests naming no version.
            for served in gone:
                self._take_out(served)
            await asyncio.gather(*(self._finish(served, grace_s) for served in gone))
            return gone

    async def _retire(self, served: Served, grace_s: float) -> None:
        self._take_out(served)
        await self._finish(served, grace_s)

    def _take_out(self, served: Served) -> None:
        """Out of the table (new requests get 404), and its streams get their tokens."""
        versions = [s for s in self._models.get(served.name, ()) if s is not served]
        if versions:
            self._models[served.name] = versions
        else:
            self._models.pop(served.name, None)
        self._changed()
        served.ready = False
        for hook in self.on_remove:
            hook(served)

    async def _finish(self, served: Served, grace_s: float) -> None:
        """Its admitted rows finish within `grace_s`, then its batcher stops."""
        await drain(served.core, grace_s)
        await served.core.stop()
        log.info("model %s %s unloaded", served.name, served.version)

    async def stop_all(self) -> None:
        for served in self.all():
            served.ready = False
            await served.core.stop()


async def drain(core: InferenceCore, grace_s: float) -> None:
    """Wait until the core's admitted rows are answered (or `grace_s` has passed)."""
    deadline = time.monotonic() + grace_s
    while core.inflight_rows > 0 or core.batcher.queued > 0:
        if time.monotonic() >= deadline:
            log.warning("unloading with %d row(s) still in flight", core.inflight_rows)
            return
        await asyncio.sleep(0.005)


def describe(served: Iterable[Served]) -> str:
    return ", ".join(f"{s.name} {s.version}" for s in served)
