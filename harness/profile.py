"""``harness profile MODEL``: the per-layer, per-filter entropy change of a model (the
paper's Fig. 1, 8 and 9) as a box-plot PNG and a CSV, trained beside randomly initialised.

The trained model is torchvision's pretrained weights (read from the torch cache, else
downloaded when there is a network), or ``--weights FILE``, a state dict of MODEL; the
random one is MODEL freshly initialised with ``--seed``. By default a filter's value is
log|c11| averaged over its input channels, without Corollary 6's spatial factor: the
quantity whose magnitudes Fig. 1 shows (about -2.2 in a trained VGG-16's first layer).

The CSV (columns source, model, weights, input_size, spatial, c11, reduce, layer, name,
kind, filter, value; source "trained" or "random") is what ``placement=empirical`` reads
(``entropy.profile=PATH``). Only the standard library is imported at module level, so
``harness --help`` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import os
from pathlib import Path

from harness.errors import UserError

HARNESS_ONLY = ("unet",)  # harness models profiled by name (the others come from torchvision)


class ProfileError(UserError):
    """A profile request the user can fix: unknown model, missing weights; one line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a torchvision classification model (vgg16, resnet50, ...) or unet")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--weights", metavar="FILE",
                        help="a state dict of MODEL to profile as the trained model "
                        "(default: torchvision's pretrained weights, from the torch cache)")
    source.add_argument("--random", action="store_true", help="profile only the randomly initialised model")
    parser.add_argument("--input-size", type=int, default=224, metavar="S",
                        help="side of the (zero) probe image that fixes each layer's input size (default 224)")
    parser.add_argument("--num-classes", type=int, default=None, metavar="N",
                        help="classes of the model's head (default: read from --weights; 1000, or 1 for unet)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation (default 0)")
    parser.add_argument("--spatial", action="store_true",
                        help="multiply by the positions a filter visits, (l-p+1)(w-q+1) (Corollary 6)")
    parser.add_argument("--c11", choices=("all_channels", "first_channel"), default="all_channels",
                        help="which top-left weights of a multi-channel filter count (default all_channels)")
    parser.add_argument("--reduce", choices=("mean", "sum"), default="mean",
                        help="how a filter's input channels combine (default mean)")
    parser.add_argument("--dense", action="store_true", help="also profile dense layers (log|det| of the square part)")
    parser.add_argument("--out", default="results/profiles", help="output folder (default results/profiles)")


def run(args) -> int:
    import pandas as pd

    from harness.entropy import entropy_profile

    if args.input_size < 1:
        raise ProfileError(f"--input-size must be positive, got {args.input_size}")
    models = []
    if not args.random:
        models.append(("trained", *_trained(args)))
    models.append(("random", _build(args.model, args.num_classes, args.input_size, seed=args.seed, state=None),
                   f"random init (seed {args.seed})"))
    kinds = ("conv", "dense") if args.dense else ("conv",)
    frames = []
    for source, model, weights in models:
        try:
            frame = entropy_profile(model, (3, args.input_size, args.input_size), spatial=args.spatial,
                                    c11=args.c11, reduce=args.reduce, kinds=kinds)
        except RuntimeError as err:  # e.g. an input too small for the model
            raise ProfileError(f"{args.model} at --input-size {args.input_size}: {str(err).splitlines()[0]}") from None
        frame.insert(0, "reduce", args.reduce)
        frame.insert(0, "c11", args.c11)
        frame.insert(0, "spatial", args.spatial)
        frame.insert(0, "input_size", args.input_size)
        frame.insert(0, "weights", weights)
        frame.insert(0, "model", args.model)
        frame.insert(0, "source", source)
        frames.append(frame)
    profile = pd.concat(frames, ignore_index=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.model + (f"-{Path(args.weights).stem}" if args.weights else "-random" if args.random else "")
    csv, png = out / f"{stem}.csv", out / f"{stem}.png"
    profile.to_csv(csv, index=False)
    _figure(profile, args).savefig(png, format="png", metadata={"Software": None})
    for path in (png, csv):
        print(path)
    return 0


def _trained(args):
    """(model, weights label) of the trained model: --weights, else torchvision's."""
    import torch

    if args.weights:
        path = Path(args.weights).expanduser()
        if not path.is_file():
            raise ProfileError(f"no weights file at {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise ProfileError(f"{path} is not a state dict torch can load: {type(err).__name__}: {err}") from None
        if isinstance(state, dict):
            state = state.get("state_dict", state.get("model", state))
        if not isinstance(state, dict):
            raise ProfileError(f"{path} holds a {type(state).__name__}, not a state dict")
        return _build(args.model, args.num_classes or _head_size(state), args.input_size, seed=0, state=state), str(path)
    return _pretrained(args.model, args.input_size)


def _pretrained(name: str, input_size: int):
    import torch
    import torchvision.models

    from harness.data import _download_timeout

    if name in HARNESS_ONLY:
        raise ProfileError(f"{name} has no pretrained weights: pass --weights FILE or --random")
    _check_torchvision(name)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    try:
        with _download_timeout():
            state = weights.get_state_dict(progress=False)  # the cached file, else a download
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise ProfileError(
            f"no pretrained {name} weights in the torch cache ({cached}) and they could not be downloaded "
            f"({type(err).__name__}); put the file there, or pass --weights FILE or --random"
        ) from None
    return _build(name, len(weights.meta.get("categories") or []) or 1000, input_size, seed=0, state=state), f"torchvision {weights}"


def _check_torchvision(name: str) -> None:
    import torchvision.models

    known = sorted(torchvision.models.list_models(module=torchvision.models))
    if name not in known:
        close = difflib.get_close_matches(name, known + list(HARNESS_ONLY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ProfileError(f"unknown model {name!r}{hint}: a torchvision classification model or {', '.join(HARNESS_ONLY)}")


def _head_size(state: dict) -> int | None:
    """Output width of the last 2-D (linear) or 1x1-conv weight in a state dict."""
    weights = [v for k, v in state.items() if k.endswith("weight") and getattr(v, "ndim", 0) in (2, 4)]
    return int(weights[-1].shape[0]) if weights else None


def _build(name: str, n_classes: int | None, input_size: int, seed: int, state: dict | None):
    import torch
    import torchvision.models

    from harness.models import build_model

    torch.manual_seed(seed)
    if name == "unet":
        base = int(state["down1.0.weight"].shape[0]) if state and "down1.0.weight" in state else 64
        model = build_model("unet", (3, input_size, input_size), n_classes or 1, base_width=base, padding="same", init="torch")
    else:
        _check_torchvision(name)
        model = torchvision.models.get_model(name, weights=None, num_classes=n_classes or 1000)
    if state is not None:
        # a harness ResNet with head dropout keeps its classifier as fc.1 (fc.0 is the Dropout)
        state = {k.replace("fc.1.", "fc.", 1) if k.startswith("fc.1.") else k: v for k, v in state.items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ProfileError(f"the weights do not fit {name}: {str(err).splitlines()[0]}") from None
    return model.eval()


def _figure(profile, args):
    """Box plots of each source side by side, one panel per source, sharing the y axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from harness.analysis.plots import profile_plot

    sources = list(dict.fromkeys(profile["source"]))
    n_layers = profile["layer"].nunique()
    fig = Figure(figsize=(len(sources) * max(6.4, 0.22 * n_layers + 2), 4.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(sources), sharey=True, squeeze=False)[0]
    what = "log|c11|" + (" x positions" if args.spatial else "") + f", {args.reduce} over input channels"
    for ax, source in zip(axes, sources):
        part = profile[profile["source"] == source].assign(stage=source)
        weights = part["weights"].iloc[0]
        profile_plot(part, ax=ax, stages=(source,), title=f"{args.model}, {weights}\n{what}")
        ax.tick_params(axis="x", labelsize=6, rotation=90)
    fig.tight_layout()
    return fig
