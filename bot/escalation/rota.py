"""Who is on call, and whether it is working hours, from a weekly rota in local wall-clock time.

Staff think of cover as "Ben does Friday 17:00 to Monday 09:00", so the rota is written and
evaluated in the team's wall-clock time: a 24-hour shift is 23 or 25 real hours on the days the
clocks change, and a night shift belongs to the day it starts on. The module is pure (no clock,
no I/O, no Telegram) so the escalation code can ask it about any instant and tests can pin one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]

_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Long enough to see past a weekend plus a bank holiday Monday; short enough to stay cheap.
_CHANGE_HORIZON = timedelta(days=8)
_WORKING_HORIZON_DAYS = 60


def _wall_clock(value: time) -> time:
    # An offset on a rota time would be silently dropped when the time is placed in the rota's
    # zone, so refuse it rather than page the wrong person.
    if value.tzinfo is not None:
        raise ValueError("rota times are local wall-clock times; remove the UTC offset")
    return value


WallTime = Annotated[time, AfterValidator(_wall_clock)]


class Shift(BaseModel):
    """One recurring weekly slot. `days` names the day it starts on; end <= start crosses
    midnight, and start == end is a full 24 hours."""

    days: list[Weekday]
    start: WallTime
    end: WallTime
    primary: str
    backup: str | None = None


class Override(BaseModel):
    """A one-off change for one date (bank holiday cover, leave); same time rules as Shift."""

    date: date
    start: WallTime = time(0, 0)
    end: WallTime = time(0, 0)
    primary: str
    backup: str | None = None


class WorkingHours(BaseModel):
    days: list[Weekday] = Field(default_factory=lambda: list(_WEEKDAYS[:5]))
    start: WallTime = time(9, 0)
    end: WallTime = time(17, 0)

    @field_validator("days")
    @classmethod
    def _no_holiday(cls, days: list[Weekday]) -> list[Weekday]:
        # Bank holidays are never working days; allowing "holiday" here would contradict that.
        if "holiday" in days:
            raise ValueError('"holiday" cannot be a working day; bank holidays have no hours')
        return days

    @model_validator(mode="after")
    def _end_after_start(self) -> WorkingHours:
        if self.end <= self.start:
            raise ValueError(f"working hours end ({self.end}) must be after start ({self.start})")
        return self


class RotaSettings(BaseModel):
    timezone: str = "Europe/London"
    people: dict[str, int] = Field(default_factory=dict)
    shifts: list[Shift] = Field(default_factory=list)
    overrides: list[Override] = Field(default_factory=list)
    bank_holidays: list[date] = Field(default_factory=list)
    working_hours: WorkingHours = Field(default_factory=WorkingHours)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, KeyError, OSError):  # not found, malformed key, or a directory
            raise ValueError(
                f'unknown time zone {value!r} (use an IANA name such as "Europe/London")'
            ) from None
        return value

    @model_validator(mode="after")
    def _names_are_people(self) -> RotaSettings:
        seen: dict[str, str] = {}
        for person in self.people:
            key = _name_key(person)
            if key in seen:
                # Lookups ignore case, so these two could never be told apart.
                raise ValueError(f"people {seen[key]!r} and {person!r} differ only in case/spaces")
            seen[key] = person
        slots: list[tuple[str, Shift | Override]] = [
            (f"shift {n}", shift) for n, shift in enumerate(self.shifts, start=1)
        ]
        slots += [(f"override for {o.date}", o) for o in self.overrides]
        for where, slot in slots:
            for name in (slot.primary, slot.backup):
                if name is not None and name not in self.people:
                    raise ValueError(f"{where} names {name!r}, who is not in rota.people")
        return self


@dataclass(frozen=True)
class OnCall:
    primary: str | None
    backup: str | None


_NOBODY = OnCall(None, None)


def _name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


class Rota:
    def __init__(self, settings: RotaSettings) -> None:
        self._settings = settings
        self._zone = ZoneInfo(settings.timezone)
        self._bank_holidays = frozenset(settings.bank_holidays)
        # A team without a holiday rota keeps its weekday cover on bank holidays.
        self._holiday_rota = any("holiday" in shift.days for shift in settings.shifts)
        self._names = {_name_key(name): name for name in settings.people}
        # reversed() so that, if two names share an id, the first listed wins.
        self._by_id = {uid: name for name, uid in reversed(settings.people.items())}

    @property
    def people(self) -> dict[str, int]:
        """Display name -> Telegram user id, as configured."""
        return dict(self._settings.people)

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    def on_call(self, at: datetime) -> OnCall:
        now = _to_utc(at)
        for override in reversed(self._settings.overrides):
            if _covers(self._span(override.date, override.start, override.end), now):
                return OnCall(override.primary, override.backup)
        today = now.astimezone(self._zone).date()
        # A wall-clock slot lasts at most 24 h, so only yesterday's and today's starts can cover.
        days = (today - timedelta(days=1), today)
        for shift in self._settings.shifts:
            for day in days:
                if self._starts_on(shift, day) and _covers(
                    self._span(day, shift.start, shift.end), now
                ):
                    return OnCall(shift.primary, shift.backup)
        return _NOBODY

    def next_change(self, at: datetime) -> datetime | None:
        now = _to_utc(at)
        horizon = now + _CHANGE_HORIZON
        today = now.astimezone(self._zone).date()
        spans = [self._span(o.date, o.start, o.end) for o in self._settings.overrides]
        # Yesterday's night shift may end inside the window; +9 allows for a DST hour at the end.
        for offset in range(-1, _CHANGE_HORIZON.days + 2):
            day = today + timedelta(days=offset)
            spans += [
                self._span(day, s.start, s.end)
                for s in self._settings.shifts
                if self._starts_on(s, day)
            ]
        edges = sorted({edge for span in spans for edge in span if now < edge <= horizon})
        current = self.on_call(now)
        # An edge can be hidden by a higher-priority slot or hand over to the same people, so
        # each one is checked rather than trusted.
        for edge in edges:
            if self.on_call(edge) != current:
                return edge.astimezone(self._zone)
        return None

    def is_working_time(self, at: datetime) -> bool:
        local = _to_utc(at).astimezone(self._zone)
        hours = self._settings.working_hours
        return self._is_working_day(local.date()) and hours.start <= local.time() < hours.end

    def next_working_start(self, at: datetime) -> datetime | None:
        now = _to_utc(at)
        if self.is_working_time(now):
            return now.astimezone(self._zone)
        today = now.astimezone(self._zone).date()
        start = self._settings.working_hours.start
        for offset in range(_WORKING_HORIZON_DAYS + 1):
            day = today + timedelta(days=offset)
            if self._is_working_day(day):
                begins = self._instant(day, start)
                if begins > now:
                    return begins.astimezone(self._zone)
        return None

    def person_id(self, name: str) -> int | None:
        canonical = self.canonical_name(name)
        return None if canonical is None else self._settings.people[canonical]

    def name_for(self, user_id: int) -> str | None:
        return self._by_id.get(user_id)

    def canonical_name(self, name: str) -> str | None:
        return self._names.get(_name_key(name))

    def _starts_on(self, shift: Shift, day: date) -> bool:
        if self._holiday_rota and day in self._bank_holidays:
            return "holiday" in shift.days
        return _WEEKDAYS[day.weekday()] in shift.days

    def _is_working_day(self, day: date) -> bool:
        hours = self._settings.working_hours
        return _WEEKDAYS[day.weekday()] in hours.days and day not in self._bank_holidays

    def _instant(self, day: date, at: time) -> datetime:
        # fold=0 (unless the time says otherwise): an ambiguous time means its first occurrence,
        # and a non-existent one is read with the old offset, landing just after the gap.
        # Everything is compared in UTC because aware datetimes sharing a tzinfo compare by
        # wall clock, which is wrong across a DST change.
        return datetime.combine(day, at, tzinfo=self._zone).astimezone(UTC)

    def _span(self, day: date, start: time, end: time) -> tuple[datetime, datetime]:
        end_day = day + timedelta(days=1) if end <= start else day
        return self._instant(day, start), self._instant(end_day, end)


def _to_utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"need a timezone-aware datetime, got naive {at.isoformat()}")
    return at.astimezone(UTC)


def _covers(span: tuple[datetime, datetime], instant: datetime) -> bool:
    return span[0] <= instant < span[1]
