"""A person's past conversations (bridge/core/history.py) against the fake Chatbase over
HTTP and a real Redis: listing, names, pages, cache, failures, and continuing one."""

from __future__ import annotations

from bridge.core import history
from bridge.core.history import History, ago
from bridge.core.models import Place, Platform
from tests.fakes.chatbase import Answer
from tests.fakes.harness import Harness, harness

PLACE = Place(platform=Platform.SLACK, workspace="T1", channel="D1", is_dm=True)
ALICE = "slack.T1.U1"  # the userId the bridge derives for U1 in T1 (no secret set)


def _history(h: Harness) -> History:
    return h.replicas[0].bridge.history


async def test_lists_titles_or_first_questions_newest_first_with_pages(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        f = h.fake
        f.seed_conversation(user_id=ALICE, title="Refunds", updated_at=100,
                            messages=[("user", "How do refunds work?")])
        f.seed_conversation(user_id=ALICE, title=None, updated_at=300, status="ended",
                            messages=[("user", "  What   are your\nopening hours? "),
                                      ("assistant", "9 to 5.")])
        for n in range(5):
            f.seed_conversation(user_id=ALICE, title=f"Older {n}", updated_at=10 - n)
        f.seed_conversation(user_id="slack.T1.U2", title="Bob's", updated_at=500)
        page = await _history(h).page(PLACE, "U1")
        assert page.problem is None
        assert [c.title for c in page.conversations] == [
            "What are your opening hours?", "Refunds", "Older 0", "Older 1", "Older 2"]
        assert page.conversations[0].status_line == "ended"
        assert page.conversations[1].ongoing and page.conversations[1].updated_at == 100
        assert page.cursor is not None
        more = await _history(h).page(PLACE, "U1", page.cursor)
        assert [c.title for c in more.conversations] == ["Older 3", "Older 4"]
        assert more.cursor is None


async def test_first_page_is_cached_for_everyone_on_the_redis(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix, replicas=2) as h:
        h.fake.seed_conversation(user_id=ALICE, title="Refunds")
        first = await h.replicas[0].bridge.history.page(PLACE, "U1")
        again = await h.replicas[1].bridge.history.page(PLACE, "U1")
        assert again == first
        assert len(h.fake.calls("list_user_conversations")) == 1


async def test_a_refusal_is_a_line_not_an_empty_list(redis_url: str, redis_prefix: str) -> None:
    async with harness(redis_url, redis_prefix) as h:
        h.fake.rate_limit_next(endpoint="list_user_conversations", times=500, retry_after=1)
        page = await _history(h).page(PLACE, "U1")
        assert page.problem == history.BUSY and page.conversations == ()
    async with harness(redis_url, redis_prefix) as h:
        h.fake.fail_next(500, "INTERNAL_SERVER_ERROR", endpoint="list_user_conversations",
                         times=10)
        page = await _history(h).page(PLACE, "U1")
        assert page.problem == history.UNAVAILABLE


async def test_pseudonymous_user_ids_list_the_same_person(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix, BRIDGE_USER_ID_SECRET="s3cret-value") as h:
        h.fake.script(Answer(text="Hello."))
        await h.service.handle_message(h.message("hi", user="U1", channel="D1", dm=True),
                                       h.sink())
        page = await _history(h).page(PLACE, "U1")
        assert [c.title for c in page.conversations] == ["hi"]
        assert (await _history(h).page(PLACE, "U2")).conversations == ()


async def test_continue_checks_the_owner_and_binds_the_thread(
    redis_url: str, redis_prefix: str
) -> None:
    async with harness(redis_url, redis_prefix) as h:
        old = h.fake.seed_conversation(user_id=ALICE, title="Refunds", messages=[
            ("user", "Can I get a refund?"), ("assistant", "Yes, within 30 days.")])
        ended = h.fake.seed_conversation(user_id=ALICE, title="Done", status="taken_over")
        # Someone else pressing Continue is refused.
        assert await _history(h).resume(PLACE, "U2", old.id) == history.NOT_YOURS
        assert await _history(h).resume(PLACE, "U1", ended.id) == history.ENDED.format(
            status="taken over by a person")
        assert await _history(h).resume(PLACE, "U1", "no-such") == history.GONE
        resumed = await _history(h).resume(PLACE, "U1", old.id)
        assert not isinstance(resumed, str)
        assert resumed.heading().startswith("**Continuing: Refunds**\n\n> Can I get a refund?")
        assert "Yes, within 30 days." in resumed.heading()
        # A thread in the DM bound to it: the next message there continues it.
        await h.service.adopt(PLACE, "U1", old.id)
        h.fake.script(Answer(text="Sure."))
        await h.service.handle_message(h.message("and after 30 days?", channel="D1", dm=True),
                                       h.sink())
        assert h.fake.chat_calls[-1].body["conversationId"] == old.id


def test_ago_reads_like_a_person() -> None:
    now = 1_000_000.0
    assert ago(now - 5, now) == "just now"
    assert ago(now - 60, now) == "1 minute ago"
    assert ago(now - 2 * 3600 - 10, now) == "2 hours ago"
    assert ago(now - 86_400 - 5, now) == "yesterday"
    assert ago(now - 3 * 86_400, now) == "3 days ago"
    assert ago(now - 40 * 86_400, now) == "1 month ago"
    assert ago(now + 50, now) == "just now"  # a clock a little ahead
    assert ago(None, now) == "some time ago"
