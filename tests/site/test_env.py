"""The strict environment readers behind settings."""

from __future__ import annotations

import pytest

from autopack_site.lib.env import EnvError, env_bool, env_int, env_list


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("TRUE", True), (" yes ", True), ("off", False), ("", False)]
)
def test_env_bool_reads_the_usual_spellings(monkeypatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("FLAG", raw)
    assert env_bool("FLAG") is expected


def test_env_bool_refuses_a_typo(monkeypatch) -> None:
    monkeypatch.setenv("FLAG", "ture")
    with pytest.raises(EnvError, match="FLAG='ture' is not a boolean"):
        env_bool("FLAG")


def test_env_int_checks_type_and_minimum(monkeypatch) -> None:
    monkeypatch.setenv("N", "abc")
    with pytest.raises(EnvError, match="N='abc' is not an integer"):
        env_int("N", 1)
    monkeypatch.setenv("N", "0")
    with pytest.raises(EnvError, match="N=0 is below the minimum 1"):
        env_int("N", 1, minimum=1)
    monkeypatch.delenv("N")
    assert env_int("N", 7) == 7


def test_env_list_splits_and_trims(monkeypatch) -> None:
    monkeypatch.setenv("HOSTS", " a.example, b.example ,,")
    assert env_list("HOSTS") == ["a.example", "b.example"]
    monkeypatch.delenv("HOSTS")
    assert env_list("HOSTS", ["x"]) == ["x"]
