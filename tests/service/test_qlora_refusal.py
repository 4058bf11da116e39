"""A 4-bit base (QLoRA) asked of the CPU queue is refused at creation, naming the field and the fix;
on a GPU queue it is taken (the API cannot see the workers: one without CUDA fails the job at once,
tests/distributed/test_parallelism_settings.py)."""

from tests.service.test_api_errors import create_job, error_of

QLORA = {"lora": {"quantize": "4bit"}}


def test_a_4bit_base_on_the_cpu_is_refused_at_creation(api):
    body = error_of(create_job(api, api.alice, training=QLORA), 400)
    assert (body["param"], body["code"]) == ("training.lora.quantize", "quantization_unavailable")
    assert "trains on a CUDA GPU only" in body["message"]
    assert "ask for gpus: 1 or more, or remove quantize" in body["message"]
    assert api.client.get("/v1/fine_tuning/jobs", headers=api.alice).json()["data"] == []  # nothing stored


def test_a_4bit_base_on_a_gpu_queue_is_queued_with_its_setting(api):
    job = create_job(api, api.alice, training=QLORA, gpus=1)
    assert job.status_code == 200, job.text
    assert job.json()["training"]["lora"]["quantize"] == "4bit"


def test_fsdp_with_a_4bit_base_is_refused_naming_both(api):
    body = error_of(create_job(api, api.alice, training={**QLORA, "parallelism": "fsdp"}, gpus=2), 400)
    assert 'training.parallelism "fsdp" cannot train with training.lora.quantize' in body["message"]
