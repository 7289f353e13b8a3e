"""OCSPruner inside a PyTorch Lightning fit: a small CNN on synthetic data, pruned to 50% FLOPs.

    python3 examples/lightning_example.py        # CPU, a few seconds

The stability thresholds are loosened (window 2, offset 1, large tau/epsilon, fast-growing lambda)
so that the one-cycle schedule runs its course in 8 short epochs; use the defaults (the paper's)
for real training.
"""
import os
import sys
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import lightning.pytorch as pl  # noqa: E402

from ocspruner.integrations.lightning import OCSPrunerCallback  # noqa: E402
from ocspruner.models import create_model  # noqa: E402


class LitClassifier(pl.LightningModule):
    def __init__(self, num_classes: int = 4, lr: float = 0.05):
        super().__init__()
        self.model = create_model("tiny_convnet", num_classes=num_classes)
        self.lr = lr

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=False)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)
        return {"optimizer": opt, "lr_scheduler": sched}


def synthetic_loader(n: int = 128, num_classes: int = 4, size: int = 16, seed: int = 0):
    """Images whose class is a colour/position pattern, so that the net can learn something."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = 0.5 * torch.randn(n, 3, size, size, generator=g)
    for c in range(num_classes):
        x[y == c, c % 3, (c // 3) * (size // 2):(c // 3 + 1) * (size // 2)] += 1.0
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True,
                                       generator=g)


def main(epochs: int = 8, target: float = 0.5, quiet: bool = False):
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*Unwrapped parameters.*")
    pl.seed_everything(0, verbose=False)
    module = LitClassifier()
    callback = OCSPrunerCallback(torch.randn(1, 3, 16, 16), module="model", target=target, window=2, offset=1,
                                 tau=1.0, epsilon=0.02, lambda0=0.5, delta=0.5, max_prune_epoch=epochs - 2)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=[callback], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, synthetic_loader())
    pruner = callback.pruner
    reduction = 1 - pruner.current_cost("flops") / pruner.dense_cost
    if not quiet:
        print(f"t_sl-start = {pruner.t_sl_start}, t* = {pruner.t_star}, FLOPs removed {reduction:.1%} "
              f"(target {target:.0%}), parameters {sum(p.numel() for p in module.parameters())}, "
              f"last train loss {float(trainer.callback_metrics['train_loss']):.3f}")
    return module, callback, trainer


if __name__ == "__main__":
    main()
