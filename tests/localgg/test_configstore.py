from localgg.configstore import ConfigStore, Leaf, to_python


def make():
    store = ConfigStore(lambda: 5000)
    store.replace("A", {"port": 1, "limits": {"max": 5}}, 1000)
    return store


def test_older_timestamp_does_not_change_a_leaf():
    store = make()
    assert store.merge("A", [], {"port": 2}, 500) == []
    assert store.value("A", ["port"]) == 1
    assert store.merge("A", [], {"port": 2}, 2000) == [["port"]]


def test_merge_into_missing_path_creates_containers():
    store = make()
    store.merge("A", ["a", "b"], {"c": 1}, 2000)
    assert store.value("A") == {"port": 1, "limits": {"max": 5}, "a": {"b": {"c": 1}}}


def test_watchers_get_leaf_paths_below_their_prefix():
    store = make()
    seen = []
    cancel = store.watch("A", ["LIMITS"], lambda c, p: seen.append(p))
    store.merge("A", [], {"limits": {"max": 6, "min": 0}, "port": 3}, 2000)
    assert sorted(seen) == [["limits", "max"], ["limits", "min"]]
    cancel()
    store.merge("A", ["limits"], {"max": 7}, 3000)
    assert len(seen) == 2


def test_replace_reports_removed_and_changed_leaves():
    store = make()
    changed = store.replace("A", {"limits": {"max": 5}, "new": 1}, 2000)
    assert sorted(changed) == [["new"], ["port"]]


def test_snapshot_round_trip_keeps_timestamps():
    store = make()
    copy = ConfigStore(lambda: 0)
    copy.restore(store.snapshot())
    assert copy.value("A") == store.value("A")
    leaf = copy.get("A", ["port"])
    assert isinstance(leaf, Leaf) and leaf.modtime == 1000
    assert to_python(copy.get("A", ["limits"])) == {"max": 5}


def test_view_is_shared_until_the_component_changes():
    store = make()
    first = store.view("A", ["limits"])
    assert first == {"max": 5} and store.view("A", ["LIMITS"]) is first
    store.merge("A", ["limits"], {"max": 6}, 2000)
    assert store.view("A", ["limits"]) == {"max": 6}
    store.remove_component("A")
    assert store.view("A", ["limits"], "gone") == "gone"
