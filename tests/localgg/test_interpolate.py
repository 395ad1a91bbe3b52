from localgg.interpolate import Scope, interpolate

SCOPE = Scope(values={"artifacts:path": "/gg/a", "iot:thingName": "t1"},
              configuration={"port": 8080, "ratio": 1.5, "on": True, "obj": {"b": 1, "a": [1, 2]}, "s": "x/y"},
              dependencies={"Other.C": Scope(values={"work:path": "/gg/w/o"}, configuration={"topic": "t/x"})})


def test_same_component_variables():
    assert interpolate("{artifacts:path}/run.py --thing {iot:thingName}", SCOPE) == "/gg/a/run.py --thing t1"


def test_configuration_rendering():
    text = "{configuration:/port} {configuration:/ratio} {configuration:/on} {configuration:/obj} {configuration:/s}"
    assert interpolate(text, SCOPE) == '8080 1.5 true {"a":[1,2],"b":1} x/y'


def test_cross_component_only_for_direct_dependencies():
    assert interpolate("{Other.C:configuration:/topic} {Other.C:work:path}", SCOPE) == "t/x /gg/w/o"
    assert interpolate("{Stranger:configuration:/topic}", SCOPE) == "{Stranger:configuration:/topic}"


def test_missing_and_unknown_are_left_as_written():
    text = "{configuration:/nope} {artifacts:unknown} ${HOME} {VAR:-default}"
    assert interpolate(text, SCOPE) == text
