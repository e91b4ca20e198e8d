"""Which flavor a set of tensor shapes belongs to.

A checkpoint does not record the model args it was trained with, but the
shapes of its tensors pin them down: every flavor in ``tinytitan.models`` has a
distinct set. A mismatch is reported with the tensor, both shapes and the
flavor that would fit, because "size mismatch" alone does not say which config
is wrong.
"""

from __future__ import annotations

from functools import cache

from tinytitan.errors import TinytitanError

Shapes = dict[str, tuple[int, ...]]


@cache
def flavor_shapes(flavor: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The state-dict shapes torchtitan builds for a flavor, from the flavor's numbers (no torch needed;
    tests/test_models.py checks them against the model torchtitan builds)."""
    from tinytitan.models import state_shapes

    return tuple(state_shapes(flavor))


def fitting_flavors(shapes: Shapes) -> list[str]:
    from tinytitan.models import FLAVOR_NAMES

    return [f for f in FLAVOR_NAMES if dict(flavor_shapes(f)) == shapes]


def fitting_flavor(shapes: Shapes) -> str | None:
    fits = fitting_flavors(shapes)
    return fits[0] if fits else None


def _hint(shapes: Shapes) -> str:
    fit = fitting_flavor(shapes)
    if fit:
        return f'the checkpoint fits flavor {fit!r}: set [model] flavor = "{fit}" in the config'
    return "no flavor in tinytitan/models.py fits it: add the flavor it was trained with"


def check_shapes(shapes: Shapes, flavor: str, where: str) -> None:
    """Raises a one-line error naming the first tensor that does not fit ``flavor``."""
    from tinytitan.models import FLAVOR_NAMES

    if flavor not in FLAVOR_NAMES:
        raise TinytitanError(f"unknown flavor {flavor!r}: choose one of {', '.join(FLAVOR_NAMES)}")
    expected = dict(flavor_shapes(flavor))
    for name, shape in expected.items():
        if name not in shapes:
            raise TinytitanError(f"{where} has no tensor {name}, which flavor {flavor!r} needs; {_hint(shapes)}")
        if tuple(shapes[name]) != shape:
            raise TinytitanError(
                f"tensor {name} is {list(shapes[name])} in {where} but flavor {flavor!r} expects {list(shape)}; "
                f"{_hint(shapes)}"
            )
    extra = [n for n in shapes if n not in expected]
    if extra:
        raise TinytitanError(f"{where} has tensor {extra[0]}, which flavor {flavor!r} does not have; {_hint(shapes)}")


def require_flavor(shapes: Shapes, flavor: str | None, where: str) -> str:
    """The given flavor after checking it, or the one the shapes fit."""
    if flavor:
        check_shapes(shapes, flavor, where)
        return flavor
    fit = fitting_flavor(shapes)
    if fit is None:
        raise TinytitanError(f"the tensor shapes of {where} fit no flavor in tinytitan/models.py: add its flavor there")
    return fit
