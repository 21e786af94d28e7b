"""The configs a board has run: the last N kept, the one on trial, the last good one -- ``/etc/canopy/configs/``.

::

    /etc/canopy/configs/            root only (0700): configs may name secrets
        state.json                  good, current, trial, boots, applied ids, history
        0007-3f9a0c1d2e4b5a67/      one config: site.yaml, profiles/ (every profile it loads), about.json

A pushed config starts as a *trial*, like a new version (releases.py): the
config that ran before it is kept as the good one, the new one is written in
place (``/etc/canopy/site.yaml`` atomically, after the profiles it loads), and
only the health gate commits it.  Every start of the service counts a boot of
the trial (``ExecStartPre``); past ``MAX_TRIAL_BOOTS`` it is rolled back, and
``OnFailure=`` rolls it back at once -- so a config that kills the daemon, or an
applier that died with the power, cannot leave a board dead.  Whoever ends a
trial writes its result for the daemon to publish (``gateway.remote_config.handover``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gateway.ops.layout import Layout
from gateway.remote_config.handover import Handover, write_atomic

log = logging.getLogger("canopy.ops")

KEEP = 5  # configs kept besides the good and the current one
MAX_TRIAL_BOOTS = 3
KEEP_HISTORY = 20
MAX_IDS = 256


@dataclass
class ConfigState:
    good: str | None = None  # snapshot of the last config that passed the gate (or ran before the first push)
    current: str | None = None
    trial: dict | None = None  # the push on trial: name, id, issuer, on_behalf_of, version, previous
    boots: int = 0
    ids: dict[str, float] = field(default_factory=dict)  # issuer/id of every envelope applied -> until when
    history: list[dict] = field(default_factory=list)

    def note(self, event: str, **detail) -> None:
        self.history = [*self.history, {"ts": round(time.time(), 3), "event": event, **detail}][-KEEP_HISTORY:]


class ConfigStore:
    def __init__(self, layout: Layout):
        self.layout = layout
        self.dir = layout.etc / "configs"
        self.handover = Handover(layout.updates)

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def load(self) -> ConfigState:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return ConfigState()
        except (OSError, ValueError) as exc:
            log.error("cannot read %s (%s): starting a new config history", self.state_file, exc)
            return ConfigState()
        return ConfigState(**{k: data[k] for k in ConfigState.__dataclass_fields__ if k in data})

    @contextlib.contextmanager
    def locked(self) -> Iterator[ConfigState]:
        """The state under an exclusive lock, saved when the block ends without error."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            st = self.load()
            yield st
            write_atomic(self.state_file, (json.dumps(asdict(st), indent=2) + "\n").encode())

    def applied_before(self, key: str, now: float) -> bool:
        return self.load().ids.get(key, -1.0) >= now

    # -- snapshots ----------------------------------------------------------------------------
    def _snapshot(self, st: ConfigState, site_text: bytes, profiles: dict[str, bytes], profiles_dir: Path, about: dict) -> str:
        numbers = [int(p.name.split("-", 1)[0]) for p in self.dir.iterdir() if p.is_dir() and p.name[:4].isdigit()]
        name = f"{max(numbers, default=0) + 1:04d}-{about['version']}"
        folder = self.dir / name
        (folder / "profiles").mkdir(mode=0o700, parents=True)
        (folder / "site.yaml").write_bytes(site_text)
        for prof, data in profiles.items():
            (folder / "profiles" / f"{prof}.yaml").write_bytes(data)
        about = {**about, "profiles_dir": str(profiles_dir), "ts": round(time.time(), 3)}
        (folder / "about.json").write_text(json.dumps(about, indent=2) + "\n")
        return name

    def _snapshot_running(self, st: ConfigState, live, version: str) -> str:
        """The config running now, kept to roll back to (the good one again when nothing changed since)."""
        profiles_dir = Path(live.resolve(live.site.profiles_dir))
        site_text = Path(live.file).read_bytes()
        profiles = {name: (profiles_dir / f"{name}.yaml").read_bytes() for name in sorted(live.profiles)}
        if st.good and self._same(st.good, site_text, profiles):
            return st.good
        return self._snapshot(st, site_text, profiles, profiles_dir, {"version": version, "source": "running"})

    def _same(self, name: str, site_text: bytes, profiles: dict[str, bytes]) -> bool:
        folder = self.dir / name
        try:
            kept = {p.stem: p.read_bytes() for p in (folder / "profiles").glob("*.yaml")}
            return (folder / "site.yaml").read_bytes() == site_text and kept == profiles
        except OSError:
            return False

    def about(self, name: str) -> dict:
        return json.loads((self.dir / name / "about.json").read_text())

    def activate(self, name: str) -> None:
        """Put a kept config in place: its profiles first (only those that differ), then the site file, atomically."""
        folder, about = self.dir / name, self.about(name)
        profiles_dir = Path(about["profiles_dir"])
        for kept in sorted((folder / "profiles").glob("*.yaml")):
            target = profiles_dir / kept.name
            data = kept.read_bytes()
            if not (target.is_file() and target.read_bytes() == data):
                profiles_dir.mkdir(parents=True, exist_ok=True)
                write_atomic(target, data, mode=0o644)
        site = self.layout.site_config
        try:
            st = site.stat()
            mode, owner = st.st_mode & 0o777, (st.st_uid, st.st_gid)
        except FileNotFoundError:
            mode, owner = 0o640, None
        write_atomic(site, (folder / "site.yaml").read_bytes(), mode=mode, owner=owner)

    def _prune(self, st: ConfigState) -> None:
        folders = sorted((p for p in self.dir.iterdir() if p.is_dir() and p.name[:4].isdigit()), reverse=True)
        keep = {st.good, st.current}
        for old in [p for p in folders if p.name not in keep][KEEP:]:
            shutil.rmtree(old, ignore_errors=True)

    # -- trial, commit, rollback ----------------------------------------------------------------
    def begin_trial(self, live, running_version: str, checked, trial: dict, until: float) -> None:
        """Keep the running config, keep the new one, put the new one in place on trial."""
        with self.locked() as st:
            good = self._snapshot_running(st, live, running_version)
            new = self._snapshot(st, checked.site_text.encode("utf-8"), checked.profiles, checked.profiles_dir,
                                 {**trial, "source": "pushed"})
            st.good, st.current, st.boots = good, new, 0
            st.trial = {**trial, "snapshot": new}
            st.ids = dict(sorted({**{k: v for k, v in st.ids.items() if v >= time.time()},
                                  f"{trial['issuer']}/{trial['id']}": until}.items(), key=lambda kv: kv[1])[-MAX_IDS:])
            st.note("trial", config=trial["version"], good=running_version, id=trial["id"], issuer=trial["issuer"])
            self.activate(new)

    def commit(self) -> dict | None:
        """The trial passed the health gate: it becomes the good config.  Returns the trial (None: no trial any more)."""
        with self.locked() as st:
            trial = st.trial
            if trial is None:
                return None
            st.good, st.trial, st.boots = st.current, None, 0
            st.note("commit", config=trial["version"], id=trial["id"])
            self._prune(st)
            self._result(trial, "applied", config=trial["version"], previous=trial["previous"])
            return trial

    def rollback(self, reason: str) -> str | None:
        """Back to the good config (the trial abandoned, its result written); the version rolled back to, or None."""
        if not self.state_file.exists():
            return None
        with self.locked() as st:
            return self._rollback(st, reason)

    def _rollback(self, st: ConfigState, reason: str) -> str | None:
        trial = st.trial
        if trial is None or st.good is None:
            return None
        self.activate(st.good)
        st.current, st.trial, st.boots = st.good, None, 0
        st.note("rollback", config=trial["version"], to=trial["previous"], reason=reason, id=trial["id"])
        log.error("config %s rolled back to %s: %s", trial["version"], trial["previous"], reason)
        self._result(trial, "failed", reason="rolled_back", config=trial["previous"], previous=trial["version"],
                     detail=f"rolled back from {trial['version']} to {trial['previous']}: {reason}")
        return trial["previous"]

    def boot_check(self, max_boots: int = MAX_TRIAL_BOOTS) -> str | None:
        """Before every start: count a trial's boots and roll it back past ``max_boots``."""
        if not self.state_file.exists():
            return None
        with self.locked() as st:
            if st.trial is None:
                return None
            st.boots += 1
            if st.boots <= max_boots:
                return None
            return self._rollback(st, f"started {st.boots - 1} times without passing the health gate")

    def _result(self, trial: dict, status: str, **fields) -> None:
        body = {"id": trial["id"], "issuer": trial["issuer"], "on_behalf_of": trial.get("on_behalf_of"), "status": status,
                "ts": round(time.time(), 3), **fields}
        try:
            self.handover.write_result(trial["name"], body)
        except OSError as exc:  # the config is right either way; only the report is lost
            log.error("cannot write the result of config %s for the daemon: %s", trial["id"], exc)
