"""``mlstream models list|show|diff|promote|rollback|publish``: the model registry for operators.

The commands act on the model store named by the settings. A promotion or rollback made here
flips ``CURRENT`` and records the transition, with its reason, in the store's history, then
publishes the store on the model feed (``model_feed.mode`` "feed"), where every scorer hears of
it; ``publish`` sends the store again (a failed publish, a first deployment).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from stream.errors import StreamError
from stream.registry import ModelStore

HIDDEN = ("reference_profile",)  # large and for machines; `show --full` prints it


def add_verbs(verbs: Any) -> None:
    """list, show, diff, promote, rollback: verbs of the ``models`` group (which carries
    ``--store`` and ``--name``)."""
    ls = verbs.add_parser("list", help="every version with its state, lineage and primary metric")
    s = verbs.add_parser("show", help="one version's card, state and history")
    s.add_argument("version", nargs="?", default=None, help="default: the current version")
    s.add_argument("--full", action="store_true", help="include the reference profile")
    d = verbs.add_parser("diff", help="what differs between two versions' cards")
    d.add_argument("a")
    d.add_argument("b")
    pr = verbs.add_parser("promote", help="make a version the champion (the current one is retired)")
    pr.add_argument("version")
    pr.add_argument("--reason", default="promoted by an operator")
    rb = verbs.add_parser("rollback", help="reject the champion and serve the one before it again")
    rb.add_argument("--reason", default="rolled back by an operator")
    pu = verbs.add_parser("publish", help="send the store's servable versions and states to the model feed")
    for p in (ls, s, d, pr, rb, pu):
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stream.config_load import load_settings

    settings = load_settings(getattr(args, "config", None))
    store = ModelStore(getattr(args, "store", None) or settings.model_store)
    name = getattr(args, "name", None) or settings.model_name
    if args.verb == "list":
        print(render_list(store, name))
    elif args.verb == "show":
        print(json.dumps(show(store, name, args.version, full=args.full), indent=2, sort_keys=True))
    elif args.verb == "diff":
        for line in diff(store, name, args.a, args.b):
            print(line)
    elif args.verb in ("promote", "rollback", "publish"):
        _change(args, settings, store, name)
    return 0


def _change(args: argparse.Namespace, settings: Any, store: ModelStore, name: str) -> None:
    """promote, rollback, publish: made on the newest published registry, then published; made
    again on the newer one if another publisher published in between (:class:`FeedMoved`)."""
    import asyncio

    from stream.feed_publish import FEED_ATTEMPTS, FeedMoved, publish_change  # Kafka clients only when publishing
    from stream.scoring.feed import sync_store

    if args.verb == "publish" and settings.model_feed.mode != "feed":
        raise StreamError("model_feed.mode is \"store\": scorers read the store itself, there is no feed")
    for attempt in range(FEED_ATTEMPTS):
        asyncio.run(sync_store(settings, store, f"models {args.verb}"))
        if args.verb == "promote":
            before = store.current_version(name)
            store.promote(name, args.version, reason=args.reason)
            done, what = f"{name}: champion {before} -> {args.version}", f"promoted {args.version}: {args.reason}"
        elif args.verb == "rollback":
            before = store.current_version(name)
            now = store.rollback(name, reason=args.reason)
            done, what = f"{name}: rolled back {before} -> {now} ({before} rejected)", \
                f"rolled back {before} -> {now}: {args.reason}"
        else:
            done, what = "", "published by an operator"
        try:
            line = publish_change(settings, store, name, what)
        except FeedMoved as exc:
            if attempt + 1 < FEED_ATTEMPTS:
                print(f"{exc}: reading the feed again")
            continue
        for out in (done, line):
            if out:
                print(out)
        return
    raise StreamError(f"models {args.verb}: not published, other publishers published first {FEED_ATTEMPTS} "
                      "times; this store takes their states at its next read of the feed")


def _primary(card: dict[str, Any]) -> str:
    metrics = card.get("training", {}).get("metrics", {})
    for key in ("log_loss", "mae"):
        if key in metrics:
            return f"{key} {metrics[key]:.4f}"
    return "-"


def render_list(store: ModelStore, name: str) -> str:
    try:
        current = store.current_version(name)
    except Exception:  # an empty or all-rejected store still lists
        current = None
    rows = [("", "VERSION", "STATE", "PARENT", "ROWS", "CREATED", "HOLDOUT")]
    for v in store.versions(name):
        card, _ = store.load(name, v)
        lineage = card.data.get("lineage", {})
        rows.append(("*" if v == current else "", v, store.state(name, v) or "-",
                     str(lineage.get("parent_version") or "-"),
                     str(card.data.get("training", {}).get("rows_train", "-")),
                     str(lineage.get("created_at", "-"))[:19], _primary(card.data)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def show(store: ModelStore, name: str, version: str | None, *, full: bool = False) -> dict[str, Any]:
    version = version or store.current_version(name)
    card, _ = store.load(name, version)
    data = {k: v for k, v in card.data.items() if full or k not in HIDDEN}
    return {"card": data, "state": store.state(name, version),
            "history": [h for h in store.history(name) if h["version"] == version]}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def diff(store: ModelStore, name: str, a: str, b: str) -> list[str]:
    """``key: a -> b`` for every card field that differs (reference profiles left out)."""
    left = _flatten({k: v for k, v in store.load(name, a)[0].data.items() if k not in HIDDEN})
    right = _flatten({k: v for k, v in store.load(name, b)[0].data.items() if k not in HIDDEN})
    left["state"], right["state"] = store.state(name, a), store.state(name, b)
    return [f"{k}: {json.dumps(left.get(k))} -> {json.dumps(right.get(k))}"
            for k in sorted(set(left) | set(right)) if left.get(k) != right.get(k)]
