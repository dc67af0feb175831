"""ONNX export through the reference path, checked with onnxruntime against PyTorch."""
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from _tiny_models import randomize_bn_affine_  # noqa: E402

from posekernels.export import check_onnx, export_onnx  # noqa: E402
from posekernels.models import GLAGCN, released_sagcn  # noqa: E402


@pytest.mark.parametrize("make", [lambda: GLAGCN(receptive_field=9, channels=8),
                                  lambda: GLAGCN(receptive_field=9, channels=8, causal=True),
                                  lambda: GLAGCN(receptive_field=9, channels=8, causal=True,
                                                 window_norm=True),
                                  lambda: released_sagcn(9, channels=8)])
def test_onnx_matches_pytorch(tmp_path, make):
    torch.manual_seed(0)
    model = randomize_bn_affine_(make(), torch.Generator().manual_seed(0)).eval()
    path = export_onnx(model, tmp_path / "lifter.onnx")
    with torch.no_grad():
        scale = model(torch.randn(4, 9, 17, 2) * 0.3).abs().max().item()
    assert check_onnx(model, path, batch=5) <= 1e-5 * max(1.0, scale)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "keypoints2d" and out.name == "pose3d"
    assert inp.shape[1:] == [9, 17, 2]


def test_export_cli_reports_missing_checkpoint(tmp_path, capsys):
    from posekernels.cli import main

    code = main(["export", "--onnx", str(tmp_path / "x.onnx"), "--checkpoint",
                 str(tmp_path / "missing.pt")])
    assert code == 2
    assert f"{tmp_path / 'missing.pt'}: no such checkpoint file" in capsys.readouterr().err


def test_export_cli_with_model(tmp_path, capsys, monkeypatch):
    import posekernels.checkpoints as checkpoints
    from posekernels.cli import main

    torch.manual_seed(1)
    monkeypatch.setattr(checkpoints, "load_model", lambda *a, **k: GLAGCN(receptive_field=3,
                                                                         channels=8).eval())
    code = main(["export", "--onnx", str(tmp_path / "m.onnx"), "--checkpoint", "default"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "onnxruntime vs PyTorch" in out and (tmp_path / "m.onnx").exists()
