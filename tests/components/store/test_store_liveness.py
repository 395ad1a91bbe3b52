"""Liveness: every stored reading is sent while the link is up, whatever happened before.

The reproduction from the review (fake clock, real SQLite): online at 1 Hz, the store
restarts, the sensor resends 500 readings in one chunk, then an hour online. Before the
planner, 500 acknowledged readings were stored and never sent."""

import pytest

from store_harness import RUN, Harness, corrected


def seqs(h, run=RUN):
    return sorted(seq for (_, r, seq) in h.cloud if r == run)


def online_at_1hz(h, seq, seconds):
    for _ in range(seconds):
        h.feed([corrected(seq)])
        seq += 1
        h.step(100, n=10)
    return seq


@pytest.mark.parametrize("chunk", [375, 500, 2100])
def test_a_resent_chunk_after_a_store_restart_is_sent_on_a_stable_link(tmp_path, chunk):
    h = Harness(tmp_path / "store.db")
    seq = online_at_1hz(h, 0, 20)
    h.reopen()
    away = chunk                                      # the sensor held these while the store was away
    h.clock.advance(away * 1000)
    h.feed(corrected(s) for s in range(seq, seq + away))
    seq = online_at_1hz(h, seq + away, 3600)
    assert h.store.count <= 2, f"{h.store.count} stored readings never sent"
    missing = sorted(set(range(seq)) - set(seqs(h)))
    assert len(missing) <= 2 and all(m >= seq - 2 for m in missing), f"missing in cloud: {missing[:5]}..."


# -- the property: for any interleaving, every stored row is sent once the link is up ------

import itertools
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

OPS = st.one_of(
    st.tuples(st.just("commit"), st.integers(1, 2500)),            # a chunk of readings, any size
    st.tuples(st.just("run"), st.integers(1, 400)),                # ticks of 100 ms
    st.tuples(st.just("link"), st.booleans()),                     # the link drops or comes back
    st.tuples(st.just("echo"), st.booleans()),                     # echoes lost for a while
    st.tuples(st.just("restart"), st.booleans()),                  # the store restarts (SIGTERM or SIGKILL)
    st.tuples(st.just("nucleus"), st.just(True)),                  # the core's memory spool is lost
    st.tuples(st.just("clock"), st.integers(-3_600_000, 3_600_000)),   # readings re-timed by a clock step
    st.tuples(st.just("latency"), st.sampled_from([0, 1000, 10_000, 60_000])),   # re-timed settings
)
_DB = itertools.count()


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, min_size=1, max_size=14))
def test_every_stored_reading_is_sent_once_the_link_is_up(ops):
    path = Path(tempfile.mkdtemp(prefix="live-")) / f"store-{next(_DB)}.db"
    h = Harness(path)
    seq, offset = 0, 0
    for op, arg in ops:
        if op == "commit":
            h.feed(corrected(s, t=1_764_338_400_000 + s * 1000 + offset) for s in range(seq, seq + arg))
            seq += arg
        elif op == "run":
            h.step(100, n=arg)
        elif op == "link":
            h.link_up = arg
        elif op == "echo":
            h.echo = arg
        elif op == "restart":
            h.reopen(kill=arg)
        elif op == "nucleus":
            h.restart_nucleus()
        elif op == "clock":
            offset += arg
        elif op == "latency":
            h.overrides["max_latency_ms"] = arg
            h.overrides["commit_interval_ms"] = min(1000, arg // 2)
            h.fwd.configure(dict(h.fwd.settings, max_latency_ms=arg, commit_interval_ms=min(1000, arg // 2)))
    h.link_up = h.echo = True
    s = h.fwd.settings
    # found again (the probe's back-off, then a confirmation time-out) + latency + pacing of the backlog
    bound_ms = int((s["probe_max_s"] + 2 * s["confirm_timeout_s"]) * 1000) + s["max_latency_ms"] \
        + 1000 * (seq * 120 // s["max_bytes_per_s"] + seq // (100 * s["max_publishes_per_s"]) + 2)
    stored = h.store.count
    for _ in range(bound_ms // 100):
        h.step(100)
        if h.store.count == 0:
            break
    assert h.store.count == 0, f"{h.store.count} of {stored} stored readings not sent within {bound_ms} ms"
    acked = h.port.acked()
    arrived = set(seqs(h))
    missing = [x for x in range(acked + 1) if x not in arrived]
    assert not missing, f"acknowledged but not in the cloud: {missing[:10]}"


def test_switching_confirm_to_spooled_live_sends_what_was_waiting_for_an_echo(tmp_path):
    """The heart issue, item 10: batches in flight waited for an echo that no longer came.
    Stored batches (one from memory is committed at the change: test_store_live.py)."""
    h = Harness(tmp_path / "store.db", forward_from_memory=False)
    h.feed([corrected(0)])
    h.step(100, n=50)
    h.echo = False
    h.feed(corrected(i) for i in range(1, 50))
    h.step(100, n=50)
    assert len(h.fwd.ledger) > 0 and h.store.count > 0              # in flight, unconfirmed
    h.fwd.configure(dict(h.fwd.settings, confirm="spooled"))
    h.step(100, n=50)
    assert h.store.count == 0 and missing_in(h, range(50)) == []


def missing_in(h, seqs):
    arrived = set(seqs_of(h))
    return [s for s in seqs if s not in arrived]


def seqs_of(h):
    return sorted(seq for (_, r, seq) in h.cloud if r == RUN)
