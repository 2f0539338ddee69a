"""Message, Metadata and Error: seed 004's Message API sentence by sentence, then the rest.

The first section has one test per sentence of the ``Message`` reference (seed 004); each
docstring quotes the sentence it checks. Times come from a fake clock, so every number is exact.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import linecache
import math
import warnings
from collections.abc import Callable, Iterator
from enum import IntEnum

import numpy as np
import pytest

import fedbus
from fedbus.errors import (
    FedbusError,
    InvalidArgumentError,
    InvalidTypeError,
    MessageFieldError,
)
from fedbus.message import (
    DEFAULT_TTL,
    UNSET_NODE_ID,
    ArrayRecord,
    ConfigRecord,
    Error,
    ErrorCode,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
    mark_sent,
    now,
    use_clock,
)

NEW_FORM = "Message(content, dst_node_id, message_type, *, ttl=None, group_id=None)"
REPLY_FORM = "Message(content, *, reply_to=msg, ttl=None)"
ERROR_REPLY_FORM = "Message(error, *, reply_to=msg, ttl=None)"
HANDLER_FORM = "Message(sender=..., receiver=..., msg_type=..., content=...)"


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, time: float) -> None:
        self.time = time

    def __call__(self) -> float:
        return self.time


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    fake = FakeClock(100.0)
    with use_clock(fake):
        yield fake


@pytest.fixture
def content() -> RecordDict:
    return RecordDict(
        {
            "model": ArrayRecord([np.arange(4, dtype=np.float32)]),
            "config": ConfigRecord({"lr": 0.1, "epochs": 2}),
        }
    )


def sent(message: Message, *, src: int = 0, message_id: str = "m-1", run_id: int = 7) -> Message:
    """``message`` as a runtime leaves it after sending it."""
    mark_sent(message, run_id=run_id, message_id=message_id, src_node_id=src)
    return message


# --- Seed 004, sentence by sentence --------------------------------------------------------------


def test_message_has_three_constructor_forms(clock: FakeClock, content: RecordDict) -> None:
    """class Message(content, dst_node_id, message_type, *, ttl, group_id);
    class Message(content, *, reply_to, ttl); class Message(error, *, reply_to, ttl)"""
    ask = Message(content, 3, "train", ttl=60.0, group_id="1")
    reply = Message(RecordDict(), reply_to=ask, ttl=30.0)
    error_reply = Message(Error(ErrorCode.UNKNOWN), reply_to=ask, ttl=30.0)
    assert ask.has_content()
    assert reply.has_content()
    assert error_reply.has_error()
    assert (ask.metadata.dst_node_id, ask.metadata.message_type) == (3, "train")
    assert (ask.metadata.ttl, ask.metadata.group_id) == (60.0, "1")
    assert reply.metadata.ttl == error_reply.metadata.ttl == 30.0


def test_message_constructor_takes_ttl_group_id_and_reply_to_by_keyword_only() -> None:
    """``*`` in the three signatures: ttl, group_id and reply_to are keyword-only."""
    parameters = inspect.signature(Message.__init__).parameters
    for name in ("ttl", "group_id", "reply_to"):
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(parameters)[1:4] == ["content", "dst_node_id", "message_type"]


def test_message_bases_is_object() -> None:
    """Bases: object"""
    assert Message.__bases__ == (object,)


def test_message_is_exchanged_between_two_nodes(clock: FakeClock, content: RecordDict) -> None:
    """Represents a message exchanged between ClientApp and ServerApp."""
    instruction = sent(Message(content, 5, "train"), src=0)
    answer = sent(instruction.create_reply(RecordDict()), src=5, message_id="m-2")
    assert (instruction.metadata.src_node_id, instruction.metadata.dst_node_id) == (0, 5)
    assert (answer.metadata.src_node_id, answer.metadata.dst_node_id) == (5, 0)


def test_message_encapsulates_payload_and_metadata(clock: FakeClock, content: RecordDict) -> None:
    """This class encapsulates the payload and metadata necessary for communication between a
    ClientApp and a ServerApp."""
    message = Message(content, 2, "train")
    assert message.content is content
    assert isinstance(message.metadata, Metadata)
    assert message.metadata.dst_node_id == 2


def test_content_holds_the_records_to_send(clock: FakeClock, content: RecordDict) -> None:
    """content - Holds records either sent by another entity (...) or that will be sent to it."""
    message = Message(content, 2, "train")
    assert message.content is content  # held, not copied
    assert message.content["config"]["lr"] == 0.1


def test_error_is_a_dataclass_about_processing_another_message(clock: FakeClock) -> None:
    """error - A dataclass that captures information about an error that took place when
    processing another message."""
    assert dataclasses.is_dataclass(Error)
    assert [field.name for field in dataclasses.fields(Error)] == ["code", "reason"]
    ask = Message(RecordDict(), 1, "train")
    failure = Message(Error(ErrorCode.HANDLER_EXCEPTION, "boom"), reply_to=ask)
    assert failure.error == Error(2, "boom")
    with pytest.raises(InvalidTypeError, match=r"Message\(error, \*, reply_to=msg"):
        Message(Error(ErrorCode.HANDLER_EXCEPTION, "boom"), 1, "train")


def test_dst_node_id_identifies_the_receiving_node(clock: FakeClock) -> None:
    """dst_node_id - An identifier for the node receiving this message."""
    message = Message(RecordDict(), 42, "train")
    assert message.metadata.dst_node_id == 42


def test_message_type_encodes_the_action_on_the_receiving_end(clock: FakeClock) -> None:
    """message_type - A string that encodes the action to be executed on the receiving end."""
    message = Message(RecordDict(), 1, "evaluate")
    assert message.metadata.message_type == "evaluate"


def test_ttl_is_the_time_to_live_in_seconds(clock: FakeClock) -> None:
    """ttl - Time-to-live (TTL) for this message in seconds."""
    message = Message(RecordDict(), 1, "train", ttl=90)
    assert message.metadata.ttl == 90.0
    assert isinstance(message.metadata.ttl, float)
    assert message.metadata.expires_at == 190.0


def test_ttl_defaults_to_43200_seconds(clock: FakeClock) -> None:
    """If None (default), the TTL is set to 43,200 seconds (12 hours)."""
    assert Message(RecordDict(), 1, "train").metadata.ttl == 43200.0
    assert Message(RecordDict(), 1, "train", ttl=None).metadata.ttl == 43200.0
    assert DEFAULT_TTL == 43200.0 == 12 * 3600


def test_group_id_groups_messages(clock: FakeClock) -> None:
    """group_id - An identifier for grouping messages."""
    first = Message(RecordDict(), 1, "train", group_id="round-3")
    second = Message(RecordDict(), 2, "train", group_id="round-3")
    assert first.metadata.group_id == second.metadata.group_id == "round-3"
    assert Message(RecordDict(), 1, "train").metadata.group_id == ""


def test_group_id_can_be_the_fl_round_and_replies_keep_it(clock: FakeClock) -> None:
    """In some settings, this is used as the FL round."""
    ask = Message(RecordDict(), 1, "train", group_id="3")
    assert ask.create_reply(RecordDict()).metadata.group_id == "3"
    assert ask.create_error_reply(Error(0)).metadata.group_id == "3"


def test_reply_to_names_the_instruction_message(clock: FakeClock) -> None:
    """reply_to - The instruction message to which this message is a reply."""
    ask = sent(Message(RecordDict(), 1, "train"), message_id="ask-9")
    reply = Message(RecordDict(), reply_to=ask)
    assert reply.metadata.reply_to_message_id == "ask-9"


def test_reply_does_not_retain_the_original_content(clock: FakeClock, content: RecordDict) -> None:
    """This message does not retain the original message's content but derives its metadata
    from it."""
    ask = sent(Message(content, 1, "train", group_id="4"), src=0, run_id=3)
    reply = Message(RecordDict(), reply_to=ask)
    assert reply.content == RecordDict()
    assert reply.content is not ask.content
    assert (reply.metadata.run_id, reply.metadata.group_id) == (3, "4")
    assert (reply.metadata.src_node_id, reply.metadata.dst_node_id) == (1, 0)
    assert reply.metadata.message_type == "train"


def test_create_error_reply_constructs_a_reply_indicating_an_error(clock: FakeClock) -> None:
    """create_error_reply(error[, ttl]) - Construct a reply message indicating an error
    happened."""
    ask = sent(Message(RecordDict(), 1, "train"))
    reply = ask.create_error_reply(Error(ErrorCode.HANDLER_EXCEPTION, "ZeroDivisionError"))
    assert reply.has_error()
    assert not reply.has_content()
    assert reply.metadata.reply_to_message_id == "m-1"


def test_create_reply_creates_a_reply_with_content_and_ttl(clock: FakeClock) -> None:
    """create_reply(content[, ttl]) - Create a reply to this message with specified content
    and TTL."""
    ask = sent(Message(RecordDict(), 1, "train"))
    answer = RecordDict({"metrics": MetricRecord({"loss": 0.5})})
    reply = ask.create_reply(answer, ttl=15.0)
    assert reply.content is answer
    assert reply.metadata.ttl == 15.0


def test_has_content_returns_true_if_message_has_content(clock: FakeClock) -> None:
    """has_content() - Return True if message has content, else False."""
    ask = Message(RecordDict(), 1, "train")
    assert ask.has_content() is True
    assert ask.create_error_reply(Error(0)).has_content() is False


def test_has_error_returns_true_if_message_has_an_error(clock: FakeClock) -> None:
    """has_error() - Return True if message has an error, else False."""
    ask = Message(RecordDict(), 1, "train")
    assert ask.has_error() is False
    assert ask.create_error_reply(Error(0)).has_error() is True


def test_content_property_is_the_content_of_this_message(clock: FakeClock) -> None:
    """property content: RecordDict - The content of this message."""
    assert isinstance(inspect.getattr_static(Message, "content"), property)
    records = RecordDict({"m": MetricRecord({"acc": 0.75})})
    assert Message(records, 1, "evaluate").content is records


def test_error_property_is_the_error_captured_by_this_message(clock: FakeClock) -> None:
    """property error: Error - Error captured by this message."""
    assert isinstance(inspect.getattr_static(Message, "error"), property)
    failure = Error(ErrorCode.NODE_UNAVAILABLE, "client 4 dropped out")
    reply = Message(RecordDict(), 1, "train").create_error_reply(failure)
    assert reply.error is failure


def test_metadata_property_is_a_dataclass_about_the_message(clock: FakeClock) -> None:
    """property metadata: Metadata - A dataclass including information about the message to be
    executed."""
    assert isinstance(inspect.getattr_static(Message, "metadata"), property)
    metadata = Message(RecordDict(), 1, "train").metadata
    assert dataclasses.is_dataclass(metadata)
    assert metadata.message_type == "train"


def test_create_error_reply_error_is_the_error_encountered(clock: FakeClock) -> None:
    """error (Error) - The error that was encountered."""
    failure = Error(ErrorCode.UNKNOWN_MESSAGE_TYPE, "no handler for 'train'")
    reply = Message(RecordDict(), 1, "train").create_error_reply(failure)
    assert reply.error == failure


def test_create_error_reply_ttl_is_seconds_to_live(clock: FakeClock) -> None:
    """ttl (Optional[float]) - Time-to-live for this message in seconds."""
    reply = Message(RecordDict(), 1, "train").create_error_reply(Error(0), ttl=12.5)
    assert reply.metadata.ttl == 12.5


def test_create_error_reply_unset_ttl_is_the_remaining_time(clock: FakeClock) -> None:
    """If unset, it will be set based on the remaining time for the received message before it
    expires. This follows the equation: ttl = msg.meta.ttl - (reply.meta.created_at -
    msg.meta.created_at)"""
    ask = Message(RecordDict(), 1, "train", ttl=50.0)
    clock.time = 130.0
    reply = ask.create_error_reply(Error(ErrorCode.HANDLER_EXCEPTION))
    assert reply.metadata.created_at == 130.0
    assert reply.metadata.ttl == 50.0 - (130.0 - 100.0) == 20.0


def test_create_error_reply_returns_only_the_error_and_metadata(clock: FakeClock) -> None:
    """Returns: message - A Message containing only the relevant error and metadata."""
    ask = Message(RecordDict({"m": MetricRecord({"loss": 1.0})}), 1, "train")
    reply = ask.create_error_reply(Error(ErrorCode.UNKNOWN, "x"))
    assert isinstance(reply, Message)
    assert reply.has_error()
    assert not reply.has_content()
    with pytest.raises(MessageFieldError):
        reply.content  # noqa: B018


def test_create_reply_generates_a_new_message_as_a_reply(clock: FakeClock) -> None:
    """The method generates a new Message as a reply to this message."""
    ask = sent(Message(RecordDict(), 1, "train"), message_id="q")
    reply = ask.create_reply(RecordDict())
    assert isinstance(reply, Message)
    assert reply is not ask
    assert reply.metadata.reply_to_message_id == "q"


def test_create_reply_inherits_run_id_node_ids_and_message_type(clock: FakeClock) -> None:
    """It inherits 'run_id', 'src_node_id', 'dst_node_id', and 'message_type' from this message
    and sets 'reply_to_message_id' to the ID of this message.

    The node ids are inherited swapped: the reply goes back to the sender.
    """
    ask = sent(Message(RecordDict(), 9, "fit"), src=1, message_id="id-5", run_id=44)
    meta = ask.create_reply(RecordDict()).metadata
    assert meta.run_id == 44
    assert (meta.src_node_id, meta.dst_node_id) == (9, 1)
    assert meta.message_type == "fit"
    assert meta.reply_to_message_id == "id-5"


def test_create_reply_content_is_the_reply_content(clock: FakeClock) -> None:
    """content (RecordDict) - The content for the reply message."""
    answer = RecordDict({"c": ConfigRecord({"done": True})})
    assert Message(RecordDict(), 1, "t").create_reply(answer).content is answer


def test_create_reply_unset_ttl_is_the_remaining_time(clock: FakeClock) -> None:
    """If unset, it will be set based on the remaining time for the received message before it
    expires. This follows the equation: ttl = msg.meta.ttl - (reply.meta.created_at -
    msg.meta.created_at)"""
    ask = Message(RecordDict(), 1, "train", ttl=50.0)
    clock.time = 130.0
    assert ask.create_reply(RecordDict()).metadata.ttl == 20.0


def test_create_reply_returns_a_new_message_instance(clock: FakeClock) -> None:
    """Returns: A new Message instance representing the reply."""
    ask = Message(RecordDict(), 1, "train")
    first, second = ask.create_reply(RecordDict()), ask.create_reply(RecordDict())
    assert type(first) is Message
    assert first is not second


# --- Reply metadata and TTL under a fake clock ---------------------------------------------------


def test_reply_metadata_is_exact(clock: FakeClock) -> None:
    ask = sent(Message(RecordDict(), 7, "train", ttl=50.0, group_id="3"), src=0, run_id=11)
    clock.time = 130.0
    reply = ask.create_reply(RecordDict())
    assert reply.metadata == Metadata(
        run_id=11,
        message_id="",
        src_node_id=7,
        dst_node_id=0,
        reply_to_message_id="m-1",
        group_id="3",
        created_at=130.0,
        ttl=20.0,
        message_type="train",
    )


def test_error_reply_metadata_matches_a_content_reply(clock: FakeClock) -> None:
    ask = sent(Message(RecordDict(), 7, "train", ttl=50.0, group_id="3"), src=0, run_id=11)
    clock.time = 130.0
    content_reply = ask.create_reply(RecordDict())
    error_reply = ask.create_error_reply(Error(ErrorCode.HANDLER_EXCEPTION, "boom"))
    assert error_reply.metadata == content_reply.metadata
    assert error_reply.error == Error(ErrorCode.HANDLER_EXCEPTION, "boom")


def test_reply_to_an_expired_message_gets_a_negative_ttl(clock: FakeClock) -> None:
    ask = Message(RecordDict(), 1, "train", ttl=50.0)
    clock.time = 200.0
    reply = ask.create_reply(RecordDict())
    error_reply = ask.create_error_reply(Error(ErrorCode.MESSAGE_EXPIRED))
    assert reply.metadata.ttl == -50.0
    assert error_reply.metadata.ttl == -50.0
    assert reply.metadata.ttl != DEFAULT_TTL


def test_reply_exactly_at_expiry_gets_ttl_zero(clock: FakeClock) -> None:
    ask = Message(RecordDict(), 1, "train", ttl=50.0)
    clock.time = 150.0
    assert ask.create_reply(RecordDict()).metadata.ttl == 0.0


def test_explicit_reply_ttl_within_the_time_left_is_kept_without_a_warning(
    clock: FakeClock,
) -> None:
    ask = Message(RecordDict(), 1, "train", ttl=50.0)
    clock.time = 130.0  # 20 s left
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ask.create_reply(RecordDict(), ttl=5.0).metadata.ttl == 5.0
        assert Message(RecordDict(), reply_to=ask, ttl=20).metadata.ttl == 20.0  # exactly


def test_error_reply_keeps_an_explicit_ttl_past_its_request(clock: FakeClock) -> None:
    """An error reply may report that its request expired: its ttl is not capped."""
    ask = Message(RecordDict(), 1, "train", ttl=50.0)
    clock.time = 200.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ask.create_error_reply(Error(0), ttl=DEFAULT_TTL).metadata.ttl == 43200.0
        assert Message(Error(3), reply_to=ask, ttl=60.0).metadata.ttl == 60.0


def test_reply_to_a_reply_gets_what_the_reply_has_left(clock: FakeClock) -> None:
    ask = Message(RecordDict(), 1, "train", ttl=100.0)
    clock.time = 110.0
    reply = ask.create_reply(RecordDict())  # ttl 90, created at 110
    clock.time = 150.0
    assert reply.create_reply(RecordDict()).metadata.ttl == 50.0


def test_reply_from_the_constructor_equals_create_reply(clock: FakeClock) -> None:
    ask = sent(Message(RecordDict(), 4, "train", ttl=50.0))
    clock.time = 120.0
    answer = RecordDict()
    assert Message(answer, reply_to=ask) == ask.create_reply(answer)
    failure = Error(5, "bad bytes")
    assert Message(failure, reply_to=ask) == ask.create_error_reply(failure)
    assert Message(error=failure, reply_to=ask) == ask.create_error_reply(failure)


# --- A reply's explicit TTL is capped to what its request has left -------------------------------


def test_explicit_reply_ttl_is_capped_to_the_time_the_request_has_left(clock: FakeClock) -> None:
    ask = Message(RecordDict(), 1, "train", ttl=50.0)  # created at 100, expires at 150
    clock.time = 130.0  # 20 s left: 50 - (130 - 100)
    with pytest.warns(UserWarning, match="capped") as caught:
        reply = Message(RecordDict(), reply_to=ask, ttl=30)
    assert reply.metadata.ttl == 20.0
    assert reply.metadata.expires_at == ask.metadata.expires_at == 150.0
    assert len(caught) == 1
    assert str(caught[0].message) == (
        "Message: reply ttl=30.0 capped to 20.0 s: a reply must not outlive the message it "
        "answers, which has 20.0 s left (ttl 50.0 s, created 30.0 s before the reply). "
        "Leave ttl unset to get the time left without a warning"
    )


def test_capped_reply_ttl_equals_the_ttl_of_a_reply_without_one(clock: FakeClock) -> None:
    ask = sent(Message(RecordDict(), 1, "train", ttl=7.25))
    clock.time = 103.5
    with pytest.warns(UserWarning, match="capped"):
        capped = ask.create_reply(RecordDict(), ttl=DEFAULT_TTL)
    assert capped.metadata == ask.create_reply(RecordDict()).metadata
    assert capped.metadata.ttl == 7.25 - (103.5 - 100.0)


def test_ttl_capped_warning_points_at_the_callers_line(clock: FakeClock) -> None:
    ask = Message(RecordDict(), 1, "train", ttl=50.0)
    clock.time = 130.0
    with pytest.warns(UserWarning, match="capped") as through_create_reply:
        ask.create_reply(RecordDict(), ttl=30.0)  # one frame deeper than Message(...)
    with pytest.warns(UserWarning, match="capped") as through_constructor:
        Message(RecordDict(), reply_to=ask, ttl=30.0)
    for caught, call in [
        (through_create_reply, "ask.create_reply(RecordDict(), ttl=30.0)"),
        (through_constructor, "Message(RecordDict(), reply_to=ask, ttl=30.0)"),
    ]:
        assert caught[0].filename == __file__
        assert linecache.getline(caught[0].filename, caught[0].lineno).strip().startswith(call)


def test_explicit_reply_ttl_to_an_expired_request_is_capped_to_the_negative_time_left(
    clock: FakeClock,
) -> None:
    ask = Message(RecordDict(), 1, "train", ttl=50.0)
    clock.time = 200.0
    with pytest.warns(UserWarning, match="capped") as caught:
        reply = ask.create_reply(RecordDict(), ttl=5.0)
    assert reply.metadata.ttl == -50.0  # built, and refused when sent, like a reply without ttl
    assert str(caught[0].message) == (
        "Message: reply ttl=5.0 capped to -50.0 s: a reply must not outlive the message it "
        "answers, which expired 50.0 s ago (ttl 50.0 s, created 100.0 s before the reply): the "
        "reply will be refused when sent. Leave ttl unset to get the time left without a warning"
    )


def test_capped_reply_to_a_reply_gets_what_that_reply_has_left(clock: FakeClock) -> None:
    ask = Message(RecordDict(), 1, "train", ttl=100.0)
    clock.time = 110.0
    reply = ask.create_reply(RecordDict())  # ttl 90, created at 110: expires at 200
    clock.time = 150.0
    with pytest.warns(UserWarning, match="which has 50.0 s left"):
        assert reply.create_reply(RecordDict(), ttl=80.0).metadata.ttl == 50.0


def test_explicit_reply_ttl_is_still_checked_before_it_is_capped(clock: FakeClock) -> None:
    ask = Message(RecordDict(), 1, "train", ttl=50.0)
    with pytest.raises(InvalidArgumentError, match="ttl must be a finite number of seconds > 0"):
        ask.create_reply(RecordDict(), ttl=math.inf)
    with pytest.raises(InvalidTypeError, match="ttl must be a number of seconds"):
        Message(RecordDict(), reply_to=ask, ttl="30")  # type: ignore[call-overload]


# --- created_at, message_id and mark_sent --------------------------------------------------------


def test_created_at_is_stamped_from_the_installed_clock(clock: FakeClock) -> None:
    clock.time = 12.5
    assert Message(RecordDict(), 1, "train").metadata.created_at == 12.5


def test_created_at_is_a_float_even_from_an_int_clock() -> None:
    with use_clock(lambda: 7):
        created_at = Message(RecordDict(), 1, "train").metadata.created_at
    assert created_at == 7.0
    assert type(created_at) is float


def test_created_at_never_changes_after_construction(clock: FakeClock) -> None:
    message = Message(RecordDict(), 1, "train")
    clock.time = 500.0
    sent(message)
    assert message.metadata.created_at == 100.0
    assert message.metadata.ttl == DEFAULT_TTL


def test_use_clock_restores_the_previous_clock() -> None:
    outer, inner = FakeClock(1.0), FakeClock(2.0)
    with use_clock(outer):
        with use_clock(inner):
            assert now() == 2.0
        assert now() == 1.0
    assert abs(now() - Message(RecordDict(), 1, "t").metadata.created_at) < 3600.0


def test_use_clock_refuses_what_is_not_a_clock() -> None:
    with pytest.raises(InvalidTypeError, match="expected a function returning seconds, got float"):
        use_clock(12.5).__enter__()


def test_message_id_is_empty_until_sent(clock: FakeClock) -> None:
    message = Message(RecordDict(), 1, "train")
    assert message.metadata.message_id == ""
    assert message.metadata.run_id == 0
    assert message.metadata.src_node_id == UNSET_NODE_ID == -1
    assert message.metadata.reply_to_message_id == ""


def test_mark_sent_fills_run_id_message_id_and_src_node_id_only(clock: FakeClock) -> None:
    message = Message(RecordDict(), 3, "train", ttl=60.0, group_id="2")
    before = message.metadata
    mark_sent(message, run_id=5, message_id="abc", src_node_id=0)
    after = message.metadata
    assert (after.run_id, after.message_id, after.src_node_id) == (5, "abc", 0)
    assert after == dataclasses.replace(before, run_id=5, message_id="abc", src_node_id=0)


# --- Refused combinations ------------------------------------------------------------------------


@pytest.fixture
def ask() -> Message:
    with use_clock(FakeClock(0.0)):
        return Message(RecordDict(), 1, "train")


def _refusals() -> list[tuple[str, Callable[[Message], object], type[Exception], str]]:
    records, failure = RecordDict(), Error(ErrorCode.UNKNOWN)
    return [
        # (id, build, builtin error class, form the message must name)
        (
            "content-and-error",
            lambda m: Message(records, 1, "t", error=failure),
            TypeError,
            REPLY_FORM,
        ),
        (
            "content-and-error-reply",
            lambda m: Message(records, error=failure, reply_to=m),
            TypeError,
            ERROR_REPLY_FORM,
        ),
        (
            "error-given-twice",
            lambda m: Message(failure, error=failure, reply_to=m),
            TypeError,
            ERROR_REPLY_FORM,
        ),
        (
            "error-without-reply-to",
            lambda m: Message(failure, 1, "t"),
            TypeError,
            ERROR_REPLY_FORM,
        ),
        (
            "error-keyword-without-reply-to",
            lambda m: Message(error=failure),
            TypeError,
            ERROR_REPLY_FORM,
        ),
        (
            "reply-to-with-dst-node-id",
            lambda m: Message(records, 3, reply_to=m),
            TypeError,
            REPLY_FORM,
        ),
        (
            "reply-to-with-message-type",
            lambda m: Message(records, message_type="t", reply_to=m),
            TypeError,
            REPLY_FORM,
        ),
        (
            "reply-to-with-group-id",
            lambda m: Message(records, group_id="2", reply_to=m),
            TypeError,
            REPLY_FORM,
        ),
        (
            "error-reply-with-dst-node-id",
            lambda m: Message(failure, 3, reply_to=m),
            TypeError,
            ERROR_REPLY_FORM,
        ),
        (
            "reply-without-content-or-error",
            lambda m: Message(reply_to=m),
            TypeError,
            REPLY_FORM,
        ),
        ("reply-to-not-a-message", lambda m: Message(records, reply_to=3), TypeError, REPLY_FORM),
        ("missing-message-type", lambda m: Message(records, 3), TypeError, NEW_FORM),
        (
            "missing-dst-node-id",
            lambda m: Message(records, message_type="t"),
            TypeError,
            NEW_FORM,
        ),
        ("missing-everything", lambda m: Message(), TypeError, NEW_FORM),
        ("content-a-dict", lambda m: Message({"a": 1}, 3, "t"), TypeError, NEW_FORM),
        (
            "content-a-metric-record",
            lambda m: Message(MetricRecord({"a": 1}), 3, "t"),
            TypeError,
            NEW_FORM,
        ),
        (
            "reply-content-a-dict",
            lambda m: Message({"a": 1}, reply_to=m),
            TypeError,
            REPLY_FORM,
        ),
        (
            "error-reply-error-a-str",
            lambda m: Message(error="boom", reply_to=m),
            TypeError,
            ERROR_REPLY_FORM,
        ),
        ("ttl-zero", lambda m: Message(records, 1, "t", ttl=0), ValueError, NEW_FORM),
        ("ttl-negative", lambda m: Message(records, 1, "t", ttl=-1.0), ValueError, NEW_FORM),
        ("ttl-nan", lambda m: Message(records, 1, "t", ttl=math.nan), ValueError, NEW_FORM),
        ("ttl-infinite", lambda m: Message(records, 1, "t", ttl=math.inf), ValueError, NEW_FORM),
        ("ttl-a-str", lambda m: Message(records, 1, "t", ttl="60"), TypeError, NEW_FORM),
        ("ttl-a-bool", lambda m: Message(records, 1, "t", ttl=True), TypeError, NEW_FORM),
        ("reply-ttl-zero", lambda m: Message(records, reply_to=m, ttl=0.0), ValueError, REPLY_FORM),
        (
            "error-reply-ttl-negative",
            lambda m: Message(failure, reply_to=m, ttl=-5.0),
            ValueError,
            ERROR_REPLY_FORM,
        ),
        ("create-reply-ttl-zero", lambda m: m.create_reply(records, ttl=0), ValueError, REPLY_FORM),
        (
            "create-error-reply-ttl-negative",
            lambda m: m.create_error_reply(failure, ttl=-1),
            ValueError,
            ERROR_REPLY_FORM,
        ),
        ("dst-node-id-negative", lambda m: Message(records, -1, "t"), ValueError, NEW_FORM),
        ("dst-node-id-too-big", lambda m: Message(records, 2**63, "t"), ValueError, NEW_FORM),
        ("dst-node-id-a-str", lambda m: Message(records, "1", "t"), TypeError, NEW_FORM),
        ("dst-node-id-a-bool", lambda m: Message(records, True, "t"), TypeError, NEW_FORM),
        ("group-id-an-int", lambda m: Message(records, 1, "t", group_id=3), TypeError, NEW_FORM),
        ("message-type-an-int", lambda m: Message(records, 1, 5), TypeError, NEW_FORM),
        (
            "handler-style-with-dst-node-id",
            lambda m: Message(records, 2, sender=1, receiver=2, msg_type="t"),
            TypeError,
            HANDLER_FORM,
        ),
        (
            "handler-style-with-reply-to",
            lambda m: Message(content=records, receiver=2, msg_type="t", reply_to=m),
            TypeError,
            HANDLER_FORM,
        ),
        (
            "handler-style-with-message-type",
            lambda m: Message(content=records, receiver=2, message_type="t"),
            TypeError,
            HANDLER_FORM,
        ),
        (
            "handler-style-content-and-payload",
            lambda m: Message(receiver=2, msg_type="t", content=records, payload=records),
            TypeError,
            HANDLER_FORM,
        ),
        (
            "handler-style-with-error",
            lambda m: Message(receiver=2, msg_type="t", error=failure),
            TypeError,
            HANDLER_FORM,
        ),
        (
            "handler-style-missing-receiver",
            lambda m: Message(sender=1, msg_type="t", content=records),
            TypeError,
            HANDLER_FORM,
        ),
        (
            "handler-style-missing-msg-type",
            lambda m: Message(sender=1, receiver=2, content=records),
            TypeError,
            HANDLER_FORM,
        ),
        (
            "handler-style-missing-content",
            lambda m: Message(sender=1, receiver=2, msg_type="t"),
            TypeError,
            HANDLER_FORM,
        ),
        (
            "handler-style-payload-a-list",
            lambda m: Message(receiver=2, msg_type="t", payload=[1.0]),
            TypeError,
            HANDLER_FORM,
        ),
        (
            "handler-style-sender-negative",
            lambda m: Message(sender=-3, receiver=2, msg_type="t", content=records),
            ValueError,
            HANDLER_FORM,
        ),
        (
            "handler-style-bad-msg-type",
            lambda m: Message(receiver=2, msg_type="a b", content=records),
            ValueError,
            HANDLER_FORM,
        ),
    ]


@pytest.mark.parametrize(
    ("build", "builtin", "form"),
    [pytest.param(build, builtin, form, id=name) for name, build, builtin, form in _refusals()],
)
def test_refused_combination_raises_a_fedbus_error_naming_the_form(
    ask: Message, build: Callable[[Message], object], builtin: type[Exception], form: str
) -> None:
    with pytest.raises(FedbusError) as caught:
        build(ask)
    assert isinstance(caught.value, builtin)
    assert form in str(caught.value)


def test_missing_message_type_names_both_new_and_reply_forms() -> None:
    with pytest.raises(InvalidTypeError) as caught:
        Message(RecordDict(), 3)
    assert "missing message_type" in str(caught.value)
    assert NEW_FORM in str(caught.value)
    assert REPLY_FORM in str(caught.value)


def test_missing_arguments_are_all_named() -> None:
    with pytest.raises(InvalidTypeError, match="missing content, dst_node_id, message_type"):
        Message()


# --- Seed 000's spelling -------------------------------------------------------------------------


def test_handler_style_builds_the_same_message_apart_from_the_sender(
    clock: FakeClock, content: RecordDict
) -> None:
    handler_style = Message(sender=4, receiver=0, msg_type="gradients", content=content)
    standard = Message(content, dst_node_id=0, message_type="gradients")
    assert handler_style.metadata == dataclasses.replace(standard.metadata, src_node_id=4)
    assert handler_style.content is content
    assert handler_style != standard
    mark_sent(standard, run_id=0, message_id="", src_node_id=4)
    assert handler_style == standard


def test_handler_style_accepts_payload_for_content(clock: FakeClock, content: RecordDict) -> None:
    with_payload = Message(sender=0, receiver=1, msg_type="gradients", payload=content)
    with_content = Message(sender=0, receiver=1, msg_type="gradients", content=content)
    assert with_payload == with_content
    assert with_payload.content is content


def test_handler_style_takes_ttl_and_group_id(clock: FakeClock) -> None:
    message = Message(
        sender=0, receiver=1, msg_type="train", content=RecordDict(), ttl=30.0, group_id="2"
    )
    assert (message.metadata.ttl, message.metadata.group_id) == (30.0, "2")


def test_handler_style_without_sender_leaves_it_for_the_runtime(clock: FakeClock) -> None:
    message = Message(receiver=1, msg_type="train", content=RecordDict())
    assert message.sender == UNSET_NODE_ID


def test_handler_style_message_is_read_as_in_the_seed(clock: FakeClock) -> None:
    """``sender, model_gradients = message.sender, message.content`` in a handler."""
    gradients = RecordDict({"g": ArrayRecord([np.ones(3, np.float32)])})
    message = Message(sender=0, receiver=5, msg_type="gradients", content=gradients)
    sender, model_gradients = message.sender, message.content
    assert sender == 0
    assert model_gradients is gradients
    assert (message.receiver, message.msg_type) == (5, "gradients")
    reply = Message(
        sender=message.receiver, receiver=sender, msg_type="updated_model", content=gradients
    )
    assert (reply.sender, reply.receiver, reply.msg_type) == (5, 0, "updated_model")


# --- Aliases and immutability --------------------------------------------------------------------


def test_aliases_read_the_metadata(clock: FakeClock) -> None:
    message = sent(Message(RecordDict(), 8, "fit"), src=2)
    assert message.sender == message.metadata.src_node_id == 2
    assert message.receiver == message.metadata.dst_node_id == 8
    assert message.msg_type == message.metadata.message_type == "fit"


@pytest.mark.parametrize("name", ["sender", "receiver", "msg_type", "metadata", "content", "error"])
def test_message_attributes_are_read_only(clock: FakeClock, name: str) -> None:
    message = Message(RecordDict(), 8, "fit")
    with pytest.raises(AttributeError):
        setattr(message, name, 1)
    assert message.metadata.dst_node_id == 8


def test_message_takes_no_new_attributes(clock: FakeClock) -> None:
    message = Message(RecordDict(), 8, "fit")
    with pytest.raises(AttributeError):
        message.extra = 1


@pytest.mark.parametrize("field", [field.name for field in dataclasses.fields(Metadata)])
def test_metadata_fields_cannot_be_changed(clock: FakeClock, field: str) -> None:
    metadata = Message(RecordDict(), 8, "fit").metadata
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(metadata, field, getattr(metadata, field))


def test_metadata_is_a_declarative_type_with_the_seed_fields() -> None:
    assert dataclasses.is_dataclass(Metadata)
    assert [field.name for field in dataclasses.fields(Metadata)] == [
        "run_id",
        "message_id",
        "src_node_id",
        "dst_node_id",
        "reply_to_message_id",
        "group_id",
        "created_at",
        "ttl",
        "message_type",
    ]
    assert not hasattr(Metadata(0, "", 0, 1, "", "", 0.0, 1.0, "t"), "__dict__")  # slots


def test_metadata_is_hashable_and_compares_by_value() -> None:
    first = Metadata(1, "a", 0, 1, "", "", 2.0, 3.0, "t")
    second = Metadata(1, "a", 0, 1, "", "", 2.0, 3.0, "t")
    assert first == second
    assert hash(first) == hash(second)
    assert first != dataclasses.replace(second, ttl=4.0)


# --- content / error access ----------------------------------------------------------------------


def test_reading_content_of_an_error_message_raises_a_clear_error(clock: FakeClock) -> None:
    reply = Message(RecordDict(), 1, "t").create_error_reply(Error(ErrorCode.UNKNOWN, "x"))
    with pytest.raises(MessageFieldError, match="carries an error, not content") as caught:
        reply.content  # noqa: B018
    assert isinstance(caught.value, AttributeError | FedbusError)
    assert "has_content()" in str(caught.value)


def test_reading_error_of_a_content_message_raises_a_clear_error(clock: FakeClock) -> None:
    message = Message(RecordDict(), 1, "t")
    with pytest.raises(MessageFieldError, match="carries content, not an error") as caught:
        message.error  # noqa: B018
    assert isinstance(caught.value, AttributeError)
    assert isinstance(caught.value, FedbusError)
    assert "has_error()" in str(caught.value)


# --- message_type validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "message_type", ["t", "train", "fit.v2", "secagg-round_1", "A" * 128, "0123456789"]
)
def test_valid_message_types_are_accepted(clock: FakeClock, message_type: str) -> None:
    assert Message(RecordDict(), 1, message_type).msg_type == message_type


@pytest.mark.parametrize(
    "message_type", ["", "A" * 129, "a b", "train\n", "tr/ain", "é", "train!", "a:b", "\x00"]
)
def test_invalid_message_types_are_refused(clock: FakeClock, message_type: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Message(RecordDict(), 1, message_type)
    assert isinstance(caught.value, ValueError)
    assert "1 to 128 characters from A-Z a-z 0-9 _ . -" in str(caught.value)
    assert repr(message_type) in str(caught.value)


def test_message_type_of_the_wrong_type_is_refused(clock: FakeClock) -> None:
    with pytest.raises(InvalidTypeError, match="message_type must be str, got bytes"):
        Message(RecordDict(), 1, b"train")


# --- Error and ErrorCode -------------------------------------------------------------------------


def test_error_code_values_are_stable() -> None:
    assert issubclass(ErrorCode, IntEnum)
    assert {code.name: code.value for code in ErrorCode} == {
        "UNKNOWN": 0,
        "UNKNOWN_MESSAGE_TYPE": 1,
        "HANDLER_EXCEPTION": 2,
        "MESSAGE_EXPIRED": 3,
        "NODE_UNAVAILABLE": 4,
        "DECODE_ERROR": 5,
        "UNAUTHENTICATED": 6,
        "MESSAGE_TOO_LARGE": 7,
        "PERMISSION_DENIED": 8,
        "RESOURCE_EXHAUSTED": 9,
    }


def test_error_reason_defaults_to_none() -> None:
    assert Error(ErrorCode.UNKNOWN).reason is None
    assert Error(code=3, reason="late").reason == "late"


def test_error_with_error_code_equals_error_with_the_same_int() -> None:
    assert Error(ErrorCode.MESSAGE_EXPIRED) == Error(3)
    assert Error(ErrorCode.MESSAGE_EXPIRED, "late") == Error(3, "late")
    assert hash(Error(ErrorCode.MESSAGE_EXPIRED, "x")) == hash(Error(3, "x"))
    assert Error(ErrorCode.MESSAGE_EXPIRED) != Error(ErrorCode.MESSAGE_EXPIRED, "late")
    assert Error(3) != Error(4)


def test_error_accepts_user_codes() -> None:
    error = Error(1042, "custom")
    assert error.code == 1042
    assert repr(error) == "Error(code=1042, reason='custom')"
    assert repr(Error(ErrorCode.MESSAGE_EXPIRED)) == "Error(code=3 (MESSAGE_EXPIRED), reason=None)"
    assert Error(-7).code == -7


@pytest.mark.parametrize(
    ("code", "reason", "builtin", "text"),
    [
        (True, None, TypeError, "code must be int, got bool"),
        (1.0, None, TypeError, "code must be int, got float"),
        ("3", None, TypeError, "code must be int, got str"),
        (2**63, None, ValueError, "does not fit in 64 bits"),
        (0, 5, TypeError, "reason must be str or None, got int"),
    ],
)
def test_error_refuses_bad_fields(
    code: object, reason: object, builtin: type[Exception], text: str
) -> None:
    with pytest.raises(FedbusError, match=text) as caught:
        Error(code, reason)
    assert isinstance(caught.value, builtin)


def test_error_is_immutable() -> None:
    error = Error(1, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        error.code = 2


# --- Equality, copies, repr ----------------------------------------------------------------------


def test_messages_compare_by_metadata_and_content(clock: FakeClock) -> None:
    first = Message(RecordDict({"c": ConfigRecord({"a": 1})}), 1, "t")
    second = Message(RecordDict({"c": ConfigRecord({"a": 1})}), 1, "t")
    assert first == second
    assert first != Message(RecordDict({"c": ConfigRecord({"a": 2})}), 1, "t")
    assert first != Message(RecordDict({"c": ConfigRecord({"a": 1})}), 2, "t")
    clock.time = 101.0
    assert first != Message(RecordDict({"c": ConfigRecord({"a": 1})}), 1, "t")
    assert first != "not a message"


def test_messages_are_not_hashable(clock: FakeClock) -> None:
    with pytest.raises(TypeError):
        hash(Message(RecordDict(), 1, "t"))


def test_deepcopy_of_a_message_is_equal_and_independent(
    clock: FakeClock, content: RecordDict
) -> None:
    message = Message(content, 1, "t")
    clone = copy.deepcopy(message)
    assert clone == message
    assert clone.content is not message.content
    assert not np.shares_memory(
        clone.content["model"]["0"].numpy(), message.content["model"]["0"].numpy()
    )


def test_message_repr_is_short(clock: FakeClock) -> None:
    big = RecordDict({"model": ArrayRecord({"w": np.full(1000, 0.5, dtype=np.float32)})})
    text = repr(Message(big, 3, "train", group_id="1"))
    assert "'train'" in text
    assert "-1 -> 3" in text
    assert "(1000,)" in text
    assert "0.5" not in text
    assert len(text) < 200
    error_text = repr(Message(big, 3, "train").create_error_reply(Error(2, "boom")))
    assert "Error(code=2 (HANDLER_EXCEPTION), reason='boom')" in error_text


def test_message_in_public_namespace_is_this_one() -> None:
    assert fedbus.Message is Message
    assert fedbus.Metadata is Metadata
    assert fedbus.Error is Error
    assert fedbus.ErrorCode is ErrorCode
