"""The backmapper contract: save with metadata, load with checks, numpy in and out, seeds."""

import copy
import json
import zipfile

import numpy as np
import pytest
import torch

from openmmbackmap import InputError, MappingError
from openmmbackmap.mapping import Mapping
from openmmbackmap.models import create_family, families, load_backmapper, read_metadata, register_family, save_backmapper


class _TemplateBackmapper(torch.nn.Module):
    """Test model: a rigid template placed in the frame of beads 0-2, plus seeded noise.

    Real enough to exercise the contract (TorchScript, Optional previous, seeds, equivariance);
    the families themselves live in openmmbackmap.models.
    """

    def __init__(self, template: torch.Tensor, noise: float):
        super().__init__()
        self.register_buffer("template", template)
        self.noise = noise

    def forward(self, cg: torch.Tensor, previous: torch.Tensor | None, seed: int) -> torch.Tensor:
        origin = cg[:, 0]
        e1 = torch.nn.functional.normalize(cg[:, 1] - origin, dim=-1)
        v = cg[:, 2] - origin
        e2 = torch.nn.functional.normalize(v - (v * e1).sum(-1, keepdim=True) * e1, dim=-1)
        frame = torch.stack([e1, e2, torch.linalg.cross(e1, e2)], dim=1)  # (B, 3, 3) rows = axes
        generator = torch.Generator()
        generator.manual_seed(seed)
        noise = torch.randn(cg.shape[0], self.template.shape[0], 3, generator=generator) * self.noise
        return origin[:, None] + torch.einsum("ak,bkj->baj", self.template, frame) + noise


def _local_template(xyz: np.ndarray, cg: np.ndarray) -> torch.Tensor:
    origin = cg[0]
    e1 = (cg[1] - origin) / np.linalg.norm(cg[1] - origin)
    v = cg[2] - origin
    e2 = v - v @ e1 * e1
    e2 /= np.linalg.norm(e2)
    frame = np.stack([e1, e2, np.cross(e1, e2)])
    return torch.tensor((xyz - origin) @ frame.T, dtype=torch.float32)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, ala2):
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "backbone")
    cg = mapping.map(xyz[0])
    module = _TemplateBackmapper(_local_template(xyz[0], cg), noise=0.01)
    path = tmp_path_factory.mktemp("models") / "template.pt"
    save_backmapper(module, path, family="template", mapping=mapping,
                    provenance={"note": "test"}, validation={"bond_score": 1.0})
    return path, mapping


def test_file_is_self_describing_and_loads_with_torch_jit_only(model_file):
    path, mapping = model_file
    metadata = read_metadata(path)
    assert metadata["format"] == "openmm-backmap/backmapper" and metadata["version"] == 1
    assert metadata["family"] == "template" and metadata["units"]["length"] == "nm"
    assert metadata["fingerprint"] == mapping.fingerprint
    assert metadata["mapping"]["topology"]["chains"][0]["residues"][1]["name"] == "ALA"
    assert metadata["validation"] == {"bond_score": 1.0}
    extra = {"backmap.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)  # no package class needed
    assert json.loads(extra["backmap.json"])["family"] == "template"
    assert module(torch.zeros(1, 5, 3) + torch.eye(3)[[0, 1, 2, 0, 1]], None, 0).shape == (1, 22, 3)


def test_backmapper_maps_numpy_frames_with_seeds(model_file, ala2):
    path, mapping = model_file
    _, xyz = ala2
    backmapper = load_backmapper(path)
    cg = mapping.map(xyz[:10])
    out = backmapper(cg, seed=3)
    assert out.shape == (10, 22, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, backmapper(cg, seed=3))
    assert np.abs(out - backmapper(cg, seed=4)).max() > 0
    assert backmapper(cg[0], seed=3).shape == (22, 3)
    # batching does not change results for a given seed and batch layout
    np.testing.assert_array_equal(backmapper(cg, seed=3, batch_size=5)[:5], backmapper(cg[:5], seed=3))


def test_mismatched_mapping_topology_and_shapes_are_refused(model_file, ala2):
    path, mapping = model_file
    topology, xyz = ala2
    with pytest.raises(MappingError, match=r"trained with mapping 'backbone'.*given mapping 'ca'"):
        load_backmapper(path, mapping=Mapping.from_scheme(topology, "ca"))
    assert load_backmapper(path, mapping=mapping).mapping is mapping
    other = copy.deepcopy(topology)
    list(other.residues())[1].name = "GLY"
    with pytest.raises(MappingError, match="residue GLY 2 .* is ALA in the mapping's topology"):
        load_backmapper(path, topology=other)
    backmapper = load_backmapper(path, topology=topology)
    with pytest.raises(InputError, match="template.pt takes 5 beads; got coordinates of shape"):
        backmapper(xyz[:2, :3])
    bad = mapping.map(xyz[:2])
    bad[1, 2, 0] = np.nan
    with pytest.raises(InputError, match="frame 1 has non-finite coordinates"):
        backmapper(bad)


def test_corrupt_and_foreign_files_are_refused(tmp_path, model_file):
    path, _ = model_file
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(InputError, match="corrupt.pt' is not a TorchScript model"):
        load_backmapper(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.jit.script(torch.nn.Linear(3, 3)).save(str(foreign))
    with pytest.raises(InputError, match="foreign.pt' has no backmap.json"):
        load_backmapper(foreign)
    with pytest.raises(InputError, match="does not exist"):
        load_backmapper(tmp_path / "absent.pt")
    edited = tmp_path / "edited.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(edited, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith("extra/backmap.json"):
                data = data.replace(b'"ALA"', b'"GLY"')  # topology edited: fingerprint no longer matches
            target.writestr(item, data)
    with pytest.raises(MappingError, match="fingerprint does not match"):
        load_backmapper(edited)


def test_family_registry(monkeypatch):
    from openmmbackmap import models

    monkeypatch.setattr(models, "_FAMILIES", dict(models._FAMILIES))  # leave the real registry as it was

    class _Family:
        def __init__(self, width: int = 1):
            self.width = width

    register_family("test-family", _Family)
    assert "test-family" in families()
    assert create_family("test-family", width=3).width == 3
    with pytest.raises(Exception, match="unknown backmapper family 'nope'"):
        create_family("nope")
