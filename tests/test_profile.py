"""`harness profile`: per-filter entropy change of trained and random models, PNG + CSV."""

from __future__ import annotations

import os
import urllib.error

import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from harness.cli import main
from harness.entropy import empirical_convs
from harness.models import build_model


def profile(*args) -> int:
    return main(["profile", *map(str, args)])


def log_c11_mean(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach()[:, :, 0, 0].double().abs().log().mean(dim=1)


def test_random_model_alone(tmp_path, capsys):
    assert profile("resnet18", "--random", "--input-size", 32, "--seed", 3, "--out", tmp_path) == 0
    csv, png = tmp_path / "resnet18-random.csv", tmp_path / "resnet18-random.png"
    assert capsys.readouterr().out.split() == [str(png), str(csv)]
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["source", "model", "weights", "input_size", "spatial", "c11", "reduce",
                                   "layer", "name", "kind", "filter", "value"]
    assert set(frame["source"]) == {"random"} and set(frame["kind"]) == {"conv"} and frame["layer"].nunique() == 20
    torch.manual_seed(3)
    model = torchvision.models.resnet18()
    conv1 = frame[frame["name"] == "conv1"].sort_values("filter")["value"].to_numpy()
    assert conv1 == pytest.approx(log_c11_mean(model.conv1.weight).numpy())  # Fig. 1's quantity
    assert Image.open(png).size[0] > 600


def test_trained_weights_beside_random_and_empirical_reads_the_trained_rows(tmp_path):
    torch.manual_seed(5)
    trained = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():
        trained.layer2[0].conv1.weight.mul_(50)  # a layer that "keeps" entropy
    trained.fc = nn.Sequential(nn.Dropout(0.5), trained.fc)  # a harness ResNet with head dropout
    weights = tmp_path / "run7.pt"
    torch.save(trained.state_dict(), weights)
    assert profile("resnet18", "--weights", weights, "--input-size", 32, "--dense", "--out", tmp_path) == 0
    frame = pd.read_csv(tmp_path / "resnet18-run7.csv")
    assert list(dict.fromkeys(frame["source"])) == ["trained", "random"]
    mine = frame[(frame["source"] == "trained") & (frame["name"] == "layer2.0.conv1")].sort_values("filter")
    assert mine["value"].to_numpy() == pytest.approx(log_c11_mean(trained.layer2[0].conv1.weight).numpy())
    assert (frame["kind"] == "dense").sum() == 2  # one fc row per model
    assert empirical_convs(tmp_path / "resnet18-run7.csv", 1) == ["layer2.0.conv1"]
    two_panels = Image.open(tmp_path / "resnet18-run7.png").size[0]
    assert profile("resnet18", "--random", "--input-size", 32, "--out", tmp_path) == 0
    assert two_panels > 1.8 * Image.open(tmp_path / "resnet18-random.png").size[0]


def test_pretrained_weights_come_from_the_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    cached = tmp_path / "torch" / "hub" / "checkpoints" / os.path.basename(url)
    cached.parent.mkdir(parents=True)
    torch.manual_seed(9)
    torch.save(torchvision.models.resnet18().state_dict(), cached)
    assert profile("resnet18", "--input-size", 32, "--out", tmp_path / "out") == 0
    frame = pd.read_csv(tmp_path / "out" / "resnet18.csv")
    assert frame.loc[frame["source"] == "trained", "weights"].iloc[0].startswith("torchvision ResNet18_Weights")


def test_missing_pretrained_weights_without_network_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", offline)
    assert profile("resnet18", "--out", tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "torch cache" in err and "--weights FILE or --random" in err
    assert profile("resnet5O", "--random", "--out", tmp_path) == 2
    assert "did you mean 'resnet50'" in capsys.readouterr().err
    assert profile("resnet18", "--weights", tmp_path / "nope.pt", "--out", tmp_path) == 2
    assert "no weights file" in capsys.readouterr().err


def test_unet_checkpoint(tmp_path):
    torch.manual_seed(0)
    unet = build_model("unet", (3, 32, 32), 1, base_width=4, padding="same")
    torch.save(unet.state_dict(), tmp_path / "unet.pt")
    assert profile("unet", "--weights", tmp_path / "unet.pt", "--input-size", 32, "--out", tmp_path) == 0
    frame = pd.read_csv(tmp_path / "unet-unet.csv")
    assert frame.groupby("source")["layer"].nunique().to_dict() == {"random": 19, "trained": 19}
    assert len(frame[(frame["source"] == "trained") & (frame["name"] == "down1.0")]) == 4


def test_help_lists_profile(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "profile" in capsys.readouterr().out
