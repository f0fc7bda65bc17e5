"""`contextfold keys`: create, list and revoke the server's API keys (each key belongs to one tenant).

A key's secret is printed once, when it is created; the store keeps only its hash, so a lost secret cannot be
shown again: revoke the key and create another.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..store import ApiKey


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys",
        help="create, list and revoke the server's API keys",
        description="Manages the API keys of `contextfold serve`. With no active key, the server accepts "
        "unauthenticated requests on loopback only.",
    )
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key and print its secret (shown only this once)")
    create.add_argument("--tenant", required=True, help="the tenant the key acts for (letters, digits, _ . -)")
    create.add_argument("--name", default="", help="a label for the key, such as who or what uses it")
    listing = actions.add_parser("list", help="list the keys (never their secrets)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = actions.add_parser("revoke", help="revoke a key: requests with it are refused from now on")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id (key_...), as `keys list` shows it")
    for action in (create, listing, revoke):
        action.add_argument("--db", help="SQLite file or postgresql:// URL (default: as `serve` would use)")
        action.add_argument("--config", metavar="FILE", help="TOML config file to take the database from")
        action.set_defaults(handler=keys_command)


def keys_command(args: argparse.Namespace) -> int:
    from ..server._config import load_config  # here, not at the top: the other commands need not load the server

    db = load_config({"db": args.db, "config": args.config}).db
    return asyncio.run(_keys(db, args))


async def _keys(db: str, args: argparse.Namespace) -> int:
    from ..store import open_server_store

    store = await open_server_store(db)
    try:
        if args.action == "create":
            secret, key = await store.keys.create(args.tenant, args.name)
            print(f"id      {key.id}\ntenant  {key.tenant}\nsecret  {secret}")
            print("Keep the secret now: it is not stored and cannot be shown again.", file=sys.stderr)
        elif args.action == "list":
            print(table(await store.keys.list(tenant=args.tenant, include_revoked=args.all)))
        else:
            key = await store.keys.revoke(args.key_id)
            print(f"revoked {key.id} (tenant {key.tenant}{', ' + key.name if key.name else ''})")
        return 0
    finally:
        await store.close()


def table(keys: Sequence[ApiKey]) -> str:
    """The keys as an aligned table, oldest first (times in UTC)."""
    if not keys:
        return "no API keys"
    header = ("id", "tenant", "name", "prefix", "created (UTC)", "revoked (UTC)")
    rows = [header] + [
        (k.id, k.tenant, k.name or "-", k.prefix, _when(k.created_at), _when(k.revoked_at) if k.revoked_at else "-")
        for k in sorted(keys, key=lambda k: (k.created_at, k.id))
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp))
