"""Control-socket operations of the server: one function per CLI command.

Results are JSON-safe and never contain secret material (token secrets are
returned once, to the operator who created them, and never stored).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from director import __version__
from director.errors import DirectorError
from director.trust.keyfmt import key_to_z85
from director.trust.tokens import parse_ttl

if TYPE_CHECKING:
    from director.server.daemon import Server


def build(server: Server) -> dict[str, Callable[[bytes, dict], Any]]:
    reg = server.registry

    def health(rid: bytes, args: dict) -> dict:
        online = sum(1 for k in server.peers if server.online(k) and server.keys.state(k) == "accepted")
        return {"role": "server", "version": __version__, "nodes_online": online,
                "uptime": round(time.time() - server.started, 3)}

    def nodes(rid: bytes, args: dict) -> list[dict]:
        out = []
        for rec in server.db.nodes():
            if rec.state != "accepted":
                continue
            peer = server.peers.get(rec.key)
            online = server.online(rec.key)
            out.append({
                "name": rec.name,
                "state": "online" if online else "offline",
                "last_seen": peer.last_seen if peer else rec.last_seen,
                "address": (peer.address if peer and peer.address else rec.address) or "",
                "version": (peer.version if peer and peer.version else rec.version) or "",
                "fingerprint": rec.fingerprint,
            })
        return out

    def keys_list(rid: bytes, args: dict) -> list[dict]:
        return [{"name": r.name, "state": r.state, "fingerprint": r.fingerprint,
                 "public_key": r.key, "created": r.created, "updated": r.updated}
                for r in server.db.nodes()]

    def _change(state: str) -> Callable[[bytes, dict], dict]:
        def op(rid: bytes, args: dict) -> dict:
            rec = reg.set_state(_name(args), state)
            if state in ("rejected", "revoked"):
                server.cut_off(rec.key, state)
            elif server.peers.get(rec.key) is not None:
                server.send_node(rec.key, _enrolled(rec.state, rec.name))
            return {"name": rec.name, "state": rec.state, "fingerprint": rec.fingerprint}
        return op

    def keys_delete(rid: bytes, args: dict) -> dict:
        rec = reg.delete(_name(args))
        server.cut_off(rec.key, "deleted")
        return {"name": rec.name, "state": "deleted", "fingerprint": rec.fingerprint}

    def keys_server(rid: bytes, args: dict) -> dict:
        return {"public_key": key_to_z85(server.pair.public),
                "fingerprint": server.pair.fingerprint}

    def token_create(rid: bytes, args: dict) -> dict:
        ttl = parse_ttl(str(args.get("ttl") or "1h"))
        uses = args.get("uses", 1)
        if not isinstance(uses, int) or isinstance(uses, bool) or not 1 <= uses <= 10000:
            raise DirectorError("--uses must be a whole number from 1 to 10000")
        token, rec = reg.create_token(ttl, uses)
        from director.server.daemon import advertised_address

        addr = args.get("address") or advertised_address(
            server.settings, server.router.last_endpoint.decode())
        text = token.encode()
        return {"id": rec.token_id, "token": text, "expires": rec.expires, "uses": uses,
                "command": f"director enroll --server {addr} --token {text}"}

    def token_list(rid: bytes, args: dict) -> list[dict]:
        now = time.time()
        out = []
        for t in server.db.tokens():
            state = ("revoked" if t.revoked else "expired" if t.expires <= now
                     else "used" if t.uses_left <= 0 else "valid")
            out.append({"id": t.token_id, "state": state, "created": t.created,
                        "expires": t.expires, "uses_left": t.uses_left})
        return out

    def token_revoke(rid: bytes, args: dict) -> dict:
        token_id = str(args.get("id", ""))
        reg.revoke_token(token_id)
        return {"id": token_id, "state": "revoked"}

    ops = {
        "health": health, "nodes": nodes, "keys.list": keys_list,
        "keys.accept": _change("accepted"), "keys.reject": _change("rejected"),
        "keys.revoke": _change("revoked"), "keys.delete": keys_delete,
        "keys.server": keys_server, "token.create": token_create,
        "token.list": token_list, "token.revoke": token_revoke,
    }
    return ops


def _name(args: dict) -> str:
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise DirectorError("a node NAME is required")
    return name


def _enrolled(state: str, name: str) -> list[bytes]:
    from director.protocol.frames import make

    return make("ENROLLED", state=state, name=name)
