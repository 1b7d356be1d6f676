"""Size settings checked against each other and against the topics (issue 14), a dead letter
shrunk to fit, and the producer's clock never trusted for event time."""

from __future__ import annotations

import doctest

import pytest

import app.core.codec
import app.streams.agents.events
from app.core.settings import Settings, SettingsError, dead_letter_bound
from app.kafka.topics import size_problems, topic_specs


def test_a_dead_letter_bigger_than_the_producer_takes_is_refused_at_start_up() -> None:
    # Issue 14: 1,048,576 was accepted, so a 900 kB record's dead letter could not be sent.
    with pytest.raises(SettingsError, match="dead_letter_max_bytes 1048576"):
        Settings(dead_letter_max_bytes=1_048_576)
    with pytest.raises(SettingsError, match="max_event_bytes"):
        Settings(max_event_bytes=999_000)
    largest = Settings(dead_letter_max_bytes=300_000)
    assert dead_letter_bound(largest.dead_letter_max_bytes) <= largest.producer_max_message_bytes
    # A producer allowed larger records allows larger dead letters.
    Settings(dead_letter_max_bytes=1_048_576, producer_max_message_bytes=4_000_000)


def test_topics_too_small_for_the_settings_are_named() -> None:
    settings = Settings()
    limits = {
        settings.topic_dead_letters: 100_000,  # under the 64 KiB default's bound
        settings.topic_events: 1_048_588,
        settings.topic_feedback: 20_000,  # under MAX_EVENT_BYTES plus overhead
    }
    problems = size_problems(settings, limits)
    assert len(problems) == 2
    assert settings.topic_dead_letters in problems[0] and settings.topic_feedback in problems[1]
    assert size_problems(settings, {}) == []  # not readable: nothing to say


def test_the_events_topic_is_stamped_by_the_broker() -> None:
    events = next(s for s in topic_specs(Settings()) if s.name == Settings().topic_events)
    assert events.config["message.timestamp.type"] == "LogAppendTime"


@pytest.mark.parametrize("module", [app.streams.agents.events, app.core.codec])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.failed == 0 and result.attempted > 0
