"""The API's judge for model graders (/v1/fine_tuning/alpha/graders/run): the key's model, resolved
through the store, answered by the model server (LMTUNE_INFERENCE_URL) one call after another."""

from __future__ import annotations

import json
from dataclasses import asdict

import httpx

from lmtune.graders import JudgeAnswer, JudgeCall, JudgeUnavailable
from lmtune.layout import DataLayout
from lmtune.model_refs import ModelNotFound, resolve_model
from lmtune.settings import Settings
from lmtune.store.database import Database
from service.inference_client import secret_headers

TIMEOUT = httpx.Timeout(300.0, connect=5.0)


class ServerJudge:
    def __init__(self, settings: Settings, db: Database, owner: str):
        self.settings, self.db, self.owner = settings, db, owner

    def check(self, model: str) -> dict:
        """The model as the model server is given it; JudgeUnavailable if this key has no such model."""
        try:
            ref = resolve_model(self.db, DataLayout(self.settings.data_dir), model, self.owner)
        except ModelNotFound as error:
            raise JudgeUnavailable(str(error)) from None
        served = asdict(ref)
        served.pop("id")
        return served

    def complete(self, model: str, calls: list[JudgeCall]) -> list[JudgeAnswer]:
        served = self.check(model)
        with httpx.Client(
            base_url=self.settings.inference_url,
            headers=secret_headers(self.settings.inference_secret),
            timeout=TIMEOUT,
        ) as client:
            return [self._one(client, served, call) for call in calls]

    def _one(self, client: httpx.Client, served: dict, call: JudgeCall) -> JudgeAnswer:
        payload = {
            "model": served,
            "messages": call.messages,
            "max_tokens": call.max_tokens,
            "temperature": call.temperature,
            "top_p": call.top_p,
            "seed": call.seed,
            "key": self.owner,
        }
        answer = JudgeAnswer()
        try:
            with client.stream("POST", "/generate", json=payload) as response:
                if response.status_code != 200:
                    return JudgeAnswer(error=f"the model server answered {response.status_code}")
                for line in response.iter_lines():
                    event = json.loads(line) if line.strip() else {}
                    kind = event.get("event")
                    if kind == "start":
                        answer.prompt_tokens = event["prompt_tokens"]
                    elif kind == "text":
                        answer.text += event["text"]
                    elif kind == "finish":
                        answer.completion_tokens += event["completion_tokens"]
                    elif kind == "error":
                        return JudgeAnswer(error=f"the judge model failed: {event['message'][:300]}")
        except httpx.TransportError:
            return JudgeAnswer(
                error=f"the model server is not reachable at {self.settings.inference_url} (start `lmtune serve-models`)"
            )
        return answer
