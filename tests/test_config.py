import pytest

from siamtool.config import Config, config_from_dict, load_config
from siamtool.errors import ConfigError
from tests.conftest import REPO


def test_defaults_and_shipped_configs_load():
    assert load_config().model.backbone == "dinov3_vits16"
    for name in ("base", "cpu-small"):
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        assert cfg.data.search_size >= cfg.data.template_size


def test_yaml_then_set_override(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 0.01\n  batch_size: 8\n")
    cfg = load_config(p, ["train.lr=3e-4", "model.weights=/x/y", "train.augment.shift=2"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.batch_size == 8
    assert cfg.model.weights == "/x/y"
    assert cfg.train.augment.shift == 2.0


def test_unknown_key_names_file_and_suggests(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*train\.learning_rat"):
        load_config(p)
    p.write_text("train:\n  bach_size: 4\n")
    with pytest.raises(ConfigError, match="did you mean 'train.batch_size'"):
        load_config(p)


@pytest.mark.parametrize("override,msg", [
    ("train.batch_size=abc", "expected an integer"),
    ("train.batch_size=0", "must be > 0"),
    ("train.amp=maybe", "must be one of"),
    ("data.neg_prob=1.5", "between 0 and 1"),
    ("model.freeze_backbone=3", "true or false"),
    ("nosection.x=1", "unknown key"),
    ("train.lr", "KEY=VALUE"),
])
def test_bad_values(override, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(None, [override])


def test_bad_yaml_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  lr: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml.*line"):
        load_config(p)


def test_roundtrip_through_dict_and_file(tmp_path):
    cfg = load_config(None, ["train.lr=0.5", "model.weights=abc"])
    assert config_from_dict(cfg.to_dict()) == cfg
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert Config() != cfg
