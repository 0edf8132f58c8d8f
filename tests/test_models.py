import pytest
import timm
import torch

import jocor_plugin  # noqa: F401  (registers the paper's models)
from jocor_plugin.core.errors import ModelError
from jocor_plugin.models import create_backbone, create_pair


@pytest.mark.parametrize("name, in_chans, size", [("jocor_mlp", 1, 28), ("jocor_cnn", 3, 32),
                                                   ("jocor_cnn", 1, 28), ("resnet10t", 3, 32)])
def test_registered_and_timm_models_build_and_run(name, in_chans, size):
    model = timm.create_model(name, num_classes=7, in_chans=in_chans,
                              **({"img_size": size} if name.startswith("jocor") else {}))
    assert model(torch.randn(2, in_chans, size, size)).shape == (2, 7)
    assert model.get_classifier().out_features == 7


def test_paper_cnn_matches_table_7():
    model = timm.create_model("jocor_cnn", num_classes=100)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 196, 16]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 6
    assert model.head.in_features == 256 and model.head.out_features == 100
    mlp = timm.create_model("jocor_mlp", num_classes=10)
    assert mlp.fc1.in_features == 784 and mlp.fc1.out_features == 256


def test_registered_models_have_a_data_config():
    cfg = timm.data.resolve_data_config({}, model=timm.create_model("jocor_cnn"))
    assert cfg["input_size"] == (3, 32, 32) and tuple(cfg["mean"]) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("name", ["jocor_mlp", "jocor_cnn", "resnet10t"])
def test_pair_networks_start_different_and_forward_both(name):
    pair = create_pair(name, num_classes=10, in_chans=1 if name == "jocor_mlp" else 3, seed=0)
    a = dict(pair.net_a.named_parameters())
    b = dict(pair.net_b.named_parameters())
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].dim() > 1)
    x = torch.randn(2, 1, 28, 28) if name == "jocor_mlp" else torch.randn(2, 3, 32, 32)
    logits_a, logits_b = pair(x)
    assert logits_a.shape == logits_b.shape == (2, 10)
    assert not torch.allclose(logits_a, logits_b)


def test_pair_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    p1, p2 = create_pair("jocor_mlp", num_classes=10, in_chans=1, seed=4), create_pair(
        "jocor_mlp", num_classes=10, in_chans=1, seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(p1.net_b.fc1.weight, p2.net_b.fc1.weight)


def test_single_network_pair_has_no_second_network():
    pair = create_pair("jocor_mlp", num_classes=10, in_chans=1, num_networks=1)
    assert pair.net_b is None and len(pair.networks) == 1
    assert pair(torch.randn(3, 1, 28, 28))[1] is None


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ModelError, match="resnet18"):
        create_backbone("resnet81", num_classes=10, in_chans=3)


def test_missing_pretrained_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        create_backbone("resnet10t", num_classes=10, in_chans=3, pretrained_file=str(tmp_path / "w.safetensors"))


def test_pretrained_from_the_hub_offline_says_how_to_fix():
    with pytest.raises(ModelError, match="model.pretrained_file"):
        create_backbone("resnet10t", num_classes=10, in_chans=3, pretrained=True)


def test_a_local_dir_model_name_builds_from_its_folder_and_a_bad_one_is_one_line(tmp_path):
    """``model.name=local-dir:PATH`` (a timm folder, as ``save_for_hf`` writes it) passes the name
    check and builds the folder's architecture, with its weights when pretrained; a folder that holds
    no timm model is a ModelError that says what the folder needs."""
    from timm.models import save_for_hf

    saved = timm.create_model("jocor_mlp", num_classes=3)
    save_for_hf(saved, tmp_path / "mlp")
    loaded = create_backbone(f"local-dir:{tmp_path / 'mlp'}", num_classes=3, in_chans=1, pretrained=True)
    assert type(loaded) is type(saved)
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), loaded.state_dict().values()))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="local-dir: folder needs the config.json and weights"):
        create_backbone(f"local-dir:{tmp_path / 'empty'}", num_classes=3, in_chans=1)
