"""Agreement with PyTorch, the peer whose formulas fastbp follows: the activations
against torch.nn.functional (forward and backward), the optimizers against
torch.optim over many steps with two parameter groups.

Relative error here is max |ours - torch| / max |torch| over the tensor: element
by element it is meaningless where the value crosses zero (GELU's derivative
does, near x = -0.75) or cancels in its tail (1 + erf(x) for x << 0), where
torch's own float32 kernel is off by 2e-4 relative at |x| <= 3.
"""
import numpy as np
import pytest

import fastbp

torch = pytest.importorskip("torch")

X64 = np.concatenate([np.linspace(-10, 10, 20001),
                      3 * np.random.default_rng(0).standard_normal(10000)])
TOL = {np.float32: 2e-6, np.float64: 1e-12}


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / np.abs(b).max()


def _torch_pair(f, x, dy):
    tx = torch.tensor(x, requires_grad=True)
    ty = f(tx)
    ty.backward(torch.tensor(dy))
    return ty.detach().numpy(), tx.grad.numpy()


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_matches_torch(dtype, approximate):
    x, dy = X64.astype(dtype), np.cos(X64).astype(dtype)
    ty, tdx = _torch_pair(lambda t: torch.nn.functional.gelu(t, approximate=approximate), x, dy)
    y = fastbp.gelu_forward(x, approximate)
    dx = fastbp.gelu_backward(dy, x, approximate)
    assert y.dtype == dtype and dx.dtype == dtype
    assert rel(y, ty) < TOL[dtype]
    assert rel(dx, tdx) < TOL[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_matches_torch(dtype):
    x, dy = X64.astype(dtype), np.cos(X64).astype(dtype)
    ty, tdx = _torch_pair(torch.nn.functional.silu, x, dy)
    y, dx = fastbp.silu_forward(x), fastbp.silu_backward(dy, x)
    assert y.dtype == dtype and dx.dtype == dtype
    assert rel(y, ty) < TOL[dtype]
    assert rel(dx, tdx) < TOL[dtype]


def test_gelu_rejects_an_unknown_approximation():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh', got 'erf'"):
        fastbp.gelu_forward(np.zeros(3), "erf")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_mlp_step_matches_torch(approximate):
    """A training step of an MLP with GELU hidden layers (the pre-activations kept in
    the workspace) gives torch's gradients."""
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((16, 5)), rng.integers(0, 3, 16)
    name = "gelu" if approximate == "none" else "gelu_tanh"
    m = fastbp.MLP([5, 7, 6, 3], name, dtype=np.float64, seed=3)
    Ws = [torch.tensor(m.params[f"W{l}"], requires_grad=True) for l in (1, 2, 3)]
    bs = [torch.tensor(m.params[f"b{l}"], requires_grad=True) for l in (1, 2, 3)]
    h = torch.tensor(X)
    for l in range(3):
        h = h @ Ws[l] + bs[l]
        if l < 2:
            h = torch.nn.functional.gelu(h, approximate=approximate)
    loss = torch.nn.functional.cross_entropy(h, torch.tensor(y))
    loss.backward()
    got, g = m.loss(X, y), m.gradient(X, y)
    assert abs(got - loss.item()) < 1e-12 * abs(loss.item())
    for l in range(3):
        assert rel(g[f"W{l + 1}"], Ws[l].grad.numpy()) < 1e-12
        assert rel(g[f"b{l + 1}"], bs[l].grad.numpy()) < 1e-12


def _torch_mlp_steps(m, X, y, make_opt, steps, act="tanh"):
    """torch's training of the same net: the weights in one parameter group (with
    the decay), the biases in another (without), as fastbp's step."""
    L = m.n_layers
    Ws = [torch.tensor(m.params[f"W{l}"], requires_grad=True) for l in range(1, L + 1)]
    bs = [torch.tensor(m.params[f"b{l}"], requires_grad=True) for l in range(1, L + 1)]
    opt = make_opt(Ws, bs)
    for s in range(steps):
        rows = slice(8 * s % len(X), 8 * s % len(X) + 8)
        h = torch.tensor(X[rows])
        for l in range(L):
            h = h @ Ws[l] + bs[l]
            if l < L - 1:
                h = getattr(torch, act)(h)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(h, torch.tensor(y[rows])).backward()
        opt.step()
    return Ws, bs


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_matches_torch_over_25_steps(momentum, centered):
    rng = np.random.default_rng(11)
    X, y = rng.standard_normal((64, 6)), rng.integers(0, 4, 64)
    m = fastbp.MLP([6, 9, 7, 4], "tanh", dtype=np.float64, seed=5)
    kw = dict(lr=0.01, alpha=0.9, eps=1e-6, momentum=momentum, centered=centered)
    Ws, bs = _torch_mlp_steps(m, X, y, lambda Ws, bs: torch.optim.RMSprop(
        [{"params": Ws, "weight_decay": 0.05}, {"params": bs, "weight_decay": 0.0}], **kw), 25)
    opt = fastbp.optim.RMSprop(weight_decay=0.05, **kw)
    for s in range(25):
        rows = slice(8 * s % len(X), 8 * s % len(X) + 8)
        m.train_step(X[rows], y[rows], optimizer=opt)
    assert m.optimizer_state["t"] == 25
    for l in range(m.n_layers):
        assert rel(m.params[f"W{l + 1}"], Ws[l].detach().numpy()) < 1e-10
        assert rel(m.params[f"b{l + 1}"], bs[l].detach().numpy()) < 1e-10
