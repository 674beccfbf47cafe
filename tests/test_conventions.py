"""docs/CONVENTIONS.md, checked on every public function of every area.

Walks the ``__all__`` of each area package and checks what can be checked from signatures: ``model`` first and
typed ``ModelLike``; at most three positional parameters (the rest keyword-only); ``batch_size`` means images per
forward (keyword-only, default ``None`` = by device) and no other batch names; no ``device`` where a model is given;
one name per idea. A function that cannot follow a rule is listed in ``EXEMPT`` with the reason.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

AREAS = ["capture", "models", "featurevis", "attribution", "zf", "dataset", "stimuli", "evaluate", "atlas", "web",
         "fastforward"]

#: names that one idea had in other areas; each has one name now (docs/CONVENTIONS.md)
RETIRED = {
    "module": "model", "net": "model", "inputs": "images", "x": "images", "image": "images",
    "max_batch": "batch_size", "cpu_batch": "batch_size", "internal_batch_size": "batch_size",
    "image_batch": "batch_size", "units_per_batch": "units_per_chunk",
}

#: functions exempt from one rule, with the reason (kept short: every entry is a deliberate decision)
EXEMPT: dict[str, str] = {
    "models.load_model": "creates a model: takes a name and device",
    "models.wrap": "creates a LoadedModel from a module: its subject is the module",
    "models.as_model": "the adapter itself",
    "models.load_weights": "writes weights into a module",
    "zf.train": "trains a new network: batch_size is the SGD batch, fixed so the weights do not depend on the device",
    "zf.ablate": "trains new networks (zf.train's SGD batch); its subject is the data, not a model",
    "zf.transfer": "trains a new classifier: batch_size is its SGD batch (fixed: weights independent of the device)",
}


def _public_functions():
    for area in AREAS:
        try:
            pkg = importlib.import_module(f"cnnscope.{area}")
        except ModuleNotFoundError:
            continue
        for name in getattr(pkg, "__all__", []):
            obj = getattr(pkg, name)
            if inspect.isfunction(obj):
                yield f"{area}.{name}", obj


FUNCTIONS = dict(_public_functions())


def _params(fn) -> list[inspect.Parameter]:
    return list(inspect.signature(fn).parameters.values())


def test_the_walk_finds_every_area():
    areas = {key.split(".")[0] for key in FUNCTIONS}
    assert {"featurevis", "attribution", "zf", "dataset", "stimuli", "evaluate", "atlas"} <= areas
    assert len(FUNCTIONS) > 60


@pytest.mark.parametrize("key", sorted(FUNCTIONS))
def test_model_first_and_typed(key):
    if key in EXEMPT:
        pytest.skip(EXEMPT[key])
    params = {p.name: p for p in _params(FUNCTIONS[key])}
    if "model" not in params or params["model"].kind is inspect.Parameter.KEYWORD_ONLY:
        return
    first = _params(FUNCTIONS[key])[0]
    assert first.name == "model", f"{key}: the model is the first parameter"
    ann = str(first.annotation)
    assert "ModelLike" in ann or ("LoadedModel" in ann and "Module" in ann), \
        f"{key}: annotate model as ModelLike (LoadedModel | nn.Module), got {ann!r}"
    assert "device" not in params, f"{key}: the model's device is used; no device= argument"


@pytest.mark.parametrize("key", sorted(FUNCTIONS))
def test_options_are_keyword_only(key):
    if key in EXEMPT:
        pytest.skip(EXEMPT[key])
    positional = [p.name for p in _params(FUNCTIONS[key])
                  if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 3, f"{key}: at most 3 positional parameters, then '*' ({positional})"


@pytest.mark.parametrize("key", sorted(FUNCTIONS))
def test_one_name_per_idea(key):
    if key in EXEMPT:
        pytest.skip(EXEMPT[key])
    params = {p.name: p for p in _params(FUNCTIONS[key])}
    takes_model = "model" in params
    for old, new in RETIRED.items():
        if old in params and (takes_model or old not in ("x", "image", "inputs")):
            pytest.fail(f"{key}: parameter {old!r} is called {new!r} (docs/CONVENTIONS.md)")
    if "batch_size" in params:
        p = params["batch_size"]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{key}: batch_size is keyword-only"
        assert p.default is None, f"{key}: batch_size defaults to None (chosen by the model's device)"
    if "progress" in params:
        assert params["progress"].kind is inspect.Parameter.KEYWORD_ONLY and params["progress"].default is False
    if "pre_activation" in params:
        assert params["pre_activation"].default is False, f"{key}: pre_activation defaults to False"


@pytest.mark.parametrize("key", sorted(k for k, fn in FUNCTIONS.items()
                                        if k not in EXEMPT and _params(fn) and _params(fn)[0].name == "model"))
def test_model_goes_through_the_adapter_first(key):
    """Given something that is not a model, every entry point fails in ``as_model``: the adapter runs first.

    So every public function accepts exactly what ``as_model`` accepts (a ``LoadedModel`` or any ``nn.Module``);
    each area's tests check that a plain module and its ``wrap()`` give equal results.
    """
    from cnnscope import ModelError

    fn = FUNCTIONS[key]
    args, kwargs = [], {}
    for p in _params(fn)[1:]:
        if p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.KEYWORD_ONLY:
            kwargs[p.name] = None
        else:
            args.append(None)
    with pytest.raises(ModelError, match="LoadedModel .* or a torch.nn.Module, got NotAModel"):
        result = fn(NotAModel(), *args, **kwargs)
        if inspect.isgenerator(result):  # a generator's body runs on the first next()
            next(result)
        elif hasattr(result, "__enter__"):  # a context manager's on entering
            with result:
                pass


class NotAModel:
    """Neither a LoadedModel nor an nn.Module."""


def test_attribution_methods_share_one_signature():
    from cnnscope.attribution import Method

    params = _params(Method.attribute)
    assert [p.name for p in params[:2]] == ["self", "images"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[2:])
