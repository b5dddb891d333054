"""Nothing that cannot fit starts, and nothing long runs silently: a resolution at which one item's activations
exceed the free memory is refused with the estimate, and on a terminal every phase of a search (the reference,
the search, the report) draws a progress bar."""

from __future__ import annotations

import io
import sys

import pytest

import autodelta.models.memory
from autodelta.models.loading import load_profile
from tests import factories


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    return factories.flux_folder(tmp_path_factory.mktemp("fx") / "fx", double=1, single=1)


def test_the_estimate_grows_with_the_pixels_and_counts_guidance_rows():
    flux = load_profile("flux-dev").adapter
    assert flux.generation_bytes(2048) == 4 * flux.generation_bytes(1024)
    pixart = load_profile("pixart-alpha").adapter  # CFG: two transformer rows per item
    assert pixart.generation_bytes(1024, element_bytes=2) == pixart.generation_bytes(1024) // 2


@pytest.mark.parametrize("command", ["search", "apply"])
def test_a_size_that_cannot_fit_is_refused_with_its_estimate(cli, monkeypatch, tmp_path, flux, command):
    monkeypatch.setattr(autodelta.models.memory, "available_memory", lambda: 8 * 2**30)
    if command == "apply":
        code, _, err = cli("rule", "--model", str(flux), "--budget", "1.3x", "--steps", "4",
                           "--out", str(tmp_path / "s.yaml"))
        assert code == 0, err
        argv = ["apply", str(tmp_path / "s.yaml"), "--model", str(flux)]
    else:
        argv = ["search", "--model", str(flux), "--trials", "1", "--calib", "1"]
    code, _, err = cli(*argv, "--resolution", "16384", "--out", str(tmp_path / "o"))
    assert code == 2 and err.count("\n") == 1, err
    assert "at 16384 px needs about 24.0 GiB for one item's activations, more than the 8.0 GiB free on cpu" in err
    assert not (tmp_path / "o").exists()


def test_every_phase_of_a_search_shows_a_bar_on_a_terminal(monkeypatch, tmp_path):
    from autodelta.cli.app import main

    terminal = Terminal()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "stderr", terminal)
    try:
        main(["search", "--model", "tiny-dit", "--budget", "1.6x", "--trials", "2", "--calib", "2",
              "--max-generations", "40", "--out", str(tmp_path / "s")])
    except SystemExit as exc:
        assert not exc.code
    shown = terminal.getvalue()
    assert "reference" in shown and "2/2" in shown
    assert "@ 1.6x" in shown  # the search's own bar: probes, screening and trials
    assert "report: the paper rule and held-out scores" in shown
