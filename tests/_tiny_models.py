"""Test-only helpers shared by several test files: a miniature lifter built directly on the ops,
and non-trivial BatchNorm statistics for model tests."""
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
