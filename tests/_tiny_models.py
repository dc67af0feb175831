"""Test-only helpers shared by several test files: a miniature lifter built directly on the ops,
non-trivial BatchNorm statistics for model tests, a small metre-scaled GLA-GCN, and a driver that
streams several sequences with staggered starts through a StreamingLifter."""
import torch

from posekernels import ops


class TinyLifter(torch.nn.Module):
    """A miniature graph layer + individually connected head, as the models use the ops."""

    def __init__(self, v=17, c=8, k=3, ce=4, backend=None):
        super().__init__()
        self.backend = backend
        self.register_buffer("A", torch.rand(k, v, v))
        self.W = torch.nn.Parameter(torch.randn(k, c, 2) * 0.3)
        self.bias = torch.nn.Parameter(torch.randn(k, c) * 0.1)
        self.B = torch.nn.Parameter(torch.randn(k, v, v) * 0.1)
        self.theta_w = torch.nn.Parameter(torch.randn(k, ce, 2))
        self.phi_w = torch.nn.Parameter(torch.randn(k, ce, 2))
        self.W_joint = torch.nn.Parameter(torch.randn(v, c, 3) * 0.3)
        self.W_shared = torch.nn.Parameter(torch.randn(c, 3) * 0.3)
        self.lam = torch.nn.Parameter(torch.tensor(0.4))

    def forward(self, x):  # x (N, T, V, 2)
        h = ops.adaptive_graph_conv(x.permute(0, 3, 1, 2), self.A, self.W, self.bias, self.B,
                                    self.theta_w, None, self.phi_w, None, backend=self.backend)
        h = torch.relu(h).mean(dim=2).transpose(1, 2)  # (N, V, C)
        return ops.grouped_joint_linear(h, self.W_joint, None, self.W_shared, None, self.lam,
                                        backend=self.backend)


def randomize_bn_stats_(model, g):
    """Random BatchNorm running statistics (mean ~ N(0, 0.3^2), var in [0.5, 2])."""
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(0.3 * torch.randn(b.shape, generator=g))
        elif name.endswith("running_var"):
            b.copy_(0.5 + 1.5 * torch.rand(b.shape, generator=g))


def randomize_bn_affine_(model, g, bias=False):
    """Random eval-mode BatchNorms, affine part included: running mean in [-0.5, 0.5), running
    var and weight in [0.5, 1.5), and with ``bias`` a bias in [-0.1, 0.1) (drawn in that order,
    module by module)."""
    for mod in model.modules():
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = mod.num_features
            mod.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            if bias:
                mod.bias.data.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)
    return model


def metre_glagcn(T, causal, seed, channels=8):
    """A small random GLA-GCN built by posekernels.checkpoints.build_model (so it can be saved as
    a checkpoint), eval mode, random BatchNorms, its head rescaled so that outputs are about 1
    (metres-sized, like a trained model's) and absolute tolerances mean something."""
    from posekernels.checkpoints import build_model

    torch.manual_seed(seed)
    m = build_model({"arch": "glagcn", "receptive_field": T, "channels": channels,
                     "causal": causal}).eval()
    g = torch.Generator().manual_seed(seed + 1)
    randomize_bn_affine_(m, g, bias=True)
    with torch.no_grad():
        scale = m(torch.randn(8, T, 17, 2, generator=g)).abs().max().item()
        for p in m.head.parameters():
            p.div_(scale)
    return m


def stream_staggered(lifter, seqs, starts):
    """Push stream i's frames ``seqs[i]`` (F_i, V, 2) from tick ``starts[i]`` on, only the streams
    live at a tick in each push, and flush each stream after its last frame. Checks that every
    emitted row carries the next frame index of its stream. Returns the poses of each stream
    (emitted, then flushed) and how many poses each stream's flush returned."""
    n = len(seqs)
    outs, flushed = [[] for _ in range(n)], [0] * n
    for tick in range(max(st + len(sq) for st, sq in zip(starts, seqs))):
        active = [i for i in range(n) if starts[i] <= tick < starts[i] + len(seqs[i])]
        if not active:
            continue
        r = lifter.push(torch.stack([seqs[i][tick - starts[i]] for i in active]), streams=active)
        for row, i in enumerate(active):
            if lifter.last_ready[row]:
                assert lifter.last_frame_index[row] == len(outs[i])
                outs[i].append(r[row])
        for i in active:
            if tick == starts[i] + len(seqs[i]) - 1:
                pending = lifter.flush(i)
                flushed[i] = len(pending)
                outs[i].extend(pending)
    return outs, flushed
