"""The server raises its open-file limit at start (at the limit, libzmq aborts)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
from director.server.daemon import raise_fd_limit
got = raise_fd_limit()
print(got, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
"""


def test_the_soft_open_file_limit_goes_up_to_the_hard_one():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    got, now, hard = (int(x) for x in out)
    assert got == now > 64
    assert now == min(hard, 1 << 20) or hard == -1
