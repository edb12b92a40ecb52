"""Hand-written training steps that ``graphc bench`` compares against, same model and
same optimizer semantics (PyTorch-style SGD/Adam), for dense models built from
``Linear`` and activation layers (all the built-ins).

numpy: forward, backward and update written out by hand (the "what you would write
without a compiler" baseline); torch and jax: their usual eager / ``jax.jit`` steps,
used only when installed.  Each ``make_*`` returns ``step(x, y) -> loss`` or raises
``Unavailable`` with the reason.
"""
from __future__ import annotations

import numpy as np

from ..nn import Linear, ReLU, Sequential, Sigmoid, Tanh


class Unavailable(Exception):
    pass


def dense_layers(module):
    """[("linear", key) | ("relu"|"tanh"|"sigmoid", None)] or Unavailable."""
    if isinstance(module, Linear):
        return [("linear", None)]
    if isinstance(module, Sequential):
        out = []
        for i, layer in enumerate(module.layers):
            if isinstance(layer, Linear):
                out.append(("linear", str(i)))
            elif isinstance(layer, (ReLU, Tanh, Sigmoid)):
                out.append((type(layer).__name__.lower(), None))
            else:
                raise Unavailable(f"layer {type(layer).__name__} has no hand-written peer")
        return out
    raise Unavailable(f"{type(module).__name__} has no hand-written peer")


def _weights(layers, params):
    return [(params if key is None else params[key]) if kind == "linear" else None
            for kind, key in layers]


def _loss_kind(model):
    from ..models.spec import DEFAULT_CRITERION
    loss = model.spec.loss or DEFAULT_CRITERION[model.spec.task]
    if not isinstance(loss, str):
        raise Unavailable("a custom loss function has no hand-written peer")
    l2 = model.spec.hparams.get("l2", 0.0) if model.spec.penalty is not None else 0.0
    return loss, l2


class _NumpyOpt:
    def __init__(self, cfg, arrays):
        self.cfg, self.t = cfg, 0
        self.m = [np.zeros_like(a) for a in arrays]
        self.v = [np.zeros_like(a) for a in arrays]

    def update(self, arrays, grads):
        c, self.t = self.cfg, self.t + 1
        for a, g, m, v in zip(arrays, grads, self.m, self.v):
            if c.weight_decay:
                g = g + c.weight_decay * a
            if c.optimizer == "adam":
                m *= 0.9
                m += 0.1 * g
                v *= 0.999
                v += 0.001 * g * g
                a -= (c.lr / (1 - 0.9 ** self.t)) * m / (np.sqrt(v / (1 - 0.999 ** self.t))
                                                         + 1e-8)
            elif c.optimizer == "momentum":
                m *= c.momentum
                m += g
                a -= c.lr * m
            else:
                a -= c.lr * g


def make_numpy(model, params, cfg):
    layers = dense_layers(model.module)
    loss_kind, l2 = _loss_kind(model)
    ws = [{k: np.array(v) for k, v in w.items()} if w is not None else None
          for w in _weights(layers, params)]
    arrays = [a for w in ws if w is not None for a in (w["w"], w["b"])]
    opt = _NumpyOpt(cfg, arrays)

    def step(x, y):
        acts = [x]
        for (kind, _), w in zip(layers, ws):
            h = acts[-1]
            if kind == "linear":
                acts.append(h @ w["w"] + w["b"])
            elif kind == "relu":
                acts.append(np.maximum(h, 0))
            elif kind == "tanh":
                acts.append(np.tanh(h))
            else:
                acts.append(1 / (1 + np.exp(-h)))
        z, n = acts[-1], len(x)
        if loss_kind == "cross_entropy":
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            p = e / e.sum(axis=1, keepdims=True)
            loss = -np.mean(np.log(p[np.arange(n), y] + 1e-30))
            g = p
            g[np.arange(n), y] -= 1
            g /= n
        else:
            s = z[:, 0]
            if loss_kind == "mse":
                d = s - y
                loss, gs = np.mean(d * d), 2 * d / n
            elif loss_kind == "hinge":
                ys = 2.0 * y - 1.0
                margin = 1 - ys * s
                loss, gs = np.mean(np.maximum(margin, 0)), -ys * (margin > 0) / n
            else:
                p = 1 / (1 + np.exp(-s))
                loss, gs = np.mean(np.maximum(s, 0) - s * y + np.log1p(np.exp(-abs(s)))), \
                    (p - y) / n
            g = gs[:, None].astype(np.float32)
            if l2:
                loss += 0.5 * l2 * float(np.sum(ws[0]["w"] ** 2))
        grads = []
        for i in range(len(layers) - 1, -1, -1):
            kind, w, h, out = layers[i][0], ws[i], acts[i], acts[i + 1]
            if kind == "linear":
                gw = h.T @ g
                if l2:
                    gw += l2 * w["w"]
                grads[:0] = [gw, g.sum(axis=0)]
                g = g @ w["w"].T
            elif kind == "relu":
                g = g * (h > 0)
            elif kind == "tanh":
                g = g * (1 - out * out)
            else:
                g = g * out * (1 - out)
        opt.update(arrays, grads)
        return float(loss)
    return step


def make_torch(model, params, cfg, threads=None):
    try:
        import torch
    except ImportError:
        raise Unavailable("torch is not installed (pip install torch==2.13.0)") from None
    if threads:
        torch.set_num_threads(int(threads))
    layers = dense_layers(model.module)
    loss_kind, l2 = _loss_kind(model)
    mods = []
    for (kind, _), w in zip(layers, _weights(layers, params)):
        if kind == "linear":
            lin = torch.nn.Linear(*w["w"].shape)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.array(w["w"].T)))
                lin.bias.copy_(torch.from_numpy(np.array(w["b"])))
            mods.append(lin)
        else:
            mods.append({"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh,
                         "sigmoid": torch.nn.Sigmoid}[kind]())
    net = torch.nn.Sequential(*mods)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                              momentum=cfg.momentum if cfg.optimizer == "momentum" else 0)

    def step(x, y):
        xt, yt = torch.from_numpy(x), torch.from_numpy(np.asarray(y))
        opt.zero_grad(set_to_none=True)
        z = net(xt)
        if loss_kind == "cross_entropy":
            loss = torch.nn.functional.cross_entropy(z, yt.long())
        else:
            s = z[:, 0]
            if loss_kind == "mse":
                loss = torch.mean((s - yt) ** 2)
            elif loss_kind == "hinge":
                loss = torch.clamp(1 - (2 * yt.float() - 1) * s, min=0).mean()
            else:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(s, yt.float())
            if l2:
                loss = loss + 0.5 * l2 * (net[0].weight ** 2).sum()
        loss.backward()
        opt.step()
        return float(loss.detach())
    return step


def make_jax(model, params, cfg):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        raise Unavailable("jax is not installed (pip install jax jaxlib)") from None
    layers = dense_layers(model.module)
    loss_kind, l2 = _loss_kind(model)
    ws = [{k: jnp.asarray(v) for k, v in w.items()} if w is not None else None
          for w in _weights(layers, params)]
    acts = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}

    def loss_fn(ws, x, y):
        h = x
        for (kind, _), w in zip(layers, ws):
            h = h @ w["w"] + w["b"] if kind == "linear" else acts[kind](h)
        if loss_kind == "cross_entropy":
            logp = jax.nn.log_softmax(h)
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1))
        s = h[:, 0]
        if loss_kind == "mse":
            return jnp.mean((s - y) ** 2)
        if loss_kind == "hinge":
            out = jnp.mean(jnp.maximum(1 - (2 * y - 1) * s, 0))
            return out + (0.5 * l2 * jnp.sum(ws[0]["w"] ** 2) if l2 else 0)
        return jnp.mean(jnp.maximum(s, 0) - s * y + jnp.log1p(jnp.exp(-jnp.abs(s))))

    b1, b2, lr, wd = 0.9, 0.999, cfg.lr, cfg.weight_decay
    zeros = jax.tree_util.tree_map(jnp.zeros_like, ws)
    state = {"ws": ws, "m": zeros, "v": zeros, "t": jnp.zeros((), jnp.float32)}

    @jax.jit
    def update(state, x, y):
        loss, g = jax.value_and_grad(loss_fn)(state["ws"], x, y)
        g = jax.tree_util.tree_map(lambda g, w: g + wd * w, g, state["ws"])
        t = state["t"] + 1
        if cfg.optimizer == "adam":
            m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state["m"], g)
            v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state["v"], g)
            ws = jax.tree_util.tree_map(
                lambda w, m, v: w - lr / (1 - b1 ** t) * m / (jnp.sqrt(v / (1 - b2 ** t)) + 1e-8),
                state["ws"], m, v)
        else:
            mu = cfg.momentum if cfg.optimizer == "momentum" else 0.0
            m = jax.tree_util.tree_map(lambda m, g: mu * m + g, state["m"], g)
            v = state["v"]
            ws = jax.tree_util.tree_map(lambda w, m: w - lr * m, state["ws"], m)
        return {"ws": ws, "m": m, "v": v, "t": t}, loss

    def step(x, y):
        nonlocal state
        state, loss = update(state, x, y)
        return float(loss)            # blocks until the step is done
    return step


PEERS = {"numpy": make_numpy, "torch": make_torch, "jax": make_jax}
