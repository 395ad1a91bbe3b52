"""A set-aside found at a restart keeps the watermark of readings forwarded or confirmed from memory
(the old file holds none of them: capped at what it holds, it fell to -1), and a salvage over rows
spread across id gaps holds the loop briefly (each failed before its fix, in the review of setaside2)."""

import sqlite3

from store_harness import THING, corrected
from test_store_set_aside import RUN, new_store, old_file_statements, salvage_all


def restart_with_old_file(store):
    from store_and_forward.salvage import Aside, aside_target, move_aside
    path = store.config.path
    store.close()
    move_aside(path, Aside(aside_target(path, store.clock.wall_ms()), "test"))
    return path


def test_at_a_restart_a_watermark_of_forwarded_readings_is_not_lost(tmp_path):
    """Readings stored, forwarded, confirmed and deleted (or confirmed from memory: never
    stored): the old file holds none of the run, its acked is capped to -1."""
    store = new_store(tmp_path)
    store.commit([corrected(i) for i in range(5)])
    store.delete([r.id for r in store.scan(0, 100)])          # forwarded, confirmed
    assert store.watermark(THING, RUN) == 4
    restart_with_old_file(store)
    store = new_store(tmp_path)
    salvage_all(store)
    assert store.watermark(THING, RUN) == 4                     # main: -1
    result = store.commit([corrected(3), corrected(5, held_from=5)])   # a resend, and the next
    assert (result.inserted, result.given_up) == (1, 0)            # main: (2, 4)


def test_a_salvage_step_over_rows_200_ids_apart_holds_the_loop_briefly(tmp_path, monkeypatch):
    """Single-id lookups inside every gap of up to 200 ids, with no bound: 500 x 199 of them a
    chunk, 8 chunks a call (3 s here). Now at most a chunk's worth of lookups a walk."""
    statements = old_file_statements(monkeypatch)
    store = new_store(tmp_path)
    store.commit([corrected(i) for i in range(4000)])
    raw = sqlite3.connect(str(store.config.path))
    raw.execute("UPDATE readings SET id = 1000000 + id * 200")
    raw.execute("UPDATE sqlite_sequence SET seq = 1800000 WHERE name = 'readings'")
    raw.commit()
    raw.close()
    store.set_aside("test")                                     # its first salvage step included
    first = len(statements)
    store.salvage_step()
    assert max(first, len(statements) - first) < 10_000, f"{first} then {len(statements) - first} statements"


def test_at_a_restart_a_watermark_of_readings_confirmed_from_memory_is_not_lost(tmp_path):
    store = new_store(tmp_path)
    store.confirmed_live([corrected(i, held_from=0) for i in range(5)])   # never stored
    restart_with_old_file(store)
    store = new_store(tmp_path)
    salvage_all(store)
    assert store.watermark(THING, RUN) == 4                     # main: -1
