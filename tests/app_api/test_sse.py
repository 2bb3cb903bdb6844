"""The app API's event stream: ``Accept: text/event-stream`` on ``POST /api/v1/app/workflows/<id>/runs/``."""

import asyncio
import json

import httpx
import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers

from licensing.app_api import run_event_stream
from tests.app_api.conftest import APP_SECRET, bearer, run_path
from tests.factories import RunFactory
from tests.platform.live import daphne, database_migrate, free_port, live_database, manage, server_env
from workflows.execution.runner import run_execute
from workflows.execution.services import run_cancel

pytestmark = pytest.mark.django_db(transaction=True)

SSE = {"HTTP_ACCEPT": "text/event-stream"}


def parse_sse(text: str) -> list[dict]:
    """Frames as ``{"id", "event", "data"}``; comments as ``{"comment"}``."""
    frames = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        frame: dict = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            if name == "":
                frame["comment"] = value.strip()
            else:
                frame[name] = value[1:] if value.startswith(" ") else value
        if "data" in frame:
            frame["data"] = json.loads(frame["data"])
        frames.append(frame)
    return frames


async def test_the_stream_carries_every_event_in_order_then_the_finished_run(async_client, app, licensed, published):
    response = await async_client.post(
        run_path(published),
        data={"inputs": {"city": "Lyon"}},
        content_type="application/json",
        headers={"Accept": "text/event-stream", "Authorization": bearer(app)["HTTP_AUTHORIZATION"]},
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"] == "no-cache"
    frames = parse_sse(b"".join([chunk async for chunk in response.streaming_content]).decode())
    events = frames[:-1]
    assert [frame["event"] for frame in events] == [
        "run.started",
        "node.started",
        "node.succeeded",
        "node.started",
        "node.succeeded",
        "node.started",
        "node.succeeded",
        "run.succeeded",
    ]
    assert [int(frame["id"]) for frame in events] == list(range(1, 9))
    assert all(frame["data"]["seq"] == int(frame["id"]) for frame in events)
    final = frames[-1]
    assert final["event"] == "run.finished"
    assert final["data"]["status"] == "succeeded"
    assert final["data"]["outputs"] == {"text": "Weather for Lyon"}
    assert final["data"]["version"] == "1.0.0"


def test_a_refused_stream_is_answered_in_json(api_client, app, published):
    response = api_client.post(run_path(published), data={}, format="json", **SSE, **bearer(app))

    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "no_license"


async def test_a_quiet_stream_sends_keep_alive_comments_and_still_sees_the_end():
    run = await database_sync_to_async(RunFactory)()
    stream = run_event_stream(run_id=run.pk, heartbeat_s=0.05)

    assert await anext(stream) == b": keep-alive\n\n"
    await database_sync_to_async(run_cancel)(run=run, user=None)
    rest = [chunk async for chunk in stream]

    frames = parse_sse(b"".join(rest).decode())
    assert [frame.get("event") for frame in frames if "event" in frame] == ["run.cancelled", "run.finished"]
    assert frames[-1]["data"]["status"] == "cancelled"


@pytest.fixture
def redis_layer(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [settings.REDIS_URL]},
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.mark.services
@pytest.mark.usefixtures("redis_layer")
async def test_with_channels_redis_the_stream_follows_the_run_live():
    run = await database_sync_to_async(RunFactory)()

    async def read_all() -> bytes:
        return b"".join([chunk async for chunk in run_event_stream(run_id=run.pk)])

    reader = asyncio.create_task(read_all())
    await asyncio.sleep(0.3)  # joined the group, read no stored event: what follows arrives live
    assert not reader.done()
    assert await run_execute(run_id=run.pk) == "succeeded"
    frames = parse_sse((await asyncio.wait_for(reader, timeout=10)).decode())

    assert [int(frame["id"]) for frame in frames[:-1]] == list(range(1, len(frames)))
    assert frames[-2]["event"] == "run.succeeded"
    assert frames[-1]["data"]["outputs"] == {"text": "Weather for Lyon"}


# --- against a real server ------------------------------------------------------------------------

CREATE_CHAT_APP = """
import json
from accounts.models import User
from agents.models import LLMProvider
from licensing.models import App, License
from workflows.releases.services import workflow_publish
from workflows.services import workflow_create

user = User.objects.create_user("builder", "builder@example.com", "not-used-0123")
provider = LLMProvider.objects.create(owner=user, name="fake", base_url=BASE_URL, api_key=API_KEY, model="m")
ask = {"provider": str(provider.pk), "prompt": "{{ start.question }}"}
graph = {
    "nodes": [
        {"id": "start", "type": "start", "config": {"inputs": [{"name": "question", "type": "string"}]}},
        {"id": "ask", "type": "llm", "config": ask},
        {"id": "end", "type": "end", "config": {"outputs": {"answer": "{{ ask.text }}"}}},
    ],
    "edges": [{"source": "start", "target": "ask"}, {"source": "ask", "target": "end"}],
}
workflow = workflow_create(owner=user, name="Chat", graph=graph)
workflow_publish(workflow=workflow, version="1.0.0", user=user)
app = App.objects.create(owner=user, name="sse", alias_id="sse", api_key="wk_sse", api_secret=SECRET)
License.objects.create(app=app, group=workflow)
print(json.dumps({"workflow": str(workflow.pk)}))
"""


@pytest.mark.slow
def test_a_real_http_client_reads_the_llm_deltas_in_order_before_the_end(tmp_path, fake_openai):
    from tests.fakes.openai_server import Answer

    chunks = ["The ", "weather ", "is ", "fine."]
    fake_openai.script(Answer(text="".join(chunks), chunks=chunks, chunk_delay_s=0.12))
    port = free_port()
    with live_database(tmp_path) as database_url:
        env = server_env(DATABASE_URL=database_url, WEFT_OUTBOUND_ALLOW="127.0.0.1/32")
        database_migrate(env)
        values = {"BASE_URL": fake_openai.base_url, "API_KEY": fake_openai.api_key, "SECRET": APP_SECRET}
        script = "".join(f"{name} = {value!r}\n" for name, value in values.items()) + CREATE_CHAT_APP
        workflow_id = json.loads(manage("shell", "-c", script, env=env).splitlines()[-1])["workflow"]
        with daphne(port=port, env=env) as server:
            base = f"http://127.0.0.1:{port}"
            server.wait_until_answering(f"{base}/api/v1/", timeout=60)
            received: list[tuple[float, str]] = []
            with (
                httpx.Client(base_url=base, timeout=30) as client,
                client.stream(
                    "POST",
                    f"/api/v1/app/workflows/{workflow_id}/runs/",
                    json={"inputs": {"question": "Weather?"}},
                    headers={"Accept": "text/event-stream", "Authorization": f"Bearer wk_sse:{APP_SECRET}"},
                ) as response,
            ):
                assert response.status_code == 200, response.read()
                buffer = ""
                for text in response.iter_text():
                    buffer += text
                    while "\n\n" in buffer:
                        block, buffer = buffer.split("\n\n", 1)
                        received.append(block)
            assert server.process.poll() is None, server.output

    frames = parse_sse("\n\n".join(received) + "\n\n")
    kinds = [frame["event"] for frame in frames]
    assert kinds[0] == "run.started"
    assert kinds[-2:] == ["run.succeeded", "run.finished"]
    deltas = [frame["data"]["data"]["text"] for frame in frames if frame["event"] == "node.delta"]
    assert "".join(deltas) == "The weather is fine."
    assert len(deltas) >= 3, "the deltas were sent as they streamed, not all at once"
    assert kinds.index("node.delta") < kinds.index("run.succeeded")
    seqs = [int(frame["id"]) for frame in frames[:-1]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert frames[-1]["data"]["outputs"] == {"answer": "The weather is fine."}
