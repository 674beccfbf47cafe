"""Every public operation of the dataset area leaves the model exactly as it found it, also when it raises."""

from __future__ import annotations

import pytest

from cnnscope.capture.receptive_field import receptive_fields
from cnnscope.dataset import collect_statistics
from cnnscope.dataset.circuits import attribution, connection, expanded_weights, feeding_layer, render_attribution
from cnnscope.dataset.factorize import factorize_dataset, factorize_image
from cnnscope.dataset.sources import iterate_batches, open_source
from cnnscope.models import wrap
from tests.conformance import assert_unchanged
from tests.models import InplaceReLUNet

from .helpers import RandomImages

SIZE = (20, 28)


def _setup():
    net = InplaceReLUNet()
    model = wrap(net, input_size=SIZE)
    data = RandomImages(4)
    return net, model, data, data.images[0]


OPERATIONS = {
    "collect_statistics": lambda net, m, d, img: collect_statistics(m, d, ["features.2", "features.4"], k=2),
    "collect_statistics_pre": lambda net, m, d, img: collect_statistics(m, d, ["features.2", "features.5"], k=2,
                                                                        pre_activation=True),
    "receptive_fields": lambda net, m, d, img: receptive_fields(net, ["features.5"], SIZE, cache=False),
    "iterate_batches": lambda net, m, d, img: list(iterate_batches(m, open_source(d), batch_size=3)),
    "connection": lambda net, m, d, img: connection(net, "features.2", 1),
    "attribution": lambda net, m, d, img: attribution(m, img, "features.5", channel=3),
    "expanded_weights": lambda net, m, d, img: expanded_weights(m, "features.5", channel=0, from_layer="features.2"),
    "feeding_layer": lambda net, m, d, img: feeding_layer(net, "features.4", input_size=24),
    "render_attribution": lambda net, m, d, img: render_attribution(
        m, attribution(m, img, "features.5", channel=3), steps=2, size=24, recipe="plain"),
    "factorize_image": lambda net, m, d, img: factorize_image(m, img, "features.5", k=2),
    "factorize_dataset": lambda net, m, d, img: factorize_dataset(m, d, "features.5", k=2, max_positions=100),
}

FAILING = {
    "collect_statistics": lambda net, m, d, img: collect_statistics(m, d, ["fc"]),
    "collect_statistics_pre": lambda net, m, d, img: collect_statistics(m, d, ["features.4"], pre_activation=True),
    "receptive_fields": lambda net, m, d, img: receptive_fields(net, ["fc"], SIZE, cache=False),
    "connection": lambda net, m, d, img: connection(net, "features.3", 0),
    "attribution": lambda net, m, d, img: attribution(m, img, "features.5", channel=3, position=(99, 0)),
    "expanded_weights": lambda net, m, d, img: expanded_weights(m, "features.2", channel=0, from_layer="features.5"),
    "factorize_image": lambda net, m, d, img: factorize_image(m, img, "fc", k=2),
}


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_operation_leaves_the_model_unchanged(name):
    net, model, data, image = _setup()
    net.train()  # the operations use temporary eval mode; the training flags must come back
    err = assert_unchanged(net, lambda: OPERATIONS[name](net, model, data, image))
    assert err is None, err
    assert net.training


@pytest.mark.parametrize("name", sorted(FAILING))
def test_failing_operation_leaves_the_model_unchanged(name):
    net, model, data, image = _setup()
    err = assert_unchanged(net, lambda: FAILING[name](net, model, data, image))
    assert err is not None
