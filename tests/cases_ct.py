"""CT operators registered for the generic operator tests (adjointness, gradients, norm)."""

from operators.ct import CTOperator
from tests.cases import register


@register("ct-parallel")
def _parallel(dtype):
    return CTOperator(image_size=32, views=20), 2


@register("ct-parallel-limited-120")
def _limited(dtype):
    return CTOperator(image_size=(32, 40), views=15, arc=120), 3


@register("ct-fan")
def _fan(dtype):
    return CTOperator(image_size=32, views=24, geometry="fan"), 2


@register("ct-parallel-strip-pixel0.7")
def _strip(dtype):
    return CTOperator(image_size=24, views=12, pixel_size=0.7, projector="strip"), 2
