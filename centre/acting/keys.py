"""Issuer keys: one Ed25519 key per site in files under ``keys_dir``, 0600, never in the database.

Layout (``canopy-centre keys gen --site S`` makes it)::

    keys_dir/                 0700
      S/                      0700
        centre-1.key          0600  PKCS#8 PEM private key: signs for the people of site S
        centre-1.pub          0644  base64 of the raw public key (what the gateway's config takes)
        active                0600  the issuer id that signs now ("centre-1")

The issuer id (``centre-N``) is the key's name in the gateways' ``commands.issuers``.

Rotation keeps two keys valid during the changeover, so nothing is refused half-way:

1. ``keys gen --site S`` again makes ``centre-2`` as the *next* key; ``centre-1`` still signs.
   ``keys show --site S`` prints both issuers; put that snippet into every gateway of S.
2. ``keys activate --site S`` once every gateway has it: ``centre-2`` signs from now on;
   gateways still accept ``centre-1`` (an envelope sent just before keeps working).
3. ``keys retire --site S --issuer centre-1``: its private key is deleted and it leaves the
   snippet; remove it from the gateways' configs.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.protocol.keys import KeyError_, generate, load_private_key, private_pem, public_key_text

SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# what the centre's issuer may do on a gateway: every command action (the centre checks each person's role itself)
COMMAND_ACTIONS = ("irrigate", "close", "close_all", "resume_programs", "unlock", "lock", "reset_lockout", "override")
# ``override`` (hold a local control on/off, gateway/controls/) only where the site has ``controls:``: a gateway
# refuses an issuer allowed to override on a site without them (docs/commands.md#configuration-commands)
CONTROL_ACTIONS = ("override",)


class KeysError(ValueError):
    """A key that is missing, unsafe or unusable; the message says what to run (never the key)."""


@dataclass(frozen=True, slots=True)
class IssuerKey:
    site: str
    issuer: str
    generation: int
    public_key: str  # base64 of the raw 32 bytes
    active: bool
    has_private: bool


class KeyStore:
    def __init__(self, keys_dir: str | os.PathLike, prefix: str = "centre"):
        self.dir = Path(keys_dir)
        self.prefix = prefix
        self._cache: dict[str, tuple[tuple, str, Ed25519PrivateKey]] = {}  # site -> (file stamps, issuer, key)

    # -- reading ---------------------------------------------------------------------------------
    def site_dir(self, site: str) -> Path:
        if not SITE_RE.match(site):
            raise KeysError(f"site {site!r} is not an id (letters, digits, _ . -, at most 64)")
        return self.dir / site

    def keys(self, site: str) -> list[IssuerKey]:
        """Every key of a site that is not retired, oldest first."""
        d = self.site_dir(site)
        active = self._active_id(d)
        out = []
        for pub in d.glob(f"{self.prefix}-*.pub") if d.is_dir() else ():
            gen = self._generation(pub.stem)
            if gen is None:
                continue
            out.append(IssuerKey(site, pub.stem, gen, pub.read_text(encoding="ascii").strip(), pub.stem == active,
                                 (d / f"{pub.stem}.key").exists()))
        return sorted(out, key=lambda k: k.generation)

    def signing_key(self, site: str) -> tuple[str, Ed25519PrivateKey]:
        """(issuer id, private key) that signs for ``site`` now; cached until its files change."""
        d = self.site_dir(site)
        active_file = d / "active"
        try:
            issuer = active_file.read_text(encoding="ascii").strip()
            key_file = d / f"{issuer}.key"
            st = key_file.stat()
            stamps = (active_file.stat().st_mtime_ns, st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            raise KeysError(f"no issuer key for site {site}: run `canopy-centre keys gen --site {site}` "
                            f"and put the snippet of `keys show --site {site}` into its gateways") from None
        cached = self._cache.get(site)
        if cached is not None and cached[0] == stamps:
            return cached[1], cached[2]
        if st.st_mode & 0o077:
            raise KeysError(f"{key_file} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                            f"chmod 600 {key_file}; the centre refuses to sign with it")
        try:
            key = load_private_key(key_file.read_bytes())
        except KeyError_ as exc:
            raise KeysError(f"{key_file}: {exc}") from None
        self._cache[site] = (stamps, issuer, key)
        return issuer, key

    # -- changing --------------------------------------------------------------------------------
    def generate(self, site: str) -> IssuerKey:
        """A new key for ``site``: active at once when it is the first, else the *next* key (see rotation)."""
        d = self.site_dir(site)
        existing = self.keys(site)
        active = self._active_id(d)
        pending = [k for k in existing if active is not None and k.generation > self._generation(active)]
        if pending:
            raise KeysError(f"{pending[-1].issuer} is already waiting to take over for site {site}: "
                            f"`keys activate --site {site}` first (or `keys retire` it)")
        gen = max([k.generation for k in existing] + [self._highest_ever(d)], default=0) + 1
        issuer = f"{self.prefix}-{gen}"
        _private_dir(self.dir)
        _private_dir(d)
        key = generate()
        _write_new(d / f"{issuer}.key", private_pem(key), 0o600)
        _write_new(d / f"{issuer}.pub", (public_key_text(key.public_key()) + "\n").encode(), 0o644)
        if active is None:
            self._set_active(d, issuer)
        return next(k for k in self.keys(site) if k.issuer == issuer)

    def activate(self, site: str, issuer: str | None = None) -> IssuerKey:
        """Sign with ``issuer`` (default: the newest key) from now on; the old key stays valid until retired."""
        keys = self.keys(site)
        if not keys:
            raise KeysError(f"site {site} has no keys: run `canopy-centre keys gen --site {site}`")
        chosen = keys[-1] if issuer is None else next((k for k in keys if k.issuer == issuer), None)
        if chosen is None:
            raise KeysError(f"site {site} has no key {issuer!r} (have: {', '.join(k.issuer for k in keys)})")
        if not chosen.has_private:
            raise KeysError(f"{chosen.issuer} has no private key left (it was retired)")
        self._set_active(self.site_dir(site), chosen.issuer)
        return next(k for k in self.keys(site) if k.issuer == chosen.issuer)

    def retire(self, site: str, issuer: str) -> None:
        """Delete an old key: it no longer signs and leaves the snippet.  The active key cannot be retired."""
        d = self.site_dir(site)
        if issuer == self._active_id(d):
            raise KeysError(f"{issuer} signs for site {site} now: generate and activate its successor first")
        if self._generation(issuer) is None or not (d / f"{issuer}.pub").exists():
            raise KeysError(f"site {site} has no key {issuer!r}")
        for suffix in (".key", ".pub"):
            (d / f"{issuer}{suffix}").unlink(missing_ok=True)
        _note_generation(d, self._generation(issuer))

    # -- internals -------------------------------------------------------------------------------
    def _generation(self, issuer: str) -> int | None:
        head, _, n = issuer.rpartition("-")
        return int(n) if head == self.prefix and n.isdigit() else None

    def _active_id(self, d: Path) -> str | None:
        try:
            return (d / "active").read_text(encoding="ascii").strip() or None
        except FileNotFoundError:
            return None

    def _highest_ever(self, d: Path) -> int:
        try:
            return int((d / "highest").read_text(encoding="ascii").strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _set_active(self, d: Path, issuer: str) -> None:
        tmp = d / ".active.tmp"
        tmp.unlink(missing_ok=True)
        _write_new(tmp, (issuer + "\n").encode(), 0o600)
        os.replace(tmp, d / "active")
        self._cache.pop(d.name, None)


def _private_dir(d: Path) -> None:
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (never briefly world-readable); refuse to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _note_generation(d: Path, gen: int | None) -> None:
    """Remember the highest generation ever made, so a retired issuer id is never reused."""
    if gen is None:
        return
    highest = d / "highest"
    try:
        old = int(highest.read_text(encoding="ascii").strip() or 0)
    except (FileNotFoundError, ValueError):
        old = 0
    if gen > old:
        tmp = d / ".highest.tmp"
        tmp.unlink(missing_ok=True)
        _write_new(tmp, f"{gen}\n".encode(), 0o600)
        os.replace(tmp, highest)


def gateway_snippet(site: str, keys: list[IssuerKey], *, controls: bool = False) -> str:
    """The YAML to put under a gateway's config for ``site``: every key not retired, each allowed everything
    (the centre checks each person's role before it signs; the gateway checks the centre's signature).
    ``controls``: the site has local controls, so ``override`` is allowed too."""
    import yaml

    actions = [a for a in COMMAND_ACTIONS if controls or a not in CONTROL_ACTIONS]
    issuers = {k.issuer: {"public_key": k.public_key, "actions": actions, "targets": ["*"], "ack": "all", "replay": True,
                          "description": f"Canopy Centre, site {site}" + ("" if k.active else " (not signing yet or any more)")}
               for k in keys}
    head = (f"# Canopy Centre issuer keys for site {site} ({', '.join(k.issuer + (' signs now' if k.active else '') for k in keys)}).\n"
            "# Merge into the gateway's site config (docs/commands.md#configuration-commands); keep every key listed here\n"
            "# until `canopy-centre keys retire` removes it."
            + ("" if controls else " A site with `controls:`: `keys show --controls` adds `override`.") + "\n")
    return head + yaml.safe_dump({"commands": {"issuers": issuers}}, sort_keys=False, default_flow_style=None, width=200)
