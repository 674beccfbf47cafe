"""The artifact-kind registry: a new kind is one decorated class, and the build, the CLI listing and the viewer
pick it up without other edits; duplicates and undeclared artifacts are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.atlas import KINDS, ArtifactKind, AtlasError, AtlasStore, build_atlas, list_kinds, register_kind
from cnnscope.atlas.encode import decode_png, image_artifact, numbers_artifact
from cnnscope.capture import capture
from cnnscope.cli import main
from cnnscope.registry import RegistryError
from tests.atlas import helpers

LAYER = "features.2"
#: a fixed model-space input (a float tensor is always in the model's input space)
PROBE = torch.linspace(-2, 2, 3 * 32 * 32).reshape(1, 3, 32, 32)


def _channel_max_kind() -> type[ArtifactKind]:
    """A kind defined the way a user adds one: one class, one decorator (registered in the caller's scope)."""

    @register_kind
    class ChannelMax(ArtifactKind):
        name = "channel_max"
        title = "Channel maximum (scoped test kind)"
        artifacts = {"swatch": "image/png", "max": "application/json"}
        optional = True
        description = "the unit's largest value on a fixed probe input"

        def produce(self, ctx, units):
            with torch.no_grad():
                act = capture(ctx.model, PROBE, [ctx.layer.name])[ctx.layer.name]
            out = {}
            for u in units:
                peak = float(act[0, u].max())
                swatch = np.full((8, 8, 3), 10 * u, np.uint8)
                out[u] = [image_artifact(self.name, "swatch", swatch, {"unit": u}),
                          numbers_artifact(self.name, "max", {"max": peak})]
            return out

    return ChannelMax


def test_a_new_kind_is_built_listed_and_shown(tmp_path, capsys):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    with KINDS.scoped():
        _channel_max_kind()
        assert "channel_max" in [k.name for k in list_kinds()]
        report = build_atlas(helpers.tiny_model(), tmp_path, [LAYER], channels="1,3", kinds=["channel_max"])
        assert report.kinds == ["channel_max"] and report.built == [(LAYER, 1), (LAYER, 3)]
        assert main(["atlas", "kinds"]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("channel_max"))
        assert "optional" in row and "swatch, max" in row and "fixed probe input" in row
    assert "channel_max" not in KINDS  # the scope removed it

    m = helpers.tiny_model()
    m.module.eval()
    with torch.no_grad():
        expected = m.module.features[:3](PROBE)
    with AtlasStore(tmp_path) as st:
        assert st.integrity_check() == []
        for u in (1, 3):
            arts = {a.name: a for a in st.artifacts(LAYER, u)}
            assert arts["max"].numbers["max"] == pytest.approx(float(expected[0, u].max()), rel=1e-6)
    # the viewer shows it without the kind's code: the atlas recorded how to show its artifacts
    with TestClient(create_app(tmp_path)) as c:
        v = c.get(f"/api/layers/{LAYER}/units/3").json()
        [section] = v["sections"]
        assert section["kind"] == "channel_max" and section["title"] == "Channel maximum (scoped test kind)"
        assert [(a["name"], a["show"]) for a in section["artifacts"]] == [("swatch", "image"), ("max", "numbers")]
        html = c.get(f"/layer/{LAYER}/unit/3").text
        assert 'id="kind-channel_max"' in html and "Channel maximum (scoped test kind)" in html
        swatch = section["artifacts"][0]["url"]
        assert f'<img src="{swatch}"' in html
        assert decode_png(c.get(swatch).content)[0, 0].tolist() == [30, 30, 30]
        assert str(section["artifacts"][1]["numbers"]["max"])[:6] in html
        layer_page = c.get(f"/layer/{LAYER}").text  # no thumbnail declared: tiles without pictures
        assert f'href="/layer/{LAYER}/unit/1"' in layer_page


def test_duplicates_and_bad_declarations_are_refused():
    with KINDS.scoped():
        with pytest.raises(RegistryError, match="'featurevis' is already registered"):
            @register_kind
            class Again(ArtifactKind):
                name = "featurevis"
                artifacts = {"image": "image/png"}

        with pytest.raises(RegistryError, match="declare its artifacts"):
            @register_kind
            class Undeclared(ArtifactKind):
                name = "undeclared"

        with pytest.raises(RegistryError, match="thumbnail 'max' is not one of its image artifacts"):
            @register_kind
            class BadThumb(ArtifactKind):
                name = "bad_thumb"
                artifacts = {"max": "application/json"}
                thumbnail = "max"

        with pytest.raises(RegistryError, match="subclass of ArtifactKind"):
            register_kind(object)
        assert {"undeclared", "bad_thumb"}.isdisjoint(KINDS)


def test_an_undeclared_artifact_stops_the_build(tmp_path):
    with KINDS.scoped():

        @register_kind
        class Liar(ArtifactKind):
            name = "liar"
            artifacts = {"max": "application/json"}

            def produce(self, ctx, units):
                return {u: [numbers_artifact(self.name, "min", {"min": 0})] for u in units}

        with pytest.raises(AtlasError, match="returned 'min' .*which it does not declare"):
            build_atlas(helpers.tiny_model(), tmp_path, [LAYER], channels=0, kinds=["liar"])
    with AtlasStore(tmp_path) as st:
        assert st.units(LAYER) == []  # nothing half-written


def test_the_docs_describe_every_registered_kind():
    """docs/atlas.md's table of kinds has a row per registered kind (the test kind of the suite aside)."""
    text = (helpers.ROOT / "docs" / "atlas.md").read_text()
    rows = {line.split("|")[1].strip().split()[0].strip("`") for line in text.splitlines()
            if line.startswith("| `")}
    assert {k.name for k in list_kinds()} - {helpers.KIND} == rows
