"""config.db.prepared_cursor: statements that repeat are planned once by PostgreSQL, through Django's cursor."""

import uuid

import pytest
from django.db import ProgrammingError, connection
from django.test.utils import CaptureQueriesContext

from config.db import prepared_cursor

pytestmark = [pytest.mark.django_db, pytest.mark.services]


def _prepared(marker: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", [f"%{marker}%"])
        return cursor.fetchone()[0]


def test_a_statement_a_connection_repeats_is_prepared_once_past_the_threshold():
    threshold = connection.settings_dict["OPTIONS"]["prepare_threshold"]
    marker = f"m{uuid.uuid4().hex}"
    sql = f"SELECT %s::integer + 1 AS {marker}"
    answers = []
    for number in range(threshold + 2):
        with prepared_cursor() as cursor:
            cursor.execute(sql, [number])
            answers.append(cursor.fetchone()[0])
        if number == threshold - 2:
            assert _prepared(marker) == 0  # not before the threshold

    assert answers == list(range(1, threshold + 3))
    assert _prepared(marker) == 1


def test_its_errors_are_djangos_and_its_queries_are_seen_as_djangos():
    with CaptureQueriesContext(connection) as queries, prepared_cursor() as cursor:
        cursor.execute("SELECT %s::integer * 2", [21])
        assert cursor.fetchone()[0] == 42

    assert [query["sql"] for query in queries.captured_queries] == ["SELECT $1::integer * 2"]  # bound on the server
    with pytest.raises(ProgrammingError), prepared_cursor() as cursor:
        cursor.execute("SELECT no_such_column FROM runs")
