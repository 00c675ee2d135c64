"""Call-back scheduling: the time a lead asks to be called back, as a dialer can use it.

The lead's words ("tomorrow at 3pm", "Friday afternoon") are read by `parsedatetime` in
the lead's time zone, which comes from the phone number where it has exactly one
(a US area code does; a toll-free or fictional number does not), else from the setting.
A time is usable only with an hour, or a part of the day; "next week" alone is not.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import parsedatetime
import phonenumbers
from phonenumbers import timezone as phone_timezones

from salesagent.sales.call_state import FollowUp

_CALENDAR = parsedatetime.Calendar(version=parsedatetime.VERSION_CONTEXT_STYLE)
# parsedatetime reads "morning" as 6:00; nobody wants a sales call then.
_EARLIEST_HOUR = 9


def lead_timezone(phone_number: str, default: str) -> tuple[str, bool]:
    """The lead's IANA time zone and whether it came from the number."""
    try:
        zones = phone_timezones.time_zones_for_number(phonenumbers.parse(phone_number))
    except phonenumbers.NumberParseException:
        zones = ()
    if len(zones) == 1 and zones[0] != "Etc/Unknown":
        return zones[0], True
    return default, False


# "at 10", "around 3:30", "at 4 o'clock": parsedatetime reads no hour from a bare number.
_BARE_HOUR = re.compile(
    r"\b(at|around|about|after|by) (\d{1,2})(?::(\d{2}))?(?: ?o'?clock)?\b(?!:| ?[ap]\.?m\b)",
    re.I,
)
_LATER_HALF = re.compile(r"\b(?:afternoon|evening|night|tonight)\b", re.I)


def _with_half_of_day(line: str) -> str:
    """A bare hour made explicit, as a call-back means it: in the half of the day the line
    names, else 8 to 11 in the morning and 12 to 7 in the afternoon or evening."""

    def explicit(match: re.Match) -> str:
        word, hour, minutes = match.group(1), int(match.group(2)), match.group(3) or "00"
        if not 1 <= hour <= 12:
            return match.group(0)
        later = _LATER_HALF.search(line) or ("morning" not in line.lower() and not 8 <= hour < 12)
        return f"{word} {hour}:{minutes} {'pm' if later else 'am'}"

    return _BARE_HOUR.sub(explicit, line)


def call_back_time(line: str, now: datetime) -> datetime | None:
    """The time `line` asks to be called back at, in `now`'s zone, or None without one."""
    when, context = _CALENDAR.parseDT(_with_half_of_day(line), sourceTime=now, tzinfo=now.tzinfo)
    if not context.hasTime:
        return None
    if context.accuracy & context.ACU_HALFDAY and not context.accuracy & context.ACU_HOUR:
        when = when.replace(hour=max(when.hour, _EARLIEST_HOUR))
    if when <= now:  # "at 9" said at 10: the next 9 o'clock
        when += timedelta(days=1)
    return when.replace(second=0, microsecond=0)


def follow_up_for(
    line: str, phone_number: str, default_timezone: str, now: datetime | None = None
) -> FollowUp | None:
    """The follow-up a lead's line books, or None when it names no usable time."""
    zone, from_number = lead_timezone(phone_number, default_timezone)
    local_now = (now or datetime.now(ZoneInfo("UTC"))).astimezone(ZoneInfo(zone))
    when = call_back_time(line, local_now)
    if when is None:
        return None
    return FollowUp(
        at=when.isoformat(),
        timezone=zone,
        timezone_from="phone_number" if from_number else "default",
        said=line,
    )


def spoken(follow_up: FollowUp, now: datetime | None = None) -> str:
    """How the agent says the booked time: "tomorrow at 3 PM", "on Friday at 10:30 AM"."""
    when = datetime.fromisoformat(follow_up.at)
    today = (now or datetime.now(when.tzinfo)).astimezone(when.tzinfo).date()
    clock = when.strftime("%I:%M %p").lstrip("0").replace(":00", "")
    days = (when.date() - today).days
    day = {0: "today", 1: "tomorrow"}.get(days) or when.strftime(
        "on %A" if days < 7 else "on %A, %B %d"
    )
    return f"{day} at {clock}"
