import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from agents.models import Message, Session
from tests.factories import AgentFactory, SessionFactory, UserFactory

SESSIONS = "/api/v1/sessions/"


def messages_url(session) -> str:
    return f"{SESSIONS}{session.pk}/messages/"


@pytest.mark.django_db
def test_create_a_session_with_own_agent(user_client, user, other_user):
    agent = AgentFactory(owner=user)
    response = user_client.post(SESSIONS, {"title": "Trip", "agent": str(agent.pk)})
    assert response.status_code == 201, response.content
    assert Session.objects.get(pk=response.json()["id"]).owner == user

    theirs = AgentFactory(owner=other_user)
    response = user_client.post(SESSIONS, {"title": "Trip", "agent": str(theirs.pk)})
    assert response.status_code == 400
    assert "agent" in response.json()


@pytest.mark.django_db
def test_another_users_session_and_its_messages_do_not_exist(user_client, other_user):
    theirs = SessionFactory(owner=other_user)
    assert user_client.get(SESSIONS).json()["count"] == 0
    for response in (
        user_client.get(f"{SESSIONS}{theirs.pk}/"),
        user_client.patch(f"{SESSIONS}{theirs.pk}/", {"title": "x"}),
        user_client.delete(f"{SESSIONS}{theirs.pk}/"),
        user_client.get(messages_url(theirs)),
        user_client.post(messages_url(theirs), {"role": "user", "content": "hi"}),
    ):
        assert response.status_code == 404
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_messages_are_numbered_one_to_n(user_client, user):
    session = SessionFactory(owner=user)
    for index, role in enumerate(["user", "assistant", "user", "tool", "system"], start=1):
        response = user_client.post(messages_url(session), {"role": role, "content": f"message {index}"})
        assert response.status_code == 201, response.content
        assert response.json()["sequence_number"] == index
        assert response.json()["role"] == role
    listed = user_client.get(messages_url(session)).json()["results"]
    assert [row["sequence_number"] for row in listed] == [1, 2, 3, 4, 5]
    assert [row["content"] for row in listed] == [f"message {i}" for i in range(1, 6)]
    session.refresh_from_db()
    assert session.last_sequence_number == 5


@pytest.mark.django_db
def test_each_session_numbers_its_own_messages(user_client, user):
    first, second = SessionFactory(owner=user), SessionFactory(owner=user)
    user_client.post(messages_url(first), {"role": "user", "content": "a"})
    response = user_client.post(messages_url(second), {"role": "user", "content": "b"})
    assert response.json()["sequence_number"] == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "wizard", "content": "hi"}, "role"),
        ({"content": "hi"}, "role"),
        ({"role": "user"}, "content"),
        ({"role": "user", "content": "hi", "sequence_number": 7, "mood": "happy"}, "mood"),
        ({"role": "user", "content": "x" * 100_001}, "content"),
        ({"role": "user", "content": "hi", "metadata": "not an object"}, "metadata"),
    ],
)
def test_bad_messages_are_a_400_naming_the_field(user_client, user, body, field):
    session = SessionFactory(owner=user)
    response = user_client.post(messages_url(session), body)
    assert response.status_code == 400
    assert field in response.json()
    assert not Message.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field"), [({"status": "open"}, "status"), ({"title": "t" * 256}, "title")])
def test_bad_sessions_are_a_400_naming_the_field(user_client, body, field):
    response = user_client.post(SESSIONS, body)
    assert response.status_code == 400
    assert field in response.json()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_get_gapless_unique_numbers():
    owner = UserFactory()
    session = SessionFactory(owner=owner)
    threads_count, per_thread = 8, 5
    barrier = threading.Barrier(threads_count)
    statuses: list[int] = []
    lock = threading.Lock()

    def post_messages(worker: int) -> None:
        client = APIClient()
        client.force_authenticate(user=owner)
        try:
            barrier.wait()
            for index in range(per_thread):
                response = client.post(messages_url(session), {"role": "user", "content": f"{worker}-{index}"})
                with lock:
                    statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post_messages, args=(worker,)) for worker in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    total = threads_count * per_thread
    assert statuses == [201] * total
    numbers = sorted(Message.objects.filter(session=session).values_list("sequence_number", flat=True))
    assert numbers == list(range(1, total + 1))
    session.refresh_from_db()
    assert session.last_sequence_number == total
