"""Global-node GCN (Liu, Zou and Tang, ACCV 2020): single-frame 2D -> 3D lifting with a global node.

Each layer updates the body joints ("local nodes") and one global node ``u``::

    x_i' = sigma( Q x_i a_ii + sum_{j != i} W x_j a_ij + T x_u + b )
    x_u' = sigma( (1/V) sum_j R x_j + S x_u + b_u )

with ``a`` the normalised skeleton adjacency with self loops: by default the paper's symmetric
``D^-1/2 (A + I) D^-1/2`` (``adjacency_norm="symmetric"``), or SemGCN's row-normalised
``D^-1 (A + I)`` (``adjacency_norm="row"``), D the degree matrix of ``A + I``. The self /
neighbour split runs through :func:`posekernels.ops.adaptive_graph_conv` with K = 2 partitions
and T = 1: partition 0 is ``diag(a)``, partition 1 the off-diagonal part, and since the op
aggregates ``out[w] = sum_v x[v] A[v, w]`` the partitions passed are the transposes
(``A_k = a_k^T``, equal to ``a_k`` for the symmetric normalisation); ``W = stack(Q, W)``.
Without the global node the layer is the paper's baseline
GCN (different weights for self and neighbours).

The auxiliary tasks of the global node: ``aux="action"`` (K-means pseudo action classes, see
:func:`kmeans_pose_labels`; loss MSE + 0.001 cross-entropy), ``aux="embedding"`` (a D-dim
embedding decoded back to the 3D pose by a 2-layer decoder; loss MSE + 0.0001 reconstruction),
``aux=None`` (the "unsupervised" variant: the global node shapes the joints through T in every
layer, its final output is not computed).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ..skeletons import Skeleton, get_skeleton
from .glagcn import check_pose_input

__all__ = ["GlobalNodeLayer", "GlobalNodeGCN", "kmeans_pose_labels", "global_node_loss",
           "normalised_adjacency", "ADJACENCY_NORMS"]

AUX_WEIGHTS = {"action": 1e-3, "embedding": 1e-4}
# adjacency normalisations and the code saved in the state dict ("adjacency_norm_code")
ADJACENCY_NORMS = {"row": 0, "symmetric": 1}


def normalised_adjacency(skeleton: Skeleton, norm: str = "symmetric",
                         dtype=torch.float64) -> Tensor:
    """``a`` (V, V) of the skeleton's undirected graph with self loops, ``a[i, j]`` the weight of
    joint j in joint i's update: ``"symmetric"`` ``D^-1/2 (A + I) D^-1/2``, ``"row"``
    ``D^-1 (A + I)``, with D the degree matrix of ``A + I``."""
    if norm not in ADJACENCY_NORMS:
        raise ValueError(f"adjacency_norm must be 'symmetric' or 'row', got {norm!r}")
    m = skeleton.adjacency(self_loops=True, dtype=torch.float64)
    deg = m.sum(dim=1)
    if norm == "row":
        a = m / deg[:, None]
    else:
        inv_sqrt = deg.rsqrt()
        a = inv_sqrt[:, None] * m * inv_sqrt[None, :]
    return a.to(dtype)


def self_neighbour_partitions(skeleton: Skeleton, dtype=torch.float64,
                              norm: str = "symmetric") -> Tensor:
    """(2, V, V): the transposed diagonal and off-diagonal parts of :func:`normalised_adjacency`."""
    a = normalised_adjacency(skeleton, norm)
    diag = torch.diag(torch.diagonal(a))
    return torch.stack([diag.t(), (a - diag).t()]).to(dtype)


def _kaiming(*shape: int) -> nn.Parameter:
    w = torch.empty(*shape)
    nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
    return nn.Parameter(w)


class GlobalNodeLayer(nn.Module):
    """One graph convolution of local nodes (N, V, Cin) and an optional global node (N, Gin).

    Parameters: ``W`` (2, Cout, Cin) = (Q, W) self and neighbour weights; ``bias`` (Cout);
    ``T`` (Cout, Gin) global -> local (when ``global_in``); ``R`` (Gout, Cin), ``S`` (Gout, Gin)
    and ``bias_u`` (Gout) for the global update (when ``global_out``). Returns the
    pre-activation ``(x', u')`` (``u'`` None without a global update).
    """

    def __init__(self, in_channels: int, out_channels: int, partitions: Tensor,
                 global_in: int | None = None, global_out: int | None = None):
        super().__init__()
        self._A_exact = partitions.detach().to("cpu", torch.float64).clone()
        self.register_buffer("A", partitions.detach().to(torch.float32).clone(), persistent=False)
        self.W = nn.Parameter(torch.stack([_kaiming(out_channels, in_channels).data,
                                           _kaiming(out_channels, in_channels).data]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.T = _kaiming(out_channels, global_in) if global_in is not None else None
        if global_out is not None:
            if global_in is None:
                raise ValueError("a global update needs a global input (global_in)")
            self.R = _kaiming(global_out, in_channels)
            self.S = _kaiming(global_out, global_in)
            self.bias_u = nn.Parameter(torch.zeros(global_out))
        else:
            self.R = self.S = self.bias_u = None

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.A = self._A_exact.to(device=self.A.device, dtype=self.A.dtype)
        return self

    def forward(self, x: Tensor, u: Tensor | None = None):
        y = ops.adaptive_graph_conv(x.transpose(1, 2).unsqueeze(2), self.A, self.W)
        y = y[:, :, 0].transpose(1, 2)  # (N, V, Cout): Q x_i a_ii + sum_j W x_j a_ij
        if self.T is not None:
            y = y + F.linear(u, self.T, self.bias).unsqueeze(1)
        else:
            y = y + self.bias
        u_new = None
        if self.R is not None:
            u_new = F.linear(x.mean(dim=1), self.R) + F.linear(u, self.S, self.bias_u)
        return y, u_new


class _HiddenLayer(nn.Module):
    """Graph convolution + BatchNorm + ReLU + dropout, on the joints and on the global node."""

    def __init__(self, in_channels: int, out_channels: int, partitions: Tensor,
                 global_in: int | None, dropout: float):
        super().__init__()
        g = global_in is not None
        self.conv = GlobalNodeLayer(in_channels, out_channels, partitions, global_in,
                                    out_channels if g else None)
        self.bn = nn.BatchNorm1d(out_channels)
        self.bn_u = nn.BatchNorm1d(out_channels) if g else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, u: Tensor | None):
        x, u = self.conv(x, u)
        x = self.drop(F.relu(self.bn(x.transpose(1, 2)).transpose(1, 2)))
        if u is not None:
            u = self.drop(F.relu(self.bn_u(u)))
        return x, u


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, partitions: Tensor, global_node: bool, dropout: float):
        super().__init__()
        g = channels if global_node else None
        self.layer1 = _HiddenLayer(channels, channels, partitions, g, dropout)
        self.layer2 = _HiddenLayer(channels, channels, partitions, g, dropout)

    def forward(self, x: Tensor, u: Tensor | None):
        h, v = self.layer2(*self.layer1(x, u))
        return x + h, (None if u is None else u + v)


class GlobalNodeGCN(nn.Module):
    """Global-node GCN lifting one frame of 2D joints (N, V, 2) to 3D (N, V, 3).

    Arrangement (C = ``channels``, V joints, global node on)::

        input layer   2 -> C   (global input: a zero vector of size 2)
        4 residual blocks of two C -> C layers (identity skip on joints and global node)
        output layer  C -> 3   (no BatchNorm / ReLU); its global update emits the aux output

    Every hidden layer (input + 8) is a :class:`GlobalNodeLayer` followed by BatchNorm, ReLU and
    dropout on both the joints and the global node. A hidden layer has 5 C x C matrices (Q, W,
    T, R, S), two biases and two BatchNorms: 5C^2 + 6C parameters; the input layer 5 x 2C +
    6C. The output layer has Q, W, T (3 x C each) and a bias of 3; with ``aux="action"`` its
    global update (R, S: C -> K, bias K) emits the K class logits, with ``aux="embedding"`` the
    D-dim embedding, which a decoder Linear(D, C) -> ReLU -> Linear(C, 3V) turns back into a 3D
    pose; with ``aux=None`` it has no global update. Totals: 690,407 (C = 128, action, K = 100)
    and 2,691,431 (C = 256) -- the paper's 0.69M and 2.69M; 664,707 / 2,640,131 without aux.
    ``global_node=False`` (the baseline GCN): no T, R, S, no global BatchNorm, no aux.

    ``adjacency_norm`` (keyword only): ``"symmetric"`` (default, the paper's
    ``D^-1/2 (A + I) D^-1/2``) or ``"row"`` (SemGCN's ``D^-1 (A + I)``, this model's only
    normalisation before the option existed). The normalisation has no parameters (the counts
    above hold for both); it is saved in the state dict as the 0-dim integer buffer
    ``adjacency_norm_code`` (row 0, symmetric 1), and loading a state dict saved with the other
    normalisation, or a whole-model state dict without that entry (saved before the option:
    row-normalised), is refused with a message naming the ``adjacency_norm`` to build the model
    with (even with ``strict=False``).

    ``forward(x)`` -> (N, V, 3); ``forward(x, return_aux=True)`` -> ``(pose, aux)`` with aux the
    logits (N, K), the decoder's reconstruction (N, V, 3), or None.

    Dtypes: the input must have the model's dtype (float32 unless converted); another dtype
    raises TypeError naming both (the input is not cast). Under ``torch.autocast`` the model runs
    forward and backward on every backend, and float16, bfloat16 and float32 inputs are all
    accepted.
    """

    def __init__(self, channels: int = 128, skeleton: str | Skeleton = "h36m16",
                 global_node: bool = True, aux: str | None = "action", num_classes: int = 100,
                 embed_dim: int = 10, dropout: float = 0.2, *,
                 adjacency_norm: str = "symmetric"):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if aux not in ("action", "embedding", None):
            raise ValueError(f"aux must be 'action', 'embedding' or None, got {aux!r}")
        if aux is not None and not global_node:
            raise ValueError(f"aux={aux!r} needs the global node; the baseline GCN "
                             "(global_node=False) has no auxiliary output: pass aux=None")
        if aux == "action" and (not isinstance(num_classes, int) or num_classes < 2):
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if aux == "embedding" and (not isinstance(embed_dim, int) or embed_dim < 1):
            raise ValueError(f"embed_dim must be a positive int, got {embed_dim!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        if not isinstance(adjacency_norm, str) or adjacency_norm not in ADJACENCY_NORMS:
            raise ValueError(f"adjacency_norm must be 'symmetric' or 'row', got {adjacency_norm!r}")
        sk = get_skeleton(skeleton)
        self.skeleton = sk
        self.num_joints = v = sk.num_joints
        self.channels = channels
        self.global_node = bool(global_node)
        self.aux = aux
        self.num_classes = num_classes if aux == "action" else None
        self.embed_dim = embed_dim if aux == "embedding" else None
        self.adjacency_norm = adjacency_norm
        self.register_buffer("adjacency_norm_code",
                             torch.tensor(ADJACENCY_NORMS[adjacency_norm], dtype=torch.int64))
        parts = self_neighbour_partitions(sk, norm=adjacency_norm)
        g = self.global_node
        self.input_layer = _HiddenLayer(2, channels, parts, 2 if g else None, dropout)
        self.blocks = nn.ModuleList([_ResidualBlock(channels, parts, g, dropout) for _ in range(4)])
        aux_out = {"action": num_classes, "embedding": embed_dim, None: None}[aux]
        self.output_layer = GlobalNodeLayer(channels, 3, parts, channels if g else None, aux_out)
        if aux == "embedding":
            self.decoder = nn.Sequential(nn.Linear(embed_dim, channels), nn.ReLU(),
                                         nn.Linear(channels, 3 * v))
        else:
            self.decoder = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "adjacency_norm_code"
        names = {code: name for name, code in ADJACENCY_NORMS.items()}
        if key in state_dict:
            saved = names.get(int(state_dict[key]), f"<unknown code {int(state_dict[key])}>")
            if saved != self.adjacency_norm:
                error_msgs.append(
                    f"the state dict was saved from a model with adjacency_norm={saved!r}, this "
                    f"model uses {self.adjacency_norm!r}: build it with adjacency_norm={saved!r}")
        elif prefix + "input_layer.conv.W" in state_dict:  # a whole model saved before the option
            error_msgs.append(
                "the state dict has no 'adjacency_norm_code': it was saved before the adjacency "
                "normalisation became an option, when it was always the row normalisation "
                "D^-1 (A + I); build the model with adjacency_norm='row' and set "
                "state_dict['adjacency_norm_code'] = torch.tensor(0) before loading")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        with torch.no_grad():  # the code follows the constructor argument, never the file
            self.adjacency_norm_code.fill_(ADJACENCY_NORMS[self.adjacency_norm])

    def check_input(self, x: Tensor) -> None:
        check_pose_input(x, joints=self.num_joints, coords=2, skeleton=self.skeleton.name,
                         layout="(N, V, 2)", dtype=self.input_layer.conv.W.dtype)

    def forward(self, x: Tensor, return_aux: bool = False):
        self.check_input(x)
        u = x.new_zeros(x.shape[0], 2) if self.global_node else None
        h, u = self.input_layer(x, u)
        for block in self.blocks:
            h, u = block(h, u)
        pose, u = self.output_layer(h, u)
        if not return_aux:
            return pose
        if self.aux == "embedding":
            return pose, self.decoder(u).reshape(x.shape[0], self.num_joints, 3)
        return pose, u  # logits (N, K), or None without aux

    def loss(self, x: Tensor, target: Tensor, labels: Tensor | None = None) -> Tensor:
        """MSE on the 3D pose plus the auxiliary term of :func:`global_node_loss`."""
        if self.aux is None:
            return global_node_loss(self.forward(x), target)
        pose, aux_out = self.forward(x, return_aux=True)
        return global_node_loss(pose, target, aux_out, labels, aux=self.aux)


def global_node_loss(pose: Tensor, target: Tensor, aux_out: Tensor | None = None,
                     aux_target: Tensor | None = None, aux: str | None = None,
                     weight: float | None = None) -> Tensor:
    """``MSE(pose, target)`` plus the auxiliary loss of the global node.

    * ``aux="action"``: ``+ weight * cross_entropy(aux_out, aux_target)`` (weight 0.001);
      ``aux_target`` the pseudo labels of :func:`kmeans_pose_labels`;
    * ``aux="embedding"``: ``+ weight * MSE(aux_out, aux_target)`` (weight 0.0001), the decoder's
      reconstruction against the 3D pose (``aux_target`` defaults to ``target``);
    * ``aux=None``: the MSE alone.
    """
    if pose.shape != target.shape:
        raise ValueError(f"pose {tuple(pose.shape)} and target {tuple(target.shape)} must have "
                         "the same shape")
    loss = F.mse_loss(pose, target)
    if aux is None:
        return loss
    if aux not in AUX_WEIGHTS:
        raise ValueError(f"aux must be 'action', 'embedding' or None, got {aux!r}")
    if aux_out is None:
        raise ValueError(f"aux={aux!r} needs the model's auxiliary output (return_aux=True)")
    w = AUX_WEIGHTS[aux] if weight is None else float(weight)
    if aux == "action":
        if aux_target is None:
            raise ValueError("aux='action' needs the pseudo class labels (kmeans_pose_labels)")
        return loss + w * F.cross_entropy(aux_out, aux_target)
    recon_target = target if aux_target is None else aux_target
    return loss + w * F.mse_loss(aux_out, recon_target)


def kmeans_pose_labels(poses, k: int, *, root: int | None = 0, seed: int = 0, n_init: int = 4,
                       batch_size: int | None = None, return_centers: bool = False):
    """Pseudo action classes: K-means (scikit-learn) on root-relative 3D poses.

    ``poses``: (M, V, 3) tensor or array (or already flattened (M, D) features, then ``root`` is
    ignored). With ``root`` set (default joint 0), each pose is made relative to that joint first.
    ``batch_size`` switches to MiniBatchKMeans for very large training sets. Returns a long tensor
    (M,) of labels in [0, k), and with ``return_centers`` also the centres (k, V, 3) / (k, D).
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    arr = poses.detach().cpu().double().numpy() if isinstance(poses, Tensor) else np.asarray(
        poses, dtype=np.float64)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0:
        raise ValueError(f"poses must have shape (M, V, 3) or (M, D) with M >= 1, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("poses contain NaN or inf")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= arr.shape[0]:
        raise ValueError(f"k must be an int in [1, {arr.shape[0]}] (the number of poses), got {k!r}")
    shape = arr.shape[1:]
    if arr.ndim == 3 and root is not None:
        if not 0 <= root < arr.shape[1]:
            raise ValueError(f"root must index a joint in [0, {arr.shape[1]}), got {root}")
        arr = arr - arr[:, root:root + 1]
    flat = arr.reshape(arr.shape[0], -1)
    if batch_size is None:
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    else:
        km = MiniBatchKMeans(n_clusters=k, n_init=n_init, random_state=seed, batch_size=batch_size)
    labels = torch.from_numpy(km.fit_predict(flat).astype(np.int64))
    if return_centers:
        return labels, torch.from_numpy(km.cluster_centers_.reshape(k, *shape))
    return labels
