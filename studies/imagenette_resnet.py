"""E4 (Table 2, ResNet rows): torchvision's ResNet-50 trained from scratch on Imagenette.

Three training strategies (plain; augmentation; augmentation + dropout 0.5 before the
classifier) x four placements of the entropy term x 7 λ2 = 84 replications per seed:
conv layers [1] and [1, 5], "pre-skip" (the 20 convs whose outputs feed a residual
addition: every bottleneck's conv3 and the 4 projection shortcuts) and "empirical" (the 5
conv layers with the highest mean entropy change in a trained ResNet-50's profile).
Conv indices count in forward order: 1 is conv1, 5 is layer1.0.downsample.0 (torchvision
calls the first block's projection shortcut after its conv3; Keras' ResNet50 calls it
first, so there 5 is the block's last conv; both feed the first residual addition). The
report lists the module of every index. Training as in studies/imagenette_vgg.py.

"empirical" reads entropy.profile, written by `harness profile resnet50` (which needs
torchvision's ImageNet weights in the torch cache, or --weights FILE):

    harness profile resnet50 --out results/profiles
    harness run studies/imagenette_resnet.py
    harness run studies/imagenette_resnet.py placement=1,pre-skip   # without the profile
"""

from harness.analysis.spec import ProfilePlot, Table2
from harness.study import Study

LAMBDAS = [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]

study = Study(
    name="imagenette_resnet",
    description="E4: ResNet-50 on Imagenette, validation accuracy vs λ2 by augmentation, dropout and placement (Table 2).",
    settings={
        "dataset": "imagenette",
        "model": "resnet50",
        "task": "classification",
        "data.image_size": 224,
        "train.optimizer": "sgd",
        "train.lr": 0.01,
        "train.lr_patience": 10,
        "train.monitor": "acc",
        "train.patience": 25,
        "train.max_epochs": 200,
        "entropy.profile": "results/profiles/resnet50.csv",
        "entropy.empirical_k": 5,
    },
    grid={
        "data.augment": ["none", "flip_rotate_zoom"],
        "net.dropout": [0.0, 0.5],
        "placement": ["1", "1,5", "pre-skip", "empirical"],
        "lam": LAMBDAS,
        "seed": [0],
    },
    exclude=[{"data.augment": "none", "net.dropout": 0.5}],  # the paper's three strategies
    analyses=[
        Table2(),
        ProfilePlot(at={"lam": 0.0}, split_by="placement", kind="conv"),
    ],
)
