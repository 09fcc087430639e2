import pytest

from siamtool.config import ADDED_LATER, Config, config_from_dict, load_config
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


@pytest.mark.parametrize("text,line,key", [
    ("train:\n  lr: 1.0e-3\n  lr: 5.0\n", 3, "lr"),
    ("train:\n  lr: 1.0e-3\ndata:\n  context: 0.5\ntrain:\n  epochs: 2\n", 5, "train"),
])
def test_a_key_given_twice_is_refused_with_file_and_line(tmp_path, text, line, key):
    """Issue #23: PyYAML keeps the last value silently (a second `train:` drops the first section)."""
    p = tmp_path / "dup.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=rf"dup\.yaml:{line}: key '{key}' is given twice"):
        load_config(p)


def test_a_binary_file_is_a_config_error_not_a_unicode_error(tmp_path):
    p = tmp_path / "photo.yaml"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match=r"photo\.yaml: not a text file"):
        load_config(p)


@pytest.mark.parametrize("override", [
    "data.context=1e9", "data.context=.nan", "train.lr=.nan", "train.lr=.inf", "track.size_lr=-.inf",
    "train.epochs=99999999999", "data.search_margin=1e6", "track.max_growth=1e12", "data.template_size=100000",
])
def test_nan_inf_and_huge_numbers_are_refused_naming_the_key(override):
    """Issue #23: NaN passed every `<=` check (all comparisons are false) and 1e9 passed `>= 0`; both then
    crashed with exit 1 in OpenCV or the optimizer."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key.replace('.', r'.')} must be"):
        load_config(None, [override])


def test_a_set_key_of_a_section_the_command_does_not_read_is_refused():
    with pytest.raises(ConfigError, match=r"--set train\.lr=5: prepare does not use train\.\*"):
        load_config(None, ["train.lr=5"], sections=("data",), command="prepare")
    cfg = load_config(REPO / "configs" / "base.yaml", ["data.context=0.4"], sections=("data",), command="prepare")
    assert cfg.data.context == pytest.approx(0.4)  # the file's other sections are fine: one YAML per experiment


@pytest.mark.parametrize(("section", "key"), sorted(ADDED_LATER))
def test_keys_added_later_are_left_out_of_the_dict_only_while_inert(section, key):
    """Eval results, feature caches and exports hash `Config.to_dict`: a key added later must not change
    the fingerprints of what was made before it, and must appear as soon as it changes anything."""
    cfg = Config()
    assert getattr(getattr(cfg, section), key) == ADDED_LATER[section, key]  # the default is the inert value
    assert key not in cfg.to_dict()[section]
    active = {"sources": ["lasot:/data/LaSOT"], "camera_motion": True, "online_upsample_limit": 2.5}[key]
    cfg = config_from_dict({section: {key: active}})
    assert key in cfg.to_dict()[section] and cfg.to_dict()[section][key] != ADDED_LATER[section, key]
