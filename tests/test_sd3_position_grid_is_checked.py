"""SD3's position embedding is a grid of ``pos_embed_max_size`` tokens a side, cropped to the image: a grid of 0,
or an image larger than the grid, is refused in one line before diffusers fails inside the profiler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import factories
from tests.helpers import refusal


@pytest.fixture(scope="module")
def sd3(tmp_path_factory) -> Path:
    return factories.sd3_folder(tmp_path_factory.mktemp("sd3") / "sd3", layers=2, dual_attention=1)



def test_a_grid_of_zero_is_named_with_its_file(cli, tmp_path, sd3):
    import shutil

    folder = Path(shutil.copytree(sd3, tmp_path / "sd3"))
    config = folder / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "pos_embed_max_size": 0}))
    err = refusal(cli, "profile", "--model", str(folder))
    assert "config.json: pos_embed_max_size is 0" in err


def test_an_image_beyond_the_grid_is_refused_with_the_largest_that_fits(cli, tmp_path, sd3):
    # grid 16 tokens, patch 2, VAE x2: 64 px is the largest image
    err = refusal(cli, "profile", "--model", str(sd3), "--resolution", "128")
    assert "more than its pos_embed_max_size 16; pick at most 64 px" in err
    code, out, err = cli("profile", "--model", str(sd3), "--resolution", "64", "--repeats", "1")
    assert code == 0, err
