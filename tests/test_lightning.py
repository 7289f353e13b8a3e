"""PyTorch Lightning callback (issue 7): a Lightning fit with the callback ends pruned at the budget
and equals the same engine driven by the plain loop of trainer.py, step for step; Eq. 8/9 come
once per optimizer step with the step's learning rate; a fit resumes after t*."""
import warnings

import pytest
import torch
import torch.nn.functional as F

pl = pytest.importorskip("lightning.pytorch")

from ocspruner import PRUNED, OCSPruner  # noqa: E402
from ocspruner.integrations.lightning import OCSPrunerCallback  # noqa: E402
from ocspruner.models import create_model  # noqa: E402

FAST = dict(target=0.5, window=2, offset=1, tau=1.0, epsilon=0.02, lambda0=0.5, delta=0.5)
EX = torch.randn(1, 3, 16, 16)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")
        warnings.filterwarnings("ignore", ".*callbacks used to create the checkpoint.*")
        yield


def _data(n=96):
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.5 * torch.randn(n, 3, 16, 16, generator=g)
    x[torch.arange(n), y % 3] += 1.0
    return torch.utils.data.TensorDataset(x, y)


def _loader():
    return torch.utils.data.DataLoader(_data(), batch_size=32, shuffle=False)


class Lit(pl.LightningModule):
    def __init__(self, step_scheduler=False):
        super().__init__()
        torch.manual_seed(0)
        self.net = create_model("tiny_convnet", num_classes=4)
        self.step_scheduler = step_scheduler
        self.steps = []          # lr of every optimizer step, as the optimizer saw it

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        opt.register_step_pre_hook(lambda o, *_: self.steps.append(o.param_groups[0]["lr"]))
        if self.step_scheduler:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 / (1 + i))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 3, 0.5)}


def _trainer(epochs, callbacks, **kw):
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
                      enable_checkpointing=kw.pop("enable_checkpointing", False), enable_progress_bar=False,
                      enable_model_summary=False, **kw)


def test_fit_prunes_at_budget_and_equals_the_plain_loop():
    module = Lit()
    cb = OCSPrunerCallback(EX, module="net", **FAST)
    _trainer(8, [cb]).fit(module, _loader())
    p = cb.pruner
    assert p.stage == PRUNED and p.t_star is not None and p.t_sl_start is not None
    reduction = 1 - p.current_cost("flops") / p.dense_cost
    assert 0.5 <= reduction < 0.53                                            # at the budget
    opt = module.trainer.optimizers[0]
    # the optimizer Lightning holds works on the NEW (pruned) parameters, with their momentum
    params = list(module.parameters())
    assert [id(q) for g in opt.param_groups for q in g["params"]] == [id(q) for q in params]
    assert all(opt.state[q]["momentum_buffer"].shape == q.shape for q in params)

    # the same engine on the plain loop of trainer.py (after_backward before step, after_step after)
    torch.manual_seed(0)
    net = create_model("tiny_convnet", num_classes=4)
    ref = OCSPruner(net, EX, **FAST)
    ropt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.StepLR(ropt, 3, 0.5)
    for epoch in range(8):
        ref.epoch_start(epoch, ropt)
        net.train()
        for x, y in _loader():
            ropt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            ref.after_backward()
            ropt.step()
            ref.after_step(ropt)
        sched.step()
    assert (ref.t_sl_start, ref.t_star) == (p.t_sl_start, p.t_star)
    assert torch.equal(ref.final_keep, p.final_keep)
    mine, theirs = module.net.state_dict(), net.state_dict()
    assert mine.keys() == theirs.keys()
    for k in mine:
        assert torch.allclose(mine[k], theirs[k], atol=1e-6), k


def test_eq8_eq9_once_per_optimizer_step_with_its_lr(monkeypatch):
    calls = {"after_backward": 0, "after_step": []}
    orig_ab, orig_as = OCSPruner.after_backward, OCSPruner.after_step

    def after_backward(self, *a, **k):
        calls["after_backward"] += 1
        return orig_ab(self, *a, **k)

    def after_step(self, lr):
        calls["after_step"].append(lr)
        return orig_as(self, lr)

    monkeypatch.setattr(OCSPruner, "after_backward", after_backward)
    monkeypatch.setattr(OCSPruner, "after_step", after_step)
    module = Lit(step_scheduler=True)
    cb = OCSPrunerCallback(EX, module="net", **FAST)
    _trainer(3, [cb], accumulate_grad_batches=2).fit(module, _loader())    # 3 batches/epoch -> 2 steps/epoch
    assert len(module.steps) == 6
    assert calls["after_backward"] == 6
    assert calls["after_step"] == module.steps      # the lr each step used, not the scheduler's next one
    assert len(set(module.steps)) == 6


def test_resume_after_t_star(tmp_path):
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = Lit()
    cb1 = OCSPrunerCallback(EX, module="net", **FAST)
    _trainer(8, [cb1, ckpt], enable_checkpointing=True).fit(first, _loader())
    assert cb1.pruner.t_star is not None and cb1.pruner.t_star < 7
    saved = {k: v.clone() for k, v in first.net.state_dict().items()}

    second = Lit()                                     # dense again: the prune is replayed on load
    cb2 = OCSPrunerCallback(EX, module="net", **FAST)
    _trainer(10, [cb2]).fit(second, _loader(), ckpt_path=str(tmp_path / "last.ckpt"))
    assert cb2.pruner.stage == PRUNED and cb2.pruner.t_star == cb1.pruner.t_star
    assert torch.equal(cb2.pruner.final_keep, cb1.pruner.final_keep)
    now = second.net.state_dict()
    assert {k: v.shape for k, v in now.items()} == {k: v.shape for k, v in saved.items()}
    assert not torch.equal(now["classifier.weight"], saved["classifier.weight"])   # it trained on


def test_ddp_is_refused():
    cb = OCSPrunerCallback(EX, module="net", **FAST)

    class FakeTrainer:
        world_size = 2

    with pytest.raises(ValueError, match="runs on one device"):
        cb.setup(FakeTrainer(), Lit(), "fit")


def test_example_script_runs():
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "lightning_example.py")
    spec = importlib.util.spec_from_file_location("lightning_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    module, callback, _ = example.main(quiet=True)
    assert callback.pruner.stage == PRUNED
    assert 1 - callback.pruner.current_cost("flops") / callback.pruner.dense_cost >= 0.5
