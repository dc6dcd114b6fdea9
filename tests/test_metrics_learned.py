"""LPIPS, FID and ArcFace: the real computations, run with small weight files the tests create."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import write_tiny_lpips

from vqfr.errors import VQFRError
from vqfr.metrics.arcface import ArcFaceResNet18, arcface_distance, load_arcface
from vqfr.metrics.fid import feature_stats, fid_from_features, frechet_distance, load_stats, save_stats
from vqfr.metrics.inception import FIDInceptionV3, load_fid_inception
from vqfr.metrics.lpips import LPIPS, load_lpips


@pytest.fixture(autouse=True)
def _one_thread():
    """Small convolutions run fastest single-threaded (and do not fight other processes for cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_lpips_published_layout():
    keys = LPIPS().state_dict()
    assert tuple(keys["features.28.weight"].shape) == (512, 512, 3, 3)
    assert tuple(keys["linear.lin4.model.1.weight"].shape) == (1, 512, 1, 1)
    assert set(LPIPS().linear.state_dict()) == {f"lin{i}.model.1.weight" for i in range(5)}


def test_lpips_loads_and_behaves_like_a_distance(tmp_path):
    _, lin, vgg = write_tiny_lpips(tmp_path)
    net = load_lpips(lin, vgg)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        assert torch.allclose(net(x, x), torch.zeros(2), atol=1e-7)
        d_xy, d_yx = net(x, y), net(y, x)
        assert (d_xy > 0).all() and torch.allclose(d_xy, d_yx, atol=1e-6)
        z = (x + 0.6 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)
        assert (net(x, z) > d_xy).all()


def test_lpips_first_stage_by_hand(tmp_path):
    net, _, _ = write_tiny_lpips(tmp_path)
    for i in range(5):
        net.linear[i].model[1].weight.data.zero_()
    net.linear[0].model[1].weight.data.fill_(1.0)  # keep only relu1_2 with unit weights
    net.eval()
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1, torch.rand(1, 3, 16, 16, generator=g) * 2 - 1

    def relu1_2(t):
        t = (t - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor([0.458, 0.448, 0.450]).view(
            1, 3, 1, 1
        )
        t = F.relu(F.conv2d(t, net.features[0].weight, net.features[0].bias, padding=1))
        t = F.relu(F.conv2d(t, net.features[2].weight, net.features[2].bias, padding=1))
        return t / (t.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)

    expected = (relu1_2(x) - relu1_2(y)).pow(2).sum(1).mean()
    with torch.no_grad():
        assert net(x, y).item() == pytest.approx(expected.item(), rel=1e-5)


def test_lpips_wrong_file_is_a_one_line_error(tmp_path):
    _, lin, vgg = write_tiny_lpips(tmp_path)
    with pytest.raises(VQFRError, match="do not fit the LPIPS") as err:
        load_lpips(vgg, vgg)  # backbone file given as the linear layers
    assert "\n" not in str(err.value)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(VQFRError, match="junk.pth is not a PyTorch checkpoint"):
        load_lpips(tmp_path / "junk.pth", vgg)
    with pytest.raises(VQFRError, match="no such file"):
        load_lpips(tmp_path / "missing.pth", vgg)


def test_frechet_distance_closed_form():
    assert frechet_distance(np.zeros(1), np.eye(1), np.ones(1), 4 * np.eye(1)) == pytest.approx(2.0)
    a, b, m = np.array([1.0, 2.0, 3.0]), np.array([4.0, 0.5, 3.0]), np.array([1.0, -1.0, 2.0])
    expected = m @ m + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(np.zeros(3), np.diag(a), m, np.diag(b)) == pytest.approx(expected)
    feats = np.random.default_rng(0).normal(size=(50, 4))
    assert frechet_distance(*feature_stats(feats), *feature_stats(feats)) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_equals_the_sqrtm_formula():
    from scipy import linalg

    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(80, 16)), rng.normal(0.3, 1.5, size=(90, 16)) @ rng.normal(size=(16, 16))
    (m1, s1), (m2, s2) = feature_stats(f1), feature_stats(f2)
    reference = (m1 - m2) @ (m1 - m2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(reference, rel=1e-9)


def test_low_rank_fid_shortcut_equals_the_full_formula():
    rng = np.random.default_rng(1)
    f1, f2 = rng.normal(size=(6, 32)), rng.normal(0.5, 2.0, size=(9, 32))
    full = frechet_distance(*feature_stats(f1), *feature_stats(f2))
    assert fid_from_features(f1, f2) == pytest.approx(full, rel=1e-6)  # features vs features
    assert fid_from_features(f1, feature_stats(f2)) == pytest.approx(full, rel=1e-6)  # features vs stats
    assert fid_from_features(f1, f1) == pytest.approx(0.0, abs=1e-9)
    big = rng.normal(size=(40, 32))  # more images than dimensions: the plain formula
    assert fid_from_features(big, f2) == pytest.approx(frechet_distance(*feature_stats(big), *feature_stats(f2)))


def test_fid_stats_files_round_trip(tmp_path):
    mean, cov = np.arange(3.0), np.diag([1.0, 2.0, 3.0])
    save_stats(tmp_path / "s.npz", mean, cov)
    assert all(np.array_equal(a, b) for a, b in zip(load_stats(tmp_path / "s.npz"), (mean, cov)))
    torch.save({"name": "FFHQ", "mean": mean, "cov": cov}, tmp_path / "s.pth")  # BasicSR's layout
    assert all(np.array_equal(a, b) for a, b in zip(load_stats(tmp_path / "s.pth"), (mean, cov)))
    torch.save({"mean": mean}, tmp_path / "bad.pth")
    with pytest.raises(VQFRError, match="no 'mean'/'cov'"):
        load_stats(tmp_path / "bad.pth")


def test_fid_inception_published_layout_and_forward(tmp_path):
    torch.manual_seed(0)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        sd = FIDInceptionV3().state_dict()
    assert tuple(sd["Conv2d_1a_3x3.conv.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape) == (384, 384, 3, 1)
    assert tuple(sd["Mixed_6e.branch7x7dbl_1.conv.weight"].shape) == (192, 768, 1, 1)
    assert tuple(sd["fc.weight"].shape) == (1008, 2048)
    assert not any("AuxLogits" in k for k in sd)
    assert sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked")) > 23_000_000


def test_fid_inception_loads_and_extracts_pool3(tmp_path):
    torch.manual_seed(0)
    torch.save(FIDInceptionV3().state_dict(), tmp_path / "incep.pth")
    loaded = load_fid_inception(tmp_path / "incep.pth")
    loaded.resize_input = False  # 75x75 is the smallest input the network accepts; skip the 299 resize
    x = torch.rand(2, 3, 75, 75) * 2 - 1
    with torch.no_grad():
        feats = loaded(x)
        single = loaded(x[:1])
    assert feats.shape == (2, 2048) and (feats >= 0).all()  # pool3 follows ReLUs
    assert torch.allclose(feats[0], single[0], atol=1e-5)


def test_arcface_layout_load_and_distance(tmp_path):
    torch.manual_seed(0)
    net = ArcFaceResNet18()
    sd = net.state_dict()
    assert tuple(sd["fc5.weight"].shape) == (512, 512 * 8 * 8)
    assert "layer2.0.downsample.0.weight" in sd and "layer1.0.bn0.running_var" in sd
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "arc.pth")  # DataParallel-style keys
    loaded = load_arcface(tmp_path / "arc.pth")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (100, 90), dtype=np.uint8)
    b = rng.integers(0, 256, (100, 90), dtype=np.uint8)
    assert arcface_distance(loaded, a, a) == pytest.approx(0.0, abs=0.1)
    assert arcface_distance(loaded, a, b) > 1.0


def test_standard_file_with_wrong_checksum_is_rejected(tmp_path):
    bogus = tmp_path / "vgg16-397923af.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bogus)
    with pytest.raises(VQFRError, match="corrupt or not the published file"):
        load_lpips(bogus, bogus)


def test_download_fetches_checks_and_caches(tmp_path, monkeypatch):
    import dataclasses
    import hashlib

    from vqfr.metrics import weights as W
    from vqfr.utils.known_files import fetch

    monkeypatch.setenv("VQFR_HOME", str(tmp_path / "home"))
    payload = b"pretend weights"
    source = tmp_path / "remote.bin"
    source.write_bytes(payload)
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    spec = dataclasses.replace(W.FID_INCEPTION, filename=f"f-{prefix}.pth", url=source.as_uri(), sha256=prefix)
    path = fetch(spec)
    assert path.read_bytes() == payload and path.parent == tmp_path / "home" / "metrics"
    assert fetch(spec) == path  # cached: no second fetch needed
    bad = dataclasses.replace(spec, filename="g-00000000.pth", sha256="00000000")
    with pytest.raises(VQFRError, match="corrupt or not the published file"):
        fetch(bad)
    assert not (tmp_path / "home" / "metrics" / "g-00000000.pth").exists()  # a bad download is not kept
    with pytest.raises(VQFRError, match="no public download URL: pass --arcface-weights PATH"):
        fetch(W.ARCFACE_R18)


def test_weight_files_are_hashed_once_per_process_until_they_change(tmp_path, monkeypatch):
    from vqfr.metrics import weights as W
    from vqfr.utils import known_files

    calls = []
    monkeypatch.setattr(known_files, "sha256_file", lambda p: calls.append(p) or f"digest{len(calls)}")
    f = tmp_path / "w.pth"
    f.write_bytes(b"abc")
    assert W.sha256_of(f) == W.sha256_of(str(f)) == "digest1" and len(calls) == 1
    f.write_bytes(b"abcd")  # a replaced file (other size) is hashed again
    assert W.sha256_of(f) == "digest2" and len(calls) == 2
