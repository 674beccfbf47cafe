"""Objectives: closed-form values, the algebra, specs, reprs, gradients to the image, the registry and the
command-line syntax."""

from __future__ import annotations

import json

import pytest
import torch

from cnnscope import unit
from cnnscope.errors import LayerError, MethodError
from cnnscope.featurevis import (
    INPUT,
    OBJECTIVES,
    OUTPUT,
    Objective,
    blur,
    channel,
    class_logit,
    describe_objectives,
    direction,
    direction_neuron,
    diversity,
    from_spec,
    from_unit,
    l1,
    l2,
    layer,
    neuron,
    parse_objective,
    register_objective,
    total_variation,
)
from cnnscope.featurevis.algebra import PRE
from cnnscope.featurevis.objectives import LayerObjective

L = "feat"


def acts(b: int = 2, c: int = 4, h: int = 5, w: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {L: torch.randn(b, c, h, w, generator=g), INPUT: torch.rand(b, 3, 12, 12, generator=g),
            OUTPUT: torch.randn(b, 10, generator=g)}


#: one example of every registered objective type (the registry test below fails when one is missing)
EXAMPLES: dict[str, Objective] = {
    "neuron": neuron(L, 1, position=(3, 2)),
    "channel": channel(L, 2),
    "layer": layer(L),
    "direction": direction(L, [1.0, -2.0, 0.5, 0.0]),
    "direction_neuron": direction_neuron(L, [0.0, 1.0, 1.0, 0.0], "max", cossim_pow=1.0),
    "class_logit": class_logit(3),
    "diversity": diversity(L),
    "l1": l1(),
    "l2": l2(0.3),
    "total_variation": total_variation(),
    "blur": blur(1.5),
}


def test_examples_cover_the_registry():
    assert set(EXAMPLES) == set(OBJECTIVES)


def test_closed_form_values():
    a = acts()
    f = a[L]
    torch.testing.assert_close(channel(L, 2)(a), f[:, 2].mean(dim=(1, 2)))
    # default neuron position is the centre (H // 2, W // 2) of a non-square (5 x 7) map
    torch.testing.assert_close(neuron(L, 1)(a), f[:, 1, 2, 3])
    torch.testing.assert_close(neuron(L, 1, position=(0, 6))(a), f[:, 1, 0, 6])  # (row, col)
    torch.testing.assert_close(neuron(L, 1, "max")(a), f[:, 1].flatten(1).max(1).values)
    torch.testing.assert_close(layer(L)(a), (f ** 2).mean(dim=(1, 2, 3)))
    v = torch.tensor([1.0, -2.0, 0.5, 0.0])
    per_position = torch.einsum("bchw,c->bhw", f, v / v.norm())
    torch.testing.assert_close(direction(L, v)(a), per_position.mean(dim=(1, 2)))
    torch.testing.assert_close(direction_neuron(L, v)(a), torch.einsum("bc,c->b", f[:, :, 2, 3], v / v.norm()))
    torch.testing.assert_close(direction_neuron(L, v, (4, 1))(a), per_position[:, 4, 1])
    torch.testing.assert_close(direction_neuron(L, v, "max")(a), per_position.flatten(1).max(1).values)
    torch.testing.assert_close(class_logit(3)(a), a[OUTPUT][:, 3])


def test_pre_activation_reads_its_own_key():
    a = acts()
    pre = {PRE + L: a[L] - 1.0}
    obj = channel(L, 2, pre_activation=True)
    assert obj.layers == (PRE + L,) and channel(L, 2).layers == (L,)
    torch.testing.assert_close(obj(pre), a[L][:, 2].mean(dim=(1, 2)) - 1.0)
    with pytest.raises(LayerError, match="needs <pre>feat"):
        obj(a)
    assert repr(obj) == "channel('feat', 2, pre_activation=True)"
    assert from_spec(obj.spec()) == obj and obj != channel(L, 2)
    with pytest.raises(MethodError, match="pre_activation is True or False"):
        channel(L, 2, pre_activation="yes")


def test_units_become_channel_or_neuron_objectives():
    assert from_unit(unit(L, 3)) == channel(L, 3)
    assert from_unit(unit(L, 3, "center")) == neuron(L, 3)
    assert from_unit(unit(L, 3, (1, 4)), pre_activation=True) == neuron(L, 3, (1, 4), pre_activation=True)
    assert from_unit(unit(L, 3, "max")) == neuron(L, 3, "max")
    with pytest.raises(MethodError, match="takes a cnnscope.Unit"):
        from_unit((L, 3))
    with pytest.raises(LayerError, match="a neuron needs a position"):
        neuron(L, 3, None)


def test_direction_along_one_axis_is_the_channel():
    a = acts()
    torch.testing.assert_close(direction(L, [0, 0, 5.0, 0])(a), channel(L, 2)(a))


def test_penalties_closed_form():
    x = torch.full((2, 3, 8, 8), 0.8)
    a = {INPUT: x}  # penalties are in grey levels: 0.3 of the range is 76.5 levels
    torch.testing.assert_close(l1()(a), torch.full((2,), 0.3 * 255))
    torch.testing.assert_close(l2()(a), torch.full((2,), 0.3 * 255), atol=1e-3, rtol=0)
    torch.testing.assert_close(total_variation()(a), torch.zeros(2))
    torch.testing.assert_close(blur()(a), torch.zeros(2), atol=2e-3, rtol=0)  # sqrt of the 1e-6 floor
    checker = (torch.arange(8).view(-1, 1) + torch.arange(8).view(1, -1)) % 2
    a = {INPUT: checker.float().expand(1, 3, 8, 8)}
    torch.testing.assert_close(total_variation()(a), torch.tensor([2.0 * 255]))  # every neighbour differs by 255
    assert blur()(a).item() > 0.05 * 255


def test_diversity_of_identical_and_disjoint_images():
    same = torch.rand(1, 4, 5, 5).expand(3, -1, -1, -1)
    # identical images: every pair has cosine 1, each image scores (B - 1) / B
    torch.testing.assert_close(diversity(L)({L: same}), torch.full((3,), 2 / 3))
    disjoint = torch.zeros(2, 4, 5, 5)
    disjoint[0, 0], disjoint[1, 3] = 1.0, 1.0  # different channels fire: Gram matrices are orthogonal
    torch.testing.assert_close(diversity(L)({L: disjoint}), torch.zeros(2))
    assert diversity(L)({L: same[:1]}).item() == 0.0


def test_algebra_values():
    a = acts()
    c1, c2, n = channel(L, 1), channel(L, 2), neuron(L, 0)
    torch.testing.assert_close((c1 + c2)(a), c1(a) + c2(a))
    torch.testing.assert_close((c1 - 2 * c2)(a), c1(a) - 2 * c2(a))
    torch.testing.assert_close((c1 * 3)(a), 3 * c1(a))
    torch.testing.assert_close((c1 / 4)(a), c1(a) / 4)
    torch.testing.assert_close((c1 * n)(a), c1(a) * n(a))
    torch.testing.assert_close((c1 / n)(a), c1(a) / n(a))
    torch.testing.assert_close((-c1)(a), -c1(a))
    torch.testing.assert_close(sum([c1, c2, n])(a), c1(a) + c2(a) + n(a))
    torch.testing.assert_close(Objective.sum([c1, c2])(a), (c1 + c2)(a))
    neg = -c1
    torch.testing.assert_close((-neg)(a), c1(a))


def test_negation_flips_every_objective():
    a = acts()
    for name, obj in EXAMPLES.items():
        torch.testing.assert_close((-obj)(a), -obj(a), msg=name)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_spec_round_trip_and_json(name):
    obj = EXAMPLES[name]
    spec = obj.spec()
    assert spec["type"] == name
    again = from_spec(json.loads(json.dumps(spec)))
    assert again == obj and repr(again) == repr(obj)
    a = acts()
    torch.testing.assert_close(again(a), obj(a))


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_gradient_reaches_the_image(name):
    """Every objective, evaluated on a tiny conv of an image, has a non-zero gradient w.r.t. that image."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    fc = torch.nn.Linear(4, 10)
    img = torch.rand(3, 3, 12, 14, requires_grad=True)
    feat = conv(img)
    a = {L: feat, INPUT: img, OUTPUT: fc(feat.mean(dim=(2, 3)))}
    val = EXAMPLES[name](a)
    assert val.shape == (3,)
    (g,) = torch.autograd.grad(val.sum(), img)
    assert g.abs().sum() > 0


def test_composite_specs_and_repr():
    obj = channel(L, 1) - 0.1 * total_variation() + 2 * neuron(L, 2) * class_logit(5)
    assert repr(obj) == ("channel('feat', 1) - 0.1 * total_variation() + "
                         "2 * neuron('feat', 2) * class_logit(5)")
    assert repr(neuron(L, 2, (1, 3))) == "neuron('feat', 2, position=[1, 3])"
    assert repr(l2(0.3)) == "l2(constant=0.3)"
    assert from_spec(json.loads(json.dumps(obj.spec()))) == obj
    assert repr(-channel(L, 3)) == "-channel('feat', 3)"
    ratio = (channel(L, 1) + channel(L, 2)) / layer(L)
    assert repr(ratio) == "(channel('feat', 1) + channel('feat', 2)) / layer('feat')"
    assert obj.layers == (L,) and obj.needs_output
    assert not channel(L, 1).needs_output and l1().layers == ()
    assert (channel("a", 0) + channel("b", 1) + channel("a", 2)).layers == ("a", "b")


def test_check_reports_the_valid_range():
    with pytest.raises(LayerError, match=r"channel 9 is out of range.*4 channels \(valid: 0..3\)"):
        channel(L, 9).check({L: (4, 5, 7)})
    with pytest.raises(LayerError, match=r"valid: row 0..4, col 0..6"):
        neuron(L, 0, (0, 7)).check({L: (4, 5, 7)})
    with pytest.raises(LayerError, match=r"valid: row 0..4, col 0..6"):
        direction_neuron(L, [1, 2, 3, 4], (5, 0)).check({L: (4, 5, 7)})
    with pytest.raises(LayerError, match="no spatial grid"):
        neuron(L, 0, (0, 0)).check({L: (4,)})
    with pytest.raises(LayerError, match="5 entries but layer 'feat' has 4 channels"):
        direction(L, [1, 2, 3, 4, 5]).check({L: (4, 5, 7)})
    with pytest.raises(LayerError, match=r"class index 12 is out of range.*valid: 0..9"):
        class_logit(12).check({OUTPUT: (10,)})
    (channel(L, 1) + neuron(L, 3)).check({L: (4, 5, 7)})  # in range: no error


def test_bad_arguments():
    with pytest.raises(LayerError, match="non-negative integer"):
        channel(L, -1)
    with pytest.raises(LayerError, match="non-empty dotted"):
        channel("", 1)
    with pytest.raises(MethodError, match="non-zero"):
        direction(L, [0.0, 0.0])
    with pytest.raises(MethodError, match="unknown objective 'chanel'; did you mean: channel"):
        from_spec({"type": "chanel", "layer": L, "channel": 1})
    with pytest.raises(LayerError, match="a position is"):
        neuron(L, 1, "corner")
    with pytest.raises(TypeError):
        channel(L, 1) + 1.0  # noqa: B018


# -- registry and command-line syntax ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_registered_objective_has_a_usage_and_a_summary(name):
    row = {d["name"]: d for d in describe_objectives()}[name]
    assert row["usage"].startswith(name) and row["summary"]


@pytest.mark.parametrize("text, expected", [
    ("channel:blocks.4.0:3", channel("blocks.4.0", 3)),
    ("neuron:blocks.4.0:3", neuron("blocks.4.0", 3)),
    ("neuron:blocks.4.0:3:2,5", neuron("blocks.4.0", 3, (2, 5))),
    ("neuron:blocks.4.0:3:max:pre_activation=true", neuron("blocks.4.0", 3, "max", pre_activation=True)),
    ("neuron:blocks.4.0:3:pre_activation=true", neuron("blocks.4.0", 3, pre_activation=True)),
    ("layer:0", layer("0")),  # layer names stay text, even when they look like numbers
    ("direction:feat:1,0,-2.5:cossim_pow=2", direction("feat", [1.0, 0.0, -2.5], cossim_pow=2.0)),
    ("direction_neuron:feat:1,1:0,1", direction_neuron("feat", [1, 1], (0, 1))),
    ("class_logit:281", class_logit(281)),
    ("l2:0.25", l2(0.25)),
    ("total_variation", total_variation()),
])
def test_parse_objective(text, expected):
    assert parse_objective(text) == expected


@pytest.mark.parametrize("text, message", [
    ("chanel:feat:1", "unknown objective 'chanel'; did you mean: channel"),
    ("channel:feat:1:2", r"objective 'channel' does not take '2'; usage: channel:LAYER:CHANNEL\[:pre_activation="),
    ("channel:feat", r"bad arguments for objective 'channel' .*usage: channel:LAYER:CHANNEL"),
    ("class_logit:index=x", "class index must be a non-negative integer, got 'x'"),
])
def test_parse_objective_errors(text, message):
    with pytest.raises((MethodError, LayerError), match=message):
        parse_objective(text)


def test_one_decorated_class_is_a_new_objective():
    class Peak(LayerObjective):
        """Largest activation of the layer anywhere (any channel, any position)."""

        kind = "peak"

        def __init__(self, layer: str, scale: float = 1.0, *, pre_activation: bool = False) -> None:
            super().__init__(layer, pre_activation=pre_activation)
            self.scale = float(scale)

        def value(self, acts):
            return self.scale * self.act(acts).flatten(1).amax(1)

        def args(self):
            return {"layer": self.layer, "scale": self.scale, "pre_activation": self.pre_activation}

    assert "peak" not in OBJECTIVES
    with OBJECTIVES.scoped():
        register_objective(Peak)
        a = acts()
        obj = parse_objective("peak:feat:2")
        torch.testing.assert_close(obj(a), 2 * a[L].flatten(1).amax(1))
        assert from_spec(json.loads(json.dumps(obj.spec()))) == obj and repr(obj) == "peak('feat', scale=2.0)"
        assert {"name": "peak", "usage": "peak:LAYER[:SCALE][:pre_activation=VALUE]",
                "summary": "Largest activation of the layer anywhere (any channel, any position)."
                } in describe_objectives()
        with pytest.raises(Exception, match="already registered"):
            register_objective(type("Other", (Peak,), {"kind": "peak"}))
    assert "peak" not in OBJECTIVES
