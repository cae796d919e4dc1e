"""Config loading: every shipped server loads; every bad input names file, key and problem."""

import pytest
import yaml
from support import make_configs

from crdsops.config.loader import kinds, load_config, observatories
from crdsops.errors import CrdsOpsError

SHIPPED = [("hst", k) for k in ("django", "dev", "test", "ops")] + [
    ("jwst", k) for k in ("django", "dev", "test", "ops", "dit", "bit", "cit", "ait")
]


def test_every_server_the_seed_names_is_configured():
    assert observatories() == ["hst", "jwst"]
    assert {("hst", k) for k in kinds("hst")} | {("jwst", k) for k in kinds("jwst")} == set(SHIPPED)


@pytest.mark.parametrize("obs,kind", SHIPPED)
def test_shipped_configs_load(obs, kind):
    cfg = load_config(obs, kind)
    assert (cfg.observatory, cfg.kind) == (obs, kind)
    if kind == "django":
        assert cfg.url == "http://127.0.0.1:8000"
        assert cfg.database.engine == "sqlite" and cfg.web.server == "runserver"
        assert "var" in cfg.root.parts  # inside the checkout, ignored by git
    else:
        assert cfg.database.engine == "mysql" and cfg.web.server == "mod_wsgi"
        assert cfg.database.name == f"crds_{obs}_{kind}"
        expected = f"https://{obs}-crds.stsci.edu" if kind == "ops" else f"https://{obs}-crds-{kind}.stsci.edu"
        assert cfg.url == expected


def test_placeholders_and_relative_paths(tmp_path):
    configs = make_configs(tmp_path, {("hst", "dev"): {"root": str(tmp_path / "{observatory}/{kind}")}})
    cfg = load_config("hst", "dev", configs)
    assert cfg.root == tmp_path / "hst" / "dev"
    assert cfg.cache == cfg.root / "cache"
    assert cfg.backups.private_dir == cfg.root / "backups"


def _error(tmp_path, obs, kind, overrides) -> str:
    configs = make_configs(tmp_path, {(obs, kind): overrides})
    with pytest.raises(CrdsOpsError) as err:
        load_config(obs, kind, configs)
    return str(err.value)


def test_unknown_key_names_file_and_key(tmp_path):
    message = _error(tmp_path, "hst", "dev", {"web": {"prot": 80}})
    assert "hst/dev.yaml" in message and "unknown key web.prot" in message


def test_wrong_type_names_file_key_and_expectation(tmp_path):
    message = _error(tmp_path, "hst", "dev", {"web": {"port": "eighty"}})
    assert "hst/dev.yaml" in message and "web.port" in message and "integer" in message


def test_retention_tiers_default_to_off_and_take_counts(tmp_path):
    assert load_config("hst", "ops").backups.keep_monthly == 0  # off: the old rule, unchanged
    configs = make_configs(tmp_path, {("hst", "dev"): {"backups": {"keep_weekly": 8, "keep_monthly": 12}}})
    b = load_config("hst", "dev", configs).backups
    assert (b.keep_daily, b.keep_weekly, b.keep_monthly) == (0, 8, 12)
    message = _error(tmp_path / "bad", "hst", "dev", {"backups": {"keep_daily": -1}})
    assert "hst/dev.yaml" in message and "backups.keep_daily" in message and "non-negative integer" in message


@pytest.mark.parametrize("overrides,key", [
    ({"web": {"port": 99999}}, "web.port"),
    ({"web": {"port": 0}}, "web.port"),
    ({"database": {"port": 70000}}, "database.port"),
    ({"ssh": {"port": 0}}, "ssh.port"),
])
def test_port_out_of_range(tmp_path, overrides, key):
    message = _error(tmp_path, "hst", "dev", overrides)
    assert "hst/dev.yaml" in message and key in message and "1 to 65535" in message


def test_url_must_be_http(tmp_path):
    message = _error(tmp_path, "hst", "dev", {"url": "hst-crds-dev.stsci.edu"})
    assert "hst/dev.yaml" in message and "key url" in message and "https://" in message


def test_bad_choice(tmp_path):
    message = _error(tmp_path, "hst", "dev", {"database": {"engine": "oracle"}})
    assert "database.engine" in message and "sqlite, mysql" in message


def test_malformed_yaml_names_file(tmp_path):
    configs = make_configs(tmp_path)
    (configs / "hst" / "dev.yaml").write_text("web: [unclosed\n")
    with pytest.raises(CrdsOpsError, match=r"hst/dev.yaml.*not valid YAML"):
        load_config("hst", "dev", configs)


@pytest.mark.parametrize("obs,kind,expected", [
    ("roman", "dev", "unknown observatory 'roman'"),
    ("../x", "dev", "unknown observatory '../x'"),
    ("hst", "prod", "unknown kind 'prod'"),
    ("hst", "../../etc/passwd", "unknown kind"),
])
def test_unknown_identity(obs, kind, expected):
    with pytest.raises(CrdsOpsError, match=expected):
        load_config(obs, kind)


def test_a_new_observatory_is_config_only(tmp_path):
    configs = make_configs(tmp_path)
    (configs / "roman").mkdir()
    (configs / "roman" / "dev.yaml").write_text(yaml.safe_dump(
        {"tier": "dev", "host": "dlromancrdsdev", "url": "https://roman-crds-dev.stsci.edu"}))
    cfg = load_config("roman", "dev", configs)
    assert cfg.database.name == "crds_roman_dev" and cfg.name == "roman.dev"


# --- monitoring: -----------------------------------------------------------------------------

def test_monitoring_defaults_and_values(tmp_path):
    import datetime

    cfg = load_config("hst", "dev")
    m = cfg.monitoring
    assert m.backup_max_age == datetime.timedelta(hours=26) and m.shared_max_age == datetime.timedelta(hours=26)
    assert m.runtests_max_age is None and m.ping_url is None and m.mail_to == () and m.smtp_host is None
    configs = make_configs(tmp_path, {("hst", "dev"): {"monitoring": {
        "backup_max_age": "1d12h", "check_cache_max_age": "90m", "ping_url": "https://hc.example.org/ping/abc",
        "mail_to": "crds-ops@example.org", "smtp_host": "smtp.example.org", "smtp_port": 587}}})
    m = load_config("hst", "dev", configs).monitoring
    assert m.backup_max_age == datetime.timedelta(hours=36) and m.check_cache_max_age == datetime.timedelta(minutes=90)
    assert m.mail_to == ("crds-ops@example.org",) and m.smtp_port == 587
    shown = load_config("hst", "dev", configs).as_dict()["monitoring"]
    assert shown["backup_max_age"] == "36h" and shown["check_cache_max_age"] == "1h30m"
    assert shown["mail_to"] == ["crds-ops@example.org"]
    yaml.safe_dump(shown)  # `inv config` prints it


@pytest.mark.parametrize("monitoring, expected", [
    ({"backup_max_age": "26"}, "key monitoring.backup_max_age: expected a duration such as 26h"),
    ({"backup_max_age": 26}, "key monitoring.backup_max_age: expected a duration"),
    ({"shared_max_age": "a day"}, "key monitoring.shared_max_age: expected a duration"),
    ({"ping_url": "hc.example.org/ping/x"}, "key monitoring.ping_url: expected an http:// or https:// URL"),
    ({"mail_to": ["ops@example.org", "nobody"]}, "key monitoring.mail_to: expected a mail address"),
    ({"mail_on": "sometimes"}, "key monitoring.mail_on: expected one of failure, always"),
    ({"smtp_port": 0}, "monitoring.smtp_port"),
    ({"pager": "on"}, "unknown key monitoring.pager"),
])
def test_bad_monitoring_keys_name_the_key(tmp_path, monitoring, expected):
    message = _error(tmp_path, "hst", "dev", {"monitoring": monitoring})
    assert "hst/dev.yaml" in message and expected in message, message
