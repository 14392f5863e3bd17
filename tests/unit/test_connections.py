"""The caps on unproven connections (server/connections.py): counting, refusals, cuts."""

from __future__ import annotations

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from director.server.connections import AGE, ConnectionTable, Limits

MiB = 1 << 20


def table(**kw) -> ConnectionTable:
    lim = dict(max_unproven=10, per_address=3, fd_limit=1000, fd_reserve=100,
               buffer_bytes=64 * MiB)
    lim.update(kw)
    return ConnectionTable(Limits(**lim))


def test_admissions_count_at_once_and_old_unproven_connections_after_age():
    t = table()
    assert [t.refusal("10.0.0.1", 0.0) for _ in range(4)] == [
        None, None, None, "more than 3 unproven connections from 10.0.0.1"]
    assert t.refusal("10.0.0.2", 0.0) is None      # another address has its own cap
    for fd in range(3):
        t.opened(fd, ("10.0.0.1", 1000 + fd), 0.0)
    t.age(AGE)
    assert t.aged_by_address == {"10.0.0.1": 3}
    # the admissions have expired, the three connections count now
    assert t.refusal("10.0.0.1", AGE + 0.1) == "more than 3 unproven connections from 10.0.0.1"
    t.proved(0)                                     # a node said HELLO on it
    assert t.refusal("10.0.0.1", AGE + 0.1) is None
    t.closed(1)
    assert t.aged_by_address == {"10.0.0.1": 1} and t.unproven == 1


def test_refused_connections_that_close_young_never_count():
    t = table()
    for fd in range(50):                            # a crowd retrying, refused, closing
        t.opened(fd, ("10.0.0.1", fd), 0.0)
        t.closed(fd)
    t.age(5.0)
    assert t.aged_by_address == {} and t.refusal("10.0.0.1", 5.0) is None


def test_total_cap_and_open_file_reserve():
    t = table(per_address=100)
    for i in range(10):
        assert t.refusal(f"10.0.0.{i}", 0.0) is None
    assert t.refusal("10.0.0.99", 0.0) == "more than 10 unproven connections"
    t = table(per_address=100, max_unproven=1000)
    t.recount(850)                                  # 850 files open, none connections
    for fd in range(900, 950):
        t.opened(fd, ("10.0.0.1", fd), 0.0)
    assert t.fds_free() == 100 and t.refusal("10.0.0.1", 0.0) is None
    t.opened(950, ("10.0.0.1", 950), 0.0)
    assert t.refusal("10.0.0.7", 0.0) == "open files are kept for accepted nodes"


def test_memory_growth_while_unproven_are_open_cuts_only_them():
    t = table()
    assert t.to_cut(100 * MiB) == []               # nothing unproven: nothing to cut
    t.opened(5, ("10.0.0.1", 1), 0.0)
    t.opened(6, ("10.0.0.2", 2), 0.0)
    t.proved(6)
    assert t.to_cut(100 * MiB) == []               # the floor is taken here
    assert t.to_cut(90 * MiB) == []                # memory given back lowers it
    assert t.to_cut(150 * MiB) == []               # +60 MiB: within the budget
    assert t.to_cut(155 * MiB) == [5]              # +65 MiB: the unproven one goes
    assert t.to_cut(400 * MiB) == []               # a fresh floor after a cut


def test_running_into_the_reserve_cuts_unproven_connections():
    t = table(fd_reserve=100)
    t.recount(940)
    t.opened(950, ("10.0.0.1", 1), 0.0)
    t.opened(951, ("10.0.0.1", 2), 0.0)
    t.proved(951)
    assert t.to_cut(0) == []                       # 58 free: above half the reserve
    for fd in range(952, 962):
        t.opened(fd, ("10.0.0.3", fd), 0.0)
    assert sorted(t.to_cut(0)) == [950, *range(952, 962)]


def test_a_reused_number_without_its_close_is_not_counted_twice():
    t = table()
    t.opened(7, ("10.0.0.1", 1), 0.0)
    t.age(AGE)
    t.opened(7, ("10.0.0.2", 2), AGE)
    t.age(2 * AGE)
    assert t.unproven == 1 and t.aged_by_address == {"10.0.0.2": 1}


class TableMachine(RuleBasedStateMachine):
    """Any sequence of monitor events, proofs and time keeps the counts true: an
    open unproven connection counts by its address once it is ``AGE`` old."""

    def __init__(self):
        super().__init__()
        self.t = table()
        self.now = 0.0
        self.live: dict[int, tuple[str, float]] = {}
        self.proven: set[int] = set()

    @rule(fd=st.integers(0, 12), ip=st.sampled_from(["a", "b", "c"]))
    def open(self, fd, ip):
        self.t.opened(fd, (ip, fd), self.now)
        self.live[fd] = (ip, self.now)
        self.proven.discard(fd)

    @rule(fd=st.integers(0, 12))
    def close(self, fd):
        self.t.closed(fd)
        self.live.pop(fd, None)
        self.proven.discard(fd)

    @rule(fd=st.integers(0, 12))
    def prove(self, fd):
        self.t.proved(fd)
        if fd in self.live:
            self.proven.add(fd)

    @rule(dt=st.sampled_from([0.0, 0.3, AGE]))
    def tick(self, dt):
        self.now += dt
        self.t.age(self.now)

    @rule(rss=st.integers(0, 1 << 30))
    def memory(self, rss):
        assert set(self.t.to_cut(rss)) <= set(self.live) - self.proven

    @invariant()
    def counts_are_true(self):
        assert self.t.unproven == len(set(self.live) - self.proven)
        old = [ip for fd, (ip, at) in self.live.items()
               if fd not in self.proven and self.now - at >= AGE]
        assert self.t.aged_by_address == {ip: old.count(ip) for ip in set(old)}


TestTableMachine = TableMachine.TestCase
TestTableMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
