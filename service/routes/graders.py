"""/v1/fine_tuning/alpha/graders/run and /validate, as OpenAI's: grade one sample, check a grader."""

from __future__ import annotations

import threading

from fastapi import APIRouter, Request

from lmtune.graders import JudgeUnavailable, MetricUnavailable, SandboxUnavailable, Tools, grade_batch
from lmtune.graders.grading import sample_namespace
from lmtune.graders.sandbox import sandbox_limits
from lmtune.graders.schema import LabelModelGrader, MultiGrader, ScoreModelGrader
from lmtune.services import RequestError
from service.deps import DbDep, OwnerDep, SettingsDep
from service.errors import documented
from service.eval_schemas import GraderRunRequest, GraderRunResponse, GraderValidateRequest, GraderValidateResponse
from service.model_judge import ServerJudge

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["graders"])
SANDBOXES_PER_PROCESS = 2  # python graders running at once in one API process; more get 429


def _sandboxes(request: Request) -> threading.BoundedSemaphore:
    state = request.app.state
    if getattr(state, "grader_sandboxes", None) is None:
        state.grader_sandboxes = threading.BoundedSemaphore(SANDBOXES_PER_PROCESS)
    return state.grader_sandboxes


@router.post("/validate", response_model=GraderValidateResponse, responses=documented(400, 404))
def validate_grader(body: GraderValidateRequest, owner: OwnerDep, db: DbDep, settings: SettingsDep):
    """The grader back if it is valid: its fields, its formula, and its judge model (this key's)."""
    _check_judges(body.grader, ServerJudge(settings, db, owner))
    return GraderValidateResponse(grader=body.grader.model_dump(mode="json", exclude_none=True))


@router.post("/run", response_model=GraderRunResponse, responses=documented(400, 404, 429, 503))
def run_grader(body: GraderRunRequest, request: Request, owner: OwnerDep, db: DbDep, settings: SettingsDep):
    """Grade `model_sample` (the `sample` namespace's output_text; output_json when it is JSON) against
    `item`. A grader's own failure is a reward of 0 with `metadata.errors` saying why, as OpenAI's."""
    judge = ServerJudge(settings, db, owner)
    _check_judges(body.grader, judge)
    pair = (sample_namespace(body.model_sample), body.item or {})
    sandboxes = _sandboxes(request)
    if not sandboxes.acquire(timeout=1):
        raise RequestError(429, "python graders are busy in this API process; try again shortly", retry_after=2)
    try:
        tools = Tools(judge=judge, sandbox=sandbox_limits(settings))
        grade = grade_batch(body.grader, [pair], tools)[0]
    except SandboxUnavailable as error:
        raise RequestError(503, str(error), param="grader.source", code="python_graders_unavailable") from None
    except MetricUnavailable as error:
        raise RequestError(400, str(error), param="grader.evaluation_metric", code="metric_unavailable") from None
    finally:
        sandboxes.release()
    return GraderRunResponse.of(body.grader, grade)


def _check_judges(grader, judge: ServerJudge) -> None:
    graders = grader.graders.values() if isinstance(grader, MultiGrader) else [grader]
    for sub in graders:
        if isinstance(sub, ScoreModelGrader | LabelModelGrader):
            try:
                judge.check(sub.model)
            except JudgeUnavailable as error:
                raise RequestError(404, str(error), param="grader.model", code="model_not_found") from None
