"""The settings the definitions are built with, read once where they load: a bad ``CLIPLABEL_*`` variable stops
the load with the one line the CLI and the service give for it (``CLIPLABEL_TOP_K must be between 1 and 100,
got 0``), and the backfill schedule's cron is checked by Dagster's own rules.

Dagster (1.13) reports a code location that failed to load (``dg check defs``, ``dg dev``, the UI) as the
exception's class and message, then its stack trace, whatever the exception; only an error a code process has
already reported (``DagsterUserCodeProcessError``, carrying its own report) is shown as that report. So a bad
value is raised as one whose report is its line and no stack: the line is all the user reads.
"""

from __future__ import annotations

from dagster._core.errors import DagsterUserCodeProcessError
from dagster._utils.error import SerializableErrorInfo
from dagster._utils.schedules import has_out_of_range_cron_interval, is_valid_cron_string

from cliplabel_pipeline.core.settings import ENV_VARS, BadValue, Settings, bad_values, say_stray_variables


class SettingsRefused(DagsterUserCodeProcessError, BadValue):
    """Bad settings where the definitions load: ``str()`` is the one line, and Dagster shows that line alone.
    Still a ``BadValue`` for a caller that imports the definitions itself."""

    def __init__(self, line: str):
        super().__init__(line, user_code_process_error_infos=[SerializableErrorInfo(line, [], BadValue.__name__)])


def definitions_settings() -> Settings:
    """``Settings.from_env()`` for the definitions, its cron checked as Dagster will check it; else
    ``SettingsRefused`` with one line naming each bad variable. A misspelled variable is one warning line."""
    say_stray_variables()
    try:
        settings = Settings.from_env()
    except BadValue as exc:
        raise SettingsRefused(str(exc)) from None
    problem = cron_problem(settings.backfill_cron)
    if problem is not None:
        raise SettingsRefused(bad_values(Settings, [{"loc": ("backfill_cron",), "type": "cron", "msg": problem,
                                                     "input": settings.backfill_cron}], ENV_VARS))
    return settings


def cron_problem(cron: str) -> str | None:
    """What is wrong with ``cron`` as a schedule's cron string, by Dagster's own rules (``ScheduleDefinition``
    refuses what ``is_valid_cron_string`` refuses, and warns of a step past its field's range); None if nothing."""
    if not is_valid_cron_string(cron):
        return "must be a cron string of 5 fields: minute hour day-of-month month day-of-week"
    if has_out_of_range_cron_interval(cron):
        return "must step within each field's range (Dagster would run it more often than written)"
    return None
