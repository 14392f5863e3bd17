"""Operator requests: one function per control operation, in one table (``OPS``).

Part of the server core: each function gets the core, the request's arguments
and ``now``, and returns a JSON-safe result (or ``DEFERRED`` when it answers
later).  Results never contain secret material (a token's secret is returned
once, to the operator who created it, and never stored).
"""

from __future__ import annotations

from typing import Any, Callable

from director import __version__
from director.errors import DirectorError, StorageError
from director.protocol.messages import Enrolled, encode
from director.server import nodeinfo
from director.server.events import Send
from director.trust.keyfmt import key_to_z85
from director.trust.tokens import parse_ttl


Op = Callable[[Any, bytes, dict, float], Any]  # (core, requester, args, now)


def health(core: Any, rid: bytes, args: dict, now: float) -> dict:
    online = sum(1 for k in core.peers.by_key
                 if core.peers.online(k, now) and core.keys.state(k) == "accepted")
    return {"role": "server", "version": __version__, "nodes_online": online,
            "uptime": round(now - core.started, 3)}


def server_stats(core: Any, rid: bytes, args: dict, now: float) -> dict:
    """The server's own figures (loop iterations, peers, live tasks): for operators
    and the scale benchmark; ``reset`` starts a new window for ``longest_recent_ms``."""
    return {"loop": core.loop.doc(bool(args.get("reset"))), "peers": len(core.peers.by_key),
            **core.jobs.stats()}


def nodes(core: Any, rid: bytes, args: dict, now: float) -> list[dict]:
    out = []
    try:
        labels = core.store.all_labels()
    except StorageError:  # the list without labels beats no list
        labels = {}
    for rec in core.store.nodes():
        if rec.state != "accepted":
            continue
        peer = core.peers.get(rec.key)
        out.append({
            "name": rec.name,
            "state": "online" if core.peers.online(rec.key, now) else "offline",
            "last_seen": peer.last_seen if peer else rec.last_seen,
            "address": (peer.address if peer and peer.address else rec.address) or "",
            "version": (peer.version if peer and peer.version else rec.version) or "",
            "fingerprint": rec.fingerprint,
            "labels": labels.get(rec.key, {}),
        })
    return out


def keys_list(core: Any, rid: bytes, args: dict, now: float) -> list[dict]:
    return [{"name": r.name, "state": r.state, "fingerprint": r.fingerprint,
             "public_key": r.key, "created": r.created, "updated": r.updated}
            for r in core.store.nodes()]


def _change(state: str) -> Op:
    def op(core: Any, rid: bytes, args: dict, now: float) -> dict:
        rec = core.registry.set_state(_name(args), state)
        core.audit.record(now, f"key_{state}", rec.key, rec.name, "", "by the operator")
        if state in ("rejected", "revoked"):
            core.cut_off(rec.key, state, now)
        else:
            route = core.peers.route(rec.key)
            if route is not None:
                core.out.append(Send(route, encode(Enrolled(rec.state, rec.name))))
        return {"name": rec.name, "state": rec.state, "fingerprint": rec.fingerprint}
    return op


def keys_delete(core: Any, rid: bytes, args: dict, now: float) -> dict:
    rec = core.registry.delete(_name(args))
    core.audit.record(now, "key_deleted", rec.key, rec.name, "", "by the operator")
    core.cut_off(rec.key, "deleted", now)
    return {"name": rec.name, "state": "deleted", "fingerprint": rec.fingerprint}


def keys_server(core: Any, rid: bytes, args: dict, now: float) -> dict:
    return {"public_key": key_to_z85(core.server_key), "fingerprint": core.fingerprint,
            "address": core.address()}


def token_create(core: Any, rid: bytes, args: dict, now: float) -> dict:
    ttl = parse_ttl(str(args.get("ttl") or "1h"))
    uses = args.get("uses", 1)
    if not isinstance(uses, int) or isinstance(uses, bool) or not 1 <= uses <= 10000:
        raise DirectorError("--uses must be a whole number from 1 to 10000")
    address = args.get("address") or core.address()
    if not isinstance(address, str):
        raise DirectorError("--address must be HOST:PORT")
    token, rec = core.registry.create_token(ttl, uses, now)
    core.audit.record(now, "token_created", detail=f"token {rec.token_id}, {uses} use(s)")
    text = token.encode()
    return {"id": rec.token_id, "token": text, "expires": rec.expires, "uses": uses,
            "command": f"director enroll --server {address} --token {text}"}


def token_list(core: Any, rid: bytes, args: dict, now: float) -> list[dict]:
    out = []
    for t in core.store.tokens():
        state = ("revoked" if t.revoked else "expired" if t.expires <= now
                 else "used" if t.uses_left <= 0 else "valid")
        out.append({"id": t.token_id, "state": state, "created": t.created,
                    "expires": t.expires, "uses_left": t.uses_left})
    return out


def token_revoke(core: Any, rid: bytes, args: dict, now: float) -> dict:
    token_id = str(args.get("id", ""))
    core.registry.revoke_token(token_id)
    core.audit.record(now, "token_revoked", detail=f"token {token_id}")
    return {"id": token_id, "state": "revoked"}


def events_list(core: Any, rid: bytes, args: dict, now: float) -> list[dict]:
    since = args.get("since", 3600)
    if isinstance(since, bool) or not isinstance(since, (int, float)) or not since >= 0:
        raise DirectorError("--since must be a duration like 1h, 30m or 7d")
    try:
        core.audit.flush(core.store)
    except DirectorError:
        pass  # shown from the store as it is
    rows = core.store.events(now - float(since), 10_000)
    return [{**r, "address": r["address"] or None} for r in rows]


def jobs_submit(core: Any, rid: bytes, args: dict, now: float) -> Any:
    if "dry_run" in args:  # only jobs.plan makes a dry run
        args = {k: v for k, v in args.items() if k != "dry_run"}
    return core.jobs.submit(rid, args, now)


def jobs_plan(core: Any, rid: bytes, args: dict, now: float) -> Any:
    """A dry run: planned as ``jobs.submit`` plans it, described, not stored or sent
    (dryrun.py)."""
    return core.jobs.submit(rid, {**args, "dry_run": True, "wait": False}, now)


def jobs_get(core: Any, rid: bytes, args: dict, now: float) -> Any:
    if args.get("orchestration") is True:  # director job: an orchestration as one
        from director.server.orchviews import view

        return view(core.jobs, args, now)
    return core.jobs.get(args)


def jobs_list(core: Any, rid: bytes, args: dict, now: float) -> list:
    if args.get("grouped") is True:  # director jobs: an orchestration as one line
        from director.server.orchviews import overview

        return overview(core.jobs, args, now)
    return core.jobs.listing(args, now)


def jobs_cancel(core: Any, rid: bytes, args: dict, now: float) -> dict:
    return core.jobs.cancel(args, now)


def jobs_retry(core: Any, rid: bytes, args: dict, now: float) -> Any:
    return core.jobs.retry(rid, args, now)


def jobs_purge(core: Any, rid: bytes, args: dict, now: float) -> Any:
    """Answered when the purge is done (retention.py: a slice per loop turn)."""
    from director.server.jobs import DEFERRED

    core.retention.request(rid, args)
    return DEFERRED


def jobs_analyze(core: Any, rid: bytes, args: dict, now: float) -> dict:
    from director.server.analyze import analyze_op

    return analyze_op(core.jobs, args, now)


OPS: dict[str, Op] = {
    "health": health, "nodes": nodes, "keys.list": keys_list,
    "keys.accept": _change("accepted"), "keys.reject": _change("rejected"),
    "keys.revoke": _change("revoked"), "keys.delete": keys_delete,
    "keys.server": keys_server, "token.create": token_create,
    "token.list": token_list, "token.revoke": token_revoke,
    "jobs.submit": jobs_submit, "jobs.get": jobs_get, "jobs.list": jobs_list,
    "jobs.cancel": jobs_cancel, "jobs.retry": jobs_retry, "jobs.purge": jobs_purge,
    "jobs.analyze": jobs_analyze,
    "events.list": events_list, "server.stats": server_stats,
    "jobs.plan": jobs_plan,
    "node.get": nodeinfo.node_get, "nodes.label": nodeinfo.nodes_label,
}


def _name(args: dict) -> str:
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise DirectorError("a node NAME is required")
    return name
