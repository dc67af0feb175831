"""Global-node GCN: parameter counts, a float64 oracle of the update rules, every backend,
auxiliary heads and losses, K-means pseudo labels, training, torch.compile and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _tiny_models import randomize_bn_stats_

from posekernels import ops
from posekernels.models import GlobalNodeGCN, global_node_loss, kmeans_pose_labels

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def count(model):
    return sum(p.numel() for p in model.parameters())


def rel_err(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max())


def randomize_(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if ".bn" in name:
                p.copy_((0.5 + torch.rand(p.shape, generator=g)) if leaf == "weight"
                        else 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        randomize_bn_stats_(model, g)
    return model


# ----------------------------------------------------------------------------- oracle
def oracle(model, x):
    """The paper's local/global update rules, literally, in float64 (eval mode)."""
    sd = {k: (t.detach().double().cpu() if t.is_floating_point() else t.cpu())
          for k, t in model.state_dict().items()}
    x = x.double().cpu()
    n, v, _ = x.shape
    adj = torch.eye(v, dtype=torch.float64)
    for i, j in model.skeleton.edges:
        adj[i, j] = adj[j, i] = 1.0
    deg = [float(adj[i].sum()) for i in range(v)]  # degrees of A + I
    a = torch.zeros(v, v, dtype=torch.float64)
    for i in range(v):
        for j in range(v):
            if adj[i, j]:
                # the paper's D^-1/2 (A + I) D^-1/2, or SemGCN's row-normalised D^-1 (A + I)
                a[i, j] = (1.0 / math.sqrt(deg[i] * deg[j]) if model.adjacency_norm == "symmetric"
                           else 1.0 / deg[i])

    def conv(x, u, p):
        Q, W = sd[f"{p}.W"][0], sd[f"{p}.W"][1]
        out = torch.zeros(n, v, Q.shape[0], dtype=torch.float64)
        for i in range(v):
            acc = a[i, i] * (x[:, i] @ Q.t()) + sd[f"{p}.bias"]
            for j in range(v):
                if j != i and a[i, j] != 0:
                    acc = acc + a[i, j] * (x[:, j] @ W.t())
            if f"{p}.T" in sd:
                acc = acc + u @ sd[f"{p}.T"].t()
            out[:, i] = acc
        u_new = None
        if f"{p}.R" in sd:
            u_new = x.mean(1) @ sd[f"{p}.R"].t() + u @ sd[f"{p}.S"].t() + sd[f"{p}.bias_u"]
        return out, u_new

    def bn(h, p):
        return F.batch_norm(h, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                            sd[f"{p}.bias"], training=False, eps=1e-5)

    def hidden(x, u, p):
        y, u2 = conv(x, u, f"{p}.conv")
        y = torch.relu(bn(y.transpose(1, 2), f"{p}.bn").transpose(1, 2))
        if u2 is not None:
            u2 = torch.relu(bn(u2, f"{p}.bn_u"))
        return y, u2

    u = torch.zeros(n, 2, dtype=torch.float64) if model.global_node else None
    h, u = hidden(x, u, "input_layer")
    for b in range(4):
        h1, u1 = hidden(h, u, f"blocks.{b}.layer1")
        h2, u2 = hidden(h1, u1, f"blocks.{b}.layer2")
        h = h + h2
        u = None if u is None else u + u2
    pose, u = conv(h, u, "output_layer")
    if model.aux == "embedding":
        z = torch.relu(u @ sd["decoder.0.weight"].t() + sd["decoder.0.bias"])
        u = (z @ sd["decoder.2.weight"].t() + sd["decoder.2.bias"]).reshape(n, v, 3)
    return pose, u


CONFIGS = [
    dict(aux="action", num_classes=7),
    dict(aux="embedding", embed_dim=4),
    dict(aux=None),
    dict(global_node=False, aux=None),
    dict(aux="action", num_classes=5, skeleton="h36m17"),
    dict(aux=None, skeleton="humaneva15"),
    dict(aux="action", num_classes=6, adjacency_norm="row"),
    dict(global_node=False, aux=None, skeleton="humaneva15", adjacency_norm="row"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_matches_oracle_on_every_backend(cfg, device):
    model = randomize_(GlobalNodeGCN(8, **cfg), int(torch.randint(0, 2**31 - 1, ()).item())).eval()
    v = model.num_joints
    x = torch.randn(3, v, 2) * 0.6
    pose_ref, aux_ref = oracle(model, x)
    assert pose_ref.abs().max() > 1e-2
    model = model.to(device)
    for name in ops.available_backends(device):
        with ops.use_backend(name), torch.no_grad():
            pose, aux = model(x.to(device), return_aux=True)
            assert torch.equal(model(x.to(device)), pose)
        assert pose.shape == (3, v, 3)
        assert rel_err(pose, pose_ref) < 1e-4, name
        if aux_ref is None:
            assert aux is None
        else:
            expected_shape = {"action": (3, model.num_classes), "embedding": (3, v, 3)}[model.aux]
            assert aux.shape == expected_shape
            assert rel_err(aux, aux_ref) < 1e-4, name
    with ops.use_backend("reference"), torch.no_grad():
        pose64 = model.double()(x.double().to(device))
    assert rel_err(pose64, pose_ref) < 1e-10


def test_global_node_shapes_the_joints():
    """Without any aux head the global node still feeds the joints through T in every layer."""
    model = randomize_(GlobalNodeGCN(8, aux=None), 1).eval()
    x = torch.randn(2, 16, 2)
    with torch.no_grad():
        y = model(x)
        model.blocks[2].layer1.conv.T.zero_()
        assert (model(x) - y).abs().max() > 1e-4


# ----------------------------------------------------------------------------- counts
def test_parameter_counts():
    assert count(GlobalNodeGCN(128, aux="action", num_classes=100)) == 690_407
    assert count(GlobalNodeGCN(256, aux="action", num_classes=100)) == 2_691_431
    assert count(GlobalNodeGCN(128, aux=None)) == 664_707
    assert count(GlobalNodeGCN(256, aux=None)) == 2_640_131
    for c in (205, 410):  # the baseline: Q and W, bias and BatchNorm per hidden layer
        expected = (2 * 2 * c + 3 * c) + 8 * (2 * c * c + 3 * c) + (2 * 3 * c + 3)
        assert count(GlobalNodeGCN(c, global_node=False, aux=None)) == expected
    # embedding head: R, S to D, bias D, decoder D -> C -> 3V
    c, d, v = 128, 10, 16
    assert count(GlobalNodeGCN(c, aux="embedding", embed_dim=d)) == (
        664_707 + 2 * c * d + d + (d * c + c) + (c * 3 * v + 3 * v))
    # the normalisation has no parameters: the published counts hold for both
    assert count(GlobalNodeGCN(128, adjacency_norm="row")) == 690_407
    assert count(GlobalNodeGCN(256, adjacency_norm="row")) == 2_691_431


def test_adjacency_normalisation_default_and_choice():
    """Symmetric D^-1/2 (A + I) D^-1/2 by default (the paper), row D^-1 (A + I) on request; the
    two differ on a joint whose neighbours have other degrees (the thorax of h36m16)."""
    sym, row = GlobalNodeGCN(8), GlobalNodeGCN(8, adjacency_norm="row")
    assert sym.adjacency_norm == "symmetric" and row.adjacency_norm == "row"
    # the layers hold a^T split into diagonal and off-diagonal partitions
    a_sym = sym.input_layer.conv.A.double().sum(0).t()
    a_row = row.input_layer.conv.A.double().sum(0).t()
    assert torch.allclose(a_sym, a_sym.t())
    assert torch.allclose(a_row.sum(1), torch.ones(16, dtype=torch.float64))  # rows of a sum to 1
    # thorax (8): degree 5 with its self loop (spine, head, both shoulders); spine (7): degree 3
    assert math.isclose(float(a_sym[8, 7]), 1 / math.sqrt(5 * 3), rel_tol=1e-6)
    assert math.isclose(float(a_sym[8, 8]), 1 / 5, rel_tol=1e-6)
    assert math.isclose(float(a_row[8, 7]), 1 / 5, rel_tol=1e-6)
    assert math.isclose(float(a_row[7, 8]), 1 / 3, rel_tol=1e-6)
    x = torch.randn(2, 16, 2) * 0.6
    row.load_state_dict({**sym.state_dict(), "adjacency_norm_code": torch.tensor(0)})
    with torch.no_grad():
        assert rel_err(row.eval()(x), sym.eval()(x)) > 1e-3


def test_state_dict_records_the_normalisation():
    sym, row = GlobalNodeGCN(8), GlobalNodeGCN(8, adjacency_norm="row")
    assert int(sym.state_dict()["adjacency_norm_code"]) == 1
    assert int(row.state_dict()["adjacency_norm_code"]) == 0
    with pytest.raises(RuntimeError, match="adjacency_norm='symmetric'"):
        row.load_state_dict(sym.state_dict())
    with pytest.raises(RuntimeError, match="adjacency_norm='row'"):
        sym.load_state_dict(row.state_dict())
    # a refused load leaves each model's own normalisation code in place
    assert int(row.adjacency_norm_code) == 0 and int(sym.adjacency_norm_code) == 1
    old = {k: t for k, t in row.state_dict().items() if k != "adjacency_norm_code"}
    for strict in (True, False):  # a state dict from before the option: row-normalised
        with pytest.raises(RuntimeError, match="before the adjacency normalisation"):
            sym.load_state_dict(old, strict=strict)
    GlobalNodeGCN(8, adjacency_norm="row").load_state_dict(
        {**old, "adjacency_norm_code": torch.tensor(0)})
    # a partial state dict (no whole model) loads non-strictly as before
    sym.load_state_dict({"blocks.0.layer1.conv.bias": torch.zeros(8)}, strict=False)


def test_constructor_errors():
    with pytest.raises(ValueError, match="aux=None"):
        GlobalNodeGCN(global_node=False)
    with pytest.raises(ValueError, match="aux must be"):
        GlobalNodeGCN(aux="pose")
    with pytest.raises(ValueError, match="num_classes"):
        GlobalNodeGCN(num_classes=1)
    with pytest.raises(ValueError, match="skeleton"):
        GlobalNodeGCN(skeleton="h36m15")
    with pytest.raises(ValueError, match="adjacency_norm"):
        GlobalNodeGCN(adjacency_norm="column")


# ----------------------------------------------------------------------------- losses, labels
def test_loss_helper():
    pose = torch.randn(4, 16, 3, dtype=torch.float64)
    target = torch.randn(4, 16, 3, dtype=torch.float64)
    logits = torch.randn(4, 6, dtype=torch.float64)
    labels = torch.randint(0, 6, (4,))
    mse = ((pose - target) ** 2).mean()
    ce = -torch.log_softmax(logits, -1)[torch.arange(4), labels].mean()
    assert torch.allclose(global_node_loss(pose, target), mse)
    assert torch.allclose(global_node_loss(pose, target, logits, labels, aux="action"), mse + 1e-3 * ce)
    recon = torch.randn(4, 16, 3, dtype=torch.float64)
    assert torch.allclose(global_node_loss(pose, target, recon, aux="embedding"),
                          mse + 1e-4 * ((recon - target) ** 2).mean())
    with pytest.raises(ValueError, match="pseudo class labels"):
        global_node_loss(pose, target, logits, aux="action")


def test_kmeans_pose_labels():
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
    centres = rng.normal(size=(3, 16, 3))
    truth = rng.integers(0, 3, 90)
    poses = centres[truth] + 0.01 * rng.normal(size=(90, 16, 3))
    poses[:, 0] = 0.0  # root-relative
    moved = poses + rng.normal(size=(90, 1, 3)) * 5  # global translation: removed by root=0
    labels, found = kmeans_pose_labels(torch.from_numpy(moved), 3, return_centers=True)
    assert labels.dtype == torch.long and labels.shape == (90,)
    # the same partition as the truth, up to renaming
    mapping = {}
    for t, l in zip(truth, labels.tolist()):
        assert mapping.setdefault(t, l) == l
    assert len(set(mapping.values())) == 3
    assert found.shape == (3, 16, 3)
    for t, l in mapping.items():
        np.testing.assert_allclose(found[l].numpy(), poses[truth == t].mean(0), atol=1e-6)
    # flattened input, MiniBatchKMeans
    mb = kmeans_pose_labels(poses.reshape(90, -1), 3, batch_size=32)
    assert len(set(zip(truth.tolist(), mb.tolist()))) == 3
    with pytest.raises(ValueError, match="k must be"):
        kmeans_pose_labels(poses, 91)
    bad = poses.copy()
    bad[3, 2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kmeans_pose_labels(bad, 3)


@pytest.mark.parametrize("aux", ["action", "embedding", None])
def test_training_lowers_loss(aux):
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
    model = GlobalNodeGCN(16, aux=aux, num_classes=4, dropout=0.0).train()
    x = torch.randn(16, 16, 2) * 0.6
    target = torch.randn(16, 16, 3) * 0.3
    labels = kmeans_pose_labels(target, 4) if aux == "action" else None
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = model.loss(x, target, labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(l) for l in losses)
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_agree_across_backends(device):
    model = randomize_(GlobalNodeGCN(8, aux="action", num_classes=5, dropout=0.0), 2).to(device).train()
    x = (torch.randn(6, 16, 2) * 0.6).to(device)
    target = torch.randn(6, 16, 3, device=device)
    labels = torch.randint(0, 5, (6,), device=device)
    grads = {}
    for name in ops.available_backends(device):
        with ops.use_backend(name):
            model.zero_grad()
            model.loss(x, target, labels).backward()
        grads[name] = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    ref = grads["reference"]
    scale = max(float(t.abs().max()) for t in ref.values())
    for name, g in grads.items():
        for k in ref:
            err = float((g[k] - ref[k]).abs().max())
            assert err <= 1e-3 * float(ref[k].abs().max()) + 1e-5 * scale, (name, k, err)


# ----------------------------------------------------------------------------- autocast
# bfloat16 keeps 8 significant bits; the output of these models moved by 7e-3 to 1e-2 of its
# largest value against float32 on every backend (batch 8, training mode), so the bound is 5e-2.
BF16_REL = 5e-2


def _step(model, x, target, labels, backend, autocast):
    model.zero_grad()
    with ops.use_backend(backend), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        pose = model(x)
        loss = model.loss(x, target, labels) if model.aux is not None else None
    if loss is None:
        loss = (pose.float() * torch.linspace(-1, 1, pose.numel()).reshape(pose.shape)).sum()
    loss.backward()
    return pose.detach(), {k: p.grad.detach().clone() for k, p in model.named_parameters()
                           if p.grad is not None}


@pytest.mark.parametrize("backend", ops.available_backends("cpu"))
@pytest.mark.parametrize("aux", ["action", "embedding", None])
def test_bf16_autocast_on_cpu(aux, backend):
    """torch.autocast("cpu", bfloat16): forward and backward on every backend, close to float32.
    The constant graph A and the parameters stay float32; the ops cast them."""
    if backend == "triton" and aux != "action":
        pytest.skip("triton runs interpreted here: one configuration is enough")
    model = randomize_(GlobalNodeGCN(16, aux=aux, num_classes=5, embed_dim=4, dropout=0.0),
                       7).train()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 16, 2, generator=g)
    target = torch.randn(8, 16, 3, generator=g) * 0.2
    labels = torch.randint(0, 5, (8,), generator=g) if aux == "action" else None
    pose32, g32 = _step(model, x, target, labels, backend, False)
    pose16, g16 = _step(model, x, target, labels, backend, True)
    # the last op is a graph convolution: float32 under autocast on the cpu backend, which
    # computes it in float32 (ops.adaptive_graph_conv), the autocast dtype on the others
    assert pose16.dtype == (torch.float32 if backend == "cpu" else torch.bfloat16)
    assert rel_err(pose16.float(), pose32) < BF16_REL, backend
    assert set(g16) == set(g32) and len(g32) > 0
    for k, grad in g16.items():
        assert grad.dtype == torch.float32 and bool(torch.isfinite(grad).all()), k
    flat16 = torch.cat([g16[k].flatten() for k in g32])
    flat32 = torch.cat([v.flatten() for v in g32.values()])
    assert float(F.cosine_similarity(flat16, flat32, dim=0)) > 0.9
    # reduced-precision inputs are accepted under autocast; outside it they are a clear error
    with ops.use_backend(backend), torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert rel_err(model.eval()(x.bfloat16()).float(), model(x).float()) < BF16_REL
        with pytest.raises(TypeError, match="input has dtype torch.bfloat16 but the model's "
                                            "parameters are torch.float32"):
            model(x.bfloat16())


def test_input_dtype_must_match_the_model():
    model = GlobalNodeGCN(8).eval()
    x = torch.randn(2, 16, 2)
    for dtype in (torch.float64, torch.float16):
        with pytest.raises(TypeError, match=f"input has dtype {dtype} but the model's parameters "
                                            "are torch.float32"):
            model(x.to(dtype))
    assert model.double()(x.double()).dtype == torch.float64


# ----------------------------------------------------------------------------- input, compile
def test_bad_input():
    model = GlobalNodeGCN(8).eval()
    with pytest.raises(ValueError, match="17 joints but skeleton 'h36m16' has 16"):
        model(torch.randn(2, 17, 2))
    with pytest.raises(ValueError, match="last dimension must be 2"):
        model(torch.randn(2, 16, 3))
    with pytest.raises(ValueError, match=r"\(N, V, 2\)"):
        model(torch.randn(2, 5, 16, 2))
    x = torch.randn(2, 16, 2)
    x[0, 4, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        model(x)


def test_torch_compile_fullgraph():
    model = randomize_(GlobalNodeGCN(8, aux="embedding", embed_dim=3), 3).eval()
    x = torch.randn(4, 16, 2)
    torch._dynamo.reset()
    fn = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        pose, recon = fn(x, return_aux=True)
    pose_ref, recon_ref = oracle(model, x)
    assert rel_err(pose, pose_ref) < 1e-4 and rel_err(recon, recon_ref) < 1e-4
    model.train()
    loss = torch.compile(lambda a, b: model.loss(a, b), fullgraph=True, backend="aot_eager")(
        x, torch.randn(4, 16, 3))
    loss.backward()
    assert model.output_layer.R.grad is not None and model.decoder[0].weight.grad is not None
