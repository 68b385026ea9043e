"""The same bound, the same words, on every face: a per-call setting given as a variable, a CLI option, an HTTP
parameter, Dagster run config or in code is taken or refused alike, and a refusal names the value as the user
gave it (``CLIPLABEL_TOP_K``, ``--top-k``, ``top_k``)."""

from __future__ import annotations

import contextlib
import io
import math
import os
from unittest import mock

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.requests import Request

from cliplabel_pipeline.cli.parser import build_parser
from cliplabel_pipeline.core.settings import ENV_VARS, BadValue, Settings, bad_values
from cliplabel_pipeline.core.values import LabelSettings
from cliplabel_pipeline.defs.assets.common import LabelingConfig
from cliplabel_pipeline.defs.jobs import CleanupConfig
from cliplabel_pipeline.service.errors import ApiError
from cliplabel_pipeline.core.settings import MAX_BATCH_SIZE, MAX_TOP_K
from cliplabel_pipeline.service.params import label_options

FLAGS = {"top_k": "--top-k", "batch_size": "--batch-size", "min_confidence": "--min-confidence",
         "min_match": "--min-match"}
HTTP = ("top_k", "min_confidence", "min_match")  # batch_size is the server's, not a request's


def env_face(field: str, text: str) -> str | None:
    """None when taken, else the one line."""
    with mock.patch.dict(os.environ, {ENV_VARS[field]: text}):
        try:
            Settings.from_env()
        except BadValue as exc:
            return str(exc)
    return None


def cli_face(field: str, text: str) -> str | None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            build_parser(Settings()).parse_args(["classify", "x.png", f"{FLAGS[field]}={text}"])
        except SystemExit as exc:
            assert exc.code == 2  # a usage error
            return err.getvalue().strip().splitlines()[-1]
    return None


def http_face(field: str, text: str) -> str | None:
    request = Request({"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": []})
    try:
        label_options(request, Settings(), **{field: text})
    except ApiError as exc:
        assert exc.status == 422
        return exc.detail
    return None


def dagster_face(field: str, value) -> str | None:
    config = CleanupConfig if field in ("min_confidence", "min_match") else LabelingConfig
    try:
        (config(job_id="j", **{field: value}) if config is CleanupConfig else config(**{field: value}))
    except dg.Failure as exc:
        return exc.description
    return None


def in_code(field: str, value) -> str | None:
    try:
        LabelSettings(**{field: value})
    except ValidationError as exc:
        return bad_values(LabelSettings, exc)
    return None


def reason(line: str | None, name: str) -> str | None:
    """What a line says about the value, once the name the user typed is taken off."""
    if line is None:
        return None
    assert line.startswith(name + " "), (line, name)
    return line[len(name) + 1:]


def same_number(got: str, value) -> bool:
    if got == "nan":
        return math.isnan(value)
    if isinstance(value, int) and got.lstrip("-").isdigit():  # exactly: 10**18 + 1 is not a float
        return int(got) == value
    return float(got) == value


def check_every_face(field: str, value, text: str) -> str | None:
    """The reason every face gives for ``value`` (``text`` where it is typed), asserting they agree."""
    said = {
        "env": reason(env_face(field, text), ENV_VARS[field]),
        "cli": reason(cli_face(field, text), f"cliplabel classify: error: argument {FLAGS[field]}:"),
        "dagster": reason(dagster_face(field, value), f"run config: {field}"),
        "code": reason(in_code(field, value), field),
    }
    assert len({None if line is None else line.rsplit(", got ", 1)[0] for line in said.values()}) == 1, said
    for line in said.values():  # each says what it was given: the text as typed, the number as sent
        assert line is None or same_number(line.rsplit(", got ", 1)[1], value), said
    return said["dagster"]


@given(st.one_of(st.integers(-10**9, 10**9), st.integers(1, 2 * MAX_BATCH_SIZE), st.sampled_from([0, 1, 1024, 1025])))
def test_batch_sizes_are_taken_from_1_to_1024_and_refused_outside_alike_on_every_face(k):
    """Past 1024 a short batch padded to the size would ask the allocator for terabytes: refused on every face."""
    said = check_every_face("batch_size", k, str(k))
    assert said == (None if 1 <= k <= MAX_BATCH_SIZE else f"must be between 1 and {MAX_BATCH_SIZE}, got {k}")


@given(st.one_of(st.integers(-10**9, 10**9), st.integers(10**18, 10**30), st.sampled_from([0, 1, 100, 101])))
def test_top_k_is_taken_from_1_to_100_and_refused_outside_alike_on_every_face(k):
    """Past 100 (an answer's size), not a crash where the run is recorded (DuckDB's INTEGER), on no face."""
    said = check_every_face("top_k", k, str(k))
    assert said == (None if 1 <= k <= MAX_TOP_K else f"must be between 1 and {MAX_TOP_K}, got {k}")


@given(st.sampled_from(["min_confidence", "min_match"]),
       st.one_of(st.floats(-2, 3), st.sampled_from([0.0, 1.0, math.nan, math.inf, -math.inf, 1e-300, 1 + 1e-15])))
def test_thresholds_are_taken_within_0_1_and_refused_outside_alike_on_every_face(field, x):
    said = check_every_face(field, x, repr(x))
    assert (said is None) == (0 <= x <= 1)
    if said is not None:
        assert said.startswith("must be between 0 and 1, got ")
        assert http_face(field, repr(x)) == f"{field} {reason(env_face(field, repr(x)), ENV_VARS[field])}"
    else:
        assert http_face(field, repr(x)) is None


@given(st.integers(-10**6, 10**6))
def test_a_requests_top_k_keeps_the_bound_and_the_services_own_limit(k):
    detail = http_face("top_k", str(k))
    assert detail == (None if 1 <= k <= MAX_TOP_K else f"top_k must be between 1 and {MAX_TOP_K}, got {k}")


@pytest.mark.parametrize("field, text, said", [
    ("top_k", "many", "must be a number, got 'many'"),
    ("top_k", "2.5", "must be a whole number, got 2.5"),
    ("batch_size", "1e3", "must be a whole number, got 1e3"),
    ("min_confidence", "half", "must be a number, got 'half'"),
    ("min_match", "0,5", "must be a number, got '0,5'"),
])
def test_text_that_is_no_number_is_refused_alike_where_text_is_typed(field, text, said):
    assert reason(env_face(field, text), ENV_VARS[field]) == said
    assert reason(cli_face(field, text), f"cliplabel classify: error: argument {FLAGS[field]}:") == said
    if field in HTTP:
        assert reason(http_face(field, text), field) == said


@pytest.mark.parametrize("option, text, said", [
    ("--device", "gpu", "must be auto, cpu, cuda or cuda:<n>, got 'gpu'"),
    ("--precision", "fp8", "must be one of 'auto', 'fp32', 'bf16', 'fp16', 'int8', got 'fp8'"),
])
def test_choices_are_the_settings_own_on_the_cli_and_in_the_environment(option, text, said):
    field = option[2:]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        build_parser(Settings()).parse_args(["classify", "x.png", option, text])
    assert err.getvalue().strip().splitlines()[-1] == f"cliplabel classify: error: argument {option}: {said}"
    assert env_face(field, text) == f"{ENV_VARS[field]} {said}"


def test_a_bad_variable_stops_the_cli_with_one_line_before_it_parses(capsys):
    from cliplabel_pipeline.cli import main

    with mock.patch.dict(os.environ, {"CLIPLABEL_TOP_K": "0"}):
        assert main(["classify", "x.png"]) == 2
    assert capsys.readouterr().err == "cliplabel: error: CLIPLABEL_TOP_K must be between 1 and 100, got 0\n"


def test_a_bad_variable_stops_the_service_before_it_starts():
    from cliplabel_pipeline.service.app import create_app

    with mock.patch.dict(os.environ, {"CLIPLABEL_SERVICE_RUNS": "remote"}), pytest.raises(BadValue) as caught:
        create_app()
    assert str(caught.value) == "CLIPLABEL_SERVICE_RUNS must be one of 'auto', 'dagster', 'local', got 'remote'"


def test_a_bad_variable_stops_the_dagster_definitions_loading_with_the_same_line():
    from cliplabel_pipeline.defs.loading import definitions_settings

    with mock.patch.dict(os.environ, {"CLIPLABEL_TOP_K": "0"}), pytest.raises(BadValue) as caught:
        definitions_settings()
    assert str(caught.value) == "CLIPLABEL_TOP_K must be between 1 and 100, got 0"


@given(st.sampled_from(["results_root", "db", "cache_dir", "labels_file", "templates_file"]),
       st.text(" \t\r\n", min_size=1, max_size=4))
def test_a_path_variable_of_spaces_alone_is_refused_alike_on_every_face(field, text):
    """Not a folder named by spaces under the working folder: the CLI, the service and Dagster's definitions each
    stop at their start with the same line."""
    from cliplabel_pipeline.cli import main
    from cliplabel_pipeline.defs.loading import definitions_settings
    from cliplabel_pipeline.service.app import create_app

    line = f"{ENV_VARS[field]} must not be blank, got {text!r}"
    with mock.patch.dict(os.environ, {ENV_VARS[field]: text}):
        for start in (Settings.from_env, create_app, definitions_settings):
            with pytest.raises(BadValue) as caught:
                start()
            assert str(caught.value) == line, start
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(["job", "job-1", "--results-root", "r"]) == 2
    assert err.getvalue().splitlines()[-1] == f"cliplabel: error: {line}"


def test_a_misspelled_variable_is_one_warning_line_where_each_face_starts(monkeypatch):
    """Said once by the CLI, by the service and by Dagster's definitions as each starts (and once per process:
    ``cliplabel serve`` is the CLI, then the service); the face then starts as if it were not set."""
    from cliplabel_pipeline.cli import main
    from cliplabel_pipeline.core import settings
    from cliplabel_pipeline.defs.loading import definitions_settings
    from cliplabel_pipeline.service.app import create_app

    line = ("cliplabel: warning: CLIPLABEL_MIN_CONFIDANCE is ignored: it is not a cliplabel variable; did you mean "
            "CLIPLABEL_MIN_CONFIDENCE?")
    monkeypatch.setenv("CLIPLABEL_MIN_CONFIDANCE", "0.9")
    for start in (lambda: main(["classify"]), create_app, definitions_settings):
        monkeypatch.setattr(settings, "_SAID", set())
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            for _ in range(2):
                with contextlib.suppress(SystemExit):  # classify with no path: a usage error, after the warning
                    start()
        assert err.getvalue().splitlines().count(line) == 1, err.getvalue()
    assert definitions_settings().min_confidence == Settings().min_confidence
