"""The site a command works on: its config loaded with every problem printed, and its status file.

Operator views tolerate an unplugged serial adapter (the daemon does too), so
they load with ``missing_ports_ok``.  Exit code 2 means a bad config.
``canopy validate`` and ``canopy run`` also review the site's security
(``gateway.config.security``): warnings by default, refusals under
``security: strict``; and the folders the daemon keeps its state in
(``state_path_problems``), so that ``validate`` passes only what ``run`` can open.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from dataclasses import replace

EXIT_CONFIG = 2


def print_problems(exc) -> None:
    """A ConfigError as the installer reads it: one ``file:line: key: message`` per problem."""
    print(f"configuration error ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}):", file=sys.stderr)
    for p in exc.problems:
        print(f"  {p}", file=sys.stderr)


def print_warning(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


def load_site(path: str, *, missing_ports_ok: bool = True, warn: Callable[[str], None] | None = None, daemon: bool = False):
    """The validated site config, or None after printing why not.

    With ``warn`` (``validate``, ``run``) the site is reviewed too: its security
    and the folders of its state files; each weakness goes to ``warn``, or
    refuses the site (under ``security: strict``; a state folder that is missing,
    or for the ``daemon`` itself, not writable).
    """
    from core.yamlsrc import ConfigError
    from gateway.config.load import load_config

    try:
        cfg = load_config(path, missing_ports_ok=missing_ports_ok)
        if warn is not None:
            _review(cfg, warn, daemon)
        return cfg
    except ConfigError as exc:
        print_problems(exc)
        return None
    except OSError as exc:  # the site file itself: unreadable, a folder, ...
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return None


def _review(cfg, warn: Callable[[str], None], daemon: bool) -> None:
    """Warn about each weakness, or raise ConfigError with every refusal."""
    from core.yamlsrc import ConfigError, load_yaml
    from gateway.config.security import review

    src = load_yaml(cfg.file)  # the file again, for the lines: a few KB
    found = review(cfg.site, src)
    refused = [replace(p, message=f"{p.message} (refused: the site says `security: strict`)") for p in found.refused]
    errors, warnings = state_path_problems(cfg, src, daemon=daemon)
    if refused or errors:
        raise ConfigError(refused + errors)
    for problem in found.warnings:
        warn(f"{problem} (`security: strict` refuses this)")
    for problem in warnings:
        warn(str(problem))


def state_path_problems(cfg, src, *, daemon: bool) -> tuple[list, list]:
    """(errors, warnings) about the folders of the outbox and the status file.

    A missing folder is an error for everyone (``canopy run`` would fail to open
    the outbox).  A folder this user cannot write is an error for the daemon and
    a warning for ``validate``, which an installer may run as another user than
    the daemon's.
    """
    errors, warnings = [], []
    store = cfg.site.store
    places = [(("store", "path"), cfg.resolve(store.path))]
    if store.status_file:
        places.append((("store", "status_file"), cfg.status_path))
    for key, file in places:
        problem = _state_file_problem(file)
        if problem is None:
            continue
        fatal, message = problem
        (errors if fatal or daemon else warnings).append(src.problem(key, message))
    return errors, warnings


def _state_file_problem(file: str) -> tuple[bool, str] | None:
    """(fatal for everyone, what is wrong with where ``file`` goes), or None."""
    folder = os.path.dirname(file) or "."
    fix = f"create it for the daemon's user: install -d -m 0700 -o canopy -g canopy {folder}"
    try:
        if not stat.S_ISDIR(os.stat(folder).st_mode):
            return True, f"{folder} is not a folder"
    except (FileNotFoundError, NotADirectoryError):
        return True, f"folder {folder} does not exist; {fix}"
    except OSError as exc:  # e.g. a parent only the daemon's user may enter
        return False, f"cannot check {folder} as {_user()}: {exc.strerror or exc}"
    if os.path.isdir(file):
        return True, f"{file} is a folder, not a file"
    if not os.access(folder, os.W_OK | os.X_OK):
        return False, f"folder {folder} is not writable by {_user()}: the daemon's user must own it ({fix})"
    if os.path.exists(file) and not os.access(file, os.R_OK | os.W_OK):
        return False, f"{file} is not readable and writable by {_user()}"
    return None


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def read_status(config: str) -> dict | int:
    """The running gateway's last health snapshot, or an exit code after saying why not."""
    from gateway.status import status_file
    from gateway.status.verdict import EXIT_NO_STATUS

    cfg = load_site(config)
    if cfg is None:
        return EXIT_CONFIG
    try:
        return status_file.read(cfg.status_path)
    except FileNotFoundError:
        print(f"no status file at {cfg.status_path}: is the gateway running (canopy run -c {config})?", file=sys.stderr)
        return EXIT_NO_STATUS
    except (OSError, ValueError) as exc:
        print(f"cannot read the status file {cfg.status_path}: {exc}", file=sys.stderr)
        return EXIT_NO_STATUS
