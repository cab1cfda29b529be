"""The plain loop `harness bench` measures the harness against: one replication after
another, each with its own model, Adam and DataLoader, as a researcher would write it."""

from __future__ import annotations


def plain_loop(configs: list, splits, device: str) -> None:
    """One replication after another, as a researcher would write it: a model, an Adam
    optimizer and a shuffling DataLoader each; loss + λ·entropy term per batch; validation
    loss every epoch; train and validation loss at the end. Same seeds as the harness."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from harness.entropy import entropy_loss, guided_layers
    from harness.training.loop import seeded_model
    from harness.study import derive_seed

    train_set = TensorDataset(splits.train_x, splits.train_y)
    val_set = TensorDataset(splits.val_x, splits.val_y)
    for config in configs:
        model = seeded_model(config, splits.input_shape, splits.n_classes).to(device)
        guided = [m for _, m in guided_layers(model, config.placement, input_shape=splits.input_shape)]
        ent = config.entropy
        optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
        generator = torch.Generator().manual_seed(derive_seed(config.seed, "data"))
        loader = DataLoader(train_set, batch_size=config.train.batch_size, shuffle=True, generator=generator)

        def loss_fn(out, x, y):
            if config.task == "reconstruction":
                return F.mse_loss(out, x.flatten(1))
            return F.cross_entropy(out, y)

        def evaluate(dataset):
            model.eval()
            total = 0.0
            with torch.no_grad():
                for x, y in DataLoader(dataset, batch_size=1024):
                    total += loss_fn(model(x), x, y).item() * len(x)
            model.train()
            return total / len(dataset)

        for _ in range(config.train.max_epochs):
            for x, y in loader:
                loss = loss_fn(model(x), x, y)
                if config.lam:
                    loss = loss + entropy_loss(guided, config.lam, form=ent.form, eps=ent.eps,
                                               precision=ent.precision, c11=ent.c11, reduce=ent.reduce)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            evaluate(val_set)
        evaluate(train_set), evaluate(val_set)
