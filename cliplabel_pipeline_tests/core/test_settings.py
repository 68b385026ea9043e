"""``Settings``: the same defaults and variables as before it had bounds, each variable read once by
``from_env``, and one line per bad value naming the variable."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
from pydantic import ValidationError
from hypothesis import given
from hypothesis import strategies as st

from cliplabel_pipeline.core.settings import ENV_VARS, BadValue, Settings, default_cache_dir

# What every setting defaulted to, and its variable, before the model had bounds: neither may change.
DEFAULTS = {
    "model": "openai/clip-vit-base-patch32", "device": "auto", "precision": "auto", "batch_size": 32, "top_k": 3,
    "min_confidence": 0.25, "min_match": 0.5, "labels": (), "labels_file": None, "templates_file": None,
    "results_root": Path("results"), "db": None, "db_wait_s": 30.0, "job_wait_s": 600.0,
    "cache_dir": default_cache_dir(), "cache_max_mb": 512.0, "settle_s": 10.0, "sensor_interval_s": 30,
    "heartbeat_s": 30.0, "backfill_cron": "0 3 * * *", "api_token": None, "public_url": None,
    "batch_wait_ms": 50.0, "max_upload_bytes": 20_000_000, "max_upload_pixels": 40_000_000,
    "max_upload_files": 256, "service_runs": "auto", "executor": "in_process",
    "broker": "redis://127.0.0.1:6379/0", "result_backend": None, "redeliver_s": 30.0,
}
VARIABLES = {name: f"CLIPLABEL_{name.upper()}" for name in DEFAULTS if name != "labels"} | {
    "cache_dir": "CLIPLABEL_CACHE"}


def from_env(**variables) -> Settings:
    """``Settings.from_env()`` with exactly these ``CLIPLABEL_*`` variables set."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("CLIPLABEL_")}
    with mock.patch.dict(os.environ, {**kept, **variables}, clear=True):
        return Settings.from_env()


def test_defaults_and_variable_names_are_unchanged():
    assert Settings().model_dump() == DEFAULTS
    assert from_env().model_dump() == DEFAULTS
    assert ENV_VARS == VARIABLES


def test_a_settings_value_never_reads_the_environment():
    with mock.patch.dict(os.environ, {"CLIPLABEL_TOP_K": "0", "CLIPLABEL_MODEL": "elsewhere"}):
        assert Settings().top_k == 3 and Settings(batch_size=4).model == DEFAULTS["model"]


@pytest.mark.parametrize("name, text, value", [
    ("top_k", "5", 5), ("min_confidence", "0.4", 0.4), ("min_match", "1", 1.0), ("batch_size", "8", 8),
    ("cache_dir", "/tmp/c", Path("/tmp/c")), ("results_root", "~/r", Path.home() / "r"),
    ("device", "cuda:1", "cuda:1"), ("executor", "celery", "celery"), ("service_runs", "local", "local"),
    ("settle_s", "0", 0.0), ("api_token", "s3cret", "s3cret"), ("db", "lineage.duckdb", Path("lineage.duckdb")),
])
def test_each_variable_sets_its_field(name, text, value):
    assert getattr(from_env(**{VARIABLES[name]: text}), name) == value


def test_empty_variables_are_ignored_and_labels_is_no_variable():
    settings = from_env(CLIPLABEL_TOP_K="", CLIPLABEL_MODEL="", CLIPLABEL_LABELS="cat,dog")
    assert (settings.top_k, settings.model, settings.labels) == (3, DEFAULTS["model"], ())


def test_the_lineage_file_and_spooling_follow_from_the_settings(tmp_path):
    assert Settings(results_root=tmp_path / "results").db_path == tmp_path / "cliplabel.duckdb"
    assert Settings(db=tmp_path / "x.duckdb").db_path == tmp_path / "x.duckdb"
    assert not Settings().spools_lineage and Settings(executor="celery").spools_lineage


@pytest.mark.parametrize("variable, text, line", [
    ("CLIPLABEL_TOP_K", "0", "CLIPLABEL_TOP_K must be between 1 and 100, got 0"),
    ("CLIPLABEL_BATCH_SIZE", "-3", "CLIPLABEL_BATCH_SIZE must be between 1 and 1024, got -3"),
    ("CLIPLABEL_MIN_CONFIDENCE", "5", "CLIPLABEL_MIN_CONFIDENCE must be between 0 and 1, got 5"),
    ("CLIPLABEL_MIN_MATCH", "nan", "CLIPLABEL_MIN_MATCH must be between 0 and 1, got nan"),
    ("CLIPLABEL_TOP_K", "many", "CLIPLABEL_TOP_K must be a number, got 'many'"),
    ("CLIPLABEL_SENSOR_INTERVAL_S", "2.5", "CLIPLABEL_SENSOR_INTERVAL_S must be a whole number, got 2.5"),
    ("CLIPLABEL_HEARTBEAT_S", "0", "CLIPLABEL_HEARTBEAT_S must be more than 0, got 0"),
    ("CLIPLABEL_DB_WAIT_S", "-1", "CLIPLABEL_DB_WAIT_S must be at least 0, got -1"),
    ("CLIPLABEL_MAX_UPLOAD_FILES", "0", "CLIPLABEL_MAX_UPLOAD_FILES must be at least 1, got 0"),
    ("CLIPLABEL_CACHE_MAX_MB", "lots", "CLIPLABEL_CACHE_MAX_MB must be a number, got 'lots'"),
    ("CLIPLABEL_DEVICE", "gpu", "CLIPLABEL_DEVICE must be auto, cpu, cuda or cuda:<n>, got 'gpu'"),
    ("CLIPLABEL_PRECISION", "fp8", "CLIPLABEL_PRECISION must be one of 'auto', 'fp32', 'bf16', 'fp16', 'int8', "
                                   "got 'fp8'"),
    ("CLIPLABEL_EXECUTOR", "Celery", "CLIPLABEL_EXECUTOR must be one of 'in_process', 'celery', got 'Celery'"),
    ("CLIPLABEL_SERVICE_RUNS", "remote", "CLIPLABEL_SERVICE_RUNS must be one of 'auto', 'dagster', 'local', "
                                         "got 'remote'"),
])
def test_a_bad_variable_is_one_line_naming_it(variable, text, line):
    with pytest.raises(BadValue) as caught:
        from_env(**{variable: text})
    assert str(caught.value) == line


def test_each_bad_variable_gets_its_own_message_on_the_one_line():
    with pytest.raises(BadValue) as caught:
        from_env(CLIPLABEL_TOP_K="0", CLIPLABEL_MIN_MATCH="2")
    assert str(caught.value) == ("CLIPLABEL_TOP_K must be between 1 and 100, got 0; "
                                 "CLIPLABEL_MIN_MATCH must be between 0 and 1, got 2")


def test_an_override_is_named_by_its_keyword_and_wins_over_the_variable():
    with mock.patch.dict(os.environ, {"CLIPLABEL_TOP_K": "0"}):
        assert Settings.from_env(top_k=4).top_k == 4
        with pytest.raises(BadValue, match="^top_k must be between 1 and 100, got -1$"):
            Settings.from_env(top_k=-1)


def test_a_copy_keeps_the_bounds():
    assert Settings().with_(top_k=7, model=None).top_k == 7
    with pytest.raises(BadValue, match="^min_confidence must be between 0 and 1, got 1.5$"):
        Settings().with_(min_confidence=1.5)
    with pytest.raises(ValidationError):  # a value made in code: pydantic's own error, as for any model
        Settings(batch_size=0)


@given(st.integers(-10**6, 10**6))
def test_top_k_from_the_environment_is_taken_exactly_from_1_to_100(k):
    try:
        assert from_env(CLIPLABEL_TOP_K=str(k)).top_k == k and 1 <= k <= 100
    except BadValue as exc:
        assert not 1 <= k <= 100 and str(exc) == f"CLIPLABEL_TOP_K must be between 1 and 100, got {k}"


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_threshold_from_the_environment_is_taken_exactly_when_in_0_1(x):
    try:
        assert from_env(CLIPLABEL_MIN_CONFIDENCE=repr(x)).min_confidence == x and 0 <= x <= 1
    except BadValue as exc:
        assert not 0 <= x <= 1 and str(exc).startswith("CLIPLABEL_MIN_CONFIDENCE must be between 0 and 1, got ")


PATH_VARIABLES = [VARIABLES[name] for name in ("results_root", "cache_dir", "db", "labels_file", "templates_file",
                                                "model", "broker")]  # a model may be a folder


@given(st.sampled_from(PATH_VARIABLES), st.text(" \t\r\n\x0b\x0c", min_size=1, max_size=6))
def test_a_path_variable_of_spaces_alone_is_refused_not_taken_as_a_folder(variable, text):
    with pytest.raises(BadValue) as caught:
        from_env(**{variable: text})
    line = str(caught.value)
    assert line.startswith(f"{variable} must not be blank, got '") and "\n" not in line


def test_a_path_with_spaces_around_a_name_is_still_that_path():
    assert from_env(CLIPLABEL_RESULTS_ROOT=" my results ").results_root == Path(" my results ")


@given(st.sampled_from(sorted(VARIABLES.values())), st.sampled_from(["lower", "title", "swapcase"]))
def test_variables_are_read_in_upper_case_only_and_another_case_is_said(variable, case):
    """``cliplabel_top_k=0`` is neither taken nor refused in the words of ``CLIPLABEL_TOP_K``: it is said to be
    ignored, naming the upper-case name."""
    from cliplabel_pipeline.core.settings import stray_variables

    spelled = getattr(variable, case)()
    assert from_env(**{spelled: "0"}).model_dump() == DEFAULTS  # "0": out of bounds for most, were it read
    assert stray_variables({spelled: "0"}) == [
        f"{spelled} is ignored: cliplabel reads its variables in upper case only; did you mean {variable}?"]


@pytest.mark.parametrize("spelled, meant", [
    ("CLIPLABEL_TOPK", "CLIPLABEL_TOP_K"), ("CLIPLABEL_RESULT_ROOT", "CLIPLABEL_RESULTS_ROOT"),
    ("CLIPLABEL_CACHE_DIR", "CLIPLABEL_CACHE"), ("CLIPLABEL_MIN_CONFIDANCE", "CLIPLABEL_MIN_CONFIDENCE"),
    ("CLIPLABEL_LABELS", "CLIPLABEL_LABELS_FILE"),  # --labels is a run's own choice, never a variable
])
def test_a_misspelled_variable_is_one_warning_naming_the_nearest_name(spelled, meant):
    from cliplabel_pipeline.core.settings import stray_variables

    assert from_env(**{spelled: "5"}).model_dump() == DEFAULTS
    assert stray_variables({spelled: "5", "CLIPLABEL_TOP_K": "4", "HOME": "/"}) == [
        f"{spelled} is ignored: it is not a cliplabel variable; did you mean {meant}?"]


def test_a_variable_like_no_setting_is_said_without_a_guess_and_known_or_empty_ones_not_at_all():
    from cliplabel_pipeline.core.settings import stray_variables

    assert stray_variables({"CLIPLABEL_ZZQX": "1"}) == ["CLIPLABEL_ZZQX is ignored: it is not a cliplabel variable"]
    assert stray_variables({**{var: "1" for var in VARIABLES.values()}, "CLIPLABEL_TOPK": ""}) == []


@given(st.text(min_size=1, max_size=12).filter(lambda t: "\x00" not in t and "=" not in t))
def test_every_stray_variable_is_one_printable_line_naming_it(rest):
    from cliplabel_pipeline.core.settings import stray_variables

    name = "CLIPLABEL_" + rest
    lines = stray_variables({name: "1"})
    if name in VARIABLES.values():
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].isprintable() and " is ignored: " in lines[0]


def test_a_stray_variable_is_said_once_per_process(monkeypatch):
    """``cliplabel serve`` reads the variables as the CLI, then as the service it starts: one warning, not two."""
    from cliplabel_pipeline.core import settings

    monkeypatch.setattr(settings, "_SAID", set())
    monkeypatch.setenv("CLIPLABEL_TOPK", "5")
    said: list[str] = []
    settings.say_stray_variables(said.append)
    settings.say_stray_variables(said.append)
    assert said == ["CLIPLABEL_TOPK is ignored: it is not a cliplabel variable; did you mean CLIPLABEL_TOP_K?"]
