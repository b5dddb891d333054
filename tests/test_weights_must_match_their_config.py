"""A folder whose transformer config and weights disagree is refused in one line naming the counts, before
anything loads (diffusers would initialise the difference at random and say nothing through autodelta's muted
logs); ``--random-weights`` stays the explicit way to run the architecture without them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import factories
from tests.helpers import refusal


def _edit(path: Path, **values) -> None:
    doc = json.loads(path.read_text())
    doc.update(values)
    path.write_text(json.dumps(doc))



def _search(cli, folder: Path, out: Path) -> str:
    return refusal(cli, "search", "--model", str(folder), "--budget", "1.6x", "--trials", "1", "--calib", "1",
                    "--resolution", "16", "--out", str(out))


@pytest.fixture(scope="module")
def flux(tmp_path_factory) -> Path:
    return factories.flux_folder(tmp_path_factory.mktemp("fx") / "fx", double=1, single=2, guidance=True)


def _copy(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_more_blocks_in_the_config_than_in_the_weights_are_refused_with_the_counts(cli, tmp_path, flux):
    folder = _copy(flux, tmp_path)
    _edit(folder / "transformer" / "config.json", num_single_layers=4000)
    err = _search(cli, folder, tmp_path / "s")
    assert "does not match the weights" in err and "missing from the weights" in err
    assert "num_single_layers" in err and "--random-weights" in err
    assert not (tmp_path / "s").exists()


def test_weights_the_config_has_no_place_for_are_refused(cli, tmp_path, flux):
    folder = _copy(flux, tmp_path)
    _edit(folder / "transformer" / "config.json", guidance_embeds=False)
    err = _search(cli, folder, tmp_path / "s")
    assert "saved tensors fit nowhere" in err and "guidance_embedder" in err and "missing" not in err


def test_a_transformer_of_another_family_is_refused_before_it_is_profiled(cli, tmp_path, flux):
    folder = _copy(flux, tmp_path)
    _edit(folder / "transformer" / "config.json", _class_name="SD3Transformer2DModel")
    err = refusal(cli, "profile", "--model", str(folder), "--out", str(tmp_path / "p.yaml"))
    assert "SD3Transformer2DModel" in err and "FluxPipeline calls a FluxTransformer2DModel" in err
    assert not (tmp_path / "p.yaml").exists()


def test_random_weights_still_build_the_config_as_written(tmp_path, flux):
    from autodelta.models import discover

    folder = _copy(flux, tmp_path)
    _edit(folder / "transformer" / "config.json", num_single_layers=3)
    profile = discover.profile_from_folder(folder)
    pipe = profile.load_pipeline(random_weights=True)
    assert len(pipe.transformer.single_transformer_blocks) == 3


def test_a_folder_whose_weights_match_loads_them(tmp_path, flux):
    import torch
    from safetensors.torch import load_file

    from autodelta.models import discover

    pipe = discover.profile_from_folder(flux).load_pipeline()
    saved = load_file(str(flux / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in pipe.transformer.state_dict().items())
