"""CT operators registered for the generic operator tests (adjointness, gradients, norm).

Small images (24–40 px) and batches > 1 keep the generic suite fast.
"""

from operators.ct import CTOperator
from tests.cases import register


@register("ct-parallel")
def _parallel(dtype):
    return CTOperator(image_size=32, views=20), 2


@register("ct-parallel-limited-120-nonsquare")
def _limited(dtype):
    return CTOperator(image_size=(32, 40), views=15, arc=120), 3


@register("ct-parallel-strip-pixel0.7")
def _strip(dtype):
    return CTOperator(image_size=24, views=12, pixel_size=0.7, projector="strip"), 2


@register("ct-parallel-line-coarse-detector")
def _line(dtype):
    return CTOperator(image_size=24, views=10, projector="line", detector_spacing=1.5), 2


@register("ct-fan")
def _fan(dtype):
    return CTOperator(image_size=32, views=24, geometry="fan"), 2


@register("ct-fan-strip-nonsquare-pixel0.5-short-scan")
def _fan_strip(dtype):
    op = CTOperator(
        image_size=(24, 32),
        views=16,
        arc=240,
        geometry="fan",
        pixel_size=0.5,
        projector="strip_fanflat",
        source_origin=60,
        origin_detector=30,
    )
    return op, 2
