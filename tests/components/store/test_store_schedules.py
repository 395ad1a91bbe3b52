"""Whatever the schedule (readings in bursts, ticks at odd times, outages, echoes lost, the
nucleus's spool lost, the component restarted or killed, the sensor resending), once the
link is back every reading is in the cloud and the store is empty; nothing was evicted, so
nothing may be missing."""

from hypothesis import HealthCheck, given, settings, strategies as st

from store_harness import RUN, THING, Harness, corrected

events = st.lists(st.one_of(
    st.tuples(st.just("feed"), st.integers(1, 40)),
    st.tuples(st.just("step"), st.integers(1, 700)),
    st.tuples(st.just("down"), st.just(0)),
    st.tuples(st.just("up"), st.just(0)),
    st.tuples(st.just("lose_echo"), st.just(0)),
    st.tuples(st.just("nucleus_restart"), st.just(0)),
    st.tuples(st.just("component_restart"), st.just(0)),
    st.tuples(st.just("component_killed"), st.just(0)),
    st.tuples(st.just("resend"), st.integers(1, 30)),
), min_size=5, max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events, st.sampled_from(["echo", "rule"]), st.integers(0, 3000))
def test_every_reading_arrives_whatever_the_schedule(tmp_path_factory, schedule, confirm, latency):
    h = Harness(tmp_path_factory.mktemp("s") / "store.db", confirm=confirm, confirm_timeout_s=2, probe_max_s=4,
                max_latency_ms=latency, max_in_flight=3, max_payload_bytes=8192)
    if confirm == "rule":
        h.echo = False
        original = h.drain

        def drain_with_rule():
            before = len(h.deliveries)
            original()
            for doc in h.deliveries[before:]:
                h.fwd.on_iot(f"backfill/ack/{THING}", ('{"batch": "%s"}' % doc["batch"]).encode())
        h.drain = drain_with_rule
    produced = 0
    for kind, n in schedule:
        if kind == "feed":
            h.feed(corrected(seq) for seq in range(produced, produced + n))
            produced += n
        elif kind == "resend":                 # the sensor republishes what it holds
            h.feed(corrected(seq) for seq in range(max(0, produced - n), produced))
        elif kind == "step":
            h.step(n)
        elif kind == "down":
            h.link_up = False
        elif kind == "up":
            h.link_up = True
            h.drain()
        elif kind == "lose_echo":
            h.spool = h.spool[1:]
        elif kind == "nucleus_restart":
            h.restart_nucleus()
        elif kind == "component_restart":
            h.reopen()
        elif kind == "component_killed":
            h.reopen(kill=True)
    h.link_up = True
    h.drain()
    h.step(1000, n=2)
    h.feed(corrected(seq) for seq in range(h.port.acked() + 1, produced))    # the sensor resends what is unacked
    for _ in range(200):
        h.step(500)
        if h.store.count == 0 and not h.fwd._pending:
            break
    assert sorted(seq for (_, run, seq) in h.cloud if run == RUN) == list(range(produced))
    assert h.store.count == 0
    assert h.port.acked() == produced - 1
    assert h.store.counters["evicted"] == 0
