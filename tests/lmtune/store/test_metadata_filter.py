"""A jobs list filtered by metadata matches any key a client can store: quotes, dots, dollars and
brackets are key text, never JSON-path syntax."""

import pytest

from lmtune.store.jobs import create_job, list_jobs
from lmtune.store.keys import create_key
from tests.helpers import BOTH_DATABASES
from tests.lmtune.store.test_jobs import SPEC

pytestmark = pytest.mark.parametrize("database_url", BOTH_DATABASES, indirect=True)

KEYS = ['a"b', "a.b", "$.team", "[0]", "a'b", "back\\slash", "ünï cödé", "*", '"']


def test_a_metadata_filter_matches_any_key(db):
    owner, secret = create_key(db, "alice")
    for key in KEYS:
        wanted = create_job(db, owner=owner, spec=SPEC, queue="cpu", metadata={key: "yes", "other": "x"})
        create_job(db, owner=owner, spec=SPEC, queue="cpu", metadata={key: "no"})
        create_job(db, owner=owner, spec=SPEC, queue="cpu", metadata={"other": "yes"})
        _, found, _ = list_jobs(db, secret, after=None, limit=100, metadata={key: "yes"})
        assert [job.id for job in found] == [wanted.id], key
    _, both, _ = list_jobs(db, secret, after=None, limit=100, metadata={'a"b': "yes", "other": "x"})
    assert len(both) == 1
    _, other_secret = create_key(db, "bob")
    assert list_jobs(db, other_secret, after=None, limit=100, metadata={'a"b': "yes"})[1] == []
