"""``canopy-centre keys``: the issuer keys the centre signs with (one per site), and the YAML for the gateways.

    canopy-centre keys gen --site S -c centre.yaml        a key for S (the next key when S has one)
    canopy-centre keys show --site S -c centre.yaml       public keys + the gateway config snippet
    canopy-centre keys activate --site S -c centre.yaml   the newest key signs from now on
    canopy-centre keys retire --site S --issuer centre-1 -c centre.yaml

``--keys-dir DIR`` instead of ``-c`` works without a config.  ``-c`` takes the whole centre.yaml
(every module's section): ``canopy-centre`` loads and checks it and hands it over
(``config_func``), so this module never imports ``centre.fullconfig``.  Rotation, step by
step, is in ``centre/acting/keys.py`` and docs/centre.md#issuer-keys.
"""

from __future__ import annotations

import argparse
import sys

from centre.acting.keys import KeysError, KeyStore, gateway_snippet

ROTATION = """rotation (two keys valid during the changeover):
  1. keys gen --site S        makes the next key; the current one still signs
  2. put `keys show --site S` into every gateway of S (both issuers are listed)
  3. keys activate --site S   the new key signs from now on
  4. keys retire --site S --issuer OLD, then remove OLD from the gateways"""


def register(sub) -> None:
    keys = sub.add_parser("keys", help="issuer keys the centre signs acks and commands with (one per site)",
                          epilog=ROTATION, formatter_class=argparse.RawDescriptionHelpFormatter)
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    for name, text in (("gen", "make a key for a site (the next key when it has one)"),
                       ("show", "print the public keys and the YAML for the site's gateways"),
                       ("activate", "sign with the newest (or --issuer) key from now on"),
                       ("retire", "delete an old key (it must not be the active one)")):
        p = ksub.add_parser(name, help=text, epilog=ROTATION, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--site", required=True)
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("-c", "--config", help="centre.yaml (its keys_dir)")
        where.add_argument("--keys-dir", help="the keys folder, without a config")
        p.add_argument("--controls", action="store_true",
                       help="the site's gateways have local controls (controls:): allow `override` in the snippet")
        if name in ("activate", "retire"):
            p.add_argument("--issuer", required=name == "retire", help="the key's issuer id, e.g. centre-1")
        p.set_defaults(config_func=_main)


def _store(args, cfg) -> KeyStore:
    if args.keys_dir:
        return KeyStore(args.keys_dir)
    from centre.acting.config import acting_config

    return KeyStore(cfg.keys_dir, acting_config(cfg).issuer_prefix)


def _main(args, cfg=None) -> int:
    """``cfg``: the whole centre.yaml when ``-c`` was given (loaded by ``canopy-centre``), else None."""
    try:
        store = _store(args, cfg)
        site = args.site
        if args.keys_command == "gen":
            key = store.generate(site)
            state = "signs now" if key.active else "is the next key: `keys activate` once every gateway has it"
            print(f"{key.issuer} made for site {site}; it {state}\nprivate key: {store.site_dir(site) / (key.issuer + '.key')}"
                  " (0600, never leaves this folder)\n")
        elif args.keys_command == "activate":
            key = store.activate(site, args.issuer)
            print(f"{key.issuer} signs for site {site} from now on (older keys stay valid until `keys retire`)\n")
        elif args.keys_command == "retire":
            store.retire(site, args.issuer)
            print(f"{args.issuer} retired for site {site}: remove it from the gateways' commands.issuers\n")
        keys = store.keys(site)
        if not keys:
            print(f"site {site} has no keys: run `canopy-centre keys gen --site {site}`", file=sys.stderr)
            return 1
        for k in keys:
            print(f"{k.issuer}: {k.public_key}{'  (signs now)' if k.active else ''}")
        print("\n" + gateway_snippet(site, keys, controls=args.controls), end="")
        return 0
    except KeysError as exc:
        print(f"canopy-centre keys: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"canopy-centre keys: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
