"""Toy models live in the user's cache, found from any results_dir (HARNESS_CACHE, XDG_CACHE_HOME, ~/.cache)."""

from __future__ import annotations

from pathlib import Path

from harness.train.models import resolve_model_path, user_cache_dir


def test_the_user_cache_follows_harness_cache_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "hc"))
    assert user_cache_dir() == tmp_path / "hc"
    monkeypatch.delenv("HARNESS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "harness"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "harness"


def test_two_results_dirs_share_one_toy_build(tmp_path):
    first = Path(resolve_model_path("toy://micro", tmp_path / "a" / "cache"))
    second = Path(resolve_model_path("toy://micro", tmp_path / "b" / "cache"))
    assert first == second and first.parent == user_cache_dir() / "toy" and (first / "config.json").is_file()
    assert not (tmp_path / "a" / "cache" / "toy").exists()
