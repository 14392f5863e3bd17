"""systemd integration: the unit files ``director systemd`` prints, and the readiness and
watchdog notifications a ``Type=notify`` unit expects.

The units are text built from a few checked values (no template engine): the director
command, the home and the user.  Readiness is not guessed from the process having
started: a thread asks the daemon's own control socket for ``health`` (as
``director health`` does) and its first answer sends ``READY=1`` -- and, when systemd
set a watchdog, each later answer sends ``WATCHDOG=1``, so a daemon whose loop hangs is
restarted.  A client that waits for its server still answers: it reconnects by itself
and must not be restarted for it.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
from pathlib import Path

ROLES = ("server", "client")
DEFAULT_HOME = "/var/lib/director"
OPEN_FILES = 65536  # one per node connection and a few more: ~60,000 nodes per server

_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,30}\$?")
_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f\"\\\s]")

SERVER_HARDENING = """\
# Hardening: the server needs its home, its port and nothing else.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={home}
ProtectHome={protect_home}
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
CapabilityBoundingSet=
UMask=0077
"""

CLIENT_HARDENING = """\
# No file-system or privilege sandbox here on purpose: RUN jobs are how this node is
# managed (they install packages, write /etc, restart services), so they keep what the
# node's {user} may do.  The agent keeps its own home 0700 and its keys 0600.
"""


class UnitError(ValueError):
    """A value that cannot go into a unit file (the CLI reports it in one line)."""


def director_command() -> list[str]:
    """How systemd should start this same director: the ``director`` script that is
    running (or the one on PATH), else this Python with ``-m director``."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "director" and argv0.is_file():
        return [str(argv0.resolve())]
    found = shutil.which("director")
    if found:
        return [str(Path(found).resolve())]
    return [str(Path(sys.executable).resolve()), "-m", "director"]


def check_path(path: str, what: str) -> str:
    """An absolute, plain path: no spaces, quotes, backslashes or control characters."""
    if not os.path.isabs(path) or _UNSAFE_PATH.search(path):
        raise UnitError(f"{what} must be an absolute path without spaces, quotes or"
                        f" backslashes, got {path!r}")
    return os.path.normpath(path)


def _escape(value: str) -> str:
    """``%`` and ``$`` are specifiers and variables in unit files: write them literally."""
    return value.replace("%", "%%").replace("$", "$$")


def _protect_home(*paths: str) -> str:
    """``yes`` hides /home, /root and /run/user; a home (or a director installed with
    ``pip --user``) inside them needs ``read-only``, which ReadWritePaths opens again for
    the home itself."""
    tops = ("/home", "/root", "/run/user")
    inside = any(p == top or p.startswith(top + "/") for p in paths for top in tops)
    return "read-only" if inside else "yes"


def render(role: str, *, home: str | None, user: str | None,
           command: list[str] | None = None) -> str:
    """The unit file text for ``role`` (server or client)."""
    if role not in ROLES:
        raise UnitError(f"role must be server or client, not {role!r}")
    home = check_path(home or DEFAULT_HOME, "--home")
    if user is not None and not _USER_RE.fullmatch(user):
        raise UnitError(f"--user must be a user name like 'director', got {user!r}")
    exe = [check_path(part, "the director program") if i == 0 else part
           for i, part in enumerate(command or director_command())]
    start = " ".join(_escape(p) for p in [*exe, "--home", home, role])
    health = " ".join([*exe, "--home", home, "health"])
    lines = [
        "[Unit]",
        f"Description=Director {role} (zero-trust deployment mesh)",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "# Ready when its control socket answers 'health'; the watchdog restarts a daemon",
        "# that stops answering (a client waiting for its server still answers).",
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=60",
        f"ExecStart={start}",
        f"# check it by hand: {health}",
        "Restart=on-failure",
        "RestartSec=2",
        "TimeoutStartSec=90",
        "TimeoutStopSec=30",
        f"LimitNOFILE={OPEN_FILES}",
    ]
    if user:
        lines.append(f"User={user}")
    if home.startswith("/var/lib/") and home.count("/") == 3:
        # systemd creates it, owned by the user, before the sandbox is set up
        lines += [f"StateDirectory={_escape(home[len('/var/lib/'):])}", "StateDirectoryMode=0700"]
    else:
        lines.append(f"# {home} must exist first: install -d -m 700 -o {user or 'root'} {home}")
    hardening = SERVER_HARDENING if role == "server" else CLIENT_HARDENING
    lines.append(hardening.format(home=_escape(home), protect_home=_protect_home(home, exe[0]),
                                  user=user or "root").rstrip("\n"))
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


# -- readiness and watchdog (sd_notify) ---------------------------------------------

def _notify(target: str, message: str) -> bool:
    """Send one sd_notify datagram to ``target``; False when it cannot be told."""
    import socket

    if target.startswith("@"):
        target = "\0" + target[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message.encode(), target)
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """A quarter of the watchdog period systemd asks for (``WATCHDOG_USEC``), if it is
    ours: a daemon is restarted only after several health checks in a row went unanswered."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return max(0.5, int(usec) / 4e6)


def start_notifier(home: str) -> threading.Thread | None:
    """When started by systemd as ``Type=notify``, report readiness (and feed the watchdog)
    from the daemon's own health answer.  A daemon thread: it never delays exit.  The
    variables are taken out of the environment, so RUN jobs do not inherit them."""
    target = os.environ.pop("NOTIFY_SOCKET", "")
    interval = watchdog_interval()
    os.environ.pop("WATCHDOG_USEC", None)
    os.environ.pop("WATCHDOG_PID", None)
    if not target:
        return None
    thread = threading.Thread(target=_notify_loop, args=(target, home, interval),
                              name="sd-notify", daemon=True)
    thread.start()
    return thread


def _status(info: dict) -> str:
    if info.get("serving", True):
        return "STATUS=serving"
    return "STATUS=running, not serving yet (a client: waiting for its server)"


def _notify_loop(target: str, home: str, watchdog: float | None) -> None:
    import time

    from director.net.control import ping

    while (info := ping(home, timeout=5.0)) is None:
        time.sleep(0.2)
    _notify(target, f"READY=1\n{_status(info)}")
    while watchdog is not None:
        time.sleep(watchdog)
        info = ping(home, timeout=5.0)
        if info is not None:
            _notify(target, f"WATCHDOG=1\n{_status(info)}")
        else:
            _notify(target, "STATUS=its control socket did not answer 'health'")
