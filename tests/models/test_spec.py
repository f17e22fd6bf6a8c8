"""Table I as data: the spec against the paper's table, the backbone / classifier split, the
structure of the built models against the pre-split builder, and the networks' names."""
import keras
import numpy as np
import pytest

import rnl_keras.models.tsm_resnet as tsm_module
from rnl_keras.models import (TABLE_I, architecture_name, tsm_resnet50, tsm_resnet_backbone,
                              tsm_resnet_classifier)
from rnl_keras.models import spec as specs
from rnl_keras.models.tsm_resnet import tsm_resnet
from tests.models.structure import BUILD, CONFIGS, load_snapshot, structure

TINY = specs.derive(TABLE_I, blocks=(1, 1, 1, 1), base_width=4, positions=(("res3", 0),))


def test_table_i_is_the_papers():
    """Paper Table I: conv1 7x7/2 64, pool1 3x3/2; res2..res5 x3, x4, x6, x3 bottlenecks of
    widths 64..512 (outputs 256..2048), spatial stride 2 from res3 on; RNL blocks 2 in res3 and
    3 in res4 (Section IV-A) with regions 3x7x7 and 3x3x3."""
    assert TABLE_I.stem == (7, 64, 2, 3, 2)
    rows = [(s.name, s.blocks, s.width, 4 * s.width, s.stride) for s in TABLE_I.stages]
    assert rows == [("res2", 3, 64, 256, 1), ("res3", 4, 128, 512, 2),
                    ("res4", 6, 256, 1024, 2), ("res5", 3, 512, 2048, 2)]
    per_stage = {s.name: sum(s.attention) for s in TABLE_I.stages}
    assert per_stage == {"res2": 0, "res3": 2, "res4": 3, "res5": 0}
    assert specs.placement_of() == (("res3", 0), ("res3", 2), ("res4", 0), ("res4", 2),
                                    ("res4", 4))
    assert specs.regions_of()["res3"] == (3, 7, 7) and specs.regions_of()["res4"] == (3, 3, 3)
    assert specs.validate(TABLE_I) is TABLE_I


def test_the_old_constants_are_derived_from_the_spec():
    assert tsm_module.DEFAULT_PLACEMENT == (("res3", 0), ("res3", 2), ("res4", 0), ("res4", 2),
                                            ("res4", 4))
    assert tsm_module.DEFAULT_RNL_KERNELS == {"res3": (3, 7, 7), "res4": (3, 3, 3),
                                              "res2": (3, 7, 7), "res5": (3, 3, 3)}
    assert tsm_module.STAGE_NAMES == (("res2", "conv2", 1), ("res3", "conv3", 2),
                                      ("res4", "conv4", 2), ("res5", "conv5", 2))
    assert tsm_module.RESNET50_BLOCKS == (3, 4, 6, 3)


def test_derive_changes_only_what_it_is_given():
    small = specs.derive(TABLE_I, blocks=(1, 2, 1, 1), base_width=24,
                         positions=(("res3", 1), ("res5", 0)), region_sizes={"res3": (1, 5, 5)})
    assert [(s.blocks, s.width, s.stride) for s in small.stages] == [
        (1, 24, 1), (2, 48, 2), (1, 96, 2), (1, 192, 2)]
    assert small.stem.width == 24 and small.stem.kernel == 7
    assert specs.placement_of(small) == (("res3", 1), ("res5", 0))
    assert specs.regions_of(small) == {"res2": (3, 7, 7), "res3": (1, 5, 5), "res4": (3, 3, 3),
                                       "res5": (3, 3, 3)}
    assert specs.derive(TABLE_I) == TABLE_I


@pytest.mark.parametrize("kwargs, message", [
    ({"blocks": (3, 4, 6)}, "stage_blocks must be 4"),
    ({"blocks": (3, 0, 6, 3)}, "stage_blocks must be 4 positive"),
    ({"base_width": 0}, "base_width"),
    ({"positions": (("res6", 0),)}, r"placement entry \('res6', 0\)"),
    ({"blocks": (1, 1, 1, 1), "positions": (("res3", 1),)}, "placement entry"),
])
def test_derive_refuses_bad_variants(kwargs, message):
    with pytest.raises(ValueError, match=message):
        specs.derive(TABLE_I, **kwargs)


@pytest.mark.parametrize("broken, message", [
    (TABLE_I._replace(stages=()), "at least one stage"),
    (TABLE_I._replace(stem=TABLE_I.stem._replace(width=0)), "stem"),
    (specs.NetworkSpec(TABLE_I.stem, (TABLE_I.stages[0]._replace(attention=(1, 0)),)),
     "res2: attention must hold one 0/1 mark per block"),
    (specs.NetworkSpec(TABLE_I.stem, (TABLE_I.stages[0]._replace(region=(3, 7)),)),
     "res2: region"),
    (specs.NetworkSpec(TABLE_I.stem, TABLE_I.stages[:1] * 2), "names must be distinct"),
])
def test_a_broken_spec_is_refused_by_name(broken, message):
    with pytest.raises(ValueError, match=message):
        tsm_resnet(5, spec=broken, num_frames=2, image_size=32)


@pytest.mark.parametrize("kwargs, expected", [
    ({}, "TSM-ResNet50"),
    ({"stage_blocks": (3, 4, 6, 3), "base_width": 64, "attention": "rnl"}, "TSM-ResNet50 +5 RNL"),
    ({"stage_blocks": (1, 1, 1, 1), "base_width": 24}, "TSM-ResNet (blocks 1-1-1-1, width 24)"),
    ({"stage_blocks": [3, 4, 6, 3], "base_width": 32, "attention": "none"},
     "TSM-ResNet (blocks 3-4-6-3, width 32)"),
    ({"stage_blocks": (1, 1, 1, 1), "base_width": 24, "attention": "se+rnl",
      "placement": (("res3", 0), ("res4", 0)), "fold_div": 8}, "TSM-ResNet (blocks 1-1-1-1, "
     "width 24) +2 SE+RNL"),
    ({"shift": False, "attention": "gate"}, "TSN-ResNet50 +5 GC"),
    ({"spec": TINY, "attention": "nl"}, "TSM-ResNet (blocks 1-1-1-1, width 4) +1 NL"),
])
def test_architecture_name(kwargs, expected):
    assert architecture_name(**kwargs) == expected


def test_the_structure_is_the_pre_split_builders():
    """Layer names, classes, connections, settings and the weight list (paths, shapes, order) of
    the models ``tsm_resnet50`` builds are those recorded from the single builder before the
    spec / backbone / classifier split (tests/models/structure.py)."""
    snapshot = load_snapshot()
    assert snapshot["build"] == BUILD and set(snapshot["models"]) == set(CONFIGS)
    for key, kwargs in CONFIGS.items():
        got = structure(tsm_resnet50(BUILD["num_classes"], num_frames=BUILD["num_frames"],
                                     image_size=BUILD["image_size"], **kwargs))
        want = snapshot["models"][key]
        # The one deliberate change: a network smaller than Table I's is no longer named
        # "tsm_resnet50_*" (issue 13: small networks named as what they are).
        assert got["name"] == want["name"].replace("tsm_resnet50_", "tsm_resnet_"), key
        for index, (ours, theirs) in enumerate(zip(got["layers"], want["layers"])):
            assert ours == theirs, f"{key}: layer {index}"
        assert len(got["layers"]) == len(want["layers"]), key
        assert got["weights"] == want["weights"], key


def test_backbone_gives_per_frame_features(rng):
    backbone = tsm_resnet_backbone(TINY, num_frames=3, attention="rnl", image_size=32)
    clip = rng.normal(0, 1, (2, 3, 32, 32, 3)).astype("float32")
    assert backbone(clip, training=False).shape == (2, 3, 4 * 4 * 8)   # 4 x res5's width 32
    assert backbone.get_layer("conv3_block1_rnl").kernel_size == (3, 7, 7)


def test_classifier_is_flat_and_shares_the_backbone(rng):
    backbone = tsm_resnet_backbone(TINY, num_frames=3, attention="rnl", image_size=32)
    model = tsm_resnet_classifier(backbone, 7, dropout=0.0)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert model.get_layer("conv3_block1_1_conv") is backbone.get_layer("conv3_block1_1_conv")
    names = [layer.name for layer in model.layers]
    assert names[-3:] == ["dropout", "fc", "consensus"] and "frame_features" not in names
    assert [w.path for w in model.weights[:-2]] == [w.path for w in backbone.weights]
    clip = rng.normal(0, 1, (2, 3, 32, 32, 3)).astype("float32")
    features = np.asarray(backbone(clip, training=False), np.float64)      # (B, T, C)
    fc = model.get_layer("fc")
    expected = (features @ np.asarray(fc.kernel, np.float64)).mean(axis=1) + np.asarray(fc.bias)
    np.testing.assert_allclose(model(clip, training=False), expected, rtol=1e-5, atol=1e-6)


def test_a_general_spec_builds_what_it_says(rng):
    """Three stages, one marked position in the first (region 1x3x3): no res5 layers, the block
    where the marks say, 4 x the last width features."""
    stages = (specs.Stage("res2", "conv2", 2, 4, 1, (0, 1), (1, 3, 3)),
              specs.Stage("res3", "conv3", 1, 8, 2, (0,), (3, 3, 3)),
              specs.Stage("res4", "conv4", 1, 16, 2, (0,), (3, 3, 3)))
    net = specs.NetworkSpec(specs.Stem(3, 4, 1, 3, 2), stages)
    model = tsm_resnet(3, spec=net, num_frames=2, image_size=16, include_top=False)
    names = [layer.name for layer in model.layers]
    assert [n for n in names if n.endswith("_rnl")] == ["conv2_block2_rnl"]
    assert model.get_layer("conv2_block2_rnl").kernel_size == (1, 3, 3)
    assert not [n for n in names if n.startswith("conv5")]
    assert model.get_layer("conv1_conv").kernel_size == (3, 3)
    assert model(rng.normal(0, 1, (1, 2, 16, 16, 3)).astype("float32")).shape == (1, 2, 64)


def test_profile_names_a_small_network_as_what_it_is(capsys):
    """pipelines/profile.py reports the 1-1-1-1 width-8 net with one RNL block as such (it
    printed "baseline TSM-R50" and "+5 RNL" for every network)."""
    from pipelines.profile import main

    main(["--num_frames=2", "--image_size=32", "--num_classes=5", "--stage_blocks=1,1,1,1",
          "--base_width=8", "--placement=res3:0", "--attention=none,rnl"])
    printed = capsys.readouterr().out
    assert printed.startswith("TSM-ResNet (blocks 1-1-1-1, width 8): per clip of 2x32x32")
    rows = [line.split()[:2] for line in printed.splitlines()[4:6]]
    assert rows == [["baseline", "0.13"], ["+1", "RNL"]]
    assert "TSM-R50" not in printed and "+5" not in printed
