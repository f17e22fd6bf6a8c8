"""The architecture as data: the paper's Table I as one literal spec, and what is derived from it.

:data:`TABLE_I` is read top-down like the paper's table: the stem (conv1, pool1), then the four
residual stages res2..res5 with their bottleneck count, width, stride, after which bottlenecks an
attention block goes (MMAction2's ``non_local=((0, 0, 0), (1, 0, 1, 0), ...)``) and with which
region size (the kernel of F_theta, eq. 9). The builders (:mod:`rnl_keras.models.backbone`,
:mod:`rnl_keras.models.tsm_resnet`) lay a network out from such a spec; :func:`architecture_name`
names the network a set of builder arguments gives (a small demo net is not a "ResNet50").
"""
from numbers import Integral
from typing import NamedTuple


class Stem(NamedTuple):
    """conv1 (``kernel`` x ``kernel``, ``width`` filters, stride ``stride``), then a
    ``pool`` x ``pool`` max pool of stride ``pool_stride`` (pool1)."""
    kernel: int
    width: int
    stride: int
    pool: int
    pool_stride: int


class Stage(NamedTuple):
    """One residual stage: ``blocks`` bottlenecks of width ``width`` (output ``4 * width``), the
    first strided by ``stride``; ``attention[i] == 1`` puts an attention block after bottleneck
    ``i``; ``region`` is the RNL region (kt, kh, kw) of this stage's blocks. ``keras_name`` is the
    stage's prefix in ``keras.applications.ResNet50`` (layer names ``conv3_block1_1_conv``...)."""
    name: str
    keras_name: str
    blocks: int
    width: int
    stride: int
    attention: tuple
    region: tuple


class NetworkSpec(NamedTuple):
    """A TSM-ResNet: its stem and its residual stages, top-down."""
    stem: Stem
    stages: tuple


# Paper Table I (RNL TSM-ResNet50, T = 8, 224 x 224): 5 RNL blocks, 2 in res3 (3x7x7) and 3 in
# res4 (3x3x3), after res3[0], res3[2], res4[0], res4[2], res4[4] (0-based) as the release. Every
# bottleneck carries the temporal shift; the temporal size is never reduced. res2's and res5's
# regions are used only when a placement puts blocks there (the paper puts none).
TABLE_I = NetworkSpec(
    stem=Stem(kernel=7, width=64, stride=2, pool=3, pool_stride=2),      # conv1, pool1
    stages=(
        #     stage   keras    blocks width stride  attention after      region
        Stage("res2", "conv2", 3,     64,   1,      (0, 0, 0),           (3, 7, 7)),
        Stage("res3", "conv3", 4,     128,  2,      (1, 0, 1, 0),        (3, 7, 7)),
        Stage("res4", "conv4", 6,     256,  2,      (1, 0, 1, 0, 1, 0),  (3, 3, 3)),
        Stage("res5", "conv5", 3,     512,  2,      (0, 0, 0),           (3, 3, 3)),
    ))

ATTENTION_LABELS = {"rnl": "RNL", "nl": "NL", "se": "SE", "gate": "GC", "se+rnl": "SE+RNL"}


# ------------------------------------------------------------------------------ views of a spec
def blocks_of(spec=TABLE_I) -> tuple:
    """Bottlenecks per stage, e.g. ``(3, 4, 6, 3)``."""
    return tuple(stage.blocks for stage in spec.stages)


def stage_names_of(spec=TABLE_I) -> tuple:
    """``((stage, keras_name, stride), ...)``, e.g. ``(("res2", "conv2", 1), ...)``."""
    return tuple((stage.name, stage.keras_name, stage.stride) for stage in spec.stages)


def placement_of(spec=TABLE_I) -> tuple:
    """The attention positions ``((stage, 0-based block), ...)``, top-down."""
    return tuple((stage.name, index) for stage in spec.stages
                 for index, mark in enumerate(stage.attention) if mark)


def regions_of(spec=TABLE_I) -> dict:
    """``{stage: (kt, kh, kw)}``: the RNL region of every stage."""
    return {stage.name: tuple(stage.region) for stage in spec.stages}


# ------------------------------------------------------------------------------ checks
def validate(spec):
    """``spec`` itself, once every field is checked.

    Raises:
        ValueError: naming the stage and field that is wrong and what was expected.
    """
    if not isinstance(spec, NetworkSpec) or not isinstance(spec.stem, Stem) or not spec.stages:
        raise ValueError(f"spec must be a NetworkSpec(stem=Stem(...), stages=(Stage(...), ...)) "
                         f"with at least one stage, got {spec!r}")
    if not all(isinstance(v, Integral) and v >= 1 for v in spec.stem):
        raise ValueError(f"spec stem: every field must be a positive int, got {spec.stem}")
    for field in ("name", "keras_name"):
        names = [getattr(stage, field, None) for stage in spec.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"spec stages: {field}s must be distinct, got {names}")
    for stage in spec.stages:
        if not isinstance(stage, Stage):
            raise ValueError(f"spec stages: expected Stage(...) entries, got {stage!r}")
        if not all(isinstance(v, Integral) and v >= 1 for v in stage[2:5]):
            raise ValueError(f"spec stage {stage.name}: blocks, width and stride must be "
                             f"positive ints, got {stage[2:5]}")
        if len(stage.attention) != stage.blocks or set(stage.attention) - {0, 1}:
            raise ValueError(f"spec stage {stage.name}: attention must hold one 0/1 mark per "
                             f"block ({stage.blocks}), got {stage.attention}")
        if len(stage.region) != 3 or not all(isinstance(k, Integral) and k >= 1 for k in stage.region):
            raise ValueError(f"spec stage {stage.name}: region must be 3 positive ints "
                             f"(kt, kh, kw), got {stage.region}")
    return spec


# ------------------------------------------------------------------------------ variants
def check_placement(positions, spec=TABLE_I) -> tuple:
    """``positions`` as ``((stage, int block), ...)``, each checked against ``spec``'s stages.

    Raises:
        ValueError: naming the first entry whose stage is unknown or whose block index is out of
            its stage's range.
    """
    blocks = {stage.name: stage.blocks for stage in spec.stages}
    out = []
    for item in positions:
        stage, index = item
        if stage not in blocks or not 0 <= int(index) < blocks[stage]:
            raise ValueError(f"placement entry {item!r}: expected (stage, block) with stage in "
                             f"{tuple(blocks)} and 0 <= block < the stage's block count {blocks}")
        out.append((stage, int(index)))
    return tuple(out)


def derive(spec=TABLE_I, blocks=None, base_width=None, positions=None, region_sizes=None):
    """A variant of ``spec`` (each argument left ``None`` keeps the spec's own).

    Args:
        spec: the starting :class:`NetworkSpec`.
        blocks: bottlenecks per stage (as many positive ints as stages).
        base_width: width of conv1 and of the first stage's bottleneck; stage ``l`` (0-based)
            gets ``base_width * 2**l`` (ResNet's doubling: Table I has 64).
        positions: attention positions ``((stage, 0-based block), ...)`` replacing the marks.
        region_sizes: ``{stage: (kt, kh, kw)}`` replacing those stages' regions.
    Returns:
        a :class:`NetworkSpec`.
    Raises:
        ValueError: bad block counts / width, or a position outside the (new) stages.
    """
    stages = list(spec.stages)
    stem = spec.stem
    if blocks is not None:
        blocks = tuple(int(b) for b in blocks)
        if len(blocks) != len(stages) or min(blocks) < 1:
            raise ValueError(f"stage_blocks must be {len(stages)} positive ints, got {blocks}")
        stages = [_resize(s, n) for s, n in zip(stages, blocks)]
    if base_width is not None:
        if int(base_width) < 1:
            raise ValueError(f"base_width must be >= 1, got {base_width}")
        stem = stem._replace(width=int(base_width))
        stages = [s._replace(width=int(base_width) * 2 ** level) for level, s in enumerate(stages)]
    if positions is not None:
        wanted = set(check_placement(positions, NetworkSpec(stem, tuple(stages))))
        stages = [s._replace(attention=tuple(int((s.name, i) in wanted) for i in range(s.blocks)))
                  for s in stages]
    if region_sizes:
        region_sizes = dict(region_sizes)
        stages = [s._replace(region=tuple(region_sizes.get(s.name, s.region))) for s in stages]
    return NetworkSpec(stem, tuple(stages))


def _resize(stage, blocks):
    """``stage`` with ``blocks`` bottlenecks; attention marks past the new end are dropped."""
    marks = tuple(stage.attention[:blocks]) + (0,) * max(0, blocks - len(stage.attention))
    return stage._replace(blocks=blocks, attention=marks)


# ------------------------------------------------------------------------------ names
def architecture_name(spec=None, stage_blocks=None, base_width=None, shift=True, attention=None,
                      placement=None, **_other_model_kwargs) -> str:
    """What a network built with these ``tsm_resnet50`` / ``tsm_resnet`` arguments is called.

    Table I's depths and widths give ``"TSM-ResNet50"``; anything else says what it is, e.g.
    ``"TSM-ResNet (blocks 1-1-1-1, width 24)"``; ``shift=False`` gives ``"TSN-..."`` (the
    per-frame baseline, no temporal shift). With ``attention`` given (not ``"none"``) the blocks
    are appended as in the paper's Table III: ``"TSM-ResNet50 +5 RNL"``.

    Args:
        spec: a :class:`NetworkSpec` (default :data:`TABLE_I`).
        stage_blocks, base_width, placement: as ``tsm_resnet50``'s (override the spec's).
        shift: the TSM temporal shift.
        attention: the attention kind; ``None`` (the default) leaves the suffix out.
        **_other_model_kwargs: every other builder argument (ignored), so
            ``architecture_name(**model_kwargs)`` works on the trainer's model arguments.
    Returns:
        the name, e.g. ``"TSM-ResNet50"``.
    """
    resolved = derive(spec or TABLE_I, blocks=stage_blocks, base_width=base_width)
    family = "TSM" if shift else "TSN"
    if is_resnet50(resolved):
        name = f"{family}-ResNet50"
    else:
        name = (f"{family}-ResNet (blocks {'-'.join(str(b) for b in blocks_of(resolved))}, "
                f"width {resolved.stem.width})")
    if attention and attention != "none":
        count = len(set(map(tuple, placement))) if placement is not None else \
            len(placement_of(resolved))
        name += " " + attention_label(attention, count)
    return name


def attention_label(attention, count) -> str:
    """The paper's Table III label of ``count`` blocks of ``attention``: ``"+5 RNL"``;
    ``"baseline"`` for ``"none"`` or no block."""
    if attention == "none" or not count:
        return "baseline"
    return f"+{count} {ATTENTION_LABELS.get(attention, attention)}"


def is_resnet50(spec) -> bool:
    """True when ``spec`` has Table I's stem and stages (blocks, widths, strides): a ResNet-50,
    wherever its attention blocks go."""
    return _layout(spec) == _layout(TABLE_I)


def _layout(spec):
    """What decides the name: the stem and every stage's (blocks, width, stride)."""
    return spec.stem, tuple((s.blocks, s.width, s.stride) for s in spec.stages)
