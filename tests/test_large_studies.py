"""E4 and E5 (Table 2, Table 3) on tiny generated data in the real on-disk layouts:
Imagenette's folders, COCO's annotation JSON with polygon and RLE masks. Each study runs
end to end through the CLI for one epoch on CPU; the pieces (U-Net, image data, masks,
augmentation, placements on torchvision's real module graphs, Table 2) are checked alone."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from harness.analysis import paper, paper_tables
from harness.cli import main
from harness.data import DataError, ImageSplits, LoaderBatches, augment_batch, foreground_mask, load_splits
from harness.entropy import candidate_layers, empirical_convs, guided_layers, pre_skip_convs
from harness.models import ModelError, build_model, unet_output_size
from harness.study import CONFIG_VERSION, Replication, Study, StudyError, _canonical, build_config, flatten, load_study

WNIDS = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
         "n03394916", "n03417042", "n03425413", "n03445777", "n03888605"]


# ---------------------------------------------------------------------------- fixtures


def write_imagenette(root: Path, n_train: int = 2, n_val: int = 1) -> Path:
    """imagenette2/{train,val}/<wnid>/*.JPEG: small JPEGs of several sizes; one grayscale."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, wnid in enumerate(WNIDS):
            folder = root / "imagenette2" / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = 30 + 7 * i, 40 + 3 * c
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                pixels[..., c % 3] = 255 - 20 * c  # a class-dependent colour to learn
                image = Image.fromarray(pixels)
                if split == "train" and c == 0 and i == 0:
                    image = image.convert("L")  # Imagenette has a few grayscale JPEGs
                image.save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


def write_coco(root: Path, n_train: int = 6, n_val: int = 3) -> Path:
    """coco/annotations/instances_{train,val}2017.json and coco/{train,val}2017/*.jpg:
    each image a rectangle polygon and a triangle; one crowd region as uncompressed RLE;
    one image without annotations (left out)."""
    from pycocotools import mask as mask_utils

    (root / "coco" / "annotations").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, n in (("train", n_train), ("val", n_val)):
        folder = root / "coco" / f"{split}2017"
        folder.mkdir()
        images, annotations = [], []
        for i in range(n + 1):
            h, w = 40 + 2 * i, 48
            pixels = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
            x0, y0 = 5 + i, 8
            pixels[y0:y0 + 20, x0:x0 + 16] += 150  # the object is bright: learnable
            name = f"{i:012d}.jpg"
            Image.fromarray(pixels).save(folder / name, quality=95)
            images.append({"id": 100 + i, "file_name": name, "height": h, "width": w})
            if i == n:
                continue  # no annotation: not a training image
            box = [x0, y0, x0 + 16, y0, x0 + 16, y0 + 20, x0, y0 + 20]
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": 1,
                                "iscrowd": 0, "segmentation": [box], "area": 320.0, "bbox": [x0, y0, 16, 20]})
            tri = [30, 30, 44, 30, 37, 38]
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": 2,
                                "iscrowd": 0, "segmentation": [tri], "area": 50.0, "bbox": [30, 30, 14, 8]})
            if i == 0:
                crowd = np.zeros((h, w), dtype=np.uint8, order="F")
                crowd[0:3, 0:6] = 1
                rle = mask_utils.encode(crowd)
                counts = _uncompressed_counts(crowd)
                annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": 3,
                                    "iscrowd": 1, "segmentation": {"size": [h, w], "counts": counts},
                                    "area": float(mask_utils.area(rle)), "bbox": [0, 0, 6, 3]})
        data = {"images": images, "annotations": annotations,
                "categories": [{"id": k, "name": f"c{k}"} for k in (1, 2, 3)]}
        (root / "coco" / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
    return root


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, from a 0 run."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return counts


@pytest.fixture(scope="module")
def resnet50():
    return torchvision.models.resnet50(num_classes=10)


@pytest.fixture
def no_loader_workers(monkeypatch):
    monkeypatch.setenv("HARNESS_LOADER_WORKERS", "0")


def rows(db: Path, sql: str):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def run(*args) -> int:
    return main(["run", *map(str, args)])


# ---------------------------------------------------------------------------- U-Net


def test_unet_is_the_original_design():
    model = build_model("unet", (3, 572, 572), 2, base_width=64, padding="valid", init="torch")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(convs) == 19 and len(ups) == 4  # 18 3x3 convs + the 1x1 output, 4 up-convs
    assert [c.out_channels for c in convs[:10:2]] == [64, 128, 256, 512, 1024]
    # parameters by hand: 3x3 convs (weights + biases), up-convs 2x2, the 1x1 head
    widths = [64, 128, 256, 512, 1024]
    down = sum(9 * i * o + o + 9 * o * o + o for i, o in zip([3] + widths[:-1], widths))
    up = sum(4 * w * (w // 2) + w // 2 + 9 * w * (w // 2) + w // 2 + 9 * (w // 2) ** 2 + w // 2 for w in widths[1:][::-1])
    assert sum(p.numel() for p in model.parameters()) == down + up + 64 * 2 + 2
    # Ronneberger et al., Fig. 1: a 572x572 tile gives a 388x388 map
    small = build_model("unet", (1, 572, 572), 2, base_width=2, padding="valid")
    assert small(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388) and unet_output_size(572, "valid") == 388
    same = build_model("unet", (3, 32, 32), 1, base_width=4, padding="same")
    assert same(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 32, 32)
    with pytest.raises(ModelError, match="multiple of 16"):
        build_model("unet", (3, 40, 40), 1, padding="same")


def test_paper_layers_19_to_39_are_the_convs_feeding_the_up_path():
    """Keras layers {19, 24, 29, 34, 39} = conv indices {10, 12, 14, 16, 18}: the bottom
    block's and each up block's second conv, whose (ReLU'd) output is what the next
    up-conv (or the 1x1 head) reads, as the paper says."""
    model = build_model("unet", (3, 32, 32), 1, base_width=4, padding="same")
    guided = guided_layers(model, "10,12,14,16,18", input_shape=(3, 32, 32))
    assert [n for n, _ in guided] == ["bottom.2", "up4.conv.2", "up3.conv.2", "up2.conv.2", "up1.conv.2"]
    outputs, inputs = {}, {}
    blocks = {"bottom": "up4.upconv", "up4.conv": "up3.upconv", "up3.conv": "up2.upconv",
              "up2.conv": "up1.upconv", "up1.conv": "out"}
    modules = dict(model.named_modules())
    hooks = [modules[b].register_forward_hook(lambda m, a, o, b=b: outputs.__setitem__(b, o)) for b in blocks]
    hooks += [modules[r].register_forward_hook(lambda m, a, o, r=r: inputs.__setitem__(r, a[0])) for r in blocks.values()]
    model(torch.rand(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    for block, reader in blocks.items():
        assert inputs[reader] is outputs[block]  # ReLU(second conv) of the block feeds it


# ---------------------------------------------------------------------------- placements


def test_pre_skip_is_read_from_resnet50s_graph(resnet50):
    model = resnet50
    names = pre_skip_convs(model)
    blocks = [n for n, m in model.named_modules() if isinstance(m, torchvision.models.resnet.Bottleneck)]
    expected = {f"{b}.conv3" for b in blocks} | {f"{b}.downsample.0" for b in blocks if model.get_submodule(b).downsample is not None}
    assert len(blocks) == 16 and len(names) == 20 and set(names) == expected
    convs = [n for n, _ in candidate_layers(model, (3, 32, 32))]
    assert len(convs) == 53
    guided = guided_layers(model, "pre-skip", input_shape=(3, 32, 32))
    assert [n for n, _ in guided] == [n for n in convs if n in expected]  # in forward order
    assert [n for n, _ in guided_layers(model, "1,5", input_shape=(3, 32, 32))] == ["conv1", "layer1.0.downsample.0"]


def test_pre_skip_walks_through_norms_and_activations_only():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)
            self.bn, self.pool = nn.BatchNorm2d(3), nn.MaxPool2d(1)

        def forward(self, x):
            y = torch.relu(self.bn(self.a(x)))  # through BN and relu: feeds the addition
            z = self.pool(self.b(x))  # through pooling: does not count
            return y + z + self.c(x) * 2  # a product is not a pass-through either

    assert pre_skip_convs(Block()) == ["a"]


def test_vgg16_placements():
    model = torchvision.models.vgg16(num_classes=10)
    shape = (3, 32, 32)
    assert [n for n, _ in guided_layers(model, "1", input_shape=shape)] == ["features.0"]
    assert [n for n, _ in guided_layers(model, "1,2", input_shape=shape)] == ["features.0", "features.2"]
    assert len(guided_layers(model, "all", input_shape=shape)) == 13
    with pytest.raises(ValueError, match="selects no layer"):
        guided_layers(model, "pre-skip", input_shape=shape)
    with pytest.raises(ValueError, match="out of range"):
        guided_layers(model, "14", input_shape=shape)


def test_empirical_takes_the_k_layers_of_highest_mean_change(tmp_path, resnet50):
    model = resnet50
    convs = [n for n, _ in candidate_layers(model, (3, 32, 32))]
    # trained profile: layers 3, 7, 20 have the highest means; the random one says otherwise
    rows_ = []
    for source, top in (("trained", {3: -1.0, 7: -0.5, 20: -2.0}), ("random", {1: 0.0, 2: 0.0, 4: 0.0})):
        for i, name in enumerate(convs, start=1):
            for f in range(3):
                rows_.append({"source": source, "layer": i, "name": name, "kind": "conv", "filter": f,
                              "value": top.get(i, -5.0) + 0.1 * f})
    path = tmp_path / "profile.csv"
    pd.DataFrame(rows_).to_csv(path, index=False)
    assert empirical_convs(path, 2) == [convs[6], convs[2]]  # by mean, highest first
    guided = guided_layers(model, "empirical", input_shape=(3, 32, 32), profile=str(path), k=3)
    assert [n for n, _ in guided] == [convs[2], convs[6], convs[19]]  # in forward order
    lowest = empirical_convs(path, 1, rank="lowest")
    assert lowest[0] not in {convs[2], convs[6], convs[19]}
    with pytest.raises(ValueError, match="no entropy profile CSV"):
        guided_layers(model, "empirical", input_shape=(3, 32, 32), profile=str(tmp_path / "nope.csv"))
    other = pd.DataFrame([{"name": "features.0", "kind": "conv", "value": 1.0}])
    with pytest.raises(ValueError, match="no conv layer features.0"):
        guided_layers(model, "empirical", input_shape=(3, 32, 32), profile=other, k=1)


# ---------------------------------------------------------------------------- data


def test_imagenette_folders_load_as_image_splits(tmp_path):
    write_imagenette(tmp_path)
    splits = load_splits("imagenette", tmp_path, image_size=24)
    assert isinstance(splits, ImageSplits) and splits.n_classes == 10 and splits.input_shape == (3, 24, 24)
    assert len(splits.train) == 20 and len(splits.val) == 10
    x, y = splits.train[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 24, 24) and y == 0  # grayscale became RGB
    crop = load_splits("imagenette", tmp_path, image_size=16, resize="crop")
    assert crop.train[5][0].shape == (3, 16, 16)
    held = load_splits("imagenette", tmp_path, val_split="holdout:0.25", n_train=6)
    assert len(held.train) == 6 and len(held.val) == 5 and held.input_shape == (3, 224, 224)
    with pytest.raises(DataError, match="imagenette2-320/train") as err:
        load_splits("imagenette_320", tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="image_size applies"):
        load_splits("digits", None, image_size=32)


def test_coco_masks_are_the_union_of_the_instance_masks(tmp_path):
    write_coco(tmp_path)
    splits = load_splits("coco", tmp_path, image_size=48)
    assert splits.task == "segmentation" and splits.n_classes == 1
    assert len(splits.train) == 6 and len(splits.val) == 3  # the unannotated images are left out
    raw = json.loads((tmp_path / "coco/annotations/instances_train2017.json").read_text())
    first = [a["segmentation"] for a in raw["annotations"] if a["image_id"] == 100]
    mask = foreground_mask(first, 40, 48)
    expected = np.zeros((40, 48), dtype=np.uint8)
    expected[8:28, 5:21] = 1  # the rectangle (pycocotools rasterises polygon edges inclusively)
    expected[0:3, 0:6] = 1  # the crowd RLE
    assert (mask[expected == 1] == 1).all()
    assert mask[32, 37] == 1 and mask[20, 40] == 0  # inside the triangle; background
    assert abs(int(mask.sum()) - (20 * 16 + 18 + 50)) < 60
    x, m = splits.train[0]
    assert x.shape == (3, 48, 48) and m.shape == (1, 48, 48) and set(m.unique().tolist()) == {0, 1}
    with pytest.raises(DataError, match="instances_train2017.json"):
        load_splits("coco", tmp_path / "elsewhere")


def test_loader_order_is_seeded_and_the_worker_count_changes_nothing(tmp_path):
    write_coco(tmp_path, n_train=5, n_val=2)
    splits = load_splits("coco", tmp_path, image_size=16)
    batches = {w: LoaderBatches(splits, 2, 4, "cpu", data_seed=7, workers=w) for w in (0, 1)}
    epochs = {w: [torch.cat([y for _, y in b.train_epoch()]) for _ in range(2)] for w, b in batches.items()}
    assert all(torch.equal(a, b) for a, b in zip(epochs[0], epochs[1]))
    assert not torch.equal(epochs[0][0], epochs[0][1])  # a new order each epoch
    x, y = next(batches[0].eval("val"))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and y.shape == (2, 1, 16, 16)


def test_augmentation_flips_rotates_zooms_each_image_and_moves_masks_along():
    x = torch.rand(64, 3, 16, 16)
    same, _ = augment_batch(x, None, torch.Generator().manual_seed(0), rotation=0.0, zoom=0.0)
    flipped = torch.isclose(same, x.flip(-1), atol=1e-5).flatten(1).all(1)
    kept = torch.isclose(same, x, atol=1e-5).flatten(1).all(1)
    assert (flipped | kept).all() and 16 < flipped.sum() < 48  # each image flips with probability 1/2
    mask = (torch.rand(8, 1, 16, 16) > 0.5).float()
    a = augment_batch(mask.expand(8, 3, 16, 16).clone(), mask, torch.Generator().manual_seed(1), 0.2, 0.2)
    b = augment_batch(mask.expand(8, 3, 16, 16).clone(), mask, torch.Generator().manual_seed(1), 0.2, 0.2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # seeded
    assert set(a[1].unique().tolist()) <= {0.0, 1.0}  # masks stay binary (nearest)
    assert not torch.equal(a[1], mask)
    labels = torch.arange(8)
    assert augment_batch(torch.rand(8, 3, 8, 8), labels, torch.Generator().manual_seed(0), 0.2, 0.2)[1] is labels


# ---------------------------------------------------------------------------- study


def test_new_settings_at_their_defaults_keep_the_old_ids():
    config = build_config({"latent": 8, "lam": 1e-3})
    old = {k: _canonical(v) for k, v in flatten(config).items()
           if not k.startswith(("data.image_size", "data.resize", "data.augment", "data.rotation", "data.zoom",
                                "net.base_width", "train.seg_loss", "train.tf32", "train.flush_denormals", "train.compile", "train.precision", "train.adam_eps", "entropy.profile", "entropy.empirical"))}
    payload = json.dumps({"v": CONFIG_VERSION, "config": old}, sort_keys=True)
    assert Replication("s", config).id == hashlib.sha256(payload.encode()).hexdigest()[:16]
    assert Replication("s", build_config({"latent": 8, "lam": 1e-3, "data.augment": "flip_rotate_zoom"})).id != Replication("s", config).id


def test_shipped_large_studies_and_exclude():
    vgg, resnet, unet = (load_study(f"studies/{n}.py") for n in ("imagenette_vgg", "imagenette_resnet", "coco_unet"))
    assert len(vgg.replications()) == 3 * 2 * 7 and len(resnet.replications()) == 3 * 4 * 7 and len(unet.replications()) == 7
    strategies = {(r.config.data.augment, r.config.net.dropout) for r in vgg.replications()}
    assert strategies == {("none", 0.0), ("flip_rotate_zoom", 0.0), ("flip_rotate_zoom", 0.5)}
    assert {r.config.placement for r in resnet.replications()} == {"1", "1,5", "pre-skip", "empirical"}
    assert unet.replications()[0].config.placement == "10,12,14,16,18"
    narrowed = resnet.with_overrides(["placement=[1,5],pre-skip"])
    assert narrowed.grid["placement"] == ["1,5", "pre-skip"] and narrowed.exclude == resnet.exclude
    assert vgg.definition()["exclude"] == [{"data.augment": "none", "net.dropout": 0.5}]
    with pytest.raises(StudyError, match="bad value"):
        Study("s", exclude=[{"data.augment": "sometimes"}])


# ---------------------------------------------------------------------------- end to end


TINY = ["train.max_epochs=1", "train.batch_size=8", "seed=0", "-q"]


def test_imagenette_vgg_end_to_end(tmp_path, no_loader_workers):
    data, db = write_imagenette(tmp_path / "data"), tmp_path / "h.db"
    code = run("studies/imagenette_vgg.py", "--data-dir", data, "--db", f"sqlite:///{db}", *TINY,
               "data.image_size=32", "lam=1e-3", "placement=[1,2]", "data.augment=flip_rotate_zoom", "net.dropout=0.5")
    assert code == 0
    recorded = rows(db, "SELECT status, config, error FROM replications ORDER BY pk")
    assert [r[0] for r in recorded] == ["done"], recorded[0][2]
    config = json.loads(recorded[0][1])
    assert config["placement"] == "1,2" and config["data.augment"] == "flip_rotate_zoom" and config["train.monitor"] == "acc"
    acc = rows(db, "SELECT value FROM metrics WHERE name = 'val_acc'")
    assert len(acc) == 1 and 0 <= acc[0][0] <= 1
    assert main(["analyze", "--db", f"sqlite:///{db}", "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "imagenette_vgg" / "report.md").read_text()
    assert "Table 2" in report and "VGG-16" in report and "[1,2]" in report
    layers = pd.read_csv(next((tmp_path / "out" / "imagenette_vgg").glob("table2_val_acc*_layers.csv")))
    assert list(layers["module"]) == ["features.0", "features.2"]


def test_imagenette_resnet_end_to_end_with_pre_skip_and_an_empirical_profile(tmp_path, no_loader_workers):
    data, db = write_imagenette(tmp_path / "data"), tmp_path / "h.db"
    profiles = tmp_path / "profiles"
    assert main(["profile", "resnet50", "--random", "--input-size", "32", "--out", str(profiles)]) == 0
    csv = profiles / "resnet50-random.csv"
    code = run("studies/imagenette_resnet.py", "--data-dir", data, "--db", f"sqlite:///{db}", *TINY,
               "data.image_size=32", "lam=1e-3", "placement=pre-skip,empirical", "data.augment=none",
               "net.dropout=0", f"entropy.profile={csv}", "entropy.empirical_k=3")
    assert code == 0
    assert [r[0] for r in rows(db, "SELECT status FROM replications")] == ["done", "done"]
    guided = rows(db, "SELECT json_extract(r.config, '$.placement'), p.layer, p.name FROM profiles p "
                      "JOIN replications r ON r.pk = p.rep_pk WHERE p.stage = 'guided' ORDER BY r.pk, p.layer")
    pre = [name for placement, _, name in guided if placement == "pre-skip"]
    assert len(pre) == 20 and all(n.endswith(("conv3", "downsample.0")) for n in pre)
    assert {name for placement, _, name in guided if placement == "empirical"} == set(empirical_convs(csv, 3))
    assert main(["analyze", "--db", f"sqlite:///{db}", "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "imagenette_resnet" / "report.md").read_text()
    assert "ResNet-50" in report and "Pre-skip" in report and "Empirical" in report


def test_coco_unet_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_LOADER_WORKERS", "1")  # a real worker process decodes the masks
    data, db = write_coco(tmp_path / "data"), tmp_path / "h.db"
    code = run("studies/coco_unet.py", "--data-dir", data, "--db", f"sqlite:///{db}", *TINY,
               "data.image_size=32", "net.base_width=4", "lam=0,1e-3", "data.val_split=test",
               "data.n_train=0", "data.n_val=0")
    assert code == 0
    assert [r[0] for r in rows(db, "SELECT status FROM replications")] == ["done", "done"]
    metrics = dict(rows(db, "SELECT name, value FROM metrics WHERE rep_pk = 2"))
    assert 0 <= metrics["val_acc"] <= 1 and 0 <= metrics["val_iou"] <= 1 and 0 <= metrics["val_iou_fg"] <= 1
    assert metrics["stop_epoch"] == 1 and metrics["log_c11_mean"] < 0
    assert rows(db, "SELECT count(*) FROM epochs WHERE val_iou IS NOT NULL")[0][0] == 2
    assert main(["analyze", "--db", f"sqlite:///{db}", "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "coco_unet" / "report.md").read_text()
    assert "Table 3: U-Net on COCO" in report


def test_segmentation_metrics_by_hand():
    from harness.training.evaluation import evaluate_batches

    class Fixed(nn.Module):
        def forward(self, x):
            return x  # logits = input: > 0 predicts foreground

    logits = torch.tensor([[[[1.0, 1.0], [-1.0, -1.0]]], [[[1.0, -1.0], [-1.0, -1.0]]]])
    truth = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[1.0, 0.0], [0.0, 1.0]]]])
    out = evaluate_batches(Fixed(), [(logits, truth)], "segmentation", "bce")
    # tp 2, fp 1, fn 1, tn 4 over 8 pixels
    assert out["acc"] == pytest.approx(6 / 8)
    assert out["iou_fg"] == pytest.approx(2 / 4) and out["iou"] == pytest.approx((2 / 4 + 4 / 6) / 2)
    import torch.nn.functional as F

    assert out["loss"] == pytest.approx(F.binary_cross_entropy_with_logits(logits, truth).item())


# ---------------------------------------------------------------------------- Table 2


def published_frame(seeds: int = 1, shift: float = 0.0) -> pd.DataFrame:
    rows_ = []
    for (model, augment, dropout, placement), values in paper.TABLE2["table2"]["rows"].items():
        for lam, value in zip(paper.LAMBDAS, values):
            for seed in range(seeds):
                rows_.append({"id": f"{model}{augment}{dropout}{placement}{lam}{seed}", "status": "done",
                              "model": model, "data.augment": augment, "net.dropout": dropout,
                              "placement": placement, "lam": lam, "seed": seed,
                              "val_acc": value + shift + 0.004 * (seed - (seeds - 1) / 2)})
    return pd.DataFrame(rows_)


def test_table2_reproduces_the_papers_layout_and_count():
    long = paper_tables.table2(published_frame())
    plain, bold = paper_tables.table2_layout(long)
    assert list(plain.columns) == ["Model", "A", "D", "Entropy loss layers", "0", "0.0001", "0.001", "0.01", "0.1", "1", "10"]
    first = plain.iloc[0]
    assert (first["Model"], first["A"], first["D"], first["Entropy loss layers"]) == ("VGG-16", "", "", "[1]")
    assert first["0"] == "0.698" and bold.iloc[0]["0.001"] == "**0.756**"
    assert list(plain["Entropy loss layers"][6:10]) == ["[1]", "[1,5]", "Pre-skip", "Empirical"]
    assert (plain.iloc[16]["A"], plain.iloc[16]["D"]) == ("✓", "✓")
    cmp, counts = paper_tables.compare_table2(long, "table2")
    assert counts["rows"] == 18 and counts["max_positive"] == counts["max_positive_paper"] == 17
    assert counts["compared"] == 0  # one seed: no interval
    # with only some levels run, the paper's maxima are taken over the same levels
    two = published_frame()
    _, counts = paper_tables.compare_table2(paper_tables.table2(two[two["lam"].isin([0.0, 1e-4])]), "table2")
    wins = sum(v[1] > v[0] for v in paper.TABLE2["table2"]["rows"].values())
    assert counts["max_positive"] == counts["max_positive_paper"] == wins == 12


def test_table2_with_seeds_gives_intervals_and_tests():
    long = paper_tables.table2(published_frame(seeds=3))
    assert (long["n"] == 3).all()
    cell = long[(long["model"] == "vgg16") & (long["placement"] == "1") & (long["data.augment"] == "none")
                & (long["lam"] == 1e-3)].iloc[0]
    assert cell["mean"] == pytest.approx(0.756) and cell["lo"] < 0.756 < cell["hi"]
    assert cell["diff"] == pytest.approx(0.756 - 0.698) and cell["sign"] == "+" and cell["p"] < 1e-4
    _, counts = paper_tables.compare_table2(long, "table2")
    assert counts["compared"] == 18 * 7 and counts["in_ci"] == 18 * 7
    _, shifted = paper_tables.compare_table2(paper_tables.table2(published_frame(seeds=3, shift=0.05)), "table2")
    assert shifted["in_ci"] == 0
    plain, _ = paper_tables.table2_layout(long)
    assert plain.iloc[0]["0.001"].startswith("0.756±") and plain.iloc[0]["0.001"].endswith(" +")
