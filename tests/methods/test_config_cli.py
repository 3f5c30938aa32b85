"""`siren-verl methods`: every preset listed with its parts; JSON output; errors."""

import json

from siren_verl.methods.cli import describe, main
from siren_verl.methods.presets import PARTS, PRESETS


def test_lists_every_method(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert f"\n{name} " in "\n" + out


def test_json_has_resolved_parts_for_every_method(capsys):
    assert main(["--json"]) == 0
    infos = json.loads(capsys.readouterr().out)
    assert [i["method"] for i in infos] == list(PRESETS)
    for info in infos:
        assert set(info["parts"]) == set(PARTS)


def test_one_method_in_detail(capsys):
    assert main(["siren"]) == 0
    out = capsys.readouterr().out
    assert "regularizer=anchored_square" in out and "coef=0.005" in out and "top_p=0.8" in out


def test_method_groups_are_shown_only_where_used():
    assert set(describe("aer")["groups"]) == {"aer"}
    assert set(describe("par")["groups"]) == {"par"}
    assert describe("siren")["groups"] == {}


def test_parts_listing(capsys):
    assert main(["--parts"]) == 0
    out = capsys.readouterr().out
    assert "entropy_control.regularizer" in out and "anchored_square" in out


def test_unknown_method(capsys):
    assert main(["sirne"]) == 2
    assert "unknown method 'sirne'" in capsys.readouterr().err
