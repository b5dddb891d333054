"""A pipeline folder that cannot run is refused in one line naming what is wrong with it: an unsupported pipeline
(config values in model_index.json are not components), or a component listed but missing."""

from __future__ import annotations

import json
import shutil

import pytest

from tests import factories
from tests.helpers import refusal


@pytest.mark.parametrize("two_experts", [False, True], ids=["wan2.1", "wan2.2"])
def test_a_wan_folder_as_diffusers_saves_it_is_named_unsupported(cli, tmp_path, two_experts):
    folder = factories.wan_folder(tmp_path / "wan", two_experts)
    index = json.loads((folder / "model_index.json").read_text())
    assert "boundary_ratio" in index and not isinstance(index["boundary_ratio"], list)
    err = refusal(cli, "search", "--model", str(folder), "--budget", "1.6x", "--out", str(tmp_path / "s"))
    assert "WanPipeline is not supported" in err and "FluxPipeline" in err and "boundary_ratio" not in err


def test_a_missing_component_is_named_with_its_folder_not_blamed_on_the_hub_cache(cli, tmp_path):
    folder = factories.flux_folder(tmp_path / "fx", double=1, single=1)
    shutil.rmtree(folder / "vae")
    err = refusal(cli, "rule", "--model", str(folder), "--budget", "1.6x", "--out", str(tmp_path / "r.yaml"))
    assert "component 'vae' (AutoencoderKL)" in err and "missing" in err and "Hugging Face cache" not in err

    index = json.loads((folder / "model_index.json").read_text())
    del index["transformer"]
    (folder / "model_index.json").write_text(json.dumps(index))
    err = refusal(cli, "rule", "--model", str(folder), "--budget", "1.6x", "--out", str(tmp_path / "r.yaml"))
    assert "lists no transformer" in err
