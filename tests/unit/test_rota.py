"""The on-call rota: who covers an instant, when that changes, and when working hours are."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from bot.escalation.rota import OnCall, Override, Rota, RotaSettings, Shift, WorkingHours

LONDON = ZoneInfo("Europe/London")
PEOPLE = {"Asha": 5001, "Ben": 5002, "Cara": 5003}
WEEKDAYS: list[Any] = ["mon", "tue", "wed", "thu", "fri"]
EVERY_DAY: list[Any] = [*WEEKDAYS, "sat", "sun"]

TEAM_TOML = """
[rota]
timezone = "Europe/London"
bank_holidays = ["2026-12-25", "2026-12-28"]
[rota.people]
Asha = 5001
Ben = 5002
[[rota.shifts]]
days = ["mon","tue","wed","thu","fri"]
start = "08:00"
end = "20:00"
primary = "Asha"
backup = "Ben"
[[rota.shifts]]
days = ["mon","tue","wed","thu","fri"]
start = "20:00"
end = "08:00"
primary = "Ben"
backup = "Asha"
[[rota.shifts]]
days = ["sat","sun","holiday"]
start = "08:00"
end = "08:00"
primary = "Ben"
[[rota.overrides]]
date = "2026-12-25"
primary = "Asha"
backup = "Ben"
"""


def london(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LONDON)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def team() -> Rota:
    return Rota(RotaSettings.model_validate(tomllib.loads(TEAM_TOML)["rota"]))


def rota(
    shifts: list[Shift],
    overrides: list[Override] | None = None,
    bank_holidays: list[date] | None = None,
) -> Rota:
    return Rota(
        RotaSettings(
            people=PEOPLE,
            shifts=shifts,
            overrides=overrides or [],
            bank_holidays=bank_holidays or [],
        )
    )


def shift(days: list[Any], start: int, end: int, primary: str, backup: str | None = None) -> Shift:
    return Shift(days=days, start=time(start), end=time(end), primary=primary, backup=backup)


# --- configuration -----------------------------------------------------------------------------


def test_given_parsed_toml_when_validated_then_times_dates_and_people_are_typed() -> None:
    settings = RotaSettings.model_validate(tomllib.loads(TEAM_TOML)["rota"])
    assert settings.timezone == "Europe/London"
    assert settings.bank_holidays == [date(2026, 12, 25), date(2026, 12, 28)]
    assert settings.people == {"Asha": 5001, "Ben": 5002}
    assert [(s.start, s.end) for s in settings.shifts] == [
        (time(8), time(20)),
        (time(20), time(8)),
        (time(8), time(8)),
    ]
    assert settings.shifts[2].backup is None
    assert settings.overrides == [
        Override(date=date(2026, 12, 25), start=time(0), end=time(0), primary="Asha", backup="Ben")
    ]
    assert settings.working_hours == WorkingHours()


def test_given_a_shift_naming_an_unknown_person_when_validated_then_the_name_is_reported() -> None:
    raw = tomllib.loads(TEAM_TOML)["rota"]
    raw["shifts"][1]["backup"] = "Asah"
    with pytest.raises(ValidationError, match="Asah"):
        RotaSettings.model_validate(raw)


def test_given_an_override_naming_an_unknown_person_when_validated_then_it_is_rejected() -> None:
    with pytest.raises(ValidationError, match="'Dan'"):
        RotaSettings(people=PEOPLE, overrides=[Override(date=date(2026, 1, 1), primary="Dan")])


def test_given_a_name_spelled_differently_from_people_when_validated_then_it_is_rejected() -> None:
    with pytest.raises(ValidationError, match="'asha'"):
        RotaSettings(people=PEOPLE, shifts=[shift(WEEKDAYS, 9, 17, "asha")])


def test_given_people_differing_only_in_case_when_validated_then_rejected() -> None:
    with pytest.raises(ValidationError, match="differ only in case"):
        RotaSettings(people={"Asha": 1, "asha": 2})


@pytest.mark.parametrize("zone", ["Europe/Lundon", "", "Europe", "../etc/passwd"])
def test_given_an_invalid_timezone_when_validated_then_rejected(zone: str) -> None:
    with pytest.raises(ValidationError, match="unknown time zone"):
        RotaSettings(timezone=zone)


def test_given_bad_working_hours_when_validated_then_rejected() -> None:
    with pytest.raises(ValidationError, match="after start"):
        WorkingHours(start=time(17), end=time(9))
    with pytest.raises(ValidationError, match="holiday"):
        WorkingHours(days=["mon", "holiday"])


def test_given_a_time_with_an_offset_when_validated_then_rejected() -> None:
    with pytest.raises(ValidationError, match="wall-clock"):
        Shift.model_validate(
            {"days": ["mon"], "start": "09:00+01:00", "end": "17:00", "primary": "A"}
        )


# --- who is on call ----------------------------------------------------------------------------


def test_given_a_weekday_when_in_the_day_shift_then_its_people_are_on_call() -> None:
    r = team()
    assert r.on_call(london(2026, 7, 6, 8, 0)) == OnCall("Asha", "Ben")
    assert r.on_call(london(2026, 7, 6, 19, 59)) == OnCall("Asha", "Ben")


def test_given_a_night_shift_when_before_and_after_midnight_then_it_covers_both_halves() -> None:
    r = team()
    assert r.on_call(london(2026, 7, 6, 20, 0)) == OnCall("Ben", "Asha")
    assert r.on_call(london(2026, 7, 7, 3, 0)) == OnCall("Ben", "Asha")  # Tuesday early hours
    assert r.on_call(london(2026, 7, 7, 8, 0)) == OnCall("Asha", "Ben")


def test_given_friday_night_when_saturday_early_hours_then_fridays_night_shift_covers() -> None:
    """The day a shift starts on is what `days` means, so Friday's night runs into Saturday."""
    r = team()
    assert r.on_call(london(2026, 7, 11, 7, 59)) == OnCall("Ben", "Asha")
    assert r.on_call(london(2026, 7, 11, 8, 0)) == OnCall("Ben", None)


def test_given_a_weekend_24h_shift_when_any_time_saturday_to_monday_morning_then_covered() -> None:
    r = team()
    for at in (london(2026, 7, 11, 12), london(2026, 7, 12, 3), london(2026, 7, 13, 7, 59)):
        assert r.on_call(at) == OnCall("Ben", None)


def test_given_any_aware_zone_when_asked_then_converted_to_london_first() -> None:
    r = team()
    new_york = ZoneInfo("America/New_York")
    # 14:30 in New York is 19:30 in London (both on summer time): still the day shift.
    assert r.on_call(datetime(2026, 7, 6, 14, 30, tzinfo=new_york)) == OnCall("Asha", "Ben")
    assert r.on_call(utc(2026, 7, 6, 19, 0)) == OnCall("Ben", "Asha")  # 20:00 BST


def test_given_no_shift_covers_when_asked_then_nobody_is_on_call() -> None:
    r = rota([shift(WEEKDAYS, 9, 17, "Asha")])
    assert r.on_call(london(2026, 7, 6, 8, 59)) == OnCall(None, None)
    assert r.on_call(london(2026, 7, 11, 12)) == OnCall(None, None)
    assert rota([]).on_call(utc(2026, 7, 6)) == OnCall(None, None)


def test_given_overlapping_shifts_when_both_cover_then_the_first_listed_wins() -> None:
    r = rota([shift(WEEKDAYS, 9, 17, "Asha"), shift(EVERY_DAY, 0, 0, "Ben")])
    assert r.on_call(london(2026, 7, 6, 12)) == OnCall("Asha", None)
    assert r.on_call(london(2026, 7, 6, 18)) == OnCall("Ben", None)


def test_given_an_override_when_it_covers_a_shift_then_the_override_wins() -> None:
    leave = Override(date=date(2026, 7, 7), start=time(8), end=time(20), primary="Cara")
    r = rota([shift(WEEKDAYS, 8, 20, "Asha", "Ben")], overrides=[leave])
    assert r.on_call(london(2026, 7, 7, 12)) == OnCall("Cara", None)
    assert r.on_call(london(2026, 7, 6, 12)) == OnCall("Asha", "Ben")  # other days untouched


def test_given_overlapping_overrides_when_both_cover_then_the_last_listed_wins() -> None:
    whole_day = Override(date=date(2026, 7, 7), primary="Asha")
    lunch = Override(date=date(2026, 7, 7), start=time(12), end=time(14), primary="Ben")
    r = rota([], overrides=[whole_day, lunch])
    assert r.on_call(london(2026, 7, 7, 13)) == OnCall("Ben", None)
    assert r.on_call(london(2026, 7, 7, 11)) == OnCall("Asha", None)
    # The order, not the narrower window, decides.
    assert rota([], overrides=[lunch, whole_day]).on_call(london(2026, 7, 7, 13)).primary == "Asha"


def test_given_an_override_past_midnight_when_next_morning_then_it_still_covers() -> None:
    late = Override(date=date(2026, 7, 7), start=time(22), end=time(6), primary="Cara")
    r = rota([shift(EVERY_DAY, 0, 0, "Ben")], overrides=[late])
    assert r.on_call(london(2026, 7, 8, 5, 59)) == OnCall("Cara", None)
    assert r.on_call(london(2026, 7, 8, 6)) == OnCall("Ben", None)


def test_given_holiday_shifts_when_a_bank_holiday_then_only_they_start_that_day() -> None:
    r = team()
    # Monday 28 Dec: the weekday day shift (Asha) does not start; the holiday 24 h shift does.
    assert r.on_call(london(2026, 12, 28, 12)) == OnCall("Ben", None)
    assert r.on_call(london(2026, 12, 28, 21)) == OnCall("Ben", None)  # no Monday night shift
    assert r.on_call(london(2026, 12, 29, 7, 59)) == OnCall("Ben", None)
    assert r.on_call(london(2026, 12, 29, 8)) == OnCall("Asha", "Ben")


def test_given_an_override_on_a_bank_holiday_when_asked_then_the_override_covers_it() -> None:
    r = team()
    assert r.on_call(london(2026, 12, 24, 23)) == OnCall("Ben", "Asha")  # Thursday night
    assert r.on_call(london(2026, 12, 25, 3)) == OnCall("Asha", "Ben")  # override from 00:00
    assert r.on_call(london(2026, 12, 26, 3)) == OnCall("Ben", None)  # holiday shift from 08:00


def night_and_day(with_holiday_shift: bool) -> Rota:
    shifts = [shift(WEEKDAYS, 9, 17, "Asha"), shift(WEEKDAYS, 17, 9, "Ben")]
    if with_holiday_shift:
        shifts.append(shift(["holiday"], 9, 17, "Cara"))
    return rota(shifts, bank_holidays=[date(2026, 12, 25)])


def test_given_a_holiday_rota_when_the_night_before_a_bank_holiday_then_it_runs_normally() -> None:
    r = night_and_day(with_holiday_shift=True)
    assert r.on_call(london(2026, 12, 25, 3)) == OnCall("Ben", None)  # Thursday's night shift
    assert r.on_call(london(2026, 12, 25, 12)) == OnCall("Cara", None)
    assert r.on_call(london(2026, 12, 25, 18)) == OnCall(None, None)  # Friday night not rostered


def test_given_no_holiday_rota_when_a_bank_holiday_then_the_weekday_shifts_apply() -> None:
    r = night_and_day(with_holiday_shift=False)
    assert r.on_call(london(2026, 12, 25, 3)) == OnCall("Ben", None)
    assert r.on_call(london(2026, 12, 25, 12)) == OnCall("Asha", None)
    assert r.on_call(london(2026, 12, 25, 18)) == OnCall("Ben", None)


def test_given_a_naive_datetime_when_asked_then_value_error() -> None:
    r = team()
    naive = datetime(2026, 7, 6, 12)
    for call in (r.on_call, r.next_change, r.is_working_time, r.next_working_start):
        with pytest.raises(ValueError, match="timezone-aware"):
            call(naive)


# --- when it changes ---------------------------------------------------------------------------


def test_given_a_moment_inside_a_shift_when_next_change_then_the_shift_end() -> None:
    r = team()
    change = r.next_change(utc(2026, 7, 6, 18, 59))  # 19:59 BST
    assert change == london(2026, 7, 6, 20)
    assert change is not None and change.tzinfo is r.zone


def test_given_exactly_a_boundary_when_next_change_then_the_following_boundary() -> None:
    r = team()
    assert r.next_change(london(2026, 7, 6, 20)) == london(2026, 7, 7, 8)
    assert r.next_change(london(2026, 7, 10, 20)) == london(2026, 7, 11, 8)  # Fri night -> Sat


def test_given_a_handover_to_the_same_people_when_next_change_then_it_is_skipped() -> None:
    r = team()
    # Saturday 08:00 -> Sunday 08:00 -> Monday 08:00 are all Ben alone; Monday 08:00 is Asha.
    assert r.next_change(london(2026, 7, 11, 9)) == london(2026, 7, 13, 8)


def test_given_an_override_when_next_change_then_its_edges_count() -> None:
    lunch = Override(date=date(2026, 7, 7), start=time(12), end=time(14), primary="Ben")
    r = rota([shift(EVERY_DAY, 0, 0, "Asha")], overrides=[lunch])
    assert r.next_change(london(2026, 7, 6, 9)) == london(2026, 7, 7, 12)
    assert r.next_change(london(2026, 7, 7, 12)) == london(2026, 7, 7, 14)
    assert r.next_change(london(2026, 7, 7, 14)) is None


def test_given_a_247_shift_or_nobody_when_next_change_then_none() -> None:
    assert rota([shift(EVERY_DAY, 0, 0, "Asha", "Ben")]).next_change(utc(2026, 7, 6)) is None
    assert rota([]).next_change(utc(2026, 7, 6)) is None


def test_given_a_change_beyond_eight_days_when_next_change_then_none() -> None:
    far = Override(date=date(2026, 7, 20), primary="Ben")
    r = rota([shift(EVERY_DAY, 0, 0, "Asha")], overrides=[far])
    assert r.next_change(london(2026, 7, 11, 23, 59)) is None
    assert r.next_change(london(2026, 7, 12)) == london(2026, 7, 20)  # exactly 8 days is in


# --- daylight saving ---------------------------------------------------------------------------


def test_given_spring_forward_when_a_24h_sunday_shift_then_it_lasts_23_hours() -> None:
    r = rota([shift(["sun"], 0, 0, "Ben"), shift(["mon"], 0, 0, "Asha")])
    start = london(2026, 3, 29, 0)
    change = r.next_change(start)
    assert change is not None
    assert change.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=23)
    assert (change.hour, change.utcoffset()) == (0, timedelta(hours=1))
    assert r.on_call(utc(2026, 3, 29, 22, 59)) == OnCall("Ben", None)
    assert r.on_call(utc(2026, 3, 29, 23, 0)) == OnCall("Asha", None)


def test_given_fall_back_when_a_24h_sunday_shift_then_it_lasts_25_hours() -> None:
    r = rota([shift(["sun"], 0, 0, "Ben"), shift(["mon"], 0, 0, "Asha")])
    start = london(2026, 10, 25, 0)
    change = r.next_change(start)
    assert change is not None
    assert change.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=25)
    assert r.on_call(utc(2026, 10, 25, 23, 59)) == OnCall("Ben", None)
    assert r.on_call(utc(2026, 10, 26, 0, 0)) == OnCall("Asha", None)


def test_given_a_shift_starting_in_the_spring_gap_when_asked_then_it_starts_after_the_gap() -> None:
    """01:30 does not exist on 29 March; the shift starts when the clock passes it (02:30 BST)."""
    r = rota([Shift(days=["sun"], start=time(1, 30), end=time(6), primary="Cara")])
    assert r.on_call(utc(2026, 3, 29, 1, 15)) == OnCall(None, None)  # 02:15 BST
    assert r.on_call(utc(2026, 3, 29, 1, 30)) == OnCall("Cara", None)
    change = r.next_change(london(2026, 3, 29, 0))
    assert change is not None and change.astimezone(UTC) == utc(2026, 3, 29, 1, 30)


def test_given_a_shift_starting_in_the_repeated_autumn_hour_then_its_first_occurrence() -> None:
    r = rota([Shift(days=["sun"], start=time(1, 30), end=time(6), primary="Cara")])
    assert r.on_call(utc(2026, 10, 25, 0, 29)) == OnCall(None, None)  # 01:29 BST
    assert r.on_call(utc(2026, 10, 25, 0, 30)) == OnCall("Cara", None)  # first 01:30


# --- working hours -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "minute", "working"),
    [(8, 59, False), (9, 0, True), (16, 59, True), (17, 0, False)],
)
def test_given_a_weekday_when_checking_working_time_then_start_is_in_and_end_is_out(
    hour: int, minute: int, working: bool
) -> None:
    assert team().is_working_time(london(2026, 7, 6, hour, minute)) is working


def test_given_utc_input_when_checking_working_time_then_london_hours_apply() -> None:
    r = team()
    assert r.is_working_time(utc(2026, 7, 6, 8, 0))  # 09:00 BST
    assert not r.is_working_time(utc(2026, 1, 5, 8, 0))  # 08:00 GMT


def test_given_a_weekend_or_bank_holiday_when_checking_working_time_then_false() -> None:
    r = team()
    assert not r.is_working_time(london(2026, 7, 11, 12))
    assert not r.is_working_time(london(2026, 12, 28, 12))


def test_given_working_time_when_next_working_start_then_now_in_the_rota_zone() -> None:
    r = team()
    result = r.next_working_start(utc(2026, 7, 6, 10))
    assert result == london(2026, 7, 6, 11)
    assert result is not None and result.tzinfo is r.zone


def test_given_an_early_weekday_morning_when_next_working_start_then_today_at_nine() -> None:
    assert team().next_working_start(london(2026, 7, 7, 6)) == london(2026, 7, 7, 9)


def test_given_friday_evening_when_next_working_start_then_monday_nine() -> None:
    assert team().next_working_start(london(2026, 7, 10, 18)) == london(2026, 7, 13, 9)


def test_given_a_monday_bank_holiday_when_next_working_start_then_tuesday_nine() -> None:
    r = rota([], bank_holidays=[date(2026, 5, 4)])
    assert r.next_working_start(london(2026, 5, 1, 17, 30)) == london(2026, 5, 5, 9)
    # Christmas: Friday 25 and Monday 28 are both bank holidays.
    assert team().next_working_start(london(2026, 12, 24, 18)) == london(2026, 12, 29, 9)


def test_given_no_working_days_when_next_working_start_then_none() -> None:
    r = Rota(RotaSettings(working_hours=WorkingHours(days=[])))
    assert r.next_working_start(utc(2026, 7, 6, 10)) is None


# --- people ------------------------------------------------------------------------------------


def test_given_any_case_or_spacing_when_looking_up_a_person_then_found() -> None:
    r = team()
    assert r.person_id("asha ") == 5001
    assert r.person_id("  BEN") == 5002
    assert r.person_id("Dan") is None
    assert r.canonical_name("asha ") == "Asha"
    assert r.canonical_name("nobody") is None


def test_given_a_telegram_id_when_reverse_lookup_then_the_name_as_configured() -> None:
    r = team()
    assert r.name_for(5002) == "Ben"
    assert r.name_for(9999) is None
