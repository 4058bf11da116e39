"""GET .../samples reads only the page it answers: the rows after it are neither parsed nor held."""

import json
import tracemalloc

from lmtune.layout import DataLayout
from tests.service.test_samples_route import a_job_with_samples


def test_a_page_of_samples_parses_only_its_rows_and_memory_stays_flat(api):
    job_id = a_job_with_samples(api, [5, 10, 15])
    path = DataLayout(api.settings.data_dir).job(job_id).samples
    big = {"prompt": "p" * 1000, "completion": "c" * 1000, "completion_tokens": 9, "finish_reason": "length"}
    with path.open("a") as log:
        for step in range(20, 20 + 2000):  # about 4 MB of later sets
            log.write(json.dumps({"step": step, "created_at": 1, "generation_seconds": 1.0, "samples": [big]}) + "\n")
        log.write('{"step": 99999, this row is not JSON and is never parsed\n')
    url = f"/v1/fine_tuning/jobs/{job_id}/samples"
    tracemalloc.start()
    page = api.client.get(url, headers=api.alice, params={"limit": 2}).json()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [s["step"] for s in page["data"]] == [5, 10] and page["has_more"]
    assert peak < 1 << 20, peak  # the 4 MB log was never held
    later = api.client.get(url, headers=api.alice, params={"limit": 3, "after": "ftsamples-step-1000"}).json()
    assert [s["step"] for s in later["data"]] == [1001, 1002, 1003] and later["has_more"]
